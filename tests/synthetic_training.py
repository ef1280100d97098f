"""What synthetic run records need from training: per-stage convergence and learning curves, as
verify/experiments/experiments.Runner.learning() records them."""

from __future__ import annotations

RULE = {"every": 100, "patience": 1000, "min_rel_improvement": 0.01}


def learning(stages: dict[str, int], not_converged: tuple[str, ...] = (), caps: dict[str, int] | None = None) -> dict:
    """{"curves", "convergence"} for stages name -> steps trained; a stage in ``not_converged`` ran to its
    cap (steps = cap); ``caps`` overrides a stage's cap (default: its steps, or 4000 if it converged)."""
    caps = caps or {}
    convergence, curves = {}, {}
    for name, steps in stages.items():
        cap = caps.get(name, steps if name in not_converged else max(steps, 4000))
        done = cap if name in not_converged else steps
        convergence[name] = {"converged": name not in not_converged, "steps": done, "cap": cap, "rule": RULE}
        curves[name] = {"step": [0, done], "train_loss": [None, 0.5], "heldout_loss": [1.0, 0.5], "exact": [0.0, 0.5]}
    return {"curves": curves, "convergence": convergence}
