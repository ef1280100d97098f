"""A spec from plain per-block weight dicts (the format of ``theorems.strategies.random_layer_weights``).

The stack has no token embedding to speak of: the Section 4 checks feed residual vectors
directly to :func:`constructions.forward.forward`. W_E, W_pos and W_U are identity-sized
placeholders of the right shapes (a vocabulary of d_model one-hot "tokens", zero positional
embeddings), so the spec is still a complete, exportable-shape model.
"""

from __future__ import annotations

import numpy as np

from constructions.spec import MLP, Attention, Block, Norm, TransformerSpec


def block_from_weights(d_model: int, weights: dict, where: str = "block") -> Block:
    """One pre-norm block: attention (with norm ln1) and, if W_in is present, an MLP (with ln2)."""
    attention = Attention.build(
        d_model, weights["W_Q"], weights["W_K"], weights["W_V"], weights["W_O"],
        weights.get("b_Q"), weights.get("b_K"), weights.get("b_V"), weights.get("b_O"), where=f"{where}.attn",
    )
    kind = weights.get("norm")

    def norm(name: str) -> Norm | None:
        if kind is None:
            return None
        return Norm.build(d_model, kind, weights[f"{name}_w"], weights[f"{name}_b"], where=f"{where}.{name}")

    mlp = None
    if "W_in" in weights:
        mlp = MLP.build(d_model, weights["W_in"], weights["W_out"], weights.get("b_in"), weights.get("b_out"),
                        where=f"{where}.mlp")
    return Block(attention, mlp, norm("ln1"), norm("ln2") if mlp is not None else None)


def spec_from_layers(
    layers: list[dict],
    causal: bool = True,
    rotary_base: float | None = None,
    attention_scale: float | None = None,
    n_ctx: int = 64,
) -> TransformerSpec:
    """Stack ``layers`` into a spec. attention_scale defaults to 1/sqrt(d_head) of the first block."""
    d_model = np.asarray(layers[0]["W_Q"]).shape[1]
    blocks = [block_from_weights(d_model, w, where=f"blocks[{i}]") for i, w in enumerate(layers)]
    scale = attention_scale if attention_scale is not None else 1 / np.sqrt(np.asarray(layers[0]["W_Q"]).shape[2])
    return TransformerSpec.build(np.eye(d_model), np.zeros((n_ctx, d_model)), blocks, np.eye(d_model),
                                 attention_scale=scale, causal=causal, rotary_base=rotary_base)
