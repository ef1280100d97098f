"""Hypothesis strategies for the Oymak et al. formalization (private; re-exported by
``theorems.strategies``). Plain data only (dicts, numpy arrays): ``theorems`` imports neither
``constructions`` nor ``verify``. Arguments are validated eagerly (``InvalidArgument``).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from theorems._strategies import seeds


def _int_range(name: str, lo: int, hi: int, minimum: int) -> tuple[int, int]:
    for value in (lo, hi):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise InvalidArgument(f"{name} bounds must be integers >= {minimum}, got {lo!r}, {hi!r}")
    if lo > hi:
        raise InvalidArgument(f"{name}: lower bound {lo} exceeds upper bound {hi}")
    return lo, hi


def mixture_knobs(max_T: int = 16, max_d: int = 8, max_Q: float = 4.0, max_c: float = 2.0,
                  overlap: bool = True) -> st.SearchStrategy[dict]:
    """Knob dicts {T, k, d, Q, M, sigma, c, rho} of the contextual mixture (notes/oymak.md):
    T in 2..max_T, k in 1..T, d in 2..max_d, Q in [0, max_Q], M in [0, 2], sigma in [0.2, 2],
    c in [0, max_c], rho in [-1, 1] (0 when ``overlap`` is False)."""
    _int_range("max_T", 2, max_T, 2)
    _int_range("max_d", 2, max_d, 2)
    if not (max_Q >= 0 and max_c >= 0):
        raise InvalidArgument("max_Q and max_c must be non-negative")

    @st.composite
    def knobs(draw) -> dict:
        T = draw(st.integers(2, max_T))
        finite = dict(allow_nan=False, allow_infinity=False)
        return {"T": T, "k": draw(st.integers(1, T)), "d": draw(st.integers(2, max_d)),
                "Q": draw(st.floats(0, max_Q, **finite)), "M": draw(st.floats(0, 2, **finite)),
                "sigma": draw(st.floats(0.2, 2, **finite)), "c": draw(st.floats(0, max_c, **finite)),
                "rho": draw(st.floats(-1, 1, **finite)) if overlap else 0.0}

    return knobs()


def token_batches(max_n: int = 4, max_T: int = 8, max_d: int = 6, scale: float = 1.0) -> st.SearchStrategy[np.ndarray]:
    """Batches of token sequences X, shape (n, T, d), float64 N(0, scale^2), drawn through a seed."""
    _int_range("max_n", 1, max_n, 1)
    _int_range("max_T", 1, max_T, 1)
    _int_range("max_d", 1, max_d, 1)
    if not scale > 0:
        raise InvalidArgument(f"scale must be positive, got {scale!r}")

    @st.composite
    def batches(draw) -> np.ndarray:
        shape = (draw(st.integers(1, max_n)), draw(st.integers(1, max_T)), draw(st.integers(1, max_d)))
        return np.random.default_rng(draw(seeds())).normal(scale=scale, size=shape)

    return batches()


def attention_params(d: int, scale: float = 1.0) -> st.SearchStrategy[dict]:
    """Parameters {"p": (d,), "v": (d,), "W": (d, d)} for the prompt- and self-attention models."""
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        raise InvalidArgument(f"d must be a positive integer, got {d!r}")
    if not scale > 0:
        raise InvalidArgument(f"scale must be positive, got {scale!r}")

    @st.composite
    def params(draw) -> dict:
        rng = np.random.default_rng(draw(seeds()))
        return {"p": rng.normal(scale=scale, size=d), "v": rng.normal(scale=scale, size=d),
                "W": rng.normal(scale=scale / np.sqrt(d), size=(d, d))}

    return params()
