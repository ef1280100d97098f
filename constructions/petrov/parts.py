"""Parts shared by the Section 3 constructions of Petrov et al.: a residual-stream layout with
named disjoint subspaces, attention heads that look at one chosen position, the ReLU selector,
and the nearest-grid-point readout.

Readout (the authors' decoding trick, here as the unembedding): a scalar z in the 'readout'
coordinate gives logits
    logit_c(z) = 2 (c/V) z - (c/V)^2 = z^2 - (z - c/V)^2,
so argmax_c logit_c(z) is the grid point c/V nearest to z: token y is encoded by y/V and decoded
correctly iff |z - y/V| < 1/(2V).

Selector (an MLP hidden unit per symbol c): h_c = ReLU(a_c + b_c - 1) with a_c in [0, 1) and
b_c in {0, 1}: h_c = a_c where b_c = 1 and 0 elsewhere, so sum_c h_c picks the coordinate of a
that a one-hot b points at.
"""

from __future__ import annotations

import numpy as np

from constructions.spec import MLP, Attention


class ResidualLayout:
    """Allocates named, disjoint coordinate ranges of the residual stream, in order."""

    def __init__(self, widths: list[tuple[str, int]] | None = None) -> None:
        """Optionally allocate ``widths`` = [(name, width), ...] in order."""
        self.ranges: dict[str, tuple[int, int]] = {}
        self.width = 0
        for name, width in widths or []:
            self.add(name, width)

    def add(self, name: str, width: int) -> slice:
        self.ranges[name] = (self.width, self.width + width)
        self.width += width
        return slice(*self.ranges[name])

    def __getitem__(self, name: str) -> slice:
        return slice(*self.ranges[name])

    def index(self, name: str, offset: int = 0) -> int:
        start, stop = self.ranges[name]
        if not 0 <= offset < stop - start:
            raise IndexError(f"{name}[{offset}] outside width {stop - start}")
        return start + offset


class HeadBuilder:
    """Accumulates heads of one block; heads are zero-padded to common widths when stacked."""

    def __init__(self, d_model: int) -> None:
        self.d_model = d_model
        self.heads: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, W_Q: np.ndarray, W_K: np.ndarray, W_V: np.ndarray, W_O: np.ndarray) -> None:
        """W_Q, W_K: (d, e); W_V: (d, e_v); W_O: (e_v, d)."""
        self.heads.append((W_Q, W_K, W_V, W_O))

    def build(self) -> Attention:
        d = self.d_model
        e = max(h[0].shape[1] for h in self.heads)
        e_v = max(h[2].shape[1] for h in self.heads)
        W_Q = np.zeros((len(self.heads), d, e))
        W_K = np.zeros((len(self.heads), d, e))
        W_V = np.zeros((len(self.heads), d, e_v))
        W_O = np.zeros((len(self.heads), e_v, d))
        for h, (q, k, v, o) in enumerate(self.heads):
            W_Q[h, :, : q.shape[1]] = q
            W_K[h, :, : k.shape[1]] = k
            W_V[h, :, : v.shape[1]] = v
            W_O[h, : o.shape[0]] = o
        return Attention.build(d, W_Q, W_K, W_V, W_O)


def copy_matrices(layout: ResidualLayout, source: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    """W_V, W_O that move the contents of subspace ``source`` into subspace ``target``."""
    width = layout[source].stop - layout[source].start
    W_V = np.zeros((layout.width, width))
    W_V[layout[source], :] = np.eye(width)
    W_O = np.zeros((width, layout.width))
    W_O[:, layout[target]] = np.eye(width)
    return W_V, W_O


def attend_to_position(
    layout: ResidualLayout, position: int, inverse_temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """W_Q, W_K giving score T to key position ``position`` and 0 to all others, for every query.

    q_i = T (from the constant 'one' coordinate), k_j = [j == position] (from 'pos'), so
    q_i . k_j = T [j == position].
    """
    W_Q = np.zeros((layout.width, 1))
    W_Q[layout.index("one"), 0] = inverse_temperature
    W_K = np.zeros((layout.width, 1))
    W_K[layout.index("pos", position), 0] = 1.0
    return W_Q, W_K


def selector_mlp(layout: ResidualLayout, values: str, pointer: str) -> MLP:
    """h_c = ReLU(values_c + pointer_c - 1);  readout += sum_c h_c."""
    width = layout[values].stop - layout[values].start
    W_in = np.zeros((layout.width, width))
    W_in[layout[values], :] = np.eye(width)
    W_in[layout[pointer], :] += np.eye(width)
    W_out = np.zeros((width, layout.width))
    W_out[:, layout.index("readout")] = 1.0
    return MLP.build(layout.width, W_in, W_out, b_in=-np.ones(width))


def grid_readout(layout: ResidualLayout, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """W_U, b_U with logit_c = 2 (c/V) z - (c/V)^2 for z = the 'readout' coordinate."""
    grid = np.arange(vocab_size) / vocab_size
    W_U = np.zeros((layout.width, vocab_size))
    W_U[layout.index("readout")] = 2.0 * grid
    return W_U, -(grid**2)


def one_hot_embeddings(layout: ResidualLayout, vocab_size: int, n_ctx: int) -> tuple[np.ndarray, np.ndarray]:
    """W_E[c] = e_token_c;  W_pos[i] = e_pos_i + e_one."""
    W_E = np.zeros((vocab_size, layout.width))
    W_E[:, layout["token"]] = np.eye(vocab_size)
    W_pos = np.zeros((n_ctx, layout.width))
    W_pos[:, layout["pos"]] = np.eye(n_ctx)
    W_pos[:, layout.index("one")] = 1.0
    return W_E, W_pos


def any_token_box(W_E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The coordinate-wise hull of all token embeddings: contains W_E[c] for every c."""
    return W_E.min(axis=0), W_E.max(axis=0)
