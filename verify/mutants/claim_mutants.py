"""Mutants of the theorems (theorems/) and of the checks' inputs: derived constants, closed forms,
and the run records a training check reads (perturbed in memory, one seeded seed, never on disk)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import sympy as sp

from verify.mutants.core import Mutant, edit, mutant, value, wrap

SEC3 = "theorems.petrov_sec3"
ROT = "theorems.rotation"
SCHEDULE = "verify.experiments.schedule"

THM1 = "petrov.thm1.unconditional"
THM2 = "petrov.thm2.conditional"
LONG = "petrov.thm2.long-response"
ROTATION = "petrov.sec4.rotation-not-a-bias"
DESCENDING = "petrov.sec5.descending-not-learnable"
ELICIT = "petrov.sec5.elicits-pretrained-tasks"
DOUBLE_HIST = "petrov.sec5.double-histogram-not-learnable"
LORA = "petrov.sec6.lora-learns-double-histogram"
TRANSLATION = "petrov.appC.translation-needs-lora"
FORGETTING = "petrov.discussion.forgetting"
MIXTURE_TASKS = ("ascending", "descending", "add1", "add2")  # skills' pretraining tasks (tasks.MIXTURE)


# --- derived constants ------------------------------------------------------------------------

def threshold_changed(construction: str, **fields: Callable[[sp.Expr], sp.Expr]) -> Callable:
    """THRESHOLDS with one construction's error model changed field by field."""

    def factory(original: dict, rng: np.random.Generator) -> dict:
        entry = original[construction]
        changed = dataclasses.replace(entry, **{k: f(getattr(entry, k)) for k, f in fields.items()})
        return {**original, construction: changed}

    return factory


def scaled(factor: float) -> Callable[[Any, np.random.Generator], Any]:
    """original(...) * factor."""

    def factory(original: Any, rng: np.random.Generator) -> Any:
        def scaled_call(*args: Any, **kwargs: Any) -> Any:
            return original(*args, **kwargs) * factor

        return scaled_call

    return factory


# --- run records, perturbed in memory ---------------------------------------------------------

def record_edit(experiment: str, path: tuple[str, ...], new: Callable[[float, dict], Any]) -> Callable:
    """``records_for`` that hands the checks of ``experiment`` its records with one seeded seed's
    metrics[path] replaced by new(old, metrics). The files on disk are untouched."""

    def factory(original: Any, rng: np.random.Generator) -> Any:
        draw = float(rng.random())

        def records_for(prepared, training, first_seed, retrain):
            out = original(prepared, training, first_seed, retrain)
            if training.experiment != experiment:
                return out
            out = copy.deepcopy(out)
            metrics = out[int(draw * len(out))]["metrics"]
            node = metrics
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = new(node[path[-1]], metrics)
            return out

        return records_for

    return factory


def _set(x: float) -> Callable[[float, dict], float]:
    return lambda old, metrics: x


def _descending_recovery_stalls(old: float, metrics: dict) -> float:
    return metrics["accuracy"]["prefix"]["ascending"]


def _lora_one_more_parameter(old: int, metrics: dict) -> int:
    return metrics["parameters"]["prefix"] + 1


def _lora_keeps_the_mixture(old: dict, metrics: dict) -> dict:
    """LoRA's accuracies with every pretraining task back at the pretrained model's: no forgetting."""
    return {**old, **{task: metrics["accuracy"]["pretrained"][task] for task in MIXTURE_TASKS}}


def _not_converged(old: dict, metrics: dict) -> dict:
    return {**old, "converged": False, "steps": old["cap"]}


MUTANTS: tuple[Mutant, ...] = (
    # --- theorems: the T* error model and formula ------------------------------------------------
    mutant("theorem.sec3.conditional-m-off-by-one", "off-by-one", f"{SEC3}:THRESHOLDS",
           "the conditional T* model counts m = 2 other keys instead of 1", THM2,
           value(threshold_changed("conditional", others=lambda m: m + 1))),
    mutant("theorem.sec3.unconditional-m-off-by-one", "off-by-one", f"{SEC3}:THRESHOLDS",
           "the unconditional T* model counts m = N other keys instead of N - 1", THM1,
           value(threshold_changed("unconditional", others=lambda m: m + 1))),
    mutant("theorem.sec3.long-response-spread", "wrong constant", f"{SEC3}:THRESHOLDS",
           "the long-response error factor is (V-1)/V instead of (2V-1)/V", LONG,
           value(threshold_changed("long-response", spread=lambda c: (c * sp.Symbol("V", positive=True) - 1)
                                   / sp.Symbol("V", positive=True) / 2))),
    mutant("theorem.sec3.critical-sign", "sign flip", f"{SEC3}:Threshold.critical",
           "T* = ln(m (2Vc + 1)) instead of ln(m (2Vc - 1))", THM2,
           edit("(2 * V * self.spread - 1)", "(2 * V * self.spread + 1)")),
    mutant("theorem.rotation.minimax-scaled", "wrong constant", f"{ROT}:minimax_error",
           "the closed-form minimax error of a rotation is 5% too large", ROTATION, wrap(scaled(1.05))),
    # --- run records ------------------------------------------------------------------------------
    mutant("records.descending.prefix-learns", "perturbed record", f"{SCHEDULE}:records_for",
           "one seed's prefix reaches 90% on descending", DESCENDING,
           wrap(record_edit("descending", ("accuracy", "prefix", "descending"), _set(0.9)))),
    mutant("records.descending.finetune-fails", "perturbed record", f"{SCHEDULE}:records_for",
           "one seed's full fine-tuning reaches only 20% on descending", DESCENDING,
           wrap(record_edit("descending", ("accuracy", "finetuned", "descending"), _set(0.2)))),
    mutant("records.descending.recovery-stalls", "perturbed record", f"{SCHEDULE}:records_for",
           "one seed's recovered prefix is no better on ascending than where it started", DESCENDING,
           wrap(record_edit("descending", ("accuracy", "recover_prefix", "ascending"), _descending_recovery_stalls))),
    mutant("records.descending.pretrained-sorts-descending", "perturbed record", f"{SCHEDULE}:records_for",
           "one seed's pretrained model already scores 80% on descending", DESCENDING,
           wrap(record_edit("descending", ("accuracy", "pretrained", "descending"), _set(0.8)))),
    mutant("records.elicit.prefix-misses-its-task", "perturbed record", f"{SCHEDULE}:records_for",
           "one seed's ascending prefix reaches only 30% on ascending", ELICIT,
           wrap(record_edit("elicit", ("accuracy", "prefix_ascending", "ascending"), _set(0.3)))),
    mutant("records.elicit.prefix-elicits-another-task", "perturbed record", f"{SCHEDULE}:records_for",
           "one seed's add1 prefix also scores 50% on add2", ELICIT,
           wrap(record_edit("elicit", ("accuracy", "prefix_add1", "add2"), _set(0.5)))),
    mutant("records.skills.prefix-learns-double-hist", "perturbed record", f"{SCHEDULE}:records_for",
           "one seed's prefix reaches 90% on double histogram", DOUBLE_HIST,
           wrap(record_edit("skills", ("accuracy", "prefix_double_hist", "double_hist"), _set(0.9)))),
    mutant("records.skills.lora-fails", "perturbed record", f"{SCHEDULE}:records_for",
           "one seed's rank-r LoRA reaches only 10% on double histogram", LORA,
           wrap(record_edit("skills", ("accuracy", "lora_double_hist", "double_hist"), _set(0.1)))),
    mutant("records.translation.prefix-learns", "perturbed record", f"{SCHEDULE}:records_for",
           "one seed's prefix translates 60% of language B", TRANSLATION,
           wrap(record_edit("translation", ("accuracy", "prefix", "B"), _set(0.6)))),
    mutant("records.translation.lora-has-more-parameters", "perturbed record", f"{SCHEDULE}:records_for",
           "one seed's LoRA has one trainable parameter more than the prefix", TRANSLATION,
           wrap(record_edit("translation", ("parameters", "lora"), _lora_one_more_parameter))),
    mutant("records.descending.prefix-still-improving", "perturbed record", f"{SCHEDULE}:records_for",
           "one seed's descending prefix ran to its cap without plateauing (a 'cannot learn' without a plateau)",
           DESCENDING, wrap(record_edit("descending", ("convergence", "prefix"), _not_converged))),
    mutant("records.skills.lora-keeps-pretraining-tasks", "perturbed record", f"{SCHEDULE}:records_for",
           "one seed's LoRA keeps the pretrained accuracy on every mixture task (no forgetting)", FORGETTING,
           wrap(record_edit("skills", ("accuracy", "lora_double_hist"), _lora_keeps_the_mixture))),
    mutant("records.descending.prefix-removal-leaves-a-trace", "perturbed record", f"{SCHEDULE}:records_for",
           "one seed's prefix-removed model differs from the pretrained one by 1e-7 in a logit",
           FORGETTING, wrap(record_edit("descending", ("forgetting", "restoration", "prefix_removed",
                                                       "max_abs_logit_diff"), _set(1e-7)))),
)
