"""Context-based fine-tuning of a spec: soft prompts and prefixes, in the paper's two forms.

Soft prompting prepends n_S vectors s_1..s_nS to the input embeddings; they run through every
block like tokens (positions 0..n_S-1, content at n_S..n_S+n-1).

Prefix-tuning (Li & Liang 2021, as Petrov et al. formalize it) gives each block l its own
prefix vectors s^l_k, which replace the attention INPUT at the prefix positions: block l's
prefix keys and values are

    k^h_k = Rot_{p_k}( N1(s^l_k) W_K[h] + b_K[h] ),    v^h_k = N1(s^l_k) W_V[h] + b_V[h],

with p_k = k - 1 (positions 0..n_S-1). Libraries such as HF peft store these keys and values
directly (post-projection); :class:`constructions.forward.PrefixKV` is that form.
"""

from __future__ import annotations

import numpy as np

from constructions.errors import PromptproofError
from constructions.forward import NUMPY, PrefixKV, forward, rotary_angles
from constructions.spec import TransformerSpec


def prefix_from_vectors(spec: TransformerSpec, layer: int, vectors: np.ndarray) -> PrefixKV:
    """Block ``layer``'s prefix keys/values from prefix vectors s (n_S, d), at positions 0..n_S-1.

    Keys (H, n_S, d_head), values (H, n_S, d_v): exactly what block ``layer`` computes for
    tokens s_1..s_nS at the start of a sequence.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[1] != spec.d_model:
        raise PromptproofError(f"prefix vectors: expected shape (n_S, {spec.d_model}), got {vectors.shape}")
    block = spec.blocks[layer]
    attn = block.attention
    h = vectors if block.ln1 is None else NUMPY.norm(vectors, block.ln1)  # (n_S, d)
    keys = np.einsum("nd,hde->hne", h, attn.W_K) + attn.b_K[:, None, :]  # (H, n_S, d_head)
    values = np.einsum("nd,hde->hne", h, attn.W_V) + attn.b_V[:, None, :]  # (H, n_S, d_v)
    if spec.rotary_base is not None:
        keys = NUMPY.rotate(keys, *rotary_angles(spec.rotary_base, keys.shape[-1], np.arange(len(vectors))))
    return PrefixKV(keys, values)


def prefix_tuned_forward(
    spec: TransformerSpec, x: np.ndarray, vectors_per_layer: list[np.ndarray | None],
    cache: dict | None = None,
) -> np.ndarray:
    """Content x (B, n, d) with prefix vectors (n_S, d) in the listed blocks (None: no prefix there).
    Content positions (RoPE) are n_S..n_S+n-1, as after a prefix of length n_S."""
    lengths = {len(v) for v in vectors_per_layer if v is not None}
    if len(lengths) > 1:
        raise PromptproofError(f"every block's prefix must have the same length, got {sorted(lengths)}")
    n_prefix = lengths.pop() if lengths else 0
    prefix = [None if v is None else prefix_from_vectors(spec, layer, v)
              for layer, v in enumerate(vectors_per_layer)]
    return forward(spec, x, cache=cache, prefix=prefix, positions=n_prefix + np.arange(x.shape[1]))


def soft_prompted_forward(spec: TransformerSpec, x: np.ndarray, vectors: np.ndarray,
                          cache: dict | None = None) -> np.ndarray:
    """Soft prompt: [s; x] through every block as one sequence; returns the content rows (B, n, d)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    whole = np.concatenate([np.broadcast_to(vectors, (x.shape[0], *vectors.shape)), x], axis=1)
    return forward(spec, whole, cache=cache)[:, len(vectors):]
