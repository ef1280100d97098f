"""Hypothesis strategies for random instances (private; import from ``theorems.strategies``).

They produce plain data (strings, dicts, numpy arrays) so that ``theorems`` imports neither
``constructions`` nor ``verify``. Arguments are validated eagerly: a bad argument raises
``InvalidArgument`` when the strategy is built, not deep inside a test run.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument


def _alphabet(alphabet: str) -> str:
    if not isinstance(alphabet, str) or len(alphabet) < 2:
        raise InvalidArgument(f"alphabet must be a string of at least 2 symbols, got {alphabet!r}")
    if len(set(alphabet)) != len(alphabet):
        raise InvalidArgument("alphabet symbols must be distinct")
    return alphabet


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgument(f"{name} must be a positive integer, got {value!r}")
    return value


def targets(alphabet: str, max_length: int) -> st.SearchStrategy[str]:
    """Target strings of length 0..max_length over ``alphabet`` (Theorem 1)."""
    return st.text(alphabet=_alphabet(alphabet), min_size=0, max_size=_positive("max_length", max_length))


def total_maps(alphabet: str, response_length: int | None = None) -> st.SearchStrategy[dict[str, str]]:
    """Total maps over ``alphabet``: symbol -> symbol (Theorem 2), or symbol -> string of at
    most ``response_length`` symbols (long responses)."""
    symbols = _alphabet(alphabet)
    if response_length is None:
        value = st.sampled_from(symbols)
    else:
        value = st.text(alphabet=symbols, max_size=_positive("response_length", response_length))
    return st.fixed_dictionaries({s: value for s in symbols})


def pair_maps(alphabet: str) -> st.SearchStrategy[dict[str, str]]:
    """Total maps on ordered pairs: {"ab": "c", ...} for every pair of symbols (two-token)."""
    symbols = _alphabet(alphabet)
    return st.fixed_dictionaries({a + b: st.sampled_from(symbols) for a in symbols for b in symbols})


def seeds() -> st.SearchStrategy[int]:
    """Seeds for numpy generators."""
    return st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def _normal_arrays(draw, shape: tuple[int, ...], scale: float) -> np.ndarray:
    rng = np.random.default_rng(draw(seeds()))
    return rng.normal(scale=scale, size=shape)


def normal_arrays(shape: tuple[int, ...], scale: float = 1.0) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays with N(0, scale^2) entries, drawn through a seed (shrinks by seed)."""
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise InvalidArgument(f"shape must be a tuple of non-negative ints, got {shape!r}")
    if not scale > 0:
        raise InvalidArgument(f"scale must be positive, got {scale!r}")
    return _normal_arrays(tuple(shape), float(scale))
