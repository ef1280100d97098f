"""The claims promptproof checks: one record per claim id (a public contract, see DESIGN.md).

A record says what is claimed, where, under which assumptions, and the strongest kind of
evidence the checker gives for it. ``verify`` binds a check to each id.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    section: str
    statement: str
    assumptions: tuple[str, ...]
    evidence_kind: str  # symbolic | certificate | convex | randomized | trained


PETROV = "petrov2024"

CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="petrov.thm1.unconditional",
        paper=PETROV,
        section="Sec. 3, Theorem 1",
        statement=(
            "One virtual token makes a fixed 1-layer transformer generate ANY target of length <= N "
            "over V symbols (defaults V = 94 printable ASCII, N = 20)."
        ),
        assumptions=(
            "decoder-only, causal mask, residual stream, one head, one-hidden-layer ReLU MLP, no LayerNorm",
            "virtual token enters as an input embedding at position 0 (positional embedding added)",
            "inverse temperature T > ln((N - 1)(2V - 3)), folded into W_Q; greedy decoding",
        ),
        evidence_kind="certificate",
    ),
    Claim(
        id="petrov.thm2.conditional",
        paper=PETROV,
        section="Sec. 3, Theorem 2",
        statement="One virtual token makes a fixed transformer realise ANY map m: V -> V on one user token.",
        assumptions=(
            "as Theorem 1, with the user token at position 1 and T > ln(2V - 3)",
        ),
        evidence_kind="certificate",
    ),
    Claim(
        id="petrov.thm2.long-response",
        paper=PETROV,
        section="Sec. 3 / appendix (generalisation of Theorem 2)",
        statement="N0 virtual tokens realise ANY map V -> V^N0 from one user token (default N0 = 10).",
        assumptions=(
            "one layer, two heads, one-hidden-layer ReLU MLP; T > ln((2 N0 - 1)(4V - 3))",
        ),
        evidence_kind="certificate",
    ),
    Claim(
        id="petrov.thm2.two-token",
        paper=PETROV,
        section="Sec. 3 / appendix (conditioning on two tokens)",
        statement=(
            "One virtual token realises ANY map m: V x V -> V on two user tokens, the base-V "
            "unpacking done by a real ReLU MLP; exact in float64 up to a stated V."
        ),
        assumptions=("base-V fraction encoding of each row m(i, .) in one coordinate of the virtual token",),
        evidence_kind="certificate",
    ),
    Claim(
        id="petrov.sec3.capacity",
        paper=PETROV,
        section="Sec. 3",
        statement=(
            "Real-token prompts of length n reach at most V^n distinct behaviours; one virtual token "
            "reaches V^N (the Theorem 1 model: every target is reached, distinct targets stay distinct)."
        ),
        assumptions=("behaviour = the greedy completion of length N",),
        evidence_kind="certificate",
    ),
)


def claims_matching(patterns: list[str]) -> list[Claim]:
    """Claims whose id equals or starts with one of ``patterns`` (catalogue order, no repeats)."""
    return [c for c in CLAIMS if any(c.id.startswith(p) for p in patterns)]


def claim(claim_id: str) -> Claim:
    for item in CLAIMS:
        if item.id == claim_id:
            return item
    raise KeyError(claim_id)
