"""The cross-evaluation matrix of the ``elicit`` experiment, drawn from run records.

Left: ours, mean exact match over seeds (with min-max over seeds in each cell); right: the paper's
single-seed matrix (notes 4.2, cell 10). Rows = model (pretrained without prefix, then the prefix
of each task), columns = test task: the claim shows as a bright diagonal on dark off-diagonal cells.

    python -m verify.experiments.elicit_figures [--scale cpu] [--seeds 3] [--out notes/figures]

uses the current records only (it never trains) and writes sec5_elicit_matrix[_<scale>].png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from verify.experiments.elicit import prefix_stage
from verify.experiments.figures import _save, plt, redraw_main
from verify.experiments.scales import PAPER_NUMBERS
from verify.experiments.tasks import MIXTURE

ROWS = ("pretrained", *(prefix_stage(t) for t in MIXTURE))


def matrix(runs: list[dict]) -> np.ndarray:
    """(seeds, 5, 4) accuracies in % : [seed][row model][test task]."""
    return np.array([[[100 * r["metrics"]["accuracy"][m][u] for u in MIXTURE] for m in ROWS] for r in runs])


def cross_matrix(runs: list[dict], path: Path) -> Path:
    """Ours (mean, with min-max over seeds) beside the paper's matrix."""
    ours = matrix(runs)
    paper = np.array([[100 * PAPER_NUMBERS["elicit"][f"{m} {u}"] for u in MIXTURE] for m in ROWS])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    seeds = ", ".join(str(r["seed"]) for r in runs)
    panels = ((axes[0], ours.mean(axis=0), f"ours ({runs[0]['scale']} scale, seeds {seeds}): mean [min-max]"),
              (axes[1], paper, "paper (notebook 02, one seed)"))
    for ax, values, title in panels:
        ax.imshow(values, cmap="viridis", vmin=0, vmax=100)
        for i in range(len(ROWS)):
            for j in range(len(MIXTURE)):
                text = f"{values[i, j]:.1f}"
                if ax is axes[0] and len(runs) > 1:
                    text += f"\n[{ours[:, i, j].min():.1f}-{ours[:, i, j].max():.1f}]"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="black" if values[i, j] > 60 else "white")
        ax.set_xticks(range(len(MIXTURE)), MIXTURE, fontsize=8)
        ax.set_yticks(range(len(ROWS)), ["no prefix", *(f"prefix: {t}" for t in MIXTURE)], fontsize=8)
        ax.set_xlabel("test task")
        ax.set_title(title, fontsize=9)
    fig.suptitle("exact match (%) of each prefix of the mixture-pretrained model on each task", fontsize=10)
    return _save(fig, path)


def draw(runs: list[dict], figures_dir: Path, suffix: str = "") -> list[Path]:
    """The figures ``python -m verify experiments elicit`` writes besides the generic ones."""
    return [cross_matrix(runs, figures_dir / f"sec5_elicit_matrix{suffix}.png")]


def main(argv: list[str] | None = None) -> int:
    return redraw_main("elicit", draw, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
