"""Minimal inverse temperatures of the Section 3 constructions, derived and proved with sympy.

All three one-layer constructions decode a scalar z = a v + (leakage) with the nearest-grid
readout, which is exact iff |z - v| < 1/(2V) (``constructions.petrov.parts``). Their attention
puts score T on one key and 0 on m others, so the weight on the target is a = e^T / (e^T + m)
and each other key gets w = 1 / (e^T + m) = (1 - a) / m. The worst-case decoding error is

    err(T) = m / (e^T + m) * c

with (m, c) read off each construction's analysis (module docstrings in constructions.petrov):

    Theorem 1 (unconditional):   m = N - 1     (query N-1 sees N-1 non-virtual keys),  c = (V-1)/V
    Theorem 2 (conditional):     m = 1,                                              c = (V-1)/V
    long responses:              m = 2 N0 - 1  (query 2N0-1, both heads),            c = (2V-1)/V

The construction is correct for every input iff err(T) < 1/(2V), i.e. iff T > T* with

    T* = ln( m (2 V c - 1) ).

``prove`` checks, for symbolic V, N, N0: (i) err(T*) = 1/(2V) exactly; (ii) d err / dT < 0, so
err < 1/(2V) exactly when T > T*; (iii) err grows with m, so the largest m (the last position)
is the binding one. Tightness on the actual weights (the certificate passes just above T* and a
concrete input fails just below) is checked by ``verify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import sympy as sp

T, V, N, N0, m_sym = sp.symbols("T V N N0 m", positive=True)


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
            "err(T*) = 1/(2V)": sp.simplify(self.error.subs(T, self.critical) - 1 / (2 * V)) == 0,
            "d err/dT = -m c e^T / (e^T + m)^2": sp.simplify(
                slope_in_t + factor * sp.exp(T) / (sp.exp(T) + self.others) ** 2) == 0,
            "m c > 0, so err falls strictly in T": sp.factor(factor.subs(sizes)).is_positive is True,
            "d err/dm = c e^T / (e^T + m)^2 > 0": sp.simplify(
                sp.diff(err_m, m_sym) - self.spread * sp.exp(T) / (sp.exp(T) + m_sym) ** 2) == 0
            and sp.factor(self.spread.subs(sizes)).is_positive is True,
        }


THRESHOLDS: dict[str, Threshold] = {
    "unconditional": Threshold("unconditional", N - 1, (V - 1) / V,
                               ("N >= 2 (for N = 1 the virtual token's own position decodes exactly)",)),
    "conditional": Threshold("conditional", sp.Integer(1), (V - 1) / V, ("V >= 2",)),
    "long-response": Threshold("long-response", 2 * N0 - 1, (2 * V - 1) / V, ("N0 >= 1",)),
}


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
