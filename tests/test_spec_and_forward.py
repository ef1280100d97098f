"""The transformer spec validates its weights; the numpy forward and the torch module agree."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.errors import PromptproofError, SpecError
from constructions.forward import NUMPY, embed, forward, generate, logits, next_token_predictions
from constructions.io import export_spec, load_exported_spec
from constructions.spec import MLP, Attention, Block, Norm, TransformerSpec, no_attention
from constructions.torch_module import SpecTransformer
from theorems.strategies import seeds

PARITY_TOLERANCE = 1e-12  # float64, same operations in a different order


def random_spec(seed: int, d=8, heads=2, d_head=3, vocab=5, n_ctx=7, layers=2, causal=True, scale=0.4):
    rng = np.random.default_rng(seed)
    g = lambda *shape: rng.normal(scale=scale, size=shape)  # noqa: E731
    blocks = [
        Block(Attention.build(d, g(heads, d, d_head), g(heads, d, d_head), g(heads, d, d_head), g(heads, d_head, d),
                              g(heads, d_head), g(heads, d_head), g(heads, d_head), g(d)),
              MLP.build(d, g(d, 11), g(11, d), g(11), g(d)))
        for _ in range(layers)
    ]
    return TransformerSpec.build(g(vocab, d), g(n_ctx, d), blocks, g(d, vocab), g(vocab),
                                 attention_scale=d_head**-0.5, causal=causal)


@settings(max_examples=25, deadline=None)
@given(seed=seeds(), causal=st.booleans(), heads=st.integers(1, 3), layers=st.integers(1, 3))
def test_torch_module_matches_numpy_forward_to_1e12(seed, causal, heads, layers):
    spec = random_spec(seed, heads=heads, layers=layers, causal=causal)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, spec.vocab_size, size=(4, spec.n_ctx))
    virtual = rng.normal(size=(4, 2, spec.d_model))
    ours = logits(spec, forward(spec, embed(spec, tokens, virtual, (0, 3))))
    module = SpecTransformer(spec)
    with torch.no_grad():
        theirs = module(module.embed_tokens(torch.from_numpy(tokens), torch.from_numpy(virtual), (0, 3))).numpy()
    assert theirs.dtype == np.float64
    assert np.max(np.abs(ours - theirs)) <= PARITY_TOLERANCE * max(1.0, np.max(np.abs(ours)))


def test_torch_greedy_generation_matches_numpy():
    spec = random_spec(3)
    tokens = np.random.default_rng(3).integers(0, spec.vocab_size, size=(6, 2))
    module = SpecTransformer(spec)
    assert np.array_equal(generate(spec, tokens, 5), module.generate(torch.from_numpy(tokens), 5).numpy())


def test_causal_mask_hides_the_future():
    spec = random_spec(1)
    rng = np.random.default_rng(1)
    a = rng.integers(0, spec.vocab_size, size=(1, spec.n_ctx))
    b = a.copy()
    b[0, -1] = (a[0, -1] + 1) % spec.vocab_size
    out_a, out_b = (forward(spec, embed(spec, t)) for t in (a, b))
    assert np.array_equal(out_a[:, :-1], out_b[:, :-1])
    assert not np.allclose(out_a[:, -1], out_b[:, -1])


def test_non_causal_model_sees_the_future():
    spec = random_spec(1, causal=False)
    a = np.zeros((1, spec.n_ctx), dtype=np.int64)
    b = a.copy()
    b[0, -1] = 1
    assert not np.allclose(forward(spec, embed(spec, a))[:, 0], forward(spec, embed(spec, b))[:, 0])


def test_softmax_is_stable_for_huge_scores():
    scores = np.array([[[[1e300, -1e300], [1000.0, 999.0]]]])
    weights = NUMPY.softmax(scores, np.ones((2, 2), dtype=bool))
    assert np.all(np.isfinite(weights))
    assert np.allclose(weights.sum(-1), 1.0)
    assert np.isclose(weights[0, 0, 1, 0], 1 / (1 + np.exp(-1.0)))


def test_virtual_tokens_replace_the_token_embedding_at_their_positions():
    spec = random_spec(2)
    tokens = np.array([[1, 2, 3]])
    virtual = np.full((1, 1, spec.d_model), 7.0)
    x = embed(spec, tokens, virtual, (1,))
    assert np.allclose(x[0, 1], 7.0 + spec.W_pos[1])
    assert np.allclose(x[0, 0], spec.W_E[1] + spec.W_pos[0])


def test_teacher_forced_predictions_equal_greedy_generation():
    spec = random_spec(5)
    prompt = np.random.default_rng(5).integers(0, spec.vocab_size, size=(8, 2))
    generated = generate(spec, prompt, 4)
    full = np.concatenate([prompt, generated[:, :-1]], axis=1)
    assert np.array_equal(next_token_predictions(spec, embed(spec, full))[:, 1:], generated)


def test_mlp_only_block_adds_nothing_from_attention():
    spec = random_spec(0, layers=1)
    only_mlp = TransformerSpec.build(spec.W_E, spec.W_pos, [Block(no_attention(spec.d_model), None)],
                                     spec.W_U, spec.b_U)
    x = embed(only_mlp, np.array([[0, 1, 2]]))
    assert np.array_equal(forward(only_mlp, x), x)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.__setitem__("W_U", np.zeros((3, 5))), "W_U: expected shape"),
        (lambda a: a.__setitem__("W_E", np.full((5, 8), np.nan)), "non-finite"),
        (lambda a: a.__setitem__("attention_scale", -1.0), "attention_scale"),
        (lambda a: a.__setitem__("subspaces", {"a": (0, 4), "b": (3, 6)}), "overlap"),
        (lambda a: a.__setitem__("subspaces", {"a": (0, 9)}), "outside"),
        (lambda a: a.__setitem__("W_E", np.zeros((5, 8), dtype=complex)), "numeric"),
    ],
)
def test_spec_rejects_bad_weights_with_a_clear_error(mutate, message):
    spec = random_spec(0, layers=1)
    args = {"W_E": spec.W_E, "W_pos": spec.W_pos, "blocks": spec.blocks, "W_U": spec.W_U, "b_U": spec.b_U,
            "attention_scale": 1.0, "subspaces": {}}
    mutate(args)
    with pytest.raises(SpecError, match=message):
        TransformerSpec.build(**args)


def test_attention_rejects_mismatched_head_shapes():
    with pytest.raises(SpecError, match="W_K"):
        Attention.build(4, np.zeros((2, 4, 3)), np.zeros((2, 4, 2)), np.zeros((2, 4, 3)), np.zeros((2, 3, 4)))


def test_named_arrays_round_trip_is_exact():
    spec = random_spec(9)
    again = TransformerSpec.from_named_arrays(spec.named_arrays(), spec.n_layers, spec.attention_scale, spec.causal)
    for name, array in spec.named_arrays().items():
        assert np.array_equal(array, again.named_arrays()[name])


def featured_spec(feature: str, seed: int = 5) -> TransformerSpec:
    """A random spec with one architecture feature (or all of them) beyond the constructions'."""
    rng = np.random.default_rng(seed)
    base = random_spec(seed, layers=2, d_head=4)  # an even d_head, for RoPE
    d = base.d_model
    norm = lambda kind, eps=1e-5: Norm.build(d, kind, rng.normal(size=d),  # noqa: E731
                                             None if kind == "rmsnorm" else rng.normal(size=d), eps)
    gelu = lambda mlp: MLP.build(d, mlp.W_in, mlp.W_out, mlp.b_in, mlp.b_out, activation="gelu")  # noqa: E731
    blocks, extra = list(base.blocks), {}
    b0, b1 = blocks
    if feature in ("layernorm", "all"):
        blocks = [Block(b.attention, b.mlp, norm("layernorm"), norm("layernorm", 1e-6)) for b in blocks]
    if feature == "rmsnorm":
        blocks = [Block(b0.attention, b0.mlp, norm("rmsnorm")), Block(b1.attention, b1.mlp, None, norm("rmsnorm"))]
    if feature in ("gelu", "all"):
        blocks = [Block(b.attention, gelu(b.mlp), b.ln1, b.ln2) if i == 0 else b for i, b in enumerate(blocks)]
    if feature in ("mlp-less", "all"):
        blocks[1] = Block(blocks[1].attention, None, blocks[1].ln1)
    if feature in ("ln_final", "all"):
        extra["ln_final"] = norm("layernorm", 1e-7)
    if feature in ("rope", "all"):
        extra["rotary_base"] = 500.0
    if feature in ("subspaces", "all"):
        extra["subspaces"] = {"a": (0, 3), "b": (5, 8)}
    return TransformerSpec.build(base.W_E, base.W_pos, blocks, base.W_U, base.b_U, base.attention_scale,
                                 causal=feature != "non-causal", **extra)


FEATURES = ["none", "layernorm", "rmsnorm", "gelu", "ln_final", "rope", "mlp-less", "subspaces", "non-causal", "all"]


def _same_spec(a: TransformerSpec, b: TransformerSpec) -> None:
    assert a.layout() == b.layout()
    assert a.named_arrays().keys() == b.named_arrays().keys()
    for name, array in a.named_arrays().items():
        assert np.array_equal(array, b.named_arrays()[name]), name
    x = embed(a, np.random.default_rng(0).integers(0, a.vocab_size, size=(3, a.n_ctx)))
    assert np.array_equal(logits(a, forward(a, x)), logits(b, forward(b, x)))


@pytest.mark.parametrize("feature", FEATURES)
def test_from_named_arrays_round_trips_every_feature(feature):
    spec = featured_spec(feature)
    _same_spec(spec, TransformerSpec.from_named_arrays(spec.named_arrays(), **spec.layout()))


@pytest.mark.parametrize("feature", ["layernorm", "rmsnorm", "all"])
def test_export_spec_round_trips_through_disk(tmp_path, feature):
    spec = featured_spec(feature)
    export_spec(spec, tmp_path / "spec", "test", {"feature": feature})
    again, config, _ = load_exported_spec(tmp_path / "spec")
    assert config["source"] == {"feature": feature}
    _same_spec(spec, again)


def test_from_named_arrays_names_a_norm_without_its_kind_or_weights():
    spec = featured_spec("all")
    layout = spec.layout()
    with pytest.raises(SpecError, match=r"'blocks\.0\.ln1\.w' given, but not its norm's kind and eps"):
        TransformerSpec.from_named_arrays(spec.named_arrays(), **{**layout, "norms": {}})
    arrays = {k: v for k, v in spec.named_arrays().items() if not k.startswith("ln_final")}
    with pytest.raises(SpecError, match="missing weight 'ln_final.w'"):
        TransformerSpec.from_named_arrays(arrays, **layout)
    with pytest.raises(SpecError, match=r"norms\['blocks\.9\.ln1'\] names no part"):
        TransformerSpec.from_named_arrays(spec.named_arrays(), **{**layout, "norms": {
            **layout["norms"], "blocks.9.ln1": {"kind": "layernorm", "eps": 1e-5}}})
    with pytest.raises(SpecError, match="unknown activation 'swish'"):
        TransformerSpec.from_named_arrays(spec.named_arrays(), **{**layout, "activations": {"blocks.0.mlp": "swish"}})
    with pytest.raises(SpecError, match="block 1 has no MLP weights"):
        TransformerSpec.from_named_arrays(spec.named_arrays(), **{**layout, "activations": {"blocks.1.mlp": "gelu"}})


@pytest.mark.parametrize("feature", ["layernorm", "gelu", "ln_final", "all"])
def test_torch_module_matches_numpy_forward_with_gelu_and_final_norm(feature):
    spec = featured_spec(feature)
    tokens = np.random.default_rng(2).integers(0, spec.vocab_size, size=(4, spec.n_ctx))
    ours = logits(spec, forward(spec, embed(spec, tokens)))
    module = SpecTransformer(spec)
    assert set(module.state_dict()) == set(spec.named_arrays())
    with torch.no_grad():
        theirs = module(module.embed_tokens(torch.from_numpy(tokens))).numpy()
    assert np.max(np.abs(ours - theirs)) <= PARITY_TOLERANCE * max(1.0, np.max(np.abs(ours)))


def test_gelu_is_the_exact_erf_form_of_torch():
    x = np.linspace(-6, 6, 1001)
    assert np.max(np.abs(NUMPY.gelu(x) - torch.nn.functional.gelu(torch.from_numpy(x)).numpy())) <= 1e-15
    tanh_form = torch.nn.functional.gelu(torch.from_numpy(x), approximate="tanh").numpy()
    assert np.max(np.abs(NUMPY.gelu(x) - tanh_form)) > 1e-4  # the control: the other GELU is far off


def test_named_arrays_reject_unknown_and_missing_weights():
    spec = random_spec(9, layers=1)
    arrays = dict(spec.named_arrays())
    with pytest.raises(SpecError, match="unexpected weight"):
        TransformerSpec.from_named_arrays({**arrays, "blocks.7.attn.W_Q": np.zeros(1)}, 1, 1.0, True)
    del arrays["unembed.W_U"]
    with pytest.raises(SpecError, match="missing weight"):
        TransformerSpec.from_named_arrays(arrays, 1, 1.0, True)


def test_weights_are_read_only_copies():
    source = np.zeros((5, 8))
    spec = random_spec(0, layers=1)
    built = TransformerSpec.build(source, spec.W_pos, spec.blocks, spec.W_U)
    source[0, 0] = 1.0
    assert built.W_E[0, 0] == 0.0
    with pytest.raises(ValueError):
        built.W_E[0, 0] = 1.0


def test_sequence_longer_than_context_is_refused():
    spec = random_spec(0)
    with pytest.raises(PromptproofError, match="context size"):
        embed(spec, np.zeros((1, spec.n_ctx + 1), dtype=np.int64))
