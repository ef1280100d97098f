"""Experiment ``elicit`` (petrov.sec5.elicits-pretrained-tasks; paper notes 4.2, notebook 02).

    M_0   = GPT trained from scratch on the 4-task mixture "random": example i is labelled by task
            t(i) = MIXTURE[i % 4] (ascending, descending, add1, add2) with NO task indicator in the
            input, so on a given input M_0 can at best guess which of the 4 answers is wanted
            ("pretrained"; the paper's M_0 scores 31 / 19 / 30 / 16% on the four tasks)
    M_t   = M_0 frozen + a prefix P_t of n_S positions trained on task t alone, for each t in the
            mixture ("prefix_<t>")
    M_c   = M_0 frozen + a prefix trained on double_hist, a task that is NOT in the mixture and needs
            an attention pattern M_0 does not have ("control_prefix_double_hist", ours)
    I_t   = M_0 frozen + P_t at its initialisation (N(0, 1), before any training step) for each t
            ("init_prefix_<t>", ours: the check's control that the selection comes from training)

Metrics: the cross-evaluation matrix
    A[m][u] = exact match of model m on the seeded 3,200-example test set of task u,
for m in {pretrained, prefix_<t>} and u in MIXTURE (the paper's cell-10 table), plus
A[control_prefix_double_hist][double_hist] and A[init_prefix_t][u] (the same matrix for the
untrained prefixes); trainable parameter counts; per-stage steps/s,
seconds and losses; curves and convergence of every prefix stage (experiments.py).

The claim "a prefix elicits each pretrained task" reads: A[prefix_t][t] is high for every t while
A[prefix_t][u] ~ 0 for u != t (the prefix *selects* one skill of the mixture model) and
A[pretrained][t] < A[prefix_t][t]. The check applies that criterion; see
verify/checks/petrov_sec5_elicit.py.

Importing this module registers ``elicit`` with the record-aware runner
(verify.experiments.experiments.EXPERIMENT_FUNCTIONS); its run records' key also covers this
file (records.EXPERIMENT_FILES).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from verify.experiments.experiments import EXPERIMENT_FUNCTIONS, Runner
from verify.experiments.gpt import add_prefix, count_parameters, unfreeze_all
from verify.experiments.tasks import MIXTURE

CONTROL_TASK = "double_hist"  # not in the mixture; a new attention pattern (paper notes 4.3)


def prefix_stage(task: str) -> str:
    """The stage (and metrics row) name of the prefix trained on ``task``."""
    return f"prefix_{task}"


def init_row(task: str) -> str:
    """The metrics row of ``task``'s prefix at its initialisation (untrained)."""
    return f"init_{prefix_stage(task)}"


CONTROL_STAGE = f"control_{prefix_stage(CONTROL_TASK)}"


def elicit(config: dict, seed: int, device: str = "cpu", directory: Path | None = None, key: str = "",
           quiet: bool = False) -> dict:
    """Pretrain on the mixture; one prefix per mixture task and a control prefix on double_hist,
    each from the same frozen pretrained model; evaluate the cross-evaluation matrix (accuracies
    in [0, 1]) of the trained prefixes and of the same prefixes at their initialisation. Prefix inits are drawn in order (ascending, descending, add1, add2, control) from
    one torch.Generator seeded with ``seed``."""
    run = Runner(config, seed, device, directory, key, quiet, label=f"seed {seed} ")
    n_prefix = config["n_prefix"]
    pretrained = run.new_model()
    run.stage(pretrained, "pretrain")
    generator = torch.Generator().manual_seed(seed)
    models = {"pretrained": pretrained}
    prefix_params = 0
    for task in MIXTURE:
        model = copy.deepcopy(pretrained)
        add_prefix(model, n_prefix, generator)
        prefix_params = count_parameters(model)
        models[init_row(task)] = copy.deepcopy(model)  # the prefix before its first step
        run.stage(model, prefix_stage(task))
        models[prefix_stage(task)] = model
    control = copy.deepcopy(pretrained)
    add_prefix(control, n_prefix, generator)
    run.stage(control, CONTROL_STAGE)
    accuracy = {name: {task: run.accuracy(m, task) for task in MIXTURE} for name, m in models.items()}
    accuracy[CONTROL_STAGE] = {CONTROL_TASK: run.accuracy(control, CONTROL_TASK)}
    full = copy.deepcopy(pretrained)
    unfreeze_all(full)
    return {"accuracy": accuracy, "parameters": {"model": count_parameters(full), "prefix": prefix_params},
            "training": run.timings, **run.learning()}


EXPERIMENT_FUNCTIONS["elicit"] = elicit
