"""One forward pass with hooks: what every layer's attention did.

For each layer l the capture holds
  inputs[l]    (B, p, D)            the hidden states the layer received (content positions only)
  attn[l]      (B, H, p, n_S + p)   the eager attention weights as the model returns them
                                    (``output_attentions=True``); the first n_S columns are the
                                    prefix positions (n_S = 0 without a prefix)
  context[l]   (B, H, p, d_head)    each head's context vector t = sum_j A_ij v_j, read at the input
                                    of the attention output projection (a forward pre-hook), i.e.
                                    before W_O, its bias, dropout and the residual
  out[l]       (B, p, D)            that projection's output, W_O [t^1; ...; t^H] + b_O

RoPE decoders (llama, qwen2, mistral) also record ``layer0_io`` (verify.real_model.decoders):
layer 0's query after RoPE (B, H, p, d), the key/value cache after the update (B, H_kv, n_S + p, d)
and the per-head attention output (B, H, p, d), read at the modeling module's eager attention
function (which, in float64, runs its softmax in float64; see decoders.py).

A run is either the peft model (prefix) or the base model (no prefix) with explicit
``position_ids``; ``patch`` replaces the input of every layer l by ``patch[l]`` (a forward
pre-hook), so one run gives, for every layer at once, what that layer does on given inputs.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from verify.real_model.loading import Batch, LoadedModel


@dataclass
class Capture:
    """Per-layer tensors of one run over one batch (shapes in the module docstring)."""

    inputs: list[torch.Tensor]
    attn: list[torch.Tensor]
    context: list[torch.Tensor]
    out: list[torch.Tensor]
    n_prefix: int
    layer0_io: Any = None  # decoders.AttentionIO for RoPE decoders, else None


def run(loaded: LoadedModel, model: nn.Module, batch: Batch, *, n_prefix: int = 0,
        position_ids: torch.Tensor | None = None, patch: list[torch.Tensor] | None = None,
        peft: Any = None) -> Capture:
    """Run ``peft`` (with its prefix) or ``model`` (no prefix) on ``batch`` and capture every layer.

    ``model`` is the base model whose modules carry the hooks (the peft model wraps the same
    object). ``position_ids`` (B, p) is passed to the base model only; peft computes its own.
    """
    layers = loaded.arch.layers(model)
    n_layers = len(layers)
    inputs: list[torch.Tensor | None] = [None] * n_layers
    context: list[torch.Tensor | None] = [None] * n_layers
    out: list[torch.Tensor | None] = [None] * n_layers
    handles = []

    def layer_pre_hook(index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            hidden = args[0] if args else kwargs["hidden_states"]
            if patch is not None:
                hidden = patch[index].to(hidden.dtype)
                if args:
                    args = (hidden, *args[1:])
                else:
                    kwargs = {**kwargs, "hidden_states": hidden}
            inputs[index] = hidden.detach().clone()
            return args, kwargs
        return hook

    def proj_hooks(index: int):
        def pre(module: nn.Module, args: tuple):
            merged = args[0].detach()  # (B, p, H * d_head)
            B, p, _ = merged.shape
            context[index] = merged.reshape(B, p, loaded.n_heads, loaded.d_head).transpose(1, 2).clone()

        def post(module: nn.Module, args: tuple, output: torch.Tensor):
            out[index] = output.detach().clone()
        return pre, post

    try:
        for index, layer in enumerate(layers):
            handles.append(layer.register_forward_pre_hook(layer_pre_hook(index), with_kwargs=True))
            pre, post = proj_hooks(index)
            proj = loaded.arch.out_proj(layer)
            handles.append(proj.register_forward_pre_hook(pre))
            handles.append(proj.register_forward_hook(post))
        record: dict[str, Any] = {}
        if loaded.arch.rope:
            from verify.real_model.decoders import eager_attention_spy

            spy: Any = eager_attention_spy(loaded, model, record)
        else:
            spy = nullcontext()
        with torch.no_grad(), spy:
            if peft is not None:
                result = peft(input_ids=batch.ids, attention_mask=batch.mask, output_attentions=True)
            else:
                result = model(input_ids=batch.ids, attention_mask=batch.mask, position_ids=position_ids,
                               output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    attn = list(result.attentions or ())
    if len(attn) != n_layers or any(a is None for a in attn):
        raise RuntimeError("the model returned no attention weights (not eager attention?)")
    missing = [i for i in range(n_layers) if inputs[i] is None or context[i] is None or out[i] is None]
    if missing:
        raise RuntimeError(f"hooks did not fire for layers {missing}")
    expected_keys = n_prefix + batch.ids.shape[1]
    if any(a.shape[-1] != expected_keys for a in attn):
        raise RuntimeError(f"attention has {attn[0].shape[-1]} key positions, expected {expected_keys}")
    if loaded.arch.rope and "layer0" not in record:
        raise RuntimeError("the eager attention function of layer 0 was not called (not eager attention?)")
    return Capture(inputs, [a.detach() for a in attn], context, out, n_prefix,  # type: ignore[arg-type]
                   record.get("layer0"))
