"""A rotation of W_V cannot be matched by one prefix vector: the exact minimax error, proved.

Claim petrov.sec4.rotation-not-a-bias (Petrov et al., ICLR 2024, the authors' reply to reviewer 1:
"there is no non-zero vector that one can add to a set of points on the surface of a sphere that
will keep them all on the surface"). The formalization below is OURS.

Setting. One content token per query, so the pretrained head outputs t = W_V x =: v (W_V = I
w.l.o.g.); the inputs v range over a set V of unit vectors. Full fine-tuning W_V -> R W_V with R
orthogonal gives t^ft = R v. A prefix of ONE vector s gives (Sec. 4, petrov.sec4.output-bias)

    t^pt(v) = (1 - alpha(v)) v + alpha(v) b,      b = W_V s fixed,  alpha(v) in (0, 1).

Relaxation: let alpha(v) be ANY number in [0, 1], chosen per input. Every real layer (any W_Q,
W_K, any norm of s) is a special case, so a lower bound for the relaxation bounds every layer. For
a fixed b the best alpha makes the error the distance from the target to the segment [v, b]:

    e_v(b) = min_{alpha in [0,1]} |(1 - alpha) v + alpha b - T(v)| = dist(T(v), [v, b]),
    F(b)   = sup_{v in V} e_v(b)              (worst case over the inputs).

Theorem (exact minimax value). If V is symmetric (V = -V) and the target T is odd
(T(-v) = -T(v), e.g. any linear map, in particular T(v) = R v), then

    min_b F(b) = F(0) = sup_{v in V} dist(T(v), [0, v]).

Proof.
  (1) Quasiconvexity: for fixed v, y the set {b : dist(y, [v, b]) <= eps} is convex. Take b_1, b_2
      in it, with points p_i = v + a_i (b_i - v) within eps of y (a_i in [0, 1]), and
      b = lam b_1 + (1 - lam) b_2. If a_1 = 0 or a_2 = 0 then p_i = v is in the ball and v lies on
      [v, b]. Otherwise, with
          mu = a_2 lam / (a_2 lam + a_1 (1 - lam)),   c = a_1 a_2 / (a_2 lam + a_1 (1 - lam)),
      the point q = mu p_1 + (1 - mu) p_2 equals v + c (b - v) (an identity), mu and c lie in
      [0, 1], and |q - y| <= mu |p_1 - y| + (1 - mu) |p_2 - y| <= eps (triangle inequality). So
      q is a point of [v, b] in the ball. Hence every e_v, and their supremum F, is quasiconvex:
      F(lam b_1 + (1 - lam) b_2) <= max(F(b_1), F(b_2)).
  (2) Symmetry: negation is an isometry, (1 - a) v + a (-b) - y = -((1 - a)(-v) + a b - (-y)),
      so e_v(-b) = e_{-v}(b) when T(-v) = -T(v); as V = -V, F(-b) = F(b).
  (3) Midpoint: 0 = (b + (-b))/2, so F(0) <= max(F(b), F(-b)) = F(b) for every b.         QED

Corollary (rotations, every dimension, every angle). For unit v with angle phi = angle(v, R v),
the nearest point of [0, v] to R v is gamma v with gamma = clip(cos phi, 0, 1), and

    dist(R v, [0, v]) = m(phi),    m(phi) = sin(phi) for phi <= pi/2,  1 for phi >= pi/2,

which is non-decreasing on [0, pi]. So for R orthogonal with largest principal angle theta
(theta = pi if R has eigenvalue -1) and ANY symmetric V that contains one antipodal pair +-u with
angle(u, R u) = theta (two inputs suffice; the whole sphere S^{d-1} qualifies):

    min_b sup_v dist(R v, [v, b]) = m(theta) > 0   for every R != I  (theta in (0, pi]),

attained by b = 0 with alpha(v) = 1 - clip(cos angle(v, Rv), 0, 1). For R = I the value is 0.

Further facts proved here (used by verify): the best alpha for fixed b is the clipped projection;
the least-squares bias for GIVEN alphas, b sum_i alpha_i^2 = sum_i alpha_i (alpha_i v_i - c_i),
c_i = v_i - T(v_i); projecting onto an R-invariant plane P that contains v and T(v) can only lower
the error (the 2-D reduction used by the branch-and-bound); the translation T(v) = v + c is not
odd and IS matched as |b| -> oo (error |c| / lambda at b = lambda c/|c|); with n_S >= d + 1 prefix
vectors the relaxation's error is 0 (a simplex containing the unit ball), so the relaxation alone
cannot limit long prefixes; and in a multi-head layer without query biases, a head whose query
vanishes at +-v attends uniformly, which forces an error >= |W_V^h (v/(n_S+1) - T(v))| whatever
the prefix keys and values (the untied lower bound of verify.certificates.rotation).

How the steps are checked. ``prove()`` runs every algebraic step of the proof and of the facts
above in sympy; the logical glue (the triangle inequality in (1), "quasiconvex at lam = 1/2" in
(3)) is the prose above. Each step is computed from a stated premise (``Premises``: the claimed
best alpha, the mixing weight mu, oddness of T, the claimed m(theta), ...), never compared with a
copy of itself; ``WRONG`` holds a deliberately wrong premise per proof, and the tests require
that each makes at least one step of its proof False. The closed form is also tied to the number
the certificates use: ``minimax_error`` must equal the proved m(theta) at every whole degree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import sympy as sp

theta = sp.Symbol("theta", real=True)
alpha, gamma, lam_, n_ = sp.symbols("alpha gamma lambda n", positive=True)
# lam = L/(L+M) in (0, 1); a_i = A_i/(A_i + E_i) in (0, 1] (E_i >= 0): sign questions become
# questions about rational functions of positive symbols, which sympy decides.
L_, M_, A1, A2 = sp.symbols("L M A_1 A_2", positive=True)
E1, E2 = sp.symbols("E_1 E_2", nonnegative=True)

STATEMENT = (
    "For inputs v on a symmetric set containing an antipodal pair +-u in the rotation plane (e.g. "
    "the unit sphere) and R orthogonal with largest principal angle theta, every single prefix "
    "vector b, with alpha chosen freely per input in [0, 1], has worst-case error "
    ">= m(theta) = sin(theta) (theta <= 90 deg) or 1 (theta >= 90 deg), and b = 0 attains it: "
    "m(theta) > 0 for every R != I."
)

HALF_PI = sp.pi / 2
DEGREES = [math.radians(deg) for deg in range(181)]
FIRST = sp.Interval(0, HALF_PI)  # angles where cos >= 0
SECOND = sp.Interval(HALF_PI, sp.pi)  # angles where cos <= 0


def minimax_closed_form() -> sp.Piecewise:
    """m(theta): the exact minimax worst-case error of one prefix vector against a rotation by
    theta in [0, pi]."""
    return sp.Piecewise((sp.sin(theta), theta <= HALF_PI), (sp.Integer(1), True))


def minimax_error(angle_rad: float) -> float:
    """m(angle) as a float, for angle in [0, pi] (the principal angle of R)."""
    if not 0.0 <= angle_rad <= float(sp.pi) + 1e-15:
        raise ValueError(f"a principal angle lies in [0, pi], got {angle_rad}")
    return float(sp.sin(angle_rad)) if angle_rad <= float(HALF_PI) else 1.0


def is_zero(expr: sp.Expr) -> bool:
    """expr == 0 identically: first as a rational function (the numerator of ``together``
    expands to 0, an exact identity test, ~4x faster than simplify on these steps), else by
    ``simplify`` (the trigonometric steps). Either way a True is a proof, never a numeric test."""
    numerator, _ = sp.fraction(sp.together(expr))
    return sp.expand(numerator) == 0 or sp.simplify(expr) == 0


def _vec(name: str, d: int) -> sp.Matrix:
    return sp.Matrix(sp.symbols(f"{name}_1:{d + 1}", real=True))


# --- the premises -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Premises:
    """What the proof steps start from; the defaults are the true premises. Each proof reads
    one field, and ``WRONG`` replaces each by a deliberately wrong one, which must make at least
    one step of that proof come out False (tests/test_rotation.py).

    alpha_star(v, b, y):    the claimed best alpha (true: the projection (y-v).(b-v)/|b-v|^2)
    mixing(a1, a2, lam):    the weight mu of the quasiconvexity combination
    odd_target:             T(-v) = -T(v) (true for any linear T, e.g. a rotation)
    closed_form:            the claimed minimax value m(theta)
    ls_denominator(alphas): the normaliser of the least-squares bias (true: sum alpha_i^2)
    out_of_plane:           the third coordinate of the input v in the plane reduction (true: 0)
    radius:                 the circumradius of the n_S = 3 triangle of biases (true: 2)
    uniform_keys(n):        how many keys a null-query head attends uniformly (true: n + 1)
    """

    alpha_star: Callable[[sp.Matrix, sp.Matrix, sp.Matrix], sp.Expr] = field(
        default=lambda v, b, y: ((y - v).T * (b - v))[0] / ((b - v).T * (b - v))[0])
    mixing: Callable[[sp.Expr, sp.Expr, sp.Expr], sp.Expr] = field(
        default=lambda a1, a2, lam: a2 * lam / (a2 * lam + a1 * (1 - lam)))
    odd_target: bool = True
    closed_form: sp.Piecewise = field(default_factory=minimax_closed_form)
    ls_denominator: Callable[[tuple], sp.Expr] = field(default=lambda alphas: sum(a ** 2 for a in alphas))
    out_of_plane: sp.Expr = sp.Integer(0)
    radius: sp.Expr = sp.Integer(2)
    uniform_keys: Callable[[sp.Expr], sp.Expr] = field(default=lambda n: n + 1)


TRUE = Premises()
WRONG: dict[str, Premises] = {
    "best_alpha": Premises(alpha_star=lambda v, b, y: ((y - v).T * (b - v))[0]),
    "quasiconvexity": Premises(mixing=lambda a1, a2, lam: a1 * lam / (a1 * lam + a2 * (1 - lam))),
    "symmetry": Premises(odd_target=False),
    "closed_form": Premises(closed_form=sp.Piecewise((sp.sin(theta / 2), theta <= HALF_PI), (sp.Integer(1), True))),
    "least_squares": Premises(ls_denominator=lambda alphas: sum(alphas)),
    "plane_reduction": Premises(out_of_plane=sp.Symbol("v_3", real=True)),
    "long_prefixes": Premises(radius=sp.Integer(1), uniform_keys=lambda n: n),
}


# --- the proof steps ---------------------------------------------------------------------------

def prove_best_alpha(premises: Premises = TRUE) -> dict[str, bool]:
    """For fixed b the error is a convex quadratic in alpha, minimised at the projection
    alpha* = (y - v).(b - v) / |b - v|^2; clipping to [0, 1] gives the constrained minimum."""
    v, b, y = _vec("v", 3), _vec("b", 3), _vec("y", 3)
    a = sp.Symbol("a", real=True)
    r = (1 - a) * v + a * b - y
    sq = (r.T * r)[0]
    d = b - v
    return {
        "best alpha: d/d alpha |(1-a) v + a b - y|^2 = 0 at the premised a* (d = 3)":
            is_zero(sp.diff(sq, a).subs(a, premises.alpha_star(v, b, y))),
        "best alpha: d^2/d alpha^2 = 2 |b - v|^2 >= 0 (convex, so the clipped a* is optimal)":
            is_zero(sp.diff(sq, a, 2) - 2 * (d.T * d)[0]),
    }


def prove_quasiconvexity(premises: Premises = TRUE) -> dict[str, bool]:
    """Step (1): q = mu p_1 + (1 - mu) p_2 lies on [v, b] with b = lam b_1 + (1 - lam) b_2."""
    v, b1, b2 = (sp.Symbol(name, real=True) for name in ("v", "b_1", "b_2"))  # one coordinate
    a1, a2 = sp.symbols("a_1 a_2", positive=True)
    mu = premises.mixing(a1, a2, lam_)
    c = a1 * a2 / (a2 * lam_ + a1 * (1 - lam_))
    p1, p2 = v + a1 * (b1 - v), v + a2 * (b2 - v)
    b = lam_ * b1 + (1 - lam_) * b2
    positive = {lam_: L_ / (L_ + M_), a1: A1 / (A1 + E1), a2: A2 / (A2 + E2)}
    one_minus_c = sp.factor(sp.together((1 - c).subs(positive)))
    one_minus_mu = sp.factor(sp.together((1 - mu).subs(positive)))
    return {
        "quasiconvexity: mu p_1 + (1-mu) p_2 - (v + c (b - v)) = 0 (every coordinate)":
            is_zero(mu * p1 + (1 - mu) * p2 - (v + c * b - c * v)),
        "quasiconvexity: c >= 0 and 1 - c >= 0 for lam in (0,1), a_i in (0,1]":
            bool(sp.factor(sp.together(c.subs(positive))).is_nonnegative) and bool(one_minus_c.is_nonnegative),
        "quasiconvexity: mu >= 0 and 1 - mu >= 0":
            bool(sp.factor(sp.together(mu.subs(positive))).is_nonnegative) and bool(one_minus_mu.is_nonnegative),
    }


def prove_symmetry(premises: Premises = TRUE) -> dict[str, bool]:
    """Step (2): the residual for (v, -b, T(v)) is minus the residual for (-v, b, T(-v)), so
    e_v(-b) = e_{-v}(b) (negation is an isometry). Step (3), F(0) <= max(F(b), F(-b)), is
    quasiconvexity at lam = 1/2, since 0 is the midpoint of b and -b."""
    v, b, y, shift = _vec("v", 3), _vec("b", 3), _vec("y", 3), _vec("c", 3)
    a = sp.Symbol("a", real=True)
    target_at_minus_v = -y if premises.odd_target else -y + 2 * shift  # T(-v)
    residual = (1 - a) * v + a * (-b) - y
    mirrored = (1 - a) * (-v) + a * b - target_at_minus_v
    return {
        "symmetry: (1-a) v - a b - T(v) = -((1-a)(-v) + a b - T(-v)), so e_v(-b) = e_{-v}(b)":
            all(is_zero(x) for x in residual + mirrored),
    }


def prove_closed_form(premises: Premises = TRUE) -> dict[str, bool]:
    """Corollary: dist(R v, [0, v]) = m(angle), in the plane of v and Rv (v = e_1); each branch
    of the premised m is compared with the distance derived from the geometry."""
    m = premises.closed_form
    premised = sp.lambdify(theta, m, "math")
    first, second = m.args[0].expr, m.args[1].expr  # the branches on [0, pi/2] and [pi/2, pi]
    v = sp.Matrix([1, 0])
    Rv = sp.Matrix([sp.cos(theta), sp.sin(theta)])
    sq = ((gamma * v - Rv).T * (gamma * v - Rv))[0]
    return {
        "closed form: |gamma v - R v|^2 = (gamma - cos theta)^2 + sin^2 theta":
            is_zero(sq - ((gamma - sp.cos(theta)) ** 2 + sp.sin(theta) ** 2)),
        "closed form: cos theta in [0, 1] on [0, pi/2] (the nearest point is gamma* = cos theta)":
            sp.solveset(sp.cos(theta) < 0, theta, FIRST) == sp.EmptySet
            and sp.solveset(sp.cos(theta) > 1, theta, FIRST) == sp.EmptySet,
        "closed form: on [0, pi/2] the distance^2 at gamma* = cos theta is m(theta)^2":
            is_zero(sq.subs(gamma, sp.cos(theta)) - first ** 2),
        "closed form: cos theta <= 0 on [pi/2, pi] (gamma* = 0), and the distance^2 there is m(theta)^2":
            sp.solveset(sp.cos(theta) > 0, theta, SECOND) == sp.EmptySet and is_zero(sq.subs(gamma, 0) - second ** 2),
        "m(theta) > 0 on (0, pi/2] (m <= 0 has no solution there)":
            sp.solveset(first <= 0, theta, sp.Interval.Lopen(0, HALF_PI)) == sp.EmptySet,
        "m is continuous at pi/2 (both branches agree)": is_zero(first.subs(theta, HALF_PI) - second),
        "m non-decreasing on [0, pi/2]: dm/d theta < 0 has no solution there":
            sp.solveset(sp.diff(first, theta) < 0, theta, FIRST) == sp.EmptySet,
        "m(0) = 0: the identity gets no positive bound": m.subs(theta, 0) == 0,
        "minimax_error (the float every certificate uses) equals m at every whole degree 0..180": all(
            abs(minimax_error(angle) - float(premised(angle))) <= 1e-15 for angle in DEGREES),
    }


def prove_least_squares(premises: Premises = TRUE, n: int = 3, d: int = 2) -> dict[str, bool]:
    """Best bias for GIVEN alphas (sum of squared errors): gradient zero at
    b sum alpha_i^2 = sum alpha_i (alpha_i v_i - c_i), c_i = v_i - y_i; the Hessian is
    2 sum alpha_i^2 I (convex)."""
    alphas = sp.symbols(f"alpha_1:{n + 1}", positive=True)
    vs = [_vec(f"v{i}", d) for i in range(n)]
    ys = [_vec(f"y{i}", d) for i in range(n)]
    b = _vec("b", d)
    loss = sum((((1 - a) * v + a * b - y).T * ((1 - a) * v + a * b - y))[0] for a, v, y in zip(alphas, vs, ys))
    s2 = sum(a ** 2 for a in alphas)
    closed = sum((a * (a * v - (v - y)) for a, v, y in zip(alphas, vs, ys)), sp.zeros(d, 1)) \
        / premises.ls_denominator(alphas)
    grad = [sp.diff(loss, x) for x in b]
    return {
        f"least squares (n={n}, d={d}): gradient vanishes at b = sum a_i (a_i v_i - c_i) / sum a_i^2":
            all(is_zero(g.subs(dict(zip(b, closed)))) for g in grad),
        "least squares: Hessian = 2 sum alpha_i^2 I (positive definite)":
            all(is_zero(sp.diff(loss, b[i], b[j]) - (2 * s2 if i == j else 0)) for i in range(d) for j in range(d)),
    }


def prove_plane_reduction(premises: Premises = TRUE) -> dict[str, bool]:
    """2-D reduction: P = span(e_1, e_2) in R^3, Pi = diag(1, 1, 0). For v, y in P,
    Pi((1-a) v + a b) = (1-a) v + a Pi b and |p - y|^2 = |Pi(p - y)|^2 + (p_3)^2 >= |Pi(p - y)|^2."""
    a = sp.Symbol("a", real=True)
    v1, v2, y1, y2 = sp.symbols("v_1 v_2 y_1 y_2", real=True)
    v, y, b = sp.Matrix([v1, v2, premises.out_of_plane]), sp.Matrix([y1, y2, 0]), _vec("b", 3)
    Pi = sp.diag(1, 1, 0)
    p = (1 - a) * v + a * b
    full = ((p - y).T * (p - y))[0]
    proj = ((Pi * (p - y)).T * (Pi * (p - y)))[0]
    return {
        "plane reduction: Pi((1-a) v + a b) = (1-a) v + a Pi b for v in P":
            all(is_zero(x) for x in Pi * p - ((1 - a) * v + a * (Pi * b))),
        "plane reduction: |p - y|^2 - |Pi (p - y)|^2 = p_3^2 >= 0": is_zero(full - proj - p[2] ** 2),
    }


def prove_long_prefix_facts(premises: Premises = TRUE) -> dict[str, bool]:
    """(i) the relaxation with n_S = 3 >= d + 1 (d = 2): the triangle with vertices at radius 2,
    120 degrees apart, has inradius 1, so it contains the unit disk: every target in it is a convex
    combination of the three biases, relaxed error 0. (ii) the untied null-query bound: with
    uniform attention over its n + 1 keys the head outputs at +-v are (S +- x)/(n+1); their errors
    against +-z differ by 2 (x/(n+1) - z), so the larger one is >= |x/(n+1) - z|."""
    S, x, z = sp.symbols("S x z", real=True)
    vertices = [premises.radius * sp.Matrix([sp.cos(2 * sp.pi * k / 3), sp.sin(2 * sp.pi * k / 3)])
                for k in range(3)]
    edge_mid = (vertices[0] + vertices[1]) / 2
    keys = premises.uniform_keys(n_)
    plus, minus = (S + x) / keys - z, (S - x) / keys + z
    return {
        "n_S = d + 1 = 3: inradius of the radius-2 triangle = |edge midpoint| = 1": is_zero(edge_mid.norm() - 1),
        "untied null query: err(+v) - err(-v) = 2 (x/(n+1) - z)": is_zero(plus - minus - 2 * (x / (n_ + 1) - z)),
    }


PROOFS: dict[str, Callable[..., dict[str, bool]]] = {
    "best_alpha": prove_best_alpha,
    "quasiconvexity": prove_quasiconvexity,
    "symmetry": prove_symmetry,
    "closed_form": prove_closed_form,
    "least_squares": prove_least_squares,
    "plane_reduction": prove_plane_reduction,
    "long_prefixes": prove_long_prefix_facts,
}


@cache
def _proved() -> tuple[tuple[str, bool], ...]:
    steps: list[tuple[str, bool]] = []
    for fn in PROOFS.values():
        steps.extend(fn().items())
    return tuple(steps)


def prove() -> dict[str, bool]:
    """{step: bool} for every proof step (computed once per process; a fresh dict each call)."""
    return dict(_proved())


# --- the controls: statements the theorem must NOT give ----------------------------------------

def refute_identity() -> dict[str, Any]:
    """R = I: the largest principal angle is 0 and m(0) = 0, so no positive bound follows."""
    value = minimax_closed_form().subs(theta, 0)
    return {"variant": "R = I (theta = 0)", "m(0)": float(value), "refuted": value == 0}


def refute_translation() -> dict[str, Any]:
    """T(v) = v + c: not odd (T(v) + T(-v) = 2c != 0), so step (2) fails; and it IS matched in
    the limit: at b = lam u (u = c/|c|), alpha = |c|/lam the residual is -(|c|/lam) v."""
    v, c = _vec("v", 2), _vec("c", 2)
    lam = sp.Symbol("lambda", positive=True)
    cn = sp.sqrt((c.T * c)[0])
    b = lam * c / cn
    a = cn / lam
    residual = (1 - a) * v + a * b - (v + c)
    odd_defect = (v + c) + (-v + c)
    return {
        "variant": "translation T(v) = v + c",
        "T(v) + T(-v)": str(list(odd_defect)),
        "not odd": not all(is_zero(x) for x in odd_defect),
        "residual at b = lam c/|c|, alpha = |c|/lam equals -(|c|/lam) v":
            all(is_zero(x) for x in residual + (cn / lam) * v),
        "refuted": not all(is_zero(x) for x in odd_defect)
        and all(is_zero(x) for x in residual + (cn / lam) * v),
    }
