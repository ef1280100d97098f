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
from verify.protocol import Finding, ProtocolError, Skipped, verdict
from verify.result import ClaimResult


@dataclass(frozen=True)
class Trainings:
    """Several experiments' runs that one check rests on (e.g. petrov.discussion.forgetting reads
    the descending, skills and translation runs): ``runs`` is their union, as for one Training, so
    the CLI schedules them with the rest; a check bound to it receives {experiment: records}."""

    members: tuple[Training, ...]

    def runs(self, first_seed: int) -> list[RunId]:
        return [run for training in self.members for run in training.runs(first_seed)]


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

    def training_records(self, training: Training | Trainings) -> list[dict] | dict[str, list[dict]]:
        """The records of ``training``'s runs for this context's seeds (prepared, else made current
        now); for Trainings, a dict experiment -> its records."""
        if isinstance(training, Trainings):
            return {t.experiment: records_for(self.prepared_runs, t, self.seed, self.retrain) for t in training.members}
        return records_for(self.prepared_runs, training, self.seed, self.retrain)

    def rng(self, claim_id: str) -> np.random.Generator:
        """A generator seeded by (run seed, stable hash of the claim id): independent of
        which other claims run, identical across processes (no Python ``hash``)."""
        digest = int.from_bytes(hashlib.sha256(claim_id.encode()).digest()[:8], "little")
        return np.random.default_rng([self.seed, digest])


CheckFn = Callable[[Context], "Finding | Skipped"]
CHECKS: dict[str, CheckFn] = {}
CONTROLS: dict[str, tuple[str, ...]] = {}  # claim id -> the names of the controls its check runs
TRAININGS: dict[str, Training | Trainings] = {}  # claim id -> the training runs its check rests on


def check(claim_id: str, controls: tuple[str, ...]) -> Callable[[CheckFn], CheckFn]:
    """Bind a check function to a claim id (one check per id), declaring the names of the
    controls it runs (at least one). The runner refuses a Finding whose controls are not exactly
    the declared ones, so a control cannot silently disappear."""

    def register(fn: CheckFn) -> CheckFn:
        if claim_id in CHECKS:
            raise RuntimeError(f"two checks registered for {claim_id}")
        if not controls or len(set(controls)) != len(controls):
            raise RuntimeError(f"{claim_id}: declare at least one control, each name once")
        CONTROLS[claim_id] = tuple(controls)
        CHECKS[claim_id] = fn
        return fn

    return register


RecordVerdict = Callable[[list[dict]], Finding] | Callable[[dict[str, list[dict]]], Finding]


def training_check(claim_id: str, training: Training | Trainings,
                   controls: tuple[str, ...]) -> Callable[[RecordVerdict], RecordVerdict]:
    """Bind a verdict on run records to a claim id: the check skips under --quick, else passes the
    verdict the records of ``training`` (seeds context.seed, context.seed + 1, ...). The CLI reads
    TRAININGS to train every needed run once before any check runs."""

    def register(on_records: RecordVerdict) -> RecordVerdict:
        def run(context: Context) -> Finding | Skipped:
            if context.quick:
                members = training.members if isinstance(training, Trainings) else (training,)
                return Skipped(QUICK_SKIP, {"scale": members[0].scale, "seeds": members[0].seeds,
                                            "experiments": [t.experiment for t in members]})
            return on_records(context.training_records(training))

        run.__doc__ = on_records.__doc__
        check(claim_id, controls)(run)
        TRAININGS[claim_id] = training
        return on_records

    return register


QUICK_SKIP = "training claim; run without --quick"


def run_claim(claim: Claim, context: Context) -> ClaimResult:
    """Run one claim's check and compute its verdict (``verify.protocol.verdict``): the check
    measures, the runner decides. An exception inside a check, or a return value the protocol
    does not accept, is an 'error' with its message."""
    result = ClaimResult(claim.id, claim.paper, claim.section, claim.statement, claim.evidence_kind, "error")
    start = time.perf_counter()
    try:
        returned = CHECKS[claim.id](context)
        if not isinstance(returned, Finding | Skipped):
            raise ProtocolError(f"a check must return Finding or Skipped, got {type(returned).__name__}")
        declared = CONTROLS.get(claim.id, ())
        if isinstance(returned, Finding):
            ran = tuple(c.name for c in returned.controls)
            if sorted(ran) != sorted(declared):
                raise ProtocolError(f"controls run {list(ran)} differ from those declared {list(declared)}")
    except Exception as exc:  # a checker bug is reported, never hidden
        message = f"{type(exc).__name__}: {exc}"
        result.evidence = {"error": message, "where": traceback.format_exc(limit=3).splitlines()[-3:]}
        result.reasons = [f"error: {message}"]
    else:
        if isinstance(returned, Skipped):
            result.status = "skipped"
            result.evidence = {"reason": returned.reason, **returned.details}
            result.reasons = [f"skipped: {returned.reason}"]
        else:
            decided = verdict(returned)
            result.status, result.reasons = decided.status, list(decided.reasons)
            result.rung = returned.evidence.rung.value
            result.evidence = returned.evidence.to_json()
            result.control = {c.name: c.to_json() for c in returned.controls}
    result.seconds = time.perf_counter() - start
    return result
