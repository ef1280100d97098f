"""``verify audit-records``: retrain randomly chosen recorded runs and compare them bit for bit.

The digest of a record (records.py) only shows that the file was not edited after it was written;
anyone can recompute a sha256. What shows that a record's numbers are what its code produces is
retraining it. Training is deterministic (every draw from the run's seed, one torch thread), so

    reproduces(r)  <=>  strip_timings(retrained(r).metrics) == strip_timings(r.metrics)   (exactly)

where ``retrained`` trains the run from scratch (no checkpoints) into a temporary directory with
today's code, and ``strip_timings`` removes the fields that measure the machine rather than the
model (TIMING_FIELDS). Every other field -- accuracies, losses, attention maps, parameter counts,
the device -- must be equal as JSON values (floats compared exactly).

The runs audited are ``k`` drawn without replacement by ``numpy.random.default_rng(seed)`` from
the recorded runs sorted by (experiment, scale, seed): the same seed audits the same runs. A run
is only retrained when its record is sealed and current (digest right, key matching today's code
and config); otherwise its status says why it cannot be reproduced, which also fails the audit.

Bit-identity is a property of one machine's kernels: float32 sums are rounded in the order the
CPU's vectorised kernels take, which differs between, e.g., AVX2 and AVX-512 builds of the same
torch. Each record says where it was trained (``environment``: torch version, CPU capability,
CPU model, GPU); a run that differs on a machine whose environment is not the record's is still
reported as ``differs`` (the audit cannot tell rounding from forgery), with both environments
named in its detail.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verify.experiments import records
from verify.experiments.schedule import RunId

# Fields of a run's metrics that measure wall time (or how much of a stage THIS invocation ran,
# which differs when a run resumed from a checkpoint), as paths; "*" matches any key (a stage).
TIMING_FIELDS: tuple[tuple[str, ...], ...] = (
    ("seconds_total",),
    ("training", "*", "seconds"),
    ("training", "*", "steps_per_second"),
    ("training", "*", "steps_run"),
)

REPRODUCES, DIFFERS, STALE, REFUSED, FAILED = "reproduces", "differs", "stale", "refused", "failed"


class AuditInputError(ValueError):
    """Bad audit input (no recorded runs, more runs asked for than recorded): exit 2 in the CLI."""


@dataclass
class AuditRow:
    """One audited run: what happened and, when it differs, where (first differences)."""

    run: RunId
    record: str
    status: str
    detail: str = ""
    differences: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.run.experiment, "scale": self.run.scale, "seed": self.run.seed,
                "record": self.record, "status": self.status, "detail": self.detail,
                "differences": self.differences, "seconds": round(self.seconds, 1)}


def recorded_runs(results_dir: Path, experiment: str | None = None, scale: str | None = None) -> list[RunId]:
    """Every ``<experiment>/<scale>-seed<k>.json`` under ``results_dir``, sorted."""
    out = []
    for path in results_dir.glob("*/*-seed*.json"):
        stem_scale, _, seed = path.stem.rpartition("-seed")
        if not seed.isdigit():
            continue
        run = RunId(path.parent.name, stem_scale, int(seed))
        if (experiment is None or run.experiment == experiment) and (scale is None or run.scale == scale):
            out.append(run)
    return sorted(out)


def choose_runs(runs: list[RunId], k: int, seed: int) -> list[RunId]:
    """``k`` of ``runs`` without replacement, drawn by default_rng(seed) from the sorted list."""
    if not runs:
        raise AuditInputError("no recorded runs match")
    if k > len(runs):
        raise AuditInputError(f"--seeds {k}: only {len(runs)} recorded run(s) match")
    pool = sorted(runs)
    picked = np.random.default_rng(seed).choice(len(pool), size=k, replace=False)
    return [pool[int(i)] for i in picked]


def strip_timings(metrics: dict) -> dict:
    """A deep copy of ``metrics`` without the TIMING_FIELDS."""
    out = json.loads(json.dumps(metrics))
    for pattern in TIMING_FIELDS:
        _drop(out, pattern)
    return out


def _drop(node: Any, pattern: tuple[str, ...]) -> None:
    if not isinstance(node, dict) or not pattern:
        return
    head, rest = pattern[0], pattern[1:]
    keys = list(node) if head == "*" else [head] if head in node else []
    for key in keys:
        if rest:
            _drop(node[key], rest)
        else:
            del node[key]


def differences(recorded: Any, retrained: Any, path: str = "", limit: int = 5) -> list[dict[str, Any]]:
    """The first ``limit`` paths where two JSON values differ (exact equality, floats included)."""
    out: list[dict[str, Any]] = []
    _diff(recorded, retrained, path, out, limit)
    return out


def _diff(a: Any, b: Any, path: str, out: list, limit: int) -> None:
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append({"path": f"{path}/{key}", "recorded": a.get(key, "<absent>"),
                            "retrained": b.get(key, "<absent>")})
            else:
                _diff(a[key], b[key], f"{path}/{key}", out, limit)
            if len(out) >= limit:
                return
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", out, limit)
    elif type(a) is not type(b) or a != b:
        out.append({"path": path or "/", "recorded": _short(a), "retrained": _short(b)})


def _short(value: Any) -> Any:
    text = json.dumps(value)
    return value if len(text) <= 60 else text[:57] + "..."


Retrain = Callable[[RunId, Path], dict]


def retrain_from_scratch(run: RunId, directory: Path) -> dict:
    """Train ``run`` with today's code into ``directory`` (no checkpoints: from step 0); its record."""
    from verify.experiments.experiments import run_experiment

    (record,) = run_experiment(run.experiment, run.scale, (run.seed,), "cpu", retrain=True,
                               results_dir=directory, checkpoint_dir=None, quiet=True)
    return record


def audit_run(run: RunId, results_dir: Path, retrain: Retrain = retrain_from_scratch) -> AuditRow:
    """Check the record's seal and key, retrain the run in a temporary directory, compare."""
    from verify.experiments.scales import config_for

    path = records.record_path(run.experiment, run.scale, run.seed, results_dir)
    row = AuditRow(run, records.relative(path), FAILED)
    start = time.perf_counter()
    try:
        recorded = json.loads(path.read_text())
        current = recorded.get("key") == records.run_key(run.experiment, run.scale, run.seed,
                                                         config_for(run.experiment, run.scale), records.code_hash())
    except (OSError, ValueError, AttributeError) as exc:
        row.detail = f"unreadable record: {type(exc).__name__}: {exc}"
        return row
    problem = records.integrity_problem(recorded, current)
    if problem is not None:
        row.status, row.detail = REFUSED, problem
    elif not current:
        row.status, row.detail = STALE, "its key is not today's code and config: not what this code produces"
    else:
        _compare(row, recorded, run, retrain)
    row.seconds = time.perf_counter() - start
    return row


def _compare(row: AuditRow, recorded: dict, run: RunId, retrain: Retrain) -> None:
    with tempfile.TemporaryDirectory(prefix="promptproof-audit-") as tmp:
        try:
            fresh = retrain(run, Path(tmp))
        except Exception as exc:  # a run that no longer trains is a finding, not a crash
            row.detail = f"retraining raised {type(exc).__name__}: {exc}"
            return
    found = differences(strip_timings(recorded["metrics"]), strip_timings(fresh["metrics"]), "/metrics")
    if fresh.get("key") != recorded.get("key"):
        found.insert(0, {"path": "/key", "recorded": recorded.get("key"), "retrained": fresh.get("key")})
    row.differences = found
    if found:
        first = found[0]
        row.status = DIFFERS
        row.detail = f"{first['path']}: recorded {first['recorded']}, retrained {first['retrained']}"
        here = fresh.get("environment") or records.environment()
        if recorded.get("environment") != here:
            row.detail += (f" (recorded on {describe_environment(recorded.get('environment'))}, retrained on "
                           f"{describe_environment(here)}: float32 kernels of different machines round "
                           "differently, so this difference need not mean a forged record)")
    else:
        row.status = REPRODUCES
        row.detail = "metrics bit-identical apart from timings"


def describe_environment(env: dict | None) -> str:
    """One phrase for a record's ``environment`` (records.environment); older records have none."""
    if not env:
        return "an unrecorded machine"
    return f"torch {env.get('torch')} / {env.get('cpu_capability')} / {env.get('cpu')}" + (
        f" / {env['gpu']}" if env.get("gpu") else "")


def audit(runs: Iterable[RunId], results_dir: Path, retrain: Retrain = retrain_from_scratch,
          log: Callable[[str], None] | None = None) -> list[AuditRow]:
    """Audit each run in turn (one line of progress per run on ``log``)."""
    rows = []
    for run in runs:
        if log is not None:
            log(f"auditing {run} ...")
        rows.append(audit_run(run, results_dir, retrain))
        if log is not None:
            log(f"{run}: {rows[-1].status} ({rows[-1].seconds:.0f} s)")
    return rows


def all_reproduce(rows: list[AuditRow]) -> bool:
    return bool(rows) and all(r.status == REPRODUCES for r in rows)
