"""Weights as data: the decoder-only transformer that every construction is written in.

Shapes follow TransformerLens (row vectors, ``x @ W``), so an interpretability engineer reads
them without translation. With residual width ``d``, vocabulary ``V``, context ``n_ctx``:

    x_i^0   = e_i + P_i                        e_i = W_E[token_i] or a virtual token (a d-vector)
    per block, with H heads of widths d_head (queries/keys) and d_v (values):
      h_i   = N1(x_i)                           (pre-attention norm; identity when absent)
      q_i^h = Rot_{p_i}(h_i W_Q[h] + b_Q[h])    k_j^h = Rot_{p_j}(h_j W_K[h] + b_K[h])
      v_j^h = h_j W_V[h] + b_V[h]
      A_ij^h = softmax_j( scale * q_i^h . k_j^h ),  j <= i   (causal)   or all j (non-causal)
      x_i  <- x_i + sum_h (sum_j A_ij^h v_j^h) W_O[h] + b_O
      x_i  <- x_i + act(N2(x_i) W_in + b_in) W_out + b_out       (when the block has an MLP)
    logits_i = N_f(x_i) W_U + b_U                 (N_f: the optional final norm ``ln_final``)

The MLP activation ``act`` is ReLU (the default; every construction) or GELU in its exact erf
form, GELU(z) = z * Phi(z) = z/2 * (1 + erf(z / sqrt 2)) (torch's ``nn.GELU()`` / ``F.gelu``
default and TransformerLens's "gelu"; not the tanh approximation "gelu_new").
The norms are optional (``Norm``): LayerNorm  N(x) = (x - mean x) / sqrt(var x + eps) * w + b
(var the biased variance, as torch's ``nn.LayerNorm``), or RMSNorm  N(x) = x / sqrt(mean x^2 + eps) * w.
Rot_p is the rotary position embedding (RoPE, GPT-NeoX/HF "rotate half" layout) at position p,
used only when ``rotary_base`` is set: for frequency m = 0..d_head/2 - 1, theta_m =
base^(-2m/d_head), the pair of coordinates (m, m + d_head/2) is rotated by the angle p * theta_m.

The constructions of Petrov et al. (Section 3) use neither norms nor RoPE: leaving them out
keeps every map exactly analysable. The Section 4 checks use both, because real models do.
Inverse temperatures are folded into W_Q by the builders; ``attention_scale`` is the explicit
multiplier of the dot products (1.0 for the constructions, 1/sqrt(d_head) for a conventional
model).

The residual stream may carry named, disjoint subspaces (tracr's idea): ``subspaces`` maps a
name to a half-open coordinate range. They are documentation and addressing, never semantics.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Mapping

import numpy as np

from constructions.errors import SpecError

FloatArray = np.ndarray


def _as_f64(name: str, value: object, shape: tuple[int, ...]) -> FloatArray:
    """A read-only float64 copy of ``value`` with exactly ``shape``; SpecError otherwise."""
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise SpecError(f"{name}: expected a numeric array, got dtype {array.dtype}")
    # always a C-ordered copy: the spec owns its weights, and writers that dump raw memory
    # (safetensors' numpy save_file ignores strides) see them in index order
    array = np.array(array, dtype=np.float64, order="C")
    if array.shape != shape:
        raise SpecError(f"{name}: expected shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0].tolist()
        raise SpecError(f"{name}: non-finite value at index {bad}")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Attention:
    """H heads of one block, stacked. H may be 0 (an MLP-only block).

    W_Q, W_K: (H, d, d_head)   W_V: (H, d, d_v)   W_O: (H, d_v, d)
    b_Q, b_K: (H, d_head)      b_V: (H, d_v)      b_O: (d,)
    """

    W_Q: FloatArray
    W_K: FloatArray
    W_V: FloatArray
    W_O: FloatArray
    b_Q: FloatArray
    b_K: FloatArray
    b_V: FloatArray
    b_O: FloatArray

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[0]

    @classmethod
    def build(
        cls,
        d_model: int,
        W_Q: object,
        W_K: object,
        W_V: object,
        W_O: object,
        b_Q: object | None = None,
        b_K: object | None = None,
        b_V: object | None = None,
        b_O: object | None = None,
        where: str = "attention",
    ) -> "Attention":
        """Validate shapes and values; absent biases are zeros."""
        wq = np.asarray(W_Q)
        if wq.ndim != 3:
            raise SpecError(f"{where}.W_Q: expected 3 dimensions (H, d, d_head), got {wq.ndim}")
        n_heads, _, d_head = wq.shape
        wv = np.asarray(W_V)
        if wv.ndim != 3:
            raise SpecError(f"{where}.W_V: expected 3 dimensions (H, d, d_v), got {wv.ndim}")
        d_v = wv.shape[2]
        zeros = np.zeros
        return cls(
            W_Q=_as_f64(f"{where}.W_Q", wq, (n_heads, d_model, d_head)),
            W_K=_as_f64(f"{where}.W_K", W_K, (n_heads, d_model, d_head)),
            W_V=_as_f64(f"{where}.W_V", wv, (n_heads, d_model, d_v)),
            W_O=_as_f64(f"{where}.W_O", W_O, (n_heads, d_v, d_model)),
            b_Q=_as_f64(f"{where}.b_Q", zeros((n_heads, d_head)) if b_Q is None else b_Q, (n_heads, d_head)),
            b_K=_as_f64(f"{where}.b_K", zeros((n_heads, d_head)) if b_K is None else b_K, (n_heads, d_head)),
            b_V=_as_f64(f"{where}.b_V", zeros((n_heads, d_v)) if b_V is None else b_V, (n_heads, d_v)),
            b_O=_as_f64(f"{where}.b_O", zeros(d_model) if b_O is None else b_O, (d_model,)),
        )


ACTIVATIONS = ("relu", "gelu")  # "gelu": the exact erf form (module docstring)


@dataclass(frozen=True, eq=False)
class MLP:
    """act(x W_in + b_in) W_out + b_out.   W_in: (d, d_mlp)  W_out: (d_mlp, d).  act: ACTIVATIONS."""

    W_in: FloatArray
    b_in: FloatArray
    W_out: FloatArray
    b_out: FloatArray
    activation: str = "relu"

    ARRAYS = ("W_in", "b_in", "W_out", "b_out")  # the weight fields, in named_arrays order

    @classmethod
    def build(
        cls,
        d_model: int,
        W_in: object,
        W_out: object,
        b_in: object | None = None,
        b_out: object | None = None,
        where: str = "mlp",
        activation: str = "relu",
    ) -> "MLP":
        if activation not in ACTIVATIONS:
            raise SpecError(f"{where}: unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        w_in = np.asarray(W_in)
        if w_in.ndim != 2:
            raise SpecError(f"{where}.W_in: expected 2 dimensions (d, d_mlp), got {w_in.ndim}")
        d_mlp = w_in.shape[1]
        return cls(
            W_in=_as_f64(f"{where}.W_in", w_in, (d_model, d_mlp)),
            b_in=_as_f64(f"{where}.b_in", np.zeros(d_mlp) if b_in is None else b_in, (d_mlp,)),
            W_out=_as_f64(f"{where}.W_out", W_out, (d_mlp, d_model)),
            b_out=_as_f64(f"{where}.b_out", np.zeros(d_model) if b_out is None else b_out, (d_model,)),
            activation=activation,
        )


NORM_KINDS = ("layernorm", "rmsnorm")


@dataclass(frozen=True, eq=False)
class Norm:
    """LayerNorm or RMSNorm over the residual width: w, b (d,). RMSNorm has no bias (b = 0)."""

    kind: str
    w: FloatArray
    b: FloatArray
    eps: float = 1e-5

    @classmethod
    def build(cls, d_model: int, kind: str, w: object | None = None, b: object | None = None,
              eps: float = 1e-5, where: str = "norm") -> "Norm":
        if kind not in NORM_KINDS:
            raise SpecError(f"{where}: unknown norm kind {kind!r}; expected one of {NORM_KINDS}")
        if not (np.isfinite(eps) and eps > 0):
            raise SpecError(f"{where}.eps must be a positive finite number, got {eps}")
        bias = np.zeros(d_model) if b is None else b
        if kind == "rmsnorm" and np.any(np.asarray(bias) != 0):
            raise SpecError(f"{where}: RMSNorm has no bias")
        return cls(kind, _as_f64(f"{where}.w", np.ones(d_model) if w is None else w, (d_model,)),
                   _as_f64(f"{where}.b", bias, (d_model,)), float(eps))


@dataclass(frozen=True, eq=False)
class Block:
    """One transformer block; ``ln1``/``ln2`` are the optional norms before attention / MLP."""

    attention: Attention
    mlp: MLP | None
    ln1: Norm | None = None
    ln2: Norm | None = None


@dataclass(frozen=True, eq=False)
class TransformerSpec:
    """A complete decoder-only transformer. Build with :meth:`build` (validates everything).

    W_E: (V, d)   W_pos: (n_ctx, d)   W_U: (d, V)   b_U: (V,)   ln_final: optional Norm (d,)

    Weights go to disk as :meth:`named_arrays`; everything else a spec is (attention scale,
    causality, subspaces, RoPE base, each norm's kind and eps, each MLP's activation) is
    :meth:`layout`, a JSON-able dict, and ``from_named_arrays(spec.named_arrays(), **spec.layout())``
    rebuilds the spec exactly.
    """

    W_E: FloatArray
    W_pos: FloatArray
    blocks: tuple[Block, ...]
    W_U: FloatArray
    b_U: FloatArray
    attention_scale: float = 1.0
    causal: bool = True
    subspaces: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    rotary_base: float | None = None
    ln_final: Norm | None = None  # the norm before the unembedding (TransformerLens's ln_final)

    @property
    def uses_norms_or_rotary(self) -> bool:
        """True when the spec leaves the construction architecture: norms (per block or final),
        RoPE, or an MLP activation other than ReLU."""
        return self.rotary_base is not None or self.ln_final is not None or any(
            b.ln1 is not None or b.ln2 is not None or (b.mlp is not None and b.mlp.activation != "relu")
            for b in self.blocks)

    @property
    def d_model(self) -> int:
        return self.W_E.shape[1]

    @property
    def vocab_size(self) -> int:
        return self.W_E.shape[0]

    @property
    def n_ctx(self) -> int:
        return self.W_pos.shape[0]

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def subspace(self, name: str) -> slice:
        """The coordinates of a named residual subspace, as a slice."""
        if name not in self.subspaces:
            raise SpecError(f"no residual subspace named {name!r}; have {sorted(self.subspaces)}")
        start, stop = self.subspaces[name]
        return slice(start, stop)

    @classmethod
    def build(
        cls,
        W_E: object,
        W_pos: object,
        blocks: list[Block] | tuple[Block, ...],
        W_U: object,
        b_U: object | None = None,
        attention_scale: float = 1.0,
        causal: bool = True,
        subspaces: Mapping[str, tuple[int, int]] | None = None,
        rotary_base: float | None = None,
        ln_final: Norm | None = None,
    ) -> "TransformerSpec":
        w_e = np.asarray(W_E)
        if w_e.ndim != 2 or w_e.shape[0] < 1 or w_e.shape[1] < 1:
            raise SpecError(f"W_E: expected a non-empty (V, d) matrix, got shape {w_e.shape}")
        vocab_size, d_model = w_e.shape
        w_pos = np.asarray(W_pos)
        if w_pos.ndim != 2 or w_pos.shape[0] < 1:
            raise SpecError(f"W_pos: expected a non-empty (n_ctx, d) matrix, got shape {w_pos.shape}")
        scale = float(attention_scale)
        if not np.isfinite(scale) or scale <= 0:
            raise SpecError(f"attention_scale must be a positive finite number, got {attention_scale}")
        for index, block in enumerate(blocks):
            if not isinstance(block, Block):
                raise SpecError(f"blocks[{index}]: expected a Block, got {type(block).__name__}")
            _check_block_width(block, d_model, index)
            if rotary_base is not None and block.attention.W_Q.shape[2] % 2:
                raise SpecError(f"blocks[{index}].attn: RoPE needs an even d_head, got {block.attention.W_Q.shape[2]}")
        if ln_final is not None and (not isinstance(ln_final, Norm) or ln_final.w.shape != (d_model,)):
            raise SpecError(f"ln_final: expected a Norm of width d_model {d_model}")
        if rotary_base is not None and not (np.isfinite(rotary_base) and rotary_base > 1):
            raise SpecError(f"rotary_base must be a finite number > 1, got {rotary_base}")
        spaces = dict(subspaces or {})
        for name, (start, stop) in spaces.items():
            if not (0 <= start < stop <= d_model):
                raise SpecError(f"subspace {name!r}: range [{start}, {stop}) outside [0, {d_model})")
        ordered = sorted(spaces.items(), key=lambda item: item[1])
        for (name_a, (_, stop_a)), (name_b, (start_b, _)) in zip(ordered, ordered[1:]):
            if start_b < stop_a:
                raise SpecError(f"subspaces {name_a!r} and {name_b!r} overlap")
        return cls(
            W_E=_as_f64("W_E", w_e, (vocab_size, d_model)),
            W_pos=_as_f64("W_pos", w_pos, (w_pos.shape[0], d_model)),
            blocks=tuple(blocks),
            W_U=_as_f64("W_U", W_U, (d_model, vocab_size)),
            b_U=_as_f64("b_U", np.zeros(vocab_size) if b_U is None else b_U, (vocab_size,)),
            attention_scale=scale,
            causal=bool(causal),
            subspaces={name: (int(a), int(b)) for name, (a, b) in spaces.items()},
            rotary_base=None if rotary_base is None else float(rotary_base),
            ln_final=ln_final,
        )

    def norms(self) -> dict[str, Norm]:
        """Every norm under its weight-name prefix: 'blocks.l.ln1', 'blocks.l.ln2', 'ln_final'."""
        out = {f"blocks.{index}.{name}": getattr(block, name)
               for index, block in enumerate(self.blocks) for name in ("ln1", "ln2")
               if getattr(block, name) is not None}
        if self.ln_final is not None:
            out["ln_final"] = self.ln_final
        return out

    def named_arrays(self) -> dict[str, FloatArray]:
        """Every weight under a stable, TransformerLens-like name (the export format)."""
        arrays: dict[str, FloatArray] = {"embed.W_E": self.W_E, "pos_embed.W_pos": self.W_pos}
        for index, block in enumerate(self.blocks):
            for norm_name in ("ln1", "ln2"):
                norm = getattr(block, norm_name)
                if norm is not None:
                    arrays[f"blocks.{index}.{norm_name}.w"] = norm.w
                    arrays[f"blocks.{index}.{norm_name}.b"] = norm.b
            for item in fields(Attention):
                arrays[f"blocks.{index}.attn.{item.name}"] = getattr(block.attention, item.name)
            if block.mlp is not None:
                for name in MLP.ARRAYS:
                    arrays[f"blocks.{index}.mlp.{name}"] = getattr(block.mlp, name)
        if self.ln_final is not None:
            arrays["ln_final.w"] = self.ln_final.w
            arrays["ln_final.b"] = self.ln_final.b
        arrays["unembed.W_U"] = self.W_U
        arrays["unembed.b_U"] = self.b_U
        return arrays

    def layout(self) -> dict:
        """The keyword arguments of :meth:`from_named_arrays` besides the arrays (JSON-able):
        n_layers, attention_scale, causal, subspaces, rotary_base, norms {name: {kind, eps}} and
        activations {'blocks.l.mlp': act} for the MLPs whose activation is not ReLU."""
        return {
            "n_layers": self.n_layers,
            "attention_scale": self.attention_scale,
            "causal": self.causal,
            "subspaces": {name: [a, b] for name, (a, b) in self.subspaces.items()},
            "rotary_base": self.rotary_base,
            "norms": {name: {"kind": norm.kind, "eps": norm.eps} for name, norm in self.norms().items()},
            "activations": {f"blocks.{index}.mlp": block.mlp.activation for index, block in enumerate(self.blocks)
                            if block.mlp is not None and block.mlp.activation != "relu"},
        }

    @classmethod
    def from_named_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        n_layers: int,
        attention_scale: float,
        causal: bool,
        subspaces: Mapping[str, tuple[int, int]] | None = None,
        rotary_base: float | None = None,
        norms: Mapping[str, Mapping[str, object]] | None = None,
        activations: Mapping[str, str] | None = None,
    ) -> "TransformerSpec":
        """Inverse of :meth:`named_arrays`; every shape and value is validated again.

        ``norms`` gives the kind and eps of every norm whose weights are in ``arrays``
        ('blocks.0.ln1': {'kind': 'layernorm', 'eps': 1e-5}; :meth:`layout` writes it): a norm's
        weights without its entry, or an entry without weights, is a SpecError. ``activations``
        names the MLPs that are not ReLU ('blocks.0.mlp': 'gelu')."""
        norms = dict(norms or {})
        activations = dict(activations or {})

        def take(name: str) -> np.ndarray:
            if name not in arrays:
                raise SpecError(f"missing weight {name!r}")
            return arrays[name]

        def norm(name: str, d_model: int) -> Norm | None:
            if f"{name}.w" not in arrays and name not in norms:
                return None
            if name not in norms:
                raise SpecError(f"weight {name + '.w'!r} given, but not its norm's kind and eps (norms[{name!r}])")
            entry = norms.pop(name)
            if not isinstance(entry, Mapping) or set(entry) != {"kind", "eps"}:
                raise SpecError(f"norms[{name!r}]: expected {{'kind': ..., 'eps': ...}}, got {entry!r}")
            try:
                eps = float(entry["eps"])
            except (TypeError, ValueError):
                raise SpecError(f"norms[{name!r}].eps: expected a number, got {entry['eps']!r}") from None
            return Norm.build(d_model, str(entry["kind"]), take(f"{name}.w"), take(f"{name}.b"), eps, where=name)

        d_model = np.asarray(take("embed.W_E")).shape[-1]
        blocks = []
        for index in range(n_layers):
            prefix = f"blocks.{index}"
            attention = Attention.build(
                d_model,
                **{item.name: take(f"{prefix}.attn.{item.name}") for item in fields(Attention)},
                where=f"{prefix}.attn",
            )
            activation = activations.pop(f"{prefix}.mlp", "relu")
            has_mlp = f"{prefix}.mlp.W_in" in arrays
            if not has_mlp and activation != "relu":
                raise SpecError(f"activations[{prefix + '.mlp'!r}] given, but block {index} has no MLP weights")
            mlp = (
                MLP.build(
                    d_model,
                    **{name: take(f"{prefix}.mlp.{name}") for name in MLP.ARRAYS},
                    where=f"{prefix}.mlp",
                    activation=activation,
                )
                if has_mlp
                else None
            )
            blocks.append(Block(attention, mlp, norm(f"{prefix}.ln1", d_model), norm(f"{prefix}.ln2", d_model)))
        ln_final = norm("ln_final", d_model)
        for name, unused in (("norms", norms), ("activations", activations)):
            if unused:
                raise SpecError(f"{name}[{sorted(unused)[0]!r}] names no part of a {n_layers}-block spec")
        spec = cls.build(
            take("embed.W_E"), take("pos_embed.W_pos"), blocks, take("unembed.W_U"),
            take("unembed.b_U"), attention_scale, causal, subspaces, rotary_base, ln_final,
        )
        extra = sorted(set(arrays) - set(spec.named_arrays()))
        if extra:
            raise SpecError(f"unexpected weight {extra[0]!r} (n_layers={n_layers})")
        return spec

def _check_block_width(block: Block, d_model: int, index: int) -> None:
    for norm in (block.ln1, block.ln2):
        if norm is not None and norm.w.shape != (d_model,):
            raise SpecError(f"blocks[{index}]: norm width {norm.w.shape[0]} != d_model {d_model}")
    if block.attention.W_Q.shape[1] != d_model:
        raise SpecError(
            f"blocks[{index}].attn: residual width {block.attention.W_Q.shape[1]} != d_model {d_model}"
        )
    if block.mlp is not None and block.mlp.W_in.shape[0] != d_model:
        raise SpecError(f"blocks[{index}].mlp: residual width {block.mlp.W_in.shape[0]} != d_model {d_model}")


def no_attention(d_model: int) -> Attention:
    """A block without heads (H = 0): its attention adds nothing to the residual stream."""
    return Attention.build(
        d_model, np.zeros((0, d_model, 0)), np.zeros((0, d_model, 0)),
        np.zeros((0, d_model, 0)), np.zeros((0, 0, d_model)),
    )
