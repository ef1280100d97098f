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
    ORACLE_TOLERANCE,
    PARITY_TOLERANCE,
    TOLERANCE,
    Instance,
    content_scaling_errors,
    implementation_checks,
    multi_prefix_errors,
    oracle_attention_pattern,
    oracle_error,
    output_bias_errors,
    random_instances,
    soft_prompt_errors,
    torch_parity_error,
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


def _one_of_each(count: int = 48) -> list[Instance]:
    return list(random_instances(np.random.default_rng(7), (1, 2, 5), count=count))


def test_the_forward_agrees_with_torch_and_the_oracle_on_every_architecture_option():
    items = _one_of_each()
    checks = implementation_checks(items)
    assert checks["holds"]
    assert checks["torch_parity"]["worst_abs_error"] <= PARITY_TOLERANCE
    assert checks["oracle"]["worst_abs_error"] <= ORACLE_TOLERANCE and checks["oracle"]["instances"] == 48
    # every option met both comparisons: heads 1-4, biases on/off, three norms, RoPE on/off
    assert set(checks["oracle"]["worst_by_architecture"]) == {
        "H=1", "H=2", "H=3", "H=4", "biases", "no-biases", "no-norm", "layernorm", "rmsnorm", "rope", "no-rope"}
    assert max(np.max(np.abs(i.x)) for i in items) > 0.5  # real inputs, not zeros


def test_the_oracle_sees_a_wrong_rope_frequency_and_a_wrong_scale(monkeypatch):
    """The two things numpy and torch share (rotary_angles, spec.attention_scale): the torch parity
    cannot see a bug there, the oracle must."""
    import constructions.forward as forward_module

    rope_item = next(i for i in _one_of_each() if "rope" in i.label.split() and i.x.shape[1] >= 3)
    honest_angles = forward_module.rotary_angles

    def off_by_one(base, width, positions):
        theta = base ** (-np.arange(1, width + 1, 2, dtype=np.float64) / width)
        angles = np.asarray(positions, dtype=np.float64)[:, None] * theta[None, :]
        angles = np.concatenate([angles, angles], axis=-1)
        return np.cos(angles), np.sin(angles)

    import constructions.prefix as prefix_module
    import constructions.torch_module as torch_module

    assert oracle_error(rope_item) <= ORACLE_TOLERANCE
    for module in (forward_module, prefix_module, torch_module):  # wherever it was imported by name
        monkeypatch.setattr(module, "rotary_angles", off_by_one)
    assert torch_parity_error(rope_item) <= PARITY_TOLERANCE  # shared: the parity cannot see it
    assert oracle_error(rope_item) > 1e-3  # the oracle does
    for module in (forward_module, prefix_module, torch_module):
        monkeypatch.setattr(module, "rotary_angles", honest_angles)
    import dataclasses

    unscaled = dataclasses.replace(rope_item, spec=dataclasses.replace(rope_item.spec, attention_scale=1.0))
    assert oracle_error(unscaled) > 1e-3  # the oracle applies 1/sqrt(d_head) itself
    positions = len(rope_item.s) + np.arange(rope_item.x.shape[1])
    pattern = oracle_attention_pattern(rope_item.spec, rope_item.x[0], positions)
    assert np.allclose(pattern.sum(-1), 1) and np.all(np.triu(pattern, 1) == 0)  # causal rows


def test_torch_parity_sees_a_numpy_norm_bug(monkeypatch):
    from constructions.forward import NumpyOps

    item = next(i for i in _one_of_each() if "layernorm" in i.label.split())
    assert torch_parity_error(item) <= PARITY_TOLERANCE
    honest = NumpyOps.norm

    def uncentred(self, x, norm):
        if norm.kind == "layernorm":
            return x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + norm.eps) * norm.w + norm.b
        return honest(self, x, norm)

    monkeypatch.setattr(NumpyOps, "norm", uncentred)
    assert torch_parity_error(item) > 1e-3
