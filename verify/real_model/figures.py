"""The figures of petrov.sec6.cross-layer-attention-shift (matplotlib Agg, deterministic PNGs).

real_layer_shift.png     per layer and prefix: the worst change of the renormalised content
                         attention (shift_max) and its mean total variation (tv_mean), float64,
                         log scale, with the float64 tolerance and the "clear change" threshold
real_attention_maps.png  one head of one sentence (the largest change, trained prefix), at
                         layer 0 and at the layer with the largest shift: the no-prefix attention A,
                         the prefix run's A^pt (prefix columns first), A^pt_content / (1 - alpha),
                         and its difference from A
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from verify.real_model import tolerances
from verify.real_model.suite import SuiteResult

LAYER_SHIFT = "real_layer_shift.png"
ATTENTION_MAPS = "real_attention_maps.png"
# No "Software"/date metadata: the same data gives the same bytes.
_METADATA = {"Software": None}


def write_figures(result: SuiteResult, directory: Path) -> list[Path]:
    """Write both figures into ``directory`` (created if missing); return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with plt.rc_context({"font.size": 8}):
        paths = [_layer_shift(plt, result, directory / LAYER_SHIFT),
                 _attention_maps(plt, result, directory / ATTENTION_MAPS)]
    return paths


def _layer_shift(plt, result: SuiteResult, path: Path) -> Path:
    n_layers = result.model["layers"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    floor = 1e-18  # exact zeros are drawn at the floor of the log axis
    width = 0.8 / len(result.kinds)
    for index, kind in enumerate(result.kinds):
        s = kind.shift["float64"]
        x = np.arange(n_layers) + (index - (len(result.kinds) - 1) / 2) * width
        for ax, values in zip(axes, (s.shift_max, s.tv_mean)):
            ax.bar(x, np.maximum(values, floor), width=width, label=kind.name)
    for ax, title in zip(axes, ("worst |A^pt/(1-alpha) - A| (shift_max)", "mean total variation (tv_mean)")):
        ax.set_yscale("log")
        ax.set_ylim(floor, 2)
        ax.axhline(tolerances.FLOAT64, color="k", ls="--", lw=0.8, label=f"float64 tolerance {tolerances.FLOAT64:g}")
        ax.axhline(tolerances.CLEAR_SHIFT, color="r", ls=":", lw=0.8,
                   label=f"clear change {tolerances.CLEAR_SHIFT:g}")
        ax.set_xticks(range(n_layers))
        ax.set_xlabel("layer")
        ax.set_title(title)
    axes[0].set_ylabel("change of the relative content attention")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    fig.suptitle(f"{result.model['family']} ({result.model['model_type']}), peft prefixes, float64: "
                 "layer 0 unchanged up to rounding, deeper layers change through their inputs")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120, metadata=_METADATA)
    plt.close(fig)
    return path


def _attention_maps(plt, result: SuiteResult, path: Path) -> Path:
    maps = result.maps
    n_s = maps.prefix_run[0].shape[1] - maps.reference[0].shape[1]
    labels = maps.tokens
    fig, axes = plt.subplots(len(maps.layers), 4, figsize=(13, 3.3 * len(maps.layers)))
    axes = np.atleast_2d(axes)
    for row, layer in enumerate(maps.layers):
        diff = maps.renormalised[row] - maps.reference[row]
        bound = max(float(np.abs(diff).max()), 1e-300)
        panels = [
            (maps.reference[row], "A: no prefix", "viridis", 0, 1, labels),
            (maps.prefix_run[row], f"A^pt: with prefix ({n_s} prefix columns first)", "viridis", 0, 1,
             [f"s{k + 1}" for k in range(n_s)] + labels),
            (maps.renormalised[row], "A^pt content / (1 - alpha)", "viridis", 0, 1, labels),
            (diff, f"difference (max |.| = {bound:.1e})", "RdBu_r", -bound, bound, labels),
        ]
        for ax, (image, title, cmap, low, high, xlabels) in zip(axes[row], panels):
            shown = ax.imshow(image, cmap=cmap, vmin=low, vmax=high, aspect="auto", interpolation="nearest")
            ax.set_title(f"layer {layer}, head {maps.head}: {title}", fontsize=7)
            ax.set_xticks(range(len(xlabels)))
            ax.set_xticklabels(xlabels, rotation=90, fontsize=5)
            ax.set_yticks(range(len(labels)))
            ax.set_yticklabels(labels, fontsize=5)
            if image is maps.prefix_run[row]:
                ax.axvline(n_s - 0.5, color="w", lw=1)
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(f"{result.model['model_type']}, {maps.kind}: \"{maps.sentence}\"", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_METADATA)
    plt.close(fig)
    return path
