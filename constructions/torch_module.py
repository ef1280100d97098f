"""The same transformer as a torch ``nn.Module``, built from a :class:`TransformerSpec`.

Parameters are float64 copies of the spec's arrays under the spec's names (``blocks.0.attn.W_Q``
...), so ``module.state_dict()`` and :meth:`TransformerSpec.named_arrays` line up one to one.
The equations are those of :mod:`constructions.spec`; a parity test holds this module and the
numpy forward to 1e-12 in float64.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from constructions.spec import TransformerSpec


class AttentionLayer(nn.Module):
    def __init__(self, spec_attention, attention_scale: float, causal: bool) -> None:
        super().__init__()
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
            value = torch.from_numpy(np.array(getattr(spec_attention, name)))
            self.register_parameter(name, nn.Parameter(value))
        self.attention_scale = attention_scale
        self.causal = causal

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, n, d) -> (attention output (B, n, d), pattern (B, H, n, n))."""
        n = x.shape[1]
        q = torch.einsum("bnd,hde->bhne", x, self.W_Q) + self.b_Q[:, None, :]  # (B, H, n, e)
        k = torch.einsum("bnd,hde->bhne", x, self.W_K) + self.b_K[:, None, :]  # (B, H, n, e)
        v = torch.einsum("bnd,hde->bhne", x, self.W_V) + self.b_V[:, None, :]  # (B, H, n, e_v)
        scores = self.attention_scale * (q @ k.transpose(-1, -2))  # (B, H, n, n)
        if self.causal:
            allowed = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            scores = scores.masked_fill(~allowed, float("-inf"))
        pattern = torch.softmax(scores, dim=-1)  # log-sum-exp inside torch.softmax
        mixed = pattern @ v  # (B, H, n, e_v)
        out = torch.einsum("bhne,hed->bnd", mixed, self.W_O) + self.b_O
        return out, pattern


class MLPLayer(nn.Module):
    def __init__(self, spec_mlp) -> None:
        super().__init__()
        for name in ("W_in", "b_in", "W_out", "b_out"):
            self.register_parameter(name, nn.Parameter(torch.from_numpy(np.array(getattr(spec_mlp, name)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_in + self.b_in) @ self.W_out + self.b_out


class TransformerBlock(nn.Module):
    def __init__(self, block, attention_scale: float, causal: bool) -> None:
        super().__init__()
        self.attn = AttentionLayer(block.attention, attention_scale, causal)
        self.mlp = MLPLayer(block.mlp) if block.mlp is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn.W_Q.shape[0]:
            x = x + self.attn(x)[0]
        if self.mlp is not None:
            x = x + self.mlp(x)
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
            TransformerBlock(block, spec.attention_scale, spec.causal) for block in spec.blocks
        )
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

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """inputs_embeds (B, n, d) -> logits (B, n, V)."""
        x = inputs_embeds + self.pos_embed.W_pos[: inputs_embeds.shape[1]]
        for block in self.blocks:
            x = block(x)
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
