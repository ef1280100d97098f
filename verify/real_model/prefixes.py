"""Prefixes made by HF ``peft`` prefix-tuning: the config, a random prefix, a trained prefix.

peft's ``PrefixTuningConfig`` (prefix_projection=False, the default) stores ONE parameter, an
``nn.Embedding`` of shape (n_S, 2 L H_kv d_head) (= (n_S, 2 L D) without grouped-query
attention): for every layer l, K/V head g and prefix position k, a key and a value vector of size
d_head. They are used as they are: peft prepends them to the layer's
keys and values through the key/value cache (``past_key_values``). So the prefix is NOT a vector s
passed through the layer's LayerNorm, W_K and W_V (and their biases) as in the paper's
formulation; the theory's "W_V s + b_V" is the stored value itself, and "W_K s + b_K" the stored
key. The checks read the stored keys and values back through ``PeftModel.get_prompt`` (the
library's own reshaping), never through our idea of the layout.

Random prefix: N(0, 1) entries, the distribution of peft's default initialisation of that
embedding, drawn from an explicit torch generator.

Trained prefix: a sentiment task on the hand-written sentences (verify.real_model.sentences).
The model's final hidden states are mean-pooled over the real tokens and read by a FROZEN random
linear head (D -> 2, seeded); only the prefix is trained (Adam, cross-entropy), so every change
of the loss is the prefix's doing. Short sentences only and small batches keep it CPU-fast; the
model runs in eval mode (no dropout), float32.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from verify.real_model.loading import Batch, LoadedModel


def prefix_shape(loaded: LoadedModel, n_prefix: int) -> tuple[int, int]:
    """Shape of peft's prefix embedding: (n_S, 2 * n_layers * H_kv * d_head).

    H_kv d_head = d_model for BERT / RoBERTa / GPT-2. With grouped-query attention peft sizes the
    prefix by the K/V heads (peft.utils.other._prepare_prompt_learning_config: token_dim =
    head_dim * num_key_value_heads, num_attention_heads = num_key_value_heads), so each layer
    stores H_kv (not H) prefix keys and values per position, shared by the H / H_kv query heads
    of each group exactly as the content's keys and values are.
    """
    return n_prefix, 2 * loaded.n_layers * loaded.n_kv_heads * loaded.d_head


def attach(model: nn.Module, n_prefix: int, weight: torch.Tensor) -> Any:
    """Wrap ``model`` in a peft ``PeftModelForFeatureExtraction`` with a prefix of ``n_prefix``
    virtual tokens whose embedding is ``weight`` (n_S, 2 L H_kv d_head). The base model is shared, not copied
    (prompt learning inserts no modules into it)."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    config = PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=n_prefix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, config)
    embedding = peft_model.prompt_encoder["default"].embedding.weight
    if tuple(embedding.shape) != tuple(weight.shape):
        raise RuntimeError(f"peft prefix embedding has shape {tuple(embedding.shape)}, "
                           f"expected {tuple(weight.shape)}")
    with torch.no_grad():
        embedding.copy_(weight)
    peft_model.eval()
    return peft_model


def stored_keys_values(peft_model: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the prefix keys and values as peft hands them to the model:
    [(K_l (H_kv, n_S, d_head), V_l (H_kv, n_S, d_head)) for l in layers], in the base model's dtype
    (H_kv = H without grouped-query attention)."""
    with torch.no_grad():
        cache = peft_model.get_prompt(batch_size=1)
    return [(layer.keys[0].detach().clone(), layer.values[0].detach().clone()) for layer in cache.layers]


def random_prefix(loaded: LoadedModel, n_prefix: int, seed: int) -> torch.Tensor:
    """(n_S, 2 L H_kv d_head) float32, N(0, 1) entries (peft's default nn.Embedding init), seeded."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(prefix_shape(loaded, n_prefix), generator=generator, dtype=torch.float32)


@dataclass(frozen=True)
class TrainingConfig:
    """The small training task of the trained prefix (see the module docstring)."""

    n_prefix: int = 4
    steps: int = 200
    batch_size: int = 4
    learning_rate: float = 1e-2
    max_tokens: int = 12  # train on the sentences of at most this many tokens
    init_std: float = 1.0  # N(0, init_std^2) start, as the random prefix


def _pooled_logits(peft_model: Any, head: nn.Linear, batch: Batch) -> torch.Tensor:
    """Mean of the final hidden states over real tokens, through the head: (B, 2)."""
    out = peft_model(input_ids=batch.ids, attention_mask=batch.mask)
    hidden = out.last_hidden_state  # (B, p, D)
    mask = batch.mask.unsqueeze(-1).to(hidden.dtype)  # (B, p, 1)
    pooled = (hidden * mask).sum(1) / mask.sum(1)  # (B, D)
    return head(pooled)


def _evaluate(peft_model: Any, head: nn.Linear, batches: list[Batch], labels: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        losses, correct, count = 0.0, 0, 0
        for batch in batches:
            logits = _pooled_logits(peft_model, head, batch)
            target = labels[list(batch.rows)]
            losses += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(1) == target).sum())
            count += len(batch.rows)
    return {"loss": losses / count, "accuracy": correct / count}


def train_prefix(loaded: LoadedModel, batches: list[Batch], labels: list[int], config: TrainingConfig,
                 seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Train a prefix on the sentiment task; return its embedding (n_S, 2 L H_kv d_head) and a record.

    ``batches`` (all sentences) are re-cut: the sentences of at most ``max_tokens`` tokens form
    the training set, sampled ``batch_size`` at a time (with a seeded generator) for ``steps``
    Adam steps. The record gives the loss and accuracy before and after, on the training
    sentences and on all sentences, and how far the prefix moved.
    """
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(prefix_shape(loaded, config.n_prefix), generator=generator) * config.init_std
    head = nn.Linear(loaded.d_model, 2)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) / loaded.d_model ** 0.5)
        head.bias.zero_()
    head.requires_grad_(False)
    y = torch.tensor(labels, dtype=torch.long)
    short = [(batch.ids[r, :int(batch.mask[r].sum())], i) for batch in batches for r, i in enumerate(batch.rows)
             if int(batch.mask[r].sum()) <= config.max_tokens]
    if len(short) < config.batch_size:
        raise RuntimeError(f"only {len(short)} sentences of <= {config.max_tokens} tokens to train on")
    peft_model = attach(loaded.model, config.n_prefix, start)
    embedding = peft_model.prompt_encoder["default"].embedding.weight
    embedding.requires_grad_(True)
    optimizer = torch.optim.Adam([embedding], lr=config.learning_rate)
    train_eval = _stack(short, loaded.pad_id)
    before_train = _evaluate(peft_model, head, [train_eval], y)
    before_all = _evaluate(peft_model, head, batches, y)
    clock = time.perf_counter()
    for _ in range(config.steps):
        pick = torch.randperm(len(short), generator=generator)[:config.batch_size].tolist()
        batch = _stack([short[k] for k in pick], loaded.pad_id)
        loss = nn.functional.cross_entropy(_pooled_logits(peft_model, head, batch), y[list(batch.rows)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - clock
    embedding.requires_grad_(False)
    trained = embedding.detach().clone()
    record = {
        "task": "sentiment of the hand-written sentences; mean-pooled final hidden state -> frozen "
                "random linear head (D -> 2); only the prefix is trained",
        "n_prefix": config.n_prefix, "steps": config.steps, "batch_size": config.batch_size,
        "optimizer": f"Adam lr {config.learning_rate:g}", "init": f"N(0, {config.init_std:g}^2)",
        "dtype": "float32", "train_sentences": len(short), "max_tokens": config.max_tokens,
        "before": {"train": before_train, "all": before_all},
        "after": {"train": _evaluate(peft_model, head, [train_eval], y),
                  "all": _evaluate(peft_model, head, batches, y)},
        "prefix_change_rms": float((trained - start).pow(2).mean().sqrt()),
        "seconds": round(seconds, 2),
    }
    return trained, record


def _stack(items: list[tuple[torch.Tensor, int]], pad_id: int) -> Batch:
    """(token ids (n,), sentence index) pairs -> one right-padded batch."""
    p = max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), p), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), p), dtype=torch.long)
    for row, (tokens, _) in enumerate(items):
        ids[row, :len(tokens)] = tokens
        mask[row, :len(tokens)] = 1
    return Batch(ids, mask, tuple(i for _, i in items))
