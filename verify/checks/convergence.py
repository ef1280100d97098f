"""What the training checks read about their adapters' budgets: converged, or stopped by the cap.

Every adapter stage of a training experiment (prefix, LoRA, full fine-tuning, the controls'
prefixes) runs under the one convergence rule of verify/experiments/train.py, recorded per stage as
    metrics.convergence[stage] = {"converged", "steps", "cap", "rule"}
(converged: the rule stopped the stage, its held-out loss had plateaued; otherwise it reached its
cap while still improving). Two conditions enter the "cannot learn" verdicts (issue 12):
    plateaued(prefix)           the prefix converged on EVERY seed: it was trained until it stopped
                                improving, so its low accuracy is not a budget that ran out;
    cap(prefix) >= cap(rival)   the prefix's step budget is at least its rival's (LoRA, full FT).
Every training verdict prints, for each of its adapters, whether it converged or hit its cap.
"""

from __future__ import annotations

from typing import Any


def stage_convergence(runs: list[dict], stage: str) -> dict[str, Any]:
    """Per seed: converged or not, steps trained, the cap; and whether it converged on every seed."""
    per_seed = [r["metrics"]["convergence"][stage] for r in runs]
    return {"converged": [bool(p["converged"]) for p in per_seed], "steps": [p["steps"] for p in per_seed],
            "cap": [p["cap"] for p in per_seed], "rule": per_seed[0]["rule"],
            "all_converged": all(p["converged"] for p in per_seed)}


def plateaued(runs: list[dict], stage: str) -> bool:
    """The stage converged (its held-out loss plateaued before the cap) on every seed."""
    return stage_convergence(runs, stage)["all_converged"]


def cap_at_least(runs: list[dict], stage: str, rival: str) -> bool:
    """The stage's cap is at least the rival's on every seed (a fair budget)."""
    return all(r["metrics"]["convergence"][stage]["cap"] >= r["metrics"]["convergence"][rival]["cap"] for r in runs)


def describe(runs: list[dict], stages: dict[str, str]) -> str:
    """One clause per adapter, e.g. 'prefix converged 3/3 (steps 2400/3100/2600, cap 8000)' or
    'LoRA hit its cap 2/3 (steps 4000/4000/3100, cap 4000)'; ``stages``: label -> stage."""
    parts = []
    for label, stage in stages.items():
        c = stage_convergence(runs, stage)
        n, k = len(c["converged"]), sum(c["converged"])
        state = f"converged {k}/{n}" if k == n else f"hit its cap {n - k}/{n}"
        caps = sorted(set(c["cap"]))
        parts.append(f"{label} {state} (steps {'/'.join(map(str, c['steps']))}, cap {'/'.join(map(str, caps))})")
    return "; ".join(parts)


def details(runs: list[dict], stages: dict[str, str]) -> dict[str, Any]:
    """The per-stage convergence figures for a check's details, keyed by label."""
    return {label: {"stage": stage, **stage_convergence(runs, stage)} for label, stage in stages.items()}
