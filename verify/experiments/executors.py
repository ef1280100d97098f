"""Where training runs execute: this machine's cores (LocalExecutor) or a Ray cluster (RayExecutor).

``schedule.prepare_runs`` decides *which* runs to train (records that are current are reused,
refused ones reported); an executor only decides *where* they train. The contract is small:

    executor.check(device)         before any work: raise ExecutorUnavailable (one line, exit 2 in
                                   the CLI) when this executor cannot train on ``device``
    executor.plan(n)               how ``n`` runs will be spread, for the log line
    executor.map_runs(tasks, log)  train every task, yield (task, record or the exception it raised)
                                   as each finishes, in completion order
    executor.close()               release what ``check`` acquired (a Ray connection it opened)

Every executor calls the same per-run function, ``train_run``, which is ``run_experiment`` for one
(experiment, scale, seed). A run is deterministic whichever process or machine trains it (seeded,
one torch thread), so the records an executor produces are the same bytes apart from the timing
fields (``seconds_total``, the per-stage seconds under ``training``, ``created`` and therefore
``digest``); tests/test_executors.py checks this for the local pool against a real Ray cluster.

Ray is imported only inside RayExecutor, so the package, the local executor and the CLI work
without the ``cluster`` extra installed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from constructions.errors import PromptproofError
from verify.experiments import records

if TYPE_CHECKING:
    from verify.experiments.schedule import RunId

Log = Callable[[str], None]
Outcome = tuple["RunTask", "dict | Exception"]
EXECUTORS = ("local", "ray")
RAY_MISSING = "ray is not installed: pip install '.[cluster]'"


class ExecutorUnavailable(PromptproofError):
    """The chosen executor cannot be used (ray missing, cluster unreachable, no GPU where cuda was
    asked for): bad input, reported by the CLI in one line with exit code 2 before any work."""


@dataclass(frozen=True)
class RunTask:
    """Everything one training run needs, picklable (it travels to a worker process or a Ray
    worker on another machine)."""

    run: RunId
    retrain: bool
    device: str
    results_dir: Path
    checkpoint_dir: Path | None


def train_run(task: RunTask, log: Log | None = None) -> dict:
    """The per-run function every executor calls: ``run_experiment`` for one seed. With ``log``
    (training in this process) progress bars and a line per run are shown; without (a worker),
    training is quiet and the executor reports the finished run. Looked up at call time, so a test
    that replaces ``experiments.run_experiment`` replaces it for in-process runs too."""
    from verify.experiments import experiments

    run = task.run
    (record,) = experiments.run_experiment(run.experiment, run.scale, (run.seed,), task.device, task.retrain,
                                           task.results_dir, task.checkpoint_dir, quiet=log is None, log=log)
    return record


class Executor(Protocol):
    """Where ``prepare_runs`` trains the runs it has no current record for (module docstring)."""

    def check(self, device: str) -> None: ...

    def plan(self, n_tasks: int) -> str: ...

    def map_runs(self, tasks: Sequence[RunTask], log: Log) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


def _finished_line(done: int, total: int, task: RunTask, record: dict, start: float) -> str:
    return (f"[{done}/{total}] {task.run}: trained in {record['metrics']['seconds_total']} s "
            f"({time.perf_counter() - start:.0f} s since the first started) -> {record['path']}")


def _check_cuda_here() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ExecutorUnavailable("--device cuda: CUDA is not available on this machine")


class LocalExecutor:
    """This machine: ``jobs`` = 1 trains in this process, one run after the other, with progress
    bars; ``jobs`` = J > 1 trains J runs at a time in spawned worker processes (each starts with
    clean torch state), in the order given (prepare_runs sorts longest first: LPT), one line per
    finished run. A worker that raises, or dies, yields its exception for that run only."""

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be a positive integer, got {jobs}")
        self.jobs = jobs

    def check(self, device: str) -> None:
        if device == "cuda":
            _check_cuda_here()

    def plan(self, n_tasks: int) -> str:
        return f"{min(self.jobs, n_tasks)} at a time"

    def map_runs(self, tasks: Sequence[RunTask], log: Log) -> Iterator[Outcome]:
        if min(self.jobs, len(tasks)) <= 1:
            for task in tasks:
                try:
                    record = train_run(task, log)
                except Exception as exc:  # reported by the checks that rest on this run
                    yield task, exc
                    continue
                yield task, record
            return
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(train_run, task): task for task in tasks}
            for done, future in enumerate(as_completed(futures), 1):
                task = futures[future]
                try:
                    record = future.result()
                except Exception as exc:  # raised in the worker, or the worker died
                    yield task, exc
                    continue
                log(_finished_line(done, len(tasks), task, record, start))
                yield task, record

    def close(self) -> None:
        """Nothing is held between calls: the pool lives inside one map_runs."""


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on an address nothing listens at: ``ray.init`` itself retries an unreachable GCS
    for minutes before it raises, which a user mistyping a port should not have to wait for."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ExecutorUnavailable(f"--address {address!r}: expected HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ExecutorUnavailable(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


class RayExecutor:
    """A Ray cluster: one Ray task per run (per RunId), each calling ``train_run`` on a worker.

    Resources are declared per task, so Ray runs as many at a time as the cluster has room for:
    ``num_cpus`` (default 1: the run trains with one torch thread) and, when the run's device is
    ``cuda``, ``num_gpus`` (default 1; Ray sets CUDA_VISIBLE_DEVICES so "cuda" is the task's GPU).
    ``address`` None joins the cluster ``ray.init()`` finds (RAY_ADDRESS, or one started by
    ``ray start`` on this machine) or starts a local one; otherwise ``ray.init(address=...)``.
    A Ray session already open in this process (e.g. a test's) is used as it is.

    A worker writes the record where ``run_experiment`` writes it, on its own machine; the driver
    then writes the same bytes under its own ``results_dir`` (unless they are there already: one
    machine, or a shared filesystem), so records land in the driver's notes/results/ whichever
    node trained them. Checkpoints stay on the worker (they only let an interrupted run resume).
    A task that raises yields the exception the run raised (the cause Ray wraps), so the RunFailed
    line is the one the local pool gives; a worker that died yields Ray's error.
    """

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 1) -> None:
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self._ray: Any = _import_ray()
        self._started = False

    def _connect(self) -> Any:
        ray = self._ray
        if self.address is not None:
            _probe(self.address)
        if ray.is_initialized():
            return ray
        try:
            ray.init(address=self.address)
        except (ConnectionError, ValueError) as exc:  # unreachable or not a Ray cluster; bad address
            where = f"at {self.address}" if self.address is not None else "(local)"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExecutorUnavailable(f"cannot connect to the Ray cluster {where}: {first}") from None
        self._started = True
        return ray

    def check(self, device: str) -> None:
        """Connect (once) and, for cuda, require a GPU somewhere in the cluster: a task asking for
        a GPU the cluster lacks would wait forever instead of failing."""
        ray = self._connect()
        if device == "cuda" and ray.cluster_resources().get("GPU", 0) < self.num_gpus:
            raise ExecutorUnavailable(f"--device cuda: the Ray cluster has no GPU "
                                      f"(resources: {ray.cluster_resources()})")

    def plan(self, n_tasks: int) -> str:
        return (f"as {n_tasks} Ray task(s) of {self.num_cpus} CPU each (and {self.num_gpus} GPU each on cuda), "
                "as many at a time as the cluster has room for")

    def resources(self, task: RunTask) -> dict[str, float]:
        """What one task declares to the Ray scheduler."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus if task.device == "cuda" else 0}

    def map_runs(self, tasks: Sequence[RunTask], log: Log) -> Iterator[Outcome]:
        ray = self._connect()
        from ray.exceptions import RayError, RayTaskError

        remote = ray.remote(train_run)
        pending = {remote.options(**self.resources(task)).remote(task): task for task in tasks}
        start = time.perf_counter()
        done = 0
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ref)
            done += 1
            try:
                record = _keep_locally(ray.get(ref), task)
            except RayTaskError as exc:  # the run raised: its own exception, as in the local pool
                yield task, exc.cause if isinstance(exc.cause, Exception) else exc
                continue
            except (RayError, OSError, RuntimeError) as exc:  # worker died, node lost; record not kept
                yield task, exc
                continue
            log(_finished_line(done, len(tasks), task, record, start))
            yield task, record

    def close(self) -> None:
        """Shut down the Ray session only if this executor opened it."""
        if self._started:
            self._ray.shutdown()
            self._started = False


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorUnavailable(RAY_MISSING) from None
    return ray


def _keep_locally(record: dict, task: RunTask) -> dict:
    """Write the worker's record under the driver's results_dir, byte for byte as write_record
    wrote it (the record is that file as JSON read it back, plus ``path`` and ``reused``), unless
    those bytes are there already; returns the record with the driver's ``path``."""
    body = {k: v for k, v in record.items() if k not in ("path", "reused")}
    if body.get("digest") != records.record_digest(body):
        raise RuntimeError(f"the record of {task.run} came back from the Ray worker altered")
    text = records.record_text(body)
    path = records.record_path(task.run.experiment, task.run.scale, task.run.seed, task.results_dir)
    try:
        same = path.read_text() == text
    except OSError:
        same = False
    if not same:
        records.write_text_atomically(path, text)
    return {**record, "path": records.relative(path)}


def make_executor(name: str = "local", address: str | None = None, jobs: int = 1) -> Executor:
    """The executor the CLI options name; bad combinations are ExecutorUnavailable (exit 2)."""
    if name not in EXECUTORS:
        raise ExecutorUnavailable(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if name == "local":
        if address is not None:
            raise ExecutorUnavailable("--address ADDR is the address of a Ray cluster: it needs --executor ray")
        return LocalExecutor(jobs)
    if jobs != 1:
        raise ExecutorUnavailable(f"--jobs {jobs} applies to --executor local; a Ray cluster runs as many runs "
                                  "at a time as its CPUs (GPUs) allow")
    return RayExecutor(address)
