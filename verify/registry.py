"""Checks bound to claim ids, and the runner that turns them into report rows."""

from __future__ import annotations

import hashlib
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from theorems.claims import Claim
from verify.result import ClaimResult, Outcome


@dataclass(frozen=True)
class Context:
    """What every check receives: the run's seed and whether training claims are skipped.

    ``model_dir``: the local Hugging Face model the real-model checks run on (``verify
    real-model --model DIR``); None means their default, the packaged all-MiniLM-L6-v2.
    """

    seed: int
    quick: bool = False
    retrain: bool = False
    model_dir: Path | None = None

    def rng(self, claim_id: str) -> np.random.Generator:
        """A generator seeded by (run seed, stable hash of the claim id): independent of
        which other claims run, identical across processes (no Python ``hash``)."""
        digest = int.from_bytes(hashlib.sha256(claim_id.encode()).digest()[:8], "little")
        return np.random.default_rng([self.seed, digest])


CheckFn = Callable[[Context], Outcome]
CHECKS: dict[str, CheckFn] = {}


def check(claim_id: str) -> Callable[[CheckFn], CheckFn]:
    """Bind a check function to a claim id (one check per id)."""

    def register(fn: CheckFn) -> CheckFn:
        if claim_id in CHECKS:
            raise RuntimeError(f"two checks registered for {claim_id}")
        CHECKS[claim_id] = fn
        return fn

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
