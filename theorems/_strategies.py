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


# --- random attention layers (Section 4 property tests) ---------------------------------------

NORMS = (None, "layernorm", "rmsnorm")


def _check_layer_args(d_model: int, n_heads: int, d_head: int, norm: str | None, d_mlp: int) -> None:
    _positive("d_model", d_model)
    _positive("n_heads", n_heads)
    _positive("d_head", d_head)
    if not isinstance(d_mlp, int) or isinstance(d_mlp, bool) or d_mlp < 0:
        raise InvalidArgument(f"d_mlp must be a non-negative integer, got {d_mlp!r}")
    if norm not in NORMS:
        raise InvalidArgument(f"norm must be one of {NORMS}, got {norm!r}")


def random_layer_weights(
    rng: np.random.Generator,
    d_model: int,
    n_heads: int,
    d_head: int,
    biases: bool = True,
    norm: str | None = None,
    d_mlp: int = 0,
) -> dict:
    """One pre-norm transformer block as plain arrays (TransformerLens shapes, x @ W):

        W_Q, W_K, W_V: (H, d, d_head)  W_O: (H, d_head, d)  b_Q, b_K, b_V: (H, d_head)  b_O: (d,)
        norm: None | "layernorm" | "rmsnorm", with ln1_w (d,) and ln1_b (d,) (zero for RMSNorm)
        W_in: (d, d_mlp)  W_out: (d_mlp, d)  b_in, b_out  (only when d_mlp > 0, with ln2_*)

    Entries are N(0, 1/fan_in) so that scores and outputs stay O(1); norm gains are 1 + N(0, 0.1^2).
    """
    _check_layer_args(d_model, n_heads, d_head, norm, d_mlp)

    def normal(*shape: int, fan_in: int) -> np.ndarray:
        return rng.normal(scale=1 / np.sqrt(fan_in), size=shape)

    def bias(*shape: int) -> np.ndarray:
        return rng.normal(scale=0.5, size=shape) if biases else np.zeros(shape)

    def norm_params() -> tuple[np.ndarray, np.ndarray]:
        w = 1 + rng.normal(scale=0.1, size=d_model)
        b = rng.normal(scale=0.1, size=d_model) if norm == "layernorm" else np.zeros(d_model)
        return w, b

    weights = {
        "W_Q": normal(n_heads, d_model, d_head, fan_in=d_model),
        "W_K": normal(n_heads, d_model, d_head, fan_in=d_model),
        "W_V": normal(n_heads, d_model, d_head, fan_in=d_model),
        "W_O": normal(n_heads, d_head, d_model, fan_in=n_heads * d_head),
        "b_Q": bias(n_heads, d_head), "b_K": bias(n_heads, d_head), "b_V": bias(n_heads, d_head),
        "b_O": bias(d_model),
        "norm": norm,
    }
    if norm is not None:
        weights["ln1_w"], weights["ln1_b"] = norm_params()
    if d_mlp:
        weights.update(W_in=normal(d_model, d_mlp, fan_in=d_model), W_out=normal(d_mlp, d_model, fan_in=d_mlp),
                       b_in=bias(d_mlp), b_out=bias(d_model))
        if norm is not None:
            weights["ln2_w"], weights["ln2_b"] = norm_params()
    return weights


def attention_layers(
    d_model: int = 8,
    max_heads: int = 4,
    d_head: int = 4,
    norms: tuple[str | None, ...] = NORMS,
    d_mlp: int = 0,
) -> st.SearchStrategy[dict]:
    """Random pre-norm blocks (see :func:`random_layer_weights`): 1..max_heads heads with an output
    projection, Linear biases on or off, a norm drawn from ``norms``. Shrinks by seed."""
    _check_layer_args(d_model, max_heads, d_head, None, d_mlp)
    if not norms or any(n not in NORMS for n in norms):
        raise InvalidArgument(f"norms must be a non-empty tuple drawn from {NORMS}, got {norms!r}")

    @st.composite
    def layers(draw) -> dict:
        heads = draw(st.integers(1, max_heads))
        biases = draw(st.booleans())
        norm = draw(st.sampled_from(norms))
        rng = np.random.default_rng(draw(seeds()))
        return random_layer_weights(rng, d_model, heads, d_head, biases, norm, d_mlp)

    return layers()


def prefix_vectors(d_model: int, max_length: int = 5, scale: float = 1.0) -> st.SearchStrategy[np.ndarray]:
    """Prefix vectors s_1..s_nS as an (n_S, d_model) array, n_S in 1..max_length."""
    _positive("d_model", d_model)
    _positive("max_length", max_length)
    if not scale > 0:
        raise InvalidArgument(f"scale must be positive, got {scale!r}")
    return st.integers(1, max_length).flatmap(lambda n: normal_arrays((n, d_model), scale))
