"""Section 4 identities as properties of the one forward pass, on hypothesis-drawn blocks
(multi-head with W_O, Linear biases, LayerNorm/RMSNorm, RoPE, several prefix lengths)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from constructions.errors import PromptproofError, SpecError
from constructions.forward import PrefixKV, forward
from constructions.layers import spec_from_layers
from constructions.prefix import prefix_from_vectors, prefix_tuned_forward
from constructions.spec import Norm
from constructions.torch_module import SpecTransformer
from theorems.strategies import attention_layers, normal_arrays, prefix_vectors, random_layer_weights
from verify.checks.petrov_sec4 import (
    CONTROL_MIN_ERROR,
    D_MODEL,
    MAX_CONTENT,
    TOLERANCE,
    Instance,
    content_scaling_errors,
    multi_prefix_errors,
    output_bias_errors,
    soft_prompt_errors,
)

contents = st.integers(1, MAX_CONTENT).flatmap(lambda n: normal_arrays((1, n, D_MODEL)))


def instance(layers, x, s, rope) -> Instance:
    return Instance(spec_from_layers(layers, rotary_base=10_000.0 if rope else None), x, s, "hypothesis")


@settings(max_examples=40, deadline=None)
@given(layer=attention_layers(d_model=D_MODEL), x=contents, s=prefix_vectors(D_MODEL, 5), rope=st.booleans())
def test_content_scaling_and_the_convex_bias_hold_for_any_block(layer, x, s, rope):
    item = instance([layer], x, s, rope)
    assert content_scaling_errors(item)[0] <= TOLERANCE
    claim, simplex, _ = multi_prefix_errors(item)
    assert claim <= TOLERANCE and simplex <= TOLERANCE


@settings(max_examples=40, deadline=None)
@given(layer=attention_layers(d_model=D_MODEL), x=contents, s=prefix_vectors(D_MODEL, 1), rope=st.booleans())
def test_one_prefix_vector_adds_one_fixed_vector_per_head(layer, x, s, rope):
    per_head, block, *_ = output_bias_errors(instance([layer], x, s, rope))
    assert per_head <= TOLERANCE and block <= TOLERANCE


@settings(max_examples=25, deadline=None)
@given(layers=st.lists(attention_layers(d_model=D_MODEL, d_mlp=16), min_size=2, max_size=2),
       x=contents, s=prefix_vectors(D_MODEL, 5), rope=st.booleans())
def test_soft_prompt_equals_prefix_in_layer_1_for_any_stack(layers, x, s, rope):
    assert soft_prompt_errors(instance(layers, x, s, rope))[0] <= TOLERANCE


def test_a_prefix_changes_layer_2_unlike_a_soft_prompt():
    """The control as a property of generic weights: several content tokens, layer 2 differs."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        layers = [random_layer_weights(rng, D_MODEL, 2, 4, True, "layernorm", 16) for _ in range(2)]
        item = instance(layers, rng.normal(size=(1, 6, D_MODEL)), rng.normal(size=(2, D_MODEL)), rope=True)
        assert soft_prompt_errors(item)[1] > CONTROL_MIN_ERROR


def test_torch_module_matches_the_numpy_forward_with_norms_rope_and_a_prefix():
    rng = np.random.default_rng(3)
    layers = [random_layer_weights(rng, D_MODEL, 2, 4, True, norm, 16) for norm in ("layernorm", "rmsnorm")]
    spec = spec_from_layers(layers, rotary_base=500.0)
    x, s = rng.normal(size=(2, 5, D_MODEL)), rng.normal(size=(3, D_MODEL))
    prefix = [prefix_from_vectors(spec, 0, s), None]
    positions = 3 + np.arange(5)
    expected = forward(spec, x, prefix=prefix, positions=positions)
    got = SpecTransformer(spec).residual(torch.from_numpy(x), prefix, torch.from_numpy(positions))
    assert np.max(np.abs(got.detach().numpy() - expected)) <= 1e-12


def test_the_prefix_is_attended_by_every_query_and_the_content_stays_causal():
    rng = np.random.default_rng(0)
    spec = spec_from_layers([random_layer_weights(rng, D_MODEL, 1, 4)])
    cache = {}
    prefix_tuned_forward(spec, rng.normal(size=(1, 4, D_MODEL)), [rng.normal(size=(2, D_MODEL))], cache=cache)
    pattern = cache["blocks.0.attn.pattern"][0, 0]  # (n, n_S + n)
    assert pattern.shape == (4, 6)
    assert np.all(pattern[:, :2] > 0)
    assert np.all(pattern[:, 2:][np.triu_indices(4, 1)] == 0)


def test_bad_prefixes_and_norms_are_refused_with_a_clear_error():
    rng = np.random.default_rng(0)
    spec = spec_from_layers([random_layer_weights(rng, D_MODEL, 2, 4)])
    x = rng.normal(size=(1, 3, D_MODEL))
    with pytest.raises(PromptproofError, match="one entry per block"):
        forward(spec, x, prefix=[None, None])
    with pytest.raises(PromptproofError, match="keys expected shape"):
        forward(spec, x, prefix=[PrefixKV(np.zeros((3, 1, 4)), np.zeros((3, 1, 4)))])
    with pytest.raises(PromptproofError, match="prefix vectors"):
        prefix_from_vectors(spec, 0, np.zeros((2, D_MODEL + 1)))
    with pytest.raises(SpecError, match="unknown norm"):
        Norm.build(D_MODEL, "batchnorm")
    with pytest.raises(SpecError, match="RMSNorm has no bias"):
        Norm.build(D_MODEL, "rmsnorm", b=np.ones(D_MODEL))
    odd = random_layer_weights(rng, D_MODEL, 1, 3)
    with pytest.raises(SpecError, match="even d_head"):
        spec_from_layers([odd], rotary_base=10_000.0)


@pytest.mark.parametrize("bad", [dict(d_model=0), dict(max_heads=-1), dict(norms=("groupnorm",)), dict(norms=())])
def test_layer_strategy_arguments_are_validated_eagerly(bad):
    with pytest.raises(InvalidArgument):
        attention_layers(**bad)


def test_random_layer_weights_have_the_documented_shapes():
    w = random_layer_weights(np.random.default_rng(0), 6, 3, 2, True, "layernorm", 5)
    assert w["W_Q"].shape == (3, 6, 2) and w["W_O"].shape == (3, 2, 6) and w["b_V"].shape == (3, 2)
    assert w["W_in"].shape == (6, 5) and w["ln1_w"].shape == w["ln2_b"].shape == (6,)
    assert np.all(random_layer_weights(np.random.default_rng(0), 6, 1, 2, biases=False)["b_Q"] == 0)


def test_the_controls_can_stand_while_the_identities_hold():
    """The controls are not implied by the pass condition: a prefix that draws almost no attention
    (every query is the same vector q0, the prefix key is -100 q0 / |q0|^2, so alpha ~ e^-50)
    satisfies the identities exactly, yet dropping the (1 - alpha) factor or the bias term is then
    invisible -- those controls would stand on such instances."""
    rng = np.random.default_rng(2)
    weights = random_layer_weights(rng, D_MODEL, 1, 4, True, None)
    weights["W_Q"] = np.zeros_like(weights["W_Q"])  # every query is b_Q
    q0 = weights["b_Q"][0]
    target = -100 * q0 / (q0 @ q0) - weights["b_K"][0]  # W_K^T s = target  ->  key = -100 q0 / |q0|^2
    s = np.linalg.lstsq(weights["W_K"][0].T, target, rcond=None)[0][None, :]
    item = instance([weights], rng.normal(size=(1, 5, D_MODEL)), s, rope=False)
    claim, control, _ = content_scaling_errors(item)
    per_head, block, dropped, *_ = output_bias_errors(item)
    assert claim <= TOLERANCE and per_head <= TOLERANCE and block <= TOLERANCE
    assert control < CONTROL_MIN_ERROR and dropped < CONTROL_MIN_ERROR
