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
    Claim(
        id="petrov.sec4.content-scaling",
        paper=PETROV,
        section="Sec. 4",
        statement=("With a prefix, A^pt_ij = A_ij (1 - alpha_i) for every content key j, alpha_i = total "
                   "attention on the prefix positions: relative attention over the content is unchanged."),
        assumptions=(
            "one attention layer, one head; S_ij = scale (W_Q x_i).(W_K x_j); prefix keys W_K s_k",
            "causal mask or none (identity proved for any number m of visible content keys)",
            "no LayerNorm or Linear biases (with them the prefix key is W_K LN(s) + b_K)",
        ),
        evidence_kind="symbolic",
    ),
    Claim(
        id="petrov.sec4.output-bias",
        paper=PETROV,
        section="Sec. 4",
        statement=("With one prefix vector s, t^pt_i = (1 - alpha_i) t_i + alpha_i W_V s: the prefix only "
                   "biases the output toward a fixed vector."),
        assumptions=(
            "one attention layer, one head, n_S = 1; causal mask or none",
            "no LayerNorm or Linear biases (otherwise the direction is W_V LN(s) + b_V)",
        ),
        evidence_kind="symbolic",
    ),
    Claim(
        id="petrov.sec4.multi-prefix-convex",
        paper=PETROV,
        section="Sec. 4",
        statement=("With n_S prefix vectors, t^pt_i = (1 - alpha_i) t_i + alpha_i sum_k beta_ik W_V s_k, "
                   "beta_ik = A^pt_{i,s_k} / alpha_i in the probability simplex: the bias is a convex "
                   "combination of W_V s_1..W_V s_nS."),
        assumptions=(
            "one attention layer, one head, any n_S >= 1; causal mask or none",
            "no LayerNorm or Linear biases",
        ),
        evidence_kind="symbolic",
    ),
    Claim(
        id="petrov.sec4.soft-prompt-is-prefix-in-layer-1",
        paper=PETROV,
        section="Sec. 4",
        statement=("In the first layer, soft prompting (prepending input embeddings s_k) and prefix-tuning "
                   "(prepending keys W_K s_k and values W_V s_k) give identical outputs at every content "
                   "position; in deeper layers they differ."),
        assumptions=(
            "decoder block = attention + residual + MLP + residual, no LayerNorm, no positional "
            "embedding at the prefix positions (or folded into s_k)",
            "causal mask; the same s_k serve as the layer-1 prefix in both methods",
        ),
        evidence_kind="symbolic",
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
