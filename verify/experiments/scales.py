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
from importlib import import_module

from verify.experiments.train import default_rule

SCALES = ("ci", "cpu", "paper")

# --- petrov.sec5.descending-not-learnable (paper notes 4.1, notebook 01) ------------------------
# 1 layer, 1 head, n_embd 96, LayerNorm, dropout 0.1, prefix of 1 position (block 20), seed 2023.
# Pretrain on ascending 20,000 steps at lr 5e-4; fully fine-tune on descending 10,000 steps at
# lr 5e-4; prefix-tune on descending 40,000 steps at lr 5e-4 (the notebook reuses the config).
# Ours in addition: the recovery control: the trained descending prefix trained further on ascending
# (a pretrained task) with the descending prefix's settings and number of steps (the same budget).
_DESCENDING_PAPER = {
    "model": {"vocab_size": 10, "block_size": 20, "n_layer": 1, "n_head": 1, "n_embd": 96,
              "dropout": 0.1, "skip_layer_norm": False},
    "n_prefix": 1,
    "eval_examples": 3200,
    "stages": {
        "pretrain": {"task": "ascending", "iters": 20_000, "lr": 5e-4, "weight_decay": 0.1, "dropout_on": True},
        "finetune": {"task": "descending", "iters": 10_000, "lr": 5e-4, "weight_decay": 0.1, "dropout_on": True},
        "prefix": {"task": "descending", "iters": 40_000, "lr": 5e-4, "weight_decay": 0.01, "dropout_on": False},
        "recover_prefix": {"task": "ascending", "iters": 40_000, "lr": 5e-4, "weight_decay": 0.01,
                           "dropout_on": False},
    },
}


def with_convergence_rules(configs: dict[str, dict]) -> dict[str, dict]:
    """Every stage but pretraining (prefix, soft prompt, LoRA, full fine-tuning, the controls'
    prefixes) gets the convergence rule train.default_rule(cap), its ``iters`` becoming the cap:
    the same rule for every adapter and scale, stated before the runs (notes/experiments.md)."""
    out = deepcopy(configs)
    for config in out.values():
        for name, stage in config["stages"].items():
            if name != "pretrain":
                stage["converge"] = default_rule(stage["iters"])
    return out


def _with_iters(config: dict, iters: dict[str, int], eval_examples: int | None = None) -> dict:
    out = deepcopy(config)
    for stage, n in iters.items():
        out["stages"][stage]["iters"] = n
        out["stages"][stage]["checkpoint_every"] = max(1, min(1000, n // 4))
    if eval_examples is not None:
        out["eval_examples"] = eval_examples
    return out


CONFIGS: dict[str, dict[str, dict]] = {
    "descending": with_convergence_rules({
        "paper": _DESCENDING_PAPER,
        # Same model, learning rates and 2 : 1 : 4 step ratio; every stage 5x shorter (the recovery
        # control as long as the descending prefix): at about 55 full / 90 prefix steps/s on one
        # core, about 5.5 minutes a seed. See notes/experiments.md.
        "cpu": _with_iters(_DESCENDING_PAPER, {"pretrain": 4000, "finetune": 2000, "prefix": 8000,
                                               "recover_prefix": 8000}),
        "ci": _with_iters(_DESCENDING_PAPER, {"pretrain": 60, "finetune": 30, "prefix": 30,
                                              "recover_prefix": 30}, eval_examples=320),
    }),
}

# --- petrov.sec5.elicits-pretrained-tasks (paper notes 4.2, notebook 02) -------------------------
# 1 layer, 4 heads, n_embd 256, no LayerNorm before attention (skip_layer_norm), dropout 0.1, prefix
# of 1 position. Pretrain on the mixture "random" 20,000 steps at lr 5e-4; one prefix per mixture
# task, 30,000 steps at lr 5e-5 each. Ours in addition: a control prefix on double_hist (a task
# outside the mixture) with the prefixes' settings.
_ELICIT_PREFIX = {"lr": 5e-5, "weight_decay": 0.01, "dropout_on": False}
_ELICIT_PAPER = {
    "model": {"vocab_size": 10, "block_size": 20, "n_layer": 1, "n_head": 4, "n_embd": 256,
              "dropout": 0.1, "skip_layer_norm": True},
    "n_prefix": 1,
    "eval_examples": 3200,
    "stages": {
        "pretrain": {"task": "random", "iters": 20_000, "lr": 5e-4, "weight_decay": 0.1, "dropout_on": True},
        **{f"prefix_{t}": {"task": t, "iters": 30_000, **_ELICIT_PREFIX}
           for t in ("ascending", "descending", "add1", "add2")},
        "control_prefix_double_hist": {"task": "double_hist", "iters": 30_000, **_ELICIT_PREFIX},
    },
}


def _elicit_scaled(n_embd: int, pretrain: int, pretrain_lr: float, prefix: int, prefix_lr: float,
                   eval_examples: int | None = None) -> dict:
    """The paper's elicit config with another width, pretraining steps / lr, and prefix steps / lr
    for every prefix stage (the control's included)."""
    out = deepcopy(_ELICIT_PAPER)
    out["stages"]["pretrain"]["lr"] = pretrain_lr
    out["model"]["n_embd"] = n_embd
    out = _with_iters(out, {name: pretrain if name == "pretrain" else prefix for name in out["stages"]},
                      eval_examples)
    for name, stage in out["stages"].items():
        if name != "pretrain":
            stage["lr"] = prefix_lr
    return out


CONFIGS["elicit"] = with_convergence_rules({
    "paper": _ELICIT_PAPER,
    # Width 256 -> 128 (at 256 the 21 evaluations alone take 4 minutes a seed), pretraining 2.5x
    # shorter at 2x the lr, prefixes 30x shorter at lr 1e-2 (at 1e-3, 800 steps of a prefix did not
    # elicit add1 from a model that had it): about 6 minutes a seed. See notes/experiments.md.
    "cpu": _elicit_scaled(128, 8000, 1e-3, 1000, 1e-2),
    "ci": _elicit_scaled(32, 40, 1e-3, 20, 1e-2, eval_examples=320),
})
# Experiments whose function lives in a module of their own, which registers it on import. The
# later modules (skills, translation) also own their configurations and paper numbers: importing
# them adds CONFIGS[name] and PAPER_NUMBERS[name] (config_for imports them first).
EXPERIMENT_MODULES: dict[str, str] = {"elicit": "verify.experiments.elicit",
                                      "skills": "verify.experiments.skills",
                                      "translation": "verify.experiments.translation"}
EXPERIMENTS = (*CONFIGS, *(name for name in EXPERIMENT_MODULES if name not in CONFIGS))

# The paper's numbers (notes 4.1, notebook 01, one seed), as fractions. Keys: "<model> <task>".
PAPER_NUMBERS: dict[str, dict[str, float]] = {
    "descending": {"pretrained ascending": 0.9141, "pretrained descending": 0.0,
                   "finetuned ascending": 0.0, "finetuned descending": 0.8491,
                   "prefix ascending": 0.0009, "prefix descending": 0.0},
    # notes 4.2, cell 10 (seed 1428): rows = prefix (or none), columns = test task.
    "elicit": {
        "pretrained ascending": 0.3144, "pretrained descending": 0.1916, "pretrained add1": 0.2997,
        "pretrained add2": 0.1562,
        "prefix_ascending ascending": 0.9409, "prefix_ascending descending": 0.0,
        "prefix_ascending add1": 0.0, "prefix_ascending add2": 0.0,
        "prefix_descending ascending": 0.0003, "prefix_descending descending": 0.8372,
        "prefix_descending add1": 0.0022, "prefix_descending add2": 0.0066,
        "prefix_add1 ascending": 0.0, "prefix_add1 descending": 0.0, "prefix_add1 add1": 0.9962,
        "prefix_add1 add2": 0.0,
        "prefix_add2 ascending": 0.0, "prefix_add2 descending": 0.0, "prefix_add2 add1": 0.0016,
        "prefix_add2 add2": 0.9978,
    },
}


def config_for(experiment: str, scale: str) -> dict:
    """A copy of the configuration (ValueError for an unknown experiment or scale). For an
    experiment in EXPERIMENT_MODULES this imports its module, which registers its function with
    the runner (so ``run_experiment`` finds it whoever calls it first)."""
    if experiment in EXPERIMENT_MODULES:
        import_module(EXPERIMENT_MODULES[experiment])
    if experiment not in CONFIGS:
        raise ValueError(f"unknown experiment {experiment!r}; known: {', '.join(EXPERIMENTS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    return deepcopy(CONFIGS[experiment][scale])
