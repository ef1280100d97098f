"""``verify bench training``: live steps/s per stage and the recorded cost against the budget."""

from __future__ import annotations

import pytest
from cli_helpers import assert_usage_error, cli
from rich.console import Console

from verify.bench import training as bench_training
from verify.experiments.scales import config_for


def test_live_rates_cover_every_digit_stage_of_the_cpu_config():
    rates = bench_training.live_rates("descending", steps=3)
    assert set(rates) == set(config_for("descending", "cpu")["stages"])
    assert all(r > 0 for r in rates.values())


def test_the_timed_prefix_has_the_experiments_prefix_length():
    config = config_for("skills", "cpu")
    base = bench_training.GPT(bench_training.GPTConfig(**config["model"]))
    model = bench_training._adapted(base, "prefix_double_hist", config)
    assert model.prefix.shape[1] == config["prefix_length"] == 48  # not the 12 dummy positions


def test_the_report_prints_each_stage_and_the_budget_line(monkeypatch):
    monkeypatch.setattr(bench_training, "EXPERIMENTS", ("descending",))
    console = Console(record=True, width=200)
    out = bench_training.bench_training(console, steps=2)
    text = console.export_text()
    assert "pretrain" in text and "finetune" in text and "budget 60 min" in text and "--jobs 2" in text
    assert set(out["descending"]["live_steps_per_second"]) == set(config_for("descending", "cpu")["stages"])


@pytest.mark.parametrize("args", [["bench", "training", "--steps", "0"], ["bench", "nonsense"]])
def test_bad_bench_options_exit_2(capsys, args):
    code, out, err = cli(capsys, *args)
    assert_usage_error(code, err)
