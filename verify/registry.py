"""Checks bound to claim ids, and the runner that turns them into report rows."""

from __future__ import annotations

import hashlib
import os
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
        run.__wrapped__ = on_records  # verify.where finds the verdict's source through it
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


# --- running claims in parallel -----------------------------------------------------------------

# Claims whose checks share an in-process cache (the real-model suite runs once for both): they
# run one after the other in the same worker, in report order.
RUN_TOGETHER: tuple[tuple[str, ...], ...] = (("petrov.sec4.real-model", "petrov.sec6.cross-layer-attention-shift"),)
# Measured seconds per claim on 2 cores (notes/performance.md): the longest are started first so
# that the two workers finish together. Claims not listed count as short.
EXPECTED_SECONDS: dict[str, float] = {
    "oymak.c4.real-data-attends-relevant": 40, "oymak.c1.prompt-attention-more-expressive": 36,
    "petrov.sec4.real-model": 25, "oymak.c3.finite-sample-exact": 19, "petrov.thm2.long-response": 15,
    "petrov.sec4.rotation-not-a-bias": 10, "oymak.c2.gd-learns-prompt-and-head": 10, "petrov.thm2.two-token": 6,
}


# Starting a process costs about 4-5 s (it imports torch, scipy, sympy and the checks): below this
# much expected work the default stays serial.
PARALLEL_WORTH_SECONDS = 20.0
MAX_DEFAULT_PROCESSES = 4


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_processes(claims: list[Claim]) -> int:
    """How many processes ``verify all|run`` uses when not told: one per usable core (at most
    MAX_DEFAULT_PROCESSES) if the claims' expected seconds (EXPECTED_SECONDS, 1 s for the others)
    reach PARALLEL_WORTH_SECONDS, else 1. The report is the same either way."""
    expected = sum(EXPECTED_SECONDS.get(c.id, 1.0) for c in claims)
    return min(usable_cores(), MAX_DEFAULT_PROCESSES) if expected >= PARALLEL_WORTH_SECONDS and len(claims) > 1 else 1


def claim_groups(claims: list[Claim]) -> list[list[int]]:
    """Indices of ``claims`` in groups that must share a process (RUN_TOGETHER), each group in
    report order, the groups ordered longest first (EXPECTED_SECONDS)."""
    position = {c.id: i for i, c in enumerate(claims)}
    grouped: set[int] = set()
    groups: list[list[int]] = []
    for together in RUN_TOGETHER:
        members = sorted(position[i] for i in together if i in position)
        if members:
            groups.append(members)
            grouped.update(members)
    groups += [[i] for i in range(len(claims)) if i not in grouped]
    cost = lambda g: sum(EXPECTED_SECONDS.get(claims[i].id, 1.0) for i in g)  # noqa: E731
    return sorted(groups, key=lambda g: (-cost(g), g[0]))


def _run_group(claim_ids: list[str], context: Context) -> list[ClaimResult]:
    """Worker: run the claims ``claim_ids`` (a fresh process: the checks register on import)."""
    import verify.checks  # noqa: F401  (registers every check)
    from theorems.claims import CLAIMS

    by_id = {c.id: c for c in CLAIMS}
    return [run_claim(by_id[i], context) for i in claim_ids]


def run_claims_parallel(claims: list[Claim], context: Context, processes: int,
                        on_done: Callable[[ClaimResult], None] | None = None) -> list[ClaimResult]:
    """``[run_claim(c, context) for c in claims]`` with the claims spread over ``processes``
    processes: this one and ``processes - 1`` spawned workers (each imports the checks afresh,
    nothing is inherited from this process; this process starts on the longest group while they
    import). Groups are handed out longest first (``claim_groups``) to whichever process is free.
    The report is the same: every check draws its randomness from ``context.rng(its id)`` (seed
    and claim id, not the order of the run), claims that share a cache run together in one
    process in report order (RUN_TOGETHER), and the results are returned in the order of
    ``claims`` whatever the order in which they finish. ``on_done`` sees each result as it
    arrives. A worker that dies makes its claims 'error' results (the message says why).
    Workers inherit this process's thread settings unchanged: with OPENBLAS_NUM_THREADS=1 in the
    workers a float64 figure of petrov.thm2.long-response moved in its last bit (BLAS rounds
    differently with another thread count), so the thread count is left as in a serial run."""
    import multiprocessing
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    results: list[ClaimResult | None] = [None] * len(claims)
    pending = deque(claim_groups(claims))

    def finish(group: list[int], done: list[ClaimResult]) -> None:
        for i, result in zip(group, done):
            results[i] = result
            if on_done is not None:
                on_done(result)

    def worker_failed(group: list[int], exc: BaseException) -> list[ClaimResult]:
        failed = []
        for i in group:
            c = claims[i]
            r = ClaimResult(c.id, c.paper, c.section, c.statement, c.evidence_kind, "error")
            r.evidence = {"error": f"worker process failed: {type(exc).__name__}: {exc}"}
            r.reasons = [f"error: worker process failed: {exc}"]
            failed.append(r)
        return failed

    workers = max(1, processes - 1)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        in_flight: dict = {}

        def collect(block: bool) -> None:
            if not in_flight:
                return
            done, _ = wait(list(in_flight), timeout=None if block else 0, return_when=FIRST_COMPLETED)
            for future in done:
                group = in_flight.pop(future)
                try:
                    finish(group, future.result())
                except Exception as exc:  # the worker died (killed, out of memory): report, never hide
                    finish(group, worker_failed(group, exc))

        def feed() -> None:
            # one group queued per worker beyond the one it runs: a worker that finishes while this
            # process is inside a long check goes on at once (the last groups are the short ones)
            while pending and len(in_flight) < 2 * workers:
                group = pending.popleft()
                in_flight[pool.submit(_run_group, [claims[i].id for i in group], context)] = group

        while pending or in_flight:
            if pending:  # this process takes the next group itself, the workers the ones after it
                group = pending.popleft()
                feed()
                finish(group, [run_claim(claims[i], context) for i in group])
                collect(block=False)
            else:
                collect(block=True)
            feed()
    return [r for r in results if r is not None]
