"""Run records: what a training run measured, keyed by the hash of what produced it.

A record is one JSON file ``notes/results/<experiment>/<scale>-seed<k>.json``:
    {"experiment", "scale", "seed", "config", "code_hash", "key", "metrics", "created"}
with
    code_hash = sha256 over the bytes of every file in PRODUCING_FILES (in order, name-tagged)
    key       = sha256( code_hash + own + canonical JSON of {experiment, scale, seed, config} )
where ``own`` is empty for an experiment defined in experiments.py and, for one defined in a module
of its own (EXPERIMENT_FILES, e.g. ``elicit`` in elicit.py), the code_hash of that module's files:
each record's key covers exactly the code that produced it, and adding an experiment module does
not change the keys of the others.
A record is *current* when its stored key equals the key recomputed from today's code and config:
then it is used as is. Any edit to the producing code or the configuration changes the key, so a
stale record is never trusted; ``retrain`` ignores records altogether. Records are written
atomically (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
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


def record_path(experiment: str, scale: str, seed: int, results_dir: Path = RESULTS_DIR) -> Path:
    return results_dir / experiment / f"{scale}-seed{seed}.json"


def load_current(experiment: str, scale: str, seed: int, config: dict, code: str,
                 results_dir: Path = RESULTS_DIR) -> dict | None:
    """The record of this run if it exists, parses, and its key matches; otherwise None."""
    path = record_path(experiment, scale, seed, results_dir)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != run_key(experiment, scale, seed, config, code):
        return None
    return record


def write_record(experiment: str, scale: str, seed: int, config: dict, code: str, metrics: dict,
                 results_dir: Path = RESULTS_DIR) -> Path:
    """Write the record atomically; returns its path."""
    path = record_path(experiment, scale, seed, results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"experiment": experiment, "scale": scale, "seed": seed, "config": config, "code_hash": code,
              "key": run_key(experiment, scale, seed, config, code), "metrics": metrics,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def relative(path: Path) -> str:
    """A path relative to the repository when possible (what reports show)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)
