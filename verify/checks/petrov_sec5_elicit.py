"""Check petrov.sec5.elicits-pretrained-tasks (notebook 02, paper notes 4.2).

Claim: a 1-layer model pretrained on the 4-task mixture without a task indicator (ascending,
descending, add1, add2) has every skill but cannot know which one is asked; one prefix per task
selects it: the prefix trained on task t reaches high accuracy on t and about 0% on the other three.
Paper (one seed): diagonal 94.09 / 83.72 / 99.62 / 99.78%, off-diagonal <= 0.66%, the pretrained
model without a prefix 31.44 / 19.16 / 29.97 / 15.62%.

With A[m][u] the exact match of model m on task u (run records of 3 seeds at cpu scale,
verify/experiments/elicit.py; trained when no current record exists), the criterion
"the prefixes elicit the tasks" is, on EVERY seed,
    A[prefix_t][t] > DIAGONAL_MIN                 for each t     (paper min 83.72%)
    A[prefix_t][u] < OFF_DIAGONAL_MAX             for each u != t (paper max 0.66%)
    A[pretrained][t] < A[prefix_t][t]              for each t     (paper 31 / 19 / 30 / 16%)
The thresholds were fixed from the paper's numbers before any run (notes/experiments.md):
50% leaves room for the cpu scale's fewer steps and smaller width; 5 points leave room for chance
hits on a 3,200-example test set.

Controls (each can come out either way whatever the pass condition says):
1. ``criterion_on_untrained_prefixes``: the same criterion applied to the four prefixes at their
   initialisation (the N(0, 1) vectors each task's prefix starts from, before any step) must fail
   on every seed. It could pass if the selection came from the prefixes' random starts rather than
   from training (a random prefix vector entering attention without a LayerNorm can steer the
   mixture model towards one of its skills), or if the criterion were lax enough for a model that
   merely guesses among four answers. The pass condition never reads the untrained prefixes.
2. ``criterion_on_prefix_outside_mixture``: a prefix trained with the same budget on double_hist,
   a task outside the mixture that needs a new attention pattern, must NOT reach DIAGONAL_MIN on
   it on every seed (the diagonal part of the criterion says "not elicited"). It could pass if the
   prefix budget were strong enough to teach any task (then "elicits" would not be about
   pretrained skills), or if double_hist had leaked into pretraining. The pass condition never
   reads this prefix.
(The former control 1, the pretrained model standing in for every task's prefix, cannot pass by
construction: one model cannot be > 50% on t and < 5% on u for every pair. It was replaced.)
"""

from __future__ import annotations

from typing import Any

from verify.checks import convergence
from verify.checks.petrov_sec5 import provenance, summary
from verify.experiments.elicit import init_row
from verify.experiments.scales import PAPER_NUMBERS
from verify.experiments.schedule import Training
from verify.experiments.tasks import MIXTURE
from verify.protocol import Control, Evidence, Finding, Rung, compare
from verify.registry import training_check

DIAGONAL_MIN = 0.50
OFF_DIAGONAL_MAX = 0.05
N_SEEDS = 3
SCALE = "cpu"
CONTROL_TASK = "double_hist"
CONTROL_ROW = f"control_prefix_{CONTROL_TASK}"
PAPER = PAPER_NUMBERS["elicit"]
CLAIM = "petrov.sec5.elicits-pretrained-tasks"
UNTRAINED, OUTSIDE = "criterion_on_untrained_prefixes", "criterion_on_prefix_outside_mixture"


def elicits(rows: dict[str, dict[str, float]], baseline: dict[str, float] | None) -> dict[str, Any]:
    """The criterion on ONE seed's matrix. ``rows[t][u]`` = accuracy on task u of the model meant
    for task t (t, u in MIXTURE); ``baseline[t]`` = the pretrained model's accuracy on t (None: no
    baseline condition). Returns the verdict and the numbers it rests on."""
    diagonal = {t: rows[t][t] for t in MIXTURE}
    off = {f"{t}->{u}": rows[t][u] for t in MIXTURE for u in MIXTURE if u != t}
    above_baseline = True if baseline is None else all(baseline[t] < diagonal[t] for t in MIXTURE)
    passes = (all(v > DIAGONAL_MIN for v in diagonal.values())
              and all(v < OFF_DIAGONAL_MAX for v in off.values()) and above_baseline)
    return {"passes": passes, "min_diagonal": min(diagonal.values()), "max_off_diagonal": max(off.values()),
            "above_pretrained": above_baseline}


def prefix_rows(accuracy: dict) -> dict[str, dict[str, float]]:
    return {t: accuracy[f"prefix_{t}"] for t in MIXTURE}


def elicit_verdict(runs: list[dict]) -> Finding:
    """The finding from run records (one per seed) of the 'elicit' experiment."""
    acc = [r["metrics"]["accuracy"] for r in runs]
    per_seed = [elicits(prefix_rows(a), a["pretrained"]) for a in acc]
    holds = all(s["passes"] for s in per_seed)
    untrained = [elicits({t: a[init_row(t)] for t in MIXTURE}, a["pretrained"]) for a in acc]
    control_acc = [a[CONTROL_ROW][CONTROL_TASK] for a in acc]
    reused = sum(r["reused"] for r in runs)
    min_diag = min(s["min_diagonal"] for s in per_seed)
    max_off = max(s["max_off_diagonal"] for s in per_seed)
    matrix = {f"{m} {u}": summary([a[m][u] for a in acc])
              for m in ("pretrained", *(f"prefix_{t}" for t in MIXTURE)) for u in MIXTURE}
    params = runs[0]["metrics"]["parameters"]
    adapters = {**{f"{t} prefix": f"prefix_{t}" for t in MIXTURE}, f"{CONTROL_TASK} prefix": CONTROL_ROW}
    text = (f"{len(runs)} seeds ({runs[0]['scale']} scale, {reused} from records): each task's prefix "
            f"min {compare(min_diag, DIAGONAL_MIN, below=False)} on its task, max "
            f"{compare(max_off, OFF_DIAGONAL_MAX)} on the others, pretrained below the prefix on every task: "
            f"{all(s['above_pretrained'] for s in per_seed)}; paper diagonal min 0.8372, off-diagonal max 0.0066; "
            f"{convergence.describe(runs, adapters)}")
    details = {
        **provenance(runs),
        "thresholds": {"diagonal_min": DIAGONAL_MIN, "off_diagonal_max": OFF_DIAGONAL_MAX,
                       "pretrained_below_prefix": True},
        "per_seed": [{"seed": r["seed"], **s} for r, s in zip(runs, per_seed, strict=True)],
        "matrix": matrix,
        "paper": PAPER,
        "trainable_parameters": {"prefix": params["prefix"], "model": params["model"]},
        "prefix_final_loss": {t: [r["metrics"]["training"][f"prefix_{t}"]["final_loss"] for r in runs]
                              for t in MIXTURE},
        "pretrain_final_loss": [r["metrics"]["training"]["pretrain"]["final_loss"] for r in runs],
        "convergence": convergence.details(runs, adapters),
    }
    controls = (
        Control(
            UNTRAINED,
            "the four prefixes at their initialisation (N(0, 1), 0 training steps), one per task",
            "the elicitation criterion (diagonal > 50%, off-diagonal < 5%, above the pretrained model) must "
            "fail on every seed",
            {"per_seed": [{"seed": r["seed"], **s} for r, s in zip(runs, untrained, strict=True)],
             "matrix": {f"{init_row(t)} {u}": summary([a[init_row(t)][u] for a in acc])
                        for t in MIXTURE for u in MIXTURE}},
            not any(s["passes"] for s in untrained),
            "random prefix vectors that already steered the mixture model to distinct skills, or a criterion "
            "lax enough for a model that guesses among four answers, would pass it; the pass condition never "
            "reads the untrained prefixes"),
        Control(
            OUTSIDE,
            f"a prefix trained with the same budget on {CONTROL_TASK}, a task outside the pretraining mixture",
            f"its accuracy on {CONTROL_TASK} must not exceed {DIAGONAL_MIN} on every seed ('not elicited')",
            {"accuracy": summary(control_acc), "diagonal_min": DIAGONAL_MIN,
             "final_loss": [r["metrics"]["training"][CONTROL_ROW]["final_loss"] for r in runs]},
            not all(v > DIAGONAL_MIN for v in control_acc),
            "a prefix budget strong enough to teach any task (then eliciting would not be about pretrained "
            "skills), or double_hist leaking into pretraining, would make this prefix pass; the pass "
            "condition never reads it"),
    )
    return Finding(Evidence(holds, text, Rung.TRAINED, details), controls)


training_check(CLAIM, Training("elicit", SCALE, N_SEEDS), controls=(UNTRAINED, OUTSIDE))(elicit_verdict)
