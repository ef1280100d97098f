"""Configurations of each experiment at each scale.

* ``paper``: the companion code's configuration (notebook 01 for ``descending``), for a GPU.
* ``cpu`` (default): the same model, fewer steps, so that one seed of one experiment takes a few
  minutes on one core of a 2-core CPU while every claim still shows with a clear margin. How
  each was chosen is in notes/experiments.md.
* ``ci``: a handful of steps and a 320-example evaluation: about a minute for the whole pipeline;
  tests run it end to end. Its numbers mean nothing.

A configuration is plain JSON-able data: it is hashed into the run record's key.
"""

from __future__ import annotations

from copy import deepcopy

SCALES = ("ci", "cpu", "paper")

# --- petrov.sec5.descending-not-learnable (paper notes 4.1, notebook 01) ------------------------
# 1 layer, 1 head, n_embd 96, LayerNorm, dropout 0.1, prefix of 1 position (block 20), seed 2023.
# Pretrain on ascending 20,000 steps at lr 5e-4; fully fine-tune on descending 10,000 steps at
# lr 5e-4; prefix-tune on descending 40,000 steps at lr 5e-4 (the notebook reuses the config).
# Ours in addition: a control prefix trained on ascending (a pretrained task) with the prefix's
# settings, and the same number of steps as the descending prefix.
_DESCENDING_PAPER = {
    "model": {"vocab_size": 10, "block_size": 20, "n_layer": 1, "n_head": 1, "n_embd": 96,
              "dropout": 0.1, "skip_layer_norm": False},
    "n_prefix": 1,
    "eval_examples": 3200,
    "stages": {
        "pretrain": {"task": "ascending", "iters": 20_000, "lr": 5e-4, "weight_decay": 0.1, "dropout_on": True},
        "finetune": {"task": "descending", "iters": 10_000, "lr": 5e-4, "weight_decay": 0.1, "dropout_on": True},
        "prefix": {"task": "descending", "iters": 40_000, "lr": 5e-4, "weight_decay": 0.01, "dropout_on": False},
        "control_prefix": {"task": "ascending", "iters": 40_000, "lr": 5e-4, "weight_decay": 0.01,
                           "dropout_on": False},
    },
}


def _with_iters(config: dict, iters: dict[str, int], eval_examples: int | None = None) -> dict:
    out = deepcopy(config)
    for stage, n in iters.items():
        out["stages"][stage]["iters"] = n
        out["stages"][stage]["checkpoint_every"] = max(1, min(1000, n // 4))
    if eval_examples is not None:
        out["eval_examples"] = eval_examples
    return out


CONFIGS: dict[str, dict[str, dict]] = {
    "descending": {
        "paper": _DESCENDING_PAPER,
        # Same model, learning rates and 2 : 1 : 4 step ratio; every stage 5x shorter (the control
        # prefix 20x): at about 55 full / 90 prefix steps/s on one core, about 4 minutes a seed.
        # See notes/experiments.md.
        "cpu": _with_iters(_DESCENDING_PAPER, {"pretrain": 4000, "finetune": 2000, "prefix": 8000,
                                               "control_prefix": 2000}),
        "ci": _with_iters(_DESCENDING_PAPER, {"pretrain": 60, "finetune": 30, "prefix": 30,
                                              "control_prefix": 20}, eval_examples=320),
    },
}
EXPERIMENTS = tuple(CONFIGS)

# The paper's numbers (notes 4.1, notebook 01, one seed), as fractions. Keys: "<model> <task>".
PAPER_NUMBERS: dict[str, dict[str, float]] = {
    "descending": {"pretrained ascending": 0.9141, "pretrained descending": 0.0,
                   "finetuned ascending": 0.0, "finetuned descending": 0.8491,
                   "prefix ascending": 0.0009, "prefix descending": 0.0},
}


def config_for(experiment: str, scale: str) -> dict:
    """A copy of the configuration (ValueError for an unknown experiment or scale)."""
    if experiment not in CONFIGS:
        raise ValueError(f"unknown experiment {experiment!r}; known: {', '.join(EXPERIMENTS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    return deepcopy(CONFIGS[experiment][scale])
