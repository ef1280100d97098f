"""Check of petrov.sec4.rotation-not-a-bias: one prefix vector cannot imitate a rotation of W_V
(certified, every angle); how longer prefixes fare (measured).

Formalization (ours; theorems.rotation has the statement and the proof). One content token per
query, t = W_V x =: v on the unit sphere, W_V = I. Fine-tuning W_V -> R W_V gives R v; a prefix of
one vector gives (1 - alpha(v)) v + alpha(v) b. Relaxation: alpha(v) free in [0, 1] per input.

What the check establishes (``holds`` needs all of it):
  1. symbolic (sympy): the exact minimax value min_b max_v dist(R v, [v, b]) = m(theta) with
     m = sin(theta) for theta <= 90 deg and 1 above -- proved for ALL theta in [0, pi] and every
     dimension (quasiconvexity + symmetry + closed form); m(theta) > 0 on (0, pi].
  2. certified numerically, independently of that proof: branch-and-bound over b in 2-D (valid in
     every d by the plane reduction) on the antipodal pair and on 360 points per angle
     (5, 10, 45, 90, 180 deg) and on the principal plane of random orthogonal R in d = 3..8: each
     bound is > 0, within BNB_GAP of m(theta), and never above it (b = 0 attains m).
  3. numerical optimum (Nelder-Mead over b, 360 points) and the convex solvers: the closed-form
     least-squares bias equals cvxpy's (<= CVXPY_TOLERANCE); at the optimal alphas the SOCP's best
     worst-case bias is b = 0 with value m(theta); alternating minimisation ends >= the bound.
  4. search (verify.search.prefix, torch.nn.MultiheadAttention): actual prefixes on an actual
     layer; for one prefix position the best worst-case error found is >= the certified bound for
     every (d, angle, setting) (else the certificate would be refuted); the gap is reported.
  5. longer prefixes, measured (not pass/fail): error vs n_S, tied vs untied, a fitted log-log
     rate, and for an untied multi-head layer with d_head = 1 a certified floor (null queries)
     that the search must respect.
Reduced grid here (budget ~15 s): n_S in {1, 2, 4, 8, 16}, angles 10 and 90 deg, 24 inputs,
3 restarts x 500 Adam steps (x 300 for the one-position table). The full tables of
notes/rotation.md (n_S = 1..16, five angles, 72 inputs, 6 restarts x 800 steps; ~5 min) and its
figure come from
    python -c "from verify.checks.petrov_sec4_rotation import main; main(['--full'])"
and the study over five pretrained layers from main(['--seeds', '5']) (``python -m`` on this
module would register the check twice).

``Evidence.rung``: SYMBOLIC when every sympy step holds (the exact value for all theta and every
dimension); the branch-and-bound certificate, the convex solvers and the search are independent
cross-checks of it. Longer prefixes are MEASURED only: reported, not part of the verdict.

Controls (the runner passes the claim only if all five are refuted; each says why it could fail):
  * certifier_refuses_identity: R = I -- the theorem gives m(0) = 0 and the branch-and-bound
    returns a bound <= 0, i.e. the certifier says "no" (refuted = neither certifies > 0);
  * certifier_refuses_translation: T(v) = v + c (constant update) -- not odd, so the theorem
    does not apply, the branch-and-bound's far field returns <= 0, and the relaxed optimiser
    matches it to <= TRANSLATION_MATCH (b -> oo along c), as proved in theorems.rotation;
  * search_finds_realizable: the same search, on the same layers, must reach a target that some
    one-position prefix realizes exactly (a planted random prefix) to <= PLANTED_TOLERANCE -- so
    its upper bounds are not vacuous;
  * search_matches_translation: the constant update v + c, on the one-head layer with an untied
    prefix of 4 positions, must be matched to <= TRANSLATION_SEARCH_TOLERANCE. (One position keeps
    the error at about sigma(-gain) = 0.018: a zero key gives the prefix that constant weight on
    every input, and no key gives a smaller weight on all inputs since its score is odd in v. The
    tied prefix is reported but not required to match: its key grows with its value.);
  * search_can_do_nothing: the zero update (R = I) on the tied layer must be matched to within
    IDENTITY_TOLERANCE of the layer's exact floor sigma(-gain) (the attention a zero prefix keeps).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.linalg import expm

from theorems.rotation import minimax_error, prove, refute_identity, refute_translation
from verify.certificates.rotation import (
    BNB_GAP,
    FLOAT_SLACK,
    alternating_minimax,
    best_bias_least_squares,
    best_bias_least_squares_cvxpy,
    best_bias_worst_case_cvxpy,
    branch_and_bound,
    certify_rotation,
    certify_symmetric,
    minimax_bias_search,
    null_query_bound,
)
from verify.search.prefix import (
    DTYPE,
    LayerSpec,
    SearchConfig,
    circle_inputs,
    layer_outputs,
    plane_rotation,
    search,
)
from verify.protocol import Control, Evidence, Finding, Rung, compare
from verify.registry import Context, check

CLAIM = "petrov.sec4.rotation-not-a-bias"
ANGLES_DEG = (5.0, 10.0, 45.0, 90.0, 180.0)
DIMENSIONS = (2, 3, 8)
TABLE_POINTS = 360  # the reviews' illustration: 360 equally spaced inputs in 2-D
GAIN = 4.0  # self-score of the pretrained heads (verify.search.prefix.LayerSpec)
UNTIED_D, UNTIED_HEADS = 8, 4  # d_head = 2: the query map is injective on the input plane
NULL_D, NULL_HEADS = 2, 2  # d_head = 1: each head's query vanishes on a line of the input plane

# Closed form vs cvxpy (Clarabel, default tolerances ~1e-8 on the objective): agreement to 1e-6 on
# b is three orders above the solver's accuracy and far below any difference that would matter.
CVXPY_TOLERANCE = 1e-6
# "Equal to m(theta)" for numerical optima and the SOCP value: solver/optimiser accuracy ~1e-8.
OPTIMUM_TOLERANCE = 1e-6
# The search is compared with the bound in float64 with no slack: a search value below the bound
# by more than rounding (1e-12) would refute the certificate.
SEARCH_SLACK = 1e-12
# A planted (exactly realizable) target must be matched to 5e-3, < 6% of the smallest certified
# bound compared with (m(5 deg) = 0.087): the search resolves errors far below every bound it
# tests (measured: 1e-5..6e-4).
PLANTED_TOLERANCE = 5e-3
# Zero update on the tied layer: within 5e-3 of the exact floor sigma(-GAIN) = 0.018 of s = 0.
IDENTITY_TOLERANCE = 5e-3
TRANSLATION = (0.3, -0.2)  # c of the translation control
TRANSLATION_MATCH = 1e-6  # the relaxed optimum for the translation (it tends to 0 as |b| -> oo)
# The search must match the translation with a 4-position untied prefix to 1e-2: below the smallest
# certified rotation bound compared with (0.087) by 8x; one position is limited to sigma(-GAIN) = 0.018.
TRANSLATION_SEARCH_TOLERANCE = 1e-2


@dataclass(frozen=True)
class Grid:
    """Sizes of the search runs: ``check`` (within the budget) or ``full`` (notes)."""

    lengths: tuple[int, ...]
    angles: tuple[float, ...]
    points: int  # equally spaced inputs on the unit circle of P
    search: SearchConfig  # longer prefixes, translation, null-query runs
    single: SearchConfig  # one-position runs (they converge in fewer steps)


def check_grid(seed: int) -> Grid:
    return Grid((1, 2, 4, 8, 16), (10.0, 90.0), 24, SearchConfig(restarts=3, steps=500, seed=seed),
                SearchConfig(restarts=3, steps=300, seed=seed))


def full_grid(seed: int) -> Grid:
    config = SearchConfig(restarts=6, steps=800, seed=seed)
    return Grid(tuple(range(1, 17)), ANGLES_DEG, 72, config, config)


# --- helpers ---------------------------------------------------------------------------------

def circle(count: int) -> np.ndarray:
    """(count, 2) equally spaced unit vectors."""
    phi = np.arange(count) * (2 * np.pi / count)
    return np.stack([np.cos(phi), np.sin(phi)], axis=1)


def rotation_2d(angle_deg: float) -> np.ndarray:
    t = math.radians(angle_deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def haar(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def principal_plane(R: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs (2-D coordinates), targets (2-D coordinates) and the basis (d, 2) of the plane of
    R's largest principal angle: a circle of 72 points if the eigenvalue is complex, the pair
    +-u if it is -1 (R u = -u; the plane reduction needs v and R v in the plane, not the circle)."""
    values, vectors = np.linalg.eig(R)
    k = int(np.argmax(np.abs(np.angle(values))))
    if abs(values[k].imag) > 1e-9:
        basis, _ = np.linalg.qr(np.stack([vectors[:, k].real, vectors[:, k].imag], axis=1))
        points = circle(72)
    else:
        u = vectors[:, k].real / np.linalg.norm(vectors[:, k].real)
        axis = np.eye(len(u))[int(np.argmin(np.abs(u)))]  # any unit vector not parallel to u
        w = axis - (axis @ u) * u
        basis, points = np.stack([u, w / np.linalg.norm(w)], axis=1), np.array([[1.0, 0.0], [-1.0, 0.0]])
    inputs = points @ basis.T  # (M, d)
    return points, (R @ inputs.T).T @ basis, basis


def fit_rate(lengths: list[int], errors: list[float]) -> dict[str, float]:
    """Least-squares fit log(err) = a + p log(n_S): the exponent p, its R^2, and err(16)/err(1)."""
    x, y = np.log(np.asarray(lengths, float)), np.log(np.maximum(np.asarray(errors, float), 1e-300))
    p, a = np.polyfit(x, y, 1)
    residual = y - (a + p * x)
    r2 = 1 - float(residual @ residual) / max(float(((y - y.mean()) ** 2).sum()), 1e-300)
    return {"exponent": float(p), "r2": r2, "first": float(errors[0]), "last": float(errors[-1]),
            "ratio_last_to_first": float(errors[-1] / errors[0])}


# --- 1-3: the certified bound ------------------------------------------------------------------

def certified_table(rng: np.random.Generator, angles=ANGLES_DEG, points: int = TABLE_POINTS) -> dict[str, Any]:
    """Per angle: m(theta) (theorem), branch-and-bound on the antipodal pair and on ``points``
    inputs, the theorem on the finite set, the numerical optimum, and "do nothing" 2 sin(theta/2)."""
    pair, many = circle(2), circle(points)
    rows = []
    for angle in angles:
        R = rotation_2d(angle)
        on_pair = branch_and_bound(pair, pair @ R.T)
        on_many = branch_and_bound(many, many @ R.T)
        finite = certify_symmetric(many, many @ R.T)
        b, optimum = minimax_bias_search(many, many @ R.T, rng, starts=2)
        rows.append({
            "angle_deg": angle, "m_theta": minimax_error(math.radians(angle)),
            "bnb_pair": on_pair.bound, "bnb_pair_cells": on_pair.evaluations,
            f"bnb_{points}": on_many.bound, f"bnb_{points}_cells": on_many.evaluations,
            "bnb_complete": on_pair.complete and on_many.complete,
            f"theorem_on_{points}": finite["value"] if finite else None,
            f"numeric_optimum_{points}": optimum, "numeric_optimum_bias_norm": float(np.linalg.norm(b)),
            "do_nothing": 2 * math.sin(math.radians(angle) / 2),
        })
    ok = all(
        r["bnb_pair"] > 0 and r[f"bnb_{points}"] > 0
        and r["bnb_pair"] >= (1 - BNB_GAP) * r["m_theta"] - 2 * FLOAT_SLACK
        and r[f"bnb_{points}"] >= (1 - BNB_GAP) * r["m_theta"] - 2 * FLOAT_SLACK
        and max(r["bnb_pair"], r[f"bnb_{points}"]) <= r["m_theta"]  # sound: b = 0 attains m
        and abs(r[f"theorem_on_{points}"] - r["m_theta"]) <= OPTIMUM_TOLERANCE
        and abs(r[f"numeric_optimum_{points}"] - r["m_theta"]) <= OPTIMUM_TOLERANCE
        for r in rows)
    return {"rows": rows, "holds": ok, "gap": BNB_GAP}


def small_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    """exp(t A) for a random skew-symmetric A of unit spectral norm and t ~ U(0.05, 2): a rotation
    (det +1) whose largest principal angle is t, 3 to 115 deg (Haar matrices mostly give angles
    near 180 deg)."""
    G = rng.normal(size=(d, d))
    A = (G - G.T) / 2
    return expm(rng.uniform(0.05, 2.0) * A / np.linalg.norm(A, 2))


def random_rotations(rng: np.random.Generator, count: int = 8) -> dict[str, Any]:
    """Random orthogonal R in d = 3..8, alternately Haar (det +-1) and small rotations: the
    theorem's bound m(theta_max) vs the branch-and-bound on the plane of the largest principal
    angle (valid in d by the plane reduction)."""
    rows = []
    for index in range(count):
        d = 3 + index % 6
        R = haar(d, rng) if index % 2 == 0 else small_rotation(d, rng)
        theorem = certify_rotation(R)
        points, targets, _ = principal_plane(R)
        bnb = branch_and_bound(points, targets)
        rows.append({"d": d, "det": float(round(np.linalg.det(R))), "theta_max_deg": theorem["theta_max_deg"],
                     "theorem_bound": theorem["bound"], "bnb_bound": bnb.bound})
    ok = all(0 < r["bnb_bound"] <= r["theorem_bound"] + 2 * FLOAT_SLACK
             and r["bnb_bound"] >= (1 - BNB_GAP) * r["theorem_bound"] - 2 * FLOAT_SLACK for r in rows)
    return {"rows": rows, "holds": ok}


def convex_checks(rng: np.random.Generator, angles=ANGLES_DEG, points: int = TABLE_POINTS) -> dict[str, Any]:
    """Closed-form least squares vs cvxpy for random alphas; the worst-case SOCP at the optimal
    alphas alpha = 1 - clip(cos theta, 0, 1); alternating minimisation from random alphas."""
    V = circle(points)
    ls_diff, value_diff, socp, alternating = 0.0, 0.0, [], []
    for angle in angles:
        Y = V @ rotation_2d(angle).T
        alphas = rng.uniform(0.05, 1.0, size=points)
        b_closed, v_closed = best_bias_least_squares(V, Y, alphas)
        b_cvx, v_cvx = best_bias_least_squares_cvxpy(V, Y, alphas)
        ls_diff = max(ls_diff, float(np.max(np.abs(b_closed - b_cvx))))
        value_diff = max(value_diff, abs(v_closed - v_cvx) / max(v_closed, 1.0))
        optimal = np.full(points, 1 - max(math.cos(math.radians(angle)), 0.0))
        b_socp, v_socp = best_bias_worst_case_cvxpy(V, Y, optimal)
        socp.append({"angle_deg": angle, "value": v_socp, "bias_norm": float(np.linalg.norm(b_socp))})
        if angle in (10.0, 90.0):
            _, history = alternating_minimax(V, Y, rng.uniform(0, 1, size=points), iterations=4)
            alternating.append({"angle_deg": angle, "history": history})
    ok = (ls_diff <= CVXPY_TOLERANCE and value_diff <= CVXPY_TOLERANCE
          and all(abs(s["value"] - minimax_error(math.radians(s["angle_deg"]))) <= OPTIMUM_TOLERANCE
                  and s["bias_norm"] <= OPTIMUM_TOLERANCE for s in socp)
          and all(a["history"][-1] >= minimax_error(math.radians(a["angle_deg"])) - OPTIMUM_TOLERANCE
                  for a in alternating))
    return {"least_squares_max_bias_diff": ls_diff, "least_squares_max_rel_value_diff": value_diff,
            "socp_at_optimal_alphas": socp, "alternating_from_random_alphas": alternating, "holds": ok}


# --- 4-5: the search ---------------------------------------------------------------------------

def _targets(d: int, inputs: torch.Tensor, angles) -> torch.Tensor:
    return torch.stack([inputs @ plane_rotation(d, math.radians(a)).T for a in angles])


def _planted(layer, inputs: torch.Tensor, setting: str, seed: int) -> torch.Tensor:
    """Outputs (M, d) of the layer with a seeded random one-position prefix (realizable target)."""
    gen = torch.Generator().manual_seed(seed + 7)
    d = inputs.shape[1]
    keys = torch.randn(1, d, generator=gen, dtype=DTYPE)
    values = keys if setting == "tied" else torch.randn(1, d, generator=gen, dtype=DTYPE)
    return layer_outputs(layer, inputs, keys, values, 1)


def single_prefix(grid: Grid, dims=DIMENSIONS, angles=ANGLES_DEG) -> dict[str, Any]:
    """One prefix position, one head (tied: s is key and value; untied: free key and value) on
    the circle of P in R^d: search upper bound vs the certified m(theta); plus the two controls
    (planted target, zero update) in the same batch."""
    rows, planted, identity = [], [], []
    for setting in ("tied", "untied"):
        for d in dims:
            spec = LayerSpec(d, 1, GAIN, grid.single.seed)
            layer = spec.build()
            inputs = circle_inputs(d, grid.points)
            targets = torch.cat([_targets(d, inputs, angles), inputs[None],
                                 _planted(layer, inputs, setting, grid.single.seed)[None]])
            result = search(layer, setting, inputs, targets, [1] * len(targets), grid.single)
            for angle, upper in zip(angles, result.worst):
                lower = minimax_error(math.radians(angle))
                rows.append({"setting": setting, "d": d, "angle_deg": angle, "lower": lower,
                             "upper": upper, "gap": upper - lower,
                             "do_nothing": 2 * math.sin(math.radians(angle) / 2)})
            identity.append({"setting": setting, "d": d, "error": result.worst[-2]})
            planted.append({"setting": setting, "d": d, "error": result.worst[-1]})
    ok = all(r["upper"] >= r["lower"] - SEARCH_SLACK for r in rows)
    return {"rows": rows, "identity": identity, "planted": planted, "holds": ok,
            "inputs": f"{grid.points} equally spaced points on the unit circle of P = span(e1, e2)",
            "layer": f"torch.nn.MultiheadAttention(bias=False), 1 head, self-matching, gain {GAIN}"}


def longer_prefixes(grid: Grid) -> dict[str, Any]:
    """Error vs n_S for tied (1 head) and untied (UNTIED_HEADS heads, peft-style) prefixes in
    d = UNTIED_D, rotations in P; the fitted exponent of err ~ n_S^p per setting and angle.
    The untied batch also carries a planted one-position target (search control)."""
    out: dict[str, Any] = {"lengths": list(grid.lengths), "angles_deg": list(grid.angles), "settings": {}}
    planted = []
    for setting, heads in (("tied", 1), ("untied", UNTIED_HEADS)):
        spec = LayerSpec(UNTIED_D, heads, GAIN, grid.search.seed)
        layer = spec.build()
        inputs = circle_inputs(UNTIED_D, grid.points)
        per_angle = _targets(UNTIED_D, inputs, grid.angles)
        configs = [(n, k) for n in grid.lengths for k in range(len(grid.angles))]
        targets = torch.stack([per_angle[k] for _, k in configs] + [_planted(layer, inputs, setting, grid.search.seed)])
        result = search(layer, setting, inputs, targets, [n for n, _ in configs] + [1], grid.search)
        table = {f"{a:g}": [result.worst[i] for i, (_, k) in enumerate(configs) if k == j]
                 for j, a in enumerate(grid.angles)}
        out["settings"][setting] = {
            "heads": heads, "d_head": UNTIED_D // heads, "worst_error": table,
            "rate": {a: fit_rate(list(grid.lengths), errs) for a, errs in table.items()},
            "single_vector_bound": {f"{a:g}": minimax_error(math.radians(a)) for a in grid.angles},
        }
        planted.append({"setting": setting, "d": UNTIED_D, "heads": heads, "error": result.worst[-1]})
    out["planted"] = planted
    out["verdict"] = _verdict(out)
    return out


def _verdict(out: dict[str, Any]) -> dict[str, str]:
    """Plain-language reading of the measured errors: the factor by which the best worst-case
    error drops from n_S = 1 to the longest prefix ('falls' needs >= 10x, 'stays' means < 2x)."""
    verdict = {}
    for setting, data in out["settings"].items():
        parts = []
        for angle, rate in data["rate"].items():
            drop = 1 / rate["ratio_last_to_first"]
            kind = (f"falls {drop:.0f}x" if drop >= 10 else
                    f"stays (x{rate['ratio_last_to_first']:.2f})" if drop < 2 else f"falls {drop:.1f}x")
            parts.append(f"{angle} deg: {kind} ({rate['first']:.3g} -> {rate['last']:.3g}, "
                         f"fit n_S^{rate['exponent']:.2f}, R^2 {rate['r2']:.2f})")
        verdict[setting] = "; ".join(parts)
    return verdict


def untied_null_query(grid: Grid) -> dict[str, Any]:
    """d = 2 with two heads of width 1: each head's query vanishes on a line. Certified floor
    (null_query_bound) for every n_S, vs the search on the circle plus the +-witness inputs."""
    spec = LayerSpec(NULL_D, NULL_HEADS, GAIN, grid.search.seed)
    layer = spec.build()
    w = {k: t.numpy() for k, t in spec.weights().items()}
    witnesses = []
    for angle in grid.angles:
        for n in grid.lengths:
            witness = null_query_bound(w["W_Q"], w["W_V"], NULL_HEADS, rotation_2d(angle), n)["witness"]
            if witness is not None and not any(np.allclose(np.abs(witness), np.abs(x)) for x in witnesses):
                witnesses.append(np.asarray(witness))
    extra = torch.tensor(np.concatenate([np.stack(witnesses), -np.stack(witnesses)]), dtype=DTYPE)
    inputs = torch.cat([circle_inputs(NULL_D, grid.points), extra])
    per_angle = _targets(NULL_D, inputs, grid.angles)
    configs = [(n, k) for n in grid.lengths for k in range(len(grid.angles))]
    result = search(layer, "untied", inputs, torch.stack([per_angle[k] for _, k in configs]),
                    [n for n, _ in configs], grid.search)
    rows = []
    for (n, k), upper in zip(configs, result.worst):
        lower = null_query_bound(w["W_Q"], w["W_V"], NULL_HEADS, rotation_2d(grid.angles[k]), n)["bound"]
        rows.append({"n_S": n, "angle_deg": grid.angles[k], "lower": lower, "upper": upper})
    limit = {f"{a:g}": null_query_bound(w["W_Q"], w["W_V"], NULL_HEADS, rotation_2d(a), 10**9)["bound"]
             for a in grid.angles}
    return {"rows": rows, "limit_n_S_to_infinity": limit,
            "holds": all(r["upper"] >= r["lower"] - SEARCH_SLACK and r["lower"] > 0 for r in rows)}


# --- controls ----------------------------------------------------------------------------------

CONTROLS = ("certifier_refuses_identity", "certifier_refuses_translation", "search_finds_realizable",
            "search_can_do_nothing", "search_matches_translation")


def certifier_controls(rng: np.random.Generator) -> tuple[Control, Control]:
    """The certifier must say no for R = I and for a translation (both routes)."""
    V = circle(TABLE_POINTS)
    identity_bnb = branch_and_bound(V, V.copy())
    identity_theorem = certify_rotation(np.eye(3))
    c = np.asarray(TRANSLATION)
    shifted = V + c
    translation_bnb = branch_and_bound(V, shifted)
    translation_theorem = certify_symmetric(V, shifted)
    _, relaxed = minimax_bias_search(V, shifted, rng, starts=2)
    symbolic_identity, symbolic_translation = refute_identity(), refute_translation()
    identity = Control(
        "certifier_refuses_identity", "R = I (no update): the certifier asked for a positive bound",
        "the theorem's route certifies nothing (m(0) = 0, also in sympy) and the branch-and-bound's bound is <= 0",
        {"theorem": identity_theorem, "bnb_bound": identity_bnb.bound, "bnb_upper": identity_bnb.upper,
         "symbolic": symbolic_identity},
        not identity_theorem["certified"] and not identity_bnb.certified and bool(symbolic_identity["refuted"]),
        "the branch-and-bound's cell bounds are computed, not assumed: an unsound far-field slack or cone "
        "distance would return a positive bound for R = I too, and a typed m with m(0) > 0 would certify it; "
        "then the control would stand")
    translation = Control(
        "certifier_refuses_translation",
        f"T(v) = v + c, c = {list(TRANSLATION)} (not odd; matched by a bias as |b| -> oo)",
        f"the theorem does not apply (targets not odd), the branch-and-bound's bound is <= 0, the relaxed "
        f"optimiser reaches <= {TRANSLATION_MATCH:g}, and sympy shows the residual -(|c|/lam) v",
        {"theorem_applies": translation_theorem is not None, "bnb_bound": translation_bnb.bound,
         "relaxed_optimum": relaxed, "symbolic": symbolic_translation},
        translation_theorem is None and not translation_bnb.certified and relaxed <= TRANSLATION_MATCH
        and bool(symbolic_translation["refuted"]),
        "a certifier that ignored the symmetry hypothesis, or a far field that never approached the infimum "
        "0 along c, would report a positive bound for a map a bias does match; then the control would stand")
    return identity, translation


def translation_search(grid: Grid, d: int = 2, lengths=(1, 4)) -> dict[str, Any]:
    """The constant update T(v) = v + c on one-head layers: the untied prefix (free key) can keep
    a constant weight sigma(-gain) with a zero key and a large value (~|c| e^gain), so it matches
    v + c up to ~sigma(-gain) with one position and better with more; the tied prefix cannot
    (its key grows with its value)."""
    out = {}
    for setting in ("tied", "untied"):
        layer = LayerSpec(d, 1, GAIN, grid.search.seed).build()
        inputs = circle_inputs(d, grid.points)
        shifted = inputs + torch.tensor(TRANSLATION, dtype=DTYPE)
        result = search(layer, setting, inputs, shifted.expand(len(lengths), -1, -1), list(lengths), grid.search)
        out[setting] = {str(n): err for n, err in zip(lengths, result.worst)}
    return {"lengths": list(lengths), "worst_error": out, "floor_one_position": 1 / (1 + math.exp(GAIN))}


def search_controls(single: dict[str, Any], longer: dict[str, Any], translation: dict[str, Any]
                    ) -> tuple[Control, Control, Control]:
    """The search is an upper bound on what prefixes achieve: these show it finds what exists."""
    planted = single["planted"] + longer["planted"]
    floor = 1 / (1 + math.exp(GAIN))  # tied, s = 0: alpha = sigma(0 - GAIN) on every input
    tied_identity = [r for r in single["identity"] if r["setting"] == "tied"]
    longest = str(translation["lengths"][-1])
    untied_translation = translation["worst_error"]["untied"][longest]
    return (
        Control("search_finds_realizable",
                "target = the same layer with a planted random one-position prefix (exactly realizable)",
                f"the search's best worst-case error <= {PLANTED_TOLERANCE:g} on every planted target",
                {"errors": planted, "worst": max((p["error"] for p in planted), default=float("nan"))},
                bool(planted) and all(p["error"] <= PLANTED_TOLERANCE for p in planted),
                "the search is gradient descent from random starts on a non-convex loss: a weak optimiser "
                "(too few steps, a bad learning rate) would stop far from a prefix that exists (and 'never below "
                "the bound' would then be no evidence); the control would stand"),
        Control("search_can_do_nothing", "R = I (the zero update), tied one-head layers",
                f"best worst-case error <= sigma(-gain) + {IDENTITY_TOLERANCE:g} (the exact floor a zero prefix keeps)",
                {"errors": tied_identity, "floor_sigma_minus_gain": floor},
                bool(tied_identity) and all(r["error"] <= floor + IDENTITY_TOLERANCE for r in tied_identity),
                "to do nothing the search must drive the prefix's attention down to the layer's floor; a search "
                "stuck at its random start would keep a visible bias and the control would stand"),
        Control("search_matches_translation",
                f"T(v) = v + c, c = {list(TRANSLATION)}, untied one-head prefix of {longest} positions",
                f"best worst-case error <= {TRANSLATION_SEARCH_TOLERANCE:g}",
                {**translation, "error": untied_translation},
                untied_translation <= TRANSLATION_SEARCH_TOLERANCE,
                "matching v + c needs a large value with a near-constant attention weight (|s| ~ |c| e^gain); a "
                "search that cannot reach large prefixes would stay near |c| = 0.36 and the control would stand"),
    )


# --- the check ---------------------------------------------------------------------------------

def _ratio(longer: dict[str, Any], setting: str) -> str:
    """The measured err(longest n_S) / err(n_S = 1) per angle (< 1: the error fell)."""
    rates = longer["settings"][setting]["rate"].values()
    return "/".join(f"{r['ratio_last_to_first']:.3g}" for r in rates)


def _summary(proof, table, single, longer, null) -> str:
    ratio = min(r["bnb_pair"] / r["m_theta"] for r in table["rows"])
    angles = "/".join(f"{r['angle_deg']:g}" for r in table["rows"])
    bounds = "/".join(f"{r['bnb_pair']:.4f}" for r in table["rows"])
    closest = min(single["rows"], key=lambda r: r["gap"])
    n = longer["lengths"][-1]
    at = "/".join(longer["settings"]["tied"]["worst_error"])
    tied, untied = ("/".join(f"{v[-1]:.3f}" for v in longer["settings"][s]["worst_error"].values())
                    for s in ("tied", "untied"))
    floors = [r["lower"] for r in null["rows"]]
    above = min(r["upper"] - r["lower"] for r in null["rows"])
    return (f"one prefix vector: sympy {sum(proof.values())}/{len(proof)} steps hold (error >= m(theta) > 0, "
            f"every theta); B&B bounds {bounds} at {angles} deg, min B&B/m {compare(ratio, 1 - BNB_GAP, below=False, fmt='.5g')}; "
            f"torch search minus bound, closest {compare(closest['gap'], -SEARCH_SLACK, below=False)} "
            f"({closest['angle_deg']:g} deg); measured n_S={n} at {at} deg: tied {tied} (err(n_S={n})/err(1) "
            f"{_ratio(longer, 'tied')}), untied {untied} ({_ratio(longer, 'untied')}); untied d_head=1 certified floor "
            f"{min(floors):.2f}..{max(floors):.2f}, search minus floor {compare(above, -SEARCH_SLACK, below=False)}")


def _rung(proof: dict[str, bool], table: dict[str, Any], convex: dict[str, Any]) -> Rung:
    """The strongest rung whose part of the evidence holds: the proof, the branch-and-bound
    certificate, the convex solvers; else the search."""
    if all(proof.values()):
        return Rung.SYMBOLIC
    if table["holds"]:
        return Rung.CERTIFICATE
    return Rung.CONVEX if convex["holds"] else Rung.RANDOMIZED


@check(CLAIM, controls=CONTROLS)
def rotation_not_a_bias(context: Context) -> Finding:
    rng = context.rng(CLAIM)
    seed = int(rng.integers(0, 2**31 - 1))
    grid = check_grid(seed)
    proof = prove()
    table = certified_table(rng)
    randoms = random_rotations(rng)
    convex = convex_checks(rng)
    single = single_prefix(grid)
    longer = longer_prefixes(grid)
    null = untied_null_query(grid)
    details = {
        "symbolic": {"proof": proof, "all_steps_hold": all(proof.values())},
        "certified_table": table,
        "random_orthogonal": randoms,
        "convex": convex,
        "single_prefix_search": single,
        "longer_prefixes": longer,
        "untied_null_query": null,
        "grid": {"lengths": list(grid.lengths), "angles_deg": list(grid.angles), "points": grid.points,
                 "restarts": grid.search.restarts, "steps": grid.search.steps,
                 "steps_one_position": grid.single.steps, "seed": seed,
                 "note": "reduced grid; full tables: verify.checks.petrov_sec4_rotation.main(['--full'])"},
        "measured_not_decided": "how longer prefixes fare (longer_prefixes) is reported, not part of the verdict",
    }
    holds = all(proof.values()) and all(part["holds"] for part in (table, randoms, convex, single, null))
    evidence = Evidence(holds, _summary(proof, table, single, longer, null), _rung(proof, table, convex), details)
    controls = (*certifier_controls(rng), *search_controls(single, longer, translation_search(grid)))
    return Finding(evidence, controls)


# --- full tables for notes/rotation.md -----------------------------------------------------------

def full_report(seed: int = 0) -> dict[str, Any]:
    """The notes' tables: every piece of the check on the full grid (minutes, not seconds)."""
    rng = np.random.default_rng(seed)
    grid = full_grid(seed)
    return {"certified_table": certified_table(rng), "random_orthogonal": random_rotations(rng, 12),
            "convex": convex_checks(rng), "single_prefix_search": single_prefix(grid),
            "longer_prefixes": longer_prefixes(grid), "untied_null_query": untied_null_query(grid),
            "certifier_controls": {c.name: c.to_json() for c in certifier_controls(rng)}}


def layer_seed_study(seeds: int = 5, lengths=(1, 4, 8, 16), angles=(10.0, 90.0)) -> list[dict[str, Any]]:
    """The longer-prefix measurement repeated on ``seeds`` pretrained layers (layer seed = search
    seed = 0..seeds-1; 36 inputs, 4 restarts x 800 steps): is the tied/untied contrast a property
    of one layer or of the settings?"""
    rows = []
    for seed in range(seeds):
        config = SearchConfig(restarts=4, steps=800, seed=seed)
        grid = Grid(tuple(lengths), tuple(angles), 36, config, config)
        data = longer_prefixes(grid)["settings"]
        rows.append({"seed": seed, **{s: data[s]["worst_error"] for s in data}})
    return rows


def _markdown(report: dict[str, Any]) -> str:
    lines = ["| angle | m(theta) | B&B pair | B&B 360 | numeric optimum 360 | do nothing |", "|---|---|---|---|---|---|"]
    for r in report["certified_table"]["rows"]:
        lines.append(f"| {r['angle_deg']:g} | {r['m_theta']:.6f} | {r['bnb_pair']:.6f} | {r['bnb_360']:.6f} | "
                     f"{r['numeric_optimum_360']:.6f} | {r['do_nothing']:.6f} |")
    lines += ["", "| setting | d | angle | lower (certified) | upper (search) | gap |", "|---|---|---|---|---|---|"]
    for r in report["single_prefix_search"]["rows"]:
        lines.append(f"| {r['setting']} | {r['d']} | {r['angle_deg']:g} | {r['lower']:.4f} | {r['upper']:.4f} | "
                     f"{r['gap']:.4f} |")
    longer = report["longer_prefixes"]
    for setting, data in longer["settings"].items():
        lines += ["", f"{setting} ({data['heads']} head(s), d_head {data['d_head']}): worst-case error by n_S", "",
                  "| n_S | " + " | ".join(f"{a} deg" for a in data["worst_error"]) + " |",
                  "|---" * (1 + len(data["worst_error"])) + "|"]
        for i, n in enumerate(longer["lengths"]):
            lines.append(f"| {n} | " + " | ".join(f"{v[i]:.4f}" for v in data["worst_error"].values()) + " |")
        lines.append("")
        lines.append("rates: " + "; ".join(f"{a} deg: p = {r['exponent']:.2f} (R^2 {r['r2']:.2f})"
                                          for a, r in data["rate"].items()))
    lines += ["", "| n_S | angle | null-query floor (certified) | search |", "|---|---|---|---|"]
    for r in report["untied_null_query"]["rows"]:
        lines.append(f"| {r['n_S']} | {r['angle_deg']:g} | {r['lower']:.4f} | {r['upper']:.4f} |")
    return "\n".join(lines)


def _figure(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    longer = report["longer_prefixes"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(longer["angles_deg"])))
    for setting, style in (("tied", "--"), ("untied", "-")):
        for color, (angle, errs) in zip(colors, longer["settings"][setting]["worst_error"].items()):
            ax.loglog(longer["lengths"], errs, style, color=color, marker="o", ms=3, label=f"{setting}, {angle} deg")
    for color, bound in zip(colors, longer["settings"]["tied"]["single_vector_bound"].values()):
        ax.axhline(bound, color=color, lw=0.7, ls=":")  # certified bound for ONE prefix vector
    ax.set_xlabel("prefix length n_S")
    ax.set_ylabel("best worst-case error found (search)")
    ax.set_title("Imitating a rotation of W_V with a prefix (d = 8, inputs on a circle)\ndashed: tied (1 head), solid: untied (4 heads); dotted: certified bound for n_S = 1", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="full tables of notes/rotation.md")
    parser.add_argument("--full", action="store_true", help="run the full grid (minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", default="notes/figures/rotation_prefix_length.png")
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    parser.add_argument("--seeds", type=int, default=0, help="only the longer-prefix study on this many layers")
    args = parser.parse_args(argv)
    if args.seeds:
        for row in layer_seed_study(args.seeds):
            print(row)
        return
    if not args.full:
        parser.error("nothing to do without --full or --seeds (the reduced grid runs in `python -m verify run`)")
    report = full_report(args.seed)
    print(_markdown(report))
    _figure(report, args.figure)
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)

