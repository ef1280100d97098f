"""Run mutants against the claims that must catch them, and score the checker.

    baseline(c)   = status of claim c on the unmutated code (it must be "pass", else no mutant
                    aimed at c can be evaluated: its refutation could be the baseline's failure)
    caught(m, c)  = status of c with m applied is "fail" or "error"
    refuted(m)    = every claim of m caught it
    score         = #refuted / #mutants      (survivors and unevaluable mutants listed by name)

A mutant marked *equivalent* (``EQUIVALENT``) is one whose survival is explained as harmless:
semantically equivalent to the original on every input the claims are about, with a test in
tests/test_mutants.py that proves it. It still counts as a survivor in the score.

Claims run with ``Context(seed, quick=True)`` (the small settings the claims offer). A training
claim runs on the sealed records of its runs (notes/results/), handed to it as prepared runs:
nothing is ever trained, and a record with a wrong digest is not used. Where a claim's baseline
is not "pass" (e.g. petrov.sec5.combines-skills, which fails at cpu scale), its mutants are
reported as not evaluable, and counted as not refuted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from verify.mutants.core import Mutant, MutantError, clear_caches

REFUTED, SURVIVED, NOT_EVALUABLE, INVALID = "refuted", "survived", "not evaluable", "invalid"


@dataclass
class MutantResult:
    mutant: Mutant
    status: str
    claims: dict[str, str] = field(default_factory=dict)  # claim -> status under the mutant
    why: str = ""  # the first reason of the first claim that caught it, or why it was not
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        m = self.mutant
        return {"name": m.name, "kind": m.kind, "target": m.target, "description": m.description,
                "claims": self.claims, "status": self.status, "why": self.why,
                "equivalent": EQUIVALENT.get(m.name), "seconds": round(self.seconds, 2)}


# Survivors explained as harmless, each with the test that proves it (tests/test_mutants.py).
EQUIVALENT: dict[str, str] = {
    "parts.heads.swapped": (
        "the long-response heads write into 'slot' and 'user', which the selector reads symmetrically "
        "(h_c = ReLU(slot_c + user_c - 1)); exchanging their output matrices changes no logit "
        "(test_swapping_the_long_response_heads_changes_no_logit)"),
    "forward.rope.positions-shifted": (
        "RoPE scores depend on the positions of a query and a key only through their difference, and the "
        "shift moves every position (content, prefix keys, numpy and torch) alike "
        "(test_shifting_every_rope_position_changes_no_output)"),
}


@dataclass
class MutationReport:
    seed: int
    subset: str
    baseline: dict[str, str]
    results: list[MutantResult]

    @property
    def refuted(self) -> int:
        return sum(r.status == REFUTED for r in self.results)

    @property
    def survivors(self) -> list[MutantResult]:
        return [r for r in self.results if r.status != REFUTED]

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "subset": self.subset,
                "score": {"refuted": self.refuted, "total": len(self.results)},
                "baseline": self.baseline, "mutants": [r.to_json() for r in self.results]}


def contexts(claim_ids: Iterable[str], seed: int) -> dict[str, Any]:
    """A Context per claim, or a string saying why the claim cannot be run here."""
    from verify.registry import CHECKS, TRAININGS, Context

    out: dict[str, Any] = {}
    for claim_id in claim_ids:
        if claim_id not in CHECKS:
            out[claim_id] = f"no check registered for {claim_id}"
        elif claim_id in TRAININGS:
            out[claim_id] = _training_context(TRAININGS[claim_id], seed)
        else:
            out[claim_id] = Context(seed=seed, quick=True)
    return out


def _training_context(training: Any, seed: int) -> Any:
    """Context whose prepared runs are the sealed records on disk (nothing is trained), or why not.

    The mutants of a training claim perturb what its check reads, so what matters is that the
    check passes on the honest records (the baseline): a record whose key is stale (the code
    changed since) is still a sealed, honest input for that purpose and is used, marked stale;
    one whose digest is wrong or missing is not."""
    import json

    from verify.experiments import records
    from verify.registry import Context

    prepared = {}
    for run in training.runs(seed):
        path = records.record_path(run.experiment, run.scale, run.seed, records.RESULTS_DIR)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return f"no readable record of {run} ({records.relative(path)})"
        problem = records.integrity_problem(record, current=True)
        if problem is not None:
            return f"{records.relative(path)}: {problem}"
        prepared[run] = {**record, "path": records.relative(path), "reused": True}
    return Context(seed=seed, prepared_runs=prepared)


def run_claim_id(claim_id: str, context: Any) -> tuple[str, str]:
    """(status, first reason) of one claim in ``context``."""
    from theorems.claims import claim
    from verify.registry import run_claim

    result = run_claim(claim(claim_id), context)
    return result.status, (result.reasons[0] if result.reasons else "")


def run_mutants(mutants: list[Mutant], seed: int = 0, subset: str = "all",
                log: Callable[[str], None] | None = None) -> MutationReport:
    """Baseline every targeted claim once, then each mutant against its claims."""
    import verify.checks  # noqa: F401  (registers every check)

    say = log if log is not None else (lambda line: None)
    claim_ids = sorted({c for m in mutants for c in m.claims})
    context = contexts(claim_ids, seed)
    baseline: dict[str, str] = {}
    clear_caches()
    for claim_id in claim_ids:
        if isinstance(context[claim_id], str):
            baseline[claim_id] = f"not run: {context[claim_id]}"
            continue
        status, reason = run_claim_id(claim_id, context[claim_id])
        baseline[claim_id] = status if status == "pass" else f"{status}: {reason}"
        say(f"baseline {claim_id}: {baseline[claim_id]}")
    results = []
    for index, m in enumerate(mutants, 1):
        results.append(run_one(m, seed, context, baseline))
        say(f"[{index}/{len(mutants)}] {m.name}: {results[-1].status} ({results[-1].seconds:.1f} s)")
    return MutationReport(seed, subset, baseline, results)


def run_one(m: Mutant, seed: int, context: dict[str, Any], baseline: dict[str, str]) -> MutantResult:
    """Apply ``m`` and run each of its claims; refuted when every one of them is caught."""
    result = MutantResult(m, INVALID)
    start = time.perf_counter()
    unevaluable = [c for c in m.claims if baseline.get(c) != "pass"]
    if unevaluable:
        result.status = NOT_EVALUABLE
        result.why = f"baseline of {unevaluable[0]} is not pass ({baseline.get(unevaluable[0])})"
        return result
    try:
        with m.applied(seed):
            for claim_id in m.claims:
                status, reason = run_claim_id(claim_id, context[claim_id])
                result.claims[claim_id] = status
                if status in ("fail", "error") and not result.why:
                    result.why = f"{claim_id}: {reason}"
    except MutantError as exc:
        result.why = str(exc)
        result.seconds = time.perf_counter() - start
        return result
    caught = all(result.claims[c] in ("fail", "error") for c in m.claims)
    result.status = REFUTED if caught else SURVIVED
    if not caught:
        passed = [c for c in m.claims if result.claims[c] not in ("fail", "error")]
        result.why = f"{', '.join(passed)} still {result.claims[passed[0]]} under the mutant"
    result.seconds = time.perf_counter() - start
    return result
