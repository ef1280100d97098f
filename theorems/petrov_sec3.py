"""Minimal inverse temperatures of the Section 3 constructions, derived and proved with sympy.

All three one-layer constructions decode a scalar z = a v + (leakage) with the nearest-grid
readout, which is exact iff |z - v| < 1/(2V) (the readout lemma, ``readout_lemma``). Their
attention puts score T on one key and 0 on m others, so the weight on the target is
a = e^T / (e^T + m) and each other key gets w = 1 / (e^T + m) = (1 - a) / m. The worst-case
decoding error is

    err(T) = m / (e^T + m) * c

with (m, c) read off each construction's analysis (module docstrings in constructions.petrov):

    Theorem 1 (unconditional):   m = N - 1     (query N-1 sees N-1 non-virtual keys),  c = (V-1)/V
    Theorem 2 (conditional):     m = 1,                                              c = (V-1)/V
    long responses:              m = 2 N0 - 1  (query 2N0-1, both heads),            c = (2V-1)/V

The construction is correct for every input iff err(T) < 1/(2V), i.e. iff T > T* with

    T* = ln( m (2 V c - 1) ).

``Threshold.prove`` checks, for symbolic V, N, N0: (i) err(T*) = 1/(2V) exactly; (ii)
d err / dT < 0, so err < 1/(2V) exactly when T > T*; (iii) err grows with m, so the largest m
(the last position) is the binding one.

Those steps are algebra on the error model above; by themselves they cannot notice a model that
does not describe the weights. ``from_scores`` closes that gap: it takes what
``verify.checks.petrov_sec3.read_leakage`` reads off the built weights (for every read position,
the scores of the attended key and of the m other visible keys as polynomials in T, and the
worst readout shift c_i per unit of leaked attention over all inputs), derives the leakage
l_i(T) = 1 - softmax weight of the attended key, the error l_i(T) c_i and its threshold T*_i by
sympy's ``solve``, and compares the binding one with the model: an off-by-one in the weights'
scores or in the model's m makes a step False. Tightness on the actual weights (the certificate
passes just above T* and a concrete input fails just below) is checked by ``verify``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import sympy as sp

T, V, N, N0, m_sym = sp.symbols("T V N N0 m", positive=True)
E_T = sp.Symbol("E", positive=True)  # e^T: the errors are rational functions of it


def vanishes(expr: sp.Expr) -> bool:
    """True iff ``expr`` is identically 0, decided exactly: with e^T written as a symbol E the
    expressions here are rational functions, and ``cancel`` brings them to p/q with p = 0 iff
    the function is 0 (much faster than ``simplify``, and no heuristics)."""
    return sp.cancel(sp.expand_log(sp.sympify(expr), force=True).subs(sp.exp(T), E_T)) == 0


@dataclass(frozen=True)
class Threshold:
    construction: str
    others: sp.Expr  # m: keys other than the attended one, at the binding query
    spread: sp.Expr  # c: the worst value factor in the error
    assumptions: tuple[str, ...]

    @property
    def error(self) -> sp.Expr:
        """err(T) = m / (e^T + m) * c."""
        return self.others / (sp.exp(T) + self.others) * self.spread

    @property
    def critical(self) -> sp.Expr:
        """T* = ln(m (2 V c - 1))."""
        return sp.log(sp.expand(self.others * (2 * V * self.spread - 1)))

    def value(self, **sizes: float) -> float:
        subs = {sp.Symbol(k, positive=True): v for k, v in sizes.items()}
        return float(self.critical.subs(subs))

    def prove(self) -> dict[str, bool]:
        """Each step is True only if sympy reduces it exactly, for symbolic V, N, N0.

        Sizes are made explicit by substituting V = V' + 2, N = N' + 2, N0 = N0' + 1 with
        positive V', N', N0' (the constructions need V >= 2, N >= 2, N0 >= 1).
        """
        sizes = {V: V + 2, N: N + 2, N0: N0 + 1}
        factor = self.others * self.spread  # m c
        slope_in_t = sp.diff(self.error, T)
        err_m = m_sym / (sp.exp(T) + m_sym) * self.spread
        return {
            "err(T*) = 1/(2V)": vanishes(self.error.subs(T, self.critical) - 1 / (2 * V)),
            "d err/dT = -m c e^T / (e^T + m)^2": vanishes(
                slope_in_t + factor * sp.exp(T) / (sp.exp(T) + self.others) ** 2),
            "m c > 0, so err falls strictly in T": sp.factor(factor.subs(sizes)).is_positive is True,
            "d err/dm = c e^T / (e^T + m)^2 > 0": vanishes(
                sp.diff(err_m, m_sym) - self.spread * sp.exp(T) / (sp.exp(T) + m_sym) ** 2)
            and sp.factor(self.spread.subs(sizes)).is_positive is True,
        }


THRESHOLDS: dict[str, Threshold] = {
    "unconditional": Threshold("unconditional", N - 1, (V - 1) / V,
                               ("N >= 2 (for N = 1 the virtual token's own position decodes exactly)",)),
    "conditional": Threshold("conditional", sp.Integer(1), (V - 1) / V, ("V >= 2",)),
    "long-response": Threshold("long-response", 2 * N0 - 1, (2 * V - 1) / V, ("N0 >= 1",)),
}


# --- the readout lemma ------------------------------------------------------------------

def readout_lemma() -> dict[str, bool]:
    """The nearest-grid readout logit_c(z) = 2 (c/V) z - (c/V)^2 decodes y iff |z - y/V| < 1/(2V).

    The logits are concave in c (a parabola in c/V), so y wins iff it beats both neighbours:
    logit_y - logit_{y+1} = (2/V) ((2y+1)/(2V) - z) and logit_y - logit_{y-1} = (2/V) (z - (2y-1)/(2V)),
    i.e. (2y-1)/(2V) < z < (2y+1)/(2V). Both identities are checked for symbolic V, y, z.
    """
    Vs, y, z = sp.symbols("V y z", positive=True)

    def logit(c: sp.Expr) -> sp.Expr:
        return 2 * (c / Vs) * z - (c / Vs) ** 2

    return {
        "logit_y - logit_(y+1) = (2/V)((2y+1)/(2V) - z)":
            sp.expand(logit(y) - logit(y + 1) - 2 / Vs * ((2 * y + 1) / (2 * Vs) - z)) == 0,
        "logit_y - logit_(y-1) = (2/V)(z - (2y-1)/(2V))":
            sp.expand(logit(y) - logit(y - 1) - 2 / Vs * (z - (2 * y - 1) / (2 * Vs))) == 0,
        "second difference in c is -2/V^2 < 0 (concave: the neighbours decide)":
            sp.expand(logit(y + 1) - 2 * logit(y) + logit(y - 1) + 2 / Vs**2) == 0,
    }


# --- the threshold from the weights' own scores ---------------------------------------------

Poly = tuple[Fraction, Fraction, Fraction]  # a0 + a1 T + a2 T^2


@dataclass(frozen=True)
class ScoreRow:
    """What the weights say at one read position (``verify.checks.petrov_sec3.read_leakage``).

    attended: the score of the one key the heads attend to; other: the score shared by the
    ``others`` (m) other visible keys, each a polynomial a0 + a1 T + a2 T^2 with exact rational
    coefficients; spread: c_i, the largest |readout shift| per unit of leaked attention over
    every input (an exact rational).
    """

    position: int
    attended: Poly
    other: Poly
    others: int
    spread: Fraction


def _poly(p: Poly) -> sp.Expr:
    return sum((sp.Rational(a.numerator, a.denominator) * T**k for k, a in enumerate(p)), sp.Integer(0))


def leakage(row: ScoreRow) -> sp.Expr:
    """l(T) = 1 - e^{s*} / (e^{s*} + m e^{s_o}): the attention the softmax of the row's scores
    leaves off the attended key (0 when there is no other key)."""
    if row.others == 0:
        return sp.Integer(0)
    top, rest = sp.exp(_poly(row.attended)), row.others * sp.exp(_poly(row.other))
    return sp.factor(sp.cancel(1 - top / (top + rest)))


def row_threshold(row: ScoreRow, vocab_size: int) -> sp.Expr | None:
    """The T > 0 at which l(T) c reaches the readout tolerance 1/(2V) (sympy ``solve``); None
    when the row leaks nothing or never reaches it (no constraint)."""
    error = leakage(row) * sp.Rational(row.spread.numerator, row.spread.denominator)
    if error == 0:
        return None
    roots = [r for r in sp.solve(sp.Eq(error, sp.Rational(1, 2 * vocab_size)), T) if r.is_real]
    return max(roots, key=lambda r: float(r)) if roots else None


def row_threshold_value(row: ScoreRow, vocab_size: int) -> float | None:
    """The same threshold in float64, for ranking the read positions: l(T) c = 1/(2V) is
    e^{s*(T) - s_o(T)} = m (2 V c - 1) (the row's softmax), a polynomial equation in T; its
    largest real root. None when 2 V c <= 1 or m = 0 (the tolerance is never reached)."""
    target = row.others * (2 * vocab_size * row.spread - 1)
    if row.others == 0 or target <= 0:
        return None
    gap = [float(a - b) for a, b in zip(row.attended, row.other)]  # g0 + g1 T + g2 T^2
    coefficients = [gap[2], gap[1], gap[0] - math.log(float(target))]
    while coefficients and coefficients[0] == 0:
        coefficients.pop(0)
    if len(coefficients) < 2:
        return None
    roots = [float(r.real) for r in np.roots(coefficients) if abs(r.imag) < 1e-12]
    return max(roots) if roots else None


def from_scores(rows: list[ScoreRow], vocab_size: int, threshold: "Threshold",
                sizes: dict[str, int]) -> dict[str, Any]:
    """Derive err(T) and T* from the weights' score rows and compare them with ``threshold``.

    Every read position must be decoded, so the claim's T* is the largest T*_i: the rows are
    ranked by ``row_threshold_value`` and the binding one is solved with sympy. Returns
    {"steps": {name: bool}, "binding_position", "T*", "T*_value", "err", "model_err",
    "per_position"}. The steps: the binding row's error l(T) c equals the model's err(T) at
    these sizes, and its solved T* equals the model's T*.
    """
    subs = {sp.Symbol(k, positive=True): v for k, v in sizes.items()}
    values = {row.position: row_threshold_value(row, vocab_size) for row in rows}
    constrained = {p: t for p, t in values.items() if t is not None}
    if not constrained:
        return {"steps": {"some read position leaks attention": False}, "binding_position": None}
    binding = max(constrained, key=lambda p: constrained[p])
    row = next(r for r in rows if r.position == binding)
    err_w = leakage(row) * sp.Rational(row.spread.numerator, row.spread.denominator)
    err_model = threshold.error.subs(subs)
    t_w, t_model = row_threshold(row, vocab_size), threshold.critical.subs(subs)
    steps = {
        "err(T) from the weights' scores = the model's m c/(e^T + m)": vanishes(err_w - err_model),
        "T* solved from the weights = the model's ln(m (2Vc - 1))": t_w is not None and vanishes(t_w - t_model),
    }
    return {"steps": steps, "binding_position": binding, "T*": str(t_w),
            "T*_value": None if t_w is None else float(t_w), "err": str(err_w),
            "model_err": str(sp.factor(err_model)), "model_T*": str(t_model),
            "per_position": {str(p): (None if t is None else round(t, 6)) for p, t in values.items()}}


# --- two-token conditioning (constructions.petrov.two_token) -------------------------------

def two_token_thresholds(vocab_size: int | None = None,
                         ramp_width: float | Fraction | None = None) -> dict[str, Any]:
    """The leakage analysis of the module docstring, solved with sympy for E = e^T.

    Returns symbolic formulas (in V, rho) and, with ``vocab_size``, their values:
      'certified': the smallest T at which every ramp keeps its clearance in exact arithmetic
                   (the certificate's threshold up to float64 rounding),
      'witness':   below it the all-(V-1) row answers its last digit wrongly,
      'layer_bound': the condition at digit n (it binds at n = V-1),
      'checks':    sympy identities behind the derivation (all True).
    """
    E, V, rho, n = sp.symbols("E V rho n", positive=True)
    w = 1 / (E + 2)  # attention leaked to each of the two other keys
    # error of rem_n below the exact remainder: V^n * 2w(1 + x); worst row: digits 0..n all V-1,
    # then zeros, so x = 1 - V^-(n+1) and r_n = (V-1)/V is the lower edge of band V-1.
    error_n = V**n * 2 * w * (1 + (1 - V ** (-(n + 1))))
    clearance_n = (1 - rho) * V ** (n - V) / 2
    last_error = error_n.subs(n, V - 1)
    e_cert = sp.solve(sp.Eq(last_error, clearance_n.subs(n, V - 1)), E)[0]
    e_fail = sp.solve(sp.Eq(last_error, 1 / (2 * V)), E)[0]  # step of the last digit = 1/2
    bound_n = sp.solve(sp.Eq(error_n, clearance_n), E)[0]  # e^T needed at digit n
    checks = {
        "e^T(certified) = 4(2V^V - 1)/(1 - rho) - 2":
            sp.simplify(e_cert - (4 * (2 * V**V - 1) / (1 - rho) - 2)) == 0,
        "e^T(witness) = 8V^V - 6": sp.simplify(e_fail - (8 * V**V - 6)) == 0,
        "digit n needs e^T >= 4(2V^V - V^(V-n-1))/(1 - rho) - 2":
            sp.simplify(bound_n - (4 * (2 * V**V - V ** (V - n - 1)) / (1 - rho) - 2)) == 0,
    }
    # the requirement grows with n, so the last digit binds: d/dn = 4 V^(V-n-1) ln V / (1 - rho),
    # positive for V >= 2 and 0 < rho < 1 (substitute V = V' + 2, rho = 1/(1 + rho'))
    slope = 4 * V ** (V - n - 1) * sp.log(V) / (1 - rho)
    checks["d/dn of the requirement = 4 V^(V-n-1) ln V / (1 - rho)"] = (
        sp.simplify(sp.diff(bound_n, n) - slope) == 0)
    checks["... which is positive"] = bool(
        sp.simplify(slope.subs({V: V + 2, rho: 1 / (1 + rho)})).is_positive)
    out: dict[str, Any] = {
        "certified_formula": sp.log(4 * (2 * V**V - 1) / (1 - rho) - 2),
        "witness_formula": sp.log(8 * V**V - 6),
        "layer_bound": bound_n,
        "checks": checks,
    }
    if vocab_size is not None:
        if ramp_width is None:
            raise ValueError("numeric thresholds need the construction's ramp_width")
        subs = {V: vocab_size, rho: sp.Rational(Fraction(ramp_width).numerator, Fraction(ramp_width).denominator)}
        out["certified"] = float(out["certified_formula"].subs(subs))
        out["witness"] = float(out["witness_formula"].subs(subs))
    return out


def two_token_front_from_scores(row: ScoreRow, kappa: Fraction, slope: Fraction,
                                gains: list[Fraction], vocab_size: int) -> dict[str, bool]:
    """Tie ``two_token_thresholds``' error model to the weights.

    The model says: after block 0, rem_0 = x - 2w(1 + x) with w = 1/(e^T + 2) at the worst input
    pair (u0 != u1), and each digit block passes the remainder on with gain V
    (rem_{n+1} = V rem_n - d_n), so the error of rem_n is V^n 2w(1 + x). The weights give, at
    read position 2: the score row (hence the leakage l(T)), the worst shift of rem_0 per unit
    of leakage as kappa + slope x (x: the decoded row's value), and the pass-through gain of
    every digit block. Both must agree with the model exactly.
    """
    x = sp.Symbol("x", nonnegative=True)
    w = 1 / (sp.exp(T) + 2)
    shift = leakage(row) * (sp.Rational(kappa.numerator, kappa.denominator)
                            + sp.Rational(slope.numerator, slope.denominator) * x)
    return {
        "rem_0 - x from the weights' scores = the model's -2w(1 + x)":
            sp.simplify(shift - (-2 * w * (1 + x))) == 0,
        "every digit block's remainder gain read from the weights = V":
            len(gains) == vocab_size - 1 and all(g == vocab_size for g in gains),
    }
