"""The one forward pass: batched, float64, written once against a small arithmetic interface.

``forward`` implements the equations in :mod:`constructions.spec` with whole-tensor operations
(no loop over positions). It never calls numpy directly on activations: it asks an ``ops``
object to do the arithmetic. :class:`NumpyOps` is plain float64; the certificates in
``verify.certificates.interval`` pass interval arithmetic through the same code, so the
certified model and the executed model cannot drift apart (LSRL's numeric/symbolic switch).

Softmax is the log-sum-exp form  softmax(s)_j = exp(s_j - max_r s_r) / sum_r exp(s_r - max_r s_r),
with masked entries set to -inf before the max.

Prefix-tuning enters here too: ``prefix[l]`` (a :class:`PrefixKV`) holds n_S keys and values per
head that block l's attention prepends to the content's own keys and values, the way prefix-
tuning libraries do (post-projection, post-RoPE). Every content query attends to all n_S prefix
keys and, causally, to the content keys:  A^pt_i = softmax( scale q_i . [k_s1..k_snS, k_1..k_n] ).
``constructions.prefix`` builds the keys and values from prefix vectors s_k (the paper's form).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from dataclasses import dataclass

from constructions.errors import PromptproofError
from constructions.spec import Norm, TransformerSpec

Tensor = Any  # an np.ndarray for NumpyOps, an interval box for interval ops


class Ops(Protocol):
    """The arithmetic the forward pass needs. Tensors must support .shape, .reshape, .transpose."""

    def linear(self, x: Tensor, W: np.ndarray, b: np.ndarray) -> Tensor:
        """x @ W + b with exact (float) weights W (d_in, d_out) and b (d_out,)."""

    def matmul(self, a: Tensor, b: Tensor) -> Tensor:
        """a @ b for two activations (batched over leading axes)."""

    def scale(self, x: Tensor, factor: float) -> Tensor:
        """factor * x for a positive float."""

    def softmax(self, scores: Tensor, mask: np.ndarray) -> Tensor:
        """Row softmax over the last axis; ``mask`` (n, n) is True where attention is allowed."""

    def relu(self, x: Tensor) -> Tensor: ...

    def add(self, x: Tensor, y: Tensor) -> Tensor: ...

    # gelu(x) (exact erf form) is needed only by an MLP whose activation is "gelu"; ops without it
    # (the interval certificates) refuse such specs.


@runtime_checkable
class ArchitectureOps(Protocol):
    """What a spec with norms, RoPE or a prefix needs on top of :class:`Ops` (NumpyOps has it;
    the interval certificates do not): :func:`forward` and :func:`logits` refuse such a spec
    with ops that are not ``isinstance(ops, ArchitectureOps)``."""

    def norm(self, x: Tensor, norm: Norm) -> Tensor:
        """LayerNorm or RMSNorm over the last axis."""

    def rotate(self, x: Tensor, cos: np.ndarray, sin: np.ndarray) -> Tensor:
        """RoPE: x * cos + rotate_half(x) * sin, cos/sin (n, width) broadcast over (B, H)."""

    def concat(self, tensors: Sequence[Tensor], axis: int) -> Tensor: ...


@dataclass(frozen=True)
class PrefixKV:
    """One block's prefix: keys (H, n_S, d_head) and values (H, n_S, d_v), or with a leading
    batch axis (B, H, n_S, .). Keys are final (after any bias and RoPE): they are dotted with
    the content queries as they are."""

    keys: np.ndarray
    values: np.ndarray

    @property
    def length(self) -> int:
        return self.keys.shape[-2]


class NumpyOps:
    """Plain float64 arithmetic."""

    def linear(self, x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        """One 2-D BLAS call (numpy's stacked matmul loops over leading axes). Rows of W that
        are entirely zero contribute exactly 0 and are skipped: hand-built weights read a few
        named subspaces of a wide residual stream."""
        flat_x = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
        rows = np.flatnonzero(np.any(W != 0, axis=1))
        if len(rows) < W.shape[0] // 2:
            flat = flat_x[:, rows] @ W[rows]
        else:
            flat = flat_x @ W
        flat += b
        return flat.reshape(*x.shape[:-1], W.shape[1])

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a @ b

    def scale(self, x: np.ndarray, factor: float) -> np.ndarray:
        return x * factor

    def softmax(self, scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
        masked = np.where(mask, scores, -np.inf)
        shifted = masked - masked.max(axis=-1, keepdims=True)
        weights = np.exp(shifted)
        return weights / weights.sum(axis=-1, keepdims=True)

    def relu(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0.0)

    def gelu(self, x: np.ndarray) -> np.ndarray:
        """GELU(x) = x/2 (1 + erf(x / sqrt 2)), the exact form (torch's F.gelu default)."""
        from scipy import special  # imported here: only a GELU spec needs it

        return 0.5 * x * (1.0 + special.erf(x * SQRT1_2))

    def add(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return x + y

    def norm(self, x: np.ndarray, norm: Norm) -> np.ndarray:
        if norm.kind == "layernorm":
            centred = x - x.mean(axis=-1, keepdims=True)
            return centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True) + norm.eps) * norm.w + norm.b
        return x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + norm.eps) * norm.w

    def rotate(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        half = x.shape[-1] // 2
        rotated_half = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rotated_half * sin

    def concat(self, tensors: Sequence[np.ndarray], axis: int) -> np.ndarray:
        return np.concatenate(tensors, axis=axis)


NUMPY = NumpyOps()
SQRT1_2 = float(np.sqrt(0.5))  # 1/sqrt(2) rounded once, the constant torch's exact GELU multiplies by


def rotary_angles(base: float, width: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of p * theta_m, theta_m = base^(-2m/width), laid out [theta_0..theta_{w/2-1}] twice
    (the "rotate half" layout). positions (n,) -> two (n, width) arrays."""
    theta = base ** (-np.arange(0, width, 2, dtype=np.float64) / width)  # (width/2,)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * theta[None, :]  # (n, width/2)
    angles = np.concatenate([angles, angles], axis=-1)  # (n, width)
    return np.cos(angles), np.sin(angles)


def attention_mask(spec: TransformerSpec, n: int, n_prefix: int = 0) -> np.ndarray:
    """(n, n_prefix + n) boolean: True where content query i may attend to a key. Every query
    sees all prefix keys; content key j is visible when j <= i (causal) or always."""
    content = np.tril(np.ones((n, n), dtype=bool)) if spec.causal else np.ones((n, n), dtype=bool)
    return np.concatenate([np.ones((n, n_prefix), dtype=bool), content], axis=1)


def embed(
    spec: TransformerSpec,
    tokens: np.ndarray,
    virtual_tokens: np.ndarray | None = None,
    virtual_positions: tuple[int, ...] = (),
) -> np.ndarray:
    """x^0 = W_E[tokens] + W_pos[:n], with virtual tokens replacing W_E[.] at chosen positions.

    tokens: (B, n) ints (entries at virtual positions are ignored);
    virtual_tokens: (B, len(virtual_positions), d) -> returns (B, n, d).
    A virtual token is a vector of the residual stream: it takes the place of a token embedding
    and receives the positional embedding like any token (soft prompting, Lester et al. 2021).
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise PromptproofError(f"tokens: expected shape (batch, n), got {tokens.shape}")
    batch, n = tokens.shape
    if n > spec.n_ctx:
        raise PromptproofError(f"sequence of length {n} exceeds the context size {spec.n_ctx}")
    real = np.ones(n, dtype=bool)
    real[list(virtual_positions)] = False
    ids = tokens[:, real]
    if ids.size and (ids.min() < 0 or ids.max() >= spec.vocab_size):
        raise PromptproofError(f"token id outside [0, {spec.vocab_size})")
    x = np.empty((batch, n, spec.d_model))  # (B, n, d)
    x[:, real] = spec.W_E[ids]
    if virtual_positions:
        virtual = np.asarray(virtual_tokens, dtype=np.float64)
        expected = (batch, len(virtual_positions), spec.d_model)
        if virtual.shape != expected:
            raise PromptproofError(f"virtual tokens: expected shape {expected}, got {virtual.shape}")
        if not np.all(np.isfinite(virtual)):
            raise PromptproofError("virtual tokens contain non-finite values")
        x[:, list(virtual_positions)] = virtual
    return x + spec.W_pos[:n]


def forward(
    spec: TransformerSpec,
    x: Tensor,
    ops: Ops = NUMPY,
    cache: dict[str, Tensor] | None = None,
    prefix: Sequence[PrefixKV | None] | None = None,
    positions: np.ndarray | None = None,
    read: np.ndarray | None = None,
) -> Tensor:
    """Residual stream after the last block. x: (B, n, d) -> (B, n, d).

    prefix: one entry per block (None where a block has no prefix), see :class:`PrefixKV`.
    positions: (n,) the content's positions for RoPE (default 0..n-1; a caller that puts a
    prefix at positions 0..n_S-1 passes n_S..n_S+n-1). Absolute positional embeddings are
    added by :func:`embed`, not here.
    If ``cache`` is a dict it receives, per block l, 'blocks.l.attn.pattern' (B, H, n, n_S + n),
    'blocks.l.attn.z' (B, H, n, d_v) (each head's mixed values, before W_O), and
    'blocks.l.resid_mid' / 'blocks.l.resid_post' (B, n, d) (TransformerLens-style names).

    read: (B,) positions, one per row: only the final residual at position read[b] is wanted
    (a certificate reads one position per case). The last block then computes its queries, its
    attention rows, its output projection and its MLP at that position alone, and the result is
    (B, 1, d) with row b equal to ``forward(spec, x)[b, read[b]]``. Why this is the same
    function: in a block, every operation but attention acts on each position separately
    (linear maps, ReLU, norms, residual additions), and attention mixes positions only through
    the keys and values, which are still computed at every position; query row i of the scores
    is q_i . k_j for the same keys, masked by row i of the same mask, and its softmax is a
    function of that row alone. Blocks before the last need every position (the next block's
    keys read them) and are computed in full. Cost of the last block: 2 query rows instead of n.
    Floating point: the same operations on the same operands, with one caveat handled here:
    numpy sends a product whose left matrix has ONE row to BLAS gemv, which sums in another
    order than the gemm used for n rows (results differ in the last bit), so the read row goes
    through the two attention products twice (a 2-row matrix, gemm, whose per-entry sums do
    not depend on the number of rows) and one copy is kept. The interval ops decide a few
    branches from the signs of a whole operand (e.g. "every query >= 0"), which a subset of
    rows can only make more often true; both branches are sound, and tests/test_forward_read.py
    checks that on the constructions' certificates the results are bit-identical. Cache entries
    of the last block hold the read rows (the attention pattern and z: the read row twice).
    """
    batch, n, d = x.shape
    if read is not None:
        read = np.asarray(read, dtype=np.intp).reshape(-1)
        if read.shape != (batch,) or (read.size and (read.min() < 0 or read.max() >= n)):
            raise PromptproofError(f"read: expected {batch} positions in [0, {n}), got {read.shape} {read}")
    if prefix is not None and len(prefix) != spec.n_layers:
        raise PromptproofError(f"prefix: expected one entry per block ({spec.n_layers}), got {len(prefix)}")
    if positions is None:
        positions = np.arange(n)
    if (spec.uses_norms_or_rotary or prefix is not None) and not isinstance(ops, ArchitectureOps):
        raise PromptproofError(f"{type(ops).__name__} cannot run norms, RoPE, GELU or prefixes")
    rotary: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # d_head -> (cos, sin)
    rows = twice = None
    if read is not None:
        rows = (np.arange(batch)[:, None], read[:, None])  # picks the read rows, (B, 1, .)
        twice = (np.arange(batch)[:, None], np.stack([read, read], axis=1))  # the same row twice, (B, 2, .)
    for index, block in enumerate(spec.blocks):
        attn = block.attention
        heads = attn.n_heads
        layer_prefix = None if prefix is None else prefix[index]
        at_read = rows is not None and index == spec.n_layers - 1  # the last block, read rows only
        n_q = 2 if at_read else n  # query rows computed in this block (the read row twice, see the docstring)
        if heads:
            d_head, d_v = attn.W_Q.shape[2], attn.W_V.shape[2]
            h = x if block.ln1 is None else ops.norm(x, block.ln1)  # (B, n, d)

            def project(W: np.ndarray, b: np.ndarray, width: int, rows_of_h: Tensor | None = None) -> Tensor:
                # (B, m, d) @ (d, H*width) -> (B, m, H, width) -> (B, H, m, width); m = n unless rows_of_h
                src = h if rows_of_h is None else rows_of_h
                m = src.shape[1]
                flat = ops.linear(src, W.transpose(1, 0, 2).reshape(d, heads * width), b.reshape(-1))
                return flat.reshape(batch, m, heads, width).transpose(0, 2, 1, 3)

            q = project(attn.W_Q, attn.b_Q, d_head, h[twice] if at_read else None)  # (B, H, n_q, d_head)
            k = project(attn.W_K, attn.b_K, d_head)  # (B, H, n, d_head)
            v = project(attn.W_V, attn.b_V, d_v)  # (B, H, n, d_v)
            if spec.rotary_base is not None:
                if d_head not in rotary:
                    rotary[d_head] = rotary_angles(spec.rotary_base, d_head, positions)
                cos, sin = rotary[d_head]
                k = ops.rotate(k, cos, sin)
                q = ops.rotate(q, cos[twice[1]][:, None], sin[twice[1]][:, None]) if at_read else ops.rotate(q, cos, sin)
            n_prefix = 0
            if layer_prefix is not None:
                n_prefix = layer_prefix.length
                keys, values = _prefix_arrays(layer_prefix, batch, (heads, d_head, d_v), index)
                k = ops.concat([keys, k], axis=2)  # (B, H, n_S + n, d_head)
                v = ops.concat([values, v], axis=2)  # (B, H, n_S + n, d_v)
            scores = ops.scale(ops.matmul(q, k.transpose(0, 1, 3, 2)), spec.attention_scale)
            mask = attention_mask(spec, n, n_prefix)  # (n, n_S + n)
            if at_read:
                mask = mask[read][:, None, None, :]  # (B, 1, 1, n_S + n): row read[b] of the mask
            pattern = ops.softmax(scores, mask)  # (B, H, n_q, n_S + n)
            z = ops.matmul(pattern, v)  # (B, H, n_q, d_v)
            if cache is not None:
                cache[f"blocks.{index}.attn.pattern"] = pattern
                cache[f"blocks.{index}.attn.z"] = z
            if at_read:
                z, n_q = z[:, :, :1], 1  # one copy of the read row
            # sum_h z_h @ W_O[h]  ==  (B, n_q, H*d_v) @ (H*d_v, d)
            mixed = z.transpose(0, 2, 1, 3).reshape(batch, n_q, heads * d_v)
            if at_read:
                x = x[rows]  # (B, 1, d): the residual at the read positions
            x = ops.add(x, ops.linear(mixed, attn.W_O.reshape(heads * d_v, d), attn.b_O))
        elif layer_prefix is not None:
            raise PromptproofError(f"prefix for block {index}, which has no attention heads")
        elif at_read:
            x = x[rows]  # (B, 1, d)
        if cache is not None:
            cache[f"blocks.{index}.resid_mid"] = x
        if block.mlp is not None:
            mlp = block.mlp
            h = x if block.ln2 is None else ops.norm(x, block.ln2)
            pre = ops.linear(h, mlp.W_in, mlp.b_in)  # (B, n, d_mlp)
            hidden = ops.relu(pre) if mlp.activation == "relu" else _gelu(ops, pre, index)
            x = ops.add(x, ops.linear(hidden, mlp.W_out, mlp.b_out))
        if cache is not None:
            cache[f"blocks.{index}.resid_post"] = x
    return x


def _prefix_arrays(prefix: PrefixKV, batch: int, widths: tuple[int, int, int], index: int):
    """The prefix's keys (B, H, n_S, d_head) and values (B, H, n_S, d_v), shapes validated.
    Unbatched (H, n_S, .) arrays are shared by the whole batch."""
    heads, d_head, d_v = widths
    out = []
    for name, width in (("keys", d_head), ("values", d_v)):
        array = np.asarray(getattr(prefix, name), dtype=np.float64)
        if array.ndim == 3:
            array = np.broadcast_to(array, (batch, *array.shape))
        expected = (batch, heads, prefix.length, width)
        if array.shape != expected:
            raise PromptproofError(f"prefix of block {index}: {name} expected shape {expected[1:]} or "
                                   f"{expected}, got {getattr(prefix, name).shape}")
        out.append(array)
    return out[0], out[1]


def _gelu(ops: Ops, x: Tensor, index: int) -> Tensor:
    if not hasattr(ops, "gelu"):
        raise PromptproofError(f"{type(ops).__name__} cannot run the GELU MLP of block {index}")
    return ops.gelu(x)


def logits(spec: TransformerSpec, resid: Tensor, ops: Ops = NUMPY) -> Tensor:
    """logits = N_f(resid) W_U + b_U, N_f the final norm ``spec.ln_final`` (identity when absent).
    (B, n, d) -> (B, n, V)."""
    if spec.ln_final is not None:
        if not isinstance(ops, ArchitectureOps):
            raise PromptproofError(f"{type(ops).__name__} cannot run the final norm (ln_final)")
        resid = ops.norm(resid, spec.ln_final)
    return ops.linear(resid, spec.W_U, spec.b_U)


def next_token_predictions(spec: TransformerSpec, x: np.ndarray) -> np.ndarray:
    """Greedy prediction at every position of an input (teacher forcing). (B, n, d) -> (B, n)."""
    return np.argmax(logits(spec, forward(spec, x)), axis=-1)


def generate(
    spec: TransformerSpec,
    prompt_tokens: np.ndarray,
    steps: int,
    virtual_tokens: np.ndarray | None = None,
    virtual_positions: tuple[int, ...] = (),
) -> np.ndarray:
    """Greedy decoding: append argmax of the last position's logits ``steps`` times.

    prompt_tokens: (B, n0) -> generated tokens (B, steps). The whole sequence is recomputed at
    each step (no key/value cache), exactly as the authors' notebook does.
    """
    tokens = np.asarray(prompt_tokens, dtype=np.int64)
    if tokens.shape[1] + steps - 1 > spec.n_ctx:
        raise PromptproofError(
            f"prompt of length {tokens.shape[1]} plus {steps} steps exceeds the context size {spec.n_ctx}"
        )
    out = np.empty((tokens.shape[0], steps), dtype=np.int64)
    for step in range(steps):
        x = embed(spec, tokens, virtual_tokens, virtual_positions)
        out[:, step] = np.argmax(logits(spec, forward(spec, x))[:, -1], axis=-1)
        tokens = np.concatenate([tokens, out[:, step : step + 1]], axis=1)
    return out
