"""Run every measurement of the two real-model claims once per (model directory, seed, config).

Steps (both claims read the same ``SuiteResult``; it is cached, so running both costs one run):
  1. load the model (float32, eager attention) and a float64 copy (``.double()``);
  2. tokenize the sentences into length-sorted, right-padded batches;
  3. make the prefixes: random with n_S in ``random_prefix_lengths`` and one trained (float32)
     on the small task of prefixes.py; all seeds derive from ``seed``;
  4. in each dtype: the no-prefix reference runs at the position ids the library gives the
     content after an n_S-token prefix (one per n_S), one reference at the clean theory's
     positions 0..p-1 (a control), and for each prefix its peft run, the patched run (every
     layer fed the prefix run's inputs, no prefix) and, in float64, the control patched run
     (layer l fed the prefix run's layer l-1 inputs);
  5. measure: identities.measure_layer_zero and shift.measure; for the RoPE decoders also
     decoders.measure (the per-query-head statement with q after RoPE and the cached keys).

Torch runs on 1 thread with denormals flushed during the suite (both restored afterwards): see
THREADS and ``torch_settings``; a fixed thread count also keeps float32 results reproducible.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from constructions.torch_threads import torch_threads
from verify.real_model import capture, decoders, identities, prefixes, shift
from verify.real_model.loading import Batch, LoadedModel, load_model, tokenize
from verify.real_model.sentences import SENTENCES

# One torch thread. The work is many small operations (short sentences, 2-12 per batch): on 2
# threads each one pays an OpenMP barrier, and when another process shares the 2 cores that made
# the measurement 5-15x slower (measured on this machine: 3 s idle, 46 s contended, vs 8-9 s on
# 1 thread either way; training 210 vs 55 ms/step). One thread is also reproducible anywhere.
THREADS = 1
DTYPES = {"float64": torch.float64, "float32": torch.float32}
# Relative singular-value threshold of the output-bias rank (float64 data; rounding ~1e-16).
RANK_RELATIVE = 1e-9


@dataclass(frozen=True)
class SuiteConfig:
    """What to run. The defaults are the checks' configuration; tests use smaller ones."""

    sentences: tuple[int, ...] | None = None  # indices into SENTENCES; None = all
    batch_size: int = 12
    random_prefix_lengths: tuple[int, ...] = (1, 4)
    training: prefixes.TrainingConfig | None = field(default_factory=prefixes.TrainingConfig)


@dataclass
class PrefixKind:
    """One prefix and everything measured with it."""

    name: str
    origin: str  # "random" | "trained"
    n_prefix: int
    layer_zero: dict[str, identities.LayerZero] = field(default_factory=dict)  # by dtype
    shift: dict[str, shift.LayerShift] = field(default_factory=dict)  # by dtype
    bias_rank: dict[str, Any] = field(default_factory=dict)
    rope: dict[str, decoders.RopeGqa] = field(default_factory=dict)  # by dtype; RoPE decoders only


@dataclass
class AttentionMaps:
    """One head of one sentence for the figure (float64, real tokens only)."""

    kind: str
    sentence: str
    tokens: list[str]
    head: int
    layers: list[int]
    reference: list[np.ndarray]  # per layer (p, p)
    prefix_run: list[np.ndarray]  # per layer (p, n_S + p)
    renormalised: list[np.ndarray]  # per layer (p, p)


@dataclass
class SuiteResult:
    model: dict[str, Any]
    data: dict[str, Any]
    kinds: list[PrefixKind]
    training: dict[str, Any] | None
    maps: AttentionMaps
    seconds: dict[str, float]


@contextmanager
def torch_settings(threads: int) -> Iterator[None]:
    """``threads`` torch threads and denormals flushed to zero, restored afterwards.

    Flushing: without it the first training steps of MiniLM run ~25x slower on this CPU
    (subnormal float32 arithmetic); it only changes values below 1.2e-38 (float32) or 2.2e-308
    (float64) to 0, far below every tolerance.
    """
    torch.set_flush_denormal(True)
    try:
        with torch_threads(threads):
            yield
    finally:
        torch.set_flush_denormal(False)


def _seeds(seed: int, count: int) -> list[int]:
    return [int(s) for s in np.random.default_rng([seed, 0x5EC4]).integers(0, 2**31 - 1, size=count)]


def validate(model_dir: Path, config: SuiteConfig = SuiteConfig()) -> None:
    """Raise ModelDirError unless ``model_dir`` loads with eager attention and its tokenizer fits
    the model (ids in the vocabulary, sentences plus prefix within the position table)."""
    loaded = load_model(model_dir, torch.float32)
    tokenize(loaded, _texts(config), config.batch_size, max(_prefix_lengths(config)))


def _texts(config: SuiteConfig) -> list[str]:
    chosen = config.sentences if config.sentences is not None else range(len(SENTENCES))
    return [SENTENCES[i][0] for i in chosen]


def _prefix_lengths(config: SuiteConfig) -> list[int]:
    return list(config.random_prefix_lengths) + ([config.training.n_prefix] if config.training else [])


def run_suite(model_dir: Path, seed: int, config: SuiteConfig = SuiteConfig()) -> SuiteResult:
    """Cached: the same (resolved directory, seed, config) runs once per process."""
    return _run_suite_cached(str(Path(model_dir).resolve()), seed, config)


@functools.lru_cache(maxsize=2)
def _run_suite_cached(model_dir: str, seed: int, config: SuiteConfig) -> SuiteResult:
    with torch_settings(THREADS):
        return _run_suite(Path(model_dir), seed, config)


def _run_suite(model_dir: Path, seed: int, config: SuiteConfig) -> SuiteResult:
    clock = time.perf_counter()
    seconds: dict[str, float] = {}
    loaded32 = load_model(model_dir, torch.float32)
    loaded64 = LoadedModel(copy.deepcopy(loaded32.model).double(), loaded32.tokenizer, loaded32.arch, model_dir)
    loaded = {"float32": loaded32, "float64": loaded64}
    seconds["load"] = time.perf_counter() - clock

    chosen = config.sentences if config.sentences is not None else tuple(range(len(SENTENCES)))
    texts = _texts(config)
    labels = [SENTENCES[i][1] for i in chosen]
    batches = tokenize(loaded32, texts, config.batch_size, max(_prefix_lengths(config)))

    seed_random = _seeds(seed, len(config.random_prefix_lengths) + 1)
    weights: list[tuple[str, str, torch.Tensor]] = [
        (f"random n_S={n}", "random", prefixes.random_prefix(loaded32, n, s))
        for n, s in zip(config.random_prefix_lengths, seed_random)]
    training = None
    if config.training is not None:
        clock = time.perf_counter()
        trained, training = prefixes.train_prefix(loaded32, batches, labels, config.training, seed_random[-1])
        weights.append((f"trained n_S={config.training.n_prefix}", "trained", trained))
        seconds["train"] = time.perf_counter() - clock

    kinds = [PrefixKind(name, origin, int(w.shape[0])) for name, origin, w in weights]
    clock = time.perf_counter()
    maps_source: dict[str, Any] = {}
    for dtype_name, lm in loaded.items():
        base = lm.model
        groups = identities.query_head_groups(lm.n_heads, lm.n_kv_heads)  # (H,) K/V head of each query head
        wrong_groups = identities.wrong_head_groups(lm.n_heads, lm.n_kv_heads)
        flat = [capture.run(lm, base, b) for b in batches]  # clean theory's positions 0..p-1
        refs = {n: [capture.run(lm, base, b, position_ids=lm.arch.shifted_positions(b.ids, n, lm.config))
                    for b in batches] for n in sorted({k.n_prefix for k in kinds})}
        for kind, (_, _, weight) in zip(kinds, weights):
            peft_model = prefixes.attach(base, kind.n_prefix, weight)
            runs = [capture.run(lm, base, b, n_prefix=kind.n_prefix, peft=peft_model) for b in batches]
            keys0, stored0 = prefixes.stored_keys_values(peft_model)[0]  # (H_kv, n_S, d_head) each
            values0 = identities.per_query_head(stored0, groups)  # (H, n_S, d_head)
            wrong0 = None if wrong_groups is None else identities.per_query_head(stored0, wrong_groups)
            patched = [capture.run(lm, base, b, position_ids=lm.arch.shifted_positions(b.ids, kind.n_prefix, lm.config),
                                   patch=run.inputs) for b, run in zip(batches, runs)]
            previous = None
            if dtype_name == "float64":
                previous = [capture.run(lm, base, b, patch=[run.inputs[0]] + run.inputs[:-1])
                            for b, run in zip(batches, runs)]
            out_proj = lm.arch.out_proj(lm.arch.layers(base)[0])
            zero, bias_rows = identities.measure_layer_zero(batches, runs, refs[kind.n_prefix], flat, values0,
                                                            out_proj, lm.causal, wrong0)
            kind.layer_zero[dtype_name] = zero
            kind.shift[dtype_name] = shift.measure(batches, runs, refs[kind.n_prefix], patched, previous, flat,
                                                   lm.n_layers)
            if lm.arch.rope:
                rope = decoders.measure(lm, base, batches, runs, refs[kind.n_prefix], flat, keys0, stored0)
                kind.rope[dtype_name] = rope
                # RoPE scores depend on i - j only: the clean positions change layer 0 through the
                # prefix scores q_i . k_k alone, so the position controls include them (decoders.py)
                layer_shift = kind.shift[dtype_name]
                layer_shift.layer0_vs_unshifted_reference = max(layer_shift.layer0_vs_unshifted_reference,
                                                                rope.unshifted_content_scaling)
            if dtype_name == "float64":
                rank, ratios = identities.numerical_rank(bias_rows, RANK_RELATIVE)
                kind.bias_rank = {"queries": int(bias_rows.shape[0]), "rank": rank,
                                  "bound_heads_times_n_S": lm.n_heads * kind.n_prefix,
                                  "relative_threshold": RANK_RELATIVE,
                                  "second_singular_value_ratio": ratios[1] if len(ratios) > 1 else 0.0}
                maps_source[kind.name] = (runs, refs[kind.n_prefix])
    seconds["measure"] = time.perf_counter() - clock

    figure_kind = kinds[-1]
    maps = _pick_maps(loaded64, batches, texts, figure_kind, *maps_source[figure_kind.name])
    model = {
        "directory": str(model_dir), "model_type": loaded32.arch.model_type, "family": loaded32.arch.family,
        "attention": "causal" if loaded32.causal else "bidirectional",
        "attn_implementation": loaded32.config._attn_implementation,
        "layers": loaded32.n_layers, "heads": loaded32.n_heads, "kv_heads": loaded32.n_kv_heads,
        "d_model": loaded32.d_model, "d_head": loaded32.d_head, "rope": loaded32.arch.rope,
        "versions": _versions(),
    }
    data = {"sentences": len(texts), "tokens": int(sum(int(b.mask.sum()) for b in batches)),
            "batches": len(batches), "padding": "right, length-sorted batches of "
                                                f"<= {config.batch_size} sentences"}
    return SuiteResult(model, data, kinds, training, maps, {k: round(v, 2) for k, v in seconds.items()})


def _pick_maps(lm: LoadedModel, batches: list[Batch], texts: list[str], kind: PrefixKind,
               runs: list[capture.Capture], refs: list[capture.Capture]) -> AttentionMaps:
    """Layer 0 and the layer with the largest shift; there, the head and sentence (of <= 16
    tokens, for a readable map) with the largest total-variation change."""
    table = kind.shift["float64"]
    deep = max(range(1, len(table.shift_max)), key=lambda l: table.shift_max[l]) if len(table.shift_max) > 1 else 0
    best = (-1.0, 0, 0, 0)
    for b, batch in enumerate(batches):
        R = shift.renormalised_content(runs[b], deep)
        diff = (R - refs[b].attn[deep]).abs() * identities.key_mask(batch)
        tv = 0.5 * diff.sum(-1) * identities.query_mask(batch)[..., 0]  # (B, H, p)
        for row in range(batch.ids.shape[0]):
            n = int(batch.mask[row].sum())
            if n > 16:
                continue
            per_head = tv[row].sum(-1)  # (H,)
            head = int(per_head.argmax())
            if float(per_head[head]) > best[0]:
                best = (float(per_head[head]), b, row, head)
    _, b, row, head = best
    batch = batches[b]
    n = int(batch.mask[row].sum())
    ids = batch.ids[row, :n].tolist()
    tokens = [str(t) for t in lm.tokenizer.convert_ids_to_tokens(ids)]
    layers = [0, deep]
    n_s = kind.n_prefix
    ref = [refs[b].attn[l][row, head, :n, :n].numpy() for l in layers]
    pt = [torch.cat([runs[b].attn[l][row, head, :n, :n_s], runs[b].attn[l][row, head, :n, n_s:n_s + n]], -1).numpy()
          for l in layers]
    ren = [shift.renormalised_content(runs[b], l)[row, head, :n, :n].numpy() for l in layers]
    return AttentionMaps(kind.name, texts[batch.rows[row]], tokens, head, layers, ref, pt, ren)


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
