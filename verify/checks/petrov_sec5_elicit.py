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

Controls (the criterion must be able to fail): (1) the pretrained model without a prefix, judged
as if it were the prefix of every task (diagonal = its accuracy on t, off-diagonal = its accuracy
on the others), must NOT pass — structurally it cannot (one model cannot be > 50% on t and < 5% on
u for all pairs): this control shows that the criterion demands task *selection*, which only
different prefixes can provide; (2) the informative one: a prefix trained on double_hist, a task outside the mixture,
must NOT reach DIAGONAL_MIN on it on every seed. ``control_refuted`` is True when both fail the
criterion.
"""

from __future__ import annotations

from typing import Any

from verify.checks.petrov_sec5 import provenance, summary
from verify.experiments.scales import PAPER_NUMBERS
from verify.experiments.tasks import MIXTURE
from verify.experiments.schedule import Training
from verify.registry import training_check
from verify.result import Outcome

DIAGONAL_MIN = 0.50
OFF_DIAGONAL_MAX = 0.05
N_SEEDS = 3
SCALE = "cpu"
CONTROL_TASK = "double_hist"
CONTROL_ROW = f"control_prefix_{CONTROL_TASK}"
PAPER = PAPER_NUMBERS["elicit"]


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


def elicit_verdict(runs: list[dict]) -> Outcome:
    """The verdict from run records (one per seed) of the 'elicit' experiment."""
    acc = [r["metrics"]["accuracy"] for r in runs]
    per_seed = [elicits(prefix_rows(a), a["pretrained"]) for a in acc]
    holds = all(s["passes"] for s in per_seed)
    # control 1: the pretrained model (no prefix) standing in for every task's prefix
    no_prefix = [elicits({t: a["pretrained"] for t in MIXTURE}, None) for a in acc]
    # control 2: a prefix on a task outside the mixture reaches DIAGONAL_MIN on it?
    control_acc = [a[CONTROL_ROW][CONTROL_TASK] for a in acc]
    control_elicited = all(v > DIAGONAL_MIN for v in control_acc)
    refuted = (not any(s["passes"] for s in no_prefix)) and not control_elicited
    reused = sum(r["reused"] for r in runs)
    min_diag = min(s["min_diagonal"] for s in per_seed)
    max_off = max(s["max_off_diagonal"] for s in per_seed)
    matrix = {f"{m} {u}": summary([a[m][u] for a in acc])
              for m in ("pretrained", *(f"prefix_{t}" for t in MIXTURE)) for u in MIXTURE}
    params = runs[0]["metrics"]["parameters"]
    evidence = {
        "summary": (f"{len(runs)} seeds ({runs[0]['scale']} scale, {reused} from records): each task's prefix "
                    f"min {min_diag:.2%} on its task (> {DIAGONAL_MIN:.0%}), max {max_off:.2%} on the others "
                    f"(< {OFF_DIAGONAL_MAX:.0%}); pretrained without prefix max "
                    f"{max(max(a['pretrained'].values()) for a in acc):.2%}; paper diagonal min 83.72%, "
                    f"off-diagonal max 0.66%"),
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
    }
    control = {
        "criterion_on_pretrained_without_prefix": {"per_seed": no_prefix,
                                                   "passes_on_any_seed": any(s["passes"] for s in no_prefix)},
        f"prefix_on_{CONTROL_TASK}_outside_mixture": {"accuracy": summary(control_acc),
                                                      "diagonal_min": DIAGONAL_MIN,
                                                      "elicited_on_every_seed": control_elicited},
    }
    return Outcome(holds, evidence, control, refuted)


training_check("petrov.sec5.elicits-pretrained-tasks", Training("elicit", SCALE, N_SEEDS))(elicit_verdict)
