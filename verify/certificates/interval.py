"""Interval arithmetic with outward rounding, run through the one forward pass.

A :class:`Box` is a pair of float64 arrays ``lo <= hi``: it stands for every real array between
them. :class:`IntervalOps` implements the ``Ops`` interface of :mod:`constructions.forward` so that
``forward(spec, box, IntervalOps())`` returns a box that contains the exact (real-arithmetic)
forward pass of EVERY input in the input box. One evaluation therefore certifies a whole set of
inputs at once.

Soundness, operation by operation (u = 2^-53, eta = 2^-1074, gamma_n = n u / (1 - n u)):
- sums and dot products of n terms (matmul, linear): midpoint-radius form (Rump 1999),
      x in [c - r, c + r]  =>  x W + b in [cW + b  -/+  (r|W| + gamma_{n+2} (|c||W| + r|W| + |b|) + n eta)],
  the gamma term bounds every rounding error of the float evaluation (Higham, Thm 3.1);
- add, scale: endpoints computed in float and moved one ulp outward (np.nextafter);
- relu: monotone, exact on endpoints;
- softmax: for a row with score intervals [l_r, h_r], the exact weight of entry j satisfies
      1 / (1 + sum_{r != j} exp(h_r - l_j))  <=  A_j  <=  1 / (1 + sum_{r != j} exp(l_r - h_j)),
  (each bound is the softmax at the worst corner of the box), evaluated with exp's error taken
  as at most 4 ulp (glibc documents < 1 ulp), sums bounded by gamma_n.
The bounds are sound but not tight: they ignore correlations (e.g. that a row sums to 1), so a
certificate can fail near a threshold where the exact statement still holds; it never passes
where the statement fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNIT_ROUNDOFF = 2.0**-53
SMALLEST_SUBNORMAL = 2.0**-1074
EXP_ULPS = 4.0


def gamma(n: int) -> float:
    """gamma_n = n u / (1 - n u): relative bound on the rounding error of an n-term float sum."""
    return n * UNIT_ROUNDOFF / (1.0 - n * UNIT_ROUNDOFF)


def _down(x: np.ndarray) -> np.ndarray:
    return np.nextafter(x, -np.inf)


def _up(x: np.ndarray) -> np.ndarray:
    return np.nextafter(x, np.inf)


@dataclass(frozen=True)
class Box:
    """Every real array between ``lo`` and ``hi`` (same shape, lo <= hi elementwise)."""

    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self) -> None:
        if self.lo.shape != self.hi.shape:
            raise ValueError(f"box endpoints differ in shape: {self.lo.shape} vs {self.hi.shape}")

    @classmethod
    def point(cls, x: np.ndarray) -> "Box":
        x = np.asarray(x, dtype=np.float64)
        return cls(x, x.copy())

    @property
    def shape(self) -> tuple[int, ...]:
        return self.lo.shape

    def reshape(self, *shape: int) -> "Box":
        return Box(self.lo.reshape(*shape), self.hi.reshape(*shape))

    def transpose(self, *axes: int) -> "Box":
        return Box(self.lo.transpose(*axes), self.hi.transpose(*axes))

    def __getitem__(self, index) -> "Box":
        return Box(self.lo[index], self.hi[index])

    def contains(self, x: np.ndarray) -> np.ndarray:
        return (self.lo <= x) & (x <= self.hi)

    def midrad(self) -> tuple[np.ndarray, np.ndarray]:
        """(c, r) with [lo, hi] contained in [c - r, c + r] in exact arithmetic."""
        c = 0.5 * self.lo + 0.5 * self.hi
        r = _up(np.maximum(self.hi - c, c - self.lo))
        r = _up(r + UNIT_ROUNDOFF * np.abs(c))  # the two subtractions above may round down
        return c, r

    @property
    def width(self) -> np.ndarray:
        return self.hi - self.lo


def _from_midrad(c: np.ndarray, r: np.ndarray) -> Box:
    return Box(_down(c - r), _up(c + r))


class IntervalOps:
    """The ``Ops`` of :mod:`constructions.forward`, on boxes, with outward rounding."""

    def linear(self, x: Box, W: np.ndarray, b: np.ndarray) -> Box:
        c, r = x.midrad()
        abs_w = np.abs(W)
        n = W.shape[0]
        center = c @ W + b
        spread = r @ abs_w
        err = gamma(n + 2) * (np.abs(c) @ abs_w + spread + np.abs(b)) + (n + 2) * SMALLEST_SUBNORMAL
        return _from_midrad(center, _up(_up(spread * (1 + 4 * UNIT_ROUNDOFF)) + err))

    def matmul(self, a: Box, b: Box) -> Box:
        ac, ar = a.midrad()
        bc, br = b.midrad()
        n = ac.shape[-1]
        abs_ac, abs_bc = np.abs(ac), np.abs(bc)
        center = ac @ bc
        spread = abs_ac @ br + ar @ abs_bc + ar @ br
        err = gamma(n + 2) * (abs_ac @ abs_bc + spread) + (n + 2) * SMALLEST_SUBNORMAL
        return _from_midrad(center, _up(_up(spread * (1 + 8 * UNIT_ROUNDOFF)) + err))

    def scale(self, x: Box, factor: float) -> Box:
        if factor <= 0:
            raise ValueError("interval scale expects a positive factor")
        return Box(_down(x.lo * factor), _up(x.hi * factor))

    def add(self, x: Box, y: Box) -> Box:
        return Box(_down(x.lo + y.lo), _up(x.hi + y.hi))

    def relu(self, x: Box) -> Box:
        return Box(np.maximum(x.lo, 0.0), np.maximum(x.hi, 0.0))

    def softmax(self, scores: Box, mask: np.ndarray) -> Box:
        """Sound bounds on every softmax weight; masked entries are exactly 0.

        scores: (..., n, n), rows = queries. For query i and allowed key j:
            lower_j = 1 / (1 + exp(m - l_j) * sum_{r != j} exp(h_r - m)),   m = max_r h_r
            upper_j = 1 / (1 + exp(m' - h_j) * sum_{r != j} exp(l_r - m')), m' = max_r l_r
        The sums over r != j are exclusive prefix + suffix sums of positive terms (no
        cancellation). Terms that underflow are replaced by the smallest normal number in the
        upper sum and dropped from the lower one, so both bounds stay sound; an overflowing
        factor makes the lower bound 0 and the upper bound 1.
        """
        n = scores.shape[-1]
        neg = -np.inf
        slack = EXP_ULPS * 2 * UNIT_ROUNDOFF + gamma(n + 2)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            hi = np.where(mask, scores.hi, neg)
            lo = np.where(mask, scores.lo, neg)
            m_hi = hi.max(-1, keepdims=True)
            m_lo = lo.max(-1, keepdims=True)
            s_hi = _exclusive_sums(np.exp(hi - m_hi))  # sum_{r != j} exp(h_r - m)
            s_lo = _exclusive_sums(np.exp(lo - m_lo))  # sum_{r != j} exp(l_r - m')
            tiny = n * np.finfo(np.float64).tiny  # covers every underflowed term
            worst = (s_hi * (1 + slack) + tiny) * (np.exp(m_hi - scores.lo) * (1 + slack))
            best = np.where(
                s_lo > 0, s_lo * (1 - slack) * (np.exp(m_lo - scores.hi) * (1 - slack)), 0.0
            )
            best = np.nan_to_num(best, nan=0.0, posinf=np.inf)
            lower = _down(_down(1.0 / _up(1.0 + worst)) * (1 - 2 * UNIT_ROUNDOFF))
            upper = _up(_up(1.0 / _down(1.0 + best)) * (1 + 2 * UNIT_ROUNDOFF))
        lower = np.clip(np.nan_to_num(lower, nan=0.0), 0.0, 1.0)
        upper = np.clip(np.nan_to_num(upper, nan=1.0), 0.0, 1.0)
        return Box(np.where(mask, lower, 0.0), np.where(mask, upper, 0.0))


def _exclusive_sums(terms: np.ndarray) -> np.ndarray:
    """out[..., j] = sum_{r != j} terms[..., r] for non-negative terms, without subtraction."""
    zeros = np.zeros_like(terms[..., :1])
    before = np.concatenate([zeros, np.cumsum(terms, axis=-1)[..., :-1]], axis=-1)
    after = np.concatenate([np.cumsum(terms[..., ::-1], axis=-1)[..., ::-1][..., 1:], zeros], axis=-1)
    return before + after


INTERVAL = IntervalOps()


def affine_margins(resid: Box, directions: np.ndarray, offsets: np.ndarray) -> Box:
    """Boxes around resid_b . directions[b, :, c] + offsets[b, c], one affine map per batch row.

    resid: box of shape (B, d); directions: (B, d, C); offsets: (B, C) -> box (B, C).
    Used for logit differences  (W_U[:, y] - W_U[:, c]) . x + b_U[y] - b_U[c]: evaluating the
    difference directly (instead of subtracting two logit boxes) keeps the shared x correlated.
    """
    c, r = resid.midrad()
    abs_dir = np.abs(directions)
    n = directions.shape[1]
    center = np.einsum("bd,bdc->bc", c, directions) + offsets
    spread = np.einsum("bd,bdc->bc", r, abs_dir)
    err = gamma(n + 2) * (np.einsum("bd,bdc->bc", np.abs(c), abs_dir) + spread + np.abs(offsets))
    return _from_midrad(center, _up(_up(spread * (1 + 4 * UNIT_ROUNDOFF)) + err + (n + 2) * SMALLEST_SUBNORMAL))
