"""The training experiments' GPT (``gpt.py``) as the project's one transformer spec, losslessly.

``gpt_to_spec(model)`` reads a :class:`verify.experiments.gpt.GPT` (any size, LoRA-wrapped or not)
and returns the :class:`constructions.spec.TransformerSpec` whose forward
(:func:`constructions.forward.forward`, then :func:`constructions.forward.logits`) computes the
same function as ``model.eval()``; :func:`export_gpt` adds the model's adapters (prefix or soft
prompt) in the form the spec represents them. ``tests/test_gpt_spec_export.py`` holds the two to
1e-12 in float64 on random-init and trained models. Weight mapping (torch ``nn.Linear`` stores
W (out, in) and computes y = x W^T + b; the spec uses row vectors, y = x W + b, TransformerLens
shapes; d = n_embd, H = n_head, e = d / H the head width, L = n_layer, V = vocab_size):

    W_E      = wte.weight                                   (V, d)
    W_pos    = wpe.weight                                   (block_size, d) = (n_ctx, d)
    block l, with C = c_attn.weight (3d, d), c = c_attn.bias (3d,), P = attn.c_proj.weight (d, d):
      W_Q[h] = C[      h e : (h+1) e, :]^T                  (d, e)     b_Q[h] = c[      h e : (h+1) e]
      W_K[h] = C[ d  + h e : d  + (h+1) e, :]^T             (d, e)     b_K[h] = c[ d  + h e : ...]
      W_V[h] = C[2d  + h e : 2d + (h+1) e, :]^T             (d, e)     b_V[h] = c[2d  + h e : ...]
      W_O[h] = P[:, h e : (h+1) e]^T                        (e, d)     b_O    = attn.c_proj.bias
               (gpt.py lays the heads' outputs side by side, y = [t_1 .. t_H] (B, T, d), then
                c_proj(y) = sum_h t_h P[:, h e:(h+1) e]^T + b: the spec's sum over heads)
      attention_scale = 1 / sqrt(e)                         (gpt.py: q k^T / sqrt(e))
      ln1 = ln_1 (LayerNorm w, b, eps), or none when ln_1 is nn.Identity (skip_layer_norm)
      ln2 = ln_2
      W_in  = mlp.c_fc.weight^T   (d, 4d)   b_in  = mlp.c_fc.bias      activation "gelu"
      W_out = mlp.c_proj.weight^T (4d, d)   b_out = mlp.c_proj.bias    (F.gelu: the exact erf form)
    ln_final = ln_f                                         (d,), eps as the module's (1e-5)
    W_U      = lm_head.weight^T                             (d, V)     b_U = lm_head.bias or 0

A LoRA-wrapped Linear (``gpt.LoRALinear``: y = x W^T + b + (alpha/r) x A^T B^T) is merged first,
W' = W + (alpha/r) B A (out, in), in float64: the same function, summed in another order.

Adapters (see gpt.py's docstring; n = n_S, the prefix length, T the input length):
  * prefix (L, n, d), both modes: block l's content queries attend to n extra keys and values
    K_s = LN1(s^(l)) W_K + b_K, V_s = LN1(s^(l)) W_V + b_V, with no positional embedding (in
    "replace" mode the prefix rows REPLACE wte + wpe in the attention input; in "prepend" mode they
    are memory rows): exactly :func:`constructions.prefix.prefix_from_vectors`, fed to the forward
    as :class:`constructions.forward.PrefixKV`. The mask is the same: every content query sees all
    n prefix keys and, causally, the content keys.
      "prepend": the content is idx at positions 0..T-1, x = W_E[idx] + W_pos[:T]; every output row
      is represented.
      "replace": the content is idx[:, n:] at positions n..T-1 (x = W_E[idx[:, n:]] + W_pos[n:T]),
      and only output rows n..T-1 are represented. Rows 0..n-1 hold the dummy tokens' residuals:
      no content row ever reads them (every layer replaces them in the attention input, and the
      MLPs act per row), the training loss ignores them (tasks.make_batch: y = IGNORE there), and
      they are not a forward pass of the spec, so the export leaves them out.
  * soft prompt (n, d): "replace": x^0 = [s_1..s_n; W_E[idx[:, n:]] + W_pos[n:T]] (the soft rows
    replace wte + wpe, so they carry no positional embedding), all T rows represented; "prepend":
    x^0 = [s; W_E[idx] + W_pos[:T]] (n + T <= block_size), its first n output rows dropped.
    (TransformerLens takes the "replace" form through ``hook_embed`` as virtual tokens
    s_k - W_pos[k] at positions 0..n-1, TL adding W_pos[k] back: one rounding per entry.)
  A model with both a prefix and a soft prompt is refused (no experiment trains both).

Dropout: the spec is the eval-mode function. Dropout layers (any rate) are identities in
``model.eval()``, which is the only mode in which gpt.py's forward is a deterministic function;
exporting a model that is in train() mode is fine, the export simply is its eval() function.

Refused with :class:`GPTExportError` naming the module: any module that is not one of gpt.py's
(a custom layer swapped in), a LayerNorm without the (d,) shape, or an attention width that H does
not divide.

Files: :func:`save_gpt` writes through :func:`constructions.io.export_spec` (``model.safetensors``,
``config.json`` with the GPT config and adapter mode, ``adapters.safetensors`` with the prefix or
soft prompt), :func:`load_gpt` reads it back; :func:`save_gpt_lens` writes the TransformerLens
export (:func:`constructions.lens.save_spec_lens`) for a model without a prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from constructions.errors import PromptproofError
from constructions.forward import PrefixKV, embed, forward, logits as spec_logits
from constructions.io import export_spec, load_exported_spec
from constructions.prefix import prefix_from_vectors
from constructions.spec import MLP, Attention, Block, Norm, TransformerSpec
from verify.experiments import gpt as gpt_module
from verify.experiments.gpt import GPT, LoRALinear

ADAPTERS_FILE = "adapters.safetensors"
EXPORT_NAME = "promptproof-gpt"
# The modules gpt.py builds. Anything else in the tree has no counterpart in the spec.
SUPPORTED_MODULES: tuple[type, ...] = (
    GPT, gpt_module.Block, gpt_module.CausalSelfAttention, gpt_module.MLP, LoRALinear,
    nn.Linear, nn.Embedding, nn.LayerNorm, nn.Identity, nn.Dropout, nn.ModuleList,
)


class GPTExportError(PromptproofError):
    """The model has a part the spec cannot express exactly; the message names it."""


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


def _check_modules(model: nn.Module) -> None:
    if not isinstance(model, GPT):
        raise GPTExportError(f"expected a verify.experiments.gpt.GPT, got {type(model).__name__}")
    for name, module in model.named_modules():
        if type(module) not in SUPPORTED_MODULES:
            supported = ", ".join(t.__name__ for t in SUPPORTED_MODULES)
            raise GPTExportError(f"module {name or '<root>'!r} of type {type(module).__name__} has no "
                                 f"counterpart in the transformer spec (supported: {supported})")


def linear_weights(module: nn.Module, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The function x -> x W^T + b of a Linear, LoRA merged: (W (out, in), b (out,) or None), float64.
    LoRALinear: W = W_base + (alpha / r) B A, with B (out, r), A (r, in); nested wrappers merge in turn."""
    if isinstance(module, LoRALinear):
        weight, bias = linear_weights(module.base, f"{where}.base")
        return weight + module.scale * (_array(module.lora_B) @ _array(module.lora_A)), bias
    if type(module) is not nn.Linear:
        raise GPTExportError(f"{where}: expected nn.Linear or LoRALinear, got {type(module).__name__}")
    return _array(module.weight), None if module.bias is None else _array(module.bias)


def layer_norm(module: nn.Module, d: int, where: str) -> Norm | None:
    """nn.LayerNorm -> Norm("layernorm", w, b, eps); nn.Identity -> None (no norm)."""
    if isinstance(module, nn.Identity):
        return None
    if type(module) is not nn.LayerNorm or tuple(module.normalized_shape) != (d,):
        raise GPTExportError(f"{where}: expected nn.LayerNorm over the last axis of width {d} or nn.Identity, "
                             f"got {module!r}")
    w = np.ones(d) if module.weight is None else _array(module.weight)
    b = np.zeros(d) if module.bias is None else _array(module.bias)
    return Norm.build(d, "layernorm", w, b, module.eps, where=where)


def gpt_to_spec(model: GPT) -> TransformerSpec:
    """The spec of ``model``'s weights (adapters aside: see :func:`export_gpt`); the module
    docstring states the mapping. GPTExportError names an unsupported module."""
    _check_modules(model)
    d, H = model.config.n_embd, model.config.n_head
    if d % H:
        raise GPTExportError(f"n_embd {d} is not a multiple of n_head {H}")
    e = d // H
    blocks = []
    for index, block in enumerate(model.blocks):
        where = f"blocks.{index}"
        C, c = linear_weights(block.attn.c_attn, f"{where}.attn.c_attn")  # (3d, d), (3d,)
        P, p = linear_weights(block.attn.c_proj, f"{where}.attn.c_proj")  # (d, d), (d,)
        c = np.zeros(3 * d) if c is None else c
        heads = lambda rows: rows.reshape(H, e, d).transpose(0, 2, 1)  # noqa: E731  (H e, d) -> (H, d, e)
        attention = Attention.build(
            d,
            W_Q=heads(C[:d]), W_K=heads(C[d:2 * d]), W_V=heads(C[2 * d:]),  # each (H, d, e)
            W_O=P.T.reshape(H, e, d),  # (H, e, d): rows h e..(h+1) e of P^T
            b_Q=c[:d].reshape(H, e), b_K=c[d:2 * d].reshape(H, e), b_V=c[2 * d:].reshape(H, e),  # (H, e)
            b_O=p, where=f"{where}.attn",
        )
        W_fc, b_fc = linear_weights(block.mlp.c_fc, f"{where}.mlp.c_fc")  # (4d, d), (4d,)
        W_pr, b_pr = linear_weights(block.mlp.c_proj, f"{where}.mlp.c_proj")  # (d, 4d), (d,)
        mlp = MLP.build(d, W_fc.T, W_pr.T, b_fc, b_pr, where=f"{where}.mlp", activation="gelu")
        blocks.append(Block(attention, mlp, layer_norm(block.ln_1, d, f"{where}.ln_1"),
                            layer_norm(block.ln_2, d, f"{where}.ln_2")))
    W_head, b_head = linear_weights(model.lm_head, "lm_head")  # (V, d), (V,) or None
    return TransformerSpec.build(
        _array(model.wte.weight), _array(model.wpe.weight), blocks, W_head.T, b_head,
        attention_scale=1.0 / math.sqrt(e), causal=True, ln_final=layer_norm(model.ln_f, d, "ln_f"),
    )


@dataclass(frozen=True)
class ExportedGPT:
    """A GPT on the one forward pass: its spec plus its adapter (module docstring)."""

    spec: TransformerSpec
    prefix_mode: str  # "replace" | "prepend" (gpt.GPTConfig.prefix_mode)
    prefix: np.ndarray | None = None  # (L, n_S, d): block l's prefix vectors s^(l)
    soft_prompt: np.ndarray | None = None  # (n_S, d)

    @property
    def n_prefix(self) -> int:
        for adapter in (self.prefix, self.soft_prompt):
            if adapter is not None:
                return adapter.shape[-2]
        return 0

    def prefix_kv(self) -> list[PrefixKV] | None:
        """Per block, the prefix keys (H, n_S, e) and values (H, n_S, e) the content attends to."""
        if self.prefix is None:
            return None
        return [prefix_from_vectors(self.spec, layer, s) for layer, s in enumerate(self.prefix)]

    def represented_rows(self, length: int) -> slice:
        """The rows of ``GPT.forward``'s (B, T, V) output that :meth:`logits` returns."""
        replaced = self.prefix is not None and self.prefix_mode == "replace"
        return slice(self.n_prefix if replaced else 0, length)

    def inputs(self, idx: np.ndarray) -> np.ndarray:
        """x^0 (B, m, d) as the GPT builds it for token ids idx (B, T) (module docstring)."""
        idx = np.asarray(idx)
        n, T = self.n_prefix, idx.shape[1]
        if self.n_prefix and self.prefix_mode == "replace" and T <= n:
            raise PromptproofError(f"input of length {T} leaves no content after the {n} prefix positions")
        x = embed(self.spec, idx)  # (B, T, d) = W_E[idx] + W_pos[:T]
        if self.soft_prompt is not None:
            soft = np.broadcast_to(self.soft_prompt, (len(idx), *self.soft_prompt.shape))  # (B, n, d)
            if self.prefix_mode == "replace":
                return np.concatenate([soft, x[:, n:]], axis=1)  # (B, T, d)
            if n + T > self.spec.n_ctx:
                raise PromptproofError(f"{n} soft-prompt rows + {T} tokens exceed the context size {self.spec.n_ctx}")
            return np.concatenate([soft, x], axis=1)  # (B, n + T, d)
        if self.prefix is not None and self.prefix_mode == "replace":
            return x[:, n:]  # (B, T - n, d): content at positions n..T-1
        return x

    def residual(self, idx: np.ndarray, cache: dict | None = None) -> np.ndarray:
        """The final residual stream (before ln_final) of the represented rows, (B, rows, d)."""
        out = forward(self.spec, self.inputs(idx), cache=cache, prefix=self.prefix_kv())
        if self.soft_prompt is not None and self.prefix_mode == "prepend":
            out = out[:, self.n_prefix:]
        return out

    def logits(self, idx: np.ndarray, cache: dict | None = None) -> np.ndarray:
        """``model.eval()(idx)[:, represented_rows(T)]`` on the spec's forward pass, (B, rows, V)."""
        return spec_logits(self.spec, self.residual(idx, cache))

    def attention_patterns(self, idx: np.ndarray) -> list[np.ndarray]:
        """Per block, the attention pattern of the spec's forward (B, H, q, k), laid out as
        ``GPT.attention_patterns``: (B, H, T, T), (B, H, n_S + T, n_S + T) for a "prepend" soft
        prompt, (B, H, T, n_S + T) for a "prepend" prefix; a "replace" prefix gives the content
        query rows n_S..T-1 of gpt.py's (B, H, T, T), i.e. (B, H, T - n_S, T)."""
        cache: dict = {}
        forward(self.spec, self.inputs(idx), cache=cache, prefix=self.prefix_kv())
        return [cache[f"blocks.{layer}.attn.pattern"] for layer in range(self.spec.n_layers)]

    def virtual_tokens(self) -> tuple[np.ndarray, tuple[int, ...]]:
        """A "replace" soft prompt as the spec's virtual tokens: (s_k - W_pos[k] (n, d), positions
        0..n-1), for :func:`constructions.forward.embed` or TransformerLens's hook_embed, which add
        W_pos[k] back (one rounding per entry)."""
        if self.soft_prompt is None or self.prefix_mode != "replace" or self.prefix is not None:
            raise PromptproofError("only a 'replace' soft prompt (and no prefix) is a set of virtual tokens")
        n = self.n_prefix
        return self.soft_prompt - self.spec.W_pos[:n], tuple(range(n))


def export_gpt(model: GPT) -> ExportedGPT:
    """``model`` (its eval() function) as a spec plus its prefix or soft prompt."""
    spec = gpt_to_spec(model)
    prefix = None if model.prefix is None else _array(model.prefix)  # (L, n_S, d)
    soft = None if model.soft_prompt is None else _array(model.soft_prompt)  # (n_S, d)
    if prefix is not None and soft is not None:
        raise GPTExportError("a model with both a prefix and a soft prompt is not supported")
    if prefix is not None and prefix.shape != (spec.n_layers, prefix.shape[1], spec.d_model):
        raise GPTExportError(f"prefix: expected shape (n_layer, n_S, n_embd), got {prefix.shape}")
    return ExportedGPT(spec, model.config.prefix_mode, prefix, soft)


@torch.no_grad()
def gpt_logits(model: GPT, idx: np.ndarray) -> np.ndarray:
    """gpt.py's own logits in eval() mode (B, T, V) as numpy; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        return _array(model(torch.as_tensor(np.asarray(idx, dtype=np.int64))))
    finally:
        model.train(was_training)


def _source(model: GPT, exported: ExportedGPT) -> dict[str, Any]:
    lora = sorted(name for name, m in model.named_modules() if isinstance(m, LoRALinear))
    return {"model": "verify.experiments.gpt.GPT", "gpt_config": model.config.to_json(),
            "prefix_mode": exported.prefix_mode, "n_prefix": exported.n_prefix,
            "adapter": "prefix" if exported.prefix is not None else
                       "soft_prompt" if exported.soft_prompt is not None else None,
            "lora_merged": lora}


def save_gpt(model: GPT, out: Path, provenance: dict[str, Any] | None = None) -> list[Path]:
    """Write ``model`` as a spec export (:func:`constructions.io.export_spec`), all or nothing;
    ``provenance`` (e.g. the training run a trained model comes from) goes into config.json's source."""
    exported = export_gpt(model)
    tensors = {}
    if exported.prefix is not None:
        tensors[ADAPTERS_FILE] = {"prefix": exported.prefix}
    elif exported.soft_prompt is not None:
        tensors[ADAPTERS_FILE] = {"soft_prompt": exported.soft_prompt}
    return export_spec(exported.spec, out, EXPORT_NAME, {**_source(model, exported), **(provenance or {})}, tensors)


def load_gpt(directory: Path) -> ExportedGPT:
    """Reload a :func:`save_gpt` directory (the spec validated again); ExportError on bad files."""
    spec, config, tensors = load_exported_spec(directory)
    adapters = tensors.get(ADAPTERS_FILE, {})
    mode = config.get("source", {}).get("prefix_mode", "replace")
    return ExportedGPT(spec, mode, adapters.get("prefix"), adapters.get("soft_prompt"))


def save_gpt_lens(model: GPT, out: Path, tokens: np.ndarray,
                  provenance: dict[str, Any] | None = None) -> tuple[list[Path], float]:
    """Write ``model`` as a TransformerLens export (:func:`constructions.lens.save_spec_lens`),
    after checking TL's logits against the spec's on ``tokens`` (B, T) to 1e-10. A "replace" soft
    prompt goes in as virtual tokens (hook_embed); a prefix (per-layer keys and values) and a
    "prepend" soft prompt (content positions that differ from sequence positions) cannot be fed to
    TL's forward and are refused. Returns the written paths and the measured difference."""
    from constructions.lens import LensExportError, save_spec_lens

    exported = export_gpt(model)
    if exported.prefix is not None:
        raise LensExportError("a prefix (per-layer keys and values in front of the content's) cannot be fed to "
                              "TransformerLens's forward; export the spec (save_gpt) instead")
    virtual, positions = (None, ())
    if exported.soft_prompt is not None:
        if exported.prefix_mode != "replace":
            raise LensExportError("a 'prepend' soft prompt runs content at positions other than its sequence "
                                  "positions, which TransformerLens's forward cannot express")
        virtual, positions = exported.virtual_tokens()
    return save_spec_lens(exported.spec, out, tokens, EXPORT_NAME, {**_source(model, exported), **(provenance or {})},
                          virtual, positions)
