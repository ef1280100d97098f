"""Oymak et al. (ICML 2023): exact statements of our formalization (notes/oymak.md), sympy-proved
or in closed form. Imports neither ``constructions`` nor ``verify``.

Models (X: T x d, tokens x_t as rows; s = softmax over tokens; W = I unless said):
    f_PA(X) = v^T X^T s(X W p),  f_LPA(X) = (1/T) v^T X^T X W p,
    f_SA(X) = (1/T) 1^T s_row(X W X^T) X v,  f_U(X) = v^T xbar.
Contextual mixture (c = confusion, rho = context overlap, k relevant tokens of T):
    relevant x_t = q + y mu + sigma z_t,  irrelevant x_t = rho q - y c mu + sigma z_t,  q ⟂ mu.

Each ``prove_*`` returns {step: bool}, True only when sympy reduces the difference to exactly 0;
``refute_*`` runs the same reduction on a deliberately wrong statement (it must not reduce to 0).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import sympy as sp
from scipy import integrate
from scipy.special import ndtr
from scipy.stats import norm

# --- symbolic model forms at a fixed small size (T = 3 tokens, d = 2) --------------------------

T_SYM, D_SYM = 3, 2


def _symbols() -> tuple[sp.Matrix, sp.Matrix, sp.Matrix, sp.Matrix]:
    X = sp.Matrix(T_SYM, D_SYM, lambda t, j: sp.Symbol(f"x_{t}{j}", real=True))
    p = sp.Matrix(D_SYM, 1, lambda j, _: sp.Symbol(f"p_{j}", real=True))
    v = sp.Matrix(D_SYM, 1, lambda j, _: sp.Symbol(f"v_{j}", real=True))
    W = sp.Matrix(D_SYM, D_SYM, lambda a, b: sp.Symbol(f"W_{a}{b}", real=True))
    return X, p, v, W


def _softmax(a: sp.Matrix) -> sp.Matrix:
    e = a.applyfunc(sp.exp)
    return e / sum(e)


def f_pa(X: sp.Matrix, p: sp.Matrix, v: sp.Matrix, W: sp.Matrix) -> sp.Expr:
    """v^T X^T s(X W p)."""
    return (v.T * X.T * _softmax(X * W * p))[0, 0]


def f_lpa(X: sp.Matrix, p: sp.Matrix, v: sp.Matrix, W: sp.Matrix) -> sp.Expr:
    """(1/T) v^T X^T X W p."""
    return (v.T * X.T * X * W * p)[0, 0] / X.rows


def f_sa(X: sp.Matrix, W: sp.Matrix, v: sp.Matrix) -> sp.Expr:
    """(1/T) sum_i s_i^T X v with s_i = softmax(X W x_i)... rows of s_row(X W X^T)."""
    scores = X * W * X.T
    total = sp.Integer(0)
    for i in range(X.rows):
        row = _softmax(scores[i, :].T)
        total += (row.T * X * v)[0, 0]
    return total / X.rows


def _zero(expr: sp.Expr) -> bool:
    return sp.simplify(sp.expand(expr)) == 0


def _nonzero_somewhere(expr: sp.Expr) -> bool:
    """A counterexample: the expression is non-zero at a fixed rational point (all free symbols
    set to distinct small rationals), evaluated to 30 digits. Refutes 'expr == 0 identically'."""
    symbols = sorted(expr.free_symbols, key=lambda s: s.name)
    point = {s: sp.Rational(3 + 2 * i, 7 + i) * (-1) ** i for i, s in enumerate(symbols)}
    return abs(sp.N(expr.subs(point), 30)) > 1e-20


def prove_symmetries() -> dict[str, bool]:
    """LPA is even in X, SA (mean-pooled) is odd in X, every model is invariant to permuting the
    tokens, and the softmax identity s(a + lambda 1) = s(a) on which PA's invariance to prompt
    shifts delta with X W delta ∝ 1 rests."""
    X, p, v, W = _symbols()
    perm = sp.Matrix([X.row(2), X.row(0), X.row(1)])
    a = sp.Matrix(T_SYM, 1, lambda t, _: sp.Symbol(f"a_{t}", real=True))
    lam = sp.Symbol("lambda", real=True)
    return {
        "LPA even: f(-X) = f(X)": _zero(f_lpa(-X, p, v, W) - f_lpa(X, p, v, W)),
        "SA odd: f(-X) = -f(X)": _zero(f_sa(-X, W, v) + f_sa(X, W, v)),
        "PA permutation invariant": _zero(f_pa(perm, p, v, W) - f_pa(X, p, v, W)),
        "LPA permutation invariant": _zero(f_lpa(perm, p, v, W) - f_lpa(X, p, v, W)),
        "SA permutation invariant": _zero(f_sa(perm, W, v) - f_sa(X, W, v)),
        "softmax shift invariant": all(_zero(e) for e in (_softmax(a + lam * sp.ones(T_SYM, 1)) - _softmax(a))),
    }


def refute_symmetries() -> dict[str, bool]:
    """Wrong variants: PA even, PA odd, LPA odd. True means 'refuted' (difference is not 0)."""
    X, p, v, W = _symbols()
    return {
        "PA even (wrong)": _nonzero_somewhere(f_pa(-X, p, v, W) - f_pa(X, p, v, W)),
        "PA odd (wrong)": _nonzero_somewhere(f_pa(-X, p, v, W) + f_pa(X, p, v, W)),
        "LPA odd (wrong)": _nonzero_somewhere(f_lpa(-X, p, v, W) + f_lpa(X, p, v, W)),
    }


def prove_mirror_at_zero_context() -> dict[str, bool]:
    """With Q = 0 the class-conditional laws mirror: the noiseless tokens satisfy
    m_t(y = -1) = -m_t(y = +1) token by token (relevant y mu, irrelevant -y c mu), and the noise
    is symmetric, so X | y=-1 =d -(X | y=+1). With LPA even, P(f_LPA > 0 | y=-1) =
    P(f_LPA(-X) > 0 | y=+1) = P(f_LPA > 0 | y=+1): for every (p, v) the error is exactly 1/2
    (counting f = 0, a null event, either way)."""
    y, c, M, Q, rho = sp.symbols("y c M Q rho", real=True)
    rel = lambda yy: sp.Matrix([Q, yy * M])  # noqa: E731  (coordinates along q-hat, mu-hat)
    irr = lambda yy: sp.Matrix([rho * Q, -yy * c * M])  # noqa: E731
    at_zero = {Q: 0}
    return {
        "relevant mean mirrors at Q=0": all(_zero(e) for e in (rel(-1) + rel(1)).subs(at_zero)),
        "irrelevant mean mirrors at Q=0": all(_zero(e) for e in (irr(-1) + irr(1)).subs(at_zero)),
        "mirror fails for Q != 0 (sanity)": _nonzero_somewhere((rel(-1) + rel(1))[0]),
    }


# --- gradients (claim c2) -----------------------------------------------------------------------

def prove_gradients() -> dict[str, bool]:
    """df/dv = X^T s and df/dp = W^T X^T (diag(s) - s s^T) X v for f = v^T X^T s(X W p);
    at p = 0: df/dp = W^T C(X) v with C(X) = (1/T) sum_t (x_t - xbar)(x_t - xbar)^T."""
    X, p, v, W = _symbols()
    f = f_pa(X, p, v, W)
    s = _softmax(X * W * p)
    grad_v = sp.Matrix([sp.diff(f, vj) for vj in v])
    grad_p = sp.Matrix([sp.diff(f, pj) for pj in p])
    formula_p = W.T * X.T * (sp.diag(*s) - s * s.T) * X * v
    at_zero = {pj: 0 for pj in p}
    xbar = X.T * sp.ones(T_SYM, 1) / T_SYM
    centered = X - sp.ones(T_SYM, 1) * xbar.T
    cov = centered.T * centered / T_SYM
    return {
        "df/dv = X^T s": all(_zero(e) for e in grad_v - X.T * s),
        "df/dp = W^T X^T (diag s - s s^T) X v": all(_zero(e) for e in grad_p - formula_p),
        "df/dp at p=0 = W^T C(X) v": all(_zero(e) for e in grad_p.subs(at_zero) - W.T * cov * v),
    }


def refute_gradients() -> dict[str, bool]:
    """Wrong variants (missing the -s s^T term; W instead of W^T): must not reduce to 0."""
    X, p, v, W = _symbols()
    f = f_pa(X, p, v, W)
    s = _softmax(X * W * p)
    grad_p = sp.Matrix([sp.diff(f, pj) for pj in p])
    return {
        "df/dp without -s s^T (wrong)": any(_nonzero_somewhere(e) for e in grad_p - W.T * X.T * sp.diag(*s) * X * v),
        "df/dp with W for W^T (wrong)": any(_nonzero_somewhere(e) for e in grad_p - W * X.T * (sp.diag(*s) - s * s.T) * X * v),
    }


@cache
def population_first_steps() -> dict[str, sp.Expr]:
    """Exact population directions of the first two gradient steps from (p, v) = (0, 0), for any
    loss l(y f) with l'(0) != 0 (W = I), as coefficients in the (q, mu) basis, with
    a = (k + (T - k) rho)/T and b = (k - (T - k) c)/T (xbar = a q + y b mu + noise):

        E[y xbar] = b mu                                   (v-step direction)
        E[y x_t x_t^T] = (qmu^T + mu q^T) on R,  -rho c (qmu^T + mu q^T) off R
        E[y C(X)] = ((k - (T - k) rho c)/T - a b) (q mu^T + mu q^T)
        E[y C(X) v] with v = b mu:  gamma M^2 b q,   gamma = (k - (T-k) rho c)/T - a b

    Derived here from indicator algebra: E[y (1/T) sum_t x_t x_t^T] minus E[y xbar xbar^T], the
    noise terms being even in y (they cancel against E[y] = 0).  Returns sympy expressions."""
    T, k, rho, c, M = sp.symbols("T k rho c M", positive=True)
    a = (k + (T - k) * rho) / T
    b = (k - (T - k) * c) / T
    # E[y x x^T] per token: for a token with mean alpha q + y beta mu, E[y (..)(..)^T] = alpha beta (q mu^T + mu q^T)
    second = (k * 1 * 1 + (T - k) * rho * (-c)) / T
    gamma = sp.simplify(second - a * b)
    return {"a": a, "b": b, "gamma": gamma, "v_coef_mu": b, "p_coef_q_per_v_mu": gamma * M**2,
            "symbols": (T, k, rho, c, M)}


def prove_first_steps_c0() -> dict[str, bool]:
    """At c = 0, rho = 0: gamma = zeta (1 - zeta) exactly (fixed |R| = k), so the p-step is
    zeta (1 - zeta) M^2 (mu^T v) / M^2 ... i.e. E[y C v] = zeta(1-zeta) (mu^T v) q."""
    steps = population_first_steps()
    T, k, rho, c, M = steps["symbols"]
    zeta = k / T
    return {"gamma(c=0, rho=0) = zeta(1-zeta)": _zero(steps["gamma"].subs({rho: 0, c: 0}) - zeta * (1 - zeta)),
            "b(c=0) = zeta": _zero(steps["b"].subs({c: 0}) - zeta)}


# --- closed-form errors (claim c1) -------------------------------------------------------------

def uniform_bayes_error(T: int, k: int, M: float, sigma: float, c: float) -> float:
    """Best error of any classifier of xbar (hence of uniform attention with its best head):
    xbar | y ~ N(a q + y b mu, sigma^2/T I) with b = (k - (T - k) c)/T, so the Bayes rule is
    sign(b mu^T xbar) and its error is Q_G(|k - (T - k) c| M / (sigma sqrt(T)))."""
    return float(norm.sf(abs(k - (T - k) * c) * M / (sigma * np.sqrt(T))))


def uniform_head_error(T: int, k: int, M: float, sigma: float, c: float, cos_angle: float) -> float:
    """Exact error of uniform attention with a unit head v at angle theta from the Bayes head
    sign(b) mu/M, rotated away from mu inside the noise directions (v orthogonal to q):
    v . xbar | y ~ N(y |b| M cos(theta), sigma^2 / T), so the error is
    Q_G(|k - (T - k) c| M cos(theta) / (sigma sqrt(T))); cos(theta) = 1 is ``uniform_bayes_error``."""
    return float(norm.sf(abs(k - (T - k) * c) * M * cos_angle / (sigma * np.sqrt(T))))


def uniform_log_odds_scale(T: int, k: int, M: float, sigma: float, c: float) -> float:
    """The head v = s mu/M with s = 2 |b| M T / sigma^2 (b = (k - (T - k) c)/T) makes v . xbar the
    exact log-odds log P(y = sign(b) | xbar) / P(y = -sign(b) | xbar): the class-conditional laws
    of mu_hat . xbar are N(+-b M, sigma^2/T) and the other coordinates of xbar do not depend on y.
    So it is the population minimiser of the logistic loss within uniform attention."""
    b = (k - (T - k) * c) / T
    return float(2 * abs(b) * M * T / sigma ** 2)


def hard_selection_relevant_probability(T: int, k: int, Q: float, sigma: float, rho: float) -> float:
    """P(argmax_t q^T x_t is relevant). Scores / (sigma Q): a + g (relevant), rho a + g
    (irrelevant), a = Q / sigma, g ~ N(0, 1) i.i.d.:
        P_rel = int k phi(s - a) Phi(s - a)^(k-1) Phi(s - rho a)^(T-k) ds."""
    a = Q / sigma

    def integrand(s: float) -> float:
        return k * _pdf(s - a) * ndtr(s - a) ** (k - 1) * ndtr(s - rho * a) ** (T - k)

    value, _ = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-12, epsrel=1e-10)
    return float(value)


def _pdf(x: float) -> np.float64:
    """The standard normal density, the same number as scipy.stats.norm.pdf(x): scipy's formula
    exp(-x^2/2) / sqrt(2 pi) on a one-element array (numpy's array exp, which can differ from its
    scalar exp in the last bit), without norm.pdf's argument checks (most of the cost of a scalar
    call; quad calls the integrand thousands of times). ndtr is likewise norm.cdf without them."""
    return (np.exp(-np.array([x]) ** 2 / 2.0) / _SQRT_2PI)[0]


_SQRT_2PI = np.sqrt(2 * np.pi)


def hard_selection_error(T: int, k: int, Q: float, M: float, sigma: float, c: float, rho: float,
                         p_rel: float | None = None) -> float:
    """Error of hard selection along q (p = Gamma q, Gamma -> infinity) with head v = mu:
        err_H = P_rel Q_G(M / sigma) + (1 - P_rel) Phi(c M / sigma)
    (the selected token's class coordinate is independent of the q-coordinate that selected it).
    ``p_rel``: P_rel when the caller has it already (``hard_selection_relevant_probability``)."""
    if p_rel is None:
        p_rel = hard_selection_relevant_probability(T, k, Q, sigma, rho)
    return float(p_rel * norm.sf(M / sigma) + (1 - p_rel) * norm.cdf(c * M / sigma))


def wrong_uniform_error(T: int, k: int, M: float, sigma: float, c: float) -> float:
    """CONTROL: the dilution written as 1/T instead of 1/sqrt(T) (wrong)."""
    return float(norm.sf(abs(k - (T - k) * c) * M / (sigma * T)))


# --- claim c2: first two GD steps, their fluctuations, and the oracle baselines -------------------
#
# Protocol (our formalization): PA with W = I, linear (correlation) loss l(z) = -z, step size 1,
# from (p, v) = (0, 0), fresh batches of n sequences per step (sample splitting):
#     step 1:  v1 = (1/n) sum_i y_i xbar_i                (df/dp = C(X) v = 0 at v = 0: p stays 0)
#     step 2:  p2 = (1/n) sum_j y_j C(X_j) v1             (at p = 0, df/dp = C(X) v)
# For any loss l(y f) the first step is the same up to the factor -l'(0); the second agrees to
# first order in the step size (l'(y f) = l'(0) + O(|v1|)).

def first_step_coefficients(T: int, k: int, c: float, rho: float) -> dict[str, float]:
    """Numerical values of the exact population coefficients (``population_first_steps``):
        a = (k + (T-k) rho)/T,  b = (k - (T-k) c)/T,  gamma = (k - (T-k) rho c)/T - a b,
    and the spreads of the token means about their average (used by the fluctuation constants)
        tau_mu = (1/T) sum_t (beta_t - b)^2 = (k (1-b)^2 + (T-k)(c+b)^2)/T   (class coordinate / M),
        tau_q  = (1/T) sum_t (alpha_t - a)^2 = (k (1-a)^2 + (T-k)(rho-a)^2)/T (context coordinate / Q)."""
    steps = population_first_steps()
    Ts, ks, rhos, cs, _ = steps["symbols"]
    subs = {Ts: T, ks: k, rhos: rho, cs: c}
    a, b, gamma = (float(steps[key].subs(subs)) for key in ("a", "b", "gamma"))
    return {"a": a, "b": b, "gamma": gamma,
            "tau_mu": (k * (1 - b) ** 2 + (T - k) * (c + b) ** 2) / T,
            "tau_q": (k * (1 - a) ** 2 + (T - k) * (rho - a) ** 2) / T}


def class_variance_second_moment(T: int, k: int, M: float, sigma: float, c: float) -> float:
    """E[(mu_hat^T C(X) mu_hat)^2] exactly. T mu_hat^T C mu_hat = |P(M y (beta - b 1) + sigma g)|^2
    with P the centring projection (rank T-1) and M y (beta - b 1) in its range: sigma^2 times a
    non-central chi^2 with T-1 degrees of freedom and non-centrality lam = T tau_mu M^2 / sigma^2,
    whose second moment is (T-1+lam)^2 + 2 (T-1+2 lam)."""
    tau_mu = first_step_coefficients(T, k, c, 0.0)["tau_mu"]
    lam = T * tau_mu * M ** 2 / sigma ** 2
    return float(sigma ** 4 * ((T - 1 + lam) ** 2 + 2 * (T - 1 + 2 * lam)) / T ** 2)


def gd_prompt_alignment_constant(T: int, k: int, d: int, Q: float, M: float, sigma: float,
                                 c: float = 0.0, rho: float = 0.0) -> dict[str, float]:
    """Leading-order alignment error of the two-step GD prompt (protocol above, n per step):
        E sin^2 angle(p2, q) = K / n + O(1/n^2),   K = K_perp + K_class + K_v1,
    from p2 = (E[yC] + Delta)(b mu + delta) with Delta, delta independent mean-zero fluctuations
    (sample splitting) and E[p2] = gamma b M^2 q (signal s = gamma b M^2 Q along q_hat):
      K_perp  = (d-2) sigma^2 E[mu^T C mu] / (T gamma^2 M^4 Q^2)   (the d-2 directions orthogonal to
                q, mu: Var(e_j^T C mu) = sigma^2 mu^T C mu / T exactly, since the e_j-coordinates of
                the tokens are independent noise), E[mu^T C mu] = M^2 (sigma^2 (1-1/T) + tau_mu M^2);
      K_class = E[(mu_hat^T C mu)^2] / (gamma^2 M^4 Q^2) ... (the mu coordinate of Delta b mu, whose
                mean is 0 because E[y C] has no mu mu^T part) = M^2 E[(mu_hat^T C mu_hat)^2]/(...);
      K_v1    = (a^2 Q^2 + sigma^2 / T) / (b^2 M^2)   (E[yC] delta = gamma mu (q . delta) + ...:
                the class-imbalance and noise part of v1 along q feeds the mu coordinate of p2;
                n Var(q . delta) = Q^2 (a^2 Q^2 + sigma^2 / T)).
    The q coordinate's fluctuations enter sin^2 only at O(1/n^2). Requires b != 0 and gamma != 0."""
    co = first_step_coefficients(T, k, c, rho)
    gamma, a, b = co["gamma"], co["a"], co["b"]
    signal2 = gamma ** 2 * M ** 4 * Q ** 2
    e_mcm = M ** 2 * (sigma ** 2 * (1 - 1 / T) + co["tau_mu"] * M ** 2)
    k_perp = (d - 2) * sigma ** 2 * e_mcm / (T * signal2)
    k_class = M ** 2 * class_variance_second_moment(T, k, M, sigma, c) / signal2
    k_v1 = (a ** 2 * Q ** 2 + sigma ** 2 / T) / (b ** 2 * M ** 2)
    return {"K": k_perp + k_class + k_v1, "K_perp": k_perp, "K_class": k_class, "K_v1": k_v1,
            "slope_in_d": k_perp / (d - 2)}


def gd_oracle_ratio_limit(T: int, k: int, M: float, sigma: float, c: float = 0.0, rho: float = 0.0) -> float:
    """kappa_inf: the d -> infinity limit of GD's sample complexity (both batches, N = 2n
    sequences) over the oracle's, at equal alignment error eps:
        N_GD(eps) = 2 K(d) / eps,  N*(eps) = (d - 1) sigma^2 / (k Q^2 eps),
        kappa_inf = lim 2 K(d) / ((d - 1) sigma^2 / (k Q^2)) = 2 slope_in_d k Q^2 / sigma^2
                  = 2 zeta (sigma^2 (1 - 1/T) + tau_mu M^2) / (gamma^2 M^2),
    which depends on neither d, n, eps nor Q (``gd_prompt_alignment_constant``'s K_perp slope)."""
    co = first_step_coefficients(T, k, c, rho)
    return float(2 * (k / T) * (sigma ** 2 * (1 - 1 / T) + co["tau_mu"] * M ** 2) / (co["gamma"] ** 2 * M ** 2))


def relevance_agnostic_worst_ratio(T: int, k: int) -> float:
    """The price of not knowing R, in the worst case: T / k = 1 / zeta (per-dimension sample cost of
    estimating the direction of q, over the oracle's sigma^2 / (k Q^2)), for c = rho = 0.
    (i) Lower side of the information: pi_t = P(t in R | X, y) sums to k over the T tokens, so by
        Cauchy-Schwarz J = E sum_t pi_t^2 >= k^2 / T, i.e. the information bound's per-dimension
        cost sigma^2 / (J Q^2) is at most (T / k) sigma^2 / (k Q^2), with equality when the tokens
        say nothing about R (J = k^2/T: pi_t = k/T).
    (ii) It is attained without knowing R: the mean token xbar = zeta q + N(0, sigma^2/T I) per
        sequence, whose average over N sequences has direction error (d - 1) sigma^2 / (T zeta^2 Q^2 N)
        = (T / k) (d - 1) sigma^2 / (k Q^2 N) to leading order.
    So a learner that does not know R and is within this factor of the oracle is as good as the
    least informative R-agnostic data permit; GD, which spends two batches, is held to twice it."""
    if not (isinstance(T, int) and isinstance(k, int) and 1 <= k <= T):
        raise ValueError(f"need integers 1 <= k <= T, got k={k!r}, T={T!r}")
    return T / k


def oracle_direction_risk(N: int, k: int, d: int, Q: float, sigma: float, nodes: int = 80) -> float:
    """Minimax risk of estimating the direction of q (loss sin^2 of the angle) for an ORACLE that
    knows every relevant set R_i, the labels, mu and |q| = Q, from N sequences (c = rho = 0 or any
    irrelevant law free of q): its data reduce to kN i.i.d. N(q, sigma^2 I_d) tokens (relevant
    tokens minus y mu), whose mean qbar is sufficient. The problem is invariant under rotations
    (a compact group), so by Hunt-Stein the minimax estimator is the best equivariant one, the
    Bayes rule for the uniform prior on the sphere |q| = Q; its posterior is von Mises-Fisher
    with mean direction qbar, whose second-moment matrix has qbar as top eigenvector, so the
    minimax estimator is qbar/|qbar| and the minimax risk is exactly
        R*(N) = E[ s^2 chi / ((Q + s g)^2 + s^2 chi) ],  s = sigma / sqrt(k N),
    g ~ N(0, 1), chi ~ chi^2_{d-1} independent; R*(N) = (d-1) sigma^2 / (k N Q^2) + O(N^-2).
    Evaluated by Gauss-Hermite (g) x generalised Gauss-Laguerre (chi) quadrature."""
    s2 = sigma ** 2 / (k * N)
    g, wg, chi, wu = _oracle_nodes(nodes, d)
    val = s2 * chi[None, :] / ((Q + np.sqrt(s2) * g[:, None]) ** 2 + s2 * chi[None, :])
    return float((wg[:, None] * wu[None, :] * val).sum())


@cache
def _oracle_nodes(nodes: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The quadrature of ``oracle_direction_risk``: Gauss-Hermite nodes g and weights (normalised to
    sum 1) for N(0, 1), and nodes chi and weights for chi^2_{d-1} (generalised Gauss-Laguerre).
    Cached: a sweep evaluates the risk at every (n, d) cell, with the same nodes for each n."""
    from scipy.special import gammaln, roots_genlaguerre, roots_hermitenorm

    g, wg = roots_hermitenorm(nodes)
    wg = wg / wg.sum()
    alpha = (d - 1) / 2 - 1  # chi^2_{d-1} density ~ x^alpha e^{-x/2}: substitute x = 2u
    u, wu = roots_genlaguerre(nodes, alpha)
    wu = wu / np.exp(gammaln(alpha + 1))
    chi = 2 * u
    for a in (g, wg, chi, wu):
        a.flags.writeable = False  # shared by every call
    return g, wg, chi, wu


def oracle_alignment_constant(k: int, d: int, Q: float, sigma: float) -> float:
    """Leading constant of the oracle's minimax risk per sequence: R*(N) ~ (d-1) sigma^2/(k Q^2 N)."""
    return (d - 1) * sigma ** 2 / (k * Q ** 2)


def relevance_posterior_information(T: int, k: int, Q: float, M: float, sigma: float, n: int,
                                    rng: np.random.Generator) -> tuple[float, float]:
    """Monte Carlo estimate (mean, standard error) of J = E[sum_t pi_t^2], pi_t = P(t in R | X, y)
    under the exact posterior over the k-subsets (c = rho = 0, mu, |q| known). For a learner that
    does NOT know R, the per-sequence Fisher information about each coordinate of q orthogonal to
    q and mu is J / sigma^2 (score: sum_t pi_t x_t,perp / sigma^2, the orthogonal coordinates being
    independent of pi), so by the local asymptotic minimax theorem no estimator of the direction
    of q from N sequences beats (d-2) sigma^2 / (J Q^2 N) (1 + o(1)) on the d-2 orthogonal
    coordinates; J in [k^2/T, k] (k: the oracle, which knows R)."""
    from itertools import combinations

    subsets = np.array([[t in S for t in range(T)] for S in combinations(range(T), k)], dtype=float)
    rel = np.zeros((n, T), dtype=bool)
    order = np.argsort(rng.random((n, T)), axis=1)[:, :k]
    np.put_along_axis(rel, order, True, axis=1)
    delta2 = Q ** 2 + M ** 2  # |q + y mu|^2; the token's projection on (q + y mu) is all that matters
    proj = np.where(rel, delta2, 0.0) + sigma * np.sqrt(delta2) * rng.standard_normal((n, T))
    loglik = (proj - delta2 / 2) / sigma ** 2  # log likelihood ratio relevant vs irrelevant
    logw = loglik @ subsets.T  # (n, #subsets)
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    pi = w @ subsets  # (n, T)
    vals = (pi ** 2).sum(axis=1)
    return float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(n))
