"""Oymak formalization: models (numpy vs torch parity, symmetries, gradients), data, strategies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from constructions.oymak.data import MixtureKnobs, digit_pools, digit_sequences, sample_mixture
from constructions.oymak.models import (MODEL_NAMES, AttentionModel, fit_logistic, fit_restarts, fit_restarts_adam, forward,
                                        lpa_forward, pa_forward, param_shapes, restart_forward, sa_forward)
from theorems import oymak as th
from theorems._oymak_strategies import attention_params, mixture_knobs, token_batches

# float64 forward passes of O(1)-O(10) entries over <= 8 tokens: rounding ~1e-14.
PARITY_TOL = 1e-10


@settings(max_examples=40, deadline=None)
@given(token_batches(), st.data())
def test_numpy_torch_parity(X, data):
    params = data.draw(attention_params(X.shape[-1]))
    for name in MODEL_NAMES:
        model = AttentionModel(name, X.shape[-1], init=params)
        with torch.no_grad():
            ft = model(torch.as_tensor(X)).numpy()
        assert np.abs(ft - forward(name, params, X)).max() <= PARITY_TOL * (1 + np.abs(ft).max())


@settings(max_examples=40, deadline=None)
@given(token_batches(), st.data())
def test_symmetries(X, data):
    prm = data.draw(attention_params(X.shape[-1]))
    p, v, W = prm["p"], prm["v"], prm["W"]
    assert np.allclose(lpa_forward(-X, p, v), lpa_forward(X, p, v), atol=1e-12)
    assert np.allclose(sa_forward(-X, W, v), -sa_forward(X, W, v), atol=1e-12)
    perm = np.random.default_rng(0).permutation(X.shape[1])
    assert np.allclose(pa_forward(X[:, perm], p, v), pa_forward(X, p, v), atol=1e-12)


def test_pa_is_not_even():
    X = np.random.default_rng(1).normal(size=(5, 6, 3))
    p, v = np.array([1.0, -2.0, 0.5]), np.array([0.3, 1.0, -1.0])
    assert np.abs(pa_forward(-X, p, v) - pa_forward(X, p, v)).max() > 1e-3


@settings(max_examples=25, deadline=None)
@given(token_batches(max_n=1), st.data())
def test_pa_gradients_match_formula(X, data):
    prm = data.draw(attention_params(X.shape[-1]))
    x, p, v = X[0], prm["p"], prm["v"]
    s = np.exp(x @ p - (x @ p).max())
    s /= s.sum()
    model = AttentionModel("PA", X.shape[-1], init=prm)
    model(torch.as_tensor(X)).sum().backward()
    assert np.allclose(model.v.grad.numpy(), x.T @ s, atol=1e-10)
    assert np.allclose(model.p.grad.numpy(), x.T @ (np.diag(s) - np.outer(s, s)) @ x @ v, atol=1e-10)


def test_sympy_proofs_and_refutations():
    assert all(th.prove_symmetries().values())
    assert all(th.refute_symmetries().values())
    assert all(th.prove_gradients().values())
    assert all(th.refute_gradients().values())
    assert all(th.prove_first_steps_c0().values())


@settings(max_examples=20, deadline=None)
@given(mixture_knobs())
def test_generator_structure(knobs):
    kn = MixtureKnobs(**knobs)
    s = sample_mixture(kn, 50, np.random.default_rng(0))
    assert s.X.shape == (50, kn.T, kn.d) and (s.R.sum(axis=1) == kn.k).all()
    rel = s.means[s.R]
    assert np.allclose(rel[:, 0], kn.Q) and np.allclose(np.abs(rel[:, 1]), kn.M)
    assert np.allclose(s.means[~s.R][:, 0], kn.rho * kn.Q)


def test_generator_is_seeded():
    a = sample_mixture(MixtureKnobs(), 10, np.random.default_rng(3))
    b = sample_mixture(MixtureKnobs(), 10, np.random.default_rng(3))
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)


def test_bad_knobs_and_strategy_args_rejected():
    with pytest.raises(ValueError):
        MixtureKnobs(T=4, k=5)
    with pytest.raises(ValueError):
        MixtureKnobs(d=1)
    with pytest.raises(InvalidArgument):
        mixture_knobs(max_T=1)
    with pytest.raises(InvalidArgument):
        token_batches(scale=0)
    with pytest.raises(InvalidArgument):
        attention_params(0)


def test_digit_sequences():
    pools = digit_pools()
    seq = digit_sequences(pools["train"], 20, 6, 2, np.random.default_rng(0), (3, 8))
    assert seq.X.shape == (20, 6, 64)
    rel_digits = np.where(seq.y[:, None] > 0, 3, 8)
    assert (seq.digits[seq.R].reshape(20, 2) == rel_digits).all()
    assert not np.isin(seq.digits[~seq.R], (3, 8)).any()


@settings(max_examples=20, deadline=None)
@given(token_batches(), st.integers(1, 3), st.data())
def test_restart_forward_equals_each_model(X, restarts, data):
    params = [data.draw(attention_params(X.shape[-1])) for _ in range(restarts)]
    for name in MODEL_NAMES:
        keys = param_shapes(name, X.shape[-1])
        stacked = {key: torch.as_tensor(np.stack([p[key] for p in params])) for key in keys}
        with torch.no_grad():
            batched = restart_forward(name, stacked, torch.as_tensor(X)).numpy()
        for r, p in enumerate(params):
            ref = forward(name, p, X)
            assert np.abs(batched[r] - ref).max() <= PARITY_TOL * (1 + np.abs(ref).max())


def test_batched_adam_restarts_follow_their_single_trajectories():
    """Adam is elementwise: training restarts together gives each the trajectory it has alone."""
    rng = np.random.default_rng(4)
    kn = MixtureKnobs(T=5, k=2, d=4, Q=2.0)
    s = sample_mixture(kn, 200, rng)
    inits = [{"W": 0.3 * rng.standard_normal((4, 4)), "v": 0.3 * rng.standard_normal(4)} for _ in range(3)]
    together = fit_restarts_adam("SA", s.X, s.y, inits, 40, 0.05)
    for init, got in zip(inits, together):
        model = AttentionModel("SA", kn.d, init=init)
        fit_logistic(model, s.X, s.y, 40, 0.05)
        alone = model.numpy_params()
        assert all(np.abs(alone[key] - got[key]).max() <= 1e-9 for key in alone)


def test_lbfgs_restarts_reach_stationary_points():
    """Each restart of the joint L-BFGS ends where its own loss gradient is ~0 (separable sum)."""
    rng = np.random.default_rng(5)
    kn = MixtureKnobs(T=6, k=2, d=3, Q=2.0)
    s = sample_mixture(kn, 400, rng)
    inits = [{"p": 0.1 * rng.standard_normal(3), "v": 0.1 * rng.standard_normal(3)} for _ in range(3)]
    for params in fit_restarts("PA", s.X, s.y, inits, 200):
        model = AttentionModel("PA", kn.d, init=params)
        torch.nn.functional.softplus(-torch.as_tensor(s.y) * model(torch.as_tensor(s.X))).mean().backward()
        assert max(float(model.p.grad.abs().max()), float(model.v.grad.abs().max())) <= 1e-6


def test_digit_pools_are_disjoint_and_the_test_pool_does_not_move():
    plain, split = digit_pools(), digit_pools(valid_fraction=0.25)
    images = {key: {row.tobytes() for row in split[key][0]} for key in ("train", "valid", "test")}
    assert not (images["train"] & images["valid"]) and not (images["train"] & images["test"])
    assert not (images["valid"] & images["test"])
    assert np.array_equal(plain["test"][0], split["test"][0])
    assert len(split["train"][1]) + len(split["valid"][1]) == len(plain["train"][1])
    with pytest.raises(ValueError):
        digit_pools(valid_fraction=1.0)
