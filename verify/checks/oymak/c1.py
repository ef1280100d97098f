"""oymak.c1: softmax prompt-attention is more expressive than softmax self-attention and linear
prompt-attention (OUR formalization, notes/oymak.md).

Exact part: sympy symmetries (LPA even, SA odd, permutation invariance); at Q = 0 the class laws
mirror, X | y=-1 =d -(X | y=+1), so every LPA (indeed every classifier of S = X^T X / T) has error
exactly 1/2; closed-form errors of uniform attention (Bayes head) and of hard selection along q,
against Monte Carlo.

Measured part, on a grid of data knobs: each model's best error, found by a search that starts
from random inits AND from the best solutions we know (the uniform-attention solution in every
model that contains it: PA at p = 0, SA and SAq at W = 0; the structured solution aligned with the
context and class directions; for LPA the best rank-2 factor of its convex relaxation), trained by
batched L-BFGS, the untrained known solutions kept as candidates, the best chosen on a validation
set and measured on a large test set. Then, per point:

- the sanity floor: every model containing uniform attention must reach uniform attention's exact
  error (``stats.floor_reached``: paired shortfall <= FLOOR_TOLERANCE + 3 SE);
- a separation PA < rival counts only beyond the rival's optimisation uncertainty: against an
  exact lower bound where one exists (LPA at Q = 0: 1/2, proved), else by SEPARATION_MARGIN over
  the best of the rival's searches; for LPA the rival's error is the lower of its best search and
  its convex relaxation (logistic regression on all of S, a convex problem containing every LPA).

The claim holds when the exact parts hold, every floor is reached, and PA is separated from every
rival at the point declared before the run where both failure modes of the abstract's Figure 1
meet (SPARSE: one relevant token in twelve, strong context: self-attention is diluted by the
irrelevant tokens, linear attention mixes them in linearly), and from LPA at the point where
distractors share context and carry the opposite class signal (CONFUSED: rho c (T - k) = k, LPA's
class means cancel). The other points map the boundary of the advantage (reported, not required).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
from scipy.stats import norm

from constructions.oymak.data import MixtureKnobs, MixtureSample, sample_mixture
from constructions.oymak.models import fit_restarts, forward, param_shapes, second_moment, zero_one_error
from theorems import oymak as th
from verify.checks.oymak.stats import (FLOOR_TOLERANCE, SEPARATION_MARGIN, Z_CLOSED_FORM, Z_COMPARE, chance_test,
                                       floor_reached, replicate_search_control, se_of_rate, separated, separated_from_bound)
from verify.protocol import Control, Evidence, Finding, Rung, compare
from verify.registry import Context, check

CLAIM = "oymak.c1.prompt-attention-more-expressive"

# --- exact part: closed forms against Monte Carlo ------------------------------------------------

CLOSED_FORM_KNOBS = (MixtureKnobs(T=25, k=3, d=8, Q=2.0, M=1.0, sigma=1.0),
                     MixtureKnobs(T=16, k=4, d=8, Q=1.5, M=1.0, sigma=1.0, c=0.5, rho=0.3))
CLOSED_FORM_SAMPLES = 40_000


def closed_forms_vs_monte_carlo(rng: np.random.Generator, wrong: bool = False,
                                n: int = CLOSED_FORM_SAMPLES) -> list[dict[str, Any]]:
    """Uniform attention with its Bayes head sign(b) mu, and hard selection along q with head mu:
    Monte Carlo error against theorems.oymak's closed forms. ``wrong``: the 1/T dilution variant
    of the uniform error, whose rows are the uniform ones only (the same draws are made)."""
    rows = []
    for kn in CLOSED_FORM_KNOBS:
        s = sample_mixture(kn, n, rng)
        b = kn.k - (kn.T - kn.k) * kn.c
        f_u = s.X.mean(axis=1) @ (np.sign(b) * kn.mu)
        uni = th.wrong_uniform_error if wrong else th.uniform_bayes_error
        forms = {"uniform": uni(kn.T, kn.k, kn.M, kn.sigma, kn.c)}
        measured = {"uniform": float(zero_one_error(f_u, s.y).mean())}
        if not wrong:
            chosen = np.argmax(s.X @ kn.q, axis=1)  # (n,)
            f_h = s.X[np.arange(len(chosen)), chosen] @ kn.mu
            p_rel = th.hard_selection_relevant_probability(kn.T, kn.k, kn.Q, kn.sigma, kn.rho)
            forms |= {"hard_selection": th.hard_selection_error(kn.T, kn.k, kn.Q, kn.M, kn.sigma, kn.c, kn.rho, p_rel),
                      "P_rel": p_rel}
            measured |= {"hard_selection": float(zero_one_error(f_h, s.y).mean()),
                         "P_rel": float(s.R[np.arange(len(chosen)), chosen].mean())}
        for name, mc in measured.items():
            rows.append(agreement(mc, forms[name], n) | {"knobs": asdict(kn), "quantity": name})
    return rows


def agreement(monte_carlo: float, closed_form: float, n: int) -> dict[str, Any]:
    """|MC - closed form| <= Z_CLOSED_FORM standard errors of a rate from n draws."""
    se = se_of_rate(monte_carlo, n)
    z = abs(monte_carlo - closed_form) / se
    return {"monte_carlo": monte_carlo, "closed_form": closed_form, "se": se, "z": z,
            "within": bool(z <= Z_CLOSED_FORM)}


# --- the grid and the searches ---------------------------------------------------------------

BASE = MixtureKnobs(T=12, k=3, d=6, Q=3.0, M=1.0, sigma=1.0)
SPARSE = BASE.with_(Q=3.0, k=1)
CONFUSED = BASE.with_(Q=3.0, k=3, rho=0.5, c=2.0 / 3.0)  # rho c (T - k) = k: LPA's class means cancel
GRID = (BASE.with_(Q=0.0, k=1), BASE.with_(Q=0.0, k=6),
        BASE.with_(Q=1.0, k=3),
        SPARSE, BASE.with_(Q=3.0, k=3), BASE.with_(Q=3.0, k=6),
        BASE.with_(Q=3.0, k=3, rho=0.5, c=1.0),
        CONFUSED)
RIVALS = ("SA", "SAq", "LPA")
TRAINED = ("PA",) + RIVALS
CONTAINS_UNIFORM = ("PA", "SA", "SAq")  # p = 0, W = 0 give v . xbar; LPA is even in X, so it cannot
REQUIRED = ((SPARSE, RIVALS), (CONFUSED, ("LPA",)))  # declared before the run (module docstring)
RANDOM_STARTS = {"PA": 2, "SA": 1, "SAq": 1, "LPA": 2}
INIT_SCALE = 0.1  # random inits N(0, 0.1^2) per parameter
C1_FULL = {"closed_form_samples": CLOSED_FORM_SAMPLES, "grid": GRID, "n_train": 2_000, "n_valid": 10_000,
           "n_test": 50_000, "iterations": 60, "relaxation_train": 8_000}
# --quick: the same criterion with smaller sizes, on the Q = 0 point k = 1 (floors, mirror) and the
# two declared points.
C1_QUICK = {"closed_form_samples": 10_000, "grid": (GRID[0], SPARSE, CONFUSED), "n_train": 500,
            "n_valid": 4_000, "n_test": 30_000, "iterations": 30, "relaxation_train": 2_000}


def knob_label(kn: MixtureKnobs) -> str:
    return f"k={kn.k},Q={kn.Q:g},c={kn.c:.2g},rho={kn.rho:g}"


def uniform_solution(name: str, kn: MixtureKnobs) -> dict[str, np.ndarray]:
    """Uniform attention's exact optimum inside ``name`` (PA: p = 0; SA, SAq: W = 0), with the
    head at the exact log-odds scale (``theorems.oymak.uniform_log_odds_scale``)."""
    b = kn.k - (kn.T - kn.k) * kn.c
    head = np.sign(b) * th.uniform_log_odds_scale(kn.T, kn.k, kn.M, kn.sigma, kn.c) * np.eye(kn.d)[1]
    return {key: (head if key == "v" else np.zeros(shape)) for key, shape in param_shapes(name, kn.d).items()}


def structured_starts(name: str, d: int) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Starts aligned with the context (e_0) and class (e_1) directions: the prompt / key-query
    matrix selects tokens with a large context coordinate, the head reads the class coordinate."""
    e0, e1 = np.eye(d)[0], np.eye(d)[1]
    if name == "PA":
        return [("prompt 1 e0", {"p": e0, "v": 2 * e1}), ("prompt 3 e0", {"p": 3 * e0, "v": 2 * e1})]
    if name in ("SA", "SAq"):
        return [("key-query 0.5 e0 e0^T", {"W": 0.5 * np.outer(e0, e0), "v": 2 * e1})]
    return [("p e0, v e1", {"p": e0, "v": e1})]


def random_start(name: str, d: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {key: INIT_SCALE * rng.standard_normal(shape) for key, shape in param_shapes(name, d).items()}


def lpa_relaxation(train: MixtureSample) -> dict[str, Any]:
    """LPA's f = v^T S p = <S, sym(p v^T)> is a linear functional of S = X^T X / T: logistic
    regression (no intercept, like LPA) on the d(d+1)/2 entries of S is a convex problem whose
    class {<S, A>: A symmetric} contains every LPA. Returns A and the best LPA inside A's span:
    with A's extreme eigenpairs (l_1, u_1), (l_d, u_d), v = a u_1 + b u_d, p = a u_1 - b u_d,
    a^2 = max(l_1, 0), b^2 = max(-l_d, 0) give sym(p v^T) = a^2 u_1 u_1^T - b^2 u_d u_d^T."""
    from sklearn.linear_model import LogisticRegression

    d = train.X.shape[-1]
    rows, cols = np.triu_indices(d)
    clf = LogisticRegression(C=1.0, fit_intercept=False, max_iter=5000).fit(second_moment(train.X)[:, rows, cols],
                                                                            train.y)
    coef = clf.coef_[0]
    A = np.zeros((d, d))
    A[rows, cols] = coef
    A = (A + A.T) / 2  # off-diagonal features count A_ij + A_ji
    A[np.diag_indices(d)] = coef[rows == cols]
    lam, U = np.linalg.eigh(A)
    a, b = np.sqrt(max(lam[-1], 0.0)), np.sqrt(max(-lam[0], 0.0))
    return {"A": A, "start": {"p": a * U[:, -1] - b * U[:, 0], "v": a * U[:, -1] + b * U[:, 0]}}


def relaxation_losses(A: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """0-1 losses of sign(<S(X), A>)."""
    return zero_one_error(np.einsum("nde,de->n", second_moment(X), A), y)


def search(name: str, kn: MixtureKnobs, train: MixtureSample, valid: MixtureSample, rng: np.random.Generator,
           iterations: int, extra: list[tuple[str, dict[str, np.ndarray]]] = ()) -> dict[str, Any]:
    """Best of several searches: random inits, the uniform solution (if contained), structured and
    ``extra`` starts, all trained at once by L-BFGS; the untrained known solutions are candidates too.
    The candidate with the lowest validation error is returned."""
    known = ([("uniform solution", uniform_solution(name, kn))] if name in CONTAINS_UNIFORM else []) + list(extra)
    starts = ([(f"random {j}", random_start(name, kn.d, rng)) for j in range(RANDOM_STARTS[name])]
              + known + structured_starts(name, kn.d))
    trained = fit_restarts(name, train.X, train.y, [params for _, params in starts], iterations)
    candidates = [(f"{label}, trained", params) for (label, _), params in zip(starts, trained)]
    candidates += [(f"{label}, as is", params) for label, params in known]
    valid_err = [float(zero_one_error(forward(name, params, valid.X), valid.y).mean()) for _, params in candidates]
    best = int(np.argmin(valid_err))
    return {"label": candidates[best][0], "params": candidates[best][1],
            "valid_errors": {label: e for (label, _), e in zip(candidates, valid_err)}}


def measure_point(kn: MixtureKnobs, rng: np.random.Generator, sizes: dict[str, Any]) -> dict[str, Any]:
    """Draw train / valid / test sets, search every model, fit LPA's relaxation; per-example test
    losses of every model, of the uniform optimum (the floor) and of the relaxation."""
    train, valid, test = (sample_mixture(kn, sizes[key], rng) for key in ("n_train", "n_valid", "n_test"))
    relax = lpa_relaxation(sample_mixture(kn, sizes["relaxation_train"], rng))
    found, losses = {}, {}
    for name in TRAINED:
        extra = [("relaxation factor", relax["start"])] if name == "LPA" else []
        found[name] = search(name, kn, train, valid, rng, sizes["iterations"], extra)
        losses[name] = zero_one_error(forward(name, found[name]["params"], test.X), test.y)
    losses["UNIF optimum"] = zero_one_error(forward("UNIF", uniform_solution("PA", kn), test.X), test.y)
    losses["LPA relaxation"] = relaxation_losses(relax["A"], test.X, test.y)
    return {"knobs": kn, "test": test, "found": found, "losses": losses}


def decide_point(m: dict[str, Any]) -> dict[str, Any]:
    """Floors, separations and the uniform optimum's exact error at one grid point (JSON row)."""
    kn, L = m["knobs"], m["losses"]
    exact_uniform = th.uniform_bayes_error(kn.T, kn.k, kn.M, kn.sigma, kn.c)
    n = len(L["PA"])
    errors = {name: {"error": float(loss.mean()), "se": se_of_rate(float(loss.mean()), n)} for name, loss in L.items()}
    floors = {name: floor_reached(L[name], L["UNIF optimum"]) for name in CONTAINS_UNIFORM}
    if kn.Q == 0:  # every LPA errs exactly 1/2 (mirror + evenness, proved): an exact lower bound
        lpa_rival, lpa_vs = "exact bound 1/2 (mirror)", separated_from_bound(L["PA"], 0.5)
    else:
        lpa_rival = min(("LPA", "LPA relaxation"), key=lambda key: errors[key]["error"])
        lpa_vs = separated(L["PA"], L[lpa_rival])
    versus = {"SA": separated(L["PA"], L["SA"]), "SAq": separated(L["PA"], L["SAq"]), "LPA": lpa_vs}
    beats_pa = [r for r in ("SA", "SAq", "LPA") if separated(L[r], L["PA"])["separated"]]
    row = {"knobs": asdict(kn), "label": knob_label(kn), "errors": errors,
           "search_chosen": {name: m["found"][name]["label"] for name in TRAINED},
           "UNIF optimum exact vs test set": agreement(errors["UNIF optimum"]["error"], exact_uniform, n),
           "UNIF exact error": exact_uniform, "floors": floors, "PA_vs": versus, "LPA rival": lpa_rival,
           "PA_advantage": all(v["separated"] for v in versus.values()), "rivals_better_than_PA": beats_pa}
    if kn.Q == 0:
        row["mirror: LPA at chance"] = {"best-found LPA": chance_test(L["LPA"]),
                                        "LPA relaxation": chance_test(L["LPA relaxation"])}
    return row


# --- controls --------------------------------------------------------------------------------

def replicate_control(m: dict[str, Any], rng: np.random.Generator, sizes: dict[str, Any]) -> dict[str, Any]:
    """Each model's whole search repeated on fresh train / validation data with other random
    inits, measured on the SAME test set: the separation criterion must separate neither the
    original from its replicate nor the replicate from the original."""
    kn = m["knobs"]
    train, valid = sample_mixture(kn, sizes["n_train"], rng), sample_mixture(kn, sizes["n_valid"], rng)
    relax = lpa_relaxation(sample_mixture(kn, sizes["relaxation_train"], rng))
    rows = {}
    for name in TRAINED:
        extra = [("relaxation factor", relax["start"])] if name == "LPA" else []
        again = search(name, kn, train, valid, rng, sizes["iterations"], extra)
        loss = zero_one_error(forward(name, again["params"], m["test"].X), m["test"].y)
        rows[name] = {"original": float(m["losses"][name].mean()), "replicate": float(loss.mean()),
                      "original better": separated(m["losses"][name], loss),
                      "replicate better": separated(loss, m["losses"][name])}
    return rows


# The shortfall the floor criterion must catch: 5 FLOOR_TOLERANCE = 0.025. Power: the criterion allows
# FLOOR_TOLERANCE + 3 paired SE, and a rotated head disagrees with the Bayes head on at most ~25% of
# the sequences, so SE <= sqrt(0.25 / 30,000) = 0.0029 even at the --quick test size: 0.025 exceeds
# the allowance by >= 4.7 SE. (A first version used 3 FLOOR_TOLERANCE = 0.015, which exceeds it by
# only ~1 SE in --quick: at seed 2 one grid point's rotated head passed the floor.)
SHORT_OF_FLOOR = 5 * FLOOR_TOLERANCE


def short_of_floor_control(m: dict[str, Any]) -> dict[str, Any] | None:
    """The floor criterion applied to uniform attention with its head rotated (away from mu, into
    a noise direction) until its exact error is the floor + SHORT_OF_FLOOR: must be flagged."""
    kn = m["knobs"]
    x = abs(kn.k - (kn.T - kn.k) * kn.c) * kn.M / (kn.sigma * np.sqrt(kn.T))
    target = th.uniform_bayes_error(kn.T, kn.k, kn.M, kn.sigma, kn.c) + SHORT_OF_FLOOR
    if x == 0 or target >= 0.5:
        return None
    cos = float(norm.isf(target) / x)
    v = np.sign(kn.k - (kn.T - kn.k) * kn.c) * cos * np.eye(kn.d)[1] + np.sqrt(1 - cos ** 2) * np.eye(kn.d)[2]
    loss = zero_one_error(m["test"].X.mean(axis=1) @ v, m["test"].y)
    return {"label": knob_label(kn), "cos_angle": cos,
            "exact_error": th.uniform_head_error(kn.T, kn.k, kn.M, kn.sigma, kn.c, cos),
            "floor": floor_reached(loss, m["losses"]["UNIF optimum"])}


# --- the check -------------------------------------------------------------------------------

def required_separations(rows: list[dict[str, Any]], grid: tuple[MixtureKnobs, ...]) -> list[dict[str, Any]]:
    """The declared separations (REQUIRED) at the points of ``grid`` that carry them."""
    out = []
    for kn, rivals in REQUIRED:
        if kn in grid:
            row = rows[grid.index(kn)]
            out += [{"point": row["label"], "rival": r, **row["PA_vs"][r]} for r in rivals]
    return out


@check(CLAIM, controls=("dilution_1_over_T", "symmetry_counterexamples", "relaxation_at_strong_context",
                        "replicate_search", "head_short_of_floor"))
def check_c1(context: Context) -> Finding:
    rng = context.rng(CLAIM)
    sizes = C1_QUICK if context.quick else C1_FULL
    grid = sizes["grid"]
    symbolic = {k: bool(v) for k, v in {**th.prove_symmetries(), **th.prove_mirror_at_zero_context()}.items()}
    closed = closed_forms_vs_monte_carlo(rng, n=sizes["closed_form_samples"])
    measured = [measure_point(kn, rng, sizes) for kn in grid]
    rows = [decide_point(m) for m in measured]
    sparse = measured[grid.index(SPARSE)]
    replicate = replicate_control(sparse, rng, sizes)
    short = [r for r in (short_of_floor_control(m) for m in measured) if r is not None]
    wrong_closed = closed_forms_vs_monte_carlo(rng, wrong=True, n=sizes["closed_form_samples"])
    wrong_sym = {k: bool(v) for k, v in th.refute_symmetries().items()}
    relax_sparse = chance_test(sparse["losses"]["LPA relaxation"])

    floors = [(r["label"], name, f) for r in rows for name, f in r["floors"].items()]
    worst_floor = max(floors, key=lambda t: t[2]["shortfall"] - t[2]["allowed"])
    required = required_separations(rows, grid)
    weakest = min(required, key=lambda s: s["gap"] - s["needed"])
    mirror = [r["mirror: LPA at chance"] for r in rows if "mirror: LPA at chance" in r]
    exact_ok = (all(symbolic.values()) and all(r["within"] for r in closed)
                and all(r["UNIF optimum exact vs test set"]["within"] for r in rows))
    mirror_ok = all(t["at_chance"] for m in mirror for t in m.values())
    floors_ok = all(f["reached"] for _, _, f in floors)
    separation_ok = all(s["separated"] for s in required)
    n_adv = sum(r["PA_advantage"] for r in rows)
    summary = (f"floors (PA, SA, SAq reach uniform attention's exact error at {len(rows)} points): worst shortfall "
               f"{compare(worst_floor[2]['shortfall'], worst_floor[2]['allowed'])} ({worst_floor[1]} at "
               f"{worst_floor[0]}); declared separations: weakest gap {compare(weakest['gap'], weakest['needed'], below=False)}"
               f" (PA vs {weakest['rival']} at {weakest['point']}, margin {SEPARATION_MARGIN:g} + {Z_COMPARE:g} SE); "
               f"PA advantage at {n_adv}/{len(rows)} points: "
               + "; ".join(f"{r['label']}->{'PA' if r['PA_advantage'] else 'no advantage'}" for r in rows)
               + f"; exact parts {'hold' if exact_ok else 'FAIL'}; Q=0 mirror {'holds' if mirror_ok else 'FAILS'}")
    evidence = Evidence(
        holds=exact_ok and mirror_ok and floors_ok and separation_ok, summary=summary, rung=Rung.TRAINED,
        details={"quick": context.quick, "symbolic": symbolic, "closed_forms": closed, "grid": rows,
                 "required_separations": required, "floors_all_reached": floors_ok,
                 "boundary": [{"point": r["label"], "PA_advantage": r["PA_advantage"],
                               "rivals_better_than_PA": r["rivals_better_than_PA"]} for r in rows],
                 "constants": {"floor_tolerance": FLOOR_TOLERANCE, "separation_margin": SEPARATION_MARGIN,
                               "z_compare": Z_COMPARE, "z_closed_form": Z_CLOSED_FORM},
                 "protocol": {**{k: v for k, v in sizes.items() if k != "grid"}, "grid_points": len(grid),
                              "optimiser": "batched full-batch L-BFGS (strong Wolfe) on the logistic loss",
                              "random_starts": RANDOM_STARTS, "init_scale": INIT_SCALE,
                              "selection": "lowest validation 0-1 error over trained and untrained candidates",
                              "note": "searched errors are upper bounds of each model's best achievable error"}})
    controls = (
        Control("dilution_1_over_T",
                wrong_variant="uniform attention's error with the dilution written 1/T instead of 1/sqrt(T)",
                criterion=f"Monte Carlo vs closed form: refuted iff |MC - form| > {Z_CLOSED_FORM:g} SE at every knob set",
                measured={"rows": [{k: r[k] for k in ("monte_carlo", "closed_form", "z")} for r in wrong_closed]},
                refuted=not any(r["within"] for r in wrong_closed),
                could_fail_because="with too few Monte Carlo draws (or a comparator that widens its SE) the wrong "
                                   "form would lie within 4 SE as the right one does"),
        Control("symmetry_counterexamples",
                wrong_variant="PA even, PA odd, LPA odd (each false)",
                criterion="sympy evaluates f(-X) -+ f(X) at a rational point: refuted iff non-zero for all three",
                measured=wrong_sym, refuted=all(wrong_sym.values()),
                could_fail_because="if the symbolic models were built wrongly (e.g. PA's softmax dropped, making it "
                                   "linear and odd) the counterexample search would find zero"),
        Control("relaxation_at_strong_context",
                wrong_variant=f"the Q = 0 chance verdict applied where its premise fails ({knob_label(SPARSE)})",
                criterion=f"LPA's convex relaxation: refuted iff its error is NOT within {Z_CLOSED_FORM:g} SE of 1/2",
                measured=relax_sparse, refuted=not relax_sparse["at_chance"],
                could_fail_because="a relaxation that cannot classify at all (a feature bug, a solver that returns "
                                   "0) would be 'at chance' everywhere, making the Q = 0 result vacuous"),
        replicate_search_control(
            replicate,
            wrong_variant=f"each model 'separated' from an independent replicate of its own search "
                          f"({knob_label(SPARSE)})",
            could_fail_because="if the searches' outcome varied with the data and inits by more than the margin, "
                               "a model would be 'separated' from itself: the margin would not cover the "
                               "optimisation uncertainty it is meant to cover"),
        Control("head_short_of_floor",
                wrong_variant=f"uniform attention with a head rotated until its exact error is the floor + "
                              f"{SHORT_OF_FLOOR:g}",
                criterion="floor criterion: refuted iff the shortfall is flagged at every grid point",
                measured={"rows": short}, refuted=bool(short) and not any(r["floor"]["reached"] for r in short),
                could_fail_because="with a test set too small to resolve a 0.025 shortfall (or a floor test that "
                                   "compares unpaired errors), a model stuck above the floor would pass it"),
    )
    return Finding(evidence, controls)
