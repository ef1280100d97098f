"""Experiment ``translation`` (petrov.appC.translation-needs-lora; paper notes 4.8, authors' reply).

The paper's Appendix C (described in the authors' public reply; code on the memory_capacity
branch): pretrain a 4-layer GPT on English -> German word translation, then learn English -> Spanish
with a prefix or with LoRA of the same parameter count: "Prefix-tuning fails to learn this new
task, while LoRA with the same number of parameters achieves 94% accuracy."

Here, on the generated lexicon of verify/experiments/lexicon.py (source words, language A =
pretraining, language B = the new task):
    M_0   = GPT trained from scratch, every weight, on source -> A           ("pretrained")
    M_ft  = M_0, every weight fine-tuned on source -> B (upper bound)         ("finetuned")
    M_pt  = M_0 frozen + a prefix of n_S positions in every layer on B        ("prefix")
    M_lo  = M_0 frozen + LoRA of rank r on the Linears named in ``lora.targets`` on B ("lora")
    M_r   = M_pt's prefix trained further on A, a skill M_0 has, with M_pt's budget (same steps,
            lr): the positive control, starting where the claim's prefix ended (its A accuracy
            A[prefix][A] is measured)                                        ("recover_prefix")
Parameter parity: a prefix has L * n_S * d parameters; LoRA r * sum over wrapped Linears of
(in + out). With targets ("c_attn", "c_proj", "c_fc") every layer wraps c_attn (d -> 3d),
attn.c_proj (d -> d), mlp.c_fc (d -> 4d) and mlp.c_proj (4d -> d):
    r * L * (4d + 2d + 5d + 5d) = 16 r L d  =  L n_S d   iff   n_S = 16 r,
so rank r and a 16r-position prefix are EXACTLY equal (the cpu and ci scales). The paper's branch
(prefix 66 vs rank 4 on c_attn, c_proj, c_fc and lm_head) is not exactly equal: with d = 256, L = 4,
V = 30 it is 66,680 LoRA <= 67,584 prefix parameters (the paper scale keeps it; both are recorded).

Metrics: accuracy[model][language] = exact match of the greedy translation over the whole word list
(lexicon.exact_match), for languages A and B; by_kind[model] = the same on B's cognates and B's
arbitrary words separately; trainable parameter counts; per-stage timings (Runner); examples of
the prefix's and LoRA's B translations; curves and convergence of every adapter stage (each watches
the whole word list of its language: there is no held-out word); forgetting: whether removing the
prefix restores M_0 bit for bit on the A pairs (experiments.restoration; the rivals' A accuracies
are accuracy[finetuned][A] and accuracy[lora][A]).

Importing this module registers ``translation`` with the record-aware runner and adds its
configurations and paper numbers to verify.experiments.scales; its records' key covers this file
and lexicon.py (records.EXPERIMENT_FILES).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from verify.experiments import scales
from verify.experiments.experiments import EXPERIMENT_FUNCTIONS, Runner, restoration
from verify.experiments.gpt import GPT, add_lora, add_prefix, count_parameters, unfreeze_all
from verify.experiments.lexicon import (
    VOCAB_SIZE,
    Lexicon,
    LexiconStream,
    block_size,
    exact_match,
    make_lexicon,
    sequences,
    translate,
)

LANGUAGES = ("A", "B")
EXAMPLE_WORDS = 8  # translations of the first few words kept in the record, for the notes


def lexicon_of(config: dict) -> Lexicon:
    lex = config["lexicon"]
    return make_lexicon(lex["n_words"], lex["p_cognate"], lex["seed"])


def stream(config: dict, lexicon: Lexicon, stage: str, seed: int) -> LexiconStream:
    """The batch stream of ``stage``: its language is the stage's ``task``."""
    spec = config["stages"][stage]
    return LexiconStream(lexicon, spec["task"], seed, config["n_prefix"], spec.get("batch_size", 64))


def monitor(config: dict, lexicon: Lexicon, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What a stage's convergence rule watches: every pair of the stage's language (the task is the
    word list itself, so there is no held-out word; in eval() mode, without dropout)."""
    return sequences(lexicon.pairs(config["stages"][stage]["task"]), config["n_prefix"])


def _train(run: Runner, model: GPT, name: str, config: dict, lexicon: Lexicon, seed: int) -> None:
    run.stage(model, name, stream=stream(config, lexicon, name, seed), monitor=monitor(config, lexicon, name))


def lora_parameters(n_layer: int, n_embd: int, rank: int, targets: tuple[str, ...], vocab: int = VOCAB_SIZE) -> int:
    """r * sum (in + out) over the Linears add_lora wraps (closed form; the test compares with a model)."""
    d = n_embd
    per_layer = {"c_attn": 4 * d, "attn.c_proj": 2 * d, "c_fc": 5 * d, "mlp.c_proj": 5 * d}
    total = sum(n for name, n in per_layer.items() if any(t in name for t in targets)) * n_layer
    if any(t in "lm_head" for t in targets):
        total += d + vocab
    return rank * total


def translation(config: dict, seed: int, device: str = "cpu", directory: Path | None = None, key: str = "",
                quiet: bool = False) -> dict:
    """Pretrain on A; then, from the same frozen pretrained model, full fine-tuning, a prefix and
    LoRA on B; then the B prefix trained further on A (the recovery control). Returns the metrics (accuracies in [0, 1])."""
    run = Runner(config, seed, device, directory, key, quiet, label=f"seed {seed} ")
    lexicon = lexicon_of(config)
    n_prefix = config["n_prefix"]
    pretrained = run.new_model()
    run.stage(pretrained, "pretrain", stream=stream(config, lexicon, "pretrain", seed))
    finetuned = copy.deepcopy(pretrained)
    unfreeze_all(finetuned)
    full_params = count_parameters(finetuned)
    _train(run, finetuned, "finetune", config, lexicon, seed)
    generator = torch.Generator().manual_seed(seed)
    prefixed = copy.deepcopy(pretrained)
    add_prefix(prefixed, n_prefix, generator)
    _train(run, prefixed, "prefix", config, lexicon, seed)
    lora = copy.deepcopy(pretrained)
    torch.manual_seed(seed)  # LoRA's A init draws from the global generator
    wrapped = add_lora(lora, config["lora"]["rank"], tuple(config["lora"]["targets"]))
    _train(run, lora, "lora", config, lexicon, seed)
    recovered = copy.deepcopy(prefixed)  # starts at the trained B prefix
    _train(run, recovered, "recover_prefix", config, lexicon, seed)
    models: dict[str, GPT] = {"pretrained": pretrained, "finetuned": finetuned, "prefix": prefixed, "lora": lora}
    accuracy = {name: {lang: exact_match(m, lexicon, lang, n_prefix) for lang in LANGUAGES}
                for name, m in models.items()}
    accuracy["recover_prefix"] = {"A": exact_match(recovered, lexicon, "A", n_prefix)}
    cognate = lexicon.languages["B"].cognate
    arbitrary = tuple(not c for c in cognate)
    by_kind = {name: {"B cognate": exact_match(m, lexicon, "B", n_prefix, cognate),
                      "B arbitrary": exact_match(m, lexicon, "B", n_prefix, arbitrary)}
               for name, m in models.items()}
    words = list(lexicon.source[:EXAMPLE_WORDS])
    examples = {"source": words, "A": list(lexicon.languages["A"].words[:EXAMPLE_WORDS]),
                "B": list(lexicon.languages["B"].words[:EXAMPLE_WORDS]),
                **{name: translate(models[name], words, n_prefix) for name in ("prefix", "lora", "finetuned")}}
    return {"accuracy": accuracy, "by_kind": by_kind,
            "parameters": {"model": full_params, "full_finetune": full_params,
                           "prefix": count_parameters(prefixed), "lora": count_parameters(lora),
                           "lora_wrapped": wrapped},
            "lexicon": {"n_words": len(lexicon.source), "b_cognates": sum(cognate),
                        "a_cognates": sum(lexicon.languages["A"].cognate)},
            "examples": examples, "training": run.timings, **run.learning(),
            "forgetting": {"pretraining_tasks": ["A"],
                           "restoration": restoration(pretrained, prefixed, sequences(lexicon.pairs("A"), n_prefix)[0])}}


EXPERIMENT_FUNCTIONS["translation"] = translation


# --- configurations (scales.config_for imports this module) -------------------------------------

def _stage(task: str, iters: int, lr: float, full: bool) -> dict:
    """Full-weight stages: weight decay 0.1, dropout on; adapter stages: 0.01, dropout off."""
    return {"task": task, "iters": iters, "lr": lr, "weight_decay": 0.1 if full else 0.01, "dropout_on": full,
            "checkpoint_every": max(1, min(1000, iters // 4))}


def make_config(n_layer: int, n_head: int, n_embd: int, n_prefix: int, rank: int, targets: tuple[str, ...],
                n_words: int, p_cognate: float, iters: dict[str, int], lrs: dict[str, float],
                lexicon_seed: int = 2024) -> dict:
    """A configuration: model, lexicon, prefix size, LoRA, and the stages' steps and rates; the
    recovery control ("recover_prefix", on A) gets the B prefix's steps and rate (the same budget)."""
    iters, lrs = {**iters, "recover_prefix": iters["prefix"]}, {**lrs, "recover_prefix": lrs["prefix"]}
    full = {"pretrain": True, "finetune": True, "prefix": False, "lora": False, "recover_prefix": False}
    task = {"pretrain": "A", "finetune": "B", "prefix": "B", "lora": "B", "recover_prefix": "A"}
    return {
        "model": {"vocab_size": VOCAB_SIZE, "block_size": block_size(n_prefix), "n_layer": n_layer,
                  "n_head": n_head, "n_embd": n_embd, "dropout": 0.1, "skip_layer_norm": False},
        "n_prefix": n_prefix,
        "lora": {"rank": rank, "targets": list(targets)},
        "lexicon": {"n_words": n_words, "p_cognate": p_cognate, "seed": lexicon_seed},
        "stages": {name: _stage(task[name], iters[name], lrs[name], full[name]) for name in full},
    }


CPU_TARGETS = ("c_attn", "c_proj", "c_fc")  # n_S = 16 r gives exact parity
PAPER_TARGETS = ("c_attn", "c_proj", "c_fc", "lm_head")  # the memory_capacity branch

scales.CONFIGS["translation"] = scales.with_convergence_rules({
    # memory_capacity branch: 4 layers, 4 heads, 256, prefix 66 vs LoRA rank 4; pretrain 50k at 5e-4,
    # prefix 100k at 5e-5, LoRA 50k at 1e-3. Full fine-tuning and the recovery prefix are ours (the
    # branch's pretraining settings / the prefix's). 4,921 words as PHOR-in-One has.
    "paper": make_config(4, 4, 256, 66, 4, PAPER_TARGETS, 4921, 0.3,
                         {"pretrain": 50_000, "finetune": 50_000, "prefix": 100_000, "lora": 50_000},
                         {"pretrain": 5e-4, "finetune": 5e-4, "prefix": 5e-5, "lora": 1e-3}),
    # 2 layers, 4 heads, 64 wide; LoRA rank 2 = prefix 32 positions = 4,096 parameters (27 per word:
    # at rank 1, 2,048, LoRA reached only 30-40% in 2,000 steps); 150 words; the prefix's cap 4x
    # LoRA's (the branch: 2x; descending's prefix: 4x full fine-tuning's): at 1.2x, the first
    # fair-budget run, the prefix's held-out loss was still falling at its cap on every seed, so
    # the cap was raised before the rerun, the rule and thresholds unchanged (notes/experiments.md).
    # How the rest was found: notes/translation.md.
    "cpu": make_config(2, 4, 64, 32, 2, CPU_TARGETS, 150, 0.3,
                       {"pretrain": 1500, "finetune": 400, "prefix": 4000, "lora": 1000},
                       {"pretrain": 1e-3, "finetune": 5e-4, "prefix": 1e-2, "lora": 2e-2}),
    "ci": make_config(1, 2, 32, 16, 1, CPU_TARGETS, 64, 0.3,
                      {"pretrain": 40, "finetune": 20, "prefix": 20, "lora": 20},
                      {"pretrain": 1e-3, "finetune": 5e-4, "prefix": 1e-2, "lora": 5e-3}),
})
# The authors' reply: "LoRA with the same number of parameters achieves 94% accuracy" (no other
# number of this experiment is known; the prefix's is NOT stated).
scales.PAPER_NUMBERS["translation"] = {"lora B": 0.94}
