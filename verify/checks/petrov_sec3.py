"""Checks of Section 3 (Petrov et al.): the constructions hold for ALL inputs, at exactly which
temperature they start to, and how many behaviours one virtual token reaches.

Each construction claim's evidence (Rung.CERTIFICATE: the claim at its stated sizes is proved
for every input by the certificate; everything else supports it):
  1. certificate: the interval forward pass over the construction's finite cover of all inputs
     (verify.certificates.cover; the compositional one for two tokens) proves the right token
     wins at every read position;
  2. minimal inverse temperature T*: the leakage model is read off the construction's own
     weights (``read_leakage``: the score matrix as polynomials in T, the value pathway, the
     worst input) and turned into err(T) and T* by sympy (theorems.petrov_sec3.from_scores),
     which must agree with the stated model and its symbolic-size proof; the certificate must
     hold at T* + delta (tightness from above; from below is a control);
  3. randomized: 10,000 random tasks verified by teacher forcing, a subset by greedy decoding, and
     the torch module's logits against the numpy forward; and a direct causal-mask test of both
     implementations on generic weights of the same shapes (``causal_mask_leak``: outputs before
     a changed position must not move), since at the construction's own T a leaked key's weight
     is below e^-50 and invisible to any float64 comparison;
  4. the authors' published output (e.g. "I love transformers!").
The runner decides (verify.protocol): the evidence holds and both controls are refuted.

Controls (the same certificate, plus a concrete wrong answer, on a deliberately wrong variant):
  perturbed_readout_bias: b_U[c] += 2 x the certified worst margin, c the competitor that
      margin is against. Below the margin a shift is provably harmless; twice it is harmful
      only if the certificate's margin is within a factor 2 of the true worst logit gap.
  too_small_temperature: the construction at T* - delta. It fails only if T* is tight: had the
      margin at T* - delta still exceeded the leak, the certificate would hold there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch

from constructions.construction import Construction, all_sequences
from constructions.errors import ConstructionError
from constructions.forward import NUMPY, embed, forward, generate, logits
from constructions.petrov import demos
from constructions.petrov.conditional import Conditional
from constructions.petrov.long_response import LongResponse
from constructions.petrov.two_token import (
    MAX_VOCAB_FLOAT64,
    TwoToken,
    largest_vocab_for_precision,
    leakage_witnesses,
    rows_in_top_binade,
)
from constructions.petrov.unconditional import Unconditional
from constructions.spec import TransformerSpec
from constructions.torch_module import SpecTransformer
from constructions.torch_threads import torch_threads
from constructions.vocab import Vocabulary
from theorems.petrov_sec3 import (
    THRESHOLDS,
    Poly,
    ScoreRow,
    from_scores,
    readout_lemma,
    two_token_front_from_scores,
    two_token_thresholds,
)
from verify.certificates import certify_construction, certify_constructions
from verify.protocol import Control, Evidence, Finding, Rung, compare
from verify.registry import Context, check

# Offset from T* at which tightness is shown. The certified margin at T* + delta is about
# delta * d(margin)/dT ~ 1e-10 here, five orders of magnitude above float64 rounding (~1e-15).
TIGHTNESS_DELTA = 1e-6
# float64 forward vs torch float64 module: same operations in a different order.
TORCH_PARITY_TOLERANCE = 1e-12
# Sequence length of the direct causal-mask test (causal_mask_leak), capped by n_ctx.
MASK_TEST_LENGTH = 16
RANDOM_INSTANCES = 10_000
GREEDY_INSTANCES = 256
# The readout-bias perturbation, in units of the certified worst margin: below 1 it is provably
# harmless (every margin stays positive), so the control is only meaningful above 1.
MARGIN_FACTOR = 2.0
CONSTRUCTION_CONTROLS = ("perturbed_readout_bias", "too_small_temperature")


# --- reading the error model off the weights ----------------------------------------------
#
# The one-layer constructions (and the two-token construction's block 0) decode at read
# position i a coordinate z ("readout") of the residual after one attention + MLP block. The
# reader takes the weights of builds at T = 1, 2, 3, and derives, in exact rational arithmetic:
#
#   weights:  W(T) = W0 + T W1 (read from the builds; only W_Q, b_Q, W_K, b_K may depend on T);
#   scores:   s^h_ij(T) = scale (x_i W_Q^h(T) + b_Q^h(T)) . (x_j W_K^h(T) + b_K^h(T)), with
#             x_j = W_pos[j] + content_j; they must not depend on the content (token embeddings
#             and virtual-token coordinates meet zero rows of W_Q, W_K), so they are exact
#             polynomials in T read from the positional embeddings alone;
#   leakage:  at every read position each head attends one key j*_h (the largest score as
#             T -> oo) and its m other visible keys share one score; the heads share the gap,
#             so every head leaks the same l_i(T) = 1 - e^{s*}/(e^{s*} + m e^{s_o}), and each
#             non-attended key gets l_i / m;
#   pattern:  for every user input, the ReLU units of the MLP are on (pre-activation >= 0) or off
#             (<= 0) for every input at hard attention (l = 0); with that pattern the readout is
#             z = r_i . g + const,  g = e_z + sum_{u on} W_in[:, u] W_out[u, z];
#   target:   at hard attention z reads exactly one virtual-token coordinate t with weight 1
#             (the encoded answer) and nothing else;
#   shift:    z(T) - z(oo) = sum_h sum_{j != j*_h} A^h_ij (x_j - x_{j*_h}) . w^h,  w^h = W_V^h W_O^h g
#             = l_i(T) L(x),  L(x) = (1/m) sum_j x_j . (sum_h w^h - (m+1) sum_{h: j = j*_h} w^h),
#             an affine function of the content with T-free rational coefficients (b_V cancels:
#             attention weights sum to one). Its range over every input (virtual coordinates in
#             the hull of the encodings, real tokens over the vocabulary, the user's token fixed)
#             is kappa + lambda t with kappa in [kappa_lo, kappa_hi], t in [t_lo, t_hi];
#   spread:   c_i = max |kappa + lambda t| over those corners: the worst readout shift per unit of
#             leakage. theorems.petrov_sec3.from_scores turns (scores, m, c_i) into err_i(T) and T*.
#
# The shift formula is exact wherever the hard-attention ReLU pattern persists; the check
# confirms that it does at the worst input at T = T*, and that the numpy forward pass there
# moves z by exactly l(T*) (kappa + lambda t). That no other input is worse (the ReLUs that do
# switch only pull z back toward zero) is what the interval certificate at T* + delta proves,
# and its failure at T* - delta shows the worst case is attained.

SNAP_DENOMINATOR = 10**6  # encodings y/V are identified as rationals of denominator <= 10^6
PATTERN_TOLERANCE = 1e-12  # a unit is on if its pre-activation is >= -1e-12 on every input
SHIFT_TOLERANCE = 1e-12  # float64 forward vs the derived shift, |values| <= 1

Vec = dict[int, Fraction]  # a sparse exact vector


@lru_cache(maxsize=4096)
def encoded(value: float) -> Fraction:
    """The rational a float64 input encodes: the nearest fraction with denominator <= 10^6 when
    it lies within 4 ulp (an encoding y/V rounded once), else the float's own exact value."""
    exact = Fraction(float(value))
    snapped = exact.limit_denominator(SNAP_DENOMINATOR)
    return snapped if abs(snapped - exact) <= 4 * Fraction(float(np.spacing(abs(float(value))))) else exact


def matvec(W: np.ndarray, v: Vec) -> Vec:
    """W @ v in exact arithmetic (W a float array (a, b), v sparse over b)."""
    out: dict[int, Fraction] = {}
    for col, x in v.items():
        for row in np.flatnonzero(W[:, col]):
            out[int(row)] = out.get(int(row), Fraction(0)) + Fraction(float(W[row, col])) * x
    return {k: x for k, x in out.items() if x != 0}


def vec_add(*vectors: tuple[Fraction | int, Vec]) -> Vec:
    """sum of scale * vector, exactly."""
    out: dict[int, Fraction] = {}
    for scale, v in vectors:
        for k, x in v.items():
            out[k] = out.get(k, Fraction(0)) + scale * x
    return {k: x for k, x in out.items() if x != 0}


def dot(x: np.ndarray, v: Vec) -> Fraction:
    return sum((Fraction(float(x[k])) * c for k, c in v.items()), Fraction(0))


@dataclass(frozen=True)
class Slot:
    """What position j can hold: a virtual token anywhere in the box [lo, hi] (the hull of the
    construction's encodings), or one of ``rows`` (token embeddings); plus W_pos[j]. Slots with
    the same ``kind`` hold the same contents (their exact ranges are shared)."""

    position: int
    pos: np.ndarray
    kind: tuple
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    rows: np.ndarray | None = None

    @property
    def virtual(self) -> bool:
        return self.rows is None

    def float_range(self, K: np.ndarray, rows_K: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Range of x . K[:, u] for every column u, x in the slot (float64); ``rows_K`` is
        ``rows @ K`` when the caller has it."""
        base = self.pos @ K
        if self.virtual:
            a, b = self.lo[:, None] * K, self.hi[:, None] * K
            return base + np.minimum(a, b).sum(0), base + np.maximum(a, b).sum(0)
        values = (self.rows @ K if rows_K is None else rows_K) + base
        return values.min(0), values.max(0)

    def content_range(self, v: Vec) -> tuple[Fraction, Fraction, np.ndarray, np.ndarray]:
        """Exact range of content . v over the slot (without W_pos[j]), with contents attaining
        the low and the high end."""
        if self.virtual:
            low, high = self.lo.copy(), self.lo.copy()
            lo_sum = hi_sum = Fraction(0)
            for k, c in v.items():
                a, b = encoded(self.lo[k]) * c, encoded(self.hi[k]) * c
                lo_sum += min(a, b)
                hi_sum += max(a, b)
                low[k], high[k] = (self.lo[k], self.hi[k]) if a <= b else (self.hi[k], self.lo[k])
            return lo_sum, hi_sum, low, high
        if not v:
            return Fraction(0), Fraction(0), self.rows[0], self.rows[0]
        keys = np.array(sorted(v), dtype=np.int64)
        distinct, first = np.unique(self.rows[:, keys], axis=0, return_index=True)
        values = [(dot(row, dict(zip(range(len(keys)), (v[k] for k in keys)))), int(r))
                  for row, r in zip(distinct, first)]
        (lo_val, lo_row), (hi_val, hi_row) = min(values), max(values)
        return lo_val, hi_val, self.rows[lo_row], self.rows[hi_row]

    def exact_range(self, v: Vec, cache: dict | None = None) -> tuple[Fraction, Fraction, np.ndarray, np.ndarray]:
        """Exact range of x . v over the slot, with the inputs attaining the low and high end."""
        key = (self.kind, tuple(sorted(v.items())))
        if cache is None or key not in cache:
            found = self.content_range(v)
            if cache is None:
                cache = {}
            cache[key] = found
        lo, hi, x_lo, x_hi = cache[key]
        fixed = dot(self.pos, v)
        return fixed + lo, fixed + hi, x_lo + self.pos, x_hi + self.pos


@dataclass
class PositionReading:
    """The worst input at one read position: user input, kappa range, slope, t range, m, the
    ReLU pattern and the corner inputs (first-layer vectors of the visible positions)."""

    row: ScoreRow
    user: tuple[int, ...]
    kappa: tuple[Fraction, Fraction]
    slope: Fraction
    t_range: tuple[Fraction, Fraction]
    target: tuple[int, int]  # (position, coordinate) of the encoded answer
    on: np.ndarray
    worst_input: np.ndarray  # (i + 1, d): the corner where |kappa + slope t| is largest
    worst_shift: Fraction  # kappa + slope t there
    search_gap: float = 0.0  # float64 search's largest size minus the exact one (rounding only)


@dataclass
class LeakageReading:
    """``read_leakage``'s result: preconditions (each True or the derivation does not apply)
    and one ``PositionReading`` (its worst input) per read position."""

    preconditions: dict[str, bool]
    positions: list[PositionReading] = field(default_factory=list)

    @property
    def rows(self) -> list[ScoreRow]:
        return [p.row for p in self.positions]


def weights_in_T(build: Callable[[float], Construction]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], bool]:
    """W0, W1 with W(T) = W0 + T W1, read from builds at T = 1, 2 and confirmed exactly at T = 3."""
    a1, a2, a3 = (build(T).spec.named_arrays() for T in (1.0, 2.0, 3.0))
    slope = {k: a2[k] - a1[k] for k in a1}
    base = {k: a1[k] - slope[k] for k in a1}
    affine = all(np.array_equal(base[k] + 3.0 * slope[k], a3[k]) for k in a1)
    return base, slope, affine


def _poly_rows(P: np.ndarray, W0: np.ndarray, W1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> list[list[tuple[Fraction, Fraction]]]:
    """Exact (constant, T-coefficient) of P[j] @ W(T) + b(T) for every row j and column."""
    out = []
    for j in range(P.shape[0]):
        nz = np.flatnonzero(P[j])
        row = []
        for col in range(W0.shape[1]):
            c0 = Fraction(float(b0[col])) + sum((Fraction(float(P[j, k])) * Fraction(float(W0[k, col])) for k in nz), Fraction(0))
            c1 = Fraction(float(b1[col])) + sum((Fraction(float(P[j, k])) * Fraction(float(W1[k, col])) for k in nz), Fraction(0))
            row.append((c0, c1))
        out.append(row)
    return out


def _score(q: list[tuple[Fraction, Fraction]], k: list[tuple[Fraction, Fraction]], scale: Fraction) -> Poly:
    a0 = sum((x0 * y0 for (x0, _), (y0, _) in zip(q, k)), Fraction(0))
    a1 = sum((x0 * y1 + x1 * y0 for (x0, x1), (y0, y1) in zip(q, k)), Fraction(0))
    a2 = sum((x1 * y1 for (_, x1), (_, y1) in zip(q, k)), Fraction(0))
    return (scale * a0, scale * a1, scale * a2)


def _virtual_hull(construction: Construction) -> tuple[np.ndarray, np.ndarray]:
    """Coordinate-wise hull of the virtual tokens of the all-0 and all-(V-1) tasks: (n_virtual, d)
    each. The encodings are monotone in every task entry, so this holds every task's tokens."""
    shape = construction.random_tasks(np.random.default_rng(0), 1).shape
    extremes = [construction.virtual_tokens(np.full(shape, value, dtype=np.int64))[0]
                for value in (0, construction.vocab.size - 1)]
    return np.minimum(*extremes), np.maximum(*extremes)


SEARCH_TOLERANCE = 1e-9  # float64 search's worst size vs its exact recomputation (rounding ~1e-16)


def _structure(build: Callable[[float], Construction]) -> tuple[dict[str, bool], dict, dict]:
    """Preconditions on the weights' structure, and W0, W1 of W(T) = W0 + T W1."""
    base, slope, affine = weights_in_T(build)
    spec = build(1.0).spec
    attn, mlp = spec.blocks[0].attention, spec.blocks[0].mlp
    moving = {k for k in slope if np.any(slope[k] != 0)}
    pre = {
        "weights are affine in T (builds at T = 1, 2, 3)": affine,
        "only W_Q, b_Q, W_K, b_K depend on T": moving <= {f"blocks.0.attn.{n}" for n in ("W_Q", "b_Q", "W_K", "b_K")},
        "causal, no norms or RoPE, heads and an MLP in block 0":
            spec.causal and not spec.uses_norms_or_rotary and mlp is not None and attn.n_heads > 0,
    }
    return pre, base, slope


def _content_free(spec: TransformerSpec, base: dict, slope: dict, virtual_coords: np.ndarray) -> bool:
    """Token embeddings and virtual-token coordinates meet only zero rows of W_Q and W_K (at
    every T), so the scores depend on the positions alone."""
    return all(not np.any(np.abs(spec.W_E) @ np.abs(W[h])) and not np.any(W[h][virtual_coords])
               for W in (base["blocks.0.attn.W_Q"], slope["blocks.0.attn.W_Q"],
                         base["blocks.0.attn.W_K"], slope["blocks.0.attn.W_K"])
               for h in range(W.shape[0]))


def _score_rows(spec: TransformerSpec, base: dict, slope: dict, read_positions: list[int]
                ) -> tuple[dict[int, list[int]], dict[int, tuple[Poly, Poly, int]], bool]:
    """For every read position i and head h: the attended key j*_h (largest score as T -> oo),
    and the scores of the attended key and of the i others (causal: keys 0..i), exactly.
    ``uniform``: every head has a unique attended key, its others share one score, and all
    heads have the same gap."""
    P, scale = spec.W_pos, Fraction(float(spec.attention_scale))
    H = spec.blocks[0].attention.n_heads
    name = "blocks.0.attn."
    queries = [_poly_rows(P, base[name + "W_Q"][h], slope[name + "W_Q"][h], base[name + "b_Q"][h],
                          slope[name + "b_Q"][h]) for h in range(H)]
    keys = [_poly_rows(P, base[name + "W_K"][h], slope[name + "W_K"][h], base[name + "b_K"][h],
                       slope[name + "b_K"][h]) for h in range(H)]
    attended: dict[int, list[int]] = {}
    rows: dict[int, tuple[Poly, Poly, int]] = {}
    uniform = True
    for i in read_positions:
        gaps, picks = set(), []
        for h in range(H):
            scores = [_score(queries[h][i], keys[h][j], scale) for j in range(i + 1)]
            order = sorted(range(i + 1), key=lambda j: scores[j][::-1], reverse=True)
            top, rest = order[0], {scores[j] for j in order[1:]}
            unique = len(order) == 1 or scores[order[1]][::-1] < scores[top][::-1]
            uniform &= unique and len(rest) <= 1
            other = next(iter(rest)) if rest else (Fraction(0),) * 3
            gaps.add(tuple(a - b for a, b in zip(scores[top], other)))
            picks.append(top)
            rows.setdefault(i, (scores[top], other, i))
        uniform &= len(gaps) == 1
        attended[i] = picks
    return attended, rows, uniform


def read_leakage(build: Callable[[float], Construction], readout: str = "readout", offset: int = 0) -> LeakageReading:
    """Read the leakage model of block 0 at the read positions off the weights (the comment
    above). ``readout`` / ``offset``: the residual coordinate that is decoded after block 0."""
    pre, base, slope = _structure(build)
    if not all(pre.values()):
        return LeakageReading(pre)
    construction = build(1.0)
    spec = construction.spec
    lo_v, hi_v = _virtual_hull(construction)
    virtual_coords = np.flatnonzero((lo_v != 0) | (hi_v != 0)) % spec.d_model
    content_free = _content_free(spec, base, slope, virtual_coords)
    pre["scores do not depend on the content (W_E and virtual coordinates meet zero rows of W_Q, W_K)"] = content_free
    n_virtual = len(construction.virtual_positions)
    prompt = n_virtual + construction.n_user_tokens
    read_positions = [prompt - 1 + k for k in range(construction.response_length)]
    attended, score_rows, uniform = _score_rows(spec, base, slope, read_positions)
    pre["each head attends one key per read position; the other keys share one score; the heads share the gap"] = uniform
    if not (content_free and uniform):
        return LeakageReading(pre)

    net = _Network(spec, spec.subspace(readout).start + offset, lo_v, hi_v, n_virtual, prompt)
    users = construction.all_user_inputs()
    decided = reads_target = searched = True
    reading = LeakageReading(pre)
    for i in read_positions:
        status, size = net.float_classes(i, users, attended[i])
        decided &= not np.any(status == 1)
        reads_target &= not np.any(status == 2)
        if np.any(status != 0):
            continue
        worst = int(np.argmax(size))
        found = net.exact_class(i, tuple(int(u) for u in users[worst]), attended[i], score_rows[i])
        if found is None:
            reads_target = False
            continue
        found.search_gap = float(size.max()) - float(found.row.spread)
        searched &= abs(found.search_gap) <= SEARCH_TOLERANCE
        reading.positions.append(found)
    pre["ReLU pattern decided at hard attention for every input"] = decided
    pre["at hard attention the readout is exactly the encoded answer"] = reads_target
    pre[f"the float64 search's worst input, recomputed exactly, agrees to {SEARCH_TOLERANCE:g}"] = searched
    return reading


class _Network:
    """Block 0's weights with the slots of every position, for ``read_leakage``: the
    ReLU pattern, the target and the shift per user input, in float64 (to find the worst input
    fast) and in exact rationals (for the worst one)."""

    def __init__(self, spec: TransformerSpec, z: int, lo_v: np.ndarray, hi_v: np.ndarray, n_virtual: int,
                 prompt: int) -> None:
        self.spec, self.z, self.P, self.lo_v, self.hi_v = spec, z, spec.W_pos, lo_v, hi_v
        self.n_virtual, self.prompt = n_virtual, prompt
        self.attn, self.mlp = spec.blocks[0].attention, spec.blocks[0].mlp
        attn, W_in = self.attn, self.mlp.W_in
        self.H = attn.n_heads
        self.VO = [attn.W_V[h] @ attn.W_O[h] for h in range(self.H)]
        self.VOW = [M @ W_in for M in self.VO]
        self.EW, self.EVOW = spec.W_E @ W_in, [spec.W_E @ M for M in self.VOW]
        self.const_pre = (sum(attn.b_V[h] @ attn.W_O[h] for h in range(self.H)) + attn.b_O) @ W_in + self.mlp.b_in
        self.varying = lo_v != hi_v  # (n_virtual, d): coordinates a virtual token can move
        self.hull_kind = [("virtual", lo_v[j].tobytes(), hi_v[j].tobytes()) for j in range(n_virtual)]
        self.cache: dict = {}  # exact content ranges, shared by slots of one kind

    def slots(self, i: int, user: tuple[int, ...]) -> list[Slot]:
        out = []
        for j in range(i + 1):
            if j < self.n_virtual:
                out.append(Slot(j, self.P[j], self.hull_kind[j], lo=self.lo_v[j], hi=self.hi_v[j]))
            elif j < self.prompt:
                token = user[j - self.n_virtual]
                out.append(Slot(j, self.P[j], ("token", token), rows=self.spec.W_E[token][None]))
            else:
                out.append(Slot(j, self.P[j], ("any token",), rows=self.spec.W_E))
        return out

    def pattern(self, i: int, slots: list[Slot], attended: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(on, off) units at hard attention; a unit in neither is undecided."""
        K, EK = {i: self.mlp.W_in}, {i: self.EW}
        for h, j in enumerate(attended):
            K[j], EK[j] = K.get(j, 0) + self.VOW[h], EK.get(j, 0) + self.EVOW[h]
        lo, hi = self.const_pre.copy(), self.const_pre.copy()
        for j, Kj in K.items():
            a, b = slots[j].float_range(Kj, EK[j] if j >= self.prompt else None)
            lo, hi = lo + a, hi + b
        off = hi <= PATTERN_TOLERANCE
        return ~off & (lo >= -PATTERN_TOLERANCE), off

    def _slot_ranges(self, j: int, users: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Range of x_j . C[b] over position j's slot, one row C[b] (d,) per user input b."""
        base = C @ self.P[j]
        if j < self.n_virtual:
            a, b = C * self.lo_v[j], C * self.hi_v[j]
            return base + np.minimum(a, b).sum(1), base + np.maximum(a, b).sum(1)
        if j < self.prompt:
            value = np.einsum("bd,bd->b", self.spec.W_E[users[:, j - self.n_virtual]], C)
            return base + value, base + value
        values = self.spec.W_E @ C.T  # (V, B)
        return base + values.min(0), base + values.max(0)

    def float_classes(self, i: int, users: np.ndarray, attended: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """For every user input at read position i, in float64 and all at once: a status
        (0 ok, 1 ReLU pattern undecided, 2 readout is not the encoded answer) and the size
        max |kappa + lambda t| of the worst shift per unit of leakage."""
        B, d = len(users), self.spec.d_model
        W_in, W_out, z, attn = self.mlp.W_in, self.mlp.W_out, self.z, self.attn
        # ReLU pattern at hard attention: pre = sum_{j in S} x_j K_j + const
        K = {i: W_in}
        for h, j in enumerate(attended):
            K[j] = K.get(j, 0) + self.VOW[h]
        lo, hi = np.tile(self.const_pre, (B, 1)), np.tile(self.const_pre, (B, 1))
        for j, Kj in K.items():
            base = self.P[j] @ Kj
            if j < self.n_virtual:
                a, b = self.lo_v[j][:, None] * Kj, self.hi_v[j][:, None] * Kj
                lo, hi = lo + base + np.minimum(a, b).sum(0), hi + base + np.maximum(a, b).sum(0)
            elif j < self.prompt:
                value = self.spec.W_E[users[:, j - self.n_virtual]] @ Kj
                lo, hi = lo + base + value, hi + base + value
            else:
                values = self.spec.W_E @ Kj
                lo, hi = lo + base + values.min(0), hi + base + values.max(0)
        off = hi <= PATTERN_TOLERANCE
        on = ~off & (lo >= -PATTERN_TOLERANCE)
        status = np.where(np.any(~on & ~off, axis=1), 1, 0)
        # readout direction g per user input, and the heads' w^h = W_V W_O g
        G = on.astype(float) @ (W_out[:, z][:, None] * W_in.T)
        G[:, z] += 1.0
        w = [G @ M.T for M in self.VO]
        coef = {i: G.copy()}
        for h, j in enumerate(attended):
            coef[j] = coef.get(j, 0) + w[h]
        constant = (G @ attn.b_O + sum((G @ attn.W_O[h].T) @ attn.b_V[h] for h in range(self.H))
                    + on.astype(float) @ (self.mlp.b_in * W_out[:, z]) + self.mlp.b_out[z])
        virtual = [j for j in coef if j < self.n_virtual]
        hits = {j: (coef[j] != 0) & self.varying[j] for j in virtual}
        count = sum((hits[j].sum(1) for j in virtual), np.zeros(B, dtype=int))
        tj = np.full(B, -1)
        tk = np.zeros(B, dtype=int)
        for j in virtual:
            found = hits[j].any(1)
            tj = np.where(found, j, tj)
            tk = np.where(found, hits[j].argmax(1), tk)
        rows = np.arange(B)
        ok_target = (count == 1) & (tj >= 0)
        weight = np.where(ok_target, [coef[int(j)][b, k] if j >= 0 else 0.0 for b, (j, k) in enumerate(zip(tj, tk))], 0.0)
        ok_target &= weight == 1.0
        rest_lo, rest_hi = constant.copy(), constant.copy()
        for j, C in coef.items():
            C = C.copy()
            C[rows[tj == j], tk[tj == j]] = 0.0
            a, b = self._slot_ranges(j, users, C)
            rest_lo, rest_hi = rest_lo + a, rest_hi + b
        ok_target &= np.maximum(np.abs(rest_lo), np.abs(rest_hi)) <= PATTERN_TOLERANCE
        status = np.where((status == 0) & ~ok_target, 2, status)
        m = i
        if m == 0:
            return status, np.zeros(B)
        total = sum(w)
        kap_lo, kap_hi, lam = np.zeros(B), np.zeros(B), np.zeros(B)
        for j in range(i + 1):
            mu = total - (m + 1) * sum((w[h] for h, jj in enumerate(attended) if jj == j), np.zeros_like(total))
            sel = rows[tj == j]
            lam[sel] = mu[sel, tk[sel]] / m
            mu[sel, tk[sel]] = 0.0
            a, b = self._slot_ranges(j, users, mu)
            kap_lo, kap_hi = kap_lo + a / m, kap_hi + b / m
        safe = np.maximum(tj, 0)
        t_lo, t_hi = self.lo_v[safe, tk], self.hi_v[safe, tk]
        size = np.max(np.abs(np.stack([kap_lo + lam * t_lo, kap_lo + lam * t_hi,
                                       kap_hi + lam * t_lo, kap_hi + lam * t_hi])), axis=0)
        return status, np.where(status == 0, size, 0.0)

    def exact_class(self, i: int, user: tuple[int, ...], attended: list[int],
                    scores: tuple[Poly, Poly, int]) -> PositionReading | None:
        """The same derivation in exact rationals (None if the readout is not the encoded answer)."""
        attn, W_in, W_out, b_in, z = self.attn, self.mlp.W_in, self.mlp.W_out, self.mlp.b_in, self.z
        slots = self.slots(i, user)
        on, _ = self.pattern(i, slots, attended)
        g = vec_add((1, {z: Fraction(1)}), *[(Fraction(float(W_out[u, z])), matvec(W_in, {int(u): Fraction(1)}))
                                              for u in np.flatnonzero(on) if W_out[u, z] != 0])
        w = [matvec(attn.W_V[h], matvec(attn.W_O[h], g)) for h in range(self.H)]
        coef = {i: dict(g)}
        for h, j in enumerate(attended):
            coef[j] = vec_add((1, coef.get(j, {})), (1, w[h]))
        constant = (dot(attn.b_O, g) + sum((dot(attn.b_V[h], matvec(attn.W_O[h], g)) for h in range(self.H)), Fraction(0))
                    + sum((Fraction(float(b_in[u])) * Fraction(float(W_out[u, z])) for u in np.flatnonzero(on)), Fraction(0))
                    + Fraction(float(self.mlp.b_out[z])))
        targets = [(j, k) for j, v in coef.items() if j < self.n_virtual for k in v if self.varying[j, k]]
        if len(targets) != 1 or coef[targets[0][0]][targets[0][1]] != 1:
            return None
        tj, tk = targets[0]
        rest_lo = rest_hi = constant
        for j, v in coef.items():
            a, b, _, _ = slots[j].exact_range({k: c for k, c in v.items() if (j, k) != (tj, tk)}, self.cache)
            rest_lo, rest_hi = rest_lo + a, rest_hi + b
        if rest_lo != 0 or rest_hi != 0:
            return None
        attended_score, other_score, m = scores
        t_range = (encoded(self.lo_v[tj, tk]), encoded(self.hi_v[tj, tk]))
        if m == 0:  # the query sees only the attended key: nothing leaks
            return PositionReading(ScoreRow(i, attended_score, other_score, 0, Fraction(0)), user,
                                   (Fraction(0), Fraction(0)), Fraction(0), t_range, (tj, tk), on,
                                   np.array([s_.pos for s_ in slots]), Fraction(0))
        total = vec_add(*[(1, wh) for wh in w])
        kap_lo = kap_hi = lam = Fraction(0)
        lows, highs = [], []
        for j in range(i + 1):
            mu = vec_add((1, total), *[(-(m + 1), w[h]) for h, jj in enumerate(attended) if jj == j])
            if j == tj:
                lam = mu.pop(tk, Fraction(0)) / m
            a, b, x_lo, x_hi = slots[j].exact_range(mu, self.cache)
            kap_lo, kap_hi = kap_lo + a / m, kap_hi + b / m
            lows.append(x_lo)
            highs.append(x_hi)
        corners = [(abs(k + lam * t), k, t, side, t_side) for k, side in ((kap_lo, 0), (kap_hi, 1))
                   for t, t_side in ((t_range[0], 0), (t_range[1], 1))]
        size, k, t, side, t_side = max(corners, key=lambda c: c[0])
        worst = np.array(lows if side == 0 else highs)
        worst[tj, tk] = (self.lo_v if t_side == 0 else self.hi_v)[tj, tk] + self.P[tj, tk]
        return PositionReading(ScoreRow(i, attended_score, other_score, m, size), user, (kap_lo, kap_hi), lam,
                               t_range, (tj, tk), on, worst, k + lam * t)


# --- the threshold, from the weights -------------------------------------------------------

def grid_readout_matches(spec: TransformerSpec, readout: int) -> bool:
    """The unembedding reads only the readout coordinate and is the lemma's grid readout:
    W_U[z, c] = 2c/V and b_U[c] = -(c/V)^2, each to 4 ulp (they are rounded once)."""
    V = spec.vocab_size
    grid = np.arange(V) / V
    others = np.delete(spec.W_U, readout, axis=0)
    close = lambda got, want: bool(np.all(np.abs(got - want) <= 4 * np.spacing(np.abs(want) + 1e-300)))
    return not np.any(others) and close(spec.W_U[readout], 2.0 * grid) and close(spec.b_U, -(grid**2))


def leak_at(row: ScoreRow, T: float) -> float:
    """l(T) = m e^{s_o} / (e^{s*} + m e^{s_o}) in float64."""
    gap = sum(float(a - b) * T**k for k, (a, b) in enumerate(zip(row.attended, row.other)))
    return float(row.others / (np.exp(gap) + row.others))


def worst_input_at(spec: TransformerSpec, found: PositionReading, readout: int, T: float) -> dict[str, Any]:
    """Run the numpy forward pass (weights built at T) on the worst input the reader found, and
    compare the readout's shift with the derived l(T) (kappa + lambda t); check that the hard-
    attention ReLU pattern is still the one the derivation used."""
    i, (tj, tk) = found.row.position, found.target
    x = found.worst_input[None]
    cache: dict[str, np.ndarray] = {}
    forward(spec, x, NUMPY, cache)
    mlp = spec.blocks[0].mlp
    pre = cache["blocks.0.resid_mid"][0, i] @ mlp.W_in + mlp.b_in
    t = float(x[0, tj, tk] - spec.W_pos[tj, tk])
    shift = float(cache["blocks.0.resid_post"][0, i, readout]) - t
    predicted = leak_at(found.row, T) * float(found.worst_shift)
    return {"T": T, "t": t, "shift": shift, "predicted": predicted, "difference": abs(shift - predicted),
            "pattern_kept": bool(np.all(pre[found.on] >= 0) and np.all(pre[~found.on] <= 0))}


def construction_threshold(name: str, build: Callable[[float | None], Construction],
                           sizes: dict[str, int]) -> dict[str, Any]:
    """T* of a one-layer construction: the model's symbolic proof (theorems.petrov_sec3), the
    readout lemma, and the leakage read off the weights (``read_leakage``) with the steps that
    tie the two together. ``value`` is the model's T* (the claim's stated threshold)."""
    threshold = THRESHOLDS[name]
    reading = read_leakage(lambda T: build(T))
    construction = build(None)
    V = construction.vocab.size
    readout = construction.spec.subspace("readout").start
    steps: dict[str, bool] = {f"model, symbolic sizes: {k}": v for k, v in threshold.prove().items()}
    steps.update({f"readout lemma: {k}": v for k, v in readout_lemma().items()})
    steps.update({f"weights: {k}": v for k, v in reading.preconditions.items()})
    steps["weights: the unembedding is the lemma's grid readout"] = grid_readout_matches(construction.spec, readout)
    weights: dict[str, Any] = {"read_positions": len(reading.positions)}
    if all(reading.preconditions.values()) and reading.positions:
        derived = from_scores(reading.rows, V, threshold, sizes)
        steps.update({f"weights: {k}": v for k, v in derived["steps"].items()})
        binding = next((p for p in reading.positions if p.row.position == derived["binding_position"]), None)
        weights.update({k: derived[k] for k in derived if k != "steps"})
        if binding is not None and derived.get("T*_value") is not None:
            at = worst_input_at(build(derived["T*_value"]).spec, binding, readout, derived["T*_value"])
            steps["weights: at T*, the worst input keeps the hard-attention ReLU pattern"] = at["pattern_kept"]
            steps[f"weights: at T*, the forward pass shifts the worst input's readout by l(T*)(kappa + lambda t) "
                  f"(to {SHIFT_TOLERANCE:g})"] = bool(at["difference"] <= SHIFT_TOLERANCE)
            steps["weights: that shift is the readout tolerance 1/(2V)"] = bool(
                abs(abs(at["predicted"]) - 1 / (2 * V)) <= SHIFT_TOLERANCE)
            weights["worst_input"] = {
                "read_position": binding.row.position, "user_input": construction.vocab.decode(np.array(binding.user))
                if binding.user else "", "visible_keys_not_attended": binding.row.others,
                "spread_c": str(binding.row.spread), "kappa": [str(k) for k in binding.kappa],
                "lambda": str(binding.slope), "t": [str(t) for t in binding.t_range],
                "float_search_excess": binding.search_gap, "forward_at_T*": at}
    else:
        steps["weights: the leakage model could be read"] = False
    return {"formula": f"T* = {threshold.critical}", "value": threshold.value(**sizes), "proof": steps,
            "from_the_weights": weights}


# --- the shared check of the construction claims -------------------------------------------

WRONG_ANSWER_CRITERION = ("refuted iff the same certificate over all inputs fails AND a concrete input is answered "
                          "wrongly (searched among the failing cases): a failing certificate alone could be looseness")


def perturbed_readout(spec: TransformerSpec, token: int, amount: float) -> TransformerSpec:
    """A copy of ``spec`` with the unembedding bias of ``token`` raised by ``amount``."""
    b_U = np.array(spec.b_U)
    b_U[token] += amount
    return TransformerSpec.build(spec.W_E, spec.W_pos, spec.blocks, spec.W_U, b_U,
                                 spec.attention_scale, spec.causal, spec.subspaces)


def find_counterexample(construction: Construction, spec: TransformerSpec, labels: list[np.ndarray],
                        rng: np.random.Generator) -> dict[str, Any] | None:
    """A concrete (task, user input) answered wrongly, searched inside the failing cases."""
    vocab = construction.vocab
    for label in labels:
        task, user = construction.witness(label, rng)
        if not construction.responds_correctly(task, user, spec)[0]:
            got = construction.respond(construction.virtual_tokens(task), user, spec)[0]
            return {"case": construction.describe_case(label), "user_input": vocab.decode(user[0]),
                    "expected": vocab.decode(construction.expected(task, user)[0]),
                    "generated": vocab.decode(got)}
    return None


def refute(name: str, construction: Construction, spec: TransformerSpec, rng: np.random.Generator,
           wrong_variant: str, could_fail_because: str, result: Any = None) -> Control:
    """The claim's checker on a wrong variant: certificate, then a concrete wrong answer.
    ``result``: the certificate of ``spec`` when the caller already computed it (the same
    certificate: ``certify_constructions`` / ``certify_readout``)."""
    if result is None:
        result = certify_construction(construction, spec, keep_failures=100)
    example = None if result.holds else find_counterexample(construction, spec, result.failing_examples, rng)
    measured = {"certificate_holds": result.holds, "cases": result.cases, "failing_cases": result.failing,
                "worst_margin": result.worst_margin, "counterexample": example}
    return Control(name, wrong_variant, WRONG_ANSWER_CRITERION, measured,
                   refuted=(not result.holds) and example is not None, could_fail_because=could_fail_because)


def readout_bias_control(construction: Construction, certificate: Any, rng: np.random.Generator,
                         factor: float) -> Control:
    """b_U[c*] += factor x the certified worst margin m, c* the competitor of that margin.
    The perturbed model differs from the certified one only in b_U, which the forward pass does
    not read: when ``certificate`` kept its residual boxes (``keep_readout``), the perturbed
    model's certificate is computed from them (``certify_readout``, the same result as a second
    pass over the cover)."""
    from verify.certificates.cover import certify_readout

    margin, competitor = float(certificate.worst_margin), certificate.worst_competitor
    token = 0 if competitor is None else int(competitor)
    amount = factor * max(margin, 0.0)
    symbol = construction.vocab.symbols[token]
    perturbed = perturbed_readout(construction.spec, token, amount)
    reused = (certify_readout(certificate, perturbed, keep_failures=100)
              if getattr(certificate, "readout", None) is not None else None)
    return refute(
        "perturbed_readout_bias", construction, perturbed, rng,
        f"unembedding bias of {symbol!r} raised by {factor:g} x the certified worst margin ({amount:.3g})",
        f"the certified margin m = {margin:.3g} is a lower bound on every logit gap, so a shift below m is provably "
        f"harmless; {factor:g} m breaks the model only if the true worst gap is below {factor:g} m. Had the "
        f"certificate been loose by more than a factor {factor:g}, the perturbed model would still answer every "
        f"input correctly and this control would not be refuted", result=reused)


def temperature_control(cold: Construction, rng: np.random.Generator, critical: float, delta: float,
                        result: Any = None) -> Control:
    """``result``: the certificate of ``cold`` if already computed (``certify_constructions``)."""
    return refute(
        "too_small_temperature", cold, cold.spec, rng, f"inverse temperature T* - {delta:g} = {critical - delta:.9g}",
        "the certificate could still have held at T* - delta if T* were not tight (the margin there still larger "
        "than the leak, e.g. if the worst input the derivation names were not a real input), and a failing "
        "certificate need not come with a concrete wrong answer", result=result)


def torch_parity(construction: Construction, rng: np.random.Generator, count: int = 64) -> float:
    """max |numpy logits - torch logits| on random tasks and inputs (float64 both)."""
    tasks = construction.random_tasks(rng, count)
    user = rng.integers(0, construction.vocab.size, size=(count, construction.n_user_tokens))
    tokens = np.concatenate([construction.prompt_tokens(user), construction.expected(tasks, user)[:, :-1]], 1)
    virtual = construction.virtual_tokens(tasks)
    ours = logits(construction.spec, forward(construction.spec, embed(construction.spec, tokens, virtual,
                                                                      construction.virtual_positions)))
    module = SpecTransformer(construction.spec)
    with torch.no_grad():
        theirs = module(module.embed_tokens(torch.from_numpy(tokens), torch.from_numpy(virtual),
                                            construction.virtual_positions)).numpy()
    return float(np.max(np.abs(ours - theirs)))


def causal_mask_leak(spec: TransformerSpec, rng: np.random.Generator, count: int = 8) -> dict[str, Any]:
    """A direct test of the causal mask of both implementations (numpy forward, torch module):
    on random_like(spec) (the construction's shapes with generic weights) and random residual
    inputs x (count, n, d), n = min(n_ctx, MASK_TEST_LENGTH), row b's inputs at positions >= k_b
    (k_b random in 1..n-1) are redrawn; the outputs at positions < k_b must not change.

    Generic weights, not the construction's: in the construction a key the mask wrongly lets
    through scores ~0 against a selected key's ~T (50 or 100), a weight below e^-50 that no
    float64 comparison can see (notes/mutants.md); with N(0, 1/d) weights a leaked key takes a
    weight of order 1/n and moves the output by O(0.1)."""
    generic = random_like(spec, rng)
    n = min(spec.n_ctx, MASK_TEST_LENGTH)
    x = rng.normal(size=(count, n, spec.d_model))
    cut = rng.integers(1, n, size=count)  # first changed position per row
    changed = x.copy()
    for row, k in enumerate(cut):
        changed[row, k:] = rng.normal(size=(n - k, spec.d_model))
    module = SpecTransformer(generic)
    with torch.no_grad(), torch_threads(1):
        outputs = {"numpy": (forward(generic, x), forward(generic, changed)),
                   "torch": tuple(module.residual(torch.from_numpy(a)).numpy() for a in (x, changed))}
    leak = {name: float(max(np.max(np.abs(a[row, :k] - b[row, :k])) for row, k in enumerate(cut)))
            for name, (a, b) in outputs.items()}
    later = float(min(np.max(np.abs(outputs["numpy"][0][row, k:] - outputs["numpy"][1][row, k:]))
                      for row, k in enumerate(cut)))
    return {"max_change_before_the_changed_position": leak, "tolerance": TORCH_PARITY_TOLERANCE,
            "min_change_at_or_after_it": later, "rows": count, "length": n, "spec": "random_like (N(0, 1/d) weights)",
            "holds": bool(spec.causal and max(leak.values()) <= TORCH_PARITY_TOLERANCE and later > 1e-6)}


def randomized(construction: Construction, rng: np.random.Generator) -> dict[str, Any]:
    tasks = construction.random_tasks(rng, RANDOM_INSTANCES)
    user = rng.integers(0, construction.vocab.size, size=(RANDOM_INSTANCES, construction.n_user_tokens))
    forced = construction.responds_correctly(tasks, user)
    few = slice(0, GREEDY_INSTANCES)
    greedy = construction.respond(construction.virtual_tokens(tasks[few]), user[few])
    greedy_ok = np.all(greedy == construction.expected(tasks[few], user[few]), axis=1)
    return {"instances": RANDOM_INSTANCES, "correct": int(forced.sum()),
            "greedy_generations": GREEDY_INSTANCES, "greedy_correct": int(greedy_ok.sum())}


def describe_worst(construction: Construction, worst: Any) -> str:
    return construction.describe_case(worst) if isinstance(worst, np.ndarray) else str(worst)


def positive(value: float) -> str:
    """'x > 0' or 'x <= 0' (the true comparator for a margin that must be positive)."""
    return f"{value:.3g} {'>' if value > 0 else '<='} 0"


def check_construction(
    context: Context,
    claim_id: str,
    build: Callable[[float | None], Construction],
    threshold: dict[str, Any],
    demo: Callable[[Construction], dict[str, Any]],
    delta: float = TIGHTNESS_DELTA,
    extra: dict[str, Any] | None = None,
) -> Finding:
    """The evidence and controls shared by every construction claim (module docstring).

    ``threshold``: {"formula": str, "value": T*, "proof": {step: bool}, ...} for the construction.
    ``extra``: further evidence entries; each may carry "holds" (False fails the evidence).
    """
    rng = context.rng(claim_id)
    construction = build(None)
    critical = threshold["value"]

    # The three certificates over one pass of the shared cover; the construction's keeps its
    # residual boxes for the readout-bias control (verify.certificates.certify_constructions).
    cold = build(critical - delta)
    certificate, above, cold_certificate = certify_constructions([construction, build(critical + delta), cold],
                                                                 keep_readout=True)
    rand = randomized(construction, rng)
    parity = torch_parity(construction, rng)
    mask = causal_mask_leak(construction.spec, rng)
    shown = demo(construction)
    proof = threshold["proof"]
    true_steps = sum(bool(v) for v in proof.values())

    details = {
        "config": construction.params(),
        "certificate": {"holds": certificate.holds, "cases": certificate.cases,
                        "worst_margin": certificate.worst_margin,
                        "worst_case": describe_worst(construction, certificate.worst_case)},
        "min_inverse_temperature": {
            **{k: v for k, v in threshold.items() if k != "proof"}, "proof": proof,
            "delta": delta, "certificate_holds_at_T*+delta": above.holds,
            "margin_at_T*+delta": above.worst_margin,
        },
        "randomized": rand,
        "torch_parity_max_abs": parity,
        "causal_mask_test": mask,
        "published_output": shown,
        **(extra or {}),
    }
    extras_hold = all(item.get("holds", True) for item in (extra or {}).values())
    holds = (certificate.holds and above.holds and true_steps == len(proof)
             and rand["correct"] == rand["instances"] and rand["greedy_correct"] == rand["greedy_generations"]
             and parity <= TORCH_PARITY_TOLERANCE and mask["holds"] and shown["matches"] and extras_hold)
    summary = (f"certificate {'holds' if certificate.holds else 'FAILS'} on {certificate.cases} cases "
               f"(worst margin {positive(certificate.worst_margin)}); T* = {critical:.6g}: "
               f"{true_steps}/{len(proof)} derivation steps true, margin at T*+{delta:g} "
               f"{positive(above.worst_margin)}; random {rand['correct']}/{rand['instances']}, greedy "
               f"{rand['greedy_correct']}/{rand['greedy_generations']}; torch |diff| "
               f"{compare(parity, TORCH_PARITY_TOLERANCE)}; causal mask (numpy, torch) leak "
               f"{compare(max(mask['max_change_before_the_changed_position'].values()), TORCH_PARITY_TOLERANCE)}"
               f"; published output "
               f"{'matches' if shown['matches'] else 'DIFFERS'}"
               + ("" if extras_hold else "; " + ", ".join(k for k, v in (extra or {}).items()
                                                          if not v.get("holds", True)) + " FAIL"))
    controls = (readout_bias_control(construction, certificate, rng, MARGIN_FACTOR),
                temperature_control(cold, rng, critical, delta, result=cold_certificate))
    return Finding(Evidence(holds, summary, Rung.CERTIFICATE, details), controls)


def _ascii() -> Vocabulary:
    return Vocabulary.printable_ascii()


@check("petrov.thm1.unconditional", controls=CONSTRUCTION_CONTROLS)
def unconditional(context: Context) -> Finding:
    def build(T: float | None) -> Unconditional:
        return Unconditional(_ascii()) if T is None else Unconditional(_ascii(), inverse_temperature=T)

    def demo(c: Construction) -> dict[str, Any]:
        target = demos.UNCONDITIONAL_TARGET
        out = c.vocab.decode(c.respond(c.virtual_tokens(c.parse_task(target)), np.zeros((1, 0), np.int64))[0])
        return {"target": target, "generated": out, "matches": out == target}

    return check_construction(context, "petrov.thm1.unconditional", build,
                              construction_threshold("unconditional", build, {"V": 94, "N": 20}), demo)


@check("petrov.thm2.conditional", controls=CONSTRUCTION_CONTROLS)
def conditional(context: Context) -> Finding:
    def build(T: float | None) -> Conditional:
        return Conditional(_ascii()) if T is None else Conditional(_ascii(), inverse_temperature=T)

    def demo(c: Construction) -> dict[str, Any]:
        task = c.parse_task(demos.case_flip(c.vocab.symbols))
        out = c.vocab.decode(c.respond(c.virtual_tokens(task), c.vocab.encode("f")[None])[0])
        return {"map": "flip letter case", "input": "f", "generated": out, "matches": out == "F"}

    return check_construction(context, "petrov.thm2.conditional", build,
                              construction_threshold("conditional", build, {"V": 94}), demo)


QUICK_RESPONSE_LENGTH = 3  # N0 under --quick (the full run uses 10)


@check("petrov.thm2.long-response", controls=CONSTRUCTION_CONTROLS)
def long_response(context: Context) -> Finding:
    """Default N0 = 10; under --quick N0 = QUICK_RESPONSE_LENGTH (the same checks and controls on a
    smaller instance: the certificate's cost grows with V^2 N0, 36 s at N0 = 10)."""
    n0 = QUICK_RESPONSE_LENGTH if context.quick else 10

    def build(T: float | None) -> LongResponse:
        if T is None:
            return LongResponse(_ascii(), response_length=n0)
        return LongResponse(_ascii(), response_length=n0, inverse_temperature=T)

    def demo(c: Construction) -> dict[str, Any]:
        task = c.parse_task(demos.animals_and_foods(c.vocab.symbols, n0))
        out = "b" + c.vocab.decode(c.respond(c.virtual_tokens(task), c.vocab.encode("b")[None])[0]).rstrip()
        expected = "b" + "lueberries"[:n0]
        return {"map": "capital -> animal, lower case -> food", "input": "b", "generated": out,
                "matches": out == expected}

    extra = {"quick_mode": {"quick": True, "N0": n0, "full_run_N0": 10}} if context.quick else None
    return check_construction(context, "petrov.thm2.long-response", build,
                              construction_threshold("long-response", build, {"V": 94, "N0": n0}), demo, extra=extra)


# --- petrov.sec3.capacity -------------------------------------------------------------------
#
# Evidence (Rung.CERTIFICATE): the exhaustive count. On the Theorem 1 model at V = 3, N = 4,
# every one of the V^N = 81 targets is put into the virtual token and the 81 greedy completions
# are counted: the claim holds iff they are 81 distinct completions, each its own target. A
# sample of 10,000 targets at the defaults (V = 94, N = 20) must be generated exactly as well
# (that all 94^20 are is the petrov.thm1.unconditional certificate).
#
# "n real tokens reach at most V^n behaviours" is true by definition (there are V^n prompts:
# pigeonhole). It is reported under "definitions", with the counts measured for illustration,
# and does not count toward the verdict.

CAPACITY_SMALL = {"V": 3, "N": 4}  # exhaustive: 3^4 = 81 targets, every real prompt up to n = 3
CAPACITY_SAMPLES = 10_000
CAPACITY_CONTROLS = ("too_small_temperature", "perturbed_readout_bias")
CAPACITY_CRITERION = ("the same exhaustive counter: refuted iff the V^N virtual tokens give fewer than V^N distinct "
                      "completions or some target is not generated")


def count_real_prompt_behaviours(spec: TransformerSpec, vocab_size: int, n: int) -> int:
    """Distinct greedy continuations (filling the context) over ALL V^n real-token prompts."""
    prompts = all_sequences(vocab_size, n)
    continuations = generate(spec, prompts, spec.n_ctx - n + 1)
    return len({row.tobytes() for row in continuations})


def random_like(spec: TransformerSpec, rng: np.random.Generator) -> TransformerSpec:
    """A generic transformer of the same shapes: every weight N(0, 1/d_model), embeddings N(0, 1)."""
    scale = {k: 1.0 if k in ("embed.W_E", "pos_embed.W_pos") else spec.d_model**-0.5
             for k in spec.named_arrays()}
    arrays = {k: rng.normal(scale=scale[k], size=v.shape) for k, v in spec.named_arrays().items()}
    return TransformerSpec.from_named_arrays(arrays, spec.n_layers, 1.0, spec.causal)


def count_virtual_behaviours(model: Unconditional, spec: TransformerSpec | None = None) -> dict[str, Any]:
    """All V^N targets through the virtual token: distinct completions, and how many are exact."""
    V, N = model.vocab.size, model.length
    targets = all_sequences(V, N)
    completions = model.respond(model.virtual_tokens(targets), np.zeros((len(targets), 0), np.int64), spec)
    exact = np.all(completions == targets, axis=1)
    out: dict[str, Any] = {"targets": V**N, "distinct_completions": len({row.tobytes() for row in completions}),
                           "generated_exactly": int(exact.sum())}
    wrong = np.flatnonzero(~exact)
    if wrong.size:
        out["first_wrong"] = {"target": model.vocab.decode(targets[wrong[0]]),
                              "generated": model.vocab.decode(completions[wrong[0]])}
    return out


def capacity_control(name: str, model: Unconditional, spec: TransformerSpec | None, wrong_variant: str,
                     could_fail_because: str) -> Control:
    counted = count_virtual_behaviours(model, spec)
    refuted = counted["distinct_completions"] < counted["targets"] or counted["generated_exactly"] < counted["targets"]
    return Control(name, wrong_variant, CAPACITY_CRITERION, counted, refuted, could_fail_because)


@check("petrov.sec3.capacity", controls=CAPACITY_CONTROLS)
def capacity(context: Context) -> Finding:
    rng = context.rng("petrov.sec3.capacity")
    V, N = CAPACITY_SMALL["V"], CAPACITY_SMALL["N"]
    small = Unconditional(Vocabulary.letters(V), length=N)
    exhaustive = count_virtual_behaviours(small)

    full = Unconditional(Vocabulary.printable_ascii())
    sample = full.random_tasks(rng, CAPACITY_SAMPLES)
    reached = int(full.responds_correctly(sample, np.zeros((len(sample), 0), np.int64)).sum())

    generic = random_like(small.spec, rng)
    real_as_virtual = small.respond(small.spec.W_E[:, None, :], np.zeros((V, 0), np.int64))
    definitions = {
        "statement": "n real tokens form V^n prompts, so they reach at most V^n behaviours (pigeonhole): true by "
                     "definition, not evidence; the counts below illustrate it and do not enter the verdict",
        "real_prompts": {f"n={n}": {"V^n": V**n, "construction": count_real_prompt_behaviours(small.spec, V, n),
                                    "random_model": count_real_prompt_behaviours(generic, V, n)}
                         for n in range(1, N)},
        "real_token_embeddings_in_the_virtual_slot": {
            "distinct": len({row.tobytes() for row in real_as_virtual}), "at_most_V": V},
    }
    complete = exhaustive["distinct_completions"] == V**N and exhaustive["generated_exactly"] == V**N
    holds = complete and reached == CAPACITY_SAMPLES
    summary = (f"exhaustive V={V}, N={N}: {exhaustive['distinct_completions']} distinct completions "
               f"{'=' if exhaustive['distinct_completions'] == V**N else '!='} V^N = {V**N}, "
               f"{exhaustive['generated_exactly']}/{V**N} generated exactly; V=94, N=20: {reached}/{CAPACITY_SAMPLES} "
               f"sampled targets generated; 'real prompts reach <= V^n' is a definition (pigeonhole), not evidence")
    details = {
        "exhaustive": {"V": V, "N": N, **exhaustive},
        "defaults": {"V": 94, "N": 20, "sampled_targets": CAPACITY_SAMPLES, "generated_exactly": reached,
                     "all_V^N_reachable": "by the petrov.thm1.unconditional certificate (94^20 ~ 2.9e39)"},
        "definitions": definitions,
    }

    critical = THRESHOLDS["unconditional"].value(V=V, N=N)
    cold = Unconditional(Vocabulary.letters(V), length=N, inverse_temperature=critical - TIGHTNESS_DELTA)
    certificate = certify_construction(small)
    token = int(certificate.worst_competitor or 0)
    amount = MARGIN_FACTOR * max(certificate.worst_margin, 0.0)
    controls = (
        capacity_control(
            "too_small_temperature", cold, None,
            f"the V={V}, N={N} model at T* - {TIGHTNESS_DELTA:g} = {critical - TIGHTNESS_DELTA:.9g}",
            "a wrong completion need not collide with another one, and T* need not be tight: had the leak at "
            "T* - delta stayed below the readout tolerance on every target, all 81 completions would be correct and "
            "distinct"),
        capacity_control(
            "perturbed_readout_bias", small, perturbed_readout(small.spec, token, amount),
            f"unembedding bias of {small.vocab.symbols[token]!r} raised by {MARGIN_FACTOR:g} x the certified worst "
            f"margin ({amount:.3g})",
            f"below the certified margin ({certificate.worst_margin:.3g}) the shift is provably harmless; at "
            f"{MARGIN_FACTOR:g} x it changes a completion only if the true worst logit gap is below that, and the "
            "changed completions could still all have been distinct"),
    )
    return Finding(Evidence(holds, summary, Rung.CERTIFICATE, details), controls)


# --- petrov.thm2.two-token ------------------------------------------------------------------

TWO_TOKEN_DELTA = 1e-4  # in T: float64 rounding moves V = 10's certified threshold by ~1e-5
FLOAT32_VOCABS = range(2, MAX_VOCAB_FLOAT64 + 1)
FLOAT32_MAPS = 20


FLOAT32_CHUNK = 1024  # sequences per forward call of float32_logits


def float32_logits(vocab_size: int, maps: int = FLOAT32_MAPS, seed: int = 0, inverse_temperature: float = 100.0,
                   threads: int = 1, chunk: int | None = FLOAT32_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """The two-token model run in float32 (torch module cast to float32, virtual tokens rounded
    to float32) on ``maps`` random maps plus the leakage witnesses, every (u0, u1) pair: the
    logits (float32) and the expected tokens. The sequences go through the module ``chunk`` at a
    time (None: all at once) on ``threads`` intra-op threads: every operation of the module acts
    on each sequence separately, and one thread with chunks of 1024 sequences (whose activations
    stay in cache) is 2-5x faster on the shared 2-core machine than one call on two threads, with
    bit-identical logits for every V (tests/test_two_token_speed.py)."""
    construction = TwoToken(Vocabulary.letters(vocab_size), inverse_temperature)
    rng = np.random.default_rng(seed)
    witness_tasks, _ = leakage_witnesses(construction)
    tasks = np.concatenate([construction.random_tasks(rng, maps), witness_tasks[::vocab_size]])
    users = construction.all_user_inputs()
    t_idx = np.repeat(np.arange(len(tasks)), len(users))
    u_idx = np.tile(np.arange(len(users)), len(tasks))
    module = SpecTransformer(construction.spec).float()
    tokens = torch.from_numpy(construction.prompt_tokens(users[u_idx]))
    virtual = torch.from_numpy(construction.virtual_tokens(tasks)[t_idx].astype(np.float32))
    step = chunk or len(tokens)
    with torch.no_grad(), torch_threads(threads):
        out = torch.cat([module(module.embed_tokens(tokens[i:i + step], virtual[i:i + step],
                                                    construction.virtual_positions))
                         for i in range(0, len(tokens), step)])
    return out.numpy(), construction.expected(tasks[t_idx], users[u_idx])[:, 0]


def float32_accuracy(vocab_size: int, maps: int = FLOAT32_MAPS, seed: int = 0,
                     inverse_temperature: float = 100.0) -> dict[str, Any]:
    """How many pairs the float32 model answers right (``float32_logits``)."""
    out, want = float32_logits(vocab_size, maps, seed, inverse_temperature)
    predicted = torch.from_numpy(out)[:, -1].argmax(-1).numpy()  # torch's argmax, as before
    correct = int((predicted == want).sum())
    return {"V": vocab_size, "pairs": len(want), "correct": correct, "accuracy": correct / len(want)}


def remainder_gains(construction: TwoToken) -> list[Fraction]:
    """For digit n = 0..V-2, the coefficient from rem_n to rem_{n+1} through the ramp block's MLP
    (the pass-through unit), sum_u W_in[rem_n, u] W_out[u, rem_{n+1}], read exactly off the weights."""
    spec, layout, V = construction.spec, construction.layout, construction.vocab.size
    gains = []
    for n in range(V - 1):
        mlp = spec.blocks[1 + 2 * n].mlp
        row, col = layout.index("rem", n), layout.index("rem", n + 1)
        gains.append(sum((Fraction(float(mlp.W_in[row, u])) * Fraction(float(mlp.W_out[u, col]))
                          for u in range(mlp.W_in.shape[1])), Fraction(0)))
    return gains


def two_token_threshold(build: Callable[[float | None], TwoToken], vocab_size: int) -> dict[str, Any]:
    """The two-token T*: the symbolic derivation (theorems.petrov_sec3.two_token_thresholds)
    and the steps that tie its error model to the weights (front leakage, remainder gains)."""
    construction = build(None)
    rho = construction.ramp_width
    derived = two_token_thresholds(vocab_size, rho)
    steps = {f"model, symbolic V: {k}": v for k, v in derived["checks"].items()}
    reading = read_leakage(lambda T: build(T), readout="rem", offset=0)
    steps.update({f"weights: {k}": v for k, v in reading.preconditions.items()})
    front: dict[str, Any] = {}
    if all(reading.preconditions.values()) and reading.positions:
        worst = reading.positions[0]
        gains = remainder_gains(construction)
        tied = two_token_front_from_scores(worst.row, worst.kappa[0], worst.slope, gains, vocab_size)
        steps.update({f"weights: {k}": v for k, v in tied.items()})
        front = {"read_position": worst.row.position, "visible_keys_not_attended": worst.row.others,
                 "worst_user_input": construction.vocab.decode(np.array(worst.user)),
                 "rem0_shift_per_leak": f"{worst.kappa[0]} + ({worst.slope}) x", "gains": [str(g) for g in gains]}
    else:
        steps["weights: the front leakage model could be read"] = False
    return {"formula": f"T* = {derived['certified_formula']} (rho = ramp width = {rho})",
            "value": derived["certified"], "proof": steps, "from_the_weights": front,
            "witness": {"formula": f"T_w = {derived['witness_formula']}", "value": derived["witness"],
                        "meaning": "below T_w the all-(V-1) row answers its last digit wrongly"}}


@contextmanager
def one_thread() -> Iterator[None]:
    """numpy's BLAS and torch on one thread each for the block. On the shared 2-core machine a
    second BLAS thread waits on a busy core: the 10,000 random tasks of ``randomized`` took 2-7 s
    instead of 0.3 s under load. The two-token report is the same, bit for bit, on one thread as
    on two (verify.bench.compare against the reference; tests/test_two_token_speed.py)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"), torch_threads(1):
        yield


@check("petrov.thm2.two-token", controls=CONSTRUCTION_CONTROLS)
def two_token(context: Context) -> Finding:
    with one_thread():
        return _two_token(context)


def _two_token(context: Context) -> Finding:
    letters = Vocabulary.letters(10)

    def build(T: float | None) -> TwoToken:
        return TwoToken(letters) if T is None else TwoToken(letters, inverse_temperature=T)

    def demo(c: Construction) -> dict[str, Any]:
        """The notebook's test: a seeded random map over A-J, all 100 pairs by greedy decoding."""
        task = c.random_tasks(np.random.default_rng(0), 1)
        users = c.all_user_inputs()
        got = c.respond(np.repeat(c.virtual_tokens(task), len(users), axis=0), users)
        correct = int(np.sum(got == c.expected(np.repeat(task, len(users), axis=0), users)))
        return {"map": "random map over A-J (seed 0)", "pairs": len(users), "correct": correct,
                "matches": correct == len(users)}

    threshold = two_token_threshold(build, 10)
    largest = TwoToken(Vocabulary.letters(MAX_VOCAB_FLOAT64))
    at_largest = certify_construction(largest)
    try:
        TwoToken(Vocabulary.letters(MAX_VOCAB_FLOAT64 + 1))
        refused = None
    except ConstructionError as exc:
        refused = str(exc)
    measured = [float32_accuracy(V) for V in FLOAT32_VOCABS]
    exact32 = [m["V"] for m in measured if m["correct"] == m["pairs"]]
    largest32 = max((V for V in exact32 if all(W in exact32 for W in range(2, V + 1))), default=None)
    extra = {
        "float64_precision": {
            "holds": at_largest.holds and refused is not None,
            "largest_exact_V": MAX_VOCAB_FLOAT64,
            f"certificate_at_V={MAX_VOCAB_FLOAT64}": at_largest.holds,
            f"V={MAX_VOCAB_FLOAT64 + 1}_refused": refused,
            "argument": "V^V/2 rows encode into [1/2, 1), which holds 2^52 float64 values: "
                        f"{rows_in_top_binade(MAX_VOCAB_FLOAT64):.3e} fit, "
                        f"{rows_in_top_binade(MAX_VOCAB_FLOAT64 + 1):.3e} do not",
        },
        "float32_measured": {
            "largest_V_all_correct": largest32,
            "counting_limit": largest_vocab_for_precision(24),
            "per_V": {m["V"]: f"{m['correct']}/{m['pairs']}" for m in measured},
        },
    }
    return check_construction(context, "petrov.thm2.two-token", build, threshold, demo,
                              delta=TWO_TOKEN_DELTA, extra=extra)
