"""Tests of the 'elicit' experiment (petrov.sec5.elicits-pretrained-tasks): config, record keys,
the ci pipeline end to end, the verdict and its controls, the matrix figure."""

from __future__ import annotations

from verify.experiments.train import default_rule

import json

import pytest

from tests.synthetic_training import learning

from constructions.torch_threads import torch_threads
from verify.experiments import records
from verify.experiments.experiments import run_experiment
from verify.experiments.scales import config_for
from verify.experiments.tasks import MIXTURE
from theorems.claims import claim
from verify.experiments.schedule import RunId
from verify.protocol import Skipped
from verify.registry import CHECKS, QUICK_SKIP, Context, run_claim


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def test_paper_config_is_notebook_02():
    paper = config_for("elicit", "paper")
    assert paper["model"] == {"vocab_size": 10, "block_size": 20, "n_layer": 1, "n_head": 4, "n_embd": 256,
                              "dropout": 0.1, "skip_layer_norm": True}
    assert paper["stages"]["pretrain"] == {"task": "random", "iters": 20_000, "lr": 5e-4, "weight_decay": 0.1,
                                           "dropout_on": True}
    for task in MIXTURE:
        assert paper["stages"][f"prefix_{task}"] == {"task": task, "iters": 30_000, "lr": 5e-5,
                                                     "weight_decay": 0.01, "dropout_on": False,
                                                     "converge": default_rule(30_000)}
    assert paper["stages"]["control_prefix_double_hist"]["task"] == "double_hist"


def test_elicit_key_covers_its_module_and_descending_key_does_not(tmp_path, monkeypatch):
    config = config_for("elicit", "ci")
    code = records.code_hash()
    key = records.run_key("elicit", "ci", 0, config, code)
    descending = records.run_key("descending", "ci", 0, config_for("descending", "ci"), code)
    # a copy of the module directory with elicit.py changed: only elicit's key moves
    for name in (*records.PRODUCING_FILES, "elicit.py"):
        (tmp_path / name).write_bytes((records.Path(records.__file__).parent / name).read_bytes())
    real = records.code_hash

    def hashed_in(files, directory=None):
        return real(files, tmp_path)

    monkeypatch.setattr(records, "code_hash", hashed_in)
    assert records.run_key("elicit", "ci", 0, config, code) == key
    (tmp_path / "elicit.py").write_text("changed")
    assert records.run_key("elicit", "ci", 0, config, code) != key
    assert records.run_key("descending", "ci", 0, config_for("descending", "ci"), code) == descending


def test_ci_pipeline_end_to_end_and_figure(tmp_path):
    runs = run_experiment("elicit", "ci", seeds=(0,), results_dir=tmp_path / "results",
                          checkpoint_dir=tmp_path / "ck", quiet=True)
    (run,) = runs
    assert not run["reused"]
    acc = run["metrics"]["accuracy"]
    assert set(acc) == {"pretrained", *(f"prefix_{t}" for t in MIXTURE), *(f"init_prefix_{t}" for t in MIXTURE),
                        "control_prefix_double_hist"}
    assert all(set(acc[m]) == set(MIXTURE) for m in acc if m != "control_prefix_double_hist")
    assert all(0.0 <= v <= 1.0 for row in acc.values() for v in row.values())
    assert run["metrics"]["parameters"]["prefix"] == 32  # 1 layer x 1 position x n_embd 32
    stored = json.loads((tmp_path / "results" / "elicit" / "ci-seed0.json").read_text())
    assert stored["key"] == run["key"] and stored["config"]["stages"]["pretrain"]["task"] == "random"
    again = run_experiment("elicit", "ci", seeds=(0,), results_dir=tmp_path / "results",
                           checkpoint_dir=tmp_path / "ck", quiet=True)
    assert again[0]["reused"] and again[0]["metrics"] == run["metrics"]
    from verify.checks.petrov_sec5_elicit import elicit_verdict
    from verify.experiments.elicit_figures import cross_matrix

    finding = elicit_verdict(runs)
    assert isinstance(finding.evidence.summary, str) and len(finding.evidence.details["per_seed"]) == 1
    path = cross_matrix(runs, tmp_path / "matrix.png")
    assert path.stat().st_size > 1000


def _synthetic(seed, diagonal, off, pretrained=0.25, control=0.0, init_diagonal=0.0, init_off=0.0):
    acc = {"pretrained": {u: pretrained for u in MIXTURE}, "control_prefix_double_hist": {"double_hist": control}}
    for t in MIXTURE:
        acc[f"prefix_{t}"] = {u: diagonal if u == t else off for u in MIXTURE}
        acc[f"init_prefix_{t}"] = {u: init_diagonal if u == t else init_off for u in MIXTURE}
    training = {"pretrain": {"final_loss": 0.3}, "control_prefix_double_hist": {"final_loss": 1.5},
                **{f"prefix_{t}": {"final_loss": 0.1} for t in MIXTURE}}
    return {"seed": seed, "scale": "cpu", "path": "x", "reused": True,
            "metrics": {"accuracy": acc, "parameters": {"prefix": 128, "model": 1}, "training": training,
                        **learning({name: 800 for name in training if name != "pretrain"})}}


def test_verdict_on_synthetic_records():
    from verify.checks.petrov_sec5_elicit import elicit_verdict

    good = elicit_verdict([_synthetic(s, 0.9, 0.001) for s in range(3)])
    assert good.evidence.holds and all(c.refuted for c in good.controls)
    # one seed's prefix too weak on its task, or leaking onto another task, or no better than pretrained
    assert not elicit_verdict([_synthetic(0, 0.9, 0.0), _synthetic(1, 0.4, 0.0), _synthetic(2, 0.9, 0.0)]).evidence.holds
    assert not elicit_verdict([_synthetic(s, 0.9, 0.06) for s in range(3)]).evidence.holds
    assert not elicit_verdict([_synthetic(s, 0.6, 0.0, pretrained=0.7) for s in range(3)]).evidence.holds


def runner_result(records: list[dict]):
    prepared = {RunId("elicit", "cpu", r["seed"]): r for r in records}
    return run_claim(claim("petrov.sec5.elicits-pretrained-tasks"), Context(seed=0, prepared_runs=prepared))


@pytest.mark.parametrize(("control", "wrong"), [
    # untrained prefixes that already select their tasks: the selection did not come from training
    ("criterion_on_untrained_prefixes", {"init_diagonal": 0.7, "init_off": 0.01}),
    # a prefix that learns a task outside the mixture: the budget teaches anything
    ("criterion_on_prefix_outside_mixture", {"control": 0.8}),
])
def test_each_control_can_flip_while_the_pass_condition_holds(control, wrong):
    good = runner_result([_synthetic(s, 0.9, 0.0) for s in range(3)])
    flipped = runner_result([_synthetic(s, 0.9, 0.0, **wrong) for s in range(3)])
    assert good.evidence["holds"] and flipped.evidence["holds"]
    assert good.control[control]["refuted"] and not flipped.control[control]["refuted"]
    assert (good.status, flipped.status) == ("pass", "fail")
    assert any(control in reason for reason in flipped.reasons)


def test_check_skipped_under_quick():
    import verify.checks.petrov_sec5_elicit  # noqa: F401  (registers the check)

    outcome = CHECKS["petrov.sec5.elicits-pretrained-tasks"](Context(seed=0, quick=True))
    assert isinstance(outcome, Skipped) and outcome.reason == QUICK_SKIP
