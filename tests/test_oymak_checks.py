"""Oymak checks: closed forms and the semi-closed error against Monte Carlo (small, fast), and
that the controls are refuted by the same comparators."""

from __future__ import annotations

import numpy as np

from constructions.oymak.data import MixtureKnobs
from theorems import oymak as th
from verify.checks import oymak as ck


def test_closed_forms_match_and_wrong_one_is_refuted():
    rows = ck.closed_forms_vs_monte_carlo(np.random.default_rng(0))
    assert all(r["within"] for r in rows)
    wrong = [r for r in ck.closed_forms_vs_monte_carlo(np.random.default_rng(1), wrong=True) if r["quantity"] == "uniform"]
    assert not any(r["within"] for r in wrong)


def test_uniform_error_limits():
    assert th.uniform_bayes_error(12, 3, 0.0, 1.0, 0.0) == 0.5
    assert th.uniform_bayes_error(12, 3, 1.0, 1.0, 1 / 3) == 0.5  # k = (T - k) c: class means cancel
    assert th.hard_selection_relevant_probability(10, 10, 2.0, 1.0, 0.0) > 1 - 1e-8


def test_semi_closed_form_matches_direct_monte_carlo():
    kn = MixtureKnobs(T=8, k=2, d=10, Q=2.0)
    rng = np.random.default_rng(2)
    v = np.eye(kn.d)[1] + 0.4 * rng.standard_normal(kn.d)
    draws = ck.low_dim_draws(kn, 1.5, 40_000, rng)
    semi = ck.semi_closed_error(draws, *ck.head_coordinates(v), kn.sigma)
    direct = ck.direct_error(kn, 1.5, v, 20_000, rng)
    assert ck._agree(semi, direct)["within"]
    wrong = ck.semi_closed_error(draws, *ck.head_coordinates(v)[:2], 2 * ck.head_coordinates(v)[2], kn.sigma)
    assert not ck._agree(wrong, direct)["within"]  # doubling the noise norm is detected


def test_lpa_at_chance_when_context_is_absent():
    kn = MixtureKnobs(T=8, k=2, d=4, Q=0.0)
    assert ck.lpa_convex_relaxation(kn, np.random.default_rng(3))["at_chance"]
    assert not ck.chance_test(np.r_[np.zeros(700), np.ones(300)].astype(float))["at_chance"]
