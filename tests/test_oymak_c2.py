"""Oymak c2 (first GD steps, sample complexity, oracle baselines), the c3 law comparison, and the
quick-mode behaviour and determinism of the oymak checks."""

from __future__ import annotations

import json

import numpy as np
import torch

from constructions.oymak.data import MixtureKnobs, sample_mixture
from theorems import oymak as th
from verify.checks import oymak as ck
from verify.registry import Context

# float64 sums of a few thousand O(1) terms: rounding ~1e-13.
FLOAT_TOL = 1e-10


def test_vectorised_gd_prompts_equal_autograd_steps():
    kn = MixtureKnobs(T=6, k=2, d=5, Q=2.0, M=1.5)
    rng = np.random.default_rng(0)
    s1, s2 = sample_mixture(kn, 300, rng), sample_mixture(kn, 300, rng)
    auto = ck.gd_two_steps_autograd(s1.X, s1.y, s2.X, s2.y, np.ones(kn.d))
    vec = ck.gd_prompts(s1.X[None], s1.y[None], s2.X[None], s2.y[None])[0]
    assert np.abs(auto["p2"] - vec).max() <= FLOAT_TOL
    assert np.array_equal(auto["p_step1"], np.zeros(kn.d))  # from v = 0 the prompt cannot move


def test_first_steps_match_closed_form_and_uncentred_control_is_refuted():
    rng = np.random.default_rng(1)
    kn = ck.C2_MC_KNOBS[1]  # c, rho > 0: the general coefficients
    mc = ck.first_steps_monte_carlo(kn, 12, 1_500, rng)
    thr = ck.t_threshold(12, 3 * kn.d)
    good = ck.first_step_predictions(kn, mc["v_probe"])
    bad = ck.first_step_predictions(kn, mc["v_probe"], centred=False)
    assert all(ck.match_means(mc[key], good[key], thr)["within"] for key in ("v1", "p2", "probe"))
    assert not ck.match_means(mc["probe"], bad["probe"], thr)["within"]


def test_oracle_risk_quadrature_matches_monte_carlo_and_asymptote():
    N, k, d, Q = 50, 2, 12, 1.5
    exact = th.oracle_direction_risk(N, k, d, Q, 1.0)
    g = np.random.default_rng(2).standard_normal((400_000, d)) / np.sqrt(k * N)
    g[:, 0] += Q
    sin2 = 1 - g[:, 0] ** 2 / (g ** 2).sum(axis=1)
    assert abs(sin2.mean() - exact) <= 4 * sin2.std() / np.sqrt(len(sin2))
    big = 10 ** 6
    assert abs(th.oracle_direction_risk(big, k, d, Q, 1.0) * big / th.oracle_alignment_constant(k, d, Q, 1.0) - 1) < 1e-4


def test_class_variance_second_moment_by_monte_carlo():
    T, k, M, c = 8, 3, 1.5, 0.4
    kn = MixtureKnobs(T=T, k=k, d=2, Q=1.0, M=M, c=c)
    X = sample_mixture(kn, 200_000, np.random.default_rng(3)).X[:, :, 1]
    S = ((X - X.mean(axis=1, keepdims=True)) ** 2).mean(axis=1)  # mu_hat^T C mu_hat
    assert abs((S ** 2).mean() - th.class_variance_second_moment(T, k, M, 1.0, c)) <= 4 * (S ** 2).std() / np.sqrt(len(S))


def test_posterior_information_between_its_bounds():
    rng = np.random.default_rng(4)
    low, _ = th.relevance_posterior_information(8, 2, 0.0, 0.0, 1.0, 5_000, rng)  # no signal: pi = k/T
    high, _ = th.relevance_posterior_information(8, 2, 6.0, 1.0, 1.0, 5_000, rng)  # separable: pi in {0, 1}
    assert abs(low - 2 ** 2 / 8) < 1e-9 and high > 2 - 1e-3
    coefficients = th.first_step_coefficients(10, 2, 0.0, 0.0)
    assert abs(coefficients["gamma"] - 0.16) < 1e-12 and abs(coefficients["tau_mu"] - 0.16) < 1e-12


def test_c3_law_comparison_refutes_a_d_independent_prediction():
    kn, rng = ck.C3_KNOBS.with_(d=40), np.random.default_rng(5)
    draws = ck.low_dim_draws(kn, ck.C3_GAMMA, 5_000, rng)
    sim = np.array([ck.head_coordinates(ck.matched_filter(kn, ck.C3_GAMMA, 80, rng)) for _ in range(20)])
    sim = np.column_stack([sim, ck.head_errors(sim, draws, kn.sigma)])
    for kwargs, ok in (({}, True), ({"drop_noise_coordinates": True}, False)):
        pred = ck.predicted_heads(kn, ck.C3_GAMMA, 80, rng, 200, **kwargs)
        pred = np.column_stack([pred, ck.head_errors(pred, draws, kn.sigma)])
        assert ck.compare_to_law(sim, pred)["within"] is ok


def _without_timings(outcome) -> str:
    return json.dumps({"e": outcome.evidence, "c": outcome.control, "h": outcome.holds,
                       "r": outcome.control_refuted}, sort_keys=True, default=float)


def test_quick_check_is_deterministic_and_passes():
    torch.manual_seed(0)
    a = ck.check_c3(Context(seed=7, quick=True))
    torch.manual_seed(1)  # global torch state must not matter
    b = ck.check_c3(Context(seed=7, quick=True))
    assert _without_timings(a) == _without_timings(b)
    assert a.holds and a.control_refuted and a.evidence["quick"] is True
    c = ck.check_c3(Context(seed=8, quick=True))
    assert _without_timings(c) != _without_timings(a)


def test_training_claim_is_skipped_under_quick():
    out = ck.check_c4(Context(seed=0, quick=True))
    assert out.skipped_reason == "training claim; run without --quick"
