"""Which training runs an invocation needs, and training them once each, optionally in parallel.

A *run* is one (experiment, scale, seed): one record under notes/results/. Several checks rest on
the same runs (five claims on ``skills``), so the CLI first collects the runs that the chosen
checks need, makes each one current exactly once (reusing a current record, else training it),
and hands the records to the checks through ``Context.prepared_runs``:

    runs   = union over the chosen checks c of {(experiment_c, scale_c, seed + k) : k < seeds_c}
    record = current record of the run            (unless --retrain)
             else run_experiment(...) in a worker  (one run per process, one torch thread each)
             a RunFailed in its place when the record on disk is refused (edited or unsealed,
             records.RecordRefused) or training raised: the checks resting on that run report
             an error with its one line, every other check still runs.

Where the runs train is an executor's business (verify/experiments/executors.py): by default
``LocalExecutor(jobs)``; with ``jobs`` = J > 1 the runs to train go to J worker processes
(spawned, so each starts with clean torch state; each run is deterministic whichever process
trains it), longest first: the order is by the seconds the run's previous record took (its
metrics survive a code change), which keeps the J cores busy until the end (LPT scheduling). On a
2-core machine ``--jobs 2`` roughly halves the wall time of a full retrain. ``RayExecutor`` sends
the same runs, in the same order, to a Ray cluster as one task each.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from verify.experiments import records
from verify.experiments.executors import Executor, LocalExecutor, RunTask


@dataclass(frozen=True, order=True)
class RunId:
    """One training run: an experiment at a scale with one seed."""

    experiment: str
    scale: str
    seed: int

    def __str__(self) -> str:
        return f"{self.experiment} {self.scale} seed {self.seed}"


class RunFailed(RuntimeError):
    """Training one run raised, or its record on disk was refused: kept in place of its record, so
    that the checks resting on that run report an error with this message while every other check
    still runs."""


@dataclass(frozen=True)
class Training:
    """What a training check rests on: ``seeds`` runs of ``experiment`` at ``scale``, seeds
    context.seed, context.seed + 1, ..."""

    experiment: str
    scale: str
    seeds: int

    def runs(self, first_seed: int) -> list[RunId]:
        return [RunId(self.experiment, self.scale, first_seed + k) for k in range(self.seeds)]


def needed_runs(trainings: Iterable[Training], first_seed: int) -> list[RunId]:
    """The distinct runs of ``trainings``, in first-seen order."""
    out: dict[RunId, None] = {}
    for training in trainings:
        for run in training.runs(first_seed):
            out.setdefault(run)
    return list(out)


def previous_seconds(run: RunId, results_dir: Path | None = None) -> float:
    """Seconds the run's last record took (stale or not), 0 when there is none: the scheduling
    estimate."""
    results_dir = records.RESULTS_DIR if results_dir is None else results_dir
    try:
        return float(json.loads(records.record_path(run.experiment, run.scale, run.seed, results_dir)
                                .read_text())["metrics"]["seconds_total"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def lpt_makespan(seconds: Iterable[float], jobs: int) -> float:
    """Wall time of runs of the given durations on ``jobs`` workers, longest first, each run going
    to the worker that frees up first (the order prepare_runs submits them in)."""
    free = [0.0] * jobs
    for duration in sorted(seconds, reverse=True):
        free[free.index(min(free))] += duration
    return max(free)


def prepare_runs(runs: list[RunId], retrain: bool = False, jobs: int = 1, device: str = "cpu",
                 log: Callable[[str], None] | None = None, results_dir: Path | None = None,
                 checkpoint_dir: Path | None = records.CHECKPOINT_DIR,
                 executor: Executor | None = None) -> dict[RunId, dict | RunFailed]:
    """Make every run current once; returns run -> record (with ``path`` and ``reused``, as
    run_experiment gives), or a RunFailed where its record was refused or training raised.
    ``executor`` None: ``LocalExecutor(jobs)``, where ``jobs`` = 1 trains in this process (with
    progress bars) and more trains that many runs at a time in worker processes (one line per
    finished run); ``jobs`` is not read when an executor is given. ``results_dir`` None:
    records.RESULTS_DIR (read at call time)."""
    from verify.experiments.scales import config_for

    results_dir = records.RESULTS_DIR if results_dir is None else results_dir
    say = log if log is not None else (lambda line: None)
    out: dict[RunId, dict | RunFailed] = {}
    code = records.code_hash()
    to_train = []
    refused: list[RunId] = []
    for run in runs:
        config = config_for(run.experiment, run.scale)  # registers the experiment's module
        try:
            record = None if retrain else records.load_current(run.experiment, run.scale, run.seed, config, code,
                                                                 results_dir)
        except records.RecordRefused as exc:  # neither trusted nor retrained over
            out[run] = RunFailed(str(exc))
            refused.append(run)
            say(str(exc))
            continue
        if record is None:
            to_train.append(run)
        else:
            path = records.record_path(run.experiment, run.scale, run.seed, results_dir)
            out[run] = {**record, "path": records.relative(path), "reused": True}
    reused = [run for run in out if run not in refused]
    if reused:
        say(f"{len(reused)} run(s) have current records: {', '.join(map(str, reused))}")
    executor = LocalExecutor(jobs) if executor is None else executor
    if to_train:
        to_train.sort(key=lambda r: (-previous_seconds(r, results_dir), r))
        say(f"training {len(to_train)} run(s), {executor.plan(len(to_train))}: {', '.join(map(str, to_train))}")
    start = time.perf_counter()
    tasks = [RunTask(run, retrain, device, results_dir, checkpoint_dir) for run in to_train]
    for task, outcome in executor.map_runs(tasks, say) if tasks else ():
        out[task.run] = _failed(task.run, outcome, say) if isinstance(outcome, Exception) else outcome
    if to_train:
        ok = sum(not isinstance(out[run], RunFailed) for run in to_train)
        say(f"trained {ok} of {len(to_train)} run(s) in {time.perf_counter() - start:.1f} s of wall time")
    return {run: out[run] for run in runs}


def _failed(run: RunId, exc: Exception, say: Callable[[str], None]) -> RunFailed:
    failure = RunFailed(f"training {run} failed: {type(exc).__name__}: {exc}")
    say(str(failure))
    return failure


def records_for(prepared: Mapping[RunId, dict | RunFailed], training: Training, first_seed: int,
                retrain: bool) -> list[dict]:
    """The records a check rests on: from ``prepared`` (the CLI made them current; a RunFailed
    there is raised), else made current now (a check called on its own, e.g. from a test; a
    refused record is raised as a RunFailed with its one line, as from the CLI)."""
    runs = training.runs(first_seed)
    if all(run in prepared for run in runs):
        for run in runs:
            if isinstance(prepared[run], RunFailed):
                raise prepared[run]
        return [prepared[run] for run in runs]
    from verify.experiments.experiments import run_experiment

    try:
        return run_experiment(training.experiment, training.scale, tuple(r.seed for r in runs), retrain=retrain)
    except records.RecordRefused as exc:
        raise RunFailed(str(exc)) from None
