"""The compositional certificate of the two-token construction, over ALL V^(V^2) maps.

The analysis (digit bands, ramp clearances, leakage) is in the docstring of
``constructions.petrov.two_token``. Here every residual vector is carried as a one-variable
affine form c + g t + [-r, r] (``Affine``), t the EXACT remainder of the row being decoded and r
a bound on everything else: leakage, the other rows, and every float64 rounding error of the
forward pass as numpy executes it (sums charged gamma_k over their k non-zero terms; products by
powers of two and sums of small dyadic numbers are exact). ``AffineOps`` implements the ``Ops``
interface of ``constructions.forward``, so the SAME forward code runs on forms:
  (a) front: block 0 for every (u0, u1), with t = x_u0; forms joined over u0;
  (b) digits: a chain (u1, y) holds every map and u0 with m(u0, u1) = y; at digit n it is split
      into the bands of t = r_n, pushed through the ramp and clean blocks (every ramp unit provably
      <= 0 or >= 1: the layer is exactly affine on the band), re-expressed in t' = V t - m and
      joined;
  (c) select + readout: logit margins bounded from the final forms.
With edited weights the same steps stay sound (a mixed ReLU is relaxed; a failure is reported).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pickle
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from constructions.forward import forward
from constructions.petrov.two_token import TwoToken
from constructions.spec import TransformerSpec

# --- affine arithmetic with rounding bounds -------------------------------------------------

U = 2.0**-53  # unit roundoff of float64
ETA = 2.0**-1074  # smallest subnormal
TINY = float(np.finfo(np.float64).tiny)
EXP_ULPS = 4.0  # np.exp is taken to be accurate to 4 ulp (glibc documents < 1)
GRID = 2.0**8  # "dyadic" = a multiple of 2^-8; products of two are multiples of 2^-16
DYADIC_LIMIT = 2.0**36  # sums of multiples of 2^-16 below this are exact in float64
EXACT_ONE = 2.0**-53  # if the other softmax terms sum to less than this, fl(sum) = 1 exactly
# (the exact rule also takes np.exp(0.0) == 1.0, as every IEEE libm and numpy's SIMD exp give)


def _gamma(k: np.ndarray | float) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    return k * U / (1.0 - k * U)


def _up(x: np.ndarray) -> np.ndarray:
    """np.nextafter(x, inf), bit for bit, by integer arithmetic on the bit patterns (numpy's
    nextafter is a libm call per entry, ~10x slower): x + 0.0 turns -0 into +0 and changes
    nothing else, then a float with the sign bit clear moves up by one unit of its pattern and
    one with the sign bit set moves down (toward zero). inf and NaN go to np.nextafter (a sum
    that overflows too, which is only slower). Checked against np.nextafter on random bit
    patterns and every special value (tests/test_two_token_speed.py)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x.sum()):
        return np.nextafter(x, np.inf)
    i = (x + 0.0).view(np.int64)
    return (i + ((i >> 63) | 1)).view(np.float64)


def _down(x: np.ndarray) -> np.ndarray:
    """np.nextafter(x, -inf), bit for bit: -up(-x), with 0.0 - x (+0 for both zeros) as -x."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x.sum()):
        return np.nextafter(x, -np.inf)
    i = (0.0 - x).view(np.int64)
    return -((i + ((i >> 63) | 1)).view(np.float64))


def _pow2(a: np.ndarray) -> np.ndarray:
    """Exact non-zero normal powers of two (products by them are exact)."""
    mantissa, _ = np.frexp(np.abs(a))
    return (mantissa == 0.5) & (np.abs(a) >= TINY) & np.isfinite(a)


def _dyadic(a: np.ndarray, scale: float = GRID) -> np.ndarray:
    scaled = np.asarray(a) * scale
    with np.errstate(invalid="ignore"):
        return np.isfinite(scaled) & (scaled == np.round(scaled))


def _f(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.float64)


def _product_error(abs_a, abs_b, nz_a, nz_b, exact_a, exact_b) -> np.ndarray:
    """Bound on |fl(A @ B) - A @ B| for float arrays with |A| <= abs_a, |B| <= abs_b, in ANY
    summation order (with or without FMA): k non-zero terms pass through at most k - 1
    additions and one product rounding, skipped when every product has an exact factor
    (a power of two). gamma_nu of the sum of |terms|, plus k subnormal units."""
    return _error_bound(abs_a @ abs_b, _f(nz_a) @ _f(nz_b), _f(nz_a & ~exact_a) @ _f(nz_b & ~exact_b))


def _error_bound(value: np.ndarray, k: np.ndarray, inexact: np.ndarray) -> np.ndarray:
    """``_product_error`` from its parts: value = abs_a @ abs_b, k = the count of non-zero terms,
    inexact = the count of terms without an exact factor."""
    nu = np.maximum(k - 1.0, 0.0) + (inexact > 0)
    return _gamma(nu) * value + k * ETA


def _moderate(x: Affine) -> bool:
    """Every entry of c, g, r and t finite, |c|, r <= 2^1000 and |g|, |t| <= 2^500: then every
    operand the ops derive from x (magnitudes, |c|, |g|, r) is finite, so a term with a zero
    weight is exactly +0 (what lets ``AffineOps.linear`` skip zero rows and columns of W)."""
    if x.c.size == 0 or x.t_lo.size == 0:
        return False
    with np.errstate(invalid="ignore"):
        big = max(x.c.max(), -x.c.min(), x.r.max(), -x.r.min())
        slope = max(x.g.max(), -x.g.min())
        t = max(x.t_lo.max(), -x.t_lo.min(), x.t_hi.max(), -x.t_hi.min())
    return bool(big <= 2.0**1000 and slope <= 2.0**500 and t <= 2.0**500)  # False for NaN


@dataclass(frozen=True)
class Affine:
    """Every array c + g t + e with |e| <= r (elementwise), for t in [t_lo, t_hi] (one t per
    batch row, the leading axis). Entries with g = r = 0 are exact floats; with c = 0 too,
    exact zeros (they make no rounding error in any sum)."""

    c: np.ndarray
    g: np.ndarray
    r: np.ndarray
    t_lo: np.ndarray  # (B,)
    t_hi: np.ndarray  # (B,)

    @classmethod
    def point(cls, value: np.ndarray, t_lo: np.ndarray, t_hi: np.ndarray) -> Affine:
        value = np.asarray(value, dtype=np.float64)
        return cls(value, np.zeros_like(value), np.zeros_like(value), t_lo, t_hi)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.c.shape

    def reshape(self, *shape: int) -> Affine:
        return Affine(self.c.reshape(*shape), self.g.reshape(*shape), self.r.reshape(*shape), self.t_lo, self.t_hi)

    def transpose(self, *axes: int) -> Affine:
        if axes and axes[0] != 0:
            raise ValueError("Affine forms keep the batch axis first")
        return Affine(self.c.transpose(*axes), self.g.transpose(*axes), self.r.transpose(*axes),
                      self.t_lo, self.t_hi)

    def rows(self, index: np.ndarray, t_lo: np.ndarray | None = None, t_hi: np.ndarray | None = None) -> Affine:
        """Batch rows ``index``; new t bounds restrict t (sound only for a sub-range)."""
        return Affine(self.c[index], self.g[index], self.r[index],
                      self.t_lo[index] if t_lo is None else t_lo, self.t_hi[index] if t_hi is None else t_hi)

    def columns(self, index: np.ndarray) -> Affine:
        """The entries ``index`` of the last axis (every op below acts on each entry separately,
        except the products, which sum over it)."""
        return Affine(self.c[..., index], self.g[..., index], self.r[..., index], self.t_lo, self.t_hi)

    def positions(self, sl: slice) -> Affine:
        return Affine(self.c[:, sl], self.g[:, sl], self.r[:, sl], self.t_lo, self.t_hi)

    def _t(self, t: np.ndarray) -> np.ndarray:
        return t.reshape(-1, *([1] * (self.c.ndim - 1)))

    @property
    def tab(self) -> np.ndarray:
        return self._t(np.maximum(np.abs(self.t_lo), np.abs(self.t_hi)))

    @property
    def zero(self) -> np.ndarray:
        return (self.c == 0) & (self.g == 0) & (self.r == 0)

    @property
    def const(self) -> np.ndarray:
        return (self.g == 0) & (self.r == 0)

    def center_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Sound bounds on the exact c + g t over the t range."""
        lo, hi = self.c.copy(), self.c.copy()
        cols = np.flatnonzero(np.any(self.g != 0, axis=tuple(range(self.g.ndim - 1))))
        if len(cols) == 0:
            return lo, hi
        c, g = self.c[..., cols], self.g[..., cols]
        ga, gb = g * self._t(self.t_lo), g * self._t(self.t_hi)
        a, b = c + ga, c + gb
        # fl(c + fl(g t)): one rounding of the product, one of the sum
        err_a = U * (np.abs(ga) + np.abs(a)) * (1 + 4 * U) + 2 * ETA
        err_b = U * (np.abs(gb) + np.abs(b)) * (1 + 4 * U) + 2 * ETA
        moving = g != 0
        lo[..., cols] = np.where(moving, _down(np.minimum(a - err_a, b - err_b)), c)
        hi[..., cols] = np.where(moving, _up(np.maximum(a + err_a, b + err_b)), c)
        return lo, hi

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.center_bounds()
        lo = np.where(self.r > 0, _down(lo - self.r), lo)
        hi = np.where(self.r > 0, _up(hi + self.r), hi)
        return lo, hi

    def magnitude(self) -> np.ndarray:
        lo, hi = self.bounds()
        return np.maximum(np.abs(lo), np.abs(hi))

    def to_box(self) -> Affine:
        """Forget the dependence on t (keep the same set)."""
        lo, hi = self.bounds()
        c = 0.5 * lo + 0.5 * hi
        r = np.where(lo == hi, 0.0, _up(np.maximum(hi - c, c - lo) * (1 + 4 * U) + U * np.abs(c)))
        return Affine(np.where(lo == hi, lo, c), np.zeros_like(c), r, self.t_lo, self.t_hi)


def _finish(main: np.ndarray, extra: np.ndarray, terms: int) -> np.ndarray:
    """The radius main + extra, rounded up. ``main`` (the propagated radius) must have been
    computed exactly or have its rounding bound inside ``extra``; where extra = 0 the radius is
    ``main`` unchanged, so exact operations (copies by powers of two) never inflate a box."""
    extra = np.broadcast_to(extra, np.shape(main))
    return np.where(extra > 0, _up(main + extra * (1 + _gamma(terms + 8)) + 4 * ETA), main)


def _accumulate(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sum of non-negative float arrays (value, rounding bound of value) -> (sum, bound on the
    sum's total rounding): adding k non-zero values costs gamma_{k-1}."""
    total = sum(value for value, _ in parts)
    count = sum((value != 0).astype(np.float64) for value, _ in parts)
    error = sum(err for _, err in parts) + _gamma(np.maximum(count - 1, 0)) * total
    return total, error


def _abs_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a @ b, bound on its rounding) for non-negative arrays."""
    return a @ b, _product_error(a, b, a != 0, b != 0, _pow2(a), _pow2(b))


def _times(value_err: tuple[np.ndarray, np.ndarray], factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    value, err = value_err
    product = value * factor
    exact = (value == 0) | _pow2(np.broadcast_to(factor, product.shape))
    return product, err * factor + np.where(exact, 0.0, U * product)


class AffineOps:
    """The ``Ops`` of ``constructions.forward`` on :class:`Affine` forms.

    float_model=True: the forms contain the float64 forward pass as numpy executes it (every
    rounding of the model is bounded); False: they contain the exact real-arithmetic forward
    pass. Either way the forms' own float arithmetic is accounted for ("cert" terms).
    """

    def __init__(self, float_model: bool = True) -> None:
        self.float_model = float_model
        self.record: list[tuple[np.ndarray, np.ndarray]] | None = None  # ReLU input bounds

    # -- sums and products
    def linear(self, x: Affine, W: np.ndarray, b: np.ndarray) -> Affine:
        """x @ W + b. The same bounds as ``linear_dense``, bit for bit, computed only where W
        acts: output columns j with W[:, j] = 0 and b_j = 0 are c @ W + b, g @ W with radius
        exactly +0 (every term of every product there is (finite) x +0, every count 0), so only
        the other columns are computed; and when no column of W has two non-zero entries, every
        product over the input axis has at most one non-zero term, which every summation order
        (gemv, gemm, with or without FMA) rounds the same, so the products read only the rows of
        x where W is non-zero. The counts are exact integers in any order. The products
        c @ W and g @ W (signed, several terms) are computed as in ``linear_dense``. Falls back
        to ``linear_dense`` where x holds non-finite or huge entries (``_moderate``)."""
        nz = W != 0
        cols = np.flatnonzero(nz.any(axis=0) | (b != 0))
        single = bool((nz.sum(axis=0) <= 1).all())
        rows = np.flatnonzero(nz.any(axis=1)) if single else None
        narrow = rows is not None and len(rows) < W.shape[0]
        if not (narrow or len(cols) < W.shape[1]) or not _moderate(x):
            return self.linear_dense(x, W, b)
        center, slope = x.c @ W + b, x.g @ W
        xs, Wr = (x.columns(rows), W[rows]) if rows is not None else (x, W)
        Wc, bs = Wr[:, cols], b[cols]
        if rows is not None:  # at most one non-zero term per product
            abs_w = np.abs(Wc)

            def value(a: np.ndarray) -> np.ndarray:
                return a @ abs_w
        else:  # the whole product, as linear_dense computes it, then the columns
            abs_full = np.abs(W)

            def value(a: np.ndarray) -> np.ndarray:
                return (a @ abs_full)[..., cols]
        nz_w, p2_w, dy_w = Wc != 0, _pow2(Wc), _dyadic(Wc)
        f_w, inexact_w = _f(nz_w), _f(nz_w & ~p2_w)
        c, g, r, tab = xs.c, xs.g, xs.r, xs.tab
        nz_x, const = ~xs.zero, xs.const
        mag = xs.magnitude()
        dot = value(mag)
        has_b = bs != 0
        f_x = _f(nz_x)
        k = f_x @ f_w
        bad = _f(nz_x & ~(const & _dyadic(c))) @ f_w + f_x @ _f(nz_w & ~dy_w)
        exact = (bad == 0) & _dyadic(bs, GRID * GRID) & (dot + np.abs(bs) < DYADIC_LIMIT)
        nz_c, nz_g, nz_r = c != 0, g != 0, r != 0
        p2_c = _pow2(c)
        model = _error_bound(dot, k, _f(nz_x & ~(const & p2_c)) @ inexact_w) if self.float_model else 0.0
        k_c = _f(nz_c) @ f_w
        cert_c = _error_bound(value(np.abs(c)), k_c, _f(nz_c & ~p2_c) @ inexact_w)
        cert_g = _error_bound(value(np.abs(g)), _f(nz_g) @ f_w, _f(nz_g & ~_pow2(g)) @ inexact_w) * tab
        main = value(r)
        main_err = _error_bound(main, _f(nz_r) @ f_w, _f(nz_r & ~_pow2(r)) @ inexact_w)
        center_s = center[..., cols]
        out = Affine(center_s, slope[..., cols], main + main_err + model + cert_c + cert_g, x.t_lo, x.t_hi)
        out_mag = out.magnitude() * (1 + 4 * U)
        bias_model = U * out_mag * ((k > 0) & has_b) if self.float_model else 0.0
        bias_cert = U * (np.abs(center_s) * (1 + 4 * U)) * ((k_c > 0) & has_b)
        extra = np.where(exact, 0.0, model + bias_model + cert_c + bias_cert) + cert_g + main_err
        radius = np.zeros(center.shape)
        radius[..., cols] = _finish(main, extra, W.shape[0])
        return Affine(center, slope, radius, x.t_lo, x.t_hi)

    def linear_dense(self, x: Affine, W: np.ndarray, b: np.ndarray) -> Affine:
        """``linear`` over every entry of x and of the output (the reference: tests/test_two_token_speed.py)."""
        abs_w, nz_w, p2_w, dy_w = np.abs(W), W != 0, _pow2(W), _dyadic(W)
        c, g, r, tab = x.c, x.g, x.r, x.tab
        nz_x, const = ~x.zero, x.const
        mag = x.magnitude()
        dot = mag @ abs_w
        has_b = b != 0
        k = _f(nz_x) @ _f(nz_w)
        # exact: every contributing term a dyadic constant times a dyadic weight, small sum
        bad = _f(nz_x & ~(const & _dyadic(c))) @ _f(nz_w) + _f(nz_x) @ _f(nz_w & ~dy_w)
        exact = (bad == 0) & _dyadic(b, GRID * GRID) & (dot + np.abs(b) < DYADIC_LIMIT)
        nz_c, nz_g = c != 0, g != 0
        center, slope = c @ W + b, g @ W
        # the products and sums before the bias (model: of the float values; cert: of c and g)
        model = _product_error(mag, abs_w, nz_x, nz_w, const & _pow2(c), p2_w) if self.float_model else 0.0
        cert_c = _product_error(np.abs(c), abs_w, nz_c, nz_w, _pow2(c), p2_w)
        cert_g = _product_error(np.abs(g), abs_w, nz_g, nz_w, _pow2(g), p2_w) * tab
        main, main_err = _abs_product(r, abs_w)
        # the bias addition rounds once, relative to the sum it produces (bounded by the output)
        out = Affine(center, slope, main + main_err + model + cert_c + cert_g, x.t_lo, x.t_hi)
        out_mag = out.magnitude() * (1 + 4 * U)
        bias_model = U * out_mag * ((k > 0) & has_b) if self.float_model else 0.0
        bias_cert = U * (np.abs(center) * (1 + 4 * U)) * (((_f(nz_c) @ _f(nz_w)) > 0) & has_b)
        extra = np.where(exact, 0.0, model + bias_model + cert_c + bias_cert) + cert_g + main_err
        return Affine(center, slope, _finish(main, extra, W.shape[0]), x.t_lo, x.t_hi)

    def matmul(self, a: Affine, b: Affine) -> Affine:
        tl, th = a._t(a.t_lo), a._t(a.t_hi)
        tm, tab = 0.5 * tl + 0.5 * th, a.tab
        tr = _up(0.5 * th - 0.5 * tl + 2 * U * (np.abs(tl) + np.abs(th)))  # [tm - tr, tm + tr] covers t
        ca, ga, ra, cb, gb, rb = a.c, a.g, a.r, b.c, b.g, b.r
        aca, aga, acb, agb = np.abs(ca), np.abs(ga), np.abs(cb), np.abs(gb)
        gg = ga @ gb
        # t^2 = 2 tm t - tm^2 + (t - tm)^2 with (t - tm)^2 in [0, tr^2]
        center = ca @ cb - gg * tm**2 + gg * tr**2 / 2
        slope = ca @ gb + ga @ cb + 2 * tm * gg
        main, main_err = _accumulate(
            _times((np.abs(gg), _product_error(aga, agb, ga != 0, gb != 0, _pow2(ga), _pow2(gb))), tr**2 / 2),
            _abs_product(aca, rb), _abs_product(ra, acb),
            _times(_abs_product(aga, rb), tab), _times(_abs_product(ra, agb), tab), _abs_product(ra, rb))
        ma, mb = a.magnitude(), b.magnitude()
        nz_a, nz_b = ~a.zero, ~b.zero
        extra = main_err
        if self.float_model:
            model = _product_error(ma, mb, nz_a, nz_b, a.const & _pow2(ca), b.const & _pow2(cb))
            bad = (_f(nz_a & ~(a.const & _dyadic(ca))) @ _f(nz_b)
                   + _f(nz_a) @ _f(nz_b & ~(b.const & _dyadic(cb))))
            extra = extra + np.where((bad == 0) & (ma @ mb < DYADIC_LIMIT), 0.0, model)
        nzc_a, nzc_b, nzg_a, nzg_b = ca != 0, cb != 0, ga != 0, gb != 0
        cert = (_product_error(aca, acb, nzc_a, nzc_b, _pow2(ca), _pow2(cb))
                + (_product_error(aca, agb, nzc_a, nzg_b, _pow2(ca), _pow2(gb))
                   + _product_error(aga, acb, nzg_a, nzc_b, _pow2(ga), _pow2(cb))) * tab
                + _product_error(aga, agb, nzg_a, nzg_b, _pow2(ga), _pow2(gb))
                * (tm**2 + tr**2 + 2 * np.abs(tm) * tab))
        quad = gg != 0
        both = (ca @ gb != 0) & (ga @ cb != 0)
        # roundings of the sums forming center and slope
        cert = cert + np.where(quad, _gamma(4) * (np.abs(ca @ cb) + np.abs(gg) * (tm**2 + tr**2)), 0.0)
        cert = cert + np.where(quad | both, _gamma(3) * (aca @ agb + aga @ acb + 2 * np.abs(tm * gg)) * tab, 0.0)
        return Affine(center, slope, _finish(main, extra + cert, a.shape[-1]), a.t_lo, a.t_hi)

    def scale(self, x: Affine, factor: float) -> Affine:
        if not factor > 0:
            raise ValueError("scale expects a positive factor")
        exact = bool(_pow2(np.array(factor)))
        main = x.r * factor
        extra = np.zeros_like(main)
        if not exact:
            extra = U * (main + np.abs(x.c * factor) + np.abs(x.g * factor) * x.tab)
            if self.float_model:
                extra = extra + U * x.magnitude() * factor
        return Affine(x.c * factor, x.g * factor, _finish(main, extra, 2), x.t_lo, x.t_hi)

    def add(self, x: Affine, y: Affine) -> Affine:
        """x + y. The same bounds as ``add_dense``, bit for bit: where y is an exact zero every
        rounding term is 0 (each is selected away by np.where, whatever x holds), so the sum is
        c, g, r = x + y exactly, and the rounding terms are computed only in the columns where
        some entry of y is not an exact zero (a block's output touches a few subspaces)."""
        if x.c.shape != y.c.shape:
            return self.add_dense(x, y)
        cols = np.flatnonzero(np.any(~y.zero, axis=tuple(range(y.c.ndim - 1))))
        if len(cols) == y.c.shape[-1]:
            return self.add_dense(x, y)
        c, g, main = x.c + y.c, x.g + y.g, x.r + y.r
        radius = main.copy()
        radius[..., cols] = self._add_radius(x.columns(cols), y.columns(cols))
        return Affine(c, g, radius, x.t_lo, x.t_hi)

    def add_dense(self, x: Affine, y: Affine) -> Affine:
        """``add`` over every entry (the reference: tests/test_two_token_speed.py)."""
        return Affine(x.c + y.c, x.g + y.g, self._add_radius(x, y), x.t_lo, x.t_hi)

    def _add_radius(self, x: Affine, y: Affine) -> np.ndarray:
        c, g = x.c + y.c, x.g + y.g
        s = Affine(c, g, x.r + y.r, x.t_lo, x.t_hi)
        small = (x.const & y.const & _dyadic(x.c) & _dyadic(y.c)
                 & (np.abs(x.c) + np.abs(y.c) < DYADIC_LIMIT))
        exact_model = x.zero | y.zero | small
        main = x.r + y.r
        extra = np.where((x.r == 0) | (y.r == 0), 0.0, U * main)
        if self.float_model:
            extra = extra + np.where(exact_model, 0.0, U * s.magnitude())
        exact_c = (x.c == 0) | (y.c == 0) | (_dyadic(x.c) & _dyadic(y.c) & (np.abs(c) < DYADIC_LIMIT))
        extra = extra + np.where(exact_c, 0.0, U * np.abs(c))
        extra = extra + np.where((x.g == 0) | (y.g == 0), 0.0, U * np.abs(g) * x.tab)
        return _finish(main, extra, 3)

    def relu(self, x: Affine) -> Affine:
        """Exact where the sign is decided; otherwise the tighter of two sound relaxations:
        ReLU(a + e) - a = max(e, -a) lies in [-r, max(r, -min a)] (keeps the t-dependence), or
        ReLU(y) in [0, max y]."""
        lo, hi = x.bounds()
        if self.record is not None:
            self.record.append((lo, hi))
        clo, _ = x.center_bounds()
        top = np.maximum(x.r, -clo)
        shift = 0.5 * (top - x.r)
        radius1 = _up(0.5 * (top + x.r) + U * (np.abs(x.c + shift) + top + x.r))
        radius2 = 0.5 * np.maximum(hi, 0.0)
        keep = radius1 <= radius2
        mixed = (lo < 0) & (hi > 0)
        c = np.where(mixed, np.where(keep, x.c + shift, radius2), np.where(lo >= 0, x.c, 0.0))
        g = np.where(mixed, np.where(keep, x.g, 0.0), np.where(lo >= 0, x.g, 0.0))
        r = np.where(mixed, np.where(keep, radius1, radius2), np.where(lo >= 0, x.r, 0.0))
        return Affine(c, g, r, x.t_lo, x.t_hi)

    def softmax(self, scores: Affine, mask: np.ndarray) -> Affine:
        """Bounds on the softmax weights as computed in float64 (NumpyOps.softmax) or exactly.

        For key j: A_j = 1 / (1 + sum_{r != j} e^(s_r - s_j)); the ratio sums are bounded from
        the score bounds, with exp good to EXP_ULPS ulp and every rounding of the float
        evaluation (the subtraction of the max, the sum, the division) as relative factors.
        Exact rule (float64): if key j* beats every other key for all scores in the box and the
        others' terms sum to < 2^-53, then fl(s_j* - max) = 0, exp(0) = 1 and every partial sum
        holding that 1 rounds back to 1, so fl(sum) = 1 exactly: A_j* = 1.0 and A_r = e_r.
        """
        lo, hi = scores.bounds()
        n = lo.shape[-1]
        allowed = np.broadcast_to(mask, lo.shape)
        lo = np.where(allowed, lo, -np.inf)
        hi = np.where(allowed, hi, -np.inf)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            spread = hi.max(-1, keepdims=True) - np.where(allowed, lo, np.inf).min(-1, keepdims=True)
            eps = 4 * U * spread + 4 * ETA  # rounding of the exp arguments (model and ours)
            kap = 10 * EXP_ULPS * U
            off = allowed[..., None, :] & ~np.eye(n, dtype=bool)  # [.., j, r]
            big = np.where(off, np.exp(hi[..., None, :] - lo[..., :, None] + eps[..., None]), 0.0)
            small = np.where(off, np.exp(lo[..., None, :] - hi[..., :, None] - eps[..., None]), 0.0)
            big = np.nan_to_num(big, nan=np.inf)
            small = np.nan_to_num(small, nan=0.0)
            ratio_hi = big.sum(-1) * (1 + kap) * (1 + _gamma(n)) + n * TINY
            ratio_lo = small.sum(-1) * (1 - kap) * (1 - _gamma(n))
            gam = _gamma(n) if self.float_model else 0.0
            lower = (1.0 / (1.0 + ratio_hi)) * (1 - U) / (1 + gam) * (1 - 4 * U)
            upper = (1.0 / (1.0 + ratio_lo)) * (1 + U) / (1 - gam) * (1 + 4 * U) + 2 * ETA
        lower = np.where(allowed, np.clip(np.nan_to_num(lower, nan=0.0), 0.0, 1.0), 0.0)
        upper = np.where(allowed, np.clip(np.nan_to_num(upper, nan=1.0), 0.0, 1.0), 0.0)
        if self.float_model:
            star = np.argmax(lo, axis=-1)[..., None]  # (.., 1)
            lo_star = np.take_along_axis(lo, star, -1)
            others_hi = np.where(np.arange(n) == star, -np.inf, hi).max(-1, keepdims=True)
            sigma = np.take_along_axis(ratio_hi, star, -1)
            # every partial sum containing the 1.0 is then below the midpoint 1 + 2^-53: it rounds to 1
            exact = (lo_star > others_hi) & (sigma * (1 + _gamma(n)) < EXACT_ONE)  # (.., 1)
            terms = np.take_along_axis(big, star[..., None], -2)[..., 0, :] * (1 + kap) + TINY
            is_star = np.arange(n) == star
            lower = np.where(exact, np.where(is_star, 1.0, 0.0), lower)
            upper = np.where(exact, np.where(is_star, 1.0, np.where(allowed, np.minimum(terms, 1.0), 0.0)), upper)
        center = 0.5 * lower + 0.5 * upper
        radius = np.where(lower == upper, 0.0, _up(np.maximum(upper - center, center - lower) + U * center))
        center = np.where(lower == upper, lower, center)
        return Affine(center, np.zeros_like(center), radius, scores.t_lo, scores.t_hi)


def join(x: Affine, starts: np.ndarray) -> Affine:
    """One form per group of consecutive rows (groups start at ``starts``; members share their t
    range) containing every member: slope = mid-range of the members' slopes, and the members'
    deviations from it bounded over the t range. Computed only in the columns where some entry
    of c, g or r is not +0 (bit pattern 0): a column of +0 joins to +0 in c, g and r (every
    rounding term there is selected away), so the result is ``join_dense``'s, bit for bit."""
    axes = tuple(range(x.c.ndim - 1))
    used = np.any(x.c.view(np.int64), axis=axes) | np.any(x.g.view(np.int64), axis=axes) \
        | np.any(x.r.view(np.int64), axis=axes)
    cols = np.flatnonzero(used)
    if len(cols) == x.c.shape[-1] or not (np.isfinite(x.t_lo).all() and np.isfinite(x.t_hi).all()):
        return join_dense(x, starts)
    part = join_dense(x.columns(cols), starts)
    c, g, r = (np.zeros((len(starts), *x.c.shape[1:])) for _ in range(3))
    c[..., cols], g[..., cols], r[..., cols] = part.c, part.g, part.r
    return Affine(c, g, r, part.t_lo, part.t_hi)


def join_dense(x: Affine, starts: np.ndarray) -> Affine:
    """``join`` over every column (the reference: tests/test_two_token_speed.py)."""
    ends = np.append(starts[1:], x.c.shape[0])
    group = np.repeat(np.arange(len(starts)), ends - starts)
    g = 0.5 * np.maximum.reduceat(x.g, starts, axis=0) + 0.5 * np.minimum.reduceat(x.g, starts, axis=0)
    dev = x.g - g[group]
    tl, th = x._t(x.t_lo), x._t(x.t_hi)
    a, b = x.c + dev * tl, x.c + dev * th
    err = np.where(dev == 0, 0.0, 3 * U * (np.abs(x.c) + np.abs(dev) * x.tab) + 2 * ETA)
    lo = np.minimum(a, b) - err - x.r
    hi = np.maximum(a, b) + err + x.r
    lo = np.where((err > 0) | (x.r > 0), _down(lo), lo)
    hi = np.where((err > 0) | (x.r > 0), _up(hi), hi)
    low = np.minimum.reduceat(lo, starts, axis=0)
    high = np.maximum.reduceat(hi, starts, axis=0)
    c = 0.5 * low + 0.5 * high
    r = np.where(low == high, 0.0, _up(np.maximum(high - c, c - low) * (1 + 4 * U) + U * np.abs(c)))
    return Affine(np.where(low == high, low, c), g, r, x.t_lo[starts], x.t_hi[starts])


def _floor_float(q: Fraction) -> float:
    f = float(q)
    return f if Fraction(f) <= q else float(np.nextafter(f, -np.inf))


def _ceil_float(q: Fraction) -> float:
    f = float(q)
    return f if Fraction(f) >= q else float(np.nextafter(f, np.inf))


# --- the compositional certificate ---------------------------------------------------------

@dataclass
class TwoTokenCertificate:
    """Outcome of ``certify_two_token``. ``holds``: the forward pass (float64 as executed, or
    exact real arithmetic) answers m(u0, u1) for EVERY map and input pair."""

    holds: bool = False
    arithmetic: str = "float64"
    vocab_size: int = 0
    cases: int = 0  # boxes checked: front (u0, u1), digit bands, final chains
    chains: int = 0  # (u1, y) chains, each covering every map and u0 with m(u0, u1) = y
    failing: int = 0  # chains whose certified margin is not positive
    worst_margin: float = -np.inf  # min over chains and competitors of the logit margin bound
    worst_chain: tuple[int, int] | None = None  # (u1, y)
    worst_competitor: int | None = None  # the token c whose margin is the worst one, in worst_chain
    worst_case: str = ""
    first_failure: str | None = None
    failing_examples: list[np.ndarray] = field(default_factory=list)  # box-cover labels (u0, u1, N)
    front_error: float = np.inf  # bound on |rem_0 - x_u0| over every map and input
    layer_errors: list[float] = field(default_factory=list)  # eps_n: bound on |rem_n - r_n|
    layer_clearances: list[float] = field(default_factory=list)  # mu_n read off the ramp weights
    smallest_slack: float = -np.inf  # min over ramp units of max(-hi, lo - 1), in ramp widths
    reason: str | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        verdict = "holds" if self.holds else "FAILS"
        return (f"two-token certificate ({self.arithmetic}, V = {self.vocab_size}) {verdict}: "
                f"{self.chains} chains, {self.cases} boxes, worst margin {self.worst_margin:.3g}, "
                f"smallest ramp slack {self.smallest_slack:.3g}")


def _structure_problem(construction: TwoToken, spec: TransformerSpec) -> str | None:
    V, d = construction.vocab.size, construction.layout.width
    if spec.vocab_size != V or spec.d_model != d:
        return f"spec has V = {spec.vocab_size}, d = {spec.d_model}; the construction needs V = {V}, d = {d}"
    if spec.n_layers != 2 * V + 2:
        return f"spec has {spec.n_layers} blocks; the proof strategy needs 2V + 2 = {2 * V + 2}"
    if spec.n_ctx < 3:
        return f"spec has n_ctx = {spec.n_ctx} < 3"
    return None


def _one_block(spec: TransformerSpec, index: int) -> TransformerSpec:
    return dataclasses.replace(spec, blocks=(spec.blocks[index],))


def _ramp_clearance(construction: TwoToken, spec: TransformerSpec, n: int) -> float:
    """mu_n: distance from the grid points of digit n to the nearest ramp, read off the weights
    (units reading only rem_n; diagnostic, the verdict does not use it)."""
    V, layout = construction.vocab.size, construction.layout
    mlp = spec.blocks[1 + 2 * n].mlp
    if mlp is None:
        return float("nan")
    gap = Fraction(1, V ** (V - n))
    row = layout.index("rem", n)
    best = None
    for k in range(1, V):
        column = construction.ramp_index(n, k)
        units = np.flatnonzero(mlp.W_out[:, column])
        for j in units:
            slope = Fraction(float(mlp.W_in[row, j]))
            if slope <= 0 or np.count_nonzero(mlp.W_in[:, j]) != 1:
                return float("nan")
            z0 = Fraction(-float(mlp.b_in[j])) / slope
            z1 = Fraction(1 - Fraction(float(mlp.b_in[j]))) / slope
            below = math.floor(z0 / gap) * gap
            above = math.ceil(z1 / gap) * gap
            clearance = min(z0 - below, above - z1)
            best = clearance if best is None else min(best, clearance)
    return float(best) if best is not None else float("nan")


def certify_two_token(construction: TwoToken, spec: TransformerSpec | None = None,
                      arithmetic: str = "float64", trace: Any = None) -> TwoTokenCertificate:
    """Prove that ``spec`` (default: the construction's weights) answers m(u0, u1) for EVERY map
    m: V x V -> V and every input pair, by the compositional argument of the module docstring.

    arithmetic='float64' covers the forward pass exactly as numpy executes it in float64, with
    the virtual token rounded to float64 (x_i = fl(N_i / V^V)); 'real' covers exact arithmetic.
    Sound for any weights of the same shape; a failure is reported, never hidden.
    ``trace(stage, digit, rows, bands, form)``, if given, sees every intermediate set of forms
    (for tests that check them against concrete forward passes): stage 'front' (rows = u0 V +
    u1, t = x_u0), 'ramp' / 'clean' (after those blocks of digit n; rows = chains u1 V + y,
    t = r_n in band ``bands``), 'final' (after the select block, one per chain).
    """
    if arithmetic not in ("float64", "real"):
        raise ValueError("arithmetic must be 'float64' or 'real'")
    started = time.perf_counter()
    spec = spec or construction.spec
    V, layout = construction.vocab.size, construction.layout
    result = TwoTokenCertificate(arithmetic=arithmetic, vocab_size=V)
    problem = _structure_problem(construction, spec)
    if problem is not None:
        result.reason = problem
        result.first_failure = problem
        return result
    if trace is None:
        prefix = _cached_before_readout(_Weights(construction, spec, arithmetic))
    else:
        prefix = _before_readout(construction, spec, arithmetic, trace)
    final, ops = prefix.final, AffineOps(float_model=arithmetic == "float64")
    result.cases = prefix.cases
    result.front_error = prefix.front_error
    result.layer_errors = list(prefix.layer_errors)
    result.layer_clearances = list(prefix.layer_clearances)
    result.smallest_slack = slack = prefix.smallest_slack
    chain_u1, chain_y = np.divmod(np.arange(V * V), V)

    # (c) readout: logit margins from the final forms
    logit = ops.linear(final, spec.W_U, spec.b_U)
    lo, hi = logit.bounds()
    lo, hi = lo[:, 0], hi[:, 0]
    rows_idx = np.arange(V * V)
    margin = lo[rows_idx, chain_y][:, None] - hi
    margin[rows_idx, chain_y] = np.inf
    worst = margin.min(axis=1)
    result.cases += V * V
    result.chains = V * V
    result.failing = int((worst <= 0).sum())
    q = int(np.argmin(worst))
    result.worst_margin = float(worst[q])
    result.worst_chain = (int(chain_u1[q]), int(chain_y[q]))
    result.worst_competitor = int(np.argmin(margin[q]))
    s = construction.vocab.symbols
    result.worst_case = (f"second token {s[chain_u1[q]]!r}, m(u0, {s[chain_u1[q]]!r}) = {s[chain_y[q]]!r}, "
                         f"every u0 and map")
    result.holds = result.failing == 0 and bool(np.isfinite(worst).all())
    if not result.holds:
        bad = int(np.flatnonzero(worst <= 0)[0]) if result.failing else q
        result.first_failure = (f"second token {s[chain_u1[bad]]!r} with image {s[chain_y[bad]]!r}: "
                                f"margin bound {worst[bad]:.3g} (smallest ramp slack {slack:.3g})")
        failing = np.flatnonzero(worst <= 0)
        result.failing_examples = _chain_labels(V, chain_u1[failing], chain_y[failing])
    result.seconds = time.perf_counter() - started
    return result


@dataclass(frozen=True)
class _Prefix:
    """Everything ``certify_two_token`` computes before the unembedding: the final forms (one per
    chain, after the select block, at the read position) and the result fields they fix."""

    final: Affine
    cases: int
    front_error: float
    layer_errors: tuple[float, ...]
    layer_clearances: tuple[float, ...]
    smallest_slack: float


class _Weights:
    """What the forms before the unembedding depend on: the construction's kind and layout, the
    spec without W_U and b_U, the arithmetic. Equal (and hashed) by the pickled content, so a
    spec that differs only in the readout (the readout-bias control's) is the same key, and any
    other edit is another key."""

    def __init__(self, construction: TwoToken, spec: TransformerSpec, arithmetic: str) -> None:
        self.construction, self.spec, self.arithmetic = construction, spec, arithmetic
        stripped = dataclasses.replace(spec, W_U=np.zeros(0), b_U=np.zeros(0))
        self.key = pickle.dumps((type(construction).__module__, type(construction).__qualname__,
                                 construction.vocab.size, dict(construction.layout.ranges), arithmetic, stripped),
                                protocol=pickle.HIGHEST_PROTOCOL)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Weights) and self.key == other.key


PREFIX_CACHE_SIZE = 4  # the claim certifies 4 weight sets (V = 13; V = 10 at T, T* + delta, T* - delta)


@functools.lru_cache(maxsize=PREFIX_CACHE_SIZE)
def _cached_before_readout(weights: _Weights) -> _Prefix:
    """``_before_readout`` for the last few weight sets (a functools cache: the mutation runs
    clear it, verify.mutants.core.clear_caches)."""
    return _before_readout(weights.construction, weights.spec, weights.arithmetic, None)


def _before_readout(construction: TwoToken, spec: TransformerSpec, arithmetic: str, trace: Any) -> _Prefix:
    """(a) front, (b) digits and the select block of ``certify_two_token``."""
    V, layout = construction.vocab.size, construction.layout
    result = TwoTokenCertificate(arithmetic=arithmetic, vocab_size=V)
    ops = AffineOps(float_model=arithmetic == "float64")
    d, rows = layout.width, V**V

    # (a) front: rows (u0, u1), t = x_u0 exactly
    u0, u1 = np.divmod(np.arange(V * V), V)
    B = V * V
    t_lo = np.zeros(B)
    t_hi = np.full(B, _ceil_float(Fraction(rows - 1, rows)))
    x_max = _ceil_float(Fraction(float(rows - 1) / float(rows))) if arithmetic == "float64" \
        else _ceil_float(Fraction(rows - 1, rows))
    c, g, r = np.zeros((B, 3, d)), np.zeros((B, 3, d)), np.zeros((B, 3, d))
    c[:, 0, layout["map"]] = 0.5 * x_max
    r[:, 0, layout["map"]] = 0.5 * x_max
    at_u0 = layout.index("map") + u0
    idx = np.arange(B)
    c[idx, 0, at_u0] = 0.0
    r[idx, 0, at_u0] = U * t_hi if arithmetic == "float64" else 0.0  # one rounding of N / V^V
    g[idx, 0, at_u0] = 1.0
    c[:, 1] = spec.W_E[u0]
    c[:, 2] = spec.W_E[u1]
    x = ops.add(Affine(c, g, r, t_lo, t_hi),
                Affine.point(np.broadcast_to(spec.W_pos[:3], (B, 3, d)).copy(), t_lo, t_hi))
    x = forward(_one_block(spec, 0), x, ops)
    if trace is not None:
        trace("front", None, np.arange(B), None, x)
    result.cases += B
    rem0 = x.positions(slice(2, 3))
    k0 = layout.index("rem", 0)
    dev = np.maximum(np.abs(rem0.c[:, 0, k0] + (rem0.g[:, 0, k0] - 1) * t_lo),
                     np.abs(rem0.c[:, 0, k0] + (rem0.g[:, 0, k0] - 1) * t_hi)) + rem0.r[:, 0, k0]
    result.front_error = float(dev.max())

    keep_all = any(block.attention.n_heads for block in spec.blocks[1:])
    if not keep_all:  # MLP-only blocks act position-wise: position 2 is all that matters
        x = x.positions(slice(2, 3))
    order = np.argsort(u1, kind="stable")  # group rows by u1, join over u0
    x = join(x.rows(order), np.arange(0, B, V))  # one form per u1

    # chains (u1, y)
    chain_u1, chain_y = np.divmod(np.arange(V * V), V)
    state = x.rows(chain_u1)
    slack = np.inf
    for n in range(V):
        gap = Fraction(1, V ** (V - n))
        members, bands = [], []
        for q in range(V * V):
            for m in ([chain_y[q]] if chain_u1[q] == n else range(V)):
                members.append(q)
                bands.append(m)
        members, bands = np.array(members), np.array(bands)
        starts = np.flatnonzero(np.r_[True, members[1:] != members[:-1]])
        band_lo = np.array([_floor_float(Fraction(int(m), V)) for m in range(V)])
        band_hi = np.array([_ceil_float(Fraction(int(m) + 1, V) - gap) for m in range(V)])
        y = state.rows(members, band_lo[bands], band_hi[bands])
        result.cases += len(members)
        # diagnostic: eps_n = max |rem_n - t| over the bands
        kn = layout.index("rem", n)
        at = y.c[:, -1, kn], y.g[:, -1, kn]
        eps = np.maximum(np.abs(at[0] + (at[1] - 1) * y.t_lo), np.abs(at[0] + (at[1] - 1) * y.t_hi))
        result.layer_errors.append(float((eps + y.r[:, -1, kn]).max()))
        result.layer_clearances.append(_ramp_clearance(construction, spec, n))
        ops.record = []
        y = forward(_one_block(spec, 1 + 2 * n), y, ops)
        recorded, ops.record = ops.record, None
        mlp = spec.blocks[1 + 2 * n].mlp
        if recorded and mlp is not None:
            ramp_cols = [construction.ramp_index(n, k) for k in range(1, V)]
            units = np.flatnonzero(np.any(mlp.W_out[:, ramp_cols] != 0, axis=1))
            lo, hi = recorded[-1]
            if len(units):
                unit_slack = np.maximum(-hi[:, -1, units], lo[:, -1, units] - 1.0)
                slack = min(slack, float(unit_slack.min()))
        if trace is not None:
            trace("ramp", n, members, bands, y)
        y = forward(_one_block(spec, 2 + 2 * n), y, ops)
        if trace is not None:
            trace("clean", n, members, bands, y)
        if n < V - 1:  # t' = V t - m: the next remainder (exact change of variable)
            q = (bands.astype(np.float64) / V).reshape(-1, *([1] * (y.c.ndim - 1)))
            moving = y.g != 0
            c_new = np.where(moving, y.c + y.g * q, y.c)
            g_new = np.where(moving, y.g / V, 0.0)
            # fl(m/V), the product, the sum and g/V each round once
            err = U * (2 * np.abs(y.g) * q + np.abs(c_new) + np.abs(g_new)) * (1 + 4 * U) + 2 * ETA
            err = np.where(moving, err, 0.0)
            n_lo = np.zeros(len(members))
            n_hi = np.full(len(members), _ceil_float(1 - Fraction(1, V ** (V - n - 1))))
            y = Affine(c_new, g_new, _finish(y.r, err, 3), n_lo, n_hi)
        else:
            y = y.to_box()
        state = join(y, starts)
    result.smallest_slack = slack

    # (c) selection
    final = forward(_one_block(spec, 2 * V + 1), state, ops)
    if trace is not None:
        trace("final", None, np.arange(V * V), None, final)
    final = final.positions(slice(-1, None))
    return _Prefix(final, result.cases, result.front_error, tuple(result.layer_errors),
                   tuple(result.layer_clearances), result.smallest_slack)


def _chain_labels(V: int, u1s: np.ndarray, ys: np.ndarray, limit: int = 3000) -> list[np.ndarray]:
    """Box-cover labels (u0, u1, N) of the extreme rows of failing chains (u1, y): digit u1 = y,
    a prefix of V-1 digits and zeros after (the leakage witnesses), u0 != u1; longest prefixes
    (most leakage) first, then the same rows with u0 = u1."""
    labels = []
    for same in (False, True):
        for prefix in range(V, -1, -1):
            for u1, y in zip(u1s, ys):
                digits = np.array([V - 1 if j < prefix else 0 for j in range(V)])
                digits[u1] = y
                code = int(sum(int(v) * V ** (V - 1 - j) for j, v in enumerate(digits)))
                u0 = int(u1) if same else (1 if u1 == 0 else 0)
                labels.append(np.array([u0, int(u1), code], dtype=np.int64))
                if len(labels) >= limit:
                    return labels
    return labels

