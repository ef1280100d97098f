"""Interval arithmetic with outward rounding, run through the one forward pass.

A :class:`Box` stands for every real array between two float64 arrays ``lo <= hi``.
:class:`IntervalOps` implements the ``Ops`` interface of :mod:`constructions.forward`, so that
``forward(spec, box, IntervalOps())`` returns a box that contains the exact (real-arithmetic)
forward pass of EVERY input in the input box. One evaluation therefore certifies a whole set of
inputs at once.

Notation: u = 2^-53 (unit roundoff), eta = 2^-1074 (smallest subnormal), tiny = 2^-1022
(smallest normal), gamma_k = k u / (1 - k u); fl(e) is e evaluated in float64 with
round-to-nearest (numpy or BLAS, any summation order, with or without FMA); x^+ = max(x, 0),
x^- = min(x, 0).

Floating-point facts used (binary64; overflow is discussed at the end):
(F1) one operation on floats: fl(a o b) = (a o b)(1 + d) + e, |d| <= u, |e| <= eta/2, and e = 0
     for + and - (Higham 2002, Sec. 2.1). So for a, b >= 0: fl(a + b) >= (a + b)(1 - u) and
     fl(a b) >= a b (1 - u) - eta/2.
(F2) for a float c, fl(c - fl(fl(phi |c|) + eta)) <= pred(c) and fl(c + fl(fl(phi |c|) + eta))
     >= succ(c), phi = u (1 + 2u) (Rump, Zimmermann, Boldo, Melquiond, BIT 49, 2009). Hence
     ``_down(fl(a o b)) <= a o b <= _up(fl(a o b))`` for ONE rounded operation o on floats,
     in four vector passes (np.nextafter is several times slower).
(F3) a sum of n products (or terms), in any order: |fl(s) - s| <= gamma_n sum |terms| + n eta
     (Higham 2002, Thm 3.1 and Sec. 3.1; the eta term covers underflowing products). For
     nonnegative terms this gives s <= (fl(s) + n eta) / (1 - gamma_n).
(F4) for 0 <= a, b <= 2^25: gamma_a / (1 - gamma_b) <= gamma_{a+1},
     gamma_a (1 + gamma_b) <= gamma_{a+1}, gamma_a + gamma_1 <= gamma_{a+1},
     (1 - gamma_a)(1 - u) >= 1 - gamma_{a+1}, gamma_{a+k} - gamma_a >= k u (expand; e.g.
     (gamma_{a+1} - gamma_a / (1 - gamma_b)) (1-au)(1-(a+1)u)(1-2bu) / u
     = 1 - (ab + 2b) u + ab(a+1) u^2 > 0).
(F5) ``_radius(spread, mag, n)`` returns R such that, for every float v with
     |v| <= 2 mag + 2^50 eta, fl(v - R) <= v - T and fl(v + R) >= v + T, where
     T = spread + gamma_{n+6} mag + (3n+3) eta: the last rounding is folded into R (proof at
     the function), so no separate outward-rounding pass is needed.

Dot products. linear, matmul and the logit margins all produce, per output, float values
v_lo, v_hi and float arrays spread, mag >= 0 (spread may be absent) such that the exact set of
results lies in [v_lo - spread - e, v_hi + spread + e] with e <= gamma_{n+6} mag + (3n+3) eta,
n the number of products per output, and |v| <= 2 mag + 2^50 eta; the box is then
[fl(v_lo - R_lo), fl(v_hi + R_hi)] with R = _radius(spread, mag, n), sound by (F5).
- linear, x W + b with exact float W, b, endpoint form: for x in [lo, hi] the exact hull is
      [lo W^+ + hi W^- + b,  hi W^+ + lo W^- + b]      (each x_k w_kj is monotone in x_k),
  v_lo, v_hi are these sums in float, mag = fl(M |W| + |b|) with M = max(|lo|, |hi|) >= |x|
  (exact). By (F3), |v - exact| <= gamma_{n+2} E + 2n eta with E = M |W| + |b| (the two signed
  halves and b: at most n + 2 roundings deep), mag >= (1 - gamma_{n+1}) E - (n+1) eta, so by
  (F4) e <= gamma_{n+3} mag + (2n+1) eta, and |v| <= (1 + gamma_{n+2}) E + 2n eta
  <= 2 mag + 4(n+1) eta.
  Only rows of W that are not entirely zero are read (a zero row adds exactly 0 for every real
  input), so n counts the nonzero weights per output where W is sparse and the rows read where
  it is dense. Output columns with a zero column of W and a zero bias are exactly 0. Where every
  output copies a single input times a weight w and b = 0, the output is [lo w, hi w] (swapped
  for w < 0): exact for w = +-1, else rounded by (F2). A lower endpoint is raised to 0 where the
  exact one is a sum of nonnegative terms (W >= 0, b >= 0, lo >= 0); sound, and it keeps
  attention inputs on the cheap nonnegative paths below.
- matmul of two boxes. If a >= 0 (attention weights, and here also queries and keys) the exact
  hull is, entrywise,
      lo = a_lo b_lo^+ + a_hi b_lo^-,   hi = a_hi b_hi^+ + a_lo b_hi^-
  (a b is increasing in b for a >= 0, and each signed part is monotone in a); each is computed
  as P + Q with mag = P - Q (mag = v when b >= 0: then lo is also raised to 0), and by (F3), (F4)
  e <= gamma_{n+2} mag + (2n+1) eta. Otherwise midpoint-radius (Rump 1999):
  |a b - a_c b_c| <= |a_c| b_r + a_r (|b_c| + b_r) entrywise, v = fl(a_c b_c),
  spread = fl(|a_c| b_r + a_r t), t = fl(|b_c| + b_r), mag = fl((|a_c| + a_r) t). The exact radius
  S = |a_c| b_r + a_r (|b_c| + b_r) is <= (spread + 2n eta) / (1 - gamma_{n+2}) (the spread has
  n + 1 roundings, t one more), i.e. <= spread + gamma_{n+3} spread + (2n+1) eta; with the
  center's gamma_n |a_c||b_c| + n eta and spread <= (1 + gamma_{n+2}) S + 2n eta this is
  <= spread + gamma_{n+4} E + (3n+2) eta, E = (|a_c| + a_r)(|b_c| + b_r) = |a_c||b_c| + S, and
  mag >= (1 - gamma_{n+2}) E - n eta, so e <= gamma_{n+5} mag + (3n+3) eta.
- logit margins (W_U[:, y] - W_U[:, c]) . x + b_U[y] - b_U[c]: as linear, where the differences
  of weights are themselves rounded once (relative error <= u each, adding at most gamma_1 E,
  covered by counting more terms).
Other operations:
- add: endpoints by (F2); exact (no rounding) where one operand is exactly 0 (a head writing
  into an empty subspace). scale: by (F2), exact for 1.0. relu: monotone and exact.
- softmax: bounds at the two worst corners of each row, see :meth:`IntervalOps.softmax`.
Overflow: an infinite or NaN endpoint can only widen a box (v -/+ inf) or make it NaN, and NaN
means "no information": every operation propagates it or replaces it by the trivially sound
bound (softmax weights in [0, 1]), and the cover counts a NaN margin as a failure.

The bounds are sound but not tight: they ignore correlations (e.g. that a row of attention
weights sums to 1), so a certificate can fail near a threshold where the exact statement still
holds; it never passes where the statement fails.

Speed. The constructions write a few named subspaces of a wide residual stream with sparse
weights, and a certificate runs ~10^5 boxes, so every pass over the full residual width costs
seconds. Weights are analysed once (which rows are read, which columns written, how many
nonzeros per column; cached by content), and a residual update that writes only some
coordinates is kept as those columns over the untouched base (:class:`Box`): the full stream is
never copied.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

UNIT_ROUNDOFF = 2.0**-53
SMALLEST_SUBNORMAL = 2.0**-1074
SMALLEST_NORMAL = 2.0**-1022
EXP_ULPS = 4.0  # assumed bound on the error of np.exp (glibc and numpy's SIMD exp stay below it)
_PHI = UNIT_ROUNDOFF * (1.0 + 2.0 * UNIT_ROUNDOFF)  # exactly 2^-53 + 2^-105
SPARSE_TERMS = 4  # at most this many nonzeros per column: gather instead of a dense BLAS product


def gamma(n: int) -> float:
    """gamma_n = n u / (1 - n u): relative bound on the rounding error of an n-term float sum."""
    return n * UNIT_ROUNDOFF / (1.0 - n * UNIT_ROUNDOFF)


def _down(x: np.ndarray) -> np.ndarray:
    """A float <= pred(x) elementwise (F2); x finite or -inf (+inf gives NaN: no information)."""
    e = np.abs(x)
    e *= _PHI
    e += SMALLEST_SUBNORMAL
    return np.subtract(x, e, out=e)


def _up(x: np.ndarray) -> np.ndarray:
    """A float >= succ(x) elementwise (F2); x finite or +inf (-inf gives NaN: no information)."""
    e = np.abs(x)
    e *= _PHI
    e += SMALLEST_SUBNORMAL
    return np.add(x, e, out=e)


def _radius(spread: np.ndarray | None, mag: np.ndarray, n: int) -> np.ndarray:
    """R with fl(v - R) <= v - T and fl(v + R) >= v + T for |v| <= 2 mag + 2^50 eta (F5),
    T = spread + gamma_{n+6} mag + (3n+3) eta; spread, mag >= 0 floats (spread None means 0).

    R = fl(fl(A + B) + k) with A = fl(spread (1 + 6u)), B = fl(g mag), g = fl(gamma_{n+9}) >=
    gamma_{n+9} (1 - u), k = (3n+7) eta. Rounding of the final v - R:
    fl(v - R) <= v - R + u |v| + u R, so it suffices that R (1 - u) >= T + u |v|, and
    u |v| <= 2u mag + eta. By (F1),
    R (1 - u) >= (1-u)^4 (1 + 6u) spread + (1-u)^4 g mag - eta + (1-u)^2 k, and
    (1-u)^4 (1 + 6u) >= 1,  (1-u)^5 gamma_{n+9} >= gamma_{n+6} + 2u  (F4),
    (1-u)^2 (3n+7) - 1 >= 3n+4. The same holds for fl(v + R).
    """
    if n > 2**25:
        raise ValueError(f"dot products of {n} terms exceed the range of the error analysis (F4)")
    out = mag * gamma(n + 9)
    if spread is not None:
        out += spread * (1.0 + 6.0 * UNIT_ROUNDOFF)
    out += (3 * n + 7) * SMALLEST_SUBNORMAL
    return out


def _midrad(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(c, r) with [lo, hi] inside [c - r, c + r] exactly; r is None when lo == hi (a point).

    c = fl(lo/2 + hi/2); x - c <= hi - c <= succ(fl(hi - c)) and c - x <= succ(fl(c - lo)) for x
    in [lo, hi], and _up(max(p, q)) >= succ(max(p, q)) >= max(succ(p), succ(q)).
    """
    if lo is hi or np.array_equal(lo, hi):
        return lo, None
    c = lo * 0.5
    c += hi * 0.5
    return c, _up(np.maximum(hi - c, c - lo))


def _nonnegative(a: np.ndarray) -> bool:
    return a.size == 0 or bool(a.min() >= 0)


def _magnitude(lo: np.ndarray, hi: np.ndarray, nonnegative: bool) -> np.ndarray:
    """M = max(|lo|, |hi|) >= |x| for every x in [lo, hi] (exact); = hi when lo >= 0."""
    return hi if nonnegative else np.maximum(np.abs(lo), np.abs(hi))


class _Index:
    """Fixed positions along the last axis, gathered with slices where they run consecutively."""

    __slots__ = ("idx", "key", "runs", "size")

    def __init__(self, idx: np.ndarray) -> None:
        self.idx = np.asarray(idx, dtype=np.intp).ravel()
        self.size = len(self.idx)
        self.key = self.idx.tobytes()
        breaks = np.flatnonzero(np.diff(self.idx) != 1) + 1
        starts, stops = np.r_[0, breaks], np.r_[breaks, self.size]
        # runs: (first output position, slice of the source axis)
        self.runs = [
            (int(a), slice(int(self.idx[a]), int(self.idx[b - 1]) + 1))
            for a, b in zip(starts, stops)
            if b > a
        ]

    def take(self, a: np.ndarray) -> np.ndarray:
        """a[..., idx]; may be a view of ``a`` (never write into it)."""
        if len(self.runs) == 1:
            return a[..., self.runs[0][1]]
        if len(self.runs) <= 8:
            return np.concatenate([a[..., s] for _, s in self.runs] or [a[..., :0]], axis=-1)
        return np.take(a, self.idx, axis=-1)

    def put(self, out: np.ndarray, values: np.ndarray) -> None:
        """out[..., idx] = values."""
        if len(self.runs) <= 8:
            for start, s in self.runs:
                out[..., s] = values[..., start : start + (s.stop - s.start)]
        else:
            out[..., self.idx] = values


_LOOKUPS: dict[tuple[bytes, bytes], tuple[_Index, _Index, _Index, _Index]] = {}


def _lookup(cols: _Index, index: _Index) -> tuple[_Index, _Index, _Index, _Index]:
    """Where coordinates ``index`` are found in a box stored as columns ``cols`` over a base:
    (positions in cols, their output positions, coordinates read from the base, their output
    positions)."""
    key = (cols.key, index.key)
    if key not in _LOOKUPS:
        if len(_LOOKUPS) > 256:
            _LOOKUPS.clear()
        pos = np.minimum(np.searchsorted(cols.idx, index.idx), max(cols.size - 1, 0))
        found = (cols.idx[pos] == index.idx) if cols.size else np.zeros(index.size, dtype=bool)
        _LOOKUPS[key] = (
            _Index(pos[found]),
            _Index(np.flatnonzero(found)),
            _Index(index.idx[~found]),
            _Index(np.flatnonzero(~found)),
        )
    return _LOOKUPS[key]


class Box:
    """Every real array between ``lo`` and ``hi`` (same shape, lo <= hi elementwise).

    Usually the two arrays. A result that changes only some coordinates of the last axis (a
    head or an MLP writing one residual subspace) is kept lazily as *columns over a base*: the
    box equals the ``base`` box (itself possibly columns over a base) except at last-axis
    coordinates ``cols``, which are [cols_lo, cols_hi]; without a base everything outside
    ``cols`` is exactly 0. ``lo`` and ``hi`` materialise on first use; the interval ops read
    columns without materialising.
    """

    __slots__ = ("_base", "_cols", "_cols_hi", "_cols_lo", "_hi", "_lo", "_shape")

    def __init__(self, lo: np.ndarray, hi: np.ndarray) -> None:
        if lo.shape != hi.shape:
            raise ValueError(f"box endpoints differ in shape: {lo.shape} vs {hi.shape}")
        self._lo, self._hi = lo, hi
        self._base = self._cols = self._cols_lo = self._cols_hi = None
        self._shape = lo.shape

    @classmethod
    def _columns(
        cls,
        base: Box | None,
        shape: tuple[int, ...],
        cols: _Index,
        cols_lo: np.ndarray,
        cols_hi: np.ndarray,
    ) -> Box:
        """``base`` (a box, or None for zeros) with [..., cols] replaced by [cols_lo, cols_hi]."""
        box = cls.__new__(cls)
        box._lo = box._hi = None
        box._base, box._cols, box._cols_lo, box._cols_hi = base, cols, cols_lo, cols_hi
        box._shape = tuple(shape)
        return box

    @classmethod
    def point(cls, x: np.ndarray) -> Box:
        x = np.asarray(x, dtype=np.float64)
        return cls(x, x.copy())

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def lo(self) -> np.ndarray:
        if self._lo is None:
            self._lo = self._materialise(
                None if self._base is None else self._base.lo, self._cols_lo
            )
        return self._lo

    @property
    def hi(self) -> np.ndarray:
        if self._hi is None:
            self._hi = self._materialise(
                None if self._base is None else self._base.hi, self._cols_hi
            )
        return self._hi

    def _materialise(self, base: np.ndarray | None, values: np.ndarray) -> np.ndarray:
        out = np.zeros(self._shape) if base is None else base.copy()
        self._cols.put(out, values)
        return out

    @property
    def _zero_outside_columns(self) -> bool:
        return self._cols is not None and self._base is None

    def take(self, index: _Index) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi)[..., index] without materialising; results may be views (read only)."""
        if self._cols is None:
            return index.take(self._lo), index.take(self._hi)
        in_src, in_dst, out_src, out_dst = _lookup(self._cols, index)
        if out_src.size == 0:
            return in_src.take(self._cols_lo), in_src.take(self._cols_hi)
        below = (None, None) if self._base is None else self._base.take(out_src)
        result = []
        for values, base in zip((self._cols_lo, self._cols_hi), below):
            out = np.zeros(values.shape[:-1] + (index.size,))
            in_dst.put(out, in_src.take(values))
            if base is not None:
                out_dst.put(out, base)
            result.append(out)
        return result[0], result[1]

    def reshape(self, *shape: int) -> Box:
        return Box(self.lo.reshape(*shape), self.hi.reshape(*shape))

    def transpose(self, *axes: int) -> Box:
        return Box(self.lo.transpose(*axes), self.hi.transpose(*axes))

    def __getitem__(self, index) -> Box:
        if self._cols is not None and _indexes_leading_axes(index, len(self._shape)):
            base = None if self._base is None else self._base[index]
            cols_lo = self._cols_lo[index]
            return Box._columns(
                base,
                cols_lo.shape[:-1] + self._shape[-1:],
                self._cols,
                cols_lo,
                self._cols_hi[index],
            )
        return Box(self.lo[index], self.hi[index])

    @property
    def width(self) -> np.ndarray:
        return self.hi - self.lo


def _indexes_leading_axes(index, ndim: int) -> bool:
    """True if ``index`` (basic or integer-array indexing) leaves the last axis whole."""
    items = index if isinstance(index, tuple) else (index,)
    return len(items) < ndim and all(
        isinstance(i, (int, np.integer, slice))
        or (isinstance(i, np.ndarray) and i.dtype.kind in "iu")
        for i in items
    )


@dataclass(frozen=True, eq=False)
class _Slot:
    """The s-th nonzero weight of every live output column (weight 0 where a column has fewer)."""

    position: _Index  # (L,) positions within the rows read
    weight: np.ndarray | None  # (L,); None when all ones
    abs_weight: np.ndarray | None
    signs: str  # "nonnegative", "nonpositive" or "mixed"


@dataclass(frozen=True, eq=False)
class _LinearPlan:
    """What ``x @ W + b`` needs of W and b, computed once per weight content.

    live: output columns that can be nonzero (W column or bias nonzero); the others are exactly 0.
    kind "copy":   each live output = w * x[src] (one nonzero per column, b = 0 there);
                   ``copy`` says whether every w is 1, every |w| is 1, or neither
                   ("ones", "signs", "scaled");
    kind "sparse": at most SPARSE_TERMS nonzeros per column, as slots (see _Slot);
    kind "dense":  the block W[rows][:, live], split into W^+ and W^-.
    """

    W: np.ndarray
    b: np.ndarray
    live: _Index
    columns_output: bool  # few live columns: return columns over a zero base
    kind: str
    src: _Index | None = None
    weight: np.ndarray | None = None
    copy: str = ""
    rows: _Index | None = None
    terms: int = 0  # products per output: the n of the error bound
    slots: tuple[_Slot, ...] = ()
    positive: np.ndarray | None = None  # W^+ block
    negative: np.ndarray | None = None  # W^- block, None if W >= 0
    abs_block: np.ndarray | None = None
    b_live: np.ndarray | None = None
    abs_b_live: np.ndarray | None = None
    nonnegative: bool = False  # W >= 0 and b >= 0: lo >= 0 in gives lo >= 0 out


def _plan_linear(W: np.ndarray, b: np.ndarray) -> _LinearPlan:
    W = np.array(W, dtype=np.float64)
    b = np.array(b, dtype=np.float64)
    nonzero = W != 0
    live = np.flatnonzero(nonzero.any(axis=0) | (b != 0))
    W_live, nz_live, b_live = W[:, live], nonzero[:, live], b[live]
    counts = nz_live.sum(axis=0)
    common = {"W": W, "b": b, "live": _Index(live), "columns_output": 2 * len(live) <= W.shape[1]}
    if len(live) and np.all(counts == 1) and not b_live.any():
        src = nz_live.argmax(axis=0)
        weight = W_live[src, np.arange(len(live))]
        copy = (
            "ones"
            if np.all(weight == 1.0)
            else "signs"
            if np.all(np.abs(weight) == 1.0)
            else "scaled"
        )
        return _LinearPlan(kind="copy", src=_Index(src), weight=weight, copy=copy, **common)
    rows = np.flatnonzero(nz_live.any(axis=1))
    terms = int(counts.max()) if len(live) else 0
    common.update(
        rows=_Index(rows),
        b_live=b_live,
        abs_b_live=np.abs(b_live),
        nonnegative=bool(np.all(W_live >= 0) and np.all(b_live >= 0)),
    )
    if terms <= SPARSE_TERMS and terms < len(rows):
        position = np.full(W.shape[0], -1)
        position[rows] = np.arange(len(rows))
        columns, sources = np.nonzero(nz_live.T)  # sorted by column, then by row
        rank = np.arange(len(columns)) - np.searchsorted(
            columns, columns
        )  # s-th nonzero of its column
        slots = []
        for s in range(terms):
            here = rank == s
            pos = np.zeros(len(live), dtype=np.intp)
            weight = np.zeros(len(live))
            pos[columns[here]] = position[sources[here]]
            weight[columns[here]] = W_live[sources[here], columns[here]]
            ones = bool(np.all(weight == 1.0))
            signs = (
                "nonnegative"
                if np.all(weight >= 0)
                else "nonpositive"
                if np.all(weight <= 0)
                else "mixed"
            )
            slots.append(
                _Slot(
                    _Index(pos), None if ones else weight, None if ones else np.abs(weight), signs
                )
            )
        return _LinearPlan(kind="sparse", terms=terms, slots=tuple(slots), **common)
    block = W_live[rows]
    negative = np.minimum(block, 0.0) if np.any(block < 0) else None
    return _LinearPlan(
        kind="dense",
        terms=len(rows),
        positive=np.maximum(block, 0.0),
        negative=negative,
        abs_block=np.abs(block),
        **common,
    )


class IntervalOps:
    """The ``Ops`` of :mod:`constructions.forward`, on boxes, with outward rounding."""

    def __init__(self, cache_size: int = 64) -> None:
        self._plans: OrderedDict[tuple, _LinearPlan] = OrderedDict()
        self._cache_size = cache_size

    def _plan(self, W: np.ndarray, b: np.ndarray) -> _LinearPlan:
        """The cached plan for (W, b); the cache key is a fingerprint, equality is then checked."""
        key = (W.shape, b.shape, float(W.sum()), float(np.abs(W).sum()), b.tobytes())
        plan = self._plans.get(key)
        if plan is None or not (np.array_equal(plan.W, W) and np.array_equal(plan.b, b)):
            plan = _plan_linear(W, b)
            self._plans[key] = plan
            if len(self._plans) > self._cache_size:
                self._plans.popitem(last=False)
        return plan

    def linear(self, x: Box, W: np.ndarray, b: np.ndarray) -> Box:
        """x @ W + b for exact W (d_in, d_out), b (d_out,); x: (..., d_in) -> (..., d_out)."""
        plan = self._plan(W, b)
        lead = x.shape[:-1]
        if plan.kind == "copy":
            lo, hi = _copy(plan, *x.take(plan.src))
        else:
            x_lo, x_hi = x.take(plan.rows)
            rows = (math.prod(lead), plan.rows.size)
            lo, hi = _dot(plan, x_lo.reshape(rows), x_hi.reshape(rows))
            lo = lo.reshape(lead + (plan.live.size,))
            hi = hi.reshape(lead + (plan.live.size,))
        d_out = W.shape[1]
        shape = lead + (d_out,)
        if plan.live.size == d_out:
            return Box(lo, hi)
        if plan.columns_output:
            return Box._columns(None, shape, plan.live, lo, hi)
        out_lo, out_hi = np.zeros(shape), np.zeros(shape)
        plan.live.put(out_lo, lo)
        plan.live.put(out_hi, hi)
        return Box(out_lo, out_hi)

    def matmul(self, a: Box, b: Box) -> Box:
        """a @ b for two boxes (batched over leading axes)."""
        a_lo, a_hi, b_lo, b_hi = a.lo, a.hi, b.lo, b.hi
        n = a_lo.shape[-1]
        if _nonnegative(a_lo):  # exact hull for a >= 0
            if _nonnegative(b_lo):
                lo, hi = a_lo @ b_lo, a_hi @ b_hi  # nonnegative terms: mag = value
                lo -= _radius(None, lo, n)
                np.maximum(lo, 0.0, out=lo)  # the exact lower end is >= 0
                hi += _radius(None, hi, n)
                return Box(lo, hi)
            p, q = a_lo @ np.maximum(b_lo, 0.0), a_hi @ np.minimum(b_lo, 0.0)
            lo = (p + q) - _radius(None, p - q, n)
            p, q = a_hi @ np.maximum(b_hi, 0.0), a_lo @ np.minimum(b_hi, 0.0)
            hi = (p + q) + _radius(None, p - q, n)
            return Box(lo, hi)
        ac, ar = _midrad(a_lo, a_hi)
        bc, br = _midrad(b_lo, b_hi)
        center = ac @ bc
        abs_ac, abs_bc = np.abs(ac), np.abs(bc)
        t = abs_bc if br is None else abs_bc + br
        if ar is None:
            spread = None if br is None else abs_ac @ br
            mag = abs_ac @ t
        else:
            spread = ar @ t if br is None else abs_ac @ br + ar @ t
            mag = (abs_ac + ar) @ t
        radius = _radius(spread, mag, n)
        return Box(center - radius, center + radius)

    def scale(self, x: Box, factor: float) -> Box:
        if factor <= 0:
            raise ValueError("interval scale expects a positive factor")
        if factor == 1.0:
            return x
        return Box(_down(x.lo * factor), _up(x.hi * factor))

    def add(self, x: Box, y: Box) -> Box:
        if y._zero_outside_columns:
            return _add_columns(x, y)
        if x._zero_outside_columns:
            return _add_columns(y, x)
        return Box(_down(x.lo + y.lo), _up(x.hi + y.hi))

    def relu(self, x: Box) -> Box:
        if x._zero_outside_columns:
            return Box._columns(
                None, x.shape, x._cols, np.maximum(x._cols_lo, 0.0), np.maximum(x._cols_hi, 0.0)
            )
        return Box(np.maximum(x.lo, 0.0), np.maximum(x.hi, 0.0))

    def softmax(self, scores: Box, mask: np.ndarray) -> Box:
        """Sound bounds on every softmax weight; masked entries are exactly 0.

        scores: (..., n, n), rows = queries. For a row with allowed keys K, score intervals
        [l_r, h_r] and allowed j, A_j = 1 / (1 + X_j) with
        X_j = sum_{r in K, r != j} exp(s_r - s_j), which increases with every s_r and decreases
        with s_j. So for every point of the box
            A_j >= 1 / (1 + exp(m - l_j) sum_{r != j} exp(h_r - m)),    m  = max_{r in K} h_r,
            A_j <= 1 / (1 + exp(m' - h_j) sum_{r != j} exp(l_r - m')),  m' = max_{r in K} l_r,
        the softmax at the two worst corners; the shifts keep every summed exponent <= 0.
        See :func:`_softmax_lower` and :func:`_softmax_upper` for the floating-point side.
        """
        with np.errstate(all="ignore"):
            hi = np.where(mask, scores.hi, -np.inf)
            lo = np.where(mask, scores.lo, -np.inf)
            others = np.maximum(
                mask.sum(axis=-1, keepdims=True) - 1, 0
            )  # (n, 1) summed terms per row
            lower = _softmax_lower(hi, lo, others)
            upper = _softmax_upper(hi, lo, others)
        lower = np.clip(np.nan_to_num(lower, nan=0.0), 0.0, 1.0)
        upper = np.clip(np.nan_to_num(upper, nan=1.0), 0.0, 1.0)
        return Box(np.where(mask, lower, 0.0), np.where(mask, upper, 0.0))


def _copy(plan: _LinearPlan, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outputs w * x[src]: exact for w = +-1, else one rounded product per endpoint (F2)."""
    w = plan.weight
    if plan.copy == "ones":
        return lo, hi
    if plan.copy == "signs":
        negative = w < 0
        return np.where(negative, -hi, lo), np.where(negative, -lo, hi)
    a, c = lo * w, hi * w
    out_lo, out_hi = _down(np.minimum(a, c)), _up(np.maximum(a, c))
    # where the exact product has a known sign, the rounded end may be pulled back to 0
    out_lo = np.where(np.where(w > 0, lo >= 0, hi <= 0), np.maximum(out_lo, 0.0), out_lo)
    out_hi = np.where(np.where(w > 0, hi <= 0, lo >= 0), np.minimum(out_hi, 0.0), out_hi)
    return out_lo, out_hi


def _dot(plan: _LinearPlan, x_lo: np.ndarray, x_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Endpoint-form x W + b over the rows read; x_lo, x_hi: (N, R) -> (N, L) endpoints."""
    nonnegative = _nonnegative(x_lo)
    magnitude = _magnitude(x_lo, x_hi, nonnegative)
    if plan.kind == "dense":
        lo, hi = x_lo @ plan.positive, x_hi @ plan.positive
        if plan.negative is not None:
            lo += x_hi @ plan.negative
            hi += x_lo @ plan.negative
        mag = magnitude @ plan.abs_block
    else:
        lo = hi = mag = None
        for slot in plan.slots:
            first, second = slot.position.take(x_lo), slot.position.take(x_hi)
            m = slot.position.take(magnitude)
            if slot.weight is not None:
                if slot.signs == "nonnegative":
                    first, second = first * slot.weight, second * slot.weight
                elif slot.signs == "nonpositive":
                    first, second = second * slot.weight, first * slot.weight
                else:
                    positive = slot.weight > 0
                    first, second = (
                        np.where(positive, first, second) * slot.weight,
                        np.where(positive, second, first) * slot.weight,
                    )
                m = m * slot.abs_weight
            if lo is None:
                lo, hi, mag = first + plan.b_live, second + plan.b_live, m + plan.abs_b_live
            else:
                lo, hi, mag = lo + first, hi + second, mag + m
        if lo is None:  # only constant columns: the bias
            shape = (x_lo.shape[0], plan.live.size)
            lo = hi = np.broadcast_to(plan.b_live, shape)
            mag = np.broadcast_to(plan.abs_b_live, shape)
    if plan.kind == "dense":
        lo += plan.b_live
        hi += plan.b_live
        mag += plan.abs_b_live
    radius = _radius(None, mag, plan.terms)
    lo = lo - radius
    if plan.nonnegative and nonnegative:
        np.maximum(lo, 0.0, out=lo)
    return lo, hi + radius


# Per-term exp bounds. For floats p, q with t = fl(p - q), |t| <= 1e6, and e = np.exp(t) within
# EXP_ULPS = 4 ulp: the exact p - q differs from t by <= u |t| / (1 - u) (F1), and
# exp(+-1.0001 u |t|) is within 1 -/+ 1.0001 u |t| (1e-10 > u |t|), so
#     exp(p - q) >= e (1 - (1.0001|t| + 8.0001) u) - 4 eta,
#     exp(p - q) <= e (1 + (1.0001|t| + 8.0001) u) + 4.001 eta
# (8u: 4 ulp of a normal result, ulp(z) <= 2u z; 4 eta: 4 ulp of a subnormal one). For |t| > 1e6
# (clamped below) e is 0 or inf and the bounds used below hold trivially. The factors are
# evaluated as f = fl((1 + 12u) + fl(1.25u |t|)) >= 1 + (1.2499|t| + 11) u and
# g = fl((1 - 12u) - fl(1.25u |t|)) <= 1 - (1.2499|t| + 11.5) u (one rounding near 1, <= u), so
# fl(e f) >= e (1 + (1.2498|t| + 9.99) u) - eta/2 and
# fl(e g) <= e (1 - (1.2498|t| + 10.5) u) + eta/2: the upper terms exceed exp(p - q) - 5 eta,
# the lower terms stay below exp(p - q) + 5 eta.
_EXP_CLAMP = 1e6


def _exp_factor_up(t: np.ndarray) -> np.ndarray:
    f = np.minimum(np.abs(t), _EXP_CLAMP)
    f *= 1.25 * UNIT_ROUNDOFF
    f += 1.0 + 12.0 * UNIT_ROUNDOFF
    return f


def _exp_factor_down(t: np.ndarray) -> np.ndarray:
    f = np.minimum(np.abs(t), _EXP_CLAMP)
    f *= -1.25 * UNIT_ROUNDOFF
    f += 1.0 - 12.0 * UNIT_ROUNDOFF
    return f


def _softmax_lower(hi: np.ndarray, lo: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Lower bounds 1 / (1 + X_up) with X_up >= exp(m - l_j) sum_{r != j} exp(h_r - m).

    Terms: e_r = fl(exp(t_r) f_r) >= exp(h_r - m) - 5 eta (f_r from _exp_factor_up). The
    exclusive sums S of the e_r (prefix + suffix cumulative sums, <= n terms) satisfy
    sum e_r <= S / (1 - gamma_n) <= S (1 + gamma_n + 2 gamma_n^2) (F3), so
    S_up = fl(fl(S c) + k tiny), c = fl(1 + gamma_{n+4}) >= 1 + gamma_{n+4} - u, bounds the exact
    sum: (1 + gamma_{n+4} - u)(1 - u)^2 >= 1 + gamma_n + 2 gamma_n^2 by (F4), and k tiny (k =
    ``others``, the number of other allowed keys: the summed terms), added before any
    multiplication, covers their 5 k eta and the eta/2 of fl(S c). The factor
    a_j = fl(m - l_j) >= 0 gives exp(a_j) >= 1 (normal), so E_a = fl(exp(a_j) f_a) >= exp(m - l_j).
    Then X_up = _up(S_up E_a), and _down(1 / _up(1 + X_up)) by (F2). Masked keys have h = -inf,
    so their terms are exactly 0; S_up = 0 means an empty sum (a single allowed key), X = 0.
    """
    n = hi.shape[-1]
    m = hi.max(axis=-1, keepdims=True)
    t = hi - m
    terms = np.exp(t)
    terms *= _exp_factor_up(t)  # a finite factor (|t| clamped): masked terms stay 0
    s_up = _exclusive_sums(terms)
    s_up *= 1.0 + gamma(n + 4)
    s_up += others * SMALLEST_NORMAL
    a = m - lo  # >= 0 where allowed
    e_a = np.exp(a)
    e_a *= _exp_factor_up(a)
    x_up = np.where(s_up == 0, 0.0, _up(s_up * e_a))  # not 0 * inf
    return _down(1.0 / _up(1.0 + x_up))


def _softmax_upper(hi: np.ndarray, lo: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Upper bounds 1 / (1 + Y_low) with Y_low <= exp(m' - h_j) sum_{r != j} exp(l_r - m').

    Terms: e_r = fl(exp(t_r) g_r) <= exp(l_r - m') + 5 eta (g_r from _exp_factor_down). With
    the exclusive sums S, sum e_r >= S / (1 + gamma_n) >= S (1 - gamma_n), so
    S_low = max(0, fl(fl(S (1 - gamma_{n+4})) - k tiny)) <= the exact sum (the slack
    gamma_{n+4} - gamma_n >= 4u covers the constant's and the two operations' roundings; k tiny
    covers 5 k eta, k = ``others``). The factor: b_j = fl(m' - h_j),
    q = fl(exp(b_j) g_b) <= exp(m' - h_j) + 5 eta, capped at 2^1022 where exp overflows
    (exp(b) = inf needs b >= 709, so the exact factor is >= e^708.99 > 2^1022). As the exact sum
    is <= n, Y_low = max(0, _down(_down(S_low q) - 6 n eta)) is a lower bound of Y_j (5.5 n eta
    would do), and the weight bound is _up(1 / _down(1 + Y_low)) by (F2). A product
    that overflows gives NaN, i.e. the bound 1.
    """
    n = lo.shape[-1]
    m = lo.max(axis=-1, keepdims=True)
    t = lo - m
    terms = np.exp(t)
    terms *= _exp_factor_down(t)
    s_low = _exclusive_sums(terms)
    s_low *= 1.0 - gamma(n + 4)
    s_low -= others * SMALLEST_NORMAL
    np.maximum(s_low, 0.0, out=s_low)
    b = m - hi
    q = np.exp(b)
    q *= _exp_factor_down(b)
    np.minimum(q, 2.0**1022, out=q)
    y_low = np.maximum(_down(_down(s_low * q) - 6 * n * SMALLEST_SUBNORMAL), 0.0)
    return _up(1.0 / _down(1.0 + y_low))


def _exclusive_sums(terms: np.ndarray) -> np.ndarray:
    """out[..., j] = sum_{r != j} terms[..., r] for non-negative terms, without subtraction."""
    zeros = np.zeros_like(terms[..., :1])
    before = np.concatenate([zeros, np.cumsum(terms, axis=-1)[..., :-1]], axis=-1)
    after = np.concatenate(
        [np.cumsum(terms[..., ::-1], axis=-1)[..., ::-1][..., 1:], zeros], axis=-1
    )
    return before + after


def _add_columns(x: Box, y: Box) -> Box:
    """x + y where y is exactly 0 outside its columns: only those columns are added, by (F2),
    or exactly where x is exactly 0 there."""
    cols = y._cols
    if cols.size == 0:
        return x
    x_lo, x_hi = x.take(cols)
    if not (x_lo.any() or x_hi.any()):  # 0 + y = y
        lo, hi = y._cols_lo, y._cols_hi
    else:
        lo, hi = _down(x_lo + y._cols_lo), _up(x_hi + y._cols_hi)
    return Box._columns(x, x.shape, cols, lo, hi)  # x stays the base: nothing is copied


INTERVAL = IntervalOps()


def _affine(x: Box, rows: _Index, directions: np.ndarray, offsets: np.ndarray, terms: int) -> Box:
    """Box around x_b[rows] . directions[b, :, c] + offsets[b, c], endpoint form (as linear)
    with the error bound for ``terms`` products.
    x: (B, d), directions: (B, R, C), offsets: (B, C) -> (B, C)."""
    x_lo, x_hi = x.take(rows)  # (B, R)
    positive, negative = np.maximum(directions, 0.0), np.minimum(directions, 0.0)
    lo = np.einsum("bd,bdc->bc", x_lo, positive) + np.einsum("bd,bdc->bc", x_hi, negative) + offsets
    hi = np.einsum("bd,bdc->bc", x_hi, positive) + np.einsum("bd,bdc->bc", x_lo, negative) + offsets
    magnitude = _magnitude(x_lo, x_hi, _nonnegative(x_lo))
    mag = np.einsum("bd,bdc->bc", magnitude, np.abs(directions)) + np.abs(offsets)
    radius = _radius(None, mag, terms)
    return Box(lo - radius, hi + radius)


def logit_margins(resid: Box, W_U: np.ndarray, b_U: np.ndarray, expected: np.ndarray) -> Box:
    """Boxes around  margin[b, c] = (W_U[:, y_b] - W_U[:, c]) . x_b + b_U[y_b] - b_U[c].

    resid: box (B, d) of final residuals; expected: (B,) tokens y_b -> box (B, V). Evaluating the
    difference directly (instead of subtracting two logit boxes) keeps the shared x correlated.
    Only the rows of W_U that are not entirely zero are read. The differences of weights are
    rounded once each (relative error <= u): counting one more term in the bound covers that.
    """
    rows = np.flatnonzero((W_U != 0).any(axis=1))
    W = W_U[rows]  # (R, V)
    directions = W[:, expected].T[:, :, None] - W[None]  # (B, R, V), rounded
    offsets = b_U[expected][:, None] - b_U[None]  # (B, V), rounded
    return _affine(resid, _Index(rows), directions, offsets, len(rows) + 2)
