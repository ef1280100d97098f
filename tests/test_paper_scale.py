"""The paper-scale configurations (``--scale paper``, for a GPU) run end to end: every experiment's
paper model, prefix form, LoRA placement and stages, with each stage cut to 2 steps and small
evaluations, so that a GPU session does not discover a shape or config error hours in. The
numbers of such a run mean nothing; only that every stage trains and every metric is produced."""

from __future__ import annotations

import pytest

from constructions.torch_threads import torch_threads
from verify.experiments.experiments import EXPERIMENT_FUNCTIONS
from verify.experiments.scales import EXPERIMENTS, config_for

SMALL = {"eval_examples": 32, "spread_inputs": 20, "capacity_virtual_tokens": 20}  # evaluation sizes only


def shrunk_paper_config(name: str) -> dict:
    config = config_for(name, "paper")  # also registers the experiment's module
    for stage in config["stages"].values():
        stage["iters"], stage["checkpoint_every"] = 2, 1
    for field, value in SMALL.items():
        if field in config:
            config[field] = value
    if "lexicon" in config:  # translation: evaluated on its whole word list (4,921 words in the paper's)
        config["lexicon"]["n_words"] = 16
    return config


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_paper_configuration_trains_every_stage_and_measures_everything(name, tmp_path):
    config = shrunk_paper_config(name)
    with torch_threads(1):
        metrics = EXPERIMENT_FUNCTIONS[name](config, 0, "cpu", tmp_path, "paper-smoke", True)
    assert set(metrics["training"]) == set(config["stages"])
    assert all(t["steps"] == 2 for t in metrics["training"].values())
    accuracies = [v for by_task in metrics["accuracy"].values() for v in by_task.values()]
    assert accuracies and all(0.0 <= v <= 1.0 for v in accuracies)
    params = metrics["parameters"]
    if "lora" in params:  # LoRA never gets more parameters than the prefix it is compared with
        assert 0 < params["lora"] <= params["prefix"]  # skills: equal (12,288); translation: 66,680 vs 67,584
