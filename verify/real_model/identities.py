"""The Section 4 identities at layer 0 of a real model, measured on every head.

Notation per head h (dropped below), sentence b, real (non-pad) query i and real content key j;
n_S prefix positions s_1..s_nS with stored keys/values (peft: post-projection, see prefixes.py):

  A^pt  (p, n_S + p)  attention of the prefix run;   A (p, p) of the reference run (no prefix)
  alpha_i = sum_k A^pt_{i,s_k}                        attention mass on the prefix
  t^pt_i, t_i         head context vectors (before W_O) of the two runs
  v_k                 the prefix's stored value for this head (this is the theory's W_V s_k + b_V);
                      with grouped-query attention (H_kv < H K/V heads) the value of K/V head
                      g(h) = h // (H / H_kv), the one HF's repeat_kv gives query head h

  content scaling   A^pt_{i,n_S+j} = (1 - alpha_i) A_ij
  output bias       t^pt_i = (1 - alpha_i) t_i + sum_k A^pt_{i,s_k} v_k
                          = (1 - alpha_i) t_i + alpha_i sum_k beta_ik v_k,  beta_ik = A^pt_{i,s_k} / alpha_i
                    (beta_i in the simplex: the bias is a convex combination of the n_S values;
                    n_S = 1: the fixed direction v_1)
  multi-head        W_O [t^pt,1_i; ...; t^pt,H_i] + b_O = b_O + sum_h W_O^h ((1 - alpha^h_i) t^h_i
                    + sum_k A^pt,h_{i,s_k} v^h_k): the total bias sum_h sum_k A^pt,h_{i,s_k} W_O^h v^h_k
                    lies in the span of the H n_S vectors W_O^h v^h_k (ambiguity 4: not one direction)

The reference run uses the SAME position ids as the prefix run (the libraries number the content
positions after the cached prefix, see loading.py); with the clean theory's positions 0..p-1 the
layer-0 inputs differ and the identities fail (a control).

Every function returns plain floats; "worst" is the max absolute deviation over every head,
sentence, real query (and real key).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from verify.real_model.capture import Capture
from verify.real_model.loading import Batch


def masked_max(values: torch.Tensor, mask: torch.Tensor) -> float:
    """max of |values| where ``mask`` (broadcastable, bool) is true; 0.0 for an empty mask."""
    selected = values.abs().masked_select(mask.expand_as(values))
    return float(selected.max()) if selected.numel() else 0.0


def query_mask(batch: Batch) -> torch.Tensor:
    """(B, 1, p, 1) bool: real queries."""
    return batch.mask.bool()[:, None, :, None]


def key_mask(batch: Batch) -> torch.Tensor:
    """(B, 1, 1, p) bool: real content keys."""
    return batch.mask.bool()[:, None, None, :]


def query_head_groups(n_heads: int, n_kv_heads: int) -> torch.Tensor:
    """(H,) long: the K/V head g(h) = h // (H / H_kv) that query head h reads (HF's repeat_kv)."""
    return torch.arange(n_heads) // (n_heads // n_kv_heads)


def wrong_head_groups(n_heads: int, n_kv_heads: int) -> torch.Tensor | None:
    """(H,) long: a mapping that differs from query_head_groups for some head, or None if none does.

    1 < H_kv < H: the interleaved h mod H_kv; H_kv = H >= 2: the next head (h + 1) mod H;
    H_kv = 1 (every head shares one K/V head): None.
    """
    if n_kv_heads == 1:
        return None
    heads = torch.arange(n_heads)
    return heads % n_kv_heads if n_kv_heads < n_heads else (heads + 1) % n_heads


@dataclass(frozen=True)
class Split:
    """The prefix run's attention of one layer split into its parts (shapes in comments)."""

    prefix_weights: torch.Tensor  # (B, H, p, n_S): A^pt_{i,s_k}
    alpha: torch.Tensor  # (B, H, p)
    content: torch.Tensor  # (B, H, p, p): A^pt_{i,n_S+j}


def split(attn: torch.Tensor, n_prefix: int) -> Split:
    prefix_weights = attn[..., :n_prefix]
    return Split(prefix_weights, prefix_weights.sum(-1), attn[..., n_prefix:])


def prefix_bias(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_k A^pt_{i,s_k} v_k: weights (B, H, p, n_S), values (H, n_S, d) -> (B, H, p, d)."""
    return torch.einsum("bhik,hkd->bhid", weights, values.to(weights.dtype))


def merge_heads(per_head: torch.Tensor) -> torch.Tensor:
    """(B, H, p, d) -> (B, p, H d), the layout the output projection reads."""
    B, H, p, d = per_head.shape
    return per_head.transpose(1, 2).reshape(B, p, H * d)


@dataclass
class LayerZero:
    """Worst deviations of one prefix kind in one dtype, over all batches (see module docstring)."""

    content_scaling: float = 0.0
    output_bias: float = 0.0
    multi_head_output: float = 0.0
    embedding_vs_shifted_reference: float = 0.0
    pad_key_weight: float = 0.0
    future_key_weight: float = 0.0
    min_alpha: float = 1.0
    max_alpha: float = 0.0
    alpha_sum: float = 0.0
    alpha_count: int = 0
    # controls (deliberately wrong variants of the identities)
    no_scaling_factor: float = 0.0
    bias_dropped: float = 0.0
    unshifted_content_scaling: float = 0.0
    unshifted_output_bias: float = 0.0
    embedding_vs_unshifted_reference: float = 0.0
    uniform_prefix_weights: float = 0.0
    wrong_head_values: float | None = None  # the bias with the values of wrong_head_groups (None: no wrong map)


def measure_layer_zero(batches: list[Batch], runs: list[Capture], refs: list[Capture], unshifted: list[Capture],
                       values: torch.Tensor, out_proj: nn.Module, causal: bool,
                       wrong_values: torch.Tensor | None = None) -> tuple[LayerZero, np.ndarray]:
    """The layer-0 identities and their controls over all batches.

    ``values`` (H, n_S, d_head): the prefix's stored layer-0 values, per query head
    (``per_query_head``); ``wrong_values`` (H, n_S, d_head) or None: the same under a wrong
    head -> K/V head map (the wrong_head_values control). Returns the deviations and the stacked
    total output biases (N real queries, D) for the rank measurement.
    """
    r = LayerZero(wrong_head_values=None if wrong_values is None else 0.0)
    biases = []
    for batch, run, ref, flat in zip(batches, runs, refs, unshifted):
        n_s = run.n_prefix
        q, k = query_mask(batch), key_mask(batch)
        parts = split(run.attn[0], n_s)
        keep = (1 - parts.alpha)[..., None]  # (B, H, p, 1)
        A, A0 = ref.attn[0], flat.attn[0]  # (B, H, p, p)
        r.content_scaling = max(r.content_scaling, masked_max(parts.content - A * keep, q & k))
        r.no_scaling_factor = max(r.no_scaling_factor, masked_max(parts.content - A, q & k))
        r.unshifted_content_scaling = max(r.unshifted_content_scaling, masked_max(parts.content - A0 * keep, q & k))

        t_pt, t, t0 = run.context[0], ref.context[0], flat.context[0]  # (B, H, p, d)
        bias = prefix_bias(parts.prefix_weights, values)  # (B, H, p, d)
        predicted = keep * t + bias
        r.output_bias = max(r.output_bias, masked_max(t_pt - predicted, q))
        r.bias_dropped = max(r.bias_dropped, masked_max(t_pt - keep * t, q))
        r.unshifted_output_bias = max(r.unshifted_output_bias, masked_max(t_pt - (keep * t0 + bias), q))
        if wrong_values is not None:
            wrong = keep * t + prefix_bias(parts.prefix_weights, wrong_values)
            r.wrong_head_values = max(r.wrong_head_values or 0.0, masked_max(t_pt - wrong, q))
        if n_s > 1:
            uniform = parts.alpha[..., None] * values.to(t.dtype).mean(1)[None, :, None, :]
            r.uniform_prefix_weights = max(r.uniform_prefix_weights, masked_max(t_pt - (keep * t + uniform), q))

        with torch.no_grad():
            o_predicted = out_proj(merge_heads(predicted))  # (B, p, D)
            zero = out_proj(torch.zeros_like(merge_heads(bias)))  # b_O, broadcast (B, p, D)
            total_bias = out_proj(merge_heads(bias)) - zero  # sum_h W_O^h bias^h
        real = batch.mask.bool()  # (B, p)
        r.multi_head_output = max(r.multi_head_output, masked_max(run.out[0] - o_predicted, real[..., None]))
        biases.append(total_bias[real].double().numpy())

        emb_mask = real[..., None]
        r.embedding_vs_shifted_reference = max(r.embedding_vs_shifted_reference,
                                               masked_max(run.inputs[0] - ref.inputs[0], emb_mask))
        r.embedding_vs_unshifted_reference = max(r.embedding_vs_unshifted_reference,
                                                 masked_max(run.inputs[0] - flat.inputs[0], emb_mask))
        r.pad_key_weight = max(r.pad_key_weight, masked_max(parts.content, q & ~k))
        if causal:
            p = batch.ids.shape[1]
            future = torch.ones(p, p, dtype=torch.bool).triu(1)[None, None]
            r.future_key_weight = max(r.future_key_weight, masked_max(parts.content, q & future))
        alpha = parts.alpha.masked_select(q[..., 0].expand_as(parts.alpha))
        r.min_alpha = min(r.min_alpha, float(alpha.min()))
        r.max_alpha = max(r.max_alpha, float(alpha.max()))
        r.alpha_sum += float(alpha.sum())
        r.alpha_count += alpha.numel()
    return r, np.concatenate(biases)


def per_query_head(stored: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Stored (H_kv, n_S, d) -> (H, n_S, d): query head h gets the entries of K/V head groups[h]."""
    return stored[groups]


def numerical_rank(matrix: np.ndarray, relative: float) -> tuple[int, list[float]]:
    """Rank = number of singular values > ``relative`` x the largest; also the leading ratios."""
    singular = np.linalg.svd(matrix, compute_uv=False)
    if singular[0] == 0:
        return 0, []
    ratios = (singular / singular[0]).tolist()
    return int(np.sum(singular > relative * singular[0])), ratios
