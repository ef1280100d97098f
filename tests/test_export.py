"""``python -m verify export`` / ``check-export``: constructions as weights on disk, reloaded
bit-exactly, run in PyTorch, and re-verified after a user edits them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_usage_error, cli, cli_subprocess
from safetensors.numpy import load_file, save_file
from safetensors.torch import load_file as load_torch_file

from constructions.io import load_spec, read_config
from constructions.petrov.conditional import Conditional
from constructions.petrov.demos import case_flip
from constructions.petrov.unconditional import Unconditional
from constructions.torch_module import SpecTransformer
from constructions.vocab import Vocabulary
from verify.cli import main

TARGET = "I love transformers!"
FILES = {"model.safetensors", "config.json", "virtual_tokens.safetensors"}








def check_export(capsys, directory: Path, tmp_path: Path) -> tuple[int, str, str, dict | None]:
    """``check-export DIR --json F`` -> (exit code, stdout, stderr, the JSON verdict or None)."""
    report = tmp_path / f"check-{directory.name}.json"
    code, out, err = cli(capsys, "check-export", directory, "--json", report)
    return code, out, err, json.loads(report.read_text()) if report.exists() else None


def edit_weights(directory: Path, edit) -> None:
    """Load model.safetensors with numpy, apply ``edit(arrays)``, save it back."""
    arrays = load_file(str(directory / "model.safetensors"))
    edit(arrays)
    save_file(arrays, str(directory / "model.safetensors"))


def edit_config(directory: Path, edit) -> None:
    config = json.loads((directory / "config.json").read_text())
    edit(config)
    (directory / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """One export of the unconditional construction with the README's target (do not modify)."""
    out = tmp_path_factory.mktemp("export") / "unconditional"
    assert main(["export", "unconditional", "--out", str(out), "--target", TARGET]) == 0
    return out


@pytest.fixture
def copy_of_export(exported, tmp_path) -> Path:
    """A private copy of the export, for tests that edit files."""
    return Path(shutil.copytree(exported, tmp_path / "edited"))


@pytest.fixture(scope="module")
def reference() -> Unconditional:
    return Unconditional(Vocabulary.printable_ascii())  # the CLI's defaults: V = 94, N = 20, T = 50


# --- export -----------------------------------------------------------------------------------
def test_export_writes_weights_config_and_virtual_tokens(capsys, tmp_path):
    out = tmp_path / "model"
    code, stdout, err = cli(capsys, "export", "unconditional", "--out", out, "--target", TARGET)
    assert code == 0
    assert {p.name for p in out.iterdir()} == FILES  # no staging directory left behind
    assert {p.name for p in tmp_path.iterdir()} == {"model"}
    compact = "".join(stdout.split())  # rich may wrap long paths
    for name in FILES:
        assert f"wrote{out / name}" in compact
    config = json.loads((out / "config.json").read_text())
    assert config["construction"] == "unconditional"
    assert config["claim"] == "petrov.thm1.unconditional"
    assert config["task"] == TARGET
    assert config["params"] == {"vocab": "".join(Vocabulary.printable_ascii().symbols), "length": 20,
                                "inverse_temperature": 50.0}
    assert config["architecture"]["dtype"] == "float64"


def test_reloaded_weights_are_bit_exact_float64_copies_of_the_construction(exported, reference):
    config = read_config(exported)
    ours = reference.spec.named_arrays()
    on_disk = load_file(str(exported / "model.safetensors"))
    reloaded = load_spec(exported, config).named_arrays()
    assert set(on_disk) == set(ours) == set(reloaded)
    for name, array in ours.items():
        assert on_disk[name].dtype == np.float64, name
        assert reloaded[name].dtype == np.float64, name
        assert np.array_equal(on_disk[name], array), name
        assert np.array_equal(reloaded[name], array), name
    assert config["subspaces"] == {k: list(v) for k, v in reference.spec.subspaces.items()}


def test_exported_virtual_token_is_bit_exact(exported, reference):
    tensors = load_file(str(exported / "virtual_tokens.safetensors"))
    assert set(tensors) == {"virtual_tokens"}
    assert tensors["virtual_tokens"].dtype == np.float64
    want = reference.virtual_tokens(reference.parse_task(TARGET))[0]
    assert np.array_equal(tensors["virtual_tokens"], want)


def test_exporting_twice_gives_byte_identical_files(capsys, exported, tmp_path):
    again = tmp_path / "again"
    code, _, _ = cli(capsys, "export", "unconditional", "--out", again, "--target", TARGET)
    assert code == 0
    assert {p.name for p in again.iterdir()} == {p.name for p in exported.iterdir()}
    for path in exported.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


def test_pytorch_user_loading_the_files_gets_the_target(exported):
    """What the README promises: load the files in PyTorch, feed the virtual token, decode."""
    config = read_config(exported)
    model = SpecTransformer(load_spec(exported, config))
    state = load_torch_file(str(exported / "model.safetensors"))
    assert all(t.dtype == torch.float64 for t in state.values())
    model.load_state_dict(state, strict=True)  # the file's names and shapes are the module's
    virtual = load_torch_file(str(exported / "virtual_tokens.safetensors"))["virtual_tokens"]
    prompt = config["prompt"]
    assert prompt["virtual_positions"] == [0] and prompt["n_user_tokens"] == 0
    placeholders = torch.zeros((1, len(prompt["virtual_positions"])), dtype=torch.long)
    generated = model.generate(placeholders, prompt["response_length"], virtual[None],
                               tuple(prompt["virtual_positions"]))
    vocabulary = config["vocabulary"]
    assert "".join(vocabulary[i] for i in generated[0].tolist()) == TARGET


def test_export_without_target_writes_no_virtual_tokens_and_removes_stale_ones(capsys, exported, tmp_path):
    out = Path(shutil.copytree(exported, tmp_path / "reused"))
    code, _, _ = cli(capsys, "export", "unconditional", "--out", out)
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json"}
    assert json.loads((out / "config.json").read_text())["task"] is None


# --- check-export -----------------------------------------------------------------------------
def test_check_export_passes_on_a_fresh_export(capsys, exported, tmp_path):
    code, out, err, verdict = check_export(capsys, exported, tmp_path)
    assert code == 0
    assert "the theorem holds for these weights" in out
    assert verdict["construction"] == "unconditional" and verdict["holds"] is True
    checks = verdict["checks"]
    assert set(checks) == {"certificate", "randomized", "virtual_tokens"}  # each can fail
    assert all(item["holds"] for item in checks.values())
    assert "holds" not in verdict["weights"]  # information, never a verdict
    assert verdict["weights"]["identical_to_construction"] is True
    assert checks["certificate"]["failing_cases"] == 0 and checks["certificate"]["worst_margin"] > 0
    assert checks["virtual_tokens"] == {"holds": True, "user_inputs": 1, "correct": 1}


def test_an_edit_that_breaks_the_theorem_fails_check_export(capsys, copy_of_export, tmp_path):
    def break_mlp(arrays):
        arrays["blocks.0.mlp.b_in"][0] += 0.5

    edit_weights(copy_of_export, break_mlp)
    code, out, err, verdict = check_export(capsys, copy_of_export, tmp_path)
    assert code == 1
    assert "does NOT hold" in out
    assert "Traceback" not in err
    assert verdict["holds"] is False
    assert verdict["checks"]["certificate"]["holds"] is False
    assert verdict["checks"]["certificate"]["failing_cases"] > 0
    assert "first_failing_case" in verdict["checks"]["certificate"]
    assert verdict["weights"]["edited"].keys() == {"blocks.0.mlp.b_in"}


def test_a_harmless_tiny_edit_still_passes_but_is_reported(capsys, copy_of_export, tmp_path):
    readout = read_config(copy_of_export)["subspaces"]["readout"][0]

    def nudge_readout(arrays):
        arrays["unembed.W_U"][readout, 1] += 1e-9

    edit_weights(copy_of_export, nudge_readout)
    code, out, err, verdict = check_export(capsys, copy_of_export, tmp_path)
    assert code == 0
    assert "the theorem holds for these weights" in out
    assert "identical_to_construction=False" in out
    weights = verdict["weights"]
    assert weights["identical_to_construction"] is False
    assert set(weights["edited"]) == {"unembed.W_U"}
    assert 0 < weights["edited"]["unembed.W_U"] < 1e-8


def test_too_low_an_inverse_temperature_exports_but_fails_check_export(capsys, tmp_path):
    out = tmp_path / "cold"
    code, _, _ = cli(capsys, "export", "unconditional", "--out", out, "--inverse-temperature", "1")
    assert code == 0
    code, stdout, err, verdict = check_export(capsys, out, tmp_path)
    assert code == 1
    assert "does NOT hold" in stdout
    assert verdict["checks"]["certificate"]["holds"] is False
    assert verdict["checks"]["randomized"]["holds"] is False


def test_virtual_tokens_for_another_target_fail_check_export(capsys, copy_of_export, reference, tmp_path):
    other = np.ascontiguousarray(reference.virtual_tokens(reference.parse_task("Hello"))[0])
    save_file({"virtual_tokens": other}, str(copy_of_export / "virtual_tokens.safetensors"))
    code, out, err, verdict = check_export(capsys, copy_of_export, tmp_path)
    assert code == 1
    assert "does NOT hold" in out
    checks = verdict["checks"]
    assert checks["certificate"]["holds"] and checks["randomized"]["holds"]  # the weights are fine
    assert checks["virtual_tokens"]["holds"] is False
    assert checks["virtual_tokens"]["first_wrong"]["expected"] == TARGET
    assert checks["virtual_tokens"]["first_wrong"]["generated"].rstrip() == "Hello"


def _set_nan(arrays):
    arrays["blocks.0.attn.W_Q"][0, 0, 0] = np.nan


def _set_inf(arrays):
    arrays["unembed.b_U"][3] = np.inf


def _wrong_shape(arrays):
    arrays["blocks.0.attn.W_Q"] = np.zeros((1, 3, 3))


def _wider_head(arrays):
    arrays["blocks.0.attn.W_Q"] = np.concatenate([arrays["blocks.0.attn.W_Q"]] * 2, axis=2)


def _longer_context(arrays):
    arrays["pos_embed.W_pos"] = np.concatenate([arrays["pos_embed.W_pos"]] * 2)


def _float32(arrays):
    arrays["unembed.b_U"] = arrays["unembed.b_U"].astype(np.float32)


def _missing(arrays):
    del arrays["unembed.b_U"]


def _extra(arrays):
    arrays["blocks.1.attn.W_Q"] = arrays["blocks.0.attn.W_Q"]


@pytest.mark.parametrize("edit", [_set_nan, _set_inf, _wrong_shape, _wider_head, _longer_context, _float32,
                                  _missing, _extra], ids=lambda f: f.__name__.strip("_"))
def test_invalid_weights_are_a_usage_error(capsys, copy_of_export, tmp_path, edit):
    edit_weights(copy_of_export, edit)
    code, out, err, verdict = check_export(capsys, copy_of_export, tmp_path)
    assert_usage_error(code, err)
    assert verdict is None  # nothing written


def _fewer_tokens(arrays):
    arrays["embed.W_E"] = arrays["embed.W_E"][:-1]
    arrays["unembed.W_U"] = arrays["unembed.W_U"][:, :-1]
    arrays["unembed.b_U"] = arrays["unembed.b_U"][:-1]


def test_weights_for_a_smaller_vocabulary_are_a_usage_error(copy_of_export):
    edit_weights(copy_of_export, _fewer_tokens)
    result = cli_subprocess("check-export", copy_of_export)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def _extra_winning_token(arrays):
    arrays["embed.W_E"] = np.concatenate([arrays["embed.W_E"], arrays["embed.W_E"][:1]])
    arrays["unembed.W_U"] = np.concatenate([arrays["unembed.W_U"], arrays["unembed.W_U"][:, :1]], axis=1)
    arrays["unembed.b_U"] = np.concatenate([arrays["unembed.b_U"], [5.0]])  # token 94 always wins


def test_weights_with_an_extra_token_give_a_verdict_not_a_traceback(copy_of_export):
    edit_weights(copy_of_export, _extra_winning_token)
    result = cli_subprocess("check-export", copy_of_export)
    assert "Traceback" not in result.stderr
    assert result.returncode in (1, 2)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: (d / "model.safetensors").write_bytes(b"not a safetensors file"), id="garbage-model"),
        pytest.param(lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:500]),
                     id="truncated-model"),
        pytest.param(lambda d: (d / "model.safetensors").unlink(), id="missing-model"),
        pytest.param(lambda d: (d / "config.json").unlink(), id="missing-config"),
        pytest.param(lambda d: (d / "config.json").write_text("{not json"), id="invalid-json-config"),
        pytest.param(lambda d: (d / "config.json").write_text("[]"), id="config-not-an-object"),
        pytest.param(lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00"), id="config-not-utf8"),
        pytest.param(lambda d: edit_config(d, lambda c: c.pop("params")), id="config-missing-params"),
        pytest.param(lambda d: edit_config(d, lambda c: c["params"].pop("vocab")), id="config-params-without-vocab"),
        pytest.param(lambda d: edit_config(d, lambda c: c["params"].__setitem__("length", "many")),
                     id="config-params-not-a-number"),
        pytest.param(lambda d: edit_config(d, lambda c: c["params"].__setitem__("colour", 3)),
                     id="config-params-unknown"),
        pytest.param(lambda d: edit_config(d, lambda c: c.__setitem__("format_version", 99)), id="config-version"),
        pytest.param(lambda d: edit_config(d, lambda c: c.__setitem__("construction", "nope")),
                     id="config-unknown-construction"),
        pytest.param(lambda d: edit_config(d, lambda c: c["params"].__setitem__("length", 5)),
                     id="config-disagrees-with-weights"),
        pytest.param(lambda d: edit_config(d, lambda c: c.__setitem__("task", None)), id="config-without-task"),
        pytest.param(lambda d: (d / "virtual_tokens.safetensors").write_bytes(b"xx"), id="garbage-virtual-tokens"),
        pytest.param(lambda d: save_file({"virtual_tokens": np.full((1, 156), np.nan)},
                                         str(d / "virtual_tokens.safetensors")), id="nan-virtual-tokens"),
        pytest.param(lambda d: save_file({"virtual_tokens": np.zeros((2, 3))},
                                         str(d / "virtual_tokens.safetensors")), id="wrong-shape-virtual-tokens"),
    ],
)
def test_corrupt_or_missing_files_are_a_usage_error(capsys, copy_of_export, tmp_path, damage):
    damage(copy_of_export)
    code, out, err, verdict = check_export(capsys, copy_of_export, tmp_path)
    assert_usage_error(code, err)
    assert verdict is None


def test_check_export_of_a_missing_directory_is_a_usage_error(capsys, tmp_path):
    code, out, err = cli(capsys, "check-export", tmp_path / "nowhere")
    assert_usage_error(code, err)


@pytest.mark.parametrize(
    "field, value",
    [("construction", ["unconditional"]), ("subspaces", ["token", 0, 94])],
    ids=["construction-not-a-string", "subspaces-not-an-object"],
)
def test_config_fields_of_the_wrong_json_type_are_a_usage_error(copy_of_export, field, value):
    edit_config(copy_of_export, lambda c: c.__setitem__(field, value))
    result = cli_subprocess("check-export", copy_of_export)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2


def test_end_to_end_broken_weights_exit_1_without_traceback(copy_of_export):
    edit_weights(copy_of_export, lambda a: a["blocks.0.mlp.b_in"].__setitem__(0, a["blocks.0.mlp.b_in"][0] + 0.5))
    result = cli_subprocess("check-export", copy_of_export)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "does NOT hold" in result.stdout


def test_end_to_end_nan_weight_exit_2_with_one_line(copy_of_export):
    edit_weights(copy_of_export, _set_nan)
    result = cli_subprocess("check-export", copy_of_export)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "non-finite" in result.stderr


# --- bad input to export: exit 2, --out never created ----------------------------------------
@pytest.fixture
def map_files(tmp_path) -> dict[str, Path]:
    files = {
        "partial": tmp_path / "partial.json",
        "invalid": tmp_path / "invalid.json",
        "list": tmp_path / "list.json",
        "flip": tmp_path / "flip.json",
        "two-symbols": tmp_path / "two-symbols.json",
        "unknown-key": tmp_path / "unknown-key.json",
    }
    symbols = Vocabulary.printable_ascii().symbols
    files["partial"].write_text(json.dumps({"a": "A"}))
    files["invalid"].write_text("{\"a\": ")
    files["list"].write_text(json.dumps(["a", "A"]))
    files["flip"].write_text(json.dumps(case_flip(symbols)))
    files["two-symbols"].write_text(json.dumps({**case_flip(symbols), "a": "AB"}))
    files["unknown-key"].write_text(json.dumps({**case_flip(symbols), "~": "a"}))
    return files


BAD_EXPORTS = {
    "target-longer-than-N": ["unconditional", "--target", "x" * 21],
    "target-longer-than-length": ["unconditional", "--target", TARGET, "--length", "5"],
    "character-outside-vocabulary": ["unconditional", "--target", "caf\u00e9"],
    "tilde-outside-vocabulary": ["unconditional", "--target", "~"],
    "letter-outside-small-vocabulary": ["unconditional", "--vocab", "letters:4", "--target", "ABE"],
    "map-not-total": ["conditional", "--map", "{partial}"],
    "map-value-too-long": ["conditional", "--map", "{two-symbols}"],
    "map-key-outside-vocabulary": ["conditional", "--map", "{unknown-key}"],
    "map-not-an-object": ["conditional", "--map", "{list}"],
    "map-file-missing": ["conditional", "--map", "{missing}"],
    "map-file-invalid-json": ["conditional", "--map", "{invalid}"],
    "target-and-map": ["unconditional", "--target", "hi", "--map", "{flip}"],
    "map-for-unconditional": ["unconditional", "--map", "{flip}"],
    "target-for-conditional": ["conditional", "--target", "a"],
    "unknown-construction": ["no-such-construction"],
    "vocab-unknown-kind": ["unconditional", "--vocab", "greek"],
    "vocab-letters-not-integer": ["unconditional", "--vocab", "letters:x"],
    "vocab-letters-too-many": ["unconditional", "--vocab", "letters:30"],
    "vocab-letters-too-few": ["unconditional", "--vocab", "letters:1"],
    "vocab-literal-repeated": ["unconditional", "--vocab", "literal:abca"],
    "vocab-literal-empty": ["unconditional", "--vocab", "literal:"],
}


@pytest.mark.parametrize("args", list(BAD_EXPORTS.values()), ids=list(BAD_EXPORTS))
def test_bad_export_input_exits_2_and_creates_nothing(capsys, tmp_path, map_files, args):
    out = tmp_path / "out"
    paths = {**{k: str(v) for k, v in map_files.items()}, "missing": str(tmp_path / "missing.json")}
    argv = ["export", args[0], "--out", out, *[a.format(**paths) if a.startswith("{") else a for a in args[1:]]]
    before = set(tmp_path.iterdir())
    code, stdout, err = cli(capsys, *argv)
    assert_usage_error(code, err)
    assert not out.exists()
    assert set(tmp_path.iterdir()) == before  # no staging directory either


def test_export_into_a_missing_parent_directory_exits_2(capsys, tmp_path):
    code, _, err = cli(capsys, "export", "unconditional", "--out", tmp_path / "a" / "b", "--target", "hi")
    assert_usage_error(code, err)
    assert list(tmp_path.iterdir()) == []


def test_export_onto_an_existing_file_exits_2_and_leaves_it(capsys, tmp_path):
    out = tmp_path / "file"
    out.write_text("mine")
    code, _, err = cli(capsys, "export", "unconditional", "--out", out, "--target", "hi")
    assert_usage_error(code, err)
    assert out.read_text() == "mine"
    assert {p.name for p in tmp_path.iterdir()} == {"file"}


@pytest.mark.parametrize(
    "args",
    [["unconditional", "--target", "hi", "--response-length", "3"],
     ["conditional", "--length", "3"],
     ["long-response", "--vocab", "letters:4", "--length", "2"]],
    ids=["response-length-for-unconditional", "length-for-conditional", "length-for-long-response"],
)
def test_an_option_the_construction_does_not_take_is_a_usage_error(tmp_path, args):
    out = tmp_path / "out"
    result = cli_subprocess("export", args[0], "--out", out, *args[1:])
    assert "Traceback" not in result.stderr
    assert result.returncode == 2
    assert not out.exists()


def test_letters_vocabulary_out_of_range_names_the_range(capsys, tmp_path):
    code, _, err = cli(capsys, "export", "unconditional", "--out", tmp_path / "o", "--vocab", "letters:30")
    assert_usage_error(code, err)
    assert "26" in err


def test_bad_export_end_to_end_has_no_traceback(tmp_path):
    out = tmp_path / "out"
    result = cli_subprocess("export", "unconditional", "--out", out, "--target", "x" * 21)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "verify: error: target has 21 characters; this construction generates at most N = 20"
    ]
    assert not out.exists()


# --- the other constructions ------------------------------------------------------------------
def test_conditional_case_flip_export_passes_check_export_and_flips_case_in_pytorch(capsys, tmp_path, map_files):
    out = tmp_path / "flip"
    code, _, _ = cli(capsys, "export", "conditional", "--out", out, "--map", map_files["flip"])
    assert code == 0
    assert {p.name for p in out.iterdir()} == FILES
    code, stdout, err, verdict = check_export(capsys, out, tmp_path)
    assert code == 0, stdout
    assert verdict["construction"] == "conditional" and verdict["holds"] is True
    assert verdict["checks"]["virtual_tokens"] == {"holds": True, "user_inputs": 94, "correct": 94}

    config = read_config(out)
    vocab = Vocabulary.from_string(config["vocabulary"])
    assert config["task"] == case_flip(vocab.symbols)
    model = SpecTransformer(load_spec(out, config))
    model.load_state_dict(load_torch_file(str(out / "model.safetensors")), strict=True)
    virtual = load_torch_file(str(out / "virtual_tokens.safetensors"))["virtual_tokens"]
    typed = "fA7?z"
    tokens = torch.tensor([[0, int(vocab.encode(c)[0])] for c in typed])  # placeholder, then the user's token
    answers = model.generate(tokens, 1, virtual[None].expand(len(typed), -1, -1), (0,))
    assert vocab.decode(answers[:, 0].tolist()) == "Fa7?Z"
    reference = Conditional(Vocabulary.printable_ascii())
    assert np.array_equal(load_file(str(out / "virtual_tokens.safetensors"))["virtual_tokens"],
                          reference.virtual_tokens(reference.parse_task(case_flip(vocab.symbols)))[0])


def test_small_long_response_export_with_a_map_passes_check_export(capsys, tmp_path):
    mapping = {"A": "BCD", "B": "A", "C": "", "D": "DDD"}
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps(mapping))
    out = tmp_path / "long"
    code, _, _ = cli(capsys, "export", "long-response", "--out", out, "--map", map_file,
                     "--vocab", "letters:4", "--response-length", "3")
    assert code == 0
    assert {p.name for p in out.iterdir()} == FILES
    config = read_config(out)
    assert config["params"]["response_length"] == 3 and config["vocabulary"] == "ABCD"
    assert config["prompt"]["virtual_positions"] == [0, 1, 2]
    assert config["task"] == {"A": "BCD", "B": "AAA", "C": "AAA", "D": "DDD"}  # padded with symbol 0 = 'A'
    code, stdout, err, verdict = check_export(capsys, out, tmp_path)
    assert code == 0, stdout
    assert verdict["construction"] == "long-response" and verdict["holds"] is True
    assert verdict["checks"]["virtual_tokens"] == {"holds": True, "user_inputs": 4, "correct": 4}
