"""Oymak c1 and c3: closed forms and the semi-closed error against Monte Carlo, the decision rules
on synthetic measurements (each control's value can flip while the pass condition holds), and
the c1 search's known starts."""

from __future__ import annotations

import numpy as np
import pytest

from constructions.oymak.data import MixtureKnobs, sample_mixture
from constructions.oymak.models import forward, zero_one_error
from theorems import oymak as th
from verify.checks.oymak import c1, c3
from verify.checks.oymak.stats import (FLOOR_TOLERANCE, SEPARATION_MARGIN, chance_test, floor_reached, separated,
                                       separated_from_bound)


def losses(error: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """A 0-1 loss vector with exactly round(error n) errors, in random order."""
    out = np.zeros(n)
    out[: int(round(error * n))] = 1.0
    return rng.permutation(out)


def flipped(base: np.ndarray, extra: float, rng: np.random.Generator) -> np.ndarray:
    """``base`` with a further fraction ``extra`` of its correct examples turned into errors."""
    out = base.copy()
    correct = np.flatnonzero(out == 0)
    out[rng.choice(correct, int(round(extra * len(out))), replace=False)] = 1.0
    return out


def disagreeing(base: np.ndarray, net: float, disagree: float, rng: np.random.Generator) -> np.ndarray:
    """A classifier that disagrees with ``base`` on a fraction ``disagree`` of the examples and errs
    on a fraction ``net`` more of them (as a rotated head does)."""
    out = base.copy()
    n = len(out)
    up = rng.choice(np.flatnonzero(out == 0), int(round((disagree + net) / 2 * n)), replace=False)
    down = rng.choice(np.flatnonzero(out == 1), int(round((disagree - net) / 2 * n)), replace=False)
    out[up], out[down] = 1.0, 0.0
    return out


# --- exact parts ---------------------------------------------------------------------------------

def test_closed_forms_match_and_wrong_one_is_refuted():
    rows = c1.closed_forms_vs_monte_carlo(np.random.default_rng(0))
    assert all(r["within"] for r in rows)
    wrong = [r for r in c1.closed_forms_vs_monte_carlo(np.random.default_rng(1), wrong=True) if r["quantity"] == "uniform"]
    assert not any(r["within"] for r in wrong)


def test_uniform_error_limits_and_rotated_head():
    assert th.uniform_bayes_error(12, 3, 0.0, 1.0, 0.0) == 0.5
    assert th.uniform_bayes_error(12, 3, 1.0, 1.0, 1 / 3) == 0.5  # k = (T - k) c: class means cancel
    assert th.hard_selection_relevant_probability(10, 10, 2.0, 1.0, 0.0) > 1 - 1e-8
    kn = MixtureKnobs(T=12, k=3, d=4, Q=2.0)
    s = sample_mixture(kn, 100_000, np.random.default_rng(2))
    cos = 0.8
    v = cos * np.eye(4)[1] + np.sqrt(1 - cos ** 2) * np.eye(4)[2]
    mc = zero_one_error(s.X.mean(axis=1) @ v, s.y).mean()
    assert c1.agreement(float(mc), th.uniform_head_error(12, 3, 1.0, 1.0, 0.0, cos), len(s.y))["within"]


def test_uniform_solution_is_the_exact_log_odds_in_every_model_that_contains_it():
    kn = c1.BASE.with_(c=1.0, rho=0.5)  # b < 0: the head points along -mu
    X = sample_mixture(kn, 50, np.random.default_rng(3)).X
    b = (kn.k - (kn.T - kn.k) * kn.c) / kn.T
    log_odds = 2 * b * kn.M * kn.T / kn.sigma ** 2 * X.mean(axis=1)[:, 1]
    for name in c1.CONTAINS_UNIFORM:
        assert np.abs(forward(name, c1.uniform_solution(name, kn), X) - log_odds).max() <= 1e-10


def test_semi_closed_form_matches_direct_monte_carlo():
    kn = MixtureKnobs(T=8, k=2, d=10, Q=2.0)
    rng = np.random.default_rng(2)
    v = np.eye(kn.d)[1] + 0.4 * rng.standard_normal(kn.d)
    draws = c3.low_dim_draws(kn, 1.5, 40_000, rng)
    semi = c3.semi_closed_error(draws, *c3.head_coordinates(v), kn.sigma)
    direct = c3.direct_error(kn, 1.5, v, 20_000, rng)
    assert c3._agree(semi, direct)["within"]
    wrong = c3.semi_closed_error(draws, *c3.head_coordinates(v)[:2], 2 * c3.head_coordinates(v)[2], kn.sigma)
    assert not c3._agree(wrong, direct)["within"]  # doubling the noise norm is detected


def test_lpa_relaxation_at_chance_without_context_and_not_with_it():
    rng = np.random.default_rng(3)
    for Q, at_chance in ((0.0, True), (3.0, False)):
        kn = MixtureKnobs(T=8, k=2, d=4, Q=Q)
        relax = c1.lpa_relaxation(sample_mixture(kn, 4_000, rng))
        test = sample_mixture(kn, 20_000, rng)
        assert chance_test(c1.relaxation_losses(relax["A"], test.X, test.y))["at_chance"] is at_chance
        # the rank-2 factor is an LPA whose quadratic form is A's extreme eigen-part
        S = np.einsum("ntd,nte->nde", test.X, test.X) / kn.T
        lam, U = np.linalg.eigh(relax["A"])
        part = lam[-1] * np.outer(U[:, -1], U[:, -1]) * (lam[-1] > 0) + lam[0] * np.outer(U[:, 0], U[:, 0]) * (lam[0] < 0)
        assert np.allclose(forward("LPA", relax["start"], test.X[:20]), np.einsum("nde,de->n", S[:20], part))


# --- decision rules: each can flip on its own --------------------------------------------------------

def test_floor_rule_flags_a_shortfall_beyond_the_tolerance_only():
    rng = np.random.default_rng(4)
    floor = losses(0.3, 50_000, rng)
    assert floor_reached(floor, floor)["reached"]
    assert floor_reached(flipped(floor, 0.5 * FLOOR_TOLERANCE, rng), floor)["reached"]
    assert not floor_reached(flipped(floor, 3 * FLOOR_TOLERANCE, rng), floor)["reached"]
    assert floor_reached(losses(0.2, 50_000, rng), floor)["reached"]  # better than the floor: fine


def test_separation_needs_the_margin_not_just_significance():
    rng = np.random.default_rng(5)
    pa = losses(0.2, 50_000, rng)
    assert separated(pa, flipped(pa, 2 * SEPARATION_MARGIN, rng))["separated"]
    half = separated(pa, flipped(pa, 0.5 * SEPARATION_MARGIN, rng))
    assert half["gap"] > 10 * half["se"] and not half["separated"]  # significant, but within the margin
    assert separated_from_bound(pa, 0.5)["separated"] and not separated_from_bound(losses(0.499, 5_000, rng), 0.5)["separated"]


def test_replicate_control_can_fail_while_the_separation_holds():
    """The declared separation (PA vs a rival) holds in both cases; the replicate control flips
    with how far an independent replicate of PA's own search lands."""
    rng = np.random.default_rng(6)
    pa = losses(0.19, 50_000, rng)
    rival = flipped(pa, 0.06, rng)
    assert separated(pa, rival)["separated"]
    for spread, refuted in ((0.002, True), (0.03, False)):
        replicate = flipped(pa, spread, rng)
        either = separated(pa, replicate)["separated"] or separated(replicate, pa)["separated"]
        assert (not either) is refuted


def test_short_of_floor_control_can_fail_while_the_floors_hold():
    """Every model reaches the floor in both cases; whether the rotated head is flagged depends
    on the size of the test set (the control's power), which the pass condition does not fix."""
    rng = np.random.default_rng(7)
    for n, flagged in ((30_000, True), (2_000, False)):
        floor = losses(0.38, n, rng)
        assert floor_reached(floor.copy(), floor)["reached"]
        short = disagreeing(floor, c1.SHORT_OF_FLOOR, 0.2, rng)
        assert (not floor_reached(short, floor)["reached"]) is flagged


def test_short_of_floor_control_flags_the_rotated_head_at_a_grid_point():
    rng = np.random.default_rng(8)
    kn = c1.GRID[0]
    test = sample_mixture(kn, 50_000, rng)
    measured = {"knobs": kn, "test": test,
                "losses": {"UNIF optimum": zero_one_error(forward("UNIF", c1.uniform_solution("PA", kn), test.X), test.y)}}
    row = c1.short_of_floor_control(measured)
    assert abs(row["exact_error"] - th.uniform_bayes_error(kn.T, kn.k, kn.M, kn.sigma, kn.c) - c1.SHORT_OF_FLOOR) < 1e-12
    assert not row["floor"]["reached"]


def test_relaxation_control_can_fail_while_the_mirror_holds():
    rng = np.random.default_rng(9)
    assert chance_test(losses(0.501, 40_000, rng))["at_chance"]  # the mirror part (Q = 0)
    assert not chance_test(losses(0.26, 40_000, rng))["at_chance"]  # control refuted
    assert chance_test(losses(0.499, 40_000, rng))["at_chance"]  # a relaxation stuck at chance: not refuted


@pytest.mark.parametrize("name", c1.TRAINED)
def test_search_never_ends_above_its_best_known_start(name):
    """The untrained known solutions are candidates, so the chosen model's validation error is at
    most theirs (the uniform solution for PA, SA, SAq)."""
    rng = np.random.default_rng(10)
    kn = c1.GRID[0]
    train, valid = sample_mixture(kn, 300, rng), sample_mixture(kn, 2_000, rng)
    found = c1.search(name, kn, train, valid, rng, iterations=10)
    if name in c1.CONTAINS_UNIFORM:
        assert min(found["valid_errors"].values()) <= found["valid_errors"]["uniform solution, as is"]
    assert found["valid_errors"][found["label"]] == min(found["valid_errors"].values())
