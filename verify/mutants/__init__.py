"""A mutation score for the checker: ``python -m verify mutants`` (see ``core`` and ``run``).

``catalogue()`` is every mutant, in a fixed order; ``select(subset)`` the ones a run uses
("fast": FAST, the subset the tests run: one or more of each kind, on claims that take a second
or two; "all": every mutant).
"""

from __future__ import annotations

from verify.mutants.core import Mutant, MutantError
from verify.mutants.run import EQUIVALENT, MutationReport, run_mutants

SUBSETS = ("fast", "all")
FAST = (
    "forward.softmax.extra-sink", "forward.linear.no-bias", "forward.mask.prefix-causal",
    "forward.embed.positions-shifted", "forward.scale.over-sqrt-length", "forward.heads.swapped",
    "forward.attention.no-residual", "forward.key.bias-sign-flip", "forward.prefix.after-content",
    "forward.prefix.one-minus-alpha-dropped", "forward.mlp.no-relu", "forward.predictions.argmin",
    "forward.generate.next-token-off-by-one", "spec.attention.key-is-query", "spec.unembedding-bias-dropped",
    "torch.virtual-token.off-by-one", "prefix.key-positions-off-by-one", "parts.readout.bias-sign-flip",
    "parts.attend.half-temperature", "parts.copy.target-off-by-one", "conditional.encoding.rolled",
    "conditional.rare-combination", "conditional.bias-twice-the-margin", "theorem.sec3.conditional-m-off-by-one",
    "theorem.sec3.critical-sign",
)


def catalogue() -> tuple[Mutant, ...]:
    """Every mutant, names unique."""
    from verify.mutants import claim_mutants, forward_mutants, oymak_mutants, petrov_mutants

    mutants = (*forward_mutants.MUTANTS, *petrov_mutants.MUTANTS, *oymak_mutants.MUTANTS, *claim_mutants.MUTANTS)
    names = [m.name for m in mutants]
    if len(set(names)) != len(names):
        raise MutantError(f"mutant names repeat: {sorted(n for n in names if names.count(n) > 1)}")
    return mutants


def select(subset: str) -> list[Mutant]:
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; known: {', '.join(SUBSETS)}")
    mutants = catalogue()
    missing = sorted(set(FAST) - {m.name for m in mutants})
    if missing:
        raise MutantError(f"FAST names mutants that do not exist: {missing}")
    return [m for m in mutants if subset == "all" or m.name in FAST]


__all__ = ["EQUIVALENT", "FAST", "Mutant", "MutantError", "MutationReport", "SUBSETS", "catalogue", "run_mutants",
           "select"]
