"""``verify audit-records`` retrains recorded runs from scratch and says whether they reproduce
bit-identically (verify/experiments/audit.py). A ci-scale descending run (seconds) stands in for the cpu runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import verify.experiments.experiments as experiments_module
from tests.cli_helpers import assert_usage_error, cli
from verify.experiments import audit
from verify.experiments import records
from verify.experiments.schedule import RunId


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A results dir holding one real ci-scale record of descending, seed 3 (trained once)."""
    results = tmp_path_factory.mktemp("results")
    experiments_module.run_experiment("descending", "ci", (3,), results_dir=results, checkpoint_dir=None, quiet=True)
    return results


@pytest.fixture
def results(trained, tmp_path, monkeypatch) -> Path:
    """A private copy of ``trained`` that records.RESULTS_DIR (what the CLI reads) points at."""
    copy = tmp_path / "results"
    (copy / "descending").mkdir(parents=True)
    source = records.record_path("descending", "ci", 3, trained)
    records.record_path("descending", "ci", 3, copy).write_text(source.read_text())
    monkeypatch.setattr(records, "RESULTS_DIR", copy)
    monkeypatch.setenv("COLUMNS", "1000")
    return copy


def audit_ci(capsys, tmp_path, *extra) -> tuple[int, str, dict]:
    report = tmp_path / "audit.json"
    code, out, _ = cli(capsys, "audit-records", "--scale", "ci", "--experiment", "descending", "--json", report,
                       *extra)
    return code, out, json.loads(report.read_text()) if report.exists() else {}


def files(directory: Path) -> list[tuple[str, bytes]]:
    return sorted((str(p), p.read_bytes()) for p in directory.rglob("*") if p.is_file())


def reseal(path: Path, change) -> None:
    """Edit a record and recompute its digest: a forgery the digest cannot see."""
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(records.seal(record), indent=1, sort_keys=True) + "\n")


def test_an_honest_record_reproduces_bit_identically(results, tmp_path, capsys):
    before = files(results)
    code, out, report = audit_ci(capsys, tmp_path)
    assert code == 0
    (row,) = report["runs"]
    assert (row["seed"], row["status"], row["differences"]) == (3, "reproduces", [])
    assert "1 of 1 run(s) reproduce bit-identically" in out
    assert files(results) == before  # nothing written beside the records, nothing changed


def test_a_forged_accuracy_with_a_recomputed_digest_does_not_reproduce(results, tmp_path, capsys):
    path = records.record_path("descending", "ci", 3, results)
    reseal(path, lambda r: r["metrics"]["accuracy"]["pretrained"].update(
        ascending=r["metrics"]["accuracy"]["pretrained"]["ascending"] + 1 / 320))
    assert records.load_current("descending", "ci", 3, experiments_module.config_for("descending", "ci"),
                                records.code_hash(), results) is not None  # the digest cannot see it
    code, out, report = audit_ci(capsys, tmp_path)
    assert code == 1
    (row,) = report["runs"]
    assert row["status"] == "differs"
    assert [d["path"] for d in row["differences"]] == ["/metrics/accuracy/pretrained/ascending"]


def test_a_change_in_training_does_not_reproduce(results, tmp_path, capsys, monkeypatch):
    honest = experiments_module.train_stage

    def one_seed_off(model, stage, seed, *args, **kwargs):
        return honest(model, stage, seed + 1, *args, **kwargs)

    monkeypatch.setattr(experiments_module, "train_stage", one_seed_off)
    code, _, report = audit_ci(capsys, tmp_path)
    assert code == 1
    assert report["runs"][0]["status"] == "differs"


def test_a_record_says_where_it_was_trained_and_the_digest_covers_it(results):
    path = records.record_path("descending", "ci", 3, results)
    record = json.loads(path.read_text())
    assert record["environment"] == records.environment()
    assert set(record["environment"]) >= {"torch", "cpu_capability", "machine", "cpu"}
    record["environment"]["cpu_capability"] = "NO AVX"
    path.write_text(json.dumps(record))
    with pytest.raises(records.RecordRefused, match="digest mismatch"):
        records.load_current("descending", "ci", 3, experiments_module.config_for("descending", "ci"),
                             records.code_hash(), results)


def test_a_difference_on_another_machine_names_both_environments(results, tmp_path, capsys):
    path = records.record_path("descending", "ci", 3, results)

    def elsewhere(record: dict) -> None:
        record["environment"] = {**record["environment"], "cpu_capability": "AVX2", "cpu": "another CPU"}
        record["metrics"]["accuracy"]["pretrained"]["ascending"] += 1 / 320

    reseal(path, elsewhere)
    code, _, report = audit_ci(capsys, tmp_path)
    (row,) = report["runs"]
    assert code == 1 and row["status"] == "differs"  # still a failure: rounding and forgery look alike
    assert "recorded on torch" in row["detail"] and "AVX2 / another CPU" in row["detail"]
    assert records.environment()["cpu_capability"] in row["detail"].split("retrained on", 1)[1]


def test_a_difference_on_the_same_machine_names_no_environment(results, tmp_path, capsys):
    path = records.record_path("descending", "ci", 3, results)
    reseal(path, lambda r: r["metrics"]["accuracy"]["pretrained"].update(
        ascending=r["metrics"]["accuracy"]["pretrained"]["ascending"] + 1 / 320))
    _, _, report = audit_ci(capsys, tmp_path)
    assert "recorded on" not in report["runs"][0]["detail"]


def test_timings_alone_are_not_a_difference(results, tmp_path, capsys):
    path = records.record_path("descending", "ci", 3, results)

    def slower(record: dict) -> None:
        record["metrics"]["seconds_total"] += 100.0
        for stage in record["metrics"]["training"].values():
            stage["seconds"] += 1.0
            stage["steps_per_second"] = 1.0
            stage["steps_run"] = 0  # as if resumed from a checkpoint

    reseal(path, slower)
    assert audit_ci(capsys, tmp_path)[0] == 0


def test_an_edited_record_is_refused_without_retraining(results, tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("retrained a refused record")

    monkeypatch.setattr(experiments_module, "run_experiment", refuse)
    path = records.record_path("descending", "ci", 3, results)
    record = json.loads(path.read_text())
    record["metrics"]["accuracy"]["prefix"]["descending"] = 1.0
    path.write_text(json.dumps(record))
    code, _, report = audit_ci(capsys, tmp_path)
    assert code == 1
    assert (report["runs"][0]["status"], report["runs"][0]["detail"]) == ("refused",
                                                                          "digest mismatch, the record was edited")


def test_the_seeded_choice_is_deterministic_without_replacement():
    runs = [RunId(e, "cpu", s) for e in ("descending", "skills") for s in range(3)]
    first = audit.choose_runs(runs, 4, seed=11)
    assert first == audit.choose_runs(list(reversed(runs)), 4, seed=11)  # the order given does not matter
    assert len(set(first)) == 4
    assert {tuple(audit.choose_runs(runs, 4, seed=s)) for s in range(20)} != {tuple(first)}  # the seed matters


def test_recorded_runs_are_read_from_the_file_names(tmp_path):
    for name in ("descending/cpu-seed0.json", "descending/cpu-seed12.json", "skills/ci-seed1.json",
                 "skills/notes.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert audit.recorded_runs(tmp_path, scale="cpu") == [RunId("descending", "cpu", 0),
                                                           RunId("descending", "cpu", 12)]
    assert audit.recorded_runs(tmp_path, experiment="skills") == [RunId("skills", "ci", 1)]


def test_the_committed_records_are_twelve_cpu_runs():
    assert len(audit.recorded_runs(records.RESULTS_DIR, scale="cpu")) == 12


@pytest.mark.parametrize("extra", [["--seeds", "0"], ["--seeds", "13"], ["--experiment", "sorting"],
                                   ["--scale", "huge"], ["--seed", "-1"], ["--scale", "ci"]])
def test_bad_input_is_one_line_and_exit_2(extra, capsys):
    code, _, err = cli(capsys, "audit-records", *extra)  # --scale ci: no ci records are committed
    assert_usage_error(code, err)


def test_strip_timings_removes_exactly_the_listed_fields():
    metrics = {"seconds_total": 5.0, "device": "cpu", "accuracy": {"a": 0.5},
               "training": {"pretrain": {"steps": 10, "steps_run": 4, "seconds": 1.0, "steps_per_second": 4.0,
                                         "final_loss": 0.25}}}
    assert audit.strip_timings(metrics) == {"device": "cpu", "accuracy": {"a": 0.5},
                                            "training": {"pretrain": {"steps": 10, "final_loss": 0.25}}}
    assert metrics["seconds_total"] == 5.0  # the input is left as it was
