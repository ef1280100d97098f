"""RoPE decoders (Llama, Qwen2, Mistral) with grouped-query attention: the layer-0 identity per query head.

What transformers 5 + peft 0.21 do (read from their code, measured below on every run):

* peft (``PrefixTuningConfig``, FEATURE_EXTRACTION) sizes the prefix by the K/V heads: per layer
  it stores H_kv keys k_{g,k} and values v_{g,k} (g < H_kv, k < n_S, size d), and passes them as
  a ``DynamicCache`` in ``past_key_values``, with n_S ones prepended to the attention mask.
* The model numbers the content positions after the cache: position_ids = n_S, n_S + 1, ...
  (``arange(p) + cache.get_seq_length()``; peft passes none, and shifts user ones by n_S).
* Inside the attention, q_i = R(n_S + i) W_Q x_i (+ b_Q for Qwen2) and the content's
  k_j = R(n_S + j) W_K x_j (+ b_K) are rotated by RoPE at those positions; then
  ``cache.update`` appends the rotated content keys/values AFTER the stored prefix entries. The
  prefix keys are never rotated (they enter as cache entries, "already rotated").
* Eager attention repeats each K/V head for H / H_kv consecutive query heads (``repeat_kv``):
  query head h reads K/V head g(h) = h // (H / H_kv).

The statement checked (promptproof's formalization), per query head h of layer 0, real query i,
scale 1/sqrt(d), content keys j <= i that are not padding (causal mask):

    s_ik = q_i . k_{g(h),k} / sqrt d                 (k_{g,k} exactly as peft stores it)
    c_ij = q_i . K_{g(h),j} / sqrt d                 (K: the content keys rotated by HF at n_S + j)
    a_ik = exp(s_ik) / (sum_k' exp(s_ik') + sum_j exp(c_ij))
    t^pt_i = (1 - sum_k a_ik) t_i + sum_k a_ik v_{g(h),k}

where t_i = softmax_j(c_ij) V_{g(h),j} is the head output of the no-prefix run at the SHIFTED
position ids n_S + j (whose q and K are, bit for bit, those of the prefix run), and t^pt_i the
prefix run's head output. With n_S = 1 this is the brief's attn_pt(q) = (1 - a) attn(q; K, V) + a v_p.
Because RoPE scores depend on positions only through differences, c_ij is the same (up to the
rounding of the rotations) at the clean positions 0..p-1, but s_ik is not: it depends on the
query's absolute position n_S + i, since the stored keys carry no position of their own.

Controls (the same predictor with one wrong belief; each must deviate by >= CONTROL_MIN_ERROR):
  rotated_prefix_keys   the prefix keys rotated by RoPE as if they were tokens at 0..n_S-1
                        (n_S > 1 only: the rotation at position 0 is the identity)
  wrong_kv_group        query head h reads the prefix of K/V head h mod H_kv (the interleaved
                        layout) instead of h // (H / H_kv) (only when 1 < H_kv < H)
  unshifted_queries     q, K and t from the no-prefix run at the clean positions 0..p-1

Precision: HF's eager attention computes the softmax in float32 even for a float64 model
(``softmax(..., dtype=torch.float32).to(query.dtype)``), which caps a float64 run at float32
rounding (~1e-7). The capture therefore wraps the modeling module's ``eager_attention_forward``:
in float32 it calls the library function itself (unchanged); in float64 it runs the same steps
(the module's ``repeat_kv``, q K^T * scaling + mask, softmax, times V) with the softmax in
float64, and records how far the library's own float32 softmax would have been
(``library_softmax_deviation``). RoPE's cos/sin and RMSNorm are computed in float32 by HF in both
dtypes; they are identical in the compared runs, so they do not enter the identity.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from verify.real_model.identities import key_mask, masked_max, query_head_groups, query_mask
from verify.real_model.loading import Batch, LoadedModel


@dataclass
class AttentionIO:
    """Layer 0's attention of one run as the library computed it (shapes in comments)."""

    query: torch.Tensor  # (B, H, p, d) after RoPE
    keys: torch.Tensor  # (B, H_kv, n_S + p, d): the cache after update (prefix as stored, then rotated content)
    values: torch.Tensor  # (B, H_kv, n_S + p, d)
    output: torch.Tensor  # (B, H, p, d): per-head output before o_proj
    scaling: float
    library_softmax_deviation: float | None  # float64 runs: max |HF's float32-softmax output - output|


def _softmax_in_query_dtype(module: nn.Module, repeat_kv: Any, query: torch.Tensor, key: torch.Tensor,
                            value: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float,
                            dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's eager_attention_forward with the softmax in the query's dtype (float64 here).

    Not a second forward pass of the spec: the library's own attention function, copied with only
    the softmax dtype changed, so that the HF model under test runs in float64 (module docstring).

    query (B, H, p, d), key/value (B, H_kv, n_S + p, d), mask (B, 1, p, n_S + p) additive ->
    (output (B, p, H, d), weights (B, H, p, n_S + p)), the library's layout.
    """
    key_states = repeat_kv(key, module.num_key_value_groups)  # (B, H, n_S + p, d)
    value_states = repeat_kv(value, module.num_key_value_groups)
    weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value_states).transpose(1, 2).contiguous()
    return output, weights


@contextmanager
def eager_attention_spy(loaded: LoadedModel, model: nn.Module, record: dict[str, AttentionIO]) -> Iterator[None]:
    """Wrap the modeling module's ``eager_attention_forward`` for one forward pass of ``model``.

    Every layer runs through the wrapper (float32: the library function; float64: the float64
    softmax, see the module docstring); layer 0's inputs and output go to ``record["layer0"]``.
    """
    module = importlib.import_module(str(loaded.arch.modeling_module))
    original = module.eager_attention_forward
    target = loaded.arch.layers(model)[0].self_attn

    def wrapper(attn: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **kwargs: Any):
        deviation = None
        if query.dtype == torch.float64:
            output, weights = _softmax_in_query_dtype(attn, module.repeat_kv, query, key, value, attention_mask,
                                                      scaling, dropout, **kwargs)
            if attn is target:
                library, _ = original(attn, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
                deviation = float((library - output).abs().max())
        else:
            output, weights = original(attn, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                       **kwargs)
        if attn is target:
            record["layer0"] = AttentionIO(query.detach().clone(), key.detach().clone(), value.detach().clone(),
                                           output.detach().transpose(1, 2).clone(), float(scaling), deviation)
        return output, weights

    module.eager_attention_forward = wrapper
    try:
        yield
    finally:
        module.eager_attention_forward = original


def predict(query: torch.Tensor, prefix_keys: torch.Tensor, prefix_values: torch.Tensor, keys: torch.Tensor,
            reference_output: torch.Tensor, groups: torch.Tensor, prefix_groups: torch.Tensor,
            visible: torch.Tensor, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The statement's right-hand side, in float64.

    query (B, H, p, d); prefix_keys/values (H_kv, n_S, d); keys (B, H_kv, p, d) content keys;
    reference_output (B, H, p, d) = t; groups / prefix_groups (H,) the K/V head of each query head
    for the content / the prefix; visible (B, 1, p, p) bool. Returns (t^pt predicted (B, H, p, d),
    a (B, H, p, n_S)).
    """
    q = query.double()
    kp, vp = prefix_keys.double()[prefix_groups], prefix_values.double()[prefix_groups]  # (H, n_S, d)
    k = keys.double()[:, groups]  # (B, H, p, d)
    s = torch.einsum("bhid,hkd->bhik", q, kp) * scaling  # (B, H, p, n_S)
    c = (torch.einsum("bhid,bhjd->bhij", q, k) * scaling).masked_fill(~visible, float("-inf"))  # (B, H, p, p)
    lse = torch.logsumexp(torch.cat([s, c], dim=-1), dim=-1, keepdim=True)  # (B, H, p, 1)
    a = torch.exp(s - lse)  # (B, H, p, n_S)
    alpha = a.sum(-1, keepdim=True)
    return (1 - alpha) * reference_output.double() + torch.einsum("bhik,hkd->bhid", a, vp), a


@dataclass
class RopeGqa:
    """Worst deviations of one prefix kind in one dtype (module docstring); per_head indexed by h."""

    identity: float = 0.0  # |t^pt - predicted|, over every query head, sentence, real query
    identity_per_head: list[float] = field(default_factory=list)
    alpha_from_logits: float = 0.0  # |sum_k a_ik - alpha_i measured from the returned weights|
    prefix_cache_as_stored: float = 0.0  # |cache[:, :, :n_S] - stored k, v| (0: not rotated, not copied wrong)
    content_vs_shifted_reference: float = 0.0  # |q, content k, v of the prefix run - the shifted reference's|
    content_keys_vs_unshifted_reference: float = 0.0  # informational: keys rotated at n_S + j vs j
    library_softmax_deviation: float | None = None  # float64: HF's float32 softmax vs the float64 one
    # controls
    rotated_prefix_keys: float | None = None
    wrong_kv_group: float | None = None
    unshifted_queries: float = 0.0
    unshifted_content_scaling: float = 0.0  # |A^pt_content - (1 - alpha^flat) A^flat| (the sec6 control)


def _rotate(loaded: LoadedModel, model: nn.Module, keys: torch.Tensor) -> torch.Tensor:
    """keys (H_kv, n_S, d) rotated by the model's own RoPE at positions 0..n_S-1."""
    module = importlib.import_module(str(loaded.arch.modeling_module))
    x = keys.unsqueeze(0)  # (1, H_kv, n_S, d)
    cos, sin = model.rotary_emb(x, torch.arange(keys.shape[1])[None])  # (1, n_S, d) each
    _, rotated = module.apply_rotary_pos_emb(x, x, cos, sin)
    return rotated[0]


def measure(loaded: LoadedModel, model: nn.Module, batches: list[Batch], runs: list[Any], refs: list[Any],
            flat: list[Any], stored_keys: torch.Tensor, stored_values: torch.Tensor) -> RopeGqa:
    """The statement and its controls over all batches (captures from verify.real_model.capture).

    ``runs``: the peft runs; ``refs``: no prefix at position ids n_S + j; ``flat``: no prefix at
    0..p-1; stored_keys / stored_values (H_kv, n_S, d): the prefix of layer 0 as peft stores it.
    """
    H, H_kv = loaded.n_heads, loaded.n_kv_heads
    groups = query_head_groups(H, H_kv)
    wrong = torch.arange(H) % H_kv if 1 < H_kv < H else None  # the interleaved layout (differs at h = 1)
    rotated = _rotate(loaded, model, stored_keys) if stored_keys.shape[1] > 1 else None
    r = RopeGqa(identity_per_head=[0.0] * H, rotated_prefix_keys=0.0 if rotated is not None else None,
                wrong_kv_group=0.0 if wrong is not None else None)
    for batch, run, ref, base in zip(batches, runs, refs, flat):
        io, io_ref, io_flat = run.layer0_io, ref.layer0_io, base.layer0_io
        n_s = run.n_prefix
        p = batch.ids.shape[1]
        q_mask = query_mask(batch)  # (B, 1, p, 1)
        visible = key_mask(batch) & torch.ones(p, p, dtype=torch.bool).tril()[None, None]  # (B, 1, p, p)
        keys = io.keys[:, :, n_s:]  # (B, H_kv, p, d) the content keys as the prefix run rotated them
        predicted, a = predict(io.query, stored_keys, stored_values, keys, io_ref.output, groups, groups,
                               visible, io.scaling)
        deviation = (io.output.double() - predicted).abs()  # (B, H, p, d)
        r.identity = max(r.identity, masked_max(deviation, q_mask))
        for h in range(H):
            r.identity_per_head[h] = max(r.identity_per_head[h], masked_max(deviation[:, h:h + 1], q_mask))
        alpha = run.attn[0][..., :n_s].sum(-1, keepdim=True).double()  # (B, H, p, 1)
        r.alpha_from_logits = max(r.alpha_from_logits, masked_max(alpha - a.sum(-1, keepdim=True), q_mask))
        r.prefix_cache_as_stored = max(r.prefix_cache_as_stored,
                                       float((io.keys[:, :, :n_s] - stored_keys[None]).abs().max()),
                                       float((io.values[:, :, :n_s] - stored_values[None]).abs().max()))
        r.content_vs_shifted_reference = max(r.content_vs_shifted_reference,
                                             float((io.query - io_ref.query).abs().max()),
                                             float((keys - io_ref.keys).abs().max()),
                                             float((io.values[:, :, n_s:] - io_ref.values).abs().max()))
        r.content_keys_vs_unshifted_reference = max(r.content_keys_vs_unshifted_reference,
                                                    float((keys - io_flat.keys).abs().max()))
        if io.library_softmax_deviation is not None:
            r.library_softmax_deviation = max(r.library_softmax_deviation or 0.0, io.library_softmax_deviation)

        observed = io.output.double()
        if rotated is not None:
            wrong_rot, _ = predict(io.query, rotated, stored_values, keys, io_ref.output, groups, groups, visible,
                                   io.scaling)
            r.rotated_prefix_keys = max(r.rotated_prefix_keys or 0.0, masked_max(observed - wrong_rot, q_mask))
        if wrong is not None:
            wrong_group, _ = predict(io.query, stored_keys, stored_values, keys, io_ref.output, groups, wrong,
                                     visible, io.scaling)
            r.wrong_kv_group = max(r.wrong_kv_group or 0.0, masked_max(observed - wrong_group, q_mask))
        unshifted, a_flat = predict(io_flat.query, stored_keys, stored_values, io_flat.keys, io_flat.output,
                                    groups, groups, visible, io.scaling)
        r.unshifted_queries = max(r.unshifted_queries, masked_max(observed - unshifted, q_mask))
        content = run.attn[0][..., n_s:].double()  # (B, H, p, p)
        scaled = content - (1 - a_flat.sum(-1, keepdim=True)) * base.attn[0].double()
        r.unshifted_content_scaling = max(r.unshifted_content_scaling, masked_max(scaled, q_mask & key_mask(batch)))
    return r
