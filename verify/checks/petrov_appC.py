"""Check petrov.appC.translation-needs-lora (Appendix C; authors' reply; paper notes 4.8).

Claim: a model pretrained on translating words into one language (English -> German) cannot learn,
through a prefix, to translate the same words into another language (English -> Spanish); LoRA with
the same number of trainable parameters can ("LoRA ... achieves 94% accuracy"; the prefix's number
is not stated: "fails to learn").

Our substitute (verify/experiments/lexicon.py): a seeded generated lexicon, source words with a
translation into A (pretraining) and an independent one into B (the new task), each 30% cognates
(a letter-level sound change plus a suffix) and 70% arbitrary words. With acc[m][L] the exact match
of model m's greedy translation over the whole word list in language L (run records of 3 seeds at
cpu scale, verify/experiments/translation.py; trained when no current record exists), the claim
holds when, on EVERY seed,
    acc[lora][B]       > LORA_MIN        (paper 94%)
    acc[prefix][B]     < PREFIX_MAX      (paper: "fails to learn")
    acc[pretrained][A] > PRETRAINED_MIN  (paper: "almost perfect")
    params[lora] <= params[prefix]       (equal at cpu scale: rank 2 vs 32 positions, 4,096 each)
    the prefix converged (held-out loss plateaued before its cap) and cap(prefix) >= cap(LoRA)
                                         (issue 12: "cannot learn" needs a plateaued prefix at a
                                         budget no smaller than the rival's; verify/checks/convergence.py)
The thresholds were fixed from the paper's statements on 2026-11-23, before the first run of any
configuration and not changed afterwards (notes/translation.md): 50% leaves room for the cpu
scale's far fewer steps and smaller model below the paper's 94%; 10% allows a prefix a few words
by chance or by the cognate rule without calling that "learning the language"; 80% is "almost
perfect" with room for the cpu scale.

Controls (each can come out either way whatever the pass condition says):
1. ``prefix_budget_recovers_pretrained_task`` (positive control at the same prefix budget; replaces
   "a prefix trained on A from a random start", which the pretrained model alone satisfied). The
   trained B prefix, whose accuracy on A, s = acc[prefix][A], is measured, is trained further on A
   with the B prefix's steps and learning rate, to e = acc[recover_prefix][A]; on every seed
       s < LORA_MIN,   e > LORA_MIN,   e - s > LORA_MIN - PREFIX_MAX.
   It could fail if the prefix optimiser at this budget could not move accuracy across the gap
   between "fails" (< 10%) and "learned" (> 50%) even on a skill the model has; then the prefix's
   failure on B would say nothing about B. The pass condition never reads the recovered prefix.
2. ``not_learnable_on_full_finetuning_B``: the "not learnable" test (< PREFIX_MAX on every seed)
   applied to the fully fine-tuned model on B must NOT hold. It could hold if B could not be
   learned from this data by any method at this scale (a lexicon without structure to learn in
   the steps given); the pass condition never reads full fine-tuning.
3. ``criterion_on_lora_at_initialisation``: the "LoRA learns B" part (> LORA_MIN) applied to LoRA
   at initialisation (B = 0: exactly the pretrained function, so its accuracy is acc[pretrained][B])
   must say "not learned". It could fail if the pretrained model already translated into B (e.g.
   if B's cognate rule coincided with A's); the pass condition never reads acc[pretrained][B].
"""

from __future__ import annotations

from typing import Any

from verify.checks import convergence
from verify.checks.petrov_sec5 import provenance, recovery, recovery_control, summary
from verify.experiments.schedule import Training
from verify.protocol import Control, Evidence, Finding, Rung, compare
from verify.registry import training_check

LORA_MIN = 0.50
PREFIX_MAX = 0.10
PRETRAINED_MIN = 0.80
N_SEEDS = 3
SCALE = "cpu"
PAPER_LORA = 0.94
RECOVERS = "prefix_budget_recovers_pretrained_task"
FT_B, LORA_INIT = "not_learnable_on_full_finetuning_B", "criterion_on_lora_at_initialisation"


def not_learnable(values: list[float]) -> bool:
    """'It cannot be learned': below PREFIX_MAX on every seed."""
    return all(v < PREFIX_MAX for v in values)


def per_seed(record: dict) -> dict[str, Any]:
    """The criterion on one seed's metrics."""
    acc, params = record["metrics"]["accuracy"], record["metrics"]["parameters"]
    lora, prefix, pre = acc["lora"]["B"], acc["prefix"]["B"], acc["pretrained"]["A"]
    parity = params["lora"] <= params["prefix"]
    return {"seed": record["seed"], "lora_B": lora, "prefix_B": prefix, "pretrained_A": pre,
            "parity": parity,
            "passes": lora > LORA_MIN and prefix < PREFIX_MAX and pre > PRETRAINED_MIN and parity}


def translation_verdict(runs: list[dict]) -> Finding:
    """The finding from run records (one per seed) of the 'translation' experiment."""
    seeds = [per_seed(r) for r in runs]
    adapters = {"prefix": "prefix", "LoRA": "lora", "full fine-tuning": "finetune", "recovery prefix": "recover_prefix"}
    budget_ok = convergence.plateaued(runs, "prefix") and convergence.cap_at_least(runs, "prefix", "lora")
    holds = all(s["passes"] for s in seeds) and budget_ok
    acc = [r["metrics"]["accuracy"] for r in runs]
    finetuned = [a["finetuned"]["B"] for a in acc]
    pretrained_b = [a["pretrained"]["B"] for a in acc]
    lora, prefix = summary([s["lora_B"] for s in seeds]), summary([s["prefix_B"] for s in seeds])
    pre_a = summary([s["pretrained_A"] for s in seeds])
    params = runs[0]["metrics"]["parameters"]
    reused = sum(r["reused"] for r in runs)
    kinds = {f"{m} {k}": summary([r["metrics"]["by_kind"][m][k] for r in runs])
             for m in ("prefix", "lora", "finetuned") for k in ("B cognate", "B arbitrary")}
    text = (f"{len(runs)} seeds ({runs[0]['scale']} scale, {reused} from records): LoRA on B "
            f"{lora['mean']:.2%} ± {lora['std']:.2%} (min {compare(lora['min'], LORA_MIN, below=False)}; paper "
            f"{PAPER_LORA:.0%}), prefix on B {prefix['mean']:.2%} ± {prefix['std']:.2%} (max "
            f"{compare(prefix['max'], PREFIX_MAX)}), pretrained on A min {compare(pre_a['min'], PRETRAINED_MIN, below=False)}; "
            f"{params['lora']} LoRA vs {params['prefix']} prefix parameters "
            f"({'<=' if all(s['parity'] for s in seeds) else '>'}); {convergence.describe(runs, adapters)}; "
            f"prefix cap >= LoRA's: {convergence.cap_at_least(runs, 'prefix', 'lora')}")
    details = {
        **provenance(runs),
        "thresholds": {"lora_min": LORA_MIN, "prefix_max": PREFIX_MAX, "pretrained_min": PRETRAINED_MIN,
                       "lora_parameters_at_most_prefix": True},
        "per_seed": seeds,
        "accuracy": {"lora B": lora, "prefix B": prefix, "pretrained A": pre_a,
                     "pretrained B": summary(pretrained_b), "finetuned B": summary(finetuned),
                     "lora A": summary([a["lora"]["A"] for a in acc]),
                     "prefix A": summary([a["prefix"]["A"] for a in acc])},
        "by_kind": kinds,
        "paper": {"lora B": PAPER_LORA, "prefix B": "fails to learn (no number)"},
        "trainable_parameters": {k: params[k] for k in ("prefix", "lora", "full_finetune")},
        "final_loss": {s: [r["metrics"]["training"][s]["final_loss"] for r in runs]
                       for s in ("pretrain", "prefix", "lora", "finetune", "recover_prefix")},
        "convergence": convergence.details(runs, adapters),
        "prefix_plateaued_and_cap_fair": budget_ok,
    }
    budget = runs[0].get("config", {}).get("stages", {}).get("prefix", {})
    recovered = recovery([a["prefix"]["A"] for a in acc], [a["recover_prefix"]["A"] for a in acc],
                         PREFIX_MAX, LORA_MIN)
    controls = (
        recovery_control(
            RECOVERS,
            "the trained B prefix (its accuracy on A measured) trained further on A, the pretrained language, "
            f"with the B prefix's budget ({budget.get('iters', '?')} steps at lr {budget.get('lr', '?')})",
            recovered, PREFIX_MAX, LORA_MIN,
            "a prefix optimiser that cannot move accuracy at this budget would leave the A accuracy where the B "
            "prefix put it, and then the prefix's failure on B would say nothing about B; the pass condition "
            "never reads the recovered prefix"),
        Control(
            FT_B,
            "full fine-tuning of every weight on B",
            f"the 'not learnable' test (< {PREFIX_MAX} on every seed) must not hold",
            {"accuracy": summary(finetuned), "prefix_max": PREFIX_MAX, "says_not_learnable": not_learnable(finetuned)},
            not not_learnable(finetuned),
            "if B could not be learned from this data at this scale by any method, full fine-tuning would fail "
            "too; the pass condition never reads it"),
        Control(
            LORA_INIT,
            "LoRA at initialisation (B = 0: exactly the pretrained function) on B",
            f"the 'LoRA learns B' criterion (> {LORA_MIN} on every seed) must say 'not learned'",
            {"accuracy": summary(pretrained_b), "lora_min": LORA_MIN},
            not all(v > LORA_MIN for v in pretrained_b),
            "if the pretrained model already translated into B (B's cognate rule coinciding with A's), LoRA's "
            "score would show nothing learned; the pass condition never reads the pretrained model on B"),
    )
    return Finding(Evidence(holds, text, Rung.TRAINED, details), controls)


training_check("petrov.appC.translation-needs-lora", Training("translation", SCALE, N_SEEDS),
               controls=(RECOVERS, FT_B, LORA_INIT))(translation_verdict)
