"""Figures of the ``skills`` experiment, drawn from run records (no model needed).

* sec5_skills_attention.png: head-averaged attention of the pretrained model, the double_hist
  prefix and double_hist LoRA in every layer on the same double_hist input (teacher forcing). The
  prefix can only add its own columns (the first n_S keys) and rescale the rest of each row
  (petrov.sec4.content-scaling); LoRA on the MLP and output projection changes the inputs of
  deeper layers and so their pattern.
* appB_prefix_spread.png: Appendix B's statistic per layer for each trained prefix (dots = seeds),
  in units of the uniform share (n x the mean over the n positions of p99 - p1, the check's
  statistic), beside the same statistic on the content attention (n = 10) and the paper's GPT-2
  values (its 10-position mean x 10); and the mean renormalised attention on each prefix position
  (seed 0) per layer and head.
* sec3_capacity_trained.png: distinct completions from the V real first tokens and from the
  sampled virtual first tokens, per seed.

    python -m verify.experiments.skills_figures [--scale cpu] [--seeds 3] [--out notes/figures]
redraws them from current records (it never trains); ``python -m verify experiments skills``
writes them too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from verify.experiments.figures import _save, plt, redraw_main

MAP_TITLES = {"pretrained": "pretrained (mixture)", "prefix_double_hist": "prefix on double_hist",
              "lora_double_hist": "LoRA on double_hist"}


def content_view(pattern: np.ndarray, prefix_columns: int) -> np.ndarray:
    """(T, n + T), the content queries' attention with the n prefix keys first -> (T, 1 + T):
    first column = total attention on the prefix, then the content keys."""
    n = prefix_columns
    return np.concatenate([pattern[:, :n].sum(axis=1, keepdims=True), pattern[:, n:]], axis=1)
PAPER_GPT2_SPREAD = (0.016056, 0.102104, 0.174358, 0.088431, 0.07623, 0.068907, 0.079767, 0.105598, 0.162684,
                     0.146836, 0.155692, 0.102223)


def attention_figure(run: dict, path: Path) -> Path:
    stored = run["metrics"]["attention_maps"]
    names = [n for n in MAP_TITLES if n in stored["maps"]]
    n_layer = len(stored["maps"][names[0]])
    tokens = [str(t) for t in stored["tokens"]]
    prefix_columns = stored["prefix_columns"]
    fig, axes = plt.subplots(n_layer, len(names), figsize=(4.6 * len(names), 4.4 * n_layer), squeeze=False)
    for j, name in enumerate(names):
        for layer in range(n_layer):
            ax = axes[layer, j]
            pattern = content_view(np.asarray(stored["maps"][name][layer]), prefix_columns[name])
            ax.imshow(pattern, cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(len(tokens) + 1), ["ΣP", *tokens], fontsize=5)
            ax.set_yticks(range(len(tokens)), tokens, fontsize=5)
            title = MAP_TITLES[name] if name != "lora_double_hist" else f"rank-{run['config']['lora']['rank']} {MAP_TITLES[name]}"
            ax.set_title(f"{title}, layer {layer + 1}", fontsize=9)
    fig.suptitle(f"head-averaged attention of the content positions on one double_hist test input + its answer "
                 f"(seed {run['seed']}, {run['scale']} scale); column ΣP = total attention on the "
                 f"{run['config'].get('prefix_length', '')} prefix positions (0 without a prefix)", fontsize=10)
    return _save(fig, path)


def _positions(spread: dict, kind: str, run: dict) -> int:
    """The number of positions a stored spread is a mean over (older records: from the config)."""
    if f"{kind}_positions" in spread:
        return int(spread[f"{kind}_positions"])
    return int(run["config"]["prefix_length"]) if kind == "prefix" else 10


def spread_figure(runs: list[dict], path: Path, spread_max: float = 2.0) -> Path:
    """Per layer: n x mean over heads and positions of (p99 - p1), i.e. the spread in units of the
    uniform share 1/n (petrov.appB.prefix-attention-spread: threshold 0.2 x 10 = 2.0)."""
    stages = list(runs[0]["metrics"]["spread"])
    fig, (ax, ax_w) = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [1.2, 1]})
    n_layer = len(runs[0]["metrics"]["spread"][stages[0]]["prefix_spread"])
    width = 0.8 / (2 * len(stages))
    for k, stage in enumerate(stages):
        for kind, offset, marker in (("prefix", 0, "o"), ("content", len(stages), "x")):
            per_seed = np.array([_positions(r["metrics"]["spread"][stage], kind, r)
                                 * np.mean(r["metrics"]["spread"][stage][f"{kind}_spread"], axis=1)
                                 for r in runs])  # (S, L)
            x = np.arange(n_layer) + (k + offset) * width - 0.4 + width / 2
            n = _positions(runs[0]["metrics"]["spread"][stage], kind, runs[0])
            label = f"{stage.removeprefix('prefix_')}: {'prefix' if kind == 'prefix' else 'content (control)'}, n = {n}"
            ax.bar(x, per_seed.mean(axis=0), width=width, alpha=0.6, label=label)
            for s in per_seed:
                ax.scatter(x, s, color="black", s=8, marker=marker, zorder=3)
    ax.axhline(spread_max, color="red", ls="--", lw=1, label=f"threshold {spread_max:g} (0.2 x 10)")
    ax.axhline(10 * max(PAPER_GPT2_SPREAD), color="gray", ls=":", lw=1,
               label="paper GPT-2 largest layer (0.174 x 10, n = 10)")
    ax.set_xticks(range(n_layer), [f"layer {i + 1}" for i in range(n_layer)])
    ax.set_ylabel("n x mean over heads and positions of p99 - p1")
    ax.set_title("spread of the renormalised attention of the last input position, in units of 1/n", fontsize=9)
    ax.legend(fontsize=7)
    stage = stages[-1]
    weights = np.asarray(runs[0]["metrics"]["spread"][stage]["mean_prefix_weights"])  # (L, H, n_S)
    L, H, n = weights.shape
    ax_w.imshow(weights.reshape(L * H, n), cmap="viridis", vmin=0, aspect="auto")
    ax_w.set_yticks(range(L * H), [f"L{i // H + 1} h{i % H + 1}" for i in range(L * H)], fontsize=7)
    ax_w.set_xticks(range(n), [str(j) for j in range(n)], fontsize=7)
    ax_w.set_xlabel("prefix position")
    ax_w.set_title(f"mean renormalised attention on each prefix position\n({stage}, seed {runs[0]['seed']}; "
                   f"uniform = {1 / n:.3f})", fontsize=9)
    return _save(fig, path)


def capacity_figure(runs: list[dict], path: Path) -> Path:
    caps = [r["metrics"]["capacity"] for r in runs]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = np.arange(len(runs))
    ax.bar(x - 0.2, [c["real_distinct"] for c in caps], width=0.4, label=f"all {caps[0]['vocab_size']} real tokens")
    ax.bar(x + 0.2, [c["virtual_distinct"] for c in caps], width=0.4,
           label=f"{caps[0]['virtual_tokens']} sampled virtual tokens")
    for i, c in enumerate(caps):
        ax.text(i + 0.2, c["virtual_distinct"], str(c["virtual_distinct"]), ha="center", va="bottom", fontsize=8)
        ax.text(i - 0.2, c["real_distinct"], str(c["real_distinct"]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"seed {r['seed']}" for r in runs])
    ax.set_yscale("log")
    ax.set_ylabel("distinct 10-token completions")
    ax.set_title("one first token, real vs virtual (mixture-pretrained model)", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def draw(runs: list[dict], figures_dir: Path, suffix: str = "") -> list[Path]:
    return [attention_figure(runs[0], figures_dir / f"sec5_skills_attention{suffix}.png"),
            spread_figure(runs, figures_dir / f"appB_prefix_spread{suffix}.png"),
            capacity_figure(runs, figures_dir / f"sec3_capacity_trained{suffix}.png")]


def main(argv: list[str] | None = None) -> int:
    return redraw_main("skills", draw, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
