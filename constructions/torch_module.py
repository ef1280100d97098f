"""The same transformer as a torch ``nn.Module``, built from a :class:`TransformerSpec`.

Parameters are float64 copies of the spec's arrays under the spec's names (``blocks.0.attn.W_Q``
...), so ``module.state_dict()`` and :meth:`TransformerSpec.named_arrays` line up one to one.
The equations are those of :mod:`constructions.spec` (norms, the final norm, GELU, RoPE and
per-block prefix keys/values included); a parity test holds this module and the numpy forward to 1e-12 in float64.

It is the spec for PyTorch users and, written with torch's own ops (layer_norm, softmax, its own
mask and rotation), an independent oracle for :func:`constructions.forward.forward`:
tests/test_spec_and_forward.py and ``verify.checks.petrov_sec4.torch_parity_error`` compare the two.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from constructions.forward import PrefixKV, rotary_angles
from constructions.spec import Norm, TransformerSpec


class NormLayer(nn.Module):
    """LayerNorm (x - mean)/sqrt(var + eps) * w + b, or RMSNorm x/sqrt(mean x^2 + eps) * w."""

    def __init__(self, norm: Norm) -> None:
        super().__init__()
        self.kind, self.eps = norm.kind, norm.eps
        self.w = nn.Parameter(torch.from_numpy(np.array(norm.w)))
        self.b = nn.Parameter(torch.from_numpy(np.array(norm.b)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layernorm":
            return torch.nn.functional.layer_norm(x, x.shape[-1:], self.w, self.b, self.eps)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w


def rotate(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """RoPE, "rotate half" layout, at ``positions`` (n,): x (B, H, n, e) -> (B, H, n, e)."""
    cos, sin = (torch.from_numpy(a).to(x) for a in rotary_angles(base, x.shape[-1], positions.cpu().numpy()))
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class AttentionLayer(nn.Module):
    def __init__(self, spec_attention, attention_scale: float, causal: bool,
                 rotary_base: float | None = None) -> None:
        super().__init__()
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
            value = torch.from_numpy(np.array(getattr(spec_attention, name)))
            self.register_parameter(name, nn.Parameter(value))
        self.attention_scale = attention_scale
        self.causal = causal
        self.rotary_base = rotary_base

    def forward(
        self, x: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, n, d) -> (attention output (B, n, d), pattern (B, H, n, n_S + n)).

        prefix: keys (H, n_S, e), values (H, n_S, e_v), prepended to every sequence's own."""
        batch, n = x.shape[:2]
        q = torch.einsum("bnd,hde->bhne", x, self.W_Q) + self.b_Q[:, None, :]  # (B, H, n, e)
        k = torch.einsum("bnd,hde->bhne", x, self.W_K) + self.b_K[:, None, :]  # (B, H, n, e)
        v = torch.einsum("bnd,hde->bhne", x, self.W_V) + self.b_V[:, None, :]  # (B, H, n, e_v)
        if self.rotary_base is not None:
            positions = torch.arange(n) if positions is None else positions
            q, k = rotate(q, positions, self.rotary_base), rotate(k, positions, self.rotary_base)
        n_prefix = 0
        if prefix is not None:
            keys, values = (p.to(x).expand(batch, *p.shape) for p in prefix)
            n_prefix = keys.shape[2]
            k, v = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)  # (B, H, n_S + n, .)
        scores = self.attention_scale * (q @ k.transpose(-1, -2))  # (B, H, n, n_S + n)
        if self.causal:
            allowed = torch.ones(n, n_prefix + n, dtype=torch.bool, device=x.device).tril(n_prefix)
            scores = scores.masked_fill(~allowed, float("-inf"))
        pattern = torch.softmax(scores, dim=-1)  # log-sum-exp inside torch.softmax
        mixed = pattern @ v  # (B, H, n, e_v)
        out = torch.einsum("bhne,hed->bnd", mixed, self.W_O) + self.b_O
        return out, pattern


class MLPLayer(nn.Module):
    """act(x W_in + b_in) W_out + b_out, act ReLU or the exact (erf) GELU."""

    def __init__(self, spec_mlp) -> None:
        super().__init__()
        for name in ("W_in", "b_in", "W_out", "b_out"):
            self.register_parameter(name, nn.Parameter(torch.from_numpy(np.array(getattr(spec_mlp, name)))))
        self.activation = spec_mlp.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = x @ self.W_in + self.b_in
        hidden = torch.relu(pre) if self.activation == "relu" else torch.nn.functional.gelu(pre)
        return hidden @ self.W_out + self.b_out


class TransformerBlock(nn.Module):
    def __init__(self, block, attention_scale: float, causal: bool, rotary_base: float | None = None) -> None:
        super().__init__()
        self.ln1 = NormLayer(block.ln1) if block.ln1 is not None else None
        self.attn = AttentionLayer(block.attention, attention_scale, causal, rotary_base)
        self.ln2 = NormLayer(block.ln2) if block.ln2 is not None else None
        self.mlp = MLPLayer(block.mlp) if block.mlp is not None else None

    def forward(self, x: torch.Tensor, prefix=None, positions: torch.Tensor | None = None) -> torch.Tensor:
        if self.attn.W_Q.shape[0]:
            h = x if self.ln1 is None else self.ln1(x)
            x = x + self.attn(h, prefix, positions)[0]
        if self.mlp is not None:
            x = x + self.mlp(x if self.ln2 is None else self.ln2(x))
        return x


class SpecTransformer(nn.Module):
    """Decoder-only transformer; ``forward`` takes input embeddings (B, n, d) before W_pos."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.embed = nn.Module()
        self.embed.W_E = nn.Parameter(torch.from_numpy(np.array(spec.W_E)))
        self.pos_embed = nn.Module()
        self.pos_embed.W_pos = nn.Parameter(torch.from_numpy(np.array(spec.W_pos)))
        self.blocks = nn.ModuleList(
            TransformerBlock(block, spec.attention_scale, spec.causal, spec.rotary_base) for block in spec.blocks
        )
        self.ln_final = NormLayer(spec.ln_final) if spec.ln_final is not None else None
        self.unembed = nn.Module()
        self.unembed.W_U = nn.Parameter(torch.from_numpy(np.array(spec.W_U)))
        self.unembed.b_U = nn.Parameter(torch.from_numpy(np.array(spec.b_U)))

    def embed_tokens(
        self, tokens: torch.Tensor, virtual_tokens: torch.Tensor | None = None, virtual_positions: tuple[int, ...] = ()
    ) -> torch.Tensor:
        """Token embeddings with virtual tokens put in place at ``virtual_positions``. -> (B, n, d)"""
        x = self.embed.W_E[tokens]
        if virtual_positions:
            x = x.clone()
            x[:, list(virtual_positions)] = virtual_tokens.to(x.dtype)
        return x

    def residual(
        self, x: torch.Tensor, prefix: list[PrefixKV | None] | None = None, positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The residual stream after every block, from embedded inputs x (B, n, d) (W_pos already
        added), with optional per-block prefix keys/values and RoPE positions (n,)."""
        for index, block in enumerate(self.blocks):
            item = None if prefix is None else prefix[index]
            kv = None if item is None else (torch.from_numpy(np.asarray(item.keys, dtype=np.float64)),
                                            torch.from_numpy(np.asarray(item.values, dtype=np.float64)))
            x = block(x, kv, positions)
        return x

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """inputs_embeds (B, n, d) -> logits (B, n, V)."""
        x = self.residual(inputs_embeds + self.pos_embed.W_pos[: inputs_embeds.shape[1]])
        if self.ln_final is not None:
            x = self.ln_final(x)
        return x @ self.unembed.W_U + self.unembed.b_U

    @torch.no_grad()
    def generate(
        self, tokens: torch.Tensor, steps: int, virtual_tokens: torch.Tensor | None = None,
        virtual_positions: tuple[int, ...] = (),
    ) -> torch.Tensor:
        """Greedy decoding with the virtual tokens held in place. -> (B, steps)"""
        generated = []
        for _ in range(steps):
            logits = self(self.embed_tokens(tokens, virtual_tokens, virtual_positions))
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            generated.append(nxt)
            tokens = torch.cat([tokens, nxt], dim=1)
        return torch.cat(generated, dim=1)
