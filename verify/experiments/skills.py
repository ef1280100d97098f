"""Experiment ``skills``: one pretrained mixture model, then what a prefix can and cannot add to it.

Paper notes 4.3 (notebook 03), 4.4 (notebook 04), 4.7 (Appendix B) and 4.5 (the Sec. 3 count),
on ONE deeper model shared by all of them (the paper pretrains two, for block sizes 29 and 31):

    M_0        = GPT (L >= 2 layers) trained from scratch on the mixture "random" (ascending,
                 descending, add1, add2 without a task indicator)                  ("pretrained")
    M_sai      = M_0 frozen + a prefix of n_S positions per layer on sort-and-increment
                 (ascending_add1 = sort(x) + 1: a combination of two pretrained skills)
                                                                    ("prefix_ascending_add1")
    M_dh       = M_0 frozen + a prefix of n_S positions per layer on double_hist
                 (out_k = #{j: x_j = x_k}: needs an attention pattern M_0 has no reason to have)
                                                                    ("prefix_double_hist")
    M_lora     = M_0 frozen + rank-r LoRA on the paper's targets (attn.c_proj, mlp.c_fc, mlp.c_proj)
                 on double_hist                                     ("lora_double_hist")
    M_rec      = M_dh's prefix trained further on ascending (a mixture skill that needs no new
                 attention pattern) with M_dh's budget (same steps, lr): the positive control of
                 "a prefix cannot learn double_hist"            ("recover_prefix_ascending")
    M_rand     = M_0 frozen + a prefix of random directions with the per-position norms of M_sai's
                 trained prefix (the control of "the prefix combines the skills")
                                                                    ("random_prefix_ascending_add1")
Parameter parity: rank-r LoRA has r((d + d) + (d + 4d) + (4d + d)) = 12 r d parameters per layer and
a prefix n_S d, so n_S = 12 r gives EXACTLY equal counts L * 12 r * d for any L and d (the paper:
r = 1, n_S = 12, 12,288 = 4 * 12 * 256). The paper's configuration puts the prefix in the companion
code's form (12 dummy positions in every example, replaced by the prefix); the cpu configuration
uses r = 4 and n_S = 48 in "prepend" mode (gpt.py: the prefix rows go in front of each layer's
attention input), the examples keeping the 12 dummy positions, because at width 64 rank-1 LoRA
learns double_hist far too slowly for a CPU budget (notes/experiments.md) and 48 dummy positions
would make pretraining 2.5x slower.

Metrics (accuracies in [0, 1] on the seeded 3,200-example test sets):
  * accuracy[model][task]: M_0 on all six tasks; M_sai on ascending_add1 (and on ascending and add1,
    the two skills it combines); M_dh on double_hist and on ascending (the recovery's start); M_lora
    on double_hist and on the four mixture tasks (what LoRA did to the pretraining tasks:
    petrov.discussion.forgetting); M_rec on ascending; M_rand on ascending_add1; token_accuracy: the fraction of
    correct output tokens of M_sai, M_dh and M_lora on their tasks (the same generations);
  * parameters: trainable counts of prefix, LoRA and the whole model;
  * spread (Appendix B, on every trained prefix): for the prefix model's own task, the attention of
    the last input position i* (content row n_dummies + 9) to the prefix positions, renormalised
    over the prefix,
        w_j(x) = A_{i*, j}(x) / sum_{j' < n_S} A_{i*, j'}(x),   j < n_S,
    over ``spread_inputs`` test inputs x; per layer and head, spread = mean over j of
    (99th - 1st percentile of w_j(x) over x); the same statistic on the attention of i* to the
    10 input positions renormalised over them (``content``), as the control that shows input
    dependence where it exists; also the mean weights (how uniform the prefix attention is) and
    the numbers of positions each mean is over (``prefix_positions`` n_S, ``content_positions`` 10:
    the check multiplies each mean by its count, the spread relative to the uniform share);
  * capacity (Sec. 3 counted on a trained model): greedy 10-token completions of M_0 from one real
    first token (all V of them) and from K virtual first tokens (soft prompts e ~ N(0, s^2 I), s =
    RMS of the real first-position inputs E_tok[t] + E_pos[0]); the number of distinct
    completions of each; and, for the check's controls, the completions from soft prompts equal to
    the real first-position inputs (must reproduce the real-token completions exactly) and from the
    same K virtual tokens shrunk by TINY (K points in a small ball: few distinct completions);
  * attention: head-averaged attention maps of M_0, M_dh and M_lora in every layer on one
    double_hist test input followed by the correct answer (teacher forcing): rows = the content
    queries, columns = the prefix keys (prepend mode; ``prefix_columns`` of them) and then content;
  * training: per-stage steps/s, seconds, final loss; curves and convergence of every adapter stage
    (experiments.py);
  * forgetting: the mixture tasks, M_0 on independently seeded test sets of each (the noise
    control), and whether removing M_dh's prefix restores M_0 bit for bit (experiments.restoration,
    on the monitor inputs of the four mixture tasks).

Importing this module registers ``skills`` with the runner and adds its configurations and the
paper's numbers to verify.experiments.scales.
"""

from __future__ import annotations

import copy
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch

from verify.experiments import scales
from verify.experiments.experiments import EXPERIMENT_FUNCTIONS, RESAMPLE_SEED_OFFSET, Runner, restoration
from verify.experiments.gpt import GPT, add_lora, add_prefix, count_parameters, generate
from verify.experiments.tasks import LENGTH, MIXTURE, TASKS, eval_set, greedy_scores, monitor_set

COMBINED_TASK = "ascending_add1"  # sort-and-increment
NEW_TASK = "double_hist"
PREFIX_STAGES = {f"prefix_{COMBINED_TASK}": COMBINED_TASK, f"prefix_{NEW_TASK}": NEW_TASK}
LORA_STAGE = f"lora_{NEW_TASK}"
RECOVER_TASK = "ascending"  # a mixture skill: needs no new attention pattern
RECOVER_STAGE = f"recover_prefix_{RECOVER_TASK}"  # starts at the trained double_hist prefix, same budget
RANDOM_ROW = f"random_prefix_{COMBINED_TASK}"  # random directions, the trained prefix's norms
TINY = 1e-3  # the capacity control's virtual tokens: the sampled ones times TINY


# --- configurations --------------------------------------------------------------------------------
# Paper (notebooks 03 / 04): 4 layers, 4 heads, n_embd 256, LayerNorm, dropout 0.1; pretraining on the
# mixture 40,000 steps at lr 5e-4; prefixes at lr 5e-5 (03: 10 positions, 500,000 steps on
# ascending_add1 and on double_hist; 04: 12 positions, 100,000 steps on double_hist); rank-1 LoRA on
# (c_proj, c_fc), 10,000 steps at lr 5e-3. Ours: one pretrained model for all, and a prefix length
# that equals the LoRA's parameter count: prefix_length = 12 * rank.
#   "n_prefix"       dummy positions in front of every example (the companion code's replace mode:
#                    = prefix_length; prepend mode: 0)
#   "prefix_length"  n_S, the prefix's positions per layer
_PREFIX = {"weight_decay": 0.01, "dropout_on": False}
_PAPER = {
    "model": {"vocab_size": 10, "block_size": 31, "n_layer": 4, "n_head": 4, "n_embd": 256, "dropout": 0.1,
              "skip_layer_norm": False, "prefix_mode": "replace"},
    "n_prefix": 12,
    "prefix_length": 12,
    "eval_examples": 3200,
    "lora": {"rank": 1, "targets": ["c_proj", "c_fc"], "alpha": 1.0},
    "spread_inputs": 1000,
    "capacity_virtual_tokens": 2000,
    "stages": {
        "pretrain": {"task": "random", "iters": 40_000, "lr": 5e-4, "weight_decay": 0.1, "dropout_on": True},
        f"prefix_{COMBINED_TASK}": {"task": COMBINED_TASK, "iters": 500_000, "lr": 5e-5, **_PREFIX},
        f"prefix_{NEW_TASK}": {"task": NEW_TASK, "iters": 100_000, "lr": 5e-5, **_PREFIX},
        LORA_STAGE: {"task": NEW_TASK, "iters": 10_000, "lr": 5e-3, **_PREFIX},
        RECOVER_STAGE: {"task": RECOVER_TASK, "iters": 100_000, "lr": 5e-5, **_PREFIX},
    },
}


def scaled(model: dict, iters: dict[str, int], lrs: dict[str, float], rank: int, eval_examples: int | None = None,
           spread_inputs: int | None = None, virtual_tokens: int | None = None) -> dict:
    """The paper's configuration with another model size, steps and learning rates per stage, and
    rank-``rank`` LoRA against a prefix of 12 * rank positions put in front of each layer's attention
    input ("prepend"), the examples keeping the paper's 12 dummy positions."""
    out = deepcopy(_PAPER)
    out["model"].update(model)
    out["model"]["prefix_mode"] = "prepend"
    out["prefix_length"] = 12 * rank
    # the attention input: prefix rows + dummies + 19 tokens
    out["model"]["block_size"] = 12 * rank + out["n_prefix"] + 2 * LENGTH - 1
    out["lora"]["rank"] = rank
    for name, n in iters.items():
        out["stages"][name]["iters"] = n
        out["stages"][name]["checkpoint_every"] = max(1, min(1000, n // 4))
    for name, lr in lrs.items():
        out["stages"][name]["lr"] = lr
    out["stages"][RECOVER_STAGE] = {**out["stages"][f"prefix_{NEW_TASK}"], "task": RECOVER_TASK}  # the same budget
    for field, value in (("eval_examples", eval_examples), ("spread_inputs", spread_inputs),
                         ("capacity_virtual_tokens", virtual_tokens)):
        if value is not None:
            out[field] = value
    return out


CONFIGS = {
    "paper": _PAPER,
    # 2 layers x 64 (paper 4 x 256); 8,000 pretraining steps at lr 1e-3; prefixes of 48 positions and
    # rank-4 LoRA (6,144 parameters each) at lr 1e-2. How it was found: notes/experiments.md.
    # Fair budgets (issue 12, decided before the runs): each prefix's cap equals LoRA's, 4,000 steps
    # (was 1,500), and every adapter stops earlier only by the same convergence rule.
    "cpu": scaled({"n_layer": 2, "n_head": 4, "n_embd": 64},
                  {"pretrain": 8000, f"prefix_{COMBINED_TASK}": 4000, f"prefix_{NEW_TASK}": 4000, LORA_STAGE: 4000},
                  {"pretrain": 1e-3, f"prefix_{COMBINED_TASK}": 1e-2, f"prefix_{NEW_TASK}": 1e-2, LORA_STAGE: 1e-2},
                  rank=4),
    "ci": scaled({"n_layer": 2, "n_head": 2, "n_embd": 16},
                 {"pretrain": 30, f"prefix_{COMBINED_TASK}": 15, f"prefix_{NEW_TASK}": 15, LORA_STAGE: 15},
                 {"pretrain": 1e-3, f"prefix_{COMBINED_TASK}": 1e-2, f"prefix_{NEW_TASK}": 1e-2, LORA_STAGE: 5e-3},
                 rank=1, eval_examples=320, spread_inputs=200, virtual_tokens=100),
}

# The paper's numbers (notebook 03, seed 1234, prefix 10; notebook 04, prefix 12), as fractions.
PAPER_NUMBERS = {
    "pretrained ascending": 0.0591, "pretrained descending": 0.2775, "pretrained add1": 0.3966,
    "pretrained add2": 0.2281, "pretrained ascending_add1": 0.0, "pretrained double_hist": 0.0,
    f"prefix_{COMBINED_TASK} {COMBINED_TASK}": 0.7159,
    f"prefix_{NEW_TASK} {NEW_TASK}": 0.0062,  # notebook 03 (prefix 10); notebook 04 (prefix 12): 0.31%
    f"{LORA_STAGE} {NEW_TASK}": 0.9238,
}
PAPER_PREFIX12_DOUBLE_HIST = 0.0031  # notebook 04


# --- measurements on trained models ---------------------------------------------------------------

def _percentile_spread(weights: np.ndarray) -> np.ndarray:
    """weights (N, L, H, J) -> (L, H): mean over j of (99th - 1st percentile over the N inputs)."""
    hi, lo = np.percentile(weights, [99, 1], axis=0)  # each (L, H, J)
    return (hi - lo).mean(axis=-1)


def prefix_attention_spread(model: GPT, task: str, seed: int, n_prefix: int, n_dummies: int, n_inputs: int) -> dict:
    """Appendix B's statistic for one prefix model (prefix of n_S = ``n_prefix`` positions, examples
    with ``n_dummies`` dummy positions) on ``n_inputs`` seeded test inputs of ``task`` (see the
    module docstring). Returns per layer and head the prefix spread, the content spread, and the
    mean prefix weights. Attention rows are the content positions [dummies, input] in both modes;
    columns: replace mode [n_S prefix slots = the dummies, input]; prepend mode [n_S prefix keys,
    dummies, input] (the dummies' share enters neither statistic)."""
    inp, _ = eval_set(task, seed, n_inputs)  # (N, 10)
    x = torch.from_numpy(np.concatenate([np.zeros((len(inp), n_dummies), dtype=np.int64), inp], axis=1))  # (N, n_dummies + 10)
    row = n_dummies + LENGTH - 1  # the last input position (replace mode: n_dummies = n_S)
    start = n_prefix + (n_dummies if model.config.prefix_mode == "prepend" else 0)  # first input column
    patterns = torch.stack([p[:, :, row, :] for p in model.attention_patterns(x)], dim=1)  # (N, L, H, columns)
    a = patterns.double().numpy()
    prefix = a[..., :n_prefix] / a[..., :n_prefix].sum(axis=-1, keepdims=True)  # (N, L, H, n_S)
    content = a[..., start:start + LENGTH] / a[..., start:start + LENGTH].sum(axis=-1, keepdims=True)  # (N, L, H, 10)
    return {"prefix_positions": n_prefix, "content_positions": LENGTH,
            "prefix_spread": np.round(_percentile_spread(prefix), 5).tolist(),
            "content_spread": np.round(_percentile_spread(content), 5).tolist(),
            "prefix_mass": np.round(a[..., :n_prefix].sum(axis=-1).mean(axis=0), 5).tolist(),  # (L, H)
            "mean_prefix_weights": np.round(prefix.mean(axis=0), 5).tolist(),  # (L, H, n_S)
            "inputs": len(inp)}


def random_direction_prefix(model: GPT, seed: int) -> GPT:
    """A copy of a prefix model whose prefix rows point in random directions with the trained rows'
    norms: s'_{l,j} = ||s_{l,j}|| g_{l,j} / ||g_{l,j}||, g ~ N(0, I) from a torch.Generator seeded
    with (seed + 104729). Same size of perturbation, none of the learned direction."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        g = torch.randn(out.prefix.shape, generator=torch.Generator().manual_seed(seed + 104729),
                        dtype=out.prefix.dtype)  # (L, n_S, d)
        out.prefix.copy_(out.prefix.norm(dim=-1, keepdim=True) * g / g.norm(dim=-1, keepdim=True))
    return out


def _completions_batched(model: GPT, first: torch.Tensor, n_dummies: int = 0, batch: int = 500) -> np.ndarray:
    """Greedy 10-token completions from one first-token input vector per row after ``n_dummies``
    dummy positions: first (K, d) replaces E_tok[x] + E_pos[n_dummies] (a virtual token, different
    in every row; set through a hook on the embedding output, since GPT.soft_prompt is shared by a
    batch). Returns (K, 10)."""
    outs = []
    for start in range(0, len(first), batch):
        rows = first[start:start + batch]  # (b, d)

        def replace(_module, _args, h, rows=rows):  # h = output of the dropout after embeddings: (b, T, d)
            return torch.cat([h[:, :n_dummies, :], rows[:, None, :], h[:, n_dummies + 1:, :]], dim=1)

        handle = model.drop.register_forward_hook(replace)
        try:
            outs.append(generate(model, torch.zeros(len(rows), n_dummies + 1, dtype=torch.long), LENGTH).numpy())
        finally:
            handle.remove()
    return np.concatenate(outs)


def capacity_count(model: GPT, seed: int, n_virtual: int, n_dummies: int = 0) -> dict:
    """Distinct greedy completions from every real first token vs from ``n_virtual`` sampled
    virtual first tokens (module docstring), the first token following the ``n_dummies`` dummy
    positions of the training format. Virtual tokens are drawn from a torch.Generator seeded with
    (seed + 7919)."""
    V = model.config.vocab_size
    with torch.no_grad():
        real_inputs = model.wte.weight + model.wpe.weight[n_dummies]  # (V, d): what that position sees for token t
        scale = float(real_inputs.pow(2).mean().sqrt())
        generator = torch.Generator().manual_seed(seed + 7919)
        virtual = scale * torch.randn(n_virtual, model.config.n_embd, generator=generator)  # (K, d)
        context = torch.cat([torch.zeros(V, n_dummies, dtype=torch.long), torch.arange(V)[:, None]], dim=1)
        real = generate(model, context, LENGTH).numpy()  # (V, 10)
        through_soft_prompt = _completions_batched(model, real_inputs, n_dummies)  # (V, 10): control
        soft = _completions_batched(model, virtual, n_dummies)  # (K, 10)
        tiny = _completions_batched(model, TINY * virtual, n_dummies)  # (K, 10): control, K points near 0
    distinct = lambda a: len({tuple(r) for r in a.tolist()})  # noqa: E731
    return {"vocab_size": V, "virtual_tokens": n_virtual, "virtual_scale": round(scale, 5),
            "real_distinct": distinct(real), "virtual_distinct": distinct(soft),
            "tiny_virtual_scale": TINY, "tiny_virtual_distinct": distinct(tiny),
            "virtual_not_reachable_by_real": len({tuple(r) for r in soft.tolist()} - {tuple(r) for r in real.tolist()}),
            "real_via_soft_prompt_identical": bool((through_soft_prompt == real).all()),
            "real_completions": ["".join(map(str, r)) for r in real.tolist()]}


def attention_maps(models: dict[str, GPT], seed: int, n_dummies: int) -> dict:
    """Head-averaged attention (L, T, C) of each model on the first seeded double_hist test input
    followed by its correct answer (teacher forcing: every model sees the same sequence): rows =
    the T content queries, columns C = T, or n_S + T for a prepended prefix, whose keys come first:
    ``prefix_columns[name]`` says how many."""
    inp, out = eval_set(NEW_TASK, seed, 1)
    seq = torch.tensor([[0] * n_dummies + inp[0].tolist() + out[0, :-1].tolist()])  # (1, n_dummies + 19)
    maps, columns = {}, {}
    for name, model in models.items():
        layers = [p[0].mean(dim=0) for p in model.attention_patterns(seq)]  # each (T, C)
        maps[name] = np.round(torch.stack(layers).numpy(), 3).tolist()  # (L, T, C)
        columns[name] = layers[0].shape[1] - seq.shape[1]
    return {"tokens": seq[0].tolist(), "maps": maps, "prefix_columns": columns}


# --- the experiment --------------------------------------------------------------------------------

def skills(config: dict, seed: int, device: str = "cpu", directory: Path | None = None, key: str = "",
           quiet: bool = False) -> dict:
    """Pretrain on the mixture; from the same frozen model a prefix on sort-and-increment, a prefix
    on double_hist and rank-r LoRA on double_hist; then the controls' models (the double_hist
    prefix trained further on ascending; a random-direction prefix of the sort-and-increment
    prefix's norms); measure accuracies, Appendix B spreads, the
    capacity count and attention maps. Prefix inits come in stage order from one torch.Generator
    seeded with ``seed``; LoRA's A init from torch.manual_seed(seed)."""
    run = Runner(config, seed, device, directory, key, quiet, label=f"seed {seed} ")
    n_prefix, n_dummies = config["prefix_length"], config["n_prefix"]
    if config["model"].get("prefix_mode", "replace") == "replace" and n_dummies != n_prefix:
        raise ValueError("replace mode needs as many dummy positions as prefix positions")
    pretrained = run.new_model()
    run.stage(pretrained, "pretrain")
    generator = torch.Generator().manual_seed(seed)
    models: dict[str, GPT] = {"pretrained": pretrained}
    prefix_params = 0
    for stage in PREFIX_STAGES:
        model = copy.deepcopy(pretrained)
        add_prefix(model, n_prefix, generator)
        prefix_params = count_parameters(model)
        run.stage(model, stage)
        models[stage] = model
    lora = copy.deepcopy(pretrained)
    torch.manual_seed(seed)
    add_lora(lora, config["lora"]["rank"], tuple(config["lora"]["targets"]), config["lora"]["alpha"])
    lora_params = count_parameters(lora)
    run.stage(lora, LORA_STAGE)
    models[LORA_STAGE] = lora
    recovered = copy.deepcopy(models[f"prefix_{NEW_TASK}"])  # starts at the trained double_hist prefix
    run.stage(recovered, RECOVER_STAGE)
    models[RECOVER_STAGE] = recovered
    models[RANDOM_ROW] = random_direction_prefix(models[f"prefix_{COMBINED_TASK}"], seed)

    evaluated = {"pretrained": (*MIXTURE, COMBINED_TASK, NEW_TASK),
                 f"prefix_{COMBINED_TASK}": (COMBINED_TASK, "ascending", "add1"),
                 f"prefix_{NEW_TASK}": (NEW_TASK, RECOVER_TASK), LORA_STAGE: (NEW_TASK, *MIXTURE),
                 RECOVER_STAGE: (RECOVER_TASK,), RANDOM_ROW: (COMBINED_TASK,)}
    scores = {name: {task: greedy_scores(models[name], task, seed, n_dummies, config["eval_examples"])
                     for task in tasks} for name, tasks in evaluated.items()}  # (exact, per-token)
    accuracy = {name: {task: exact for task, (exact, _) in by_task.items()} for name, by_task in scores.items()}
    per_token = {name: {task: scores[name][task][1]} for name, task in (*PREFIX_STAGES.items(), (LORA_STAGE, NEW_TASK))}
    forgetting = {"pretraining_tasks": list(MIXTURE),
                  "resampled_pretrained": {task: greedy_scores(pretrained, task, seed + RESAMPLE_SEED_OFFSET, n_dummies,
                                                               config["eval_examples"])[0] for task in MIXTURE},
                  "restoration": restoration(pretrained, models[f"prefix_{NEW_TASK}"],
                                             torch.cat([monitor_set(t, seed, n_dummies)[0] for t in MIXTURE]))}
    pretrained.cpu()
    spread = {stage: prefix_attention_spread(models[stage].cpu(), task, seed, n_prefix, n_dummies,
                                             config["spread_inputs"])
              for stage, task in PREFIX_STAGES.items()}
    return {"accuracy": accuracy, "token_accuracy": per_token,
            "parameters": {"model": count_parameters(pretrained, trainable_only=False), "prefix": prefix_params,
                           "lora": lora_params},
            "training": run.timings, **run.learning(), "forgetting": forgetting,
            "spread": spread,
            "capacity": capacity_count(pretrained, seed, config["capacity_virtual_tokens"], n_dummies),
            "attention_maps": attention_maps({name: models[name].cpu() for name in
                                              ("pretrained", f"prefix_{NEW_TASK}", LORA_STAGE)}, seed, n_dummies)}


assert set(PREFIX_STAGES.values()) <= set(TASKS)
EXPERIMENT_FUNCTIONS["skills"] = skills
scales.CONFIGS["skills"] = scales.with_convergence_rules(CONFIGS)
scales.PAPER_NUMBERS["skills"] = PAPER_NUMBERS
