"""Training runs are collected from the chosen checks, made current once each, optionally in
parallel worker processes, and handed to the checks (verify/experiments/schedule.py)."""

from __future__ import annotations

import pytest

import verify.checks.petrov_sec5  # noqa: F401  (registers the training checks)
import verify.checks.petrov_sec5_skills  # noqa: F401
import verify.experiments.experiments as experiments_module
from verify.cli import main
from verify.experiments import records
from verify.experiments.schedule import RunFailed, RunId, Training, lpt_makespan, needed_runs, prepare_runs
from verify.registry import CHECKS, TRAININGS, Context, run_claim
from tests.synthetic_training import learning

SKILLS_CLAIMS = ("petrov.sec5.combines-skills", "petrov.sec5.double-histogram-not-learnable",
                 "petrov.sec6.lora-learns-double-histogram", "petrov.appB.prefix-attention-spread",
                 "petrov.sec3.capacity.trained-model")


def test_five_skills_claims_rest_on_the_same_three_runs():
    trainings = [TRAININGS[c] for c in (*SKILLS_CLAIMS, "petrov.sec5.descending-not-learnable")]
    assert needed_runs(trainings, first_seed=4) == [RunId("skills", "cpu", s) for s in (4, 5, 6)] + \
        [RunId("descending", "cpu", s) for s in (4, 5, 6)]


class FakeTrainer:
    """Stands in for run_experiment: records each call, returns a record per seed."""

    def __init__(self):
        self.calls: list[tuple[str, str, tuple[int, ...], bool]] = []

    def __call__(self, name, scale, seeds, device="cpu", retrain=False, results_dir=None, checkpoint_dir=None,
                 quiet=False, log=None):
        self.calls.append((name, scale, tuple(seeds), retrain))
        return [{"experiment": name, "scale": scale, "seed": s, "path": f"fake/{name}-{s}.json", "reused": False,
                 "metrics": {"seconds_total": 1.0}} for s in seeds]


def test_each_needed_run_is_trained_once_and_current_records_are_reused(tmp_path, monkeypatch):
    fake = FakeTrainer()
    monkeypatch.setattr(experiments_module, "run_experiment", fake)
    config = experiments_module.config_for("descending", "ci")
    records.write_record("descending", "ci", 1, config, records.code_hash(), {"seconds_total": 3.0}, tmp_path)
    runs = needed_runs([Training("descending", "ci", 3)] * 5, first_seed=0)  # five checks, one set of runs
    prepared = prepare_runs(runs, results_dir=tmp_path, checkpoint_dir=None)
    assert sorted(fake.calls) == [("descending", "ci", (0,), False), ("descending", "ci", (2,), False)]
    assert prepared[RunId("descending", "ci", 1)]["reused"] is True
    assert not prepared[RunId("descending", "ci", 0)]["reused"]
    fake.calls.clear()
    prepare_runs(runs, retrain=True, results_dir=tmp_path, checkpoint_dir=None)
    assert sorted(fake.calls) == [("descending", "ci", (s,), True) for s in range(3)]  # --retrain: all, once each


def test_a_check_reads_the_prepared_records_and_trains_nothing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the check trained although its records were prepared")

    monkeypatch.setattr(experiments_module, "run_experiment", refuse)
    acc = {"pretrained": {"ascending": 0.9, "descending": 0.0}, "finetuned": {"ascending": 0.0, "descending": 0.85},
           "prefix": {"ascending": 0.0, "descending": 0.0}, "recover_prefix": {"ascending": 0.9}}
    losses = {stage: {"final_loss": 1.0} for stage in ("prefix", "finetune", "recover_prefix")}
    prepared = {RunId("descending", "cpu", s): {
        "seed": s, "scale": "cpu", "path": f"prepared-{s}", "reused": False,
        "metrics": {"accuracy": acc, "parameters": {"prefix": 96, "full_finetune": 1}, "training": losses,
                    **learning({"prefix": 3000, "finetune": 2000, "recover_prefix": 3000})}}
        for s in (7, 8, 9)}
    finding = CHECKS["petrov.sec5.descending-not-learnable"](Context(seed=7, prepared_runs=prepared))
    assert finding.evidence.details["records"] == ["prepared-7", "prepared-8", "prepared-9"]
    assert finding.evidence.details["retrained"] == [True, True, True]
    with pytest.raises(AssertionError, match="trained although"):  # control: other seeds are not prepared
        CHECKS["petrov.sec5.descending-not-learnable"](Context(seed=0, prepared_runs=prepared))


def _without_timings(record: dict) -> dict:
    metrics = {k: v for k, v in record["metrics"].items() if k not in ("seconds_total", "training")}
    losses = {stage: t["final_loss"] for stage, t in record["metrics"]["training"].items()}
    return {"key": record["key"], "metrics": metrics, "final_losses": losses}


def test_two_worker_processes_give_the_records_of_one_process(tmp_path):
    runs = [RunId("descending", "ci", 0), RunId("descending", "ci", 1)]
    serial = prepare_runs(runs, jobs=1, results_dir=tmp_path / "serial", checkpoint_dir=tmp_path / "ck1")
    parallel = prepare_runs(runs, jobs=2, results_dir=tmp_path / "parallel", checkpoint_dir=tmp_path / "ck2")
    assert all(not parallel[r]["reused"] for r in runs)
    assert [_without_timings(parallel[r]) for r in runs] == [_without_timings(serial[r]) for r in runs]
    assert _without_timings(serial[runs[0]]) != _without_timings(serial[runs[1]])  # control: seeds differ


@pytest.mark.parametrize("argv", [["all", "--jobs", "0"], ["run", "petrov.sec5", "--jobs", "two"],
                                  ["experiments", "skills", "--jobs", "-1"]])
def test_bad_jobs_is_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--jobs" in err[0] and "positive integer" in err[0]


def test_longest_first_schedule_wall_time():
    assert lpt_makespan([5, 3, 3, 2, 2, 1], jobs=2) == 8  # 5+2+1 | 3+3+2
    assert lpt_makespan([5, 3, 3, 2, 2, 1], jobs=1) == 16  # one at a time: the sum
    assert lpt_makespan([4, 4, 4], jobs=8) == 4  # more workers than runs: the longest run
    assert lpt_makespan([], jobs=2) == 0


def test_a_run_that_fails_to_train_is_an_error_of_the_checks_on_it_not_a_crash(tmp_path, monkeypatch):
    from theorems.claims import CLAIMS

    fake = FakeTrainer()

    def flaky(name, scale, seeds, *args, **kwargs):
        if seeds == (1,):
            raise ValueError("loss became nan")
        return fake(name, scale, seeds, *args, **kwargs)

    monkeypatch.setattr(experiments_module, "run_experiment", flaky)
    lines = []
    runs = needed_runs([Training("descending", "cpu", 3)], first_seed=0)
    prepared = prepare_runs(runs, results_dir=tmp_path, checkpoint_dir=None, log=lines.append)
    assert isinstance(prepared[RunId("descending", "cpu", 1)], RunFailed)
    assert "training descending cpu seed 1 failed: ValueError: loss became nan" in lines
    assert "trained 2 of 3 run(s)" in lines[-1]
    claim = next(c for c in CLAIMS if c.id == "petrov.sec5.descending-not-learnable")
    result = run_claim(claim, Context(seed=0, prepared_runs=prepared))
    assert result.status == "error" and "loss became nan" in result.evidence["error"]
