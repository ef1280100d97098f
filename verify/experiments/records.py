"""Run records: what a training run measured, keyed by the hash of what produced it.

A record is one JSON file ``notes/results/<experiment>/<scale>-seed<k>.json``:
    {"experiment", "scale", "seed", "config", "code_hash", "key", "metrics", "environment", "created", "digest"}
with
    code_hash = sha256 over the bytes of every file in PRODUCING_FILES (in order, name-tagged)
    key       = sha256( code_hash + own + canonical JSON of {experiment, scale, seed, config} )
where ``own`` is empty for an experiment defined in experiments.py and, for one defined in a module
of its own (EXPERIMENT_FILES, e.g. ``elicit`` in elicit.py), the code_hash of that module's files:
each record's key covers exactly the code that produced it, and adding an experiment module does
not change the keys of the others.
    digest    = sha256( canonical JSON of every other field of the record )
seals the record as written: an edit to any accuracy, to the key or to the configuration changes
the digest it should have. The digest is evidence against accidental or casual edits only (anyone
can recompute a sha256); ``python -m verify audit-records`` is what checks that a record's numbers
are what its code produces, by retraining (notes/records.md).
A record that parses is *refused* (``RecordRefused``, one line naming the file) when its digest is
wrong, or when it has none and its key is current: it is neither trusted nor silently retrained
over; the checks resting on it report an error (``schedule.prepare_runs``).
A record is *current* when its stored key equals the key recomputed from today's code and config:
then it is used as is. Any edit to the producing code or the configuration changes the key, so a
stale record is never trusted; ``retrain`` ignores records altogether. Records are written
atomically (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "notes" / "results"
CHECKPOINT_DIR = REPO / "out" / "experiments"  # ignored by git (/out/)
# The code whose behaviour determines a run's numbers (records.py and the CLI do not).
PRODUCING_FILES: tuple[str, ...] = ("gpt.py", "tasks.py", "train.py", "experiments.py")
# Experiments defined outside experiments.py: their own producing files, hashed into their keys.
EXPERIMENT_FILES: dict[str, tuple[str, ...]] = {"elicit": ("elicit.py",), "skills": ("skills.py",),
                                                "translation": ("translation.py", "lexicon.py")}


def code_hash(files: tuple[str, ...] = PRODUCING_FILES, directory: Path | None = None) -> str:
    """sha256 over (name, bytes) of each producing file."""
    directory = Path(__file__).resolve().parent if directory is None else directory
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0")
        digest.update((directory / name).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def run_key(experiment: str, scale: str, seed: int, config: dict, code: str) -> str:
    """The identity of a run: hash of the producing code (the shared files' ``code`` and the
    experiment's own files, if any) and of everything in its configuration."""
    own = code_hash(EXPERIMENT_FILES[experiment]) if experiment in EXPERIMENT_FILES else ""
    payload = canonical({"experiment": experiment, "scale": scale, "seed": seed, "config": config})
    return hashlib.sha256((code + own + payload).encode()).hexdigest()


class RecordRefused(RuntimeError):
    """A record on disk that may not be used and may not be silently overwritten: its message is
    one line that names the file and says what to do."""


def record_digest(record: dict) -> str:
    """sha256 of the canonical JSON of the record without its ``digest`` field, computed on the
    record as JSON reads it back (so a value that JSON changes, a tuple, cannot seal differently
    from the file)."""
    body = json.loads(canonical({k: v for k, v in record.items() if k != "digest"}))
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def seal(record: dict) -> dict:
    """The record with its digest added (or replaced)."""
    return {**record, "digest": record_digest(record)}


def integrity_problem(record: dict, current: bool) -> str | None:
    """Why ``record`` may not be used, or None. ``current``: its key matches today's code and
    config. A wrong digest is refused whatever the key (an edited key must not turn a tampered
    record into a stale one that is quietly retrained over); a missing digest only on a current
    key (an unsealed stale record is simply stale)."""
    stored = record.get("digest")
    if stored is None:
        return "no digest, the record is not sealed" if current else None
    if stored != record_digest(record):
        return "digest mismatch, the record was edited"
    return None


def record_path(experiment: str, scale: str, seed: int, results_dir: Path = RESULTS_DIR) -> Path:
    return results_dir / experiment / f"{scale}-seed{seed}.json"


def load_current(experiment: str, scale: str, seed: int, config: dict, code: str,
                 results_dir: Path = RESULTS_DIR) -> dict | None:
    """The record of this run if it exists, parses, its key matches and its digest is right;
    None if it is missing, does not parse or is stale. Raises RecordRefused when its digest is
    wrong, or missing on a current key (``integrity_problem``)."""
    path = record_path(experiment, scale, seed, results_dir)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    current = record.get("key") == run_key(experiment, scale, seed, config, code)
    problem = integrity_problem(record, current)
    if problem is not None:
        raise RecordRefused(f"{relative(path)}: {problem}; retrain it with --retrain or restore it")
    return record if current else None


def environment(device: str = "cpu") -> dict[str, str]:
    """What float32 training results depend on besides the code, config and seed: the torch build
    and the CPU kernels it dispatches to (torch's CPU capability, e.g. AVX2 or AVX512, and the CPU
    model), and the GPU on cuda. Two machines that differ here may round differently, so a run
    that is bit-identical on one machine need not be on another (notes/records.md)."""
    import torch

    out = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "machine": platform.machine(), "cpu": _cpu_model()}
    if device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_record(experiment: str, scale: str, seed: int, config: dict, code: str, metrics: dict,
                 results_dir: Path = RESULTS_DIR) -> Path:
    """Write the record, sealed with its digest, atomically; returns its path. The record says
    where it was trained (``environment``), which the digest covers like every other field."""
    path = record_path(experiment, scale, seed, results_dir)
    record = {"experiment": experiment, "scale": scale, "seed": seed, "config": config, "code_hash": code,
              "key": run_key(experiment, scale, seed, config, code), "metrics": metrics,
              "environment": environment(str(metrics.get("device", "cpu"))),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_text_atomically(path, record_text(seal(record)))
    return path


def record_text(record: dict) -> str:
    """The bytes of a record file: canonical key order, one-space indent, a final newline."""
    return json.dumps(record, indent=1, sort_keys=True) + "\n"


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and rename: a record is never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def relative(path: Path) -> str:
    """A path relative to the repository when possible (what reports show)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)
