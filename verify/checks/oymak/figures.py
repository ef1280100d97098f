"""Figures of the Oymak claims (notes/figures/oymak_*.png), drawn from a ``verify --json`` report:

    python -m verify all --json report.json && python -m verify figures report.json [--out DIR]
"""

from __future__ import annotations

from typing import Any

import numpy as np

C1_BARS = ("PA", "SA", "SAq", "LPA", "LPA relaxation", "UNIF optimum")


def plot_figures(report: dict[str, Any], outdir: str = "notes/figures") -> list[str]:
    """Draw the key curves of the oymak claims that passed or failed in ``report`` (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    claims = {c["id"]: c for c in report["claims"] if c["status"] in ("pass", "fail")}
    drawers = {"oymak.c1.prompt-attention-more-expressive": ("oymak_c1_grid.png", _plot_c1),
               "oymak.c2.gd-learns-prompt-and-head": ("oymak_c2_gd.png", _plot_c2),
               "oymak.c3.finite-sample-exact": ("oymak_c3_curve.png", _plot_c3),
               "oymak.c4.real-data-attends-relevant": ("oymak_c4_digits.png", _plot_c4)}
    written = []
    for claim_id, (name, draw) in drawers.items():
        if claim_id in claims:
            path = f"{outdir}/{name}"
            fig = draw(claims[claim_id]["evidence"], plt)
            fig.tight_layout()
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
    return written


def _plot_c1(ev: dict[str, Any], plt: Any) -> Any:
    """Best-found error per model and grid point (3 SE bars), the uniform optimum (the floor), and
    whether PA's advantage counts (beyond the separation margin)."""
    grid = ev["grid"]
    fig, ax = plt.subplots(figsize=(11, 4.2))
    width = 0.13
    for j, name in enumerate(C1_BARS):
        errs = [p["errors"][name]["error"] for p in grid]
        ses = [3 * p["errors"][name]["se"] for p in grid]
        ax.bar(np.arange(len(grid)) + (j - 2.5) * width, errs, width, yerr=ses, label=name)
    labels = [f"k={p['knobs']['k']} Q={p['knobs']['Q']:g}\nc={p['knobs']['c']:.2g} rho={p['knobs']['rho']:g}"
              + ("\nPA wins" if p["PA_advantage"] else "\nno PA win") for p in grid]
    ax.set_xticks(np.arange(len(grid)), labels, fontsize=7)
    ax.set_ylabel("best-found test error (3 SE bars)")
    margin = ev["constants"]["separation_margin"]
    ax.set_title(f"c1: best error per model (T=12, d=6, M=sigma=1); a win needs a gap > {margin:g} + 3 paired SE; "
                 "UNIF optimum = the floor of PA, SA, SAq", fontsize=9)
    ax.legend(fontsize=7, ncol=3)
    return fig


def _plot_c2(ev: dict[str, Any], plt: Any) -> Any:
    """(a) Monte Carlo first steps vs closed form (95% CIs); (b) n E sin^2 vs n per d with the
    derived K(d) and the oracle's exact n R*(2n); (c) attention mass on R at the largest n vs d."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    labels, xs = [], 0
    for j, row in enumerate(ev["monte_carlo_first_steps"]["rows"]):
        for key, coord, name in (("v1", 1, "v1.mu_hat"), ("p2", 0, "p2.q_hat"), ("probe", 0, "E[yC]w.q_hat"),
                                 ("probe", 1, "E[yC]w.mu_hat")):
            r = row[key]
            ax.errorbar([xs], [r["mean"][coord]], yerr=[r["ci95_half"][coord]], fmt="o", color=f"C{j}")
            ax.plot([xs - 0.3, xs + 0.3], [r["predicted"][coord]] * 2, "k-")
            labels.append(f"{name}\n{'c=rho=0' if j == 0 else 'c,rho>0'}")
            xs += 1
    ax.set_xticks(range(xs), labels, fontsize=6, rotation=60)
    ax.set_title("(a) autograd GD steps (95% CI) vs closed form (bars)", fontsize=9)
    sw = ev["sweep"]
    for j, d in enumerate(sw["dims"]):
        cells = [c for c in sw["cells"] if c["d"] == d]
        ns = np.array([c["n"] for c in cells], float)
        m = np.array([c["gd_sin2"] for c in cells])
        axes[1].errorbar(ns, ns * m[:, 0], yerr=1.96 * ns * m[:, 1], fmt="o", color=f"C{j}", label=f"GD d={d}")
        axes[1].axhline(sw["K_pred"][j], color=f"C{j}", lw=1)
        axes[1].plot(ns, ns * np.array([c["oracle_sin2_exact"] for c in cells]), "--", color=f"C{j}", lw=1)
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("n (sequences per GD step)")
    axes[1].set_ylabel("n E sin^2 angle(p2, q)")
    opt = ev["near_optimality"]
    axes[1].set_title(f"(b) GD (dots), derived K(d) (solid), oracle n R*(2n) (dashed)\nkappa = {opt['kappa']:.2f}"
                      f" +- {opt['se']:.2f} (bound 2T/k = {opt['bound']:g})", fontsize=9)
    axes[1].legend(fontsize=7)
    mass = sw["mass"]
    dims = [m["d"] for m in mass]
    axes[2].errorbar(dims, [m["gd_mass"][0] for m in mass], yerr=[1.96 * m["gd_mass"][1] for m in mass], fmt="o-",
                     label="GD prompt")
    axes[2].plot(dims, [m["oracle_mass"][0] for m in mass], "--", label="oracle direction")
    axes[2].plot(dims, [m["perfect_direction_mass"] for m in mass], ":", label="exact q direction")
    axes[2].axhline(mass[0]["chance"], color="k", ls=":", lw=0.8, label="chance k/T")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("d")
    axes[2].set_ylabel("attention mass on relevant tokens")
    axes[2].set_title(f"(c) |p| = 1.5, n = {mass[0]['n']}", fontsize=9)
    axes[2].legend(fontsize=7)
    return fig


def _plot_c3(ev: dict[str, Any], plt: Any) -> Any:
    """Learned-head error vs n/d: simulation, exact-law prediction and the n/d-only limit."""
    curve = ev["learned_head_curve"]
    ratios = [r["n/d"] for r in curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, colour in (("prompt", "C0"), ("uniform", "C1")):
        sim = np.array([r[label]["simulated"] for r in curve])
        ax.errorbar(ratios, sim[:, 0], yerr=3 * sim[:, 1], fmt="o", color=colour, label=f"{label}: simulated")
        ax.plot(ratios, [r[label]["predicted"][0] for r in curve], "-", color=colour, label=f"{label}: exact-law prediction")
        ax.plot(ratios, [r[label]["deterministic"] for r in curve], ":", color=colour, label=f"{label}: n/d-only limit")
    ax.set_xscale("log")
    ax.set_xlabel("n / d")
    ax.set_ylabel("test error of the learned head")
    ax.set_title("c3: known prompt, learned head; benefit of context")
    ax.legend(fontsize=7)
    return fig


def _plot_c4(ev: dict[str, Any], plt: Any) -> Any:
    """Test accuracy (3 SE bars) and attention mass on the relevant digits per model."""
    res = ev["results"]
    names = list(res)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(names, [res[m]["accuracy"] for m in names], yerr=[3 * res[m]["accuracy_se"] for m in names])
    axes[0].set_ylim(0.85, 1.0)
    axes[0].set_ylabel("test accuracy")
    axes[1].bar(names, [res[m]["relevant_mass"][0] for m in names])
    axes[1].axhline(ev["protocol"]["k"] / ev["protocol"]["T"], color="k", ls="--", label="k/T")
    axes[1].set_ylabel("attention mass on relevant tokens")
    axes[1].legend()
    fig.suptitle("c4: digit sequences (relevant digits 3 vs 8 among distractors)")
    return fig
