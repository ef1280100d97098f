"""Certified lower bounds, and convex best-bias solvers, for "one prefix vector vs a rotation"
(petrov.sec4.rotation-not-a-bias; the math is in theorems.rotation).

The relaxed problem. Inputs v_i (M, d), targets y_i = T(v_i) (M, d). One prefix vector gives
t_i = (1 - alpha_i) v_i + alpha_i b with alpha_i in [0, 1] free per input (a relaxation of every
attention layer). For fixed b the best alpha_i is the clipped projection and the error is the
distance to a segment:

    e_i(b) = dist(y_i, [v_i, b]),      F(b) = max_i e_i(b)   (worst case over the inputs).

What is certified here, and how:

1. ``certify_symmetric`` -- the theorem (theorems.rotation): if the input set is symmetric and the
   targets odd, min_b F(b) = F(0) = max_i dist(y_i, [0, v_i]), exactly. For a rotation R with
   largest principal angle theta this is m(theta) = sin(theta) (theta <= 90 deg) or 1
   (``certify_rotation``), for ALL angles, in every dimension. Not applicable (returns None)
   when the targets are not odd, e.g. a translation.
2. ``branch_and_bound`` -- an independent numerical certificate in 2-D (valid in every dimension
   by the plane reduction: restricting to inputs in an R-invariant plane P and projecting b onto
   P can only lower the error). It needs no symmetry and no quasiconvexity:
     * inner region |b| <= radius, covered by squares; on the square's circumscribed disk
       D(c, r) the exact minimum of e_i is the distance from y_i to conv({v_i} u D(c, r)),
       computed in closed form (``cone_distance``); a square is closed when
       max_i cone_distance >= target;
     * far region |b| >= radius, covered by arcs of directions u (b = |b| u): with w the
       direction of b - v_i, |w - u| <= 2 |v_i| / |b|, and the distance from y_i to a ray from v_i
       moves by at most |y_i - v_i| |w - w'| when its direction moves from w to w', so
           e_i(b) >= dist(y_i, ray(v_i, u0)) - |y_i - v_i| (h + 2 |v_i| / radius)
       for every b in the arc u0 +- h beyond the radius.
   The certified bound is the smallest lower bound over all closed cells, minus FLOAT_SLACK.
   It can be <= 0: then nothing is certified (R = I, a translation).
3. ``null_query_bound`` -- untied multi-head layers (H heads, d_head < d, no query bias): where
   head h's query vanishes (v in null(W_Q^h)) the head attends uniformly to its n_S + 1 keys, so
   at +-v its outputs are (S +- W_V^h v)/(n_S + 1) whatever the prefix; with W_O = W_V^T the
   error is >= |W_V^h (v/(n_S + 1) - T(v))| (theorems.rotation, "untied null query").

Convex solvers (cvxpy): the best bias for GIVEN alphas, in least squares (closed form
b sum alpha_i^2 = sum alpha_i (alpha_i v_i - c_i), c_i = v_i - y_i, and by cvxpy) and in the
worst case (SOCP); alternating minimisation (alpha by the closed form, b by the SOCP) and
Nelder-Mead give numerical optima (upper bounds on min_b F) to hold the certificates against.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
from scipy.optimize import minimize

from theorems.rotation import minimax_error

# Float64 rounding in the closed-form distances is a few ulps of the largest quantity involved
# (|b| <= FAR_RADIUS = 1e4, so ~1e4 * 2.2e-16 * O(10) ~ 2e-11); subtracting 1e-9 from every
# certified bound covers it with two orders of magnitude to spare.
FLOAT_SLACK = 1e-9
FAR_RADIUS = 1e4  # the far-field slack is 2 |y - v| |v| / FAR_RADIUS <= 4e-4 |v|
BNB_GAP = 1e-3  # close a cell once its lower bound is within 0.1% of the best value found
MAX_EVALUATIONS = 200_000  # cells; the rotations here close in < 10,000
SYMMETRY_TOLERANCE = 1e-12  # "v and -v are both inputs, with targets y and -y" up to rounding
CVXPY_SOLVER = "CLARABEL"


# --- distances ---------------------------------------------------------------------------------

def _length(x: np.ndarray) -> np.ndarray:
    """np.linalg.norm(x, axis=-1), bit for bit: the same sqrt of the sum of squares that numpy's
    norm evaluates for real arrays, without its argument handling (called thousands of times on
    small arrays); for a last axis of length 2, the two squares added directly (the same single
    addition, without a reduction over a 2-long axis)."""
    if x.shape[-1] == 2:
        x0, x1 = x[..., 0], x[..., 1]
        return np.sqrt(x0 * x0 + x1 * x1)
    return np.sqrt(np.add.reduce(x * x, axis=-1))


def best_alpha(y: np.ndarray, v: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin_{alpha in [0,1]} |(1 - alpha) v + alpha b - y| = clip((y-v).(b-v)/|b-v|^2, 0, 1).
    Arrays broadcast over leading axes, last axis d; returns the broadcast leading shape."""
    d = b - v
    dd = np.einsum("...k,...k->...", d, d)
    proj = np.einsum("...k,...k->...", y - v, d) / np.where(dd > 0, dd, 1.0)
    return np.clip(proj, 0.0, 1.0)


def segment_distance(y: np.ndarray, v: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dist(y, [v, b]), broadcast over leading axes (last axis d)."""
    a = best_alpha(y, v, b)[..., None]
    return _length(v + a * (b - v) - y)


def relaxed_errors(inputs: np.ndarray, targets: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """e_i(b) for inputs/targets (M, d) and biases (..., d): (..., M)."""
    return segment_distance(targets, inputs, np.asarray(biases)[..., None, :])


def worst_relaxed_error(inputs: np.ndarray, targets: np.ndarray, bias: np.ndarray) -> float:
    """F(b) = max_i dist(y_i, [v_i, b])."""
    return float(relaxed_errors(inputs, targets, bias).max())


def cone_distance(y: np.ndarray, v: np.ndarray, centers: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """min over b in the disk D(c, r) of dist(y_i, [v_i, b]) = dist(y_i, conv({v_i} u D(c, r))).

    y, v (M, d); centers (K, d); radii (K,). Returns (K, M). With a = v - y, D = c - v (length L):
    the error at alpha = s is at least h(s) = |a + s D| - s r (the disk moves the point by s r at
    most, and that much is achievable), h is convex, and h'(s) = 0 where the component
    z = a.D/L + s L satisfies z L = r sqrt(z^2 + rho^2) (rho = |a_perp|), i.e.
    z* = r rho / sqrt(L^2 - r^2) (for r >= L the disk contains v, h decreases, s = 1). The minimum
    on [0, 1] is at s = clip((z* - a.D/L)/L, 0, 1); the distance is max(0, h(s)).
    """
    a = (v - y)[None]  # (1, M, d)
    D = centers[:, None, :] - v[None]  # (K, M, d)
    L = _length(D)  # (K, M)
    r = np.broadcast_to(np.asarray(radii, dtype=float).reshape(-1, 1), L.shape)
    safe_L = np.where(L > 0, L, 1.0)
    axis = D / safe_L[..., None]
    a_par = np.einsum("kmd,kmd->km", np.broadcast_to(a, D.shape), axis)
    rho = _length(a - a_par[..., None] * axis)
    contains_v = r >= L
    z = r * rho / np.sqrt(np.where(contains_v, 1.0, L * L - r * r))
    s = np.where(contains_v, 1.0, np.clip((z - a_par) / safe_L, 0.0, 1.0))
    h = _length(a + s[..., None] * D) - s * r
    return np.maximum(h, 0.0)


def ray_distance(y: np.ndarray, v: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """dist(y_i, {v_i + t u : t >= 0}) for unit directions u (K, d): (K, M)."""
    w = (y - v)[None]  # (1, M, d)
    t = np.maximum(np.einsum("kd,imd->km", directions, w), 0.0)
    if w.shape[-1] == 2:  # the residual's two coordinates, not the (K, M, 2) array (same values)
        r0 = w[..., 0] - t * directions[:, None, 0]
        r1 = w[..., 1] - t * directions[:, None, 1]
        return np.sqrt(r0 * r0 + r1 * r1)
    return _length(w - t[..., None] * directions[:, None, :])


# --- the theorem's certificate -----------------------------------------------------------------

def principal_angle(R: np.ndarray) -> float:
    """Largest angle between v and R v over unit v, for orthogonal R: max |arg(eigenvalue)|."""
    R = np.asarray(R, dtype=float)
    if not np.allclose(R.T @ R, np.eye(len(R)), atol=1e-10):
        raise ValueError("R is not orthogonal")
    return float(np.max(np.abs(np.angle(np.linalg.eigvals(R)))))


def certify_rotation(R: np.ndarray) -> dict:
    """The theorem's bound for orthogonal R on any symmetric input set containing an antipodal
    pair in the plane of the largest principal angle (e.g. the whole sphere): m(theta_max).
    ``certified`` is True only for a positive bound (so never for R = I)."""
    angle = principal_angle(R)
    bound = minimax_error(min(angle, np.pi)) - FLOAT_SLACK
    return {"route": "theorem (quasiconvexity + symmetry), exact value m(theta_max)",
            "theta_max_deg": float(np.degrees(angle)), "bound": max(bound, 0.0), "certified": bound > 0}


def _mirror_index(inputs: np.ndarray) -> np.ndarray | None:
    """index j with v_j = -v_i for every i, or None if the set is not symmetric."""
    dist = np.linalg.norm(inputs[:, None, :] + inputs[None, :, :], axis=-1)
    j = dist.argmin(1)
    return j if np.all(dist[np.arange(len(inputs)), j] <= SYMMETRY_TOLERANCE) else None


def certify_symmetric(inputs: np.ndarray, targets: np.ndarray) -> dict | None:
    """The theorem on a finite set: if V = -V and the targets are odd, min_b F(b) = F(0)
    = max_i dist(y_i, [0, v_i]) exactly. None if the hypotheses fail (nothing certified)."""
    j = _mirror_index(inputs)
    if j is None or np.max(np.abs(targets + targets[j])) > SYMMETRY_TOLERANCE:
        return None
    value = worst_relaxed_error(inputs, targets, np.zeros(inputs.shape[1]))
    return {"route": "theorem on the finite set: min_b F = F(0)", "value": value,
            "bound": max(value - FLOAT_SLACK, 0.0), "certified": value - FLOAT_SLACK > 0}


# --- branch and bound (2-D) --------------------------------------------------------------------

@dataclass
class BranchAndBound:
    """``bound``: certified lower bound on min_b F(b) (FLOAT_SLACK already subtracted; <= 0 means
    nothing is certified); ``upper``: the smallest F found at a cell centre (an upper bound);
    ``far``/``inner``: the bound on each region (``inner`` is None when the far region already
    rules out a positive bound); ``complete``: every cell was closed at the target."""

    bound: float
    upper: float
    far: float
    inner: float | None
    evaluations: int
    complete: bool

    @property
    def certified(self) -> bool:
        return self.bound > 0


def branch_and_bound(inputs: np.ndarray, targets: np.ndarray, gap: float = BNB_GAP,
                     radius: float = FAR_RADIUS, max_evaluations: int = MAX_EVALUATIONS) -> BranchAndBound:
    """Certified lower bound on min_b max_i dist(y_i, [v_i, b]) for 2-D inputs/targets (M, 2).

    The far region is done first. Its cell centres also give upper bounds (F(lam u) tends to
    G(u) = max_i dist(y_i, ray(v_i, u)) as lam -> oo); once an upper bound is <= FLOAT_SLACK the
    infimum is 0 up to rounding and the answer is no: the trivial bound 0 (F >= 0) minus the
    slack is returned and the inner region is not searched (R = I, a translation)."""
    if inputs.shape != targets.shape or inputs.ndim != 2 or inputs.shape[1] != 2:
        raise ValueError("branch_and_bound works in 2-D: inputs and targets (M, 2)")
    upper = worst_relaxed_error(inputs, targets, np.zeros(2))
    far, upper, n_far, done_far = _far(inputs, targets, upper, gap, radius, max_evaluations)
    if upper <= FLOAT_SLACK or far <= FLOAT_SLACK:
        return BranchAndBound(min(far, 0.0) - FLOAT_SLACK, upper, far, None, n_far, done_far)
    inner, upper, n_inner, done_inner = _inner(inputs, targets, upper, gap, radius, max_evaluations)
    return BranchAndBound(min(inner, far) - FLOAT_SLACK, upper, far, inner, n_inner + n_far,
                          done_inner and done_far)


CHUNK = 2048  # cells per vectorised evaluation: (CHUNK, M, 2) float64 arrays stay small


def _inner(inputs, targets, upper, gap, radius, max_evaluations) -> tuple[float, float, int, bool]:
    """Squares over [-radius, radius]^2 (which covers |b| <= radius), split in four until closed."""
    centers, half, closed, evaluations = np.zeros((1, 2)), radius, [], 0
    corners = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=float)
    while True:
        lower = np.empty(len(centers))
        for start in range(0, len(centers), CHUNK):
            part = centers[start:start + CHUNK]
            upper = min(upper, float(relaxed_errors(inputs, targets, part).max(1).min()))
            lower[start:start + CHUNK] = cone_distance(targets, inputs, part,
                                                       np.full(len(part), half * np.sqrt(2))).max(1)
        evaluations += len(centers)
        is_closed = lower >= (1 - gap) * upper
        if is_closed.any():
            closed.append(float(lower[is_closed].min()))
        if is_closed.all():
            return min(closed), upper, evaluations, True
        if evaluations >= max_evaluations:
            return min(closed + [float(lower[~is_closed].min())]), upper, evaluations, False
        half /= 2
        centers = (centers[~is_closed][:, None, :] + half * corners[None]).reshape(-1, 2)


def _far(inputs, targets, upper, gap, radius, max_evaluations) -> tuple[float, float, int, bool]:
    """Arcs of directions for |b| >= radius, halved until closed. Returns (bound, upper,
    evaluations, complete); stops early once upper <= FLOAT_SLACK (nothing to certify)."""
    slack_per_input = np.linalg.norm(targets - inputs, axis=1)  # |y_i - v_i|
    drift = 2 * np.linalg.norm(inputs, axis=1) / radius  # bound on |w - u|
    count = 64
    half = np.pi / count
    angles = (np.arange(count) + 0.5) * 2 * half
    closed, evaluations = [], 0
    while True:
        u = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        limit = ray_distance(targets, inputs, u)  # (K, M): e_i(lam u) -> limit as lam -> oo
        upper = min(upper, float(limit.max(1).min()))
        lower = (limit - slack_per_input[None] * (half + drift[None])).max(1)
        evaluations += len(angles)
        if upper <= FLOAT_SLACK:
            return float(lower.min()), upper, evaluations, False
        is_closed = lower >= (1 - gap) * upper
        if is_closed.any():
            closed.append(float(lower[is_closed].min()))
        if is_closed.all():
            return min(closed), upper, evaluations, True
        if evaluations >= max_evaluations or half < 1e-12:
            return min(closed + [float(lower[~is_closed].min())]), upper, evaluations, False
        half /= 2
        angles = np.concatenate([angles[~is_closed] - half, angles[~is_closed] + half])


# --- convex solvers for the best bias ----------------------------------------------------------

def best_bias_least_squares(inputs: np.ndarray, targets: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, float]:
    """Closed form: b sum alpha_i^2 = sum alpha_i (alpha_i v_i - c_i), c_i = v_i - y_i.
    Returns (b, sum_i |(1 - alpha_i) v_i + alpha_i b - y_i|^2)."""
    a = np.asarray(alphas, dtype=float)[:, None]
    c = inputs - targets
    b = (a * (a * inputs - c)).sum(0) / float((a ** 2).sum())
    residual = (1 - a) * inputs + a * b - targets
    return b, float((residual ** 2).sum())


def _residual(inputs, targets, alphas, b):
    a = np.asarray(alphas, dtype=float)[:, None]
    return (1 - a) * inputs - targets + a @ cp.reshape(b, (1, inputs.shape[1]), order="C")


def best_bias_least_squares_cvxpy(inputs: np.ndarray, targets: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, float]:
    """The same least-squares problem solved by cvxpy (sum of squares)."""
    b = cp.Variable(inputs.shape[1])
    problem = cp.Problem(cp.Minimize(cp.sum_squares(_residual(inputs, targets, alphas, b))))
    problem.solve(solver=CVXPY_SOLVER)
    return np.asarray(b.value), float(problem.value)


def best_bias_worst_case_cvxpy(inputs: np.ndarray, targets: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, float]:
    """min_b max_i |(1 - alpha_i) v_i + alpha_i b - y_i| for GIVEN alphas: an SOCP."""
    b = cp.Variable(inputs.shape[1])
    problem = cp.Problem(cp.Minimize(cp.max(cp.norm(_residual(inputs, targets, alphas, b), 2, axis=1))))
    problem.solve(solver=CVXPY_SOLVER)
    return np.asarray(b.value), float(problem.value)


def alternating_minimax(inputs: np.ndarray, targets: np.ndarray, alphas: np.ndarray,
                        iterations: int = 10) -> tuple[np.ndarray, list[float]]:
    """Block-coordinate descent on max_i |(1 - alpha_i) v_i + alpha_i b - y_i|: b by the SOCP,
    then alpha by the closed form. Returns the last b and F(b) after every round
    (non-increasing; an upper bound on min_b F, not a certificate)."""
    history = []
    for _ in range(iterations):
        b, _ = best_bias_worst_case_cvxpy(inputs, targets, alphas)
        alphas = best_alpha(targets, inputs, b[None, :])
        history.append(worst_relaxed_error(inputs, targets, b))
    return b, history


def minimax_bias_search(inputs: np.ndarray, targets: np.ndarray, rng: np.random.Generator,
                        starts: int = 4) -> tuple[np.ndarray, float]:
    """Numerical min_b F(b): a log-polar grid of candidate biases (radii 1e-3..1e4, and b = 0),
    then Nelder-Mead from the best grid point and from ``starts`` random points. An upper bound."""
    d = inputs.shape[1]
    directions = rng.normal(size=(64, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    if d == 2:
        phi = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        directions = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    grid = np.concatenate([np.zeros((1, d)), (np.logspace(-3, 4, 36)[:, None, None] * directions[None]).reshape(-1, d)])
    values = relaxed_errors(inputs, targets, grid).max(1)
    best_b, best = grid[values.argmin()], float(values.min())
    for x0 in [best_b] + [rng.normal(size=d) for _ in range(starts)]:
        result = minimize(lambda b: worst_relaxed_error(inputs, targets, b), x0, method="Nelder-Mead",
                          options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 2000})
        if result.fun < best:
            best_b, best = np.asarray(result.x), float(result.fun)
    return best_b, best


# --- untied multi-head: the null-query bound ---------------------------------------------------

def null_query_directions(W_Q: np.ndarray, heads: int, tol: float = 1e-10) -> list[np.ndarray]:
    """For each head h an orthonormal basis (d, k_h) of null(W_Q^h) (rows h*d_head..)."""
    d_head = W_Q.shape[0] // heads
    bases = []
    for h in range(heads):
        _, s, vt = np.linalg.svd(W_Q[h * d_head:(h + 1) * d_head], full_matrices=True)
        rank = int((s > tol * max(s.max(), 1.0)).sum())
        bases.append(vt[rank:].T)
    return bases


def null_query_bound(W_Q: np.ndarray, W_V: np.ndarray, heads: int, R: np.ndarray, n_prefix: int) -> dict:
    """Lower bound on the worst-case error of ANY untied prefix of length n_prefix on a layer
    with W_O = W_V^T (W_V orthogonal), over the unit sphere:
        max_h max_{v in null(W_Q^h), |v| = 1} |W_V^h (v/(n+1) - R v)|
    = max_h sigma_max(W_V^h (I/(n+1) - R) B_h), with the maximising v (add +-v to a finite input
    set for the bound to hold on it)."""
    d_head = W_V.shape[0] // heads
    best, witness = 0.0, None
    for h, basis in enumerate(null_query_directions(W_Q, heads)):
        if basis.shape[1] == 0:
            continue
        A = W_V[h * d_head:(h + 1) * d_head] @ (np.eye(len(R)) / (n_prefix + 1) - R) @ basis
        _, s, vt = np.linalg.svd(A)
        if s[0] > best:
            best, witness = float(s[0]), basis @ vt[0]
    return {"bound": max(best - FLOAT_SLACK, 0.0), "witness": None if witness is None else witness.tolist()}
