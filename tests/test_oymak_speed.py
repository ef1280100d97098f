"""The Oymak checks' faster formulations (issue 14) give the same numbers, bit for bit, as the
plain formulas they replace: every comparison here is exact (==), not approximate."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import norm

from constructions.oymak import models
from constructions.oymak.data import MixtureKnobs, sample_labels_and_sets, sample_mixture, token_means
from theorems import oymak as th
from verify.checks.oymak import c1, c2, c3


def test_semi_closed_head_errors_equal_the_plain_norm_sf_formula():
    kn, rng = c3.C3_KNOBS.with_(d=20), np.random.default_rng(11)
    draws = c3.low_dim_draws(kn, c3.C3_GAMMA, 3_001, rng)
    heads = np.column_stack([rng.standard_normal((37, 2)), np.abs(rng.standard_normal(37))])
    heads[3, 2] = 0.0  # |P_perp v| = 0: the 1e-300 floor
    plain = np.array([norm.sf(draws["y"] * (draws["A"] * a + draws["B"] * b)
                              / (kn.sigma * draws["r"] * max(c, 1e-300))).mean() for a, b, c in heads])
    assert np.array_equal(c3.head_errors(heads, draws, kn.sigma), plain)
    vals = norm.sf(draws["y"] * (draws["A"] * heads[0, 0] + draws["B"] * heads[0, 1])
                   / (kn.sigma * draws["r"] * heads[0, 2]))
    assert c3.semi_closed_error(draws, *heads[0], kn.sigma) == (float(vals.mean()),
                                                               float(vals.std(ddof=1) / np.sqrt(len(vals))))


def test_sa_forward_in_blocks_equals_one_pass():
    rng = np.random.default_rng(12)
    X = rng.standard_normal((2 * models.SA_BLOCK + 37, 12, 6))
    W, v = 0.3 * rng.standard_normal((6, 6)), rng.standard_normal(6)
    scores = (X @ W) @ X.transpose(0, 2, 1)
    one_pass = (models.softmax(scores, axis=-1) @ (X @ v)[:, :, None])[:, :, 0].mean(axis=1)
    assert np.array_equal(models.sa_forward(X, W, v), one_pass)


def test_sample_mixture_in_place_equals_means_plus_noise():
    kn = MixtureKnobs(T=7, k=2, d=5, Q=1.5, M=0.7, sigma=1.3, c=0.4, rho=0.2)
    s = sample_mixture(kn, 500, np.random.default_rng(13))
    rng = np.random.default_rng(13)
    y, R = sample_labels_and_sets(kn, 500, rng)
    assert np.array_equal(s.X, token_means(kn, y, R) + kn.sigma * rng.standard_normal((500, 7, 5)))


def test_uniform_fit_with_its_mean_token_computed_once_equals_the_plain_loss():
    rng = np.random.default_rng(14)
    X, y = rng.standard_normal((300, 8, 5)), rng.choice([-1.0, 1.0], 300)
    inits = [{"v": 0.1 * rng.standard_normal(5)} for _ in range(2)]
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    params = {"v": torch.nn.Parameter(torch.as_tensor(np.stack([i["v"] for i in inits])))}
    opt = torch.optim.Adam([params["v"]], lr=0.05)
    with models.single_thread():
        for _ in range(20):
            opt.zero_grad()
            torch.nn.functional.softplus(-yt * (Xt.mean(dim=1) @ params["v"].T).T).mean(dim=-1).sum().backward()
            opt.step()
    fitted = models.fit_restarts_adam("UNIF", X, y, inits, 20, 0.05)
    assert all(np.array_equal(f["v"], params["v"][r].detach().numpy()) for r, f in enumerate(fitted))


def test_quadrature_density_equals_scipy_norm_pdf():
    for x in np.random.default_rng(15).standard_normal(2_000) * 6:
        assert th._pdf(float(x)) == norm.pdf(float(x))
    kn = c1.CLOSED_FORM_KNOBS[1]
    p_rel = th.hard_selection_relevant_probability(kn.T, kn.k, kn.Q, kn.sigma, kn.rho)
    assert th.hard_selection_error(kn.T, kn.k, kn.Q, kn.M, kn.sigma, kn.c, kn.rho, p_rel) == \
        th.hard_selection_error(kn.T, kn.k, kn.Q, kn.M, kn.sigma, kn.c, kn.rho)


def test_sa_restart_forward_and_gradients_equal_the_einsum_formulation():
    rng = np.random.default_rng(16)
    for R, n, T, d, scale in ((3, 400, 12, 6, 0.5), (1, 300, 8, 64, 0.05), (2, 77, 5, 3, 2.0)):
        X = torch.as_tensor(rng.standard_normal((n, T, d)))
        y = torch.as_tensor(rng.choice([-1.0, 1.0], n))
        start = {"W": scale * rng.standard_normal((R, d, d)), "v": rng.standard_normal((R, d))}
        results = []
        for fast in (True, False):
            params = {k: torch.nn.Parameter(torch.as_tensor(v.copy())) for k, v in start.items()}
            with models.single_thread():
                if fast:
                    f = models.restart_forward("SA", params, X)
                else:  # the einsum formulation it replaces
                    XW = torch.matmul(X.reshape(n * T, d), params["W"]).reshape(-1, n, T, d)
                    Xv = (X.reshape(n * T, d) @ params["v"].T).T.reshape(-1, n, T)
                    f = torch.einsum("rnij,rnj->rn", torch.softmax(torch.einsum("rnid,njd->rnij", XW, X), dim=-1), Xv) / T
                torch.nn.functional.softplus(-y * f).mean(dim=-1).sum().backward()
            results.append((f.detach(), params["W"].grad, params["v"].grad))
        assert all(torch.equal(a, b) for a, b in zip(*results))


def test_token_covariances_equal_the_einsum_of_the_centred_tokens():
    rng = np.random.default_rng(17)
    for shape in ((25, 300, 10, 3), (4, 7, 12, 3), (2, 5, 3, 3)):
        x = rng.standard_normal(shape)
        xc = x - x.mean(axis=2, keepdims=True)
        plain = np.einsum("cntk,cntl->cnkl", xc, xc) / shape[2]
        assert np.array_equal(c2.token_covariances(np.ascontiguousarray(x.transpose(3, 2, 0, 1))), plain)


def test_low_dim_draws_reuse_the_context_coordinates():
    kn, rng = c3.C3_KNOBS, np.random.default_rng(18)
    d = c3.low_dim_draws(kn, c3.C3_GAMMA, 999, np.random.default_rng(18))
    y, R = sample_labels_and_sets(kn, 999, rng)
    alpha, beta = np.where(R, 1.0, kn.rho), np.where(R, 1.0, -kn.c) * y[:, None]
    w = kn.sigma * rng.standard_normal(alpha.shape)
    s = models.softmax(c3.C3_GAMMA * (alpha * kn.Q + w), axis=1)
    assert np.array_equal(d["A"], (s * (alpha * kn.Q + w)).sum(1)) and np.array_equal(d["r"], np.sqrt((s ** 2).sum(1)))
    assert np.array_equal(d["B"], (s * beta * kn.M).sum(1))


def test_oracle_risk_with_cached_nodes_equals_the_plain_quadrature():
    from scipy.special import gammaln, roots_genlaguerre, roots_hermitenorm

    for N, k, d, Q, sigma in ((1600, 2, 16, 2.0, 1.0), (200, 3, 5, 1.0, 0.7), (1600, 2, 16, 1.5, 1.0)):
        s2 = sigma ** 2 / (k * N)
        g, wg = roots_hermitenorm(80)
        u, wu = roots_genlaguerre(80, (d - 1) / 2 - 1)
        wg, wu = wg / wg.sum(), wu / np.exp(gammaln((d - 1) / 2))
        val = s2 * (2 * u)[None, :] / ((Q + np.sqrt(s2) * g[:, None]) ** 2 + s2 * (2 * u)[None, :])
        assert th.oracle_direction_risk(N, k, d, Q, sigma) == float((wg[:, None] * wu[None, :] * val).sum())
