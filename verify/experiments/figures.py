"""Figures of the training experiments, drawn from run records (no model needed).

* attention maps: layer-1 attention of the pretrained, fully fine-tuned and prefix-tuned models on
  the same input (rows = query positions, columns = key positions, tokens on the axes);
* accuracy table: mean exact match over seeds (bars) with every seed's value (dots), beside the
  paper's single-seed numbers;
* learning curves: every adapter stage's held-out and training loss and exact match per seed, with
  where the convergence rule stopped it or it hit its cap.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TITLES = {"pretrained": "pretrained (ascending)", "finetuned": "fully fine-tuned (descending)",
          "prefix": "prefix-tuned (descending)"}


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def attention_maps(record: dict, path: Path) -> Path:
    """Three attention maps (one record = one seed) side by side."""
    stored = record["metrics"]["attention"]  # records are written with sorted keys: reorder
    maps = {name: stored[name] for name in (*TITLES, *sorted(set(stored) - set(TITLES))) if name in stored}
    fig, axes = plt.subplots(1, len(maps), figsize=(5.2 * len(maps), 5))
    for ax, (name, item) in zip(np.atleast_1d(axes), maps.items(), strict=True):
        pattern = np.asarray(item["pattern"])
        ax.imshow(pattern, cmap="viridis", vmin=0, vmax=1)
        labels = [str(t) for t in item["tokens"]]
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(f"{TITLES.get(name, name)}\nanswer {''.join(map(str, item['answer']))}", fontsize=9)
        ax.set_xlabel("key token")
        ax.set_ylabel("query token")
    fig.suptitle(f"layer-1 attention, seed {record['seed']} ({record['scale']} scale); position 0 = prefix slot",
                 fontsize=10)
    return _save(fig, path)


def accuracy_table(rows: dict[str, list[float]], paper: dict[str, float], title: str, path: Path) -> Path:
    """rows: label -> per-seed accuracies in [0, 1]; paper: label -> the paper's value."""
    labels = list(rows)
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 4))
    x = np.arange(len(labels))
    means = [100 * float(np.mean(rows[k])) for k in labels]
    ax.bar(x - 0.2, means, width=0.4, label="ours (mean over seeds)", color="tab:blue")
    for i, k in enumerate(labels):
        ax.scatter([i - 0.2] * len(rows[k]), [100 * v for v in rows[k]], color="black", s=10, zorder=3)
    ax.bar(x + 0.2, [100 * paper.get(k, np.nan) for k in labels], width=0.4, label="paper", color="tab:orange")
    for i, m in enumerate(means):
        ax.text(i - 0.2, m + 1, f"{m:.1f}", ha="center", fontsize=7)
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("exact match (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def redraw_main(name: str, draw: Callable[[list[dict], Path, str], list[Path]], description: str,
                argv: list[str] | None = None) -> int:
    """``python -m verify.experiments.<name>_figures [--scale] [--seeds] [--out]``: redraw an
    experiment's own figures from its CURRENT records (it never trains; a missing or stale record
    is a usage error, exit 2)."""
    import argparse

    from verify.experiments import records
    from verify.experiments.scales import config_for

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scale", default="cpu", choices=("ci", "cpu", "paper"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=records.REPO / "notes" / "figures")
    args = parser.parse_args(argv)
    config, code = config_for(name, args.scale), records.code_hash()
    runs = []
    for seed in range(args.seeds):
        record = records.load_current(name, args.scale, seed, config, code)
        if record is None:
            parser.error(f"no current record for {name} {args.scale} seed {seed}: run the check or "
                         f"`python -m verify experiments {name}` first")
        runs.append(record)
    for path in draw(runs, args.out, "" if args.scale == "cpu" else f"_{args.scale}"):
        print(f"wrote {path}")
    return 0


def learning_curves(runs: list[dict], title: str, path: Path) -> Path:
    """One panel per adapter stage: held-out loss (solid) and training loss (dashed, mean over the
    E steps before each point) on a log axis, teacher-forced exact match (dotted, right axis), one
    colour per seed; a cross marks where the convergence rule stopped a stage, a bar where it hit
    its cap still improving."""
    stages = list(runs[0]["metrics"]["curves"])
    columns = min(3, len(stages))
    rows = -(-len(stages) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, stage in zip(axes.flat, stages, strict=False):
        right = ax.twinx()
        for k, run in enumerate(runs):
            curve, state = run["metrics"]["curves"][stage], run["metrics"]["convergence"][stage]
            c = colours[k % len(colours)]
            steps = np.asarray(curve["step"])
            ax.plot(steps, curve["heldout_loss"], color=c, lw=1.4, label=f"seed {run['seed']}")
            train = [(s, v) for s, v in zip(curve["step"], curve["train_loss"], strict=True) if v is not None]
            if train:
                ax.plot(*zip(*train, strict=True), color=c, lw=0.9, ls="--")
            right.plot(steps, curve["exact"], color=c, lw=1.0, ls=":")
            ax.plot(steps[-1], curve["heldout_loss"][-1], marker="x" if state["converged"] else "|",
                    color=c, ms=10, mew=2)
        cap = runs[0]["metrics"]["convergence"][stage]["cap"]
        done = sum(r["metrics"]["convergence"][stage]["converged"] for r in runs)
        ax.set_yscale("log")
        ax.set_xlim(0, cap)
        right.set_ylim(-0.02, 1.02)
        ax.set_title(f"{stage}: converged {done}/{len(runs)} (cap {cap})", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (held-out solid, train dashed)", fontsize=8)
        right.set_ylabel("exact match (dotted)", fontsize=8)
    for ax in list(axes.flat)[len(stages):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
