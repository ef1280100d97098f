"""Export and import of constructions: ``model.safetensors`` + ``config.json`` (+ virtual tokens).

Layout of an export directory:
    model.safetensors           every weight, float64, TransformerLens-style names and shapes
    config.json                 architecture, vocabulary, construction parameters, residual
                                subspaces, and how virtual tokens are fed
    virtual_tokens.safetensors  (optional) {"virtual_tokens": (n_virtual, d_model)} for the task
                                recorded in config.json

Writing is all-or-nothing: files go to a temporary directory beside the target, then are moved
in. Same arguments -> byte-identical files (sorted JSON keys, safetensors' deterministic header).

A spec that is not a construction (norms, GELU, RoPE: e.g. a trained GPT exported by
``verify.experiments.spec_export``) goes through :func:`export_spec` / :func:`load_exported_spec`:
the same ``model.safetensors``, and a ``config.json`` of format "promptproof-spec" whose
``architecture`` carries :meth:`TransformerSpec.layout` (each norm's kind and eps, each MLP's
activation, the RoPE base), from which the spec is rebuilt exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from constructions.construction import Construction
from constructions.errors import ExportError, PromptproofError
from constructions.spec import TransformerSpec

FORMAT = "promptproof-construction"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VIRTUAL_FILE = "virtual_tokens.safetensors"


def architecture(spec: TransformerSpec) -> dict[str, Any]:
    """The config's description of ``spec``. The norm, RoPE and activation entries appear only for
    specs that use them, so a construction's config is what it was before they existed."""
    out = {
        "kind": "decoder-only transformer, residual stream, no LayerNorm",
        "weight_conventions": "TransformerLens shapes, row vectors: q = x @ W_Q[h] + b_Q[h]",
        "d_model": spec.d_model,
        "n_layers": spec.n_layers,
        "n_heads": [b.attention.n_heads for b in spec.blocks],
        "d_mlp": [None if b.mlp is None else b.mlp.W_in.shape[1] for b in spec.blocks],
        "n_ctx": spec.n_ctx,
        "vocab_size": spec.vocab_size,
        "attention_scale": spec.attention_scale,
        "causal": spec.causal,
        "activation": "relu",
        "positional_embedding": "learned absolute, added to every input embedding",
        "dtype": "float64",
    }
    if spec.uses_norms_or_rotary:
        layout = spec.layout()
        activations = sorted({b.mlp.activation for b in spec.blocks if b.mlp is not None}) or ["relu"]
        out.update({
            "kind": "decoder-only transformer, residual stream, optional pre-norms and final norm",
            "activation": activations[0] if len(activations) == 1 else activations,
            "norms": layout["norms"],  # {'blocks.l.ln1' | 'blocks.l.ln2' | 'ln_final': {kind, eps}}
            "activations": layout["activations"],  # {'blocks.l.mlp': act} where act is not relu
            "rotary_base": spec.rotary_base,
        })
        if spec.rotary_base is not None:
            out["positional_embedding"] += "; RoPE on queries and keys"
    return out


def export_construction(construction: Construction, out: Path, task: np.ndarray | None = None) -> list[Path]:
    """Write ``construction`` (and virtual tokens for ``task`` (1, ...), if given) into ``out``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    if construction.spec.uses_norms_or_rotary:
        raise ExportError("the export format covers the construction architecture (no norms, no RoPE)")
    config: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "construction": construction.name,
        "claim": construction.claim_id,
        "params": construction.params(),
        "vocabulary": "".join(construction.vocab.symbols),
        "architecture": architecture(construction.spec),
        "subspaces": {k: list(v) for k, v in construction.spec.subspaces.items()},
        "prompt": {
            "virtual_positions": list(construction.virtual_positions),
            "n_user_tokens": construction.n_user_tokens,
            "response_length": construction.response_length,
            "how_virtual_tokens_are_fed": (
                "each virtual token is a d_model vector that replaces the token embedding W_E[token] "
                "at its position (inputs_embeds); the positional embedding W_pos[position] is added "
                "to it as to any token; user tokens follow; decoding is greedy"
            ),
        },
        "task": None if task is None else construction.task_to_json(task[0]),
    }
    files: dict[str, Callable[[Path], None]] = {
        MODEL_FILE: lambda path: save_file(dict(sorted(construction.spec.named_arrays().items())), str(path)),
        CONFIG_FILE: lambda path: path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"),
    }
    if task is not None:
        virtual = np.ascontiguousarray(construction.virtual_tokens(task)[0])
        files[VIRTUAL_FILE] = lambda path: save_file({"virtual_tokens": virtual}, str(path))
    # a previous export's virtual tokens would not match this one
    return write_directory(out, files, stale=() if task is not None else (VIRTUAL_FILE,))


def write_directory(out: Path, files: Mapping[str, Callable[[Path], None]], stale: Iterable[str] = ()) -> list[Path]:
    """Write ``files`` (file name -> a function writing that path) into the directory ``out``,
    all or nothing: each file is written into a temporary directory beside ``out``, and only when
    every writer has succeeded are they moved in (and the files named in ``stale`` removed).
    Returns the written paths, in the order of ``files``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    parent = out.parent if out.parent != Path("") else Path(".")
    if not parent.is_dir():
        raise ExportError(f"parent directory {parent} does not exist")
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.partial-"))
    try:
        for name, write in files.items():
            write(staging / name)
        out.mkdir(exist_ok=True)
        for name in stale:
            if (out / name).exists():
                (out / name).unlink()
        for name in files:
            os.chmod(staging / name, 0o644)  # mkdtemp's private mode must not leak into the export
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / name for name in files]


def read_json(path: Path, error: type[PromptproofError], what: str) -> Any:
    """The JSON value in ``path``; ``error`` with one clear line if it is missing or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} is not valid JSON: {exc}") from None


def read_config(directory: Path) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise ExportError(f"{directory} is not a directory")
    path = directory / CONFIG_FILE
    config = read_json(path, ExportError, "config")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ExportError(f"{path} is not a promptproof construction config")
    if config.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"{path}: unsupported format_version {config.get('format_version')!r}")
    for key, kind in (("construction", str), ("params", dict), ("architecture", dict), ("subspaces", dict),
                      ("prompt", dict)):
        if key not in config:
            raise ExportError(f"{path}: missing field {key!r}")
        if not isinstance(config[key], kind):
            raise ExportError(f"{path}: field {key!r} must be a JSON {'string' if kind is str else 'object'}")
    return config


def _load_tensors(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ExportError(f"missing {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ExportError(f"{path} is not a readable safetensors file: {exc}") from None


def load_spec(directory: Path, config: dict[str, Any]) -> TransformerSpec:
    """The weights on disk as a validated spec (shapes, finiteness); ExportError otherwise."""
    arrays = _load_tensors(Path(directory) / MODEL_FILE)
    for name, array in arrays.items():
        if array.dtype != np.float64:
            raise ExportError(f"{MODEL_FILE}: weight {name!r} has dtype {array.dtype}, expected float64")
    arch = config["architecture"]
    try:
        return TransformerSpec.from_named_arrays(
            arrays, int(arch["n_layers"]), float(arch["attention_scale"]), bool(arch["causal"]),
            {k: tuple(v) for k, v in config["subspaces"].items()},
            rotary_base=arch.get("rotary_base"), norms=arch.get("norms"), activations=arch.get("activations"),
        )
    except PromptproofError as exc:
        raise ExportError(f"{MODEL_FILE}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(f"{CONFIG_FILE}: bad architecture field: {exc}") from None


def load_virtual_tokens(directory: Path, d_model: int, count: int) -> np.ndarray | None:
    path = Path(directory) / VIRTUAL_FILE
    if not path.exists():
        return None
    tensors = _load_tensors(path)
    if set(tensors) != {"virtual_tokens"}:
        raise ExportError(f"{path}: expected exactly one tensor named 'virtual_tokens'")
    virtual = tensors["virtual_tokens"]
    if virtual.dtype != np.float64:
        raise ExportError(f"{path}: dtype {virtual.dtype}, expected float64")
    if virtual.shape != (count, d_model):
        raise ExportError(f"{path}: expected shape {(count, d_model)}, got {tuple(virtual.shape)}")
    if not np.all(np.isfinite(virtual)):
        raise ExportError(f"{path}: non-finite values")
    return virtual


SPEC_FORMAT = "promptproof-spec"
SPEC_FORMAT_VERSION = 1


def export_spec(spec: TransformerSpec, out: Path, name: str, source: Mapping[str, Any] | None = None,
                tensors: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> list[Path]:
    """Write any spec (norms, GELU, RoPE included) into ``out``, all or nothing: ``model.safetensors``
    (:meth:`TransformerSpec.named_arrays`, float64), ``config.json`` (format "promptproof-spec":
    ``architecture`` as :func:`architecture`, from which :func:`load_exported_spec` rebuilds the
    spec exactly, and ``source``, what the caller says produced it), and one safetensors file per
    entry of ``tensors`` (file name -> {tensor name -> float64 array}, e.g. a trained prefix)."""
    config = {"format": SPEC_FORMAT, "format_version": SPEC_FORMAT_VERSION, "name": name,
              "architecture": architecture(spec),
              "subspaces": {k: list(v) for k, v in spec.subspaces.items()},
              "source": dict(source or {}), "files": sorted(tensors or {})}
    files: dict[str, Callable[[Path], None]] = {
        MODEL_FILE: lambda path: save_file(dict(sorted(spec.named_arrays().items())), str(path)),
    }
    for file_name, group in sorted((tensors or {}).items()):
        arrays = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float64)) for k, v in sorted(group.items())}
        files[file_name] = lambda path, arrays=arrays: save_file(arrays, str(path))
    files[CONFIG_FILE] = lambda path: path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return write_directory(out, files)


def load_exported_spec(directory: Path) -> tuple[TransformerSpec, dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Reload an :func:`export_spec` directory: (spec, config, {file name: tensors}); ExportError
    naming the problem when a file is missing, corrupt, of another format or not float64."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ExportError(f"{directory} is not a directory")
    config = read_json(directory / CONFIG_FILE, ExportError, "config")
    if not isinstance(config, dict) or config.get("format") != SPEC_FORMAT:
        raise ExportError(f"{directory / CONFIG_FILE} is not a promptproof spec export")
    if config.get("format_version") != SPEC_FORMAT_VERSION:
        raise ExportError(f"{directory / CONFIG_FILE}: unsupported format_version {config.get('format_version')!r}")
    for key in ("architecture", "subspaces"):
        if not isinstance(config.get(key), dict):
            raise ExportError(f"{directory / CONFIG_FILE}: field {key!r} must be a JSON object")
    spec = load_spec(directory, config)
    extra: dict[str, dict[str, np.ndarray]] = {}
    for file_name in config.get("files", []):
        extra[file_name] = _load_tensors(directory / str(file_name))
        for name, array in extra[file_name].items():
            if array.dtype != np.float64 or not np.all(np.isfinite(array)):
                raise ExportError(f"{file_name}: tensor {name!r} must be finite float64")
    return spec, config, extra
