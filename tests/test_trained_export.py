"""``verify export-trained``: a model the training experiments trained, exported from its stage
checkpoint, is the model its run record measured, and is the same function on the one transformer
spec (and in TransformerLens). ci scale, in temporary directories: nothing committed is touched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helpers import assert_usage_error, cli

from verify.experiments import records
from verify.experiments.experiments import run_experiment
from verify.experiments.gpt import LoRALinear
from verify.experiments.spec_export import export_gpt, load_gpt
from verify.experiments.tasks import greedy_scores
from verify.experiments.trained_export import (PARITY, TrainedExportError, current_record, export_trained,
                                               figure_tokens, load_trained, locate, one_forward_attention,
                                               parity_tokens)


@pytest.fixture(scope="module")
def skills_ci(tmp_path_factory):
    """skills at ci scale, seed 0, trained once: (checkpoint dir, results dir, its record)."""
    root = tmp_path_factory.mktemp("skills_ci")
    checkpoints, results = root / "checkpoints", root / "results"
    [record] = run_experiment("skills", "ci", seeds=(0,), results_dir=results, checkpoint_dir=checkpoints, quiet=True)
    return checkpoints, results, record


def test_the_checkpointed_lora_model_is_the_model_the_record_measured(skills_ci):
    checkpoints, _, record = skills_ci
    run = locate("skills", "lora_double_hist", 0, "ci", checkpoints)
    assert run.key == record["key"]
    model = load_trained(run)
    assert any(isinstance(m, LoRALinear) for m in model.modules())
    config = record["config"]
    exact, _ = greedy_scores(model, "double_hist", 0, config["n_prefix"], config["eval_examples"])
    assert exact == record["metrics"]["accuracy"]["lora_double_hist"]["double_hist"]


def test_the_checkpointed_prefix_model_is_the_model_the_record_measured(skills_ci):
    checkpoints, _, record = skills_ci
    model = load_trained(locate("skills", "prefix_ascending_add1", 0, "ci", checkpoints))
    assert model.prefix is not None and model.prefix.shape == (2, 12, 16)
    config = record["config"]
    exact, _ = greedy_scores(model, "ascending_add1", 0, config["n_prefix"], config["eval_examples"])
    assert exact == record["metrics"]["accuracy"]["prefix_ascending_add1"]["ascending_add1"]


@pytest.mark.parametrize("stage", ["pretrain", "prefix_double_hist", "lora_double_hist"])
def test_the_export_is_the_trained_function_on_the_one_forward(skills_ci, tmp_path, stage):
    checkpoints, results, record = skills_ci
    out = tmp_path / stage
    exported = export_trained("skills", stage, out, 0, "ci", checkpoint_dir=checkpoints, results_dir=results)
    assert exported.parity <= PARITY and exported.record == "same key"
    assert {p.name for p in exported.paths} >= {"model.safetensors", "config.json"}
    source = json.loads((out / "config.json").read_text())["source"]
    assert source["trained_run"] == {"experiment": "skills", "scale": "ci", "seed": 0, "stage": stage,
                                     "run_key": record["key"],
                                     "checkpoint": records.relative(checkpoints / "skills" / "ci" / "seed0" / f"{stage}.pt")}
    model = load_trained(locate("skills", stage, 0, "ci", checkpoints)).double()
    reloaded = load_gpt(out)  # what a user gets back from the files
    tokens = parity_tokens(model, 0)
    with torch.no_grad():
        reference = model(torch.as_tensor(tokens)).numpy()
    assert np.abs(reloaded.logits(tokens) - reference).max() <= PARITY


def test_a_stale_checkpoint_is_refused_and_nothing_is_written(skills_ci, tmp_path):
    checkpoints, results, _ = skills_ci
    stale_dir = tmp_path / "stale"
    source = checkpoints / "skills" / "ci" / "seed0" / "prefix_double_hist.pt"
    saved = torch.load(source, weights_only=False)
    saved["key"] = "0" * 64 + ":prefix_double_hist"  # trained by other code or another config
    target = stale_dir / "skills" / "ci" / "seed0" / "prefix_double_hist.pt"
    target.parent.mkdir(parents=True)
    torch.save(saved, target)
    out = tmp_path / "out"
    with pytest.raises(TrainedExportError, match="is stale"):
        export_trained("skills", "prefix_double_hist", out, 0, "ci", checkpoint_dir=stale_dir, results_dir=results)
    assert not out.exists()


def test_a_checkpoint_that_does_not_fit_the_configuration_is_refused(skills_ci, tmp_path):
    checkpoints, results, _ = skills_ci
    source = checkpoints / "skills" / "ci" / "seed0" / "prefix_double_hist.pt"
    saved = torch.load(source, weights_only=False)
    saved["model"]["prefix"] = saved["model"]["prefix"][:1]  # one layer's prefix for a two-layer model
    wrong = tmp_path / "wrong" / "skills" / "ci" / "seed0" / "prefix_double_hist.pt"
    wrong.parent.mkdir(parents=True)
    torch.save(saved, wrong)
    with pytest.raises(TrainedExportError, match="does not fit"):
        export_trained("skills", "prefix_double_hist", tmp_path / "out", 0, "ci",
                       checkpoint_dir=tmp_path / "wrong", results_dir=results)
    assert not (tmp_path / "out").exists()


def test_train_makes_the_checkpoint_and_writes_no_record(tmp_path):
    checkpoints, results = tmp_path / "checkpoints", tmp_path / "results"
    exported = export_trained("descending", "prefix", tmp_path / "out", 1, "ci", train=True,
                              checkpoint_dir=checkpoints, results_dir=results, quiet=True)
    assert exported.parity <= PARITY and exported.record == "none"
    assert (checkpoints / "descending" / "ci" / "seed1" / "prefix.pt").exists()
    assert not results.exists()
    again = export_trained("descending", "prefix", tmp_path / "again", 1, "ci", checkpoint_dir=checkpoints,
                           results_dir=results)  # no --train needed now: the same bytes
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tmp_path / "out" / "model.safetensors").read_bytes()
    assert again.run.key == exported.run.key


def test_cli_exports_a_checkpointed_stage(skills_ci, tmp_path, capsys, monkeypatch):
    checkpoints, results, _ = skills_ci
    monkeypatch.setattr(records, "CHECKPOINT_DIR", checkpoints)
    monkeypatch.setattr(records, "RESULTS_DIR", results)
    code, out, _ = cli(capsys, "export-trained", "skills", "prefix_double_hist", "--scale", "ci",
                       "--out", tmp_path / "ok")
    words = " ".join(out.split())  # the console wraps long lines
    assert code == 0 and "record of this run: same key" in words and "wrote" in words


def test_cli_refuses_bad_input_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(records, "CHECKPOINT_DIR", tmp_path / "no-checkpoints")
    (tmp_path / "a-file").write_text("")
    for args in (["skillz", "prefix"], ["skills", "prefix"], ["skills", "pretrain", "--scale", "huge"],
                 ["skills", "pretrain", "--scale", "ci"],  # no checkpoint: it says to add --train
                 ["skills", "pretrain", "--format", "onnx"], ["skills", "pretrain", "--seed", "-1"]):
        code, _, err = cli(capsys, "export-trained", *args, "--out", tmp_path / "bad")
        assert_usage_error(code, err)
    code, _, err = cli(capsys, "export-trained", "skills", "pretrain", "--scale", "ci", "--out", tmp_path / "bad")
    assert_usage_error(code, err)
    assert "does not exist; add --train" in err
    code, _, err = cli(capsys, "export-trained", "skills", "pretrain", "--scale", "ci", "--out", tmp_path / "a-file")
    assert_usage_error(code, err)
    assert "not a directory" in err
    assert not (tmp_path / "bad").exists()


def test_lens_takes_a_plain_or_lora_model_and_refuses_a_prefix_with_one_line(skills_ci, tmp_path, capsys,
                                                                              monkeypatch):
    pytest.importorskip("transformer_lens")
    checkpoints, results, _ = skills_ci
    exported = export_trained("skills", "lora_double_hist", tmp_path / "lens", 0, "ci", "lens",
                              checkpoint_dir=checkpoints, results_dir=results)
    assert exported.parity <= PARITY and (tmp_path / "lens" / "tl_model.safetensors").exists()
    monkeypatch.setattr(records, "CHECKPOINT_DIR", checkpoints)
    code, _, err = cli(capsys, "export-trained", "skills", "prefix_double_hist", "--scale", "ci", "--format", "lens",
                       "--out", tmp_path / "refused")
    assert_usage_error(code, err)
    assert "prefix" in err and not (tmp_path / "refused").exists()


def _head_averaged_spec_patterns(model, seq: np.ndarray) -> np.ndarray:
    """(L, T, C): the one forward's attention of the exported model, averaged over heads."""
    return np.stack([p[0].mean(axis=0) for p in export_gpt(model).attention_patterns(seq)])


def test_the_recorded_attention_maps_are_the_one_forwards_on_the_exported_models(skills_ci):
    """The sec5 skills attention figure is drawn from the record's maps (3 decimals); they are the
    spec forward's patterns of the exported trained models (pretrained, double_hist prefix, LoRA)."""
    checkpoints, _, record = skills_ci
    stored = record["metrics"]["attention_maps"]
    seq = np.asarray([stored["tokens"]])
    for name in ("pretrained", "prefix_double_hist", "lora_double_hist"):
        stage = "pretrain" if name == "pretrained" else name
        model = load_trained(locate("skills", stage, 0, "ci", checkpoints)).double()
        spec = _head_averaged_spec_patterns(model, seq)  # (L, T, C)
        recorded = np.asarray(stored["maps"][name])
        assert recorded.shape == spec.shape
        assert np.abs(recorded - spec).max() <= 5e-4 + 1e-9  # rounding to 3 decimals, nothing else
    # the control: another model's patterns are not within rounding of these
    other = _head_averaged_spec_patterns(load_trained(locate("skills", "pretrain", 0, "ci", checkpoints)).double(), seq)
    assert np.abs(np.asarray(stored["maps"]["prefix_double_hist"])[:, :, 12:] - other).max() > 1e-2


def test_the_figure_is_drawn_from_the_one_forward_on_the_records_input(skills_ci, tmp_path):
    checkpoints, results, record = skills_ci
    figure = tmp_path / "fig" / "attention.png"
    exported = export_trained("skills", "prefix_double_hist", tmp_path / "out", 0, "ci", checkpoint_dir=checkpoints,
                              results_dir=results, figure=figure)
    assert figure in exported.paths and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = locate("skills", "prefix_double_hist", 0, "ci", checkpoints)
    status, current = current_record(run, results)
    assert status == "same key"
    tokens = figure_tokens(run, current)
    assert tokens == record["metrics"]["attention_maps"]["tokens"]
    maps, n = one_forward_attention(export_gpt(load_trained(run).double()), tokens)
    assert n == record["metrics"]["attention_maps"]["prefix_columns"]["prefix_double_hist"]
    assert np.abs(maps - np.asarray(record["metrics"]["attention_maps"]["maps"]["prefix_double_hist"])).max() <= 5e-4 + 1e-9


def test_a_figure_needs_a_png_path_and_the_runs_current_record(skills_ci, tmp_path):
    checkpoints, results, _ = skills_ci
    with pytest.raises(TrainedExportError, match="expected a .png"):
        export_trained("skills", "pretrain", tmp_path / "a", 0, "ci", checkpoint_dir=checkpoints, results_dir=results,
                       figure=tmp_path / "attention.pdf")
    with pytest.raises(TrainedExportError, match="needs the current record"):
        export_trained("skills", "pretrain", tmp_path / "b", 0, "ci", checkpoint_dir=checkpoints,
                       results_dir=tmp_path / "no-records", figure=tmp_path / "attention.png")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "attention.png").exists()
