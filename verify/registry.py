"""Checks bound to claim ids, and the runner that turns them into report rows."""

from __future__ import annotations

import hashlib
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from theorems.claims import Claim
from verify.experiments.schedule import RunFailed, RunId, Training, records_for
from verify.result import ClaimResult, Outcome


@dataclass(frozen=True)
class Context:
    """What every check receives: the run's seed and whether training claims are skipped.

    ``model_dir``: the local Hugging Face model the real-model checks run on (``verify
    real-model --model DIR``); None means their default, the packaged all-MiniLM-L6-v2.
    ``prepared_runs``: training records the CLI made current before the checks ran (each run once,
    however many checks rest on it); a training check finds its records there.
    """

    seed: int
    quick: bool = False
    retrain: bool = False
    model_dir: Path | None = None
    prepared_runs: Mapping[RunId, dict | RunFailed] = field(default_factory=dict, compare=False, repr=False)

    def training_records(self, training: Training) -> list[dict]:
        """The records of ``training``'s runs for this context's seeds (prepared, else made current now)."""
        return records_for(self.prepared_runs, training, self.seed, self.retrain)

    def rng(self, claim_id: str) -> np.random.Generator:
        """A generator seeded by (run seed, stable hash of the claim id): independent of
        which other claims run, identical across processes (no Python ``hash``)."""
        digest = int.from_bytes(hashlib.sha256(claim_id.encode()).digest()[:8], "little")
        return np.random.default_rng([self.seed, digest])


CheckFn = Callable[[Context], Outcome]
CHECKS: dict[str, CheckFn] = {}
TRAININGS: dict[str, Training] = {}  # claim id -> the training runs its check rests on


def check(claim_id: str) -> Callable[[CheckFn], CheckFn]:
    """Bind a check function to a claim id (one check per id)."""

    def register(fn: CheckFn) -> CheckFn:
        if claim_id in CHECKS:
            raise RuntimeError(f"two checks registered for {claim_id}")
        CHECKS[claim_id] = fn
        return fn

    return register


def training_check(claim_id: str, training: Training) -> Callable[[Callable[[list[dict]], Outcome]],
                                                                   Callable[[list[dict]], Outcome]]:
    """Bind a verdict on run records to a claim id: the check skips under --quick, else passes the
    verdict the records of ``training`` (seeds context.seed, context.seed + 1, ...). The CLI reads
    TRAININGS to train every needed run once before any check runs."""

    def register(verdict: Callable[[list[dict]], Outcome]) -> Callable[[list[dict]], Outcome]:
        def run(context: Context) -> Outcome:
            if context.quick:
                return Outcome(False, {"scale": training.scale, "seeds": training.seeds}, {}, False,
                               skipped_reason="training claim; run without --quick")
            return verdict(context.training_records(training))

        run.__doc__ = verdict.__doc__
        check(claim_id)(run)
        TRAININGS[claim_id] = training
        return verdict

    return register


def run_claim(claim: Claim, context: Context) -> ClaimResult:
    """Run one claim's check. An exception inside a check is an 'error' with its message."""
    result = ClaimResult(claim.id, claim.paper, claim.section, claim.statement, claim.evidence_kind, "error")
    start = time.perf_counter()
    try:
        outcome = CHECKS[claim.id](context)
    except Exception as exc:  # a checker bug is reported, never hidden
        result.evidence = {"error": f"{type(exc).__name__}: {exc}",
                           "where": traceback.format_exc(limit=3).splitlines()[-3:]}
    else:
        result.evidence, result.control = outcome.evidence, outcome.control
        if outcome.skipped_reason is not None:
            result.status = "skipped"
            result.evidence = {"reason": outcome.skipped_reason, **outcome.evidence}
        else:
            result.status = "pass" if outcome.holds and outcome.control_refuted else "fail"
    result.seconds = time.perf_counter() - start
    return result
