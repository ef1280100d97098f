"""Oymak c2 (first GD steps, the exact 3-coordinate law of GD's prompt, the rate check and the
near-optimality decision, oracle baselines), the c3 law comparison, and the quick-mode
behaviour and determinism of the oymak checks."""

from __future__ import annotations

import json

import numpy as np
import torch
from scipy.stats import ks_2samp

from constructions.oymak.data import MixtureKnobs, sample_mixture
from theorems import oymak as th
from verify.checks.oymak import c2, c3, c4
from verify.protocol import Finding, Skipped, verdict
from verify.registry import QUICK_SKIP, Context

# float64 sums of a few thousand O(1) terms: rounding ~1e-13.
FLOAT_TOL = 1e-10


def test_vectorised_gd_prompts_equal_autograd_steps():
    kn = MixtureKnobs(T=6, k=2, d=5, Q=2.0, M=1.5)
    rng = np.random.default_rng(0)
    s1, s2 = sample_mixture(kn, 300, rng), sample_mixture(kn, 300, rng)
    auto = c2.gd_two_steps_autograd(s1.X, s1.y, s2.X, s2.y, np.ones(kn.d))
    vec = c2.gd_prompts(s1.X[None], s1.y[None], s2.X[None], s2.y[None])[0]
    assert np.abs(auto["p2"] - vec).max() <= FLOAT_TOL
    assert np.array_equal(auto["p_step1"], np.zeros(kn.d))  # from v = 0 the prompt cannot move


def test_three_coordinate_law_equals_full_gd_in_law():
    """The reduction is exact: KS tests of sin^2, p2.q_hat and |p2|^2 (general c, rho), and the
    nested-n / nested-d draws have the right marginals (same law as separate draws)."""
    rng = np.random.default_rng(1)
    kn = MixtureKnobs(T=6, k=2, d=7, Q=1.5, M=1.5, c=0.3, rho=0.4)
    full = c2.full_gd_sin2(kn, 150, 1_200, rng)
    law = c2.gd_prompt_law(kn, (60, 150), (5, 7), 4_000, rng)
    for key in ("sin2", "p_q", "norm2"):
        assert ks_2samp(full[key], law[key][:, 1, 1]).pvalue > 1e-3
    small = c2.full_gd_sin2(kn.with_(d=5), 60, 1_200, rng)
    assert ks_2samp(small["sin2"], law["sin2"][:, 0, 0]).pvalue > 1e-3


def test_wrong_reductions_are_detected_by_the_same_test():
    """Dropping the d - 3 chi^2 coordinates (a law that ignores d) is rejected by the KS test."""
    rng = np.random.default_rng(2)
    kn = MixtureKnobs(T=6, k=2, d=12, Q=1.5, M=1.5)
    full = c2.full_gd_sin2(kn, 150, 800, rng)
    wrong = c2.gd_prompt_law(kn.with_(d=4), (150,), (4,), 4_000, rng)  # the law of d = 4 used for d = 12
    assert ks_2samp(full["sin2"], wrong["sin2"][:, 0, 0]).pvalue < 1e-6


def test_first_steps_match_closed_form_and_uncentred_control_is_refuted():
    rng = np.random.default_rng(1)
    kn = c2.C2_MC_KNOBS[1]  # c, rho > 0: the general coefficients
    mc = c2.first_steps_monte_carlo(kn, 12, 1_500, rng)
    thr = c2.t_threshold(12, 3 * kn.d)
    good = c2.first_step_predictions(kn, mc["v_probe"])
    bad = c2.first_step_predictions(kn, mc["v_probe"], centred=False)
    assert all(c2.match_means(mc[key], good[key], thr)["within"] for key in ("v1", "p2", "probe"))
    assert not c2.match_means(mc["probe"], bad["probe"], thr)["within"]


def synthetic_replicates(K: np.ndarray, relative_sd: float, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Per-replicate K(d) drawn around the true K with a given relative spread."""
    return K[None, :] * (1 + relative_sd * rng.standard_normal((reps, len(K))))


def test_rate_check_refutes_0_8_K_only_when_the_sweep_is_precise():
    """The control 'rate_K_times_0.8' can flip while the pass condition holds: with precise
    replicates the true K passes and 0.8 K fails; with the old sweep's precision (SE/K ~ 6%) the
    true K passes and so does 0.8 K."""
    dims = (8, 16, 32, 64, 128)
    derived = [th.gd_prompt_alignment_constant(10, 2, d, 2.0, 1.5, 1.0) for d in dims]
    K = np.array([r["K"] for r in derived])
    slope_w = c2.slope_weights(dims)
    rng = np.random.default_rng(3)
    for relative_sd, reps, wrong_refuted in ((0.5, 400, True), (0.6, 12, False)):
        K_rep = synthetic_replicates(K, relative_sd, reps, rng)
        slope_rep = K_rep @ slope_w
        assert c2.rate_check(K_rep, slope_rep, K, derived[0]["slope_in_d"])["passes"]
        wrong = c2.rate_check(K_rep, slope_rep, K, derived[0]["slope_in_d"], scale=0.8)
        assert (not wrong["passes"]) is wrong_refuted


def test_fit_weights_recover_the_expansion_and_the_slope():
    ns, dims = (800, 1600, 3200, 6400), (8, 16, 32)
    n = np.array(ns, float)
    assert abs(c2.intercept_weights(ns) @ (n * (7.0 / n + 300.0 / n ** 2)) - 7.0) < 1e-9
    assert abs(c2.slope_weights(dims) @ (0.55 * (np.array(dims) - 2) + 11.0) - 0.55) < 1e-12


def test_near_optimality_decision_has_three_outcomes():
    rng = np.random.default_rng(4)
    assert c2.near_optimality_decision(8.75 + 0.5 * rng.standard_normal(400), 10.0)["state"] == "below"
    assert c2.near_optimality_decision(16.5 + 0.5 * rng.standard_normal(400), 10.0)["state"] == "above"
    assert c2.near_optimality_decision(9.5 + 3.0 * rng.standard_normal(40), 10.0)["state"] == "undecided"


def test_near_optimal_bound_comes_from_the_knobs_and_the_derived_ratio_crosses_it():
    kn = c2.SWEEP_BASE
    assert c2.near_optimal_bound(kn) == 2 * kn.T / kn.k == 10.0
    assert th.gd_oracle_ratio_limit(kn.T, kn.k, kn.M, kn.sigma) < 10.0 < th.gd_oracle_ratio_limit(kn.T, kn.k, 1.0, 1.0)
    # kappa_inf is the limit of 2 K(d) / ((d - 1) sigma^2 / (k Q^2))
    big = th.gd_prompt_alignment_constant(kn.T, kn.k, 10 ** 7, kn.Q, kn.M, kn.sigma)["K"]
    assert abs(2 * big / ((10 ** 7 - 1) / (kn.k * kn.Q ** 2)) / th.gd_oracle_ratio_limit(kn.T, kn.k, kn.M, kn.sigma) - 1) < 1e-5


def test_mean_token_estimator_pays_exactly_T_over_k():
    """The R-agnostic baseline behind the bound: the mean token's direction error over N
    sequences is (T/k) times the oracle's, to leading order (Monte Carlo)."""
    T, k, d, Q, N = 10, 2, 6, 2.0, 400
    rng = np.random.default_rng(5)
    zeta = k / T
    g = rng.standard_normal((200_000, d)) / np.sqrt(T * N)  # mean over N sequences of xbar's noise
    g[:, 0] += zeta * Q
    sin2 = 1 - g[:, 0] ** 2 / (g ** 2).sum(axis=1)
    oracle = (d - 1) / (k * Q ** 2 * N)
    assert abs(sin2.mean() / oracle / th.relevance_agnostic_worst_ratio(T, k) - 1) < 0.03


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
    kn, rng = c3.C3_KNOBS.with_(d=40), np.random.default_rng(5)
    draws = c3.low_dim_draws(kn, c3.C3_GAMMA, 5_000, rng)
    sim = np.array([c3.head_coordinates(c3.matched_filter(kn, c3.C3_GAMMA, 80, rng)) for _ in range(20)])
    sim = np.column_stack([sim, c3.head_errors(sim, draws, kn.sigma)])
    for kwargs, ok in (({}, True), ({"drop_noise_coordinates": True}, False)):
        pred = c3.predicted_heads(kn, c3.C3_GAMMA, 80, rng, 200, **kwargs)
        pred = np.column_stack([pred, c3.head_errors(pred, draws, kn.sigma)])
        assert c3.compare_to_law(sim, pred)["within"] is ok


def _without_timings(finding: Finding) -> str:
    return json.dumps({"e": finding.evidence.to_json(), "c": [c.to_json() for c in finding.controls]},
                      sort_keys=True, default=float)


def test_quick_check_is_deterministic_and_passes():
    torch.manual_seed(0)
    a = c3.check_c3(Context(seed=7, quick=True))
    torch.manual_seed(1)  # global torch state must not matter
    b = c3.check_c3(Context(seed=7, quick=True))
    assert _without_timings(a) == _without_timings(b)
    assert verdict(a).status == "pass" and a.evidence.details["quick"] is True
    c = c3.check_c3(Context(seed=8, quick=True))
    assert _without_timings(c) != _without_timings(a)


def test_c2_quick_passes_and_refutes_its_controls():
    finding = c2.check_c2(Context(seed=0, quick=True))
    assert verdict(finding).status == "pass", verdict(finding).reasons
    assert {c.name for c in finding.controls} == {"uncentred_p_step", "rate_K_times_0.8", "wrong_gradient_formulas",
                                                  "near_optimality_at_weak_signal"}


def test_training_claim_is_skipped_under_quick():
    out = c4.check_c4(Context(seed=0, quick=True))
    assert isinstance(out, Skipped) and out.reason == QUICK_SKIP


def test_c3_controls_can_fail_while_the_law_comparison_passes():
    """With two simulated heads at n/d = 16 the comparison accepts the right law AND the
    d-independent one: the control's refutation depends on the sizes, not on the pass condition."""
    kn, rng = c3.C3_KNOBS.with_(d=40), np.random.default_rng(6)
    n = 16 * kn.d
    draws = c3.low_dim_draws(kn, c3.C3_GAMMA, 5_000, rng)
    sim = np.array([c3.head_coordinates(c3.matched_filter(kn, c3.C3_GAMMA, n, rng)) for _ in range(2)])
    sim = np.column_stack([sim, c3.head_errors(sim, draws, kn.sigma)])
    verdicts = []
    for kwargs in ({}, {"drop_noise_coordinates": True}):
        pred = c3.predicted_heads(kn, c3.C3_GAMMA, n, rng, 200, **kwargs)
        verdicts.append(c3.compare_to_law(sim, np.column_stack([pred, c3.head_errors(pred, draws, kn.sigma)]))["within"])
    assert verdicts == [True, True]
