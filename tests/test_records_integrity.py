"""Run records are sealed by a digest: an edited or unsealed record is refused with one line that
names the file, never trusted and never silently retrained over (verify/experiments/records.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import verify.checks.petrov_sec5  # noqa: F401  (registers the descending check)
import verify.experiments.experiments as experiments_module
from tests.cli_helpers import cli
from verify.experiments import records
from verify.experiments.scales import config_for
from verify.experiments.schedule import RunFailed, RunId, prepare_runs

COMMITTED = sorted(records.RESULTS_DIR.rglob("*.json"))
METRICS = {"accuracy": {"prefix": {"descending": 0.01}, "finetuned": {"descending": 0.93}}, "seconds_total": 2.0}


def write_ci(tmp_path: Path, seed: int = 0, scale: str = "ci") -> Path:
    """A current record of ``descending`` at ``scale`` in ``tmp_path`` (metrics made up: no training)."""
    config = config_for("descending", scale)
    return records.write_record("descending", scale, seed, config, records.code_hash(), METRICS, tmp_path)


def load(tmp_path: Path, seed: int = 0, scale: str = "ci") -> dict | None:
    config = config_for("descending", scale)
    return records.load_current("descending", scale, seed, config, records.code_hash(), tmp_path)


def edit(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def test_every_committed_record_is_sealed_and_its_digest_matches():
    assert len(COMMITTED) == 12
    for path in COMMITTED:
        record = json.loads(path.read_text())
        assert record["digest"] == records.record_digest(record), path


def test_a_written_record_is_sealed_and_loads_untouched(tmp_path):
    path = write_ci(tmp_path)
    record = json.loads(path.read_text())
    assert record["digest"] == records.record_digest(record)
    assert load(tmp_path)["metrics"] == METRICS


def test_editing_one_accuracy_of_a_committed_record_is_detected_and_the_file_named(tmp_path):
    source = records.RESULTS_DIR / "skills" / "cpu-seed1.json"
    copy = tmp_path / "skills" / "cpu-seed1.json"
    copy.parent.mkdir()
    shutil.copy(source, copy)
    assert records.integrity_problem(json.loads(copy.read_text()), current=True) is None  # the copy is intact

    def raise_one_accuracy(record: dict) -> None:
        accuracy = record["metrics"]["accuracy"]
        first = sorted(accuracy)[0]
        task = sorted(accuracy[first])[0]
        accuracy[first][task] = round(accuracy[first][task] + 0.01, 6)

    edit(copy, raise_one_accuracy)
    config = config_for("skills", "cpu")
    with pytest.raises(records.RecordRefused) as refused:  # refused whether or not its key is still current
        records.load_current("skills", "cpu", 1, config, records.code_hash(), tmp_path)
    message = str(refused.value)
    assert str(copy) in message and "digest mismatch" in message and "\n" not in message


@pytest.mark.parametrize("field", ["metrics", "config", "key", "seed"])
def test_an_edit_to_any_field_changes_the_digest_it_should_have(tmp_path, field):
    path = write_ci(tmp_path)
    sealed = json.loads(path.read_text())
    changed = {**sealed, field: {"edited": True}}
    assert records.record_digest(changed) != sealed["digest"]


def test_an_edited_current_record_is_refused(tmp_path):
    path = write_ci(tmp_path)
    edit(path, lambda r: r["metrics"]["accuracy"]["prefix"].update(descending=0.99))
    with pytest.raises(records.RecordRefused, match="digest mismatch, the record was edited"):
        load(tmp_path)


def test_a_removed_digest_is_refused(tmp_path):
    path = write_ci(tmp_path)
    edit(path, lambda r: r.pop("digest"))
    with pytest.raises(records.RecordRefused, match="no digest, the record is not sealed"):
        load(tmp_path)


def test_an_edited_key_does_not_turn_a_tampered_record_into_a_stale_one(tmp_path):
    path = write_ci(tmp_path)
    edit(path, lambda r: r.update(key="0" * 64))
    with pytest.raises(records.RecordRefused, match="digest mismatch"):
        load(tmp_path)


def test_a_sealed_stale_record_is_simply_stale(tmp_path):
    write_ci(tmp_path)
    config = config_for("descending", "ci")
    config["stages"]["prefix"]["iters"] += 1
    assert records.load_current("descending", "ci", 0, config, records.code_hash(), tmp_path) is None


def test_a_refused_record_becomes_a_run_failure_and_is_not_retrained(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a refused record was retrained over")

    monkeypatch.setattr(experiments_module, "run_experiment", refuse)
    path = write_ci(tmp_path, seed=0)
    write_ci(tmp_path, seed=1)
    edit(path, lambda r: r["metrics"].update(seconds_total=1.0))
    lines: list[str] = []
    prepared = prepare_runs([RunId("descending", "ci", 0), RunId("descending", "ci", 1)], results_dir=tmp_path,
                            checkpoint_dir=None, log=lines.append)
    assert isinstance(prepared[RunId("descending", "ci", 0)], RunFailed)
    assert str(path) in str(prepared[RunId("descending", "ci", 0)])
    assert prepared[RunId("descending", "ci", 1)]["reused"] is True  # the intact record is still used
    assert json.loads(path.read_text())["metrics"]["seconds_total"] == 1.0  # left as it was, for the user


def test_verify_run_on_a_tampered_record_exits_1_naming_the_file_without_a_traceback(tmp_path, monkeypatch,
                                                                                    capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("trained although every record is on disk")

    monkeypatch.setattr(experiments_module, "run_experiment", refuse)
    monkeypatch.setattr(records, "RESULTS_DIR", tmp_path)
    monkeypatch.setenv("COLUMNS", "1000")  # the consoles wrap no line (the tmp path is long)
    paths = [write_ci(tmp_path, seed=s, scale="cpu") for s in range(3)]
    edit(paths[1], lambda r: r["metrics"]["accuracy"]["prefix"].update(descending=0.5))
    report = tmp_path / "report.json"
    code, out, err = cli(capsys, "run", "petrov.sec5.descending-not-learnable", "--json", report)
    assert code == 1
    assert "Traceback" not in out + err
    expected = f"{paths[1]}: digest mismatch, the record was edited; retrain it with --retrain or restore it"
    assert expected in err  # said once as the runs are prepared
    (claim,) = json.loads(report.read_text())["claims"]
    assert claim["status"] == "error"
    assert claim["reasons"] == [f"error: RunFailed: {expected}"]
    assert any(line.endswith(expected) for line in out.splitlines())  # and under the table, in one line
