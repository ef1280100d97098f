"""What ``python -m verify experiments NAME`` shows: accuracy table (ours per seed, mean, std, the
paper's), the benchmark line (training steps/s per stage, total time), the records, the figures."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from verify.experiments import figures
from verify.experiments.scales import PAPER_NUMBERS

# Experiments with figures of their own: module with draw(runs, figures_dir, suffix) -> [paths].
EXTRA_FIGURES: dict[str, str] = {"elicit": "verify.experiments.elicit_figures",
                                 "skills": "verify.experiments.skills_figures"}


def accuracy_rows(runs: list[dict]) -> dict[str, list[float]]:
    """'<model> <task>' -> per-seed accuracy, in the order the records list them."""
    rows: dict[str, list[float]] = {}
    for run in runs:
        for model, by_task in run["metrics"]["accuracy"].items():
            for task, value in by_task.items():
                rows.setdefault(f"{model} {task}", []).append(value)
    return rows


def benchmark_line(name: str, runs: list[dict]) -> str:
    """Training steps/s per stage (mean over the seeds trained in this or an earlier call) and the
    total wall time per seed."""
    stages: dict[str, list[float]] = {}
    for run in runs:
        for stage, t in run["metrics"]["training"].items():
            if t.get("steps_per_second"):
                stages.setdefault(stage, []).append(t["steps_per_second"])
    rates = ", ".join(f"{s} {np.mean(v):.0f} steps/s" for s, v in stages.items())
    totals = [run["metrics"].get("seconds_total", float("nan")) for run in runs]
    device = runs[0]["metrics"].get("device", "cpu")
    return (f"bench {name} [{runs[0]['scale']}, {device}, 1 thread]: {rates}; "
            f"total per seed {np.mean(totals):.0f} s (seeds: {', '.join(f'{t:.0f}' for t in totals)} s)")


def present(name: str, runs: list[dict], console: Console, figures_dir: Path) -> list[Path]:
    """Print the table and the benchmark line; write the figures. Returns the written paths."""
    rows = accuracy_rows(runs)
    paper = PAPER_NUMBERS.get(name, {})
    table = Table(title=f"{name} ({runs[0]['scale']} scale): exact match, %")
    for column in ("model / task", *(f"seed {r['seed']}" for r in runs), "mean", "std", "paper"):
        table.add_column(column, justify="left" if column == "model / task" else "right")
    for label, values in rows.items():
        a = 100 * np.asarray(values)
        std = f"{a.std(ddof=1):.2f}" if len(a) > 1 else "-"
        table.add_row(label, *(f"{v:.2f}" for v in a), f"{a.mean():.2f}", std,
                      f"{100 * paper[label]:.2f}" if label in paper else "-")
    console.print(table)
    console.print(benchmark_line(name, runs), highlight=False, markup=False)
    for run in runs:
        console.print(f"record {run['path']} ({'current, reused' if run['reused'] else 'written now'})",
                      highlight=False)
    scale = runs[0]["scale"]
    suffix = "" if scale == "cpu" else f"_{scale}"  # the committed figures are the cpu-scale ones
    seeds = ", ".join(str(r["seed"]) for r in runs)
    written = [figures.accuracy_table(rows, paper, f"{name} ({scale} scale): ours (seeds {seeds}) vs paper",
                                      figures_dir / f"sec5_{name}_accuracy{suffix}.png")]
    if "curves" in runs[0]["metrics"]:
        written.append(figures.learning_curves(
            runs, f"{name} ({scale} scale): learning curves of every adapter (x: converged, |: cap)",
            figures_dir / f"sec5_{name}_learning{suffix}.png"))
    if "attention" in runs[0]["metrics"]:
        written.append(figures.attention_maps(runs[0], figures_dir / f"sec5_{name}_attention{suffix}.png"))
    if name in EXTRA_FIGURES:
        written += import_module(EXTRA_FIGURES[name]).draw(runs, figures_dir, suffix)
    return written
