"""A construction in TransformerLens: the same spec as a float64 ``TransformerBridge`` (TL >= 4.0).

TransformerLens 4.0 removed ``HookedTransformer`` and ``HookedTransformerConfig``. Their offline
successor is TL's own transformer, ``TransformerBridge.boot_native(TransformerBridgeConfig(...))``
(no Hugging Face model, no download), which loads a state dict in HookedTransformer's property
format (``blocks.0.attn.W_Q`` of shape (n_heads, d_model, d_head) ...) through TL's
``convert_tl_checkpoint``, and fires HookedTransformer's hook names (``hook_embed``,
``blocks.0.attn.hook_pattern``, ``blocks.0.hook_resid_post`` ...). That is what this module builds.

Weights, promptproof -> TL (HookedTransformer names; h < H_l real heads of block l; H = max_l H_l,
e = max_l max(d_head_l, d_v_l), m = max_l d_mlp_l; "pad" = zeros in the new rows/columns/heads):

    embed.W_E (V, d), pos_embed.W_pos (n_ctx, d)     -> the same names and arrays
    blocks.l.attn.W_Q, W_K  (H_l, d, d_head_l)       -> (H, d, e)   pad   (W_Q also times q_fold)
    blocks.l.attn.b_Q, b_K  (H_l, d_head_l)          -> (H, e)      pad   (b_Q also times q_fold)
    blocks.l.attn.W_V       (H_l, d, d_v_l)          -> (H, d, e)   pad
    blocks.l.attn.b_V       (H_l, d_v_l)             -> (H, e)      pad
    blocks.l.attn.W_O       (H_l, d_v_l, d)          -> (H, e, d)   pad
    blocks.l.attn.b_O       (d,)                     -> (d,)
    blocks.l.mlp.W_in (d, m_l), b_in (m_l,)          -> (d, m), (m,)  pad (zeros where absent)
    blocks.l.mlp.W_out (m_l, d), b_out (d,)          -> (m, d), (d,)  pad (zeros where absent)
    unembed.W_U (d, V), unembed.b_U (V,)             -> the same

TL's config has one head count, one head width (for queries, keys and values alike) and one MLP
width for all blocks; the spec allows each block its own, MLP-less blocks and blocks without
heads. The padding is exact, not approximate: a zero column of W_Q and W_K adds 0 * 0 to every
dot product; a padded head has W_V = b_V = 0, so its mixed value is exactly 0 whatever it
attends to, and its W_O rows are 0; a padded hidden unit has ReLU(0 + 0) = 0 and a zero row of
W_out. With no block having an MLP, the config is ``attn_only``.

Attention scale: the spec multiplies q.k by ``attention_scale``; TL divides by ``cfg.attn_scale``,
so attn_scale = 1 / attention_scale and q_fold = 1, except where that makes attn_scale = 1 with
e > 1, which TL refuses as "unscaled attention" (the constructions use scale 1 and fold their
inverse temperature into W_Q). Then attn_scale = 2 and q_fold = 2 * attention_scale: scores are
(2 s q).k / 2, and multiplying and dividing by 2 is exact in binary floating point.

Virtual tokens enter through a forward hook on ``hook_embed`` (the token embedding W_E[token],
before TL adds the positional embedding): it replaces the embedding at the virtual positions
with the virtual token vectors; TL then adds W_pos[position] as for any token. That is exactly
:func:`constructions.forward.embed` (soft prompting). The bridge's forward takes token ids, so the
ids at virtual positions are placeholders (0), as in :meth:`Construction.prompt_tokens`.

Norms and activation: TL has one ``normalization_type`` (one eps) for the norm before every
attention, every MLP and the unembedding (``ln_final``), and one ``act_fn``. A spec whose blocks
all have a LayerNorm ``ln1``, whose MLP blocks have a LayerNorm ``ln2``, which has a LayerNorm
``ln_final``, all with the same eps, is exported with normalization_type "LN" and cfg.eps
(``blocks.l.ln1.w/b``, ``blocks.l.ln2.w/b``, ``ln_final.w/b`` in the state dict; an MLP-less
block's ln2 gets w = 1, b = 0 and feeds the all-zero padded MLP, so it adds exactly 0); act_fn
is "relu" or "gelu" (TL's "gelu" is F.gelu, the exact erf form, as the spec's). This is the
architecture of the training experiments' GPT (``verify.experiments.spec_export``); the
constructions have no norms and keep normalization_type None.

Not expressible, refused with :class:`LensExportError` naming the feature: any other pattern of
norms (a norm missing somewhere, mixed eps), RMSNorm (TL's runs in float32), MLPs with different
activations, and RoPE (TL builds its rotary tables in float32 from an integer base; a float64
parity is impossible).

Files written by :func:`save_lens` (``python -m verify export NAME --format lens --out DIR``):

    tl_config.json                 the keyword arguments of TransformerBridgeConfig ("dtype": "float64")
    tl_model.safetensors           the state dict in HookedTransformer names and shapes, float64
    tl_virtual_tokens.safetensors  (with a task) {"virtual_tokens": (n_virtual, d_model)}
    tl_promptproof.json            construction, vocabulary, prompt layout, task, padding, parity
    load_lens.py                   a loader using only TL's documented API; run it to generate

:func:`save_spec_lens` writes the same files for any spec TL can express (no construction, so
no loader script), after the same parity check on given token ids; :func:`load_lens` reads both.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np

from constructions.construction import Construction
from constructions.errors import ExportError, PromptproofError
from constructions.forward import embed, forward, logits as spec_logits
from constructions.io import read_json, write_directory
from constructions.spec import TransformerSpec

LENS_FORMAT = "promptproof-lens"
LENS_FORMAT_VERSION = 1
LENS_CONFIG_FILE = "tl_config.json"
LENS_MODEL_FILE = "tl_model.safetensors"
LENS_VIRTUAL_FILE = "tl_virtual_tokens.safetensors"
LENS_META_FILE = "tl_promptproof.json"
LENS_LOADER_FILE = "load_lens.py"
# float64 parity of two implementations of the same arithmetic in a different summation order:
# logits are O(1) (the constructions' grid readouts) and one ulp is 2e-16, so 1e-10 leaves six
# orders of magnitude for reordering and still refutes any wrong weight (a dropped bias moves
# logits by ~1e-2).
LENS_TOLERANCE = 1e-10
PARITY_INSTANCES = 16
EXTRA_HINT = "pip install -e '.[lens]' (transformer-lens>=4.0)"

FloatArray = np.ndarray


class LensExportError(ExportError):
    """The spec uses a feature TransformerLens cannot express, or the TL model disagrees."""


class LensUnavailableError(PromptproofError):
    """TransformerLens (the ``lens`` extra) is not installed, or is too old."""


def require_transformer_lens() -> ModuleType:
    """Import ``transformer_lens`` (lazily: it is an optional extra) and check it has the 4.x API
    this module uses (``TransformerBridge.boot_native``); LensUnavailableError otherwise."""
    try:
        lens = importlib.import_module("transformer_lens")
        bridge = importlib.import_module("transformer_lens.model_bridge")
        importlib.import_module("transformer_lens.utilities.tl_checkpoint_conversion")
    except ImportError as exc:
        raise LensUnavailableError(f"the TransformerLens export needs the 'lens' extra ({EXTRA_HINT}): "
                                   f"{exc}") from None
    if not hasattr(bridge.TransformerBridge, "boot_native"):
        raise LensUnavailableError(f"the installed transformer_lens has no TransformerBridge.boot_native; "
                                   f"the TransformerLens export needs transformer-lens>=4.0 ({EXTRA_HINT})")
    return lens


@dataclass(frozen=True)
class LensLayout:
    """How the spec's blocks are fitted into TL's uniform config (see the module docstring)."""

    n_heads: int  # H, heads per block in TL
    d_head: int  # e, query/key/value width in TL
    d_mlp: int | None  # m, or None when no block has an MLP (attn_only)
    attn_scale: float  # TL divides q.k by this
    q_fold: float  # multiplies W_Q and b_Q
    real_heads: tuple[int, ...]  # H_l per block: TL's heads H_l.. of block l are padding

    normalization: str | None = None  # TL's normalization_type: None or "LN"
    eps: float | None = None  # TL's cfg.eps, the one eps of every LayerNorm
    act_fn: str = "relu"  # TL's act_fn: "relu" or "gelu" (exact erf, F.gelu)

    @classmethod
    def of(cls, spec: TransformerSpec) -> "LensLayout":
        """The layout of ``spec``; LensExportError naming a feature TL cannot express."""
        normalization, eps = _normalization(spec)
        activations = sorted({b.mlp.activation for b in spec.blocks if b.mlp is not None})
        if len(activations) > 1:
            raise LensExportError(f"MLP activations {activations}: TransformerLens has one act_fn for every MLP")
        if spec.rotary_base is not None:
            raise LensExportError("rotary position embedding (RoPE): TransformerLens builds its rotary tables in "
                                  "float32 from an integer base, so it cannot reproduce the spec in float64")
        heads = tuple(b.attention.n_heads for b in spec.blocks)
        widths = [max(b.attention.W_Q.shape[2], b.attention.W_V.shape[2]) for b in spec.blocks]
        mlps = [b.mlp.W_in.shape[1] for b in spec.blocks if b.mlp is not None]
        d_head = max([1, *widths])
        attn_scale, q_fold = 1.0 / spec.attention_scale, 1.0
        if d_head > 1 and np.isclose(attn_scale, 1.0, rtol=0.0, atol=1e-9):
            attn_scale, q_fold = 2.0, 2.0 * spec.attention_scale
        return cls(max([1, *heads]), d_head, max(mlps) if mlps else None, attn_scale, q_fold, heads,
                   normalization, eps, activations[0] if activations else "relu")


def _normalization(spec: TransformerSpec) -> tuple[str | None, float | None]:
    """TL's (normalization_type, eps) for the spec's norms: (None, None) without norms; ("LN", eps)
    when every block has a LayerNorm before its attention and before its MLP (an MLP-less block
    may lack ln2: TL's ln2 there gets w = 1, b = 0 and feeds an all-zero MLP), there is a final
    LayerNorm, and every eps is the same. Anything else is a LensExportError naming a norm."""
    norms = spec.norms()
    if not norms:
        return None, None
    why = ("TransformerLens applies one normalization kind, with one eps, before every attention, every MLP "
           "and the unembedding (ln_final)")
    for name, norm in norms.items():
        if norm.kind != "layernorm":
            raise LensExportError(f"{name} ({norm.kind}): {why}, and runs RMSNorm in float32, so it cannot "
                                  "reproduce the spec in float64")
    first_name, first = next(iter(norms.items()))
    required = [f"blocks.{i}.ln1" for i in range(spec.n_layers)]
    required += [f"blocks.{i}.ln2" for i, b in enumerate(spec.blocks) if b.mlp is not None]
    missing = [name for name in [*required, "ln_final"] if name not in norms]
    if missing:
        raise LensExportError(f"{first_name} ({first.kind}): {why}; this spec has no {missing[0]}, so it cannot "
                              "be expressed")
    other = next((name for name, norm in norms.items() if norm.eps != first.eps), None)
    if other is not None:
        raise LensExportError(f"{other} (eps {norms[other].eps:g}) and {first_name} (eps {first.eps:g}): {why}")
    return "LN", first.eps


def lens_config(spec: TransformerSpec, model_name: str = "promptproof") -> dict[str, Any]:
    """The JSON keyword arguments of ``TransformerBridgeConfig`` for ``spec`` ("dtype" as a string)."""
    layout = LensLayout.of(spec)
    return {
        "model_name": model_name,
        "architecture": "TransformerLensNative",
        "d_model": spec.d_model,
        "d_head": layout.d_head,
        "n_heads": layout.n_heads,
        "n_layers": spec.n_layers,
        "n_ctx": spec.n_ctx,
        "d_vocab": spec.vocab_size,
        "d_mlp": layout.d_mlp,
        "attn_only": layout.d_mlp is None,
        "act_fn": layout.act_fn,
        "normalization_type": layout.normalization,
        "positional_embedding_type": "standard",
        "attention_dir": "causal" if spec.causal else "bidirectional",
        "use_attn_scale": True,
        "attn_scale": layout.attn_scale,
        "default_prepend_bos": False,
        "init_weights": False,
        "dtype": "float64",
        **({} if layout.eps is None else {"eps": layout.eps}),
    }


def _pad(array: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    """``array`` in the leading corner of a float64 zero array of ``shape``."""
    out = np.zeros(shape)
    out[tuple(slice(0, n) for n in array.shape)] = array
    return out


def lens_state_dict(spec: TransformerSpec) -> dict[str, FloatArray]:
    """The spec's weights in HookedTransformer's property names and shapes, padded to TL's uniform
    widths and with the attention scale folded as :class:`LensLayout` says (float64, sorted keys)."""
    layout = LensLayout.of(spec)
    H, e, d, m = layout.n_heads, layout.d_head, spec.d_model, layout.d_mlp
    state: dict[str, FloatArray] = {"embed.W_E": np.array(spec.W_E), "pos_embed.W_pos": np.array(spec.W_pos),
                                    "unembed.W_U": np.array(spec.W_U), "unembed.b_U": np.array(spec.b_U)}
    for index, block in enumerate(spec.blocks):
        attn, prefix = block.attention, f"blocks.{index}"
        state[f"{prefix}.attn.W_Q"] = _pad(attn.W_Q * layout.q_fold, (H, d, e))  # (H, d, e)
        state[f"{prefix}.attn.b_Q"] = _pad(attn.b_Q * layout.q_fold, (H, e))  # (H, e)
        state[f"{prefix}.attn.W_K"] = _pad(attn.W_K, (H, d, e))  # (H, d, e)
        state[f"{prefix}.attn.b_K"] = _pad(attn.b_K, (H, e))  # (H, e)
        state[f"{prefix}.attn.W_V"] = _pad(attn.W_V, (H, d, e))  # (H, d, e)
        state[f"{prefix}.attn.b_V"] = _pad(attn.b_V, (H, e))  # (H, e)
        state[f"{prefix}.attn.W_O"] = _pad(attn.W_O, (H, e, d))  # (H, e, d)
        state[f"{prefix}.attn.b_O"] = np.array(attn.b_O)  # (d,)
        if m is not None:
            mlp = block.mlp
            state[f"{prefix}.mlp.W_in"] = np.zeros((d, m)) if mlp is None else _pad(mlp.W_in, (d, m))  # (d, m)
            state[f"{prefix}.mlp.b_in"] = np.zeros(m) if mlp is None else _pad(mlp.b_in, (m,))  # (m,)
            state[f"{prefix}.mlp.W_out"] = np.zeros((m, d)) if mlp is None else _pad(mlp.W_out, (m, d))  # (m, d)
            state[f"{prefix}.mlp.b_out"] = np.zeros(d) if mlp is None else np.array(mlp.b_out)  # (d,)
        if layout.normalization is not None:
            for name in ("ln1", "ln2") if m is not None else ("ln1",):
                norm = getattr(block, name)
                state[f"{prefix}.{name}.w"] = np.ones(d) if norm is None else np.array(norm.w)  # (d,)
                state[f"{prefix}.{name}.b"] = np.zeros(d) if norm is None else np.array(norm.b)  # (d,)
    if layout.normalization is not None:
        state["ln_final.w"], state["ln_final.b"] = np.array(spec.ln_final.w), np.array(spec.ln_final.b)  # (d,)
    return dict(sorted(state.items()))


def build_lens_model(config: dict[str, Any], state: dict[str, Any]) -> Any:
    """A TL ``TransformerBridge`` (eval mode, float64) from JSON config kwargs and a state dict in
    HookedTransformer format (numpy or torch arrays): ``boot_native``, then ``convert_tl_checkpoint``
    and a strict ``load_state_dict``, the steps the written ``load_lens.py`` shows."""
    require_transformer_lens()
    import torch
    from transformer_lens import TransformerBridge, TransformerBridgeConfig
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    settings = dict(config)
    if settings.get("dtype") != "float64":
        raise LensExportError(f"TransformerLens config: dtype {settings.get('dtype')!r}, expected 'float64'")
    settings["dtype"] = torch.float64
    try:
        cfg = TransformerBridgeConfig.from_dict(settings)
        model = TransformerBridge.boot_native(cfg, dtype=torch.float64)
        tensors = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in state.items()}
        model.load_state_dict(convert_tl_checkpoint(tensors, cfg), strict=True)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:  # TL's own shape and key checks
        raise LensExportError(f"TransformerLens refused the weights: {str(exc).splitlines()[0]}") from None
    return model.eval()


def to_transformer_lens(source: TransformerSpec | Construction) -> Any:
    """A spec (or a construction's spec) as a float64 TL ``TransformerBridge``; see the module
    docstring for the mapping. Feed virtual tokens with :func:`virtual_token_hook`."""
    spec = source.spec if isinstance(source, Construction) else source
    name = f"promptproof-{source.name}" if isinstance(source, Construction) else "promptproof"
    return build_lens_model(lens_config(spec, name), lens_state_dict(spec))


def virtual_token_hook(virtual_tokens: np.ndarray, virtual_positions: Sequence[int]) -> tuple[str, Callable]:
    """``("hook_embed", fn)``: fn puts virtual tokens (B, k, d) or (k, d) in place of the token
    embeddings (B, n, d) at ``virtual_positions``; pass it in ``fwd_hooks`` / ``model.hooks(...)``."""
    import torch

    virtual = torch.as_tensor(np.asarray(virtual_tokens, dtype=np.float64))
    positions = list(virtual_positions)

    def replace(embeddings: "torch.Tensor", hook: Any) -> "torch.Tensor":  # (B, n, d) -> (B, n, d)
        out = embeddings.clone()
        out[:, positions] = virtual.to(out.dtype)
        return out

    return "hook_embed", replace


def _hooks(virtual_tokens: np.ndarray | None, virtual_positions: Sequence[int]) -> list[tuple[str, Callable]]:
    return [] if not virtual_positions else [virtual_token_hook(virtual_tokens, virtual_positions)]


def lens_run_with_cache(model: Any, tokens: np.ndarray, virtual_tokens: np.ndarray | None = None,
                        virtual_positions: Sequence[int] = ()) -> tuple[np.ndarray, Any]:
    """TL logits (B, n, V) as numpy and TL's ActivationCache, virtual tokens fed via ``hook_embed``."""
    import torch

    with torch.no_grad(), model.hooks(fwd_hooks=_hooks(virtual_tokens, virtual_positions)):
        out, cache = model.run_with_cache(torch.as_tensor(np.asarray(tokens, dtype=np.int64)))
    return out.numpy(), cache


def lens_logits(model: Any, tokens: np.ndarray, virtual_tokens: np.ndarray | None = None,
                virtual_positions: Sequence[int] = ()) -> np.ndarray:
    """TL logits (B, n, V) for token ids (B, n), virtual tokens fed via ``hook_embed``."""
    import torch

    with torch.no_grad():
        out = model.run_with_hooks(torch.as_tensor(np.asarray(tokens, dtype=np.int64)),
                                   fwd_hooks=_hooks(virtual_tokens, virtual_positions))
    return out.numpy()


def lens_generate(model: Any, prompt_tokens: np.ndarray, steps: int, virtual_tokens: np.ndarray | None = None,
                  virtual_positions: Sequence[int] = ()) -> np.ndarray:
    """Greedy decoding in TL, the whole sequence recomputed each step, as
    :func:`constructions.forward.generate`. prompt_tokens (B, n0) -> (B, steps)."""
    tokens = np.asarray(prompt_tokens, dtype=np.int64)
    n_ctx = model.cfg.n_ctx
    if tokens.shape[1] + steps - 1 > n_ctx:
        raise PromptproofError(f"prompt of length {tokens.shape[1]} plus {steps} steps exceeds the context size "
                               f"{n_ctx}")
    out = np.empty((tokens.shape[0], steps), dtype=np.int64)
    for step in range(steps):
        out[:, step] = lens_logits(model, tokens, virtual_tokens, virtual_positions)[:, -1].argmax(-1)
        tokens = np.concatenate([tokens, out[:, step : step + 1]], axis=1)
    return out


def parity_inputs(construction: Construction, tasks: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced inputs for ``tasks``: token ids (B, n) (random user tokens, then the expected
    response but its last token) and virtual tokens (B, n_virtual, d)."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, construction.vocab.size, size=(len(tasks), construction.n_user_tokens))
    want = construction.expected(tasks, user)  # (B, R)
    tokens = np.concatenate([construction.prompt_tokens(user), want[:, :-1]], axis=1)
    return tokens, construction.virtual_tokens(tasks)


def max_logit_difference(model: Any, construction: Construction, tasks: np.ndarray, seed: int = 0,
                         spec: TransformerSpec | None = None) -> float:
    """max |TL logits - promptproof logits| over every position of the teacher-forced inputs for
    ``tasks`` (promptproof's forward on ``spec``, default the construction's own)."""
    spec = spec or construction.spec
    tokens, virtual = parity_inputs(construction, tasks, seed)
    ours = spec_logits(spec, forward(spec, embed(spec, tokens, virtual, construction.virtual_positions)))
    theirs = lens_logits(model, tokens, virtual, construction.virtual_positions)
    return float(np.max(np.abs(theirs - ours)))


def save_lens(construction: Construction, out: Path, task: np.ndarray | None = None,
              seed: int = 0) -> tuple[list[Path], float]:
    """Write ``construction`` (and the virtual tokens of ``task`` (1, ...)) as TL files into ``out``.

    Before anything is written the TL model is built from exactly the arrays to be saved and its
    logits compared with promptproof's on ``task`` and PARITY_INSTANCES random tasks; a difference
    above LENS_TOLERANCE is a LensExportError. Returns the written paths and that difference."""
    require_transformer_lens()
    spec = construction.spec
    config, state = lens_config(spec, f"promptproof-{construction.name}"), lens_state_dict(spec)
    model = build_lens_model(config, state)
    tasks = construction.random_tasks(np.random.default_rng(seed), PARITY_INSTANCES)
    if task is not None:
        tasks = np.concatenate([task, tasks], axis=0)
    worst = max_logit_difference(model, construction, tasks, seed)
    if not worst <= LENS_TOLERANCE:
        raise LensExportError(f"TransformerLens logits differ from promptproof's by {worst:.3g} > "
                              f"{LENS_TOLERANCE:g}; nothing written")
    layout = LensLayout.of(spec)
    meta = {
        "format": LENS_FORMAT,
        "format_version": LENS_FORMAT_VERSION,
        "construction": construction.name,
        "claim": construction.claim_id,
        "params": construction.params(),
        "vocabulary": "".join(construction.vocab.symbols),
        "transformer_lens": importlib.metadata.version("transformer-lens"),
        "prompt": {
            "virtual_positions": list(construction.virtual_positions),
            "n_user_tokens": construction.n_user_tokens,
            "response_length": construction.response_length,
            "how_virtual_tokens_are_fed": (
                "a forward hook on hook_embed replaces the token embedding at each virtual position with that "
                "virtual token (a d_model vector); TransformerLens then adds W_pos[position] as for any token; "
                "token ids at virtual positions are placeholders (0); user tokens follow; decoding is greedy"),
        },
        "task": None if task is None else construction.task_to_json(task[0]),
        "padding": {"real_heads_per_block": list(layout.real_heads),
                    "d_head_per_block": [b.attention.W_Q.shape[2] for b in spec.blocks],
                    "d_v_per_block": [b.attention.W_V.shape[2] for b in spec.blocks],
                    "d_mlp_per_block": [None if b.mlp is None else b.mlp.W_in.shape[1] for b in spec.blocks],
                    "q_fold": layout.q_fold},
        "parity": {"max_abs_logit_difference": worst, "tolerance": LENS_TOLERANCE, "tasks": len(tasks),
                   "seed": seed},
    }
    from safetensors.numpy import save_file

    files: dict[str, Callable[[Path], None]] = {
        LENS_CONFIG_FILE: lambda path: path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"),
        LENS_MODEL_FILE: lambda path: save_file(state, str(path)),
    }
    if task is not None:
        virtual = np.ascontiguousarray(construction.virtual_tokens(task)[0])  # (n_virtual, d)
        files[LENS_VIRTUAL_FILE] = lambda path: save_file({"virtual_tokens": virtual}, str(path))
    files[LENS_META_FILE] = lambda path: path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    files[LENS_LOADER_FILE] = lambda path: path.write_text(LOADER_SNIPPET)
    stale = () if task is not None else (LENS_VIRTUAL_FILE,)
    return write_directory(out, files, stale=stale), worst


def save_spec_lens(spec: TransformerSpec, out: Path, tokens: np.ndarray, name: str,
                   source: dict[str, Any] | None = None, virtual_tokens: np.ndarray | None = None,
                   virtual_positions: Sequence[int] = ()) -> tuple[list[Path], float]:
    """Write any spec TL can express (e.g. an exported trained GPT: LayerNorm, GELU, ln_final) as
    TL files into ``out``: tl_config.json, tl_model.safetensors, tl_virtual_tokens.safetensors (with
    virtual tokens (k, d) at ``virtual_positions``) and tl_promptproof.json (``source``, the parity);
    no loader script (that one is for constructions). Before anything is written the TL model built
    from exactly these arrays is compared with promptproof's forward on ``tokens`` (B, n) at every
    position; above LENS_TOLERANCE it is a LensExportError. :func:`load_lens` reads it back."""
    require_transformer_lens()
    config, state = lens_config(spec, name), lens_state_dict(spec)
    model = build_lens_model(config, state)
    tokens = np.asarray(tokens, dtype=np.int64)
    virtual = None
    if virtual_positions:
        virtual = np.ascontiguousarray(np.asarray(virtual_tokens, dtype=np.float64))  # (k, d)
    batch_virtual = None if virtual is None else np.broadcast_to(virtual, (len(tokens), *virtual.shape))
    ours = spec_logits(spec, forward(spec, embed(spec, tokens, batch_virtual, tuple(virtual_positions))))
    theirs = lens_logits(model, tokens, virtual, virtual_positions)
    worst = float(np.max(np.abs(theirs - ours)))
    if not worst <= LENS_TOLERANCE:
        raise LensExportError(f"TransformerLens logits differ from promptproof's by {worst:.3g} > "
                              f"{LENS_TOLERANCE:g}; nothing written")
    meta = {
        "format": LENS_FORMAT, "format_version": LENS_FORMAT_VERSION, "construction": None, "name": name,
        "source": dict(source or {}), "transformer_lens": importlib.metadata.version("transformer-lens"),
        "prompt": {"virtual_positions": list(virtual_positions),
                   "how_virtual_tokens_are_fed": "a forward hook on hook_embed replaces the token embedding at each "
                                                 "virtual position; TransformerLens then adds W_pos[position]"},
        "parity": {"max_abs_logit_difference": worst, "tolerance": LENS_TOLERANCE, "inputs": int(tokens.shape[0]),
                   "length": int(tokens.shape[1])},
    }
    from safetensors.numpy import save_file

    files: dict[str, Callable[[Path], None]] = {
        LENS_CONFIG_FILE: lambda path: path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"),
        LENS_MODEL_FILE: lambda path: save_file(state, str(path)),
    }
    if virtual is not None:
        files[LENS_VIRTUAL_FILE] = lambda path: save_file({"virtual_tokens": virtual}, str(path))
    files[LENS_META_FILE] = lambda path: path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    stale = (LENS_LOADER_FILE,) + (() if virtual is not None else (LENS_VIRTUAL_FILE,))
    return write_directory(out, files, stale=stale), worst


@dataclass
class LensExport:
    """An export directory reloaded: the TL model and what promptproof recorded beside it."""

    model: Any  # transformer_lens TransformerBridge, float64
    meta: dict[str, Any]
    virtual_tokens: np.ndarray | None  # (n_virtual, d_model), when a task was exported


def load_lens(directory: Path) -> LensExport:
    """Reload a ``--format lens`` export with TL's API (as ``load_lens.py`` does); ExportError when
    a file is missing or corrupt."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    directory = Path(directory)
    meta = read_json(directory / LENS_META_FILE, ExportError, "TransformerLens export metadata")
    if not isinstance(meta, dict) or meta.get("format") != LENS_FORMAT:
        raise ExportError(f"{directory / LENS_META_FILE} is not a promptproof TransformerLens export")
    config = read_json(directory / LENS_CONFIG_FILE, ExportError, "TransformerLens config")
    tensors: dict[str, dict[str, np.ndarray]] = {}
    for name in (LENS_MODEL_FILE, LENS_VIRTUAL_FILE):
        path = directory / name
        if name == LENS_MODEL_FILE or path.exists():
            try:
                tensors[name] = load_file(str(path))
            except (SafetensorError, OSError, ValueError) as exc:
                raise ExportError(f"{path} is not a readable safetensors file: {exc}") from None
    model = build_lens_model(config, tensors[LENS_MODEL_FILE])
    virtual = tensors.get(LENS_VIRTUAL_FILE, {}).get("virtual_tokens")
    return LensExport(model, meta, virtual)


LOADER_SNIPPET = '''"""Load this promptproof construction into TransformerLens (>= 4.0) and generate greedily.

    python load_lens.py            # prints the response to the exported virtual token(s)

TL 4.x builds its own transformer offline from a TransformerBridgeConfig (boot_native); the
weights are in HookedTransformer's names and shapes (blocks.0.attn.W_Q: (n_heads, d_model, d_head))
and go through TL's convert_tl_checkpoint. Virtual tokens replace the token embedding at their
positions through a hook on hook_embed; TL adds the positional embedding as for any token.
"""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformer_lens import TransformerBridge, TransformerBridgeConfig
from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

HERE = Path(__file__).resolve().parent


def load_model() -> TransformerBridge:
    settings = json.loads((HERE / "tl_config.json").read_text())
    settings["dtype"] = getattr(torch, settings["dtype"])  # "float64"
    cfg = TransformerBridgeConfig.from_dict(settings)
    model = TransformerBridge.boot_native(cfg, dtype=cfg.dtype)
    weights = load_file(str(HERE / "tl_model.safetensors"))  # HookedTransformer format
    model.load_state_dict(convert_tl_checkpoint(weights, cfg), strict=True)
    return model.eval()


def embed_hook(virtual_tokens: torch.Tensor, positions: list[int]):
    """Put the virtual tokens (k, d_model) in place of the token embeddings at ``positions``."""
    def hook(embeddings: torch.Tensor, hook) -> torch.Tensor:  # (batch, n, d_model)
        embeddings = embeddings.clone()
        embeddings[:, positions] = virtual_tokens
        return embeddings
    return ("hook_embed", hook)


@torch.no_grad()
def generate(model, virtual_tokens: torch.Tensor, positions: list[int], user_tokens: list[int],
             steps: int) -> list[int]:
    """Greedy decoding, the whole sequence recomputed each step."""
    tokens = torch.tensor([[0] * len(positions) + list(user_tokens)])  # 0: placeholders
    out = []
    for _ in range(steps):
        logits = model.run_with_hooks(tokens, fwd_hooks=[embed_hook(virtual_tokens, positions)])
        nxt = int(logits[0, -1].argmax())
        out.append(nxt)
        tokens = torch.cat([tokens, torch.tensor([[nxt]])], dim=1)
    return out


if __name__ == "__main__":
    meta = json.loads((HERE / "tl_promptproof.json").read_text())
    model = load_model()
    if not (HERE / "tl_virtual_tokens.safetensors").exists():
        raise SystemExit("no virtual tokens exported (export again with --target or --map)")
    virtual = load_file(str(HERE / "tl_virtual_tokens.safetensors"))["virtual_tokens"]
    prompt = meta["prompt"]
    vocab = meta["vocabulary"]
    n_user = prompt["n_user_tokens"]  # show the responses to a few user inputs
    users = [[(i + j) % len(vocab) for j in range(n_user)] for i in range(1 if n_user == 0 else 3)]
    for user in users:
        response = generate(model, virtual, prompt["virtual_positions"], user, prompt["response_length"])
        print(repr("".join(vocab[i] for i in user)), "->", repr("".join(vocab[i] for i in response)))
'''
