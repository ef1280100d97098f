"""The Oymak checks' faster formulations (issue 14) give the same numbers, bit for bit, as the
plain formulas they replace: every comparison here is exact (==), not approximate."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from verify.checks.oymak import c3


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
