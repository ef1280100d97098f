"""Check of petrov.discussion.forgetting: the rivals forget, a removed prefix leaves nothing behind.

The authors' reply to the reviews: "While LoRA and full fine-tuning can result in catastrophic
forgetting ..., prefix-tuning and prompting are much less likely to exhibit such effects." For a
prefix the reason is structural: the pretrained weights are frozen, so removing the prefix gives
back the pretrained model exactly. Our formalization (the reply has no experiment), measured on the
models that the descending, skills and translation experiments already train (3 seeds, cpu scale):

    forgetting(rival) = mean over the pretraining tasks T of ( A[pretrained][t] - A[rival][t] )
        descending:  full fine-tuning on descending,       T = {ascending}
        skills:      rank-r LoRA on double_hist,           T = the four mixture tasks
        translation: full fine-tuning and LoRA on B,       T = {A}
    restored(prefix) = every weight of the prefix model without its prefix equals the pretrained
                       weight bit for bit, AND max |logits - pretrained logits| = 0 on the held-out
                       monitor inputs of the pretraining tasks (experiments.restoration)

Pass (thresholds fixed before the runs that carry these measurements, 2026-12-02): on every seed,
forgetting(rival) > FORGETTING_MIN = 0.10 for each of the four rivals, and restored(prefix) for the
prefix of each of the three experiments (descending: the descending prefix; skills: the double_hist
prefix; translation: the B prefix).

Controls (each can come out either way whatever the pass condition says):

1. ``resampled_test_set_not_forgetting``: the forgetting criterion applied to the pretrained model
   itself, evaluated on an independently seeded test set of each pretraining task (descending and
   skills; the translation test is the whole word list, with no sampling), must say "no
   forgetting" (difference <= FORGETTING_MIN) on every seed. It could fail if the margin were
   inside the evaluation's sampling noise, or the accuracy depended on which test inputs were drawn:
   then a rival's "forgetting" could be a resampling artefact.
2. ``one_ulp_change_not_restored``: the restoration criterion applied to the pretrained model with
   its largest-magnitude weight moved by one ulp (the smallest possible change) must say "not
   restored" on every experiment and seed, and the logit comparison alone must already see the
   change (max |logit diff| > 0; the weight comparison sees it by construction). It could fail if
   the criterion were not exact (a tolerance, or a comparison of accuracies or of argmax outputs,
   which a one-ulp change leaves as they are), or if the held-out inputs were too few or too
   uniform for the logits to register a one-ulp change: then "the logits are identical" would
   say less than claimed. The pass condition never reads the nudged model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from verify.checks.petrov_sec5 import provenance, summary
from verify.experiments.schedule import Training
from verify.protocol import Control, Evidence, Finding, Rung, compare
from verify.registry import Trainings, training_check

CLAIM = "petrov.discussion.forgetting"
FORGETTING_MIN = 0.10
SCALE, N_SEEDS = "cpu", 3
EXPERIMENTS = ("descending", "skills", "translation")
# (experiment, label, model row in the record's accuracy) of each rival
RIVALS = (("descending", "full fine-tuning", "finetuned"), ("skills", "LoRA", "lora_double_hist"),
          ("translation", "full fine-tuning", "finetuned"), ("translation", "LoRA", "lora"))
RESAMPLED, NUDGED = "resampled_test_set_not_forgetting", "one_ulp_change_not_restored"


def forgetting(record: dict, model: str, reference: dict[str, float] | None = None) -> float:
    """Mean over the record's pretraining tasks of A[pretrained][t] - A[model][t] (``reference``
    replaces A[model] by other accuracies, e.g. the resampled pretrained ones)."""
    acc, tasks = record["metrics"]["accuracy"], record["metrics"]["forgetting"]["pretraining_tasks"]
    after = reference if reference is not None else acc[model]
    return float(np.mean([acc["pretrained"][t] - after[t] for t in tasks]))


def restored(measured: dict[str, Any]) -> bool:
    """The exact restoration criterion: weights identical bit for bit and logits identical."""
    return bool(measured["weights_identical"]) and measured["max_abs_logit_diff"] == 0.0


def forgetting_verdict(by_experiment: dict[str, list[dict]]) -> Finding:
    """The finding from the records of the three experiments (one list of seeds each)."""
    rivals = {f"{label} ({experiment})": [forgetting(r, model) for r in by_experiment[experiment]]
              for experiment, label, model in RIVALS}
    restoration = {e: [r["metrics"]["forgetting"]["restoration"] for r in by_experiment[e]] for e in EXPERIMENTS}
    prefix_restored = {e: [restored(m["prefix_removed"]) for m in ms] for e, ms in restoration.items()}
    rivals_forget = all(v > FORGETTING_MIN for values in rivals.values() for v in values)
    prefixes_restore = all(all(v) for v in prefix_restored.values())
    weakest = min(rivals, key=lambda k: min(rivals[k]))
    text = (f"{N_SEEDS} seeds x {len(EXPERIMENTS)} experiments: forgetting on the pretraining tasks, least "
            f"{weakest} {compare(min(rivals[weakest]), FORGETTING_MIN, below=False)} ("
            + ", ".join(f"{k} {np.mean(v):.1%}" for k, v in rivals.items())
            + f"); prefix removed: weights and logits identical to the pretrained model on "
              f"{sum(map(sum, prefix_restored.values()))}/{sum(map(len, prefix_restored.values()))} runs")
    details = {
        "provenance": {e: provenance(runs) for e, runs in by_experiment.items()},
        "thresholds": {"forgetting_min": FORGETTING_MIN, "restoration": "bit for bit (weights) and max |logit diff| = 0"},
        "forgetting": {k: summary(v) for k, v in rivals.items()},
        "pretrained_on_pretraining_tasks": {
            e: {t: summary([r["metrics"]["accuracy"]["pretrained"][t] for r in runs])
                for t in runs[0]["metrics"]["forgetting"]["pretraining_tasks"]} for e, runs in by_experiment.items()},
        "prefix_restored": prefix_restored,
        "prefix_removed_max_abs_logit_diff": {e: [m["prefix_removed"]["max_abs_logit_diff"] for m in ms]
                                              for e, ms in restoration.items()},
        "prefix_attached_max_abs_logit_diff": {e: [m["prefix_attached_max_abs_logit_diff"] for m in ms]
                                               for e, ms in restoration.items()},
    }
    resampled = {e: [forgetting(r, "pretrained", r["metrics"]["forgetting"]["resampled_pretrained"])
                     for r in by_experiment[e]] for e in ("descending", "skills")}
    nudged = {e: [m["one_ulp_control"] for m in ms] for e, ms in restoration.items()}
    controls = (
        Control(
            RESAMPLED,
            "the pretrained model itself, its accuracy on an independently seeded test set of each pretraining "
            "task taken as the 'after' (descending, skills)",
            f"the forgetting criterion (> {FORGETTING_MIN} on a seed) must say 'no forgetting' on every seed",
            {"difference": {e: summary(v) for e, v in resampled.items()}, "forgetting_min": FORGETTING_MIN},
            all(v <= FORGETTING_MIN for values in resampled.values() for v in values),
            "a margin inside the evaluation's sampling noise, or accuracies that depend on which test inputs "
            "were drawn, would make the resampled model 'forget' too; the pass condition never reads the "
            "resampled accuracies"),
        Control(
            NUDGED,
            "the pretrained model with its largest-magnitude weight moved by one ulp (torch.nextafter)",
            "the restoration criterion (weights bit for bit and max |logit diff| = 0) must say 'not restored' "
            "on every experiment and seed, and its logit part alone must already see the change (diff > 0)",
            {"judged_restored": {e: [restored(m) for m in ms] for e, ms in nudged.items()},
             "max_abs_logit_diff": {e: [m["max_abs_logit_diff"] for m in ms] for e, ms in nudged.items()},
             "weight": {e: sorted({m["weight"] for m in ms}) for e, ms in nudged.items()}},
            not any(restored(m) for ms in nudged.values() for m in ms)
            and all(m["max_abs_logit_diff"] > 0.0 for ms in nudged.values() for m in ms),
            "a criterion with a tolerance, or one that compared accuracies or argmax outputs, would call the "
            "nudged model restored (a one-ulp change rarely moves an argmax); then 'removing the prefix "
            "restores the model' would claim less than exact restoration; the pass condition never reads it"),
    )
    return Finding(Evidence(rivals_forget and prefixes_restore, text, Rung.TRAINED, details), controls)


training_check(CLAIM, Trainings(tuple(Training(e, SCALE, N_SEEDS) for e in EXPERIMENTS)),
               controls=(RESAMPLED, NUDGED))(forgetting_verdict)
