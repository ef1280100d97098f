"""The TransformerLens export (constructions.lens, ``verify export NAME --format lens``): the same
weights as a float64 TL ``TransformerBridge``, the virtual token fed through ``hook_embed``, held to
promptproof's forward pass at every position, with wrong exports refuted by the same comparison."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_usage_error, cli
from safetensors.numpy import load_file

pytest.importorskip("transformer_lens")

from constructions.forward import embed, forward, logits as spec_logits  # noqa: E402
from constructions.lens import (  # noqa: E402
    LENS_TOLERANCE,
    LensExportError,
    build_lens_model,
    lens_config,
    lens_generate,
    lens_logits,
    lens_run_with_cache,
    lens_state_dict,
    load_lens,
    max_logit_difference,
    to_transformer_lens,
)
from constructions.petrov import CONSTRUCTIONS  # noqa: E402
from constructions.petrov.unconditional import Unconditional  # noqa: E402
from constructions.spec import MLP, Attention, Block, Norm, TransformerSpec  # noqa: E402
from constructions.vocab import Vocabulary  # noqa: E402

TARGET = "I love transformers!"
LENS_FILES = {"tl_config.json", "tl_model.safetensors", "tl_virtual_tokens.safetensors", "tl_promptproof.json",
              "load_lens.py"}
# Attention weights are softmax outputs in [0, 1] of scores that TL and promptproof compute from the
# same float64 numbers (the W_Q fold by 2 and TL's division by 2 are exact): a few ulps at most.
PATTERN_TOLERANCE = 1e-12
RANDOM_TASKS = 15


@pytest.fixture(scope="module")
def unconditional() -> Unconditional:
    return Unconditional(Vocabulary.printable_ascii())  # the CLI's defaults: V = 94, N = 20, T = 50


@pytest.fixture(scope="module")
def model(unconditional):
    return to_transformer_lens(unconditional)


@pytest.fixture(scope="module")
def target_virtual(unconditional) -> np.ndarray:
    return unconditional.virtual_tokens(unconditional.parse_task(TARGET))  # (1, 1, d)


def random_spec(rng: np.random.Generator, causal: bool = False) -> TransformerSpec:
    """Two blocks unlike the constructions: block 0 has 2 heads (d_head 3, d_v 4) and no MLP,
    block 1 one head (d_head 2 = d_v) and an MLP; every bias random; conventional 1/sqrt(d_head)."""
    d, V, n_ctx = 6, 5, 7
    normal = rng.normal
    attention0 = Attention.build(d, normal(size=(2, d, 3)), normal(size=(2, d, 3)), normal(size=(2, d, 4)),
                                 normal(size=(2, 4, d)), normal(size=(2, 3)), normal(size=(2, 3)),
                                 normal(size=(2, 4)), normal(size=d))
    attention1 = Attention.build(d, normal(size=(1, d, 2)), normal(size=(1, d, 2)), normal(size=(1, d, 2)),
                                 normal(size=(1, 2, d)), normal(size=(1, 2)), normal(size=(1, 2)),
                                 normal(size=(1, 2)), normal(size=d))
    mlp = MLP.build(d, normal(size=(d, 5)), normal(size=(5, d)), normal(size=5), normal(size=d))
    return TransformerSpec.build(normal(size=(V, d)), normal(size=(n_ctx, d)),
                                 [Block(attention0, None), Block(attention1, mlp)], normal(size=(d, V)),
                                 normal(size=V), attention_scale=1 / np.sqrt(3), causal=causal)


def spec_forward_logits(spec: TransformerSpec, tokens: np.ndarray) -> np.ndarray:
    return spec_logits(spec, forward(spec, embed(spec, tokens)))  # (B, n, V)


# --- the construction in TransformerLens -----------------------------------------------------
def test_unconditional_construction_generates_the_target_greedily_in_transformer_lens(
        unconditional, model, target_virtual):
    prompt = unconditional.prompt_tokens(np.zeros((1, 0), dtype=np.int64))  # the placeholder at position 0
    generated = lens_generate(model, prompt, unconditional.response_length, target_virtual,
                              unconditional.virtual_positions)
    assert unconditional.vocab.decode(generated[0]) == TARGET


@pytest.mark.parametrize("name", sorted(CONSTRUCTIONS))
def test_lens_logits_match_promptproofs_forward_at_every_position(name):
    cls = CONSTRUCTIONS[name]
    construction = cls(getattr(cls, "default_vocabulary", Vocabulary.printable_ascii)())
    model = to_transformer_lens(construction)
    rng = np.random.default_rng(0)
    tasks = construction.random_tasks(rng, RANDOM_TASKS)
    if name == "unconditional":
        tasks = np.concatenate([construction.parse_task(TARGET), tasks])
    worst = max_logit_difference(model, construction, tasks)
    print(f"{name}: max |TL - promptproof| logit = {worst:.3g} over {len(tasks)} tasks, every position")
    assert worst <= LENS_TOLERANCE


@pytest.mark.parametrize("causal", [False, True])
def test_lens_matches_a_spec_with_uneven_blocks_biases_and_conventional_scale(causal):
    """Per-block head counts and widths, an MLP-less block, biases everywhere, bidirectional or
    causal attention, attention_scale 1/sqrt(3) (no W_Q fold): padded into TL's uniform config."""
    spec = random_spec(np.random.default_rng(1), causal)
    assert lens_config(spec)["attention_dir"] == ("causal" if causal else "bidirectional")
    tokens = np.random.default_rng(2).integers(0, spec.vocab_size, size=(4, spec.n_ctx))
    diff = np.abs(lens_logits(to_transformer_lens(spec), tokens) - spec_forward_logits(spec, tokens))
    assert diff.max() <= LENS_TOLERANCE


def test_virtual_tokens_attention_pattern_from_the_activation_cache_equals_promptproofs(
        unconditional, model, target_virtual):
    task = unconditional.parse_task(TARGET)
    want = unconditional.expected(task, np.zeros((1, 0), dtype=np.int64))  # (1, N)
    tokens = np.concatenate([unconditional.prompt_tokens(np.zeros((1, 0), dtype=np.int64)), want[:, :-1]], axis=1)
    _, tl_cache = lens_run_with_cache(model, tokens, target_virtual, unconditional.virtual_positions)
    theirs = tl_cache["blocks.0.attn.hook_pattern"].numpy()  # (1, H, n, n)
    ours: dict = {}
    spec = unconditional.spec
    forward(spec, embed(spec, tokens, target_virtual, unconditional.virtual_positions), cache=ours)
    assert theirs.shape == ours["blocks.0.attn.pattern"].shape == (1, 1, 20, 20)
    assert np.max(np.abs(theirs - ours["blocks.0.attn.pattern"])) <= PATTERN_TOLERANCE
    # The virtual token's column: A_i0 = e^T / (e^T + i) (theorems.petrov_sec3), T = 50.
    i = np.arange(20)
    closed_form = np.exp(50.0) / (np.exp(50.0) + i)
    assert np.max(np.abs(theirs[0, 0, :, 0] - closed_form)) <= PATTERN_TOLERANCE
    assert np.array_equal(tl_cache["hook_embed"][0, 0].numpy(), target_virtual[0, 0])


# --- negative controls: the same comparison refutes wrong exports ----------------------------
def _mutated(state: dict[str, np.ndarray], name: str, change) -> dict[str, np.ndarray]:
    out = dict(state)
    out[name] = change(state[name])
    return out


UNCONDITIONAL_MUTANTS = {
    "mlp bias b_in dropped": ("blocks.0.mlp.b_in", np.zeros_like),
    "W_U reshaped instead of transposed": ("unembed.W_U", lambda w: np.ascontiguousarray(w.T).reshape(w.shape)),
    "unembedding bias b_U dropped": ("unembed.b_U", np.zeros_like),
}


@pytest.mark.parametrize("mutant", sorted(UNCONDITIONAL_MUTANTS))
def test_a_wrong_export_is_refuted_by_the_logit_comparison(unconditional, mutant):
    """Each mutant loads without complaint in TL (same shapes); only the logits give it away."""
    spec = unconditional.spec
    name, change = UNCONDITIONAL_MUTANTS[mutant]
    wrong = build_lens_model(lens_config(spec), _mutated(lens_state_dict(spec), name, change))
    tasks = np.concatenate([unconditional.parse_task(TARGET), unconditional.random_tasks(np.random.default_rng(0), 3)])
    worst = max_logit_difference(wrong, unconditional, tasks)
    print(f"{mutant}: max |TL - promptproof| logit = {worst:.3g}")
    assert worst > LENS_TOLERANCE


def test_w_q_transposed_per_head_is_refuted_by_the_logit_comparison():
    """A square per-head W_Q (d_model = d_head = 4, two heads) transposed head by head: the
    layout mistake that keeps every shape."""
    rng = np.random.default_rng(3)
    d = 4
    attention = Attention.build(d, *(rng.normal(size=s) for s in [(2, d, d)] * 3 + [(2, d, d)]))
    spec = TransformerSpec.build(rng.normal(size=(5, d)), rng.normal(size=(6, d)), [Block(attention, None)],
                                 rng.normal(size=(d, 5)), attention_scale=0.5)
    tokens = rng.integers(0, 5, size=(3, 6))
    state = lens_state_dict(spec)
    right = build_lens_model(lens_config(spec), state)
    wrong = build_lens_model(lens_config(spec), _mutated(state, "blocks.0.attn.W_Q", lambda w: w.transpose(0, 2, 1)))
    ours = spec_forward_logits(spec, tokens)
    assert np.max(np.abs(lens_logits(right, tokens) - ours)) <= LENS_TOLERANCE
    assert np.max(np.abs(lens_logits(wrong, tokens) - ours)) > LENS_TOLERANCE


# --- files on disk ---------------------------------------------------------------------------
def test_round_trip_through_the_files_on_disk(capsys, tmp_path, unconditional, target_virtual):
    out = tmp_path / "lens"
    code, stdout, err = cli(capsys, "export", "unconditional", "--out", out, "--target", TARGET, "--format", "lens")
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == LENS_FILES
    assert {p.name for p in tmp_path.iterdir()} == {"lens"}  # no staging directory left behind
    assert "max |difference|" in stdout
    on_disk = load_file(str(out / "tl_model.safetensors"))
    assert on_disk["blocks.0.attn.W_Q"].shape == (1, unconditional.spec.d_model, 20)  # (n_heads, d_model, d_head)
    assert all(array.dtype == np.float64 for array in on_disk.values())
    meta = json.loads((out / "tl_promptproof.json").read_text())
    assert meta["task"] == TARGET and meta["parity"]["max_abs_logit_difference"] <= LENS_TOLERANCE

    loaded = load_lens(out)
    assert np.array_equal(loaded.virtual_tokens, target_virtual[0])
    assert max_logit_difference(loaded.model, unconditional, unconditional.parse_task(TARGET)) <= LENS_TOLERANCE
    # The loader snippet, which uses only TransformerLens' API, generates the target from the files.
    runpy.run_path(str(out / "load_lens.py"), run_name="__main__")
    assert f"'' -> {TARGET!r}" in capsys.readouterr().out


# --- what TL cannot express, and bad input ---------------------------------------------------
def test_features_transformer_lens_cannot_express_are_refused_by_name():
    spec = random_spec(np.random.default_rng(4))
    normed = TransformerSpec.build(spec.W_E, spec.W_pos,
                                   [Block(spec.blocks[0].attention, None, ln1=Norm.build(spec.d_model, "layernorm"))],
                                   spec.W_U, spec.b_U)
    with pytest.raises(LensExportError, match=r"blocks\.0\.ln1 \(layernorm\)"):
        to_transformer_lens(normed)
    rotary = TransformerSpec.build(spec.W_E, spec.W_pos, [Block(spec.blocks[1].attention, None)], spec.W_U,
                                   rotary_base=10000.0)
    with pytest.raises(LensExportError, match="RoPE"):
        to_transformer_lens(rotary)


def layer_normed(spec: TransformerSpec, rng: np.random.Generator, activation: str = "gelu",
                 eps: float = 1e-5) -> TransformerSpec:
    """``spec`` with random LayerNorms before every attention and MLP and before the unembedding
    (block 0 has no MLP, so no ln2), and GELU MLPs: the trained GPT's architecture."""
    d = spec.d_model
    norm = lambda: Norm.build(d, "layernorm", rng.normal(size=d), rng.normal(size=d), eps)  # noqa: E731
    blocks = [Block(b.attention, None if b.mlp is None else MLP.build(
        d, b.mlp.W_in, b.mlp.W_out, b.mlp.b_in, b.mlp.b_out, activation=activation),
        norm(), None if b.mlp is None else norm()) for b in spec.blocks]
    return TransformerSpec.build(spec.W_E, spec.W_pos, blocks, spec.W_U, spec.b_U, spec.attention_scale,
                                 spec.causal, ln_final=norm())


@pytest.mark.parametrize("activation, eps", [("gelu", 1e-5), ("relu", 1e-6)])
def test_layernorm_and_gelu_specs_match_transformer_lens_to_1e10(activation, eps):
    rng = np.random.default_rng(11)
    spec = layer_normed(random_spec(rng), rng, activation, eps)
    config = lens_config(spec)
    assert config["normalization_type"] == "LN" and config["act_fn"] == activation and config["eps"] == eps
    tokens = rng.integers(0, spec.vocab_size, size=(8, spec.n_ctx))
    model = to_transformer_lens(spec)
    assert np.max(np.abs(lens_logits(model, tokens) - spec_forward_logits(spec, tokens))) <= LENS_TOLERANCE
    # the control: the same comparison refutes a final norm left at identity weights (w = 1, b = 0)
    wrong = dict(lens_state_dict(spec), **{"ln_final.w": np.ones(spec.d_model), "ln_final.b": np.zeros(spec.d_model)})
    moved = lens_logits(build_lens_model(config, wrong), tokens) - spec_forward_logits(spec, tokens)
    assert np.max(np.abs(moved)) > 1e3 * LENS_TOLERANCE


def test_norm_patterns_transformer_lens_cannot_express_are_refused_by_name():
    rng = np.random.default_rng(12)
    spec = layer_normed(random_spec(rng), rng)
    d = spec.d_model
    rms = Norm.build(d, "rmsnorm", rng.normal(size=d))
    cases = {
        r"blocks\.0\.ln1 \(rmsnorm\).*float32": [Block(spec.blocks[0].attention, None, rms), spec.blocks[1]],
        r"this spec has no blocks\.1\.ln2": [spec.blocks[0], Block(spec.blocks[1].attention, spec.blocks[1].mlp,
                                                                   spec.blocks[1].ln1)],
        r"blocks\.1\.ln1 \(eps 1e-06\)": [spec.blocks[0], Block(spec.blocks[1].attention, spec.blocks[1].mlp,
                                                                 Norm.build(d, "layernorm", eps=1e-6),
                                                                 spec.blocks[1].ln2)],
    }
    for message, blocks in cases.items():
        wrong = TransformerSpec.build(spec.W_E, spec.W_pos, blocks, spec.W_U, spec.b_U, ln_final=spec.ln_final)
        with pytest.raises(LensExportError, match=message):
            lens_config(wrong)
    no_final = TransformerSpec.build(spec.W_E, spec.W_pos, spec.blocks, spec.W_U, spec.b_U)
    with pytest.raises(LensExportError, match="this spec has no ln_final"):
        lens_config(no_final)


def test_unknown_format_is_a_usage_error(capsys, tmp_path):
    code, _, err = cli(capsys, "export", "unconditional", "--out", tmp_path / "x", "--format", "onnx")
    assert_usage_error(code, err)
    assert "--format" in err
    assert not any(tmp_path.iterdir())


def test_missing_transformer_lens_is_one_line_exit_2_and_nothing_written(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # import transformer_lens now fails
    code, _, err = cli(capsys, "export", "unconditional", "--out", tmp_path / "x", "--target", TARGET,
                       "--format", "lens")
    assert_usage_error(code, err)
    assert "'lens' extra" in err
    assert not any(tmp_path.iterdir())
