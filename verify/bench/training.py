"""``python -m verify bench training``: training speed of the experiments on this machine.

Two figures per experiment at cpu scale, printed, never asserted (the machine is shared):
  * live: steps/s of each digit-task stage of its cpu configuration, measured now on a fresh model
    over ``steps`` steps after 5 warm-up steps, with one intra-op thread (as the experiments train);
  * recorded: steps/s per stage and total seconds per seed stored in the current run records (what
    the committed numbers cost), and, against the 60-minute budget for retraining every training
    claim at cpu scale, their sum (one run at a time) and their wall time on ``jobs`` workers
    (``--jobs``; longest first, as verify/experiments/schedule.py submits them).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from rich.console import Console
from rich.table import Table

from constructions.torch_threads import torch_threads
from verify.experiments import records
from verify.experiments.gpt import GPT, GPTConfig, add_lora, add_prefix
from verify.experiments.scales import EXPERIMENTS, config_for
from verify.experiments.schedule import lpt_makespan
from verify.experiments.tasks import TASK_NAMES
from verify.experiments.train import StageConfig, train_stage

BUDGET_SECONDS = 60 * 60
SEEDS = (0, 1, 2)
WARMUP = 5


def _adapted(model: GPT, stage_name: str, config: dict) -> GPT:
    """The model a stage trains: the whole model (pretrain / finetune), or a frozen copy with a
    prefix or LoRA, as the experiments build it."""
    model = copy.deepcopy(model)
    if "lora" in stage_name:
        lora = config.get("lora", {"rank": 1, "targets": ["c_proj", "c_fc"], "alpha": 1.0})
        add_lora(model, lora["rank"], tuple(lora["targets"]), lora["alpha"])
    elif "prefix" in stage_name:
        add_prefix(model, config.get("prefix_length", config["n_prefix"]), torch.Generator().manual_seed(0))
    return model


def live_rates(name: str, steps: int) -> dict[str, float]:
    """steps/s of each digit-task stage of ``name``'s cpu configuration, measured now: optimizer
    steps only (the convergence rule's held-out evaluations, one per cap/40 steps, are left out;
    the recorded steps/s include them)."""
    config = config_for(name, "cpu")
    torch.manual_seed(0)
    base = GPT(GPTConfig(**config["model"]))
    rates = {}
    with torch_threads(1):
        for stage_name, stage in config["stages"].items():
            if stage["task"] not in TASK_NAMES:
                continue
            model = _adapted(base, stage_name, config)
            short = replace(StageConfig(**stage), iters=WARMUP, converge=None)
            train_stage(model, short, 0, config["n_prefix"], None, "bench", quiet=True)
            result = train_stage(model, replace(short, iters=steps), 0, config["n_prefix"], None, "bench", quiet=True)
            rates[stage_name] = result.steps_per_second
    return rates


def recorded(name: str) -> list[dict]:
    """The current cpu-scale records of ``name`` for seeds 0, 1, 2 (missing or stale ones left out)."""
    config, code = config_for(name, "cpu"), records.code_hash()
    found = (records.load_current(name, "cpu", seed, config, code) for seed in SEEDS)
    return [r for r in found if r is not None]


def bench_training(console: Console, steps: int = 100, jobs: int = 2) -> dict[str, dict]:
    table = Table(title=f"training speed at cpu scale (1 intra-op thread; live = {steps} steps now)")
    for column in ("experiment", "stage", "live steps/s", "recorded steps/s", "recorded s / seed"):
        table.add_column(column, justify="left" if column in ("experiment", "stage") else "right")
    out: dict[str, dict] = {}
    every_run, complete, alone, alone_known = [], True, 0.0, []
    for name in EXPERIMENTS:
        live = live_rates(name, steps)
        runs = recorded(name)
        per_seed = [r["metrics"]["seconds_total"] for r in runs]
        complete &= len(runs) == len(SEEDS)
        every_run += per_seed
        stages = list(config_for(name, "cpu")["stages"])
        for k, stage in enumerate(stages):
            rec = [r["metrics"]["training"][stage]["steps_per_second"] for r in runs
                   if r["metrics"]["training"].get(stage, {}).get("steps_per_second")]
            table.add_row(name if k == 0 else "", stage, f"{live[stage]:.0f}" if stage in live else "-",
                          f"{sum(rec) / len(rec):.0f}" if rec else "-",
                          (f"{sum(per_seed) / len(per_seed):.0f}" if per_seed else "no records") if k == 0 else "")
        out[name] = {"live_steps_per_second": live, "recorded_seconds_per_seed": per_seed}
        config_stages = config_for(name, "cpu")["stages"]
        if set(live) == set(config_stages):  # every stage measured now: the training steps' cost alone
            alone += len(SEEDS) * sum(stage["iters"] / live[n] for n, stage in config_stages.items())
            alone_known.append(name)
    console.print(table)
    note = "" if complete else " (some records missing or stale: the sum covers only the current ones)"
    console.print(f"retraining every training claim at cpu scale, seeds 0-2 (budget {BUDGET_SECONDS // 60} min), "
                  f"from the records' times{note}: one run at a time {sum(every_run) / 60:.1f} min; "
                  f"{jobs} at a time (--jobs {jobs}) {lpt_makespan(every_run, jobs) / 60:.1f} min; the "
                  f"records' times include whatever else ran on the machine then", highlight=False)
    console.print(f"training steps alone at the live rates, seeds 0-2 ({', '.join(alone_known)}; evaluation "
                  f"not included): {alone / 60:.1f} min", highlight=False)
    return out
