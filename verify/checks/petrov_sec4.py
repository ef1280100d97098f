"""Checks of Section 4 (Petrov et al.): a prefix only scales content attention and adds a bias.

Each claim rests on
  1. a sympy proof for general content length and prefix count (theorems.petrov_sec4.prove),
     with a fixed-size fully expanded cross-check (n = 3 causal, n_S = 2); the soft-prompt
     claim's proof is at symbolic n_S, n, d, d_head by block matrices (one head, Linear biases);
  2. randomized float64 instances run through the project's one forward pass
     (constructions.forward, prefix keys/values injected per block): random pre-norm blocks with
     1-4 heads and an output projection W_O, Linear biases on or off, no norm / LayerNorm /
     RMSNorm before attention, RoPE on or off, causal mask, prefix lengths 1, 2, 5 (1 only for
     output-bias), content lengths 1..12; 1,000 instances per claim. The worst absolute error of
     the identity, per head, must be <= TOLERANCE.
``Evidence.rung`` is SYMBOLIC when every sympy step holds (the randomized rung then extends the
identity to the architecture options the proof does not cover), else RANDOMIZED.

With biases, norms, RoPE and several heads the identities hold per head h, with the prefix's
key and value for that head in place of the theory's W_K s, W_V s:

    k^h_s = Rot_{p_s}( N1(s) W_K[h] + b_K[h] ),   v^h_s = N1(s) W_V[h] + b_V[h],

and the "fixed direction" of the attention block's output becomes (n_S = 1)

    o^pt_i = b_O + sum_h (1 - alpha^h_i) z^h_i W_O[h]  +  sum_h alpha^h_i d^h,   d^h = v^h_s W_O[h],

i.e. the bias lies in span{d^1..d^H} (dimension <= H, one FIXED vector per head) with
query-dependent weights alpha^h_i in (0, 1); it is not one fixed direction once H >= 2.
The output-bias check verifies this block-level statement and that the naive one-direction
statement fails for H >= 2 (a control).

Controls: a deliberately wrong variant of each identity, run through the same two checkers:
its symbolic difference must not reduce to 0 and its worst numeric error must exceed
CONTROL_MIN_ERROR (far above TOLERANCE). None follows from the pass condition: given that the
true identity holds, each wrong variant's error is a quantity of the instances (the prefix's
attention mass alpha, how alpha varies over queries, how the heads' directions spread), which
could have been negligible. For the soft-prompt claim the difference in block 2 is part of the
claim ("in deeper layers they differ") and so part of the evidence; its controls are wrong
prefix-tuning variants (prefix keys/values without the block's norm; prefix keys rotated one
position late) that the same layer-1 comparison must tell apart from the soft prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import math

import numpy as np
import torch

from constructions.forward import NUMPY, PrefixKV, forward, rotary_angles
from constructions.layers import spec_from_layers
from constructions.prefix import prefix_from_vectors, prefix_tuned_forward, soft_prompted_forward
from constructions.spec import TransformerSpec
from constructions.torch_module import SpecTransformer
from constructions.torch_threads import torch_threads
from theorems.petrov_sec4 import REFUTATIONS, prove
from theorems.strategies import random_layer_weights
from verify.protocol import Control, Evidence, Finding, Rung, compare
from verify.registry import Context, check

# Entries are O(1-10) and each identity is a few float64 operations on rows of <= 17 terms
# (plus a norm and a rotation): rounding is ~1e-15 (measured worst ~1e-14 at seed 0), so 1e-12
# leaves two orders of margin.
TOLERANCE = 1e-12
# A control is refuted only when its worst error is this large: 1e6 x TOLERANCE, never rounding.
CONTROL_MIN_ERROR = 1e-6
INSTANCES = 1_000
# numpy forward vs the torch SpecTransformer (float64 both): the same equations in a different
# order of operations (torch's own layer_norm, its own RoPE, its own mask and softmax), rounding
# ~1e-15 on these O(1-10) entries, so 1e-12 as for the identities.
PARITY_TOLERANCE = 1e-12
# The oracle (python floats, loops, written from the definitions) runs on the first 48
# instances: random_instances cycles heads x biases x norm x RoPE with period 48, so every
# architecture option meets it. Its rounding is that of the numpy forward's, ~1e-15.
ORACLE_INSTANCES = 48
ORACLE_TOLERANCE = 1e-12
PREFIX_LENGTHS = (1, 2, 5)
MAX_CONTENT = 12
D_MODEL = 8
D_HEAD = 4
MAX_HEADS = 4
D_MLP = 16
NORMS = (None, "layernorm", "rmsnorm")
ROPE_BASE = 10_000.0


@dataclass(frozen=True)
class Instance:
    """One random block (or stack), content x (1, n, d) and prefix vectors s (n_S, d)."""

    spec: TransformerSpec
    x: np.ndarray
    s: np.ndarray
    label: str  # e.g. "H=3 biases layernorm rope"


def random_instances(rng: np.random.Generator, prefix_lengths: tuple[int, ...], layers: int = 1,
                     d_mlp: int = 0, count: int | None = None) -> Iterator[Instance]:
    """Instances cycling through every architecture option so each is covered evenly
    (``count``: INSTANCES unless given)."""
    for index in range(INSTANCES if count is None else count):
        heads = 1 + index % MAX_HEADS
        biases = bool((index // MAX_HEADS) % 2)
        norm = NORMS[(index // (2 * MAX_HEADS)) % len(NORMS)]
        rope = bool((index // (6 * MAX_HEADS)) % 2)
        weights = [random_layer_weights(rng, D_MODEL, heads, D_HEAD, biases, norm, d_mlp) for _ in range(layers)]
        spec = spec_from_layers(weights, causal=True, rotary_base=ROPE_BASE if rope else None)
        n_prefix = prefix_lengths[index % len(prefix_lengths)]
        n = int(rng.integers(1, MAX_CONTENT + 1))
        label = f"H={heads} {'biases' if biases else 'no-biases'} {norm or 'no-norm'} {'rope' if rope else 'no-rope'}"
        yield Instance(spec, rng.normal(size=(1, n, D_MODEL)), rng.normal(size=(n_prefix, D_MODEL)), label)


@dataclass(frozen=True)
class Attention:
    """Per-head quantities of block 0, with and without the prefix (batch index dropped)."""

    A: np.ndarray  # (H, n, n)        no prefix
    z: np.ndarray  # (H, n, d_head)   no prefix: t^h_i = sum_j A_ij v^h_j
    A_pt: np.ndarray  # (H, n, n_S + n)
    z_pt: np.ndarray  # (H, n, d_head)
    prefix_values: np.ndarray  # (H, n_S, d_head)
    attn_out_pt: np.ndarray  # (n, d)  the block's attention output with the prefix
    n_prefix: int

    @property
    def alpha(self) -> np.ndarray:  # (H, n, 1)
        return self.A_pt[:, :, : self.n_prefix].sum(-1, keepdims=True)

    @property
    def content(self) -> np.ndarray:  # (H, n, n)
        return self.A_pt[:, :, self.n_prefix:]


def run_block(item: Instance) -> Attention:
    """Block 0 without and with the prefix. The reference run puts the content at the same
    positions n_S..n_S+n-1 as the prefixed run (RoPE sees the same angles)."""
    n_prefix, n = len(item.s), item.x.shape[1]
    plain: dict[str, np.ndarray] = {}
    forward(item.spec, item.x, cache=plain, positions=n_prefix + np.arange(n))
    tuned: dict[str, np.ndarray] = {}
    out = prefix_tuned_forward(item.spec, item.x, [item.s], cache=tuned)
    return Attention(plain["blocks.0.attn.pattern"][0], plain["blocks.0.attn.z"][0],
                     tuned["blocks.0.attn.pattern"][0], tuned["blocks.0.attn.z"][0],
                     prefix_from_vectors(item.spec, 0, item.s).values, (out - item.x)[0], n_prefix)


def _max_abs(a: np.ndarray) -> float:
    return float(np.max(np.abs(a))) if a.size else 0.0


def torch_parity_error(item: Instance) -> float:
    """max |numpy forward - torch SpecTransformer (float64)| on the instance's prefix-tuned run:
    every block gets the prefix keys/values of the vectors s (constructions.prefix), content at
    RoPE positions n_S..n_S+n-1. Torch normalises with torch.nn.functional.layer_norm / its own
    rsqrt, rotates the content with its own code, masks with tril and softmaxes with
    torch.softmax, so a numpy bug in any of these (or a torch bug in scale, mask or biases) shows
    as a difference. Shared by numpy and torch, and so invisible here: ``rotary_angles`` and
    ``spec.attention_scale`` (the oracle below sees those). Call inside torch_threads(1)."""
    spec, x, s = item.spec, item.x, item.s
    prefix = [prefix_from_vectors(spec, layer, s) for layer in range(spec.n_layers)]
    positions = len(s) + np.arange(x.shape[1])
    ours = forward(spec, x, prefix=prefix, positions=positions)
    with torch.no_grad():
        theirs = SpecTransformer(spec).residual(torch.from_numpy(x), prefix, torch.from_numpy(positions)).numpy()
    return _max_abs(ours - theirs)


def oracle_attention_pattern(spec: TransformerSpec, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """TEST ORACLE (an independent oracle for constructions.forward's block-0 attention), written
    directly from the definitions and sharing no code with constructions.forward or
    constructions.torch_module: block 0's causal attention pattern
    (H, n, n) for content x (n, d) at RoPE positions ``positions``, in python floats and loops.

        h_i      = N1(x_i):  LayerNorm (x_i - mu_i) / sqrt(var_i + eps) * w + b, or
                   RMSNorm x_i / sqrt(mean_k x_ik^2 + eps) * w  (or x_i without a norm)
        q_i, k_j = h W_Q[h] + b_Q[h],  h W_K[h] + b_K[h]
        RoPE     : pairs (m, m + e/2) of a width-e head vector rotated by the angle p theta_m,
                   theta_m = base^(-2m/e)  (a, b) -> (a cos - b sin, a sin + b cos)
        A_ij     = exp(q_i.k_j / sqrt(e)) / sum_{r <= i} exp(q_i.k_r / sqrt(e)),  j <= i

    The scale 1/sqrt(e) is the scaled dot-product attention's, applied here explicitly: every
    instance of this module is drawn with spec_from_layers' default, which is that scale, so the
    oracle does not read spec.attention_scale (a bug in how the spec stores it shows)."""
    block, attn = spec.blocks[0], spec.blocks[0].attention
    rows = [[float(v) for v in row] for row in x]
    d = len(rows[0])
    norm = block.ln1
    if norm is not None:
        w, b = [float(v) for v in norm.w], [float(v) for v in np.broadcast_to(norm.b, (d,))]
        normed = []
        for row in rows:
            if norm.kind == "layernorm":
                mu = sum(row) / d
                var = sum((v - mu) ** 2 for v in row) / d
                normed.append([(v - mu) / math.sqrt(var + norm.eps) * w[k] + b[k] for k, v in enumerate(row)])
            else:
                rms = math.sqrt(sum(v * v for v in row) / d + norm.eps)
                normed.append([v / rms * w[k] for k, v in enumerate(row)])
        rows = normed
    heads, e = attn.W_Q.shape[0], attn.W_Q.shape[2]
    n = len(rows)
    out = np.zeros((heads, n, n))

    def project(W: np.ndarray, bias: np.ndarray, head: int, row: list[float]) -> list[float]:
        return [sum(row[k] * float(W[head, k, c]) for k in range(d)) + float(bias[head, c]) for c in range(e)]

    def rope(vector: list[float], p: float) -> list[float]:
        if spec.rotary_base is None:
            return vector
        half, turned = e // 2, list(vector)
        for m in range(half):
            angle = p * spec.rotary_base ** (-2.0 * m / e)
            a, b = vector[m], vector[m + half]
            turned[m], turned[m + half] = a * math.cos(angle) - b * math.sin(angle), a * math.sin(angle) + b * math.cos(angle)
        return turned

    for head in range(heads):
        q = [rope(project(attn.W_Q, attn.b_Q, head, r), float(positions[i])) for i, r in enumerate(rows)]
        k = [rope(project(attn.W_K, attn.b_K, head, r), float(positions[j])) for j, r in enumerate(rows)]
        for i in range(n):
            scores = [sum(a * b for a, b in zip(q[i], k[j])) / math.sqrt(e) for j in range(i + 1)]
            top = max(scores)
            weights = [math.exp(v - top) for v in scores]
            total = sum(weights)
            for j in range(i + 1):
                out[head, i, j] = weights[j] / total
    return out


def oracle_error(item: Instance) -> float:
    """max |oracle pattern - constructions.forward's block-0 pattern| on the content of the
    instance at positions n_S..n_S+n-1 (as in run_block's reference run)."""
    positions = len(item.s) + np.arange(item.x.shape[1])
    cache: dict[str, np.ndarray] = {}
    forward(item.spec, item.x, cache=cache, positions=positions)
    return _max_abs(cache["blocks.0.attn.pattern"][0] - oracle_attention_pattern(item.spec, item.x[0], positions))


def implementation_checks(items: list[Instance]) -> dict[str, Any]:
    """The forward the identities run through, checked against two other implementations: the
    torch module on every instance and the oracle on the first ORACLE_INSTANCES. Without this an
    identity holds for any consistent (even wrong) norm, rotation or scale, since both of its
    sides run the same numpy forward."""
    with torch_threads(1):  # tiny tensors: one thread (constructions/torch_threads.py)
        parity = [torch_parity_error(item) for item in items]
    oracle_items = items[:ORACLE_INSTANCES]
    oracle = [oracle_error(item) for item in oracle_items]
    worst_parity, worst_oracle = _worst(parity), _worst(oracle)
    return {"torch_parity": {"worst_abs_error": worst_parity, "tolerance": PARITY_TOLERANCE,
                             "instances": len(items), "worst_by_architecture": _by_architecture(items, parity),
                             "compared": "constructions.forward.forward vs constructions.torch_module."
                                         "SpecTransformer.residual (float64), prefix-tuned run "
                                         "(prefix keys/values in every block, content at n_S..n_S+n-1)"},
            "oracle": {"worst_abs_error": worst_oracle, "tolerance": ORACLE_TOLERANCE,
                       "instances": len(oracle_items),
                       "worst_by_architecture": _by_architecture(oracle_items, oracle),
                       "compared": "block-0 attention pattern of constructions.forward vs "
                                   "oracle_attention_pattern (definitions: norm, RoPE theta_m = base^(-2m/e), "
                                   "scale 1/sqrt(d_head), causal softmax)"},
            "holds": bool(worst_parity <= PARITY_TOLERANCE and worst_oracle <= ORACLE_TOLERANCE)}


def _implementation_summary(checks: dict[str, Any]) -> str:
    return (f"; numpy vs torch |diff| {compare(checks['torch_parity']['worst_abs_error'], PARITY_TOLERANCE)}, "
            f"vs oracle ({checks['oracle']['instances']}) {compare(checks['oracle']['worst_abs_error'], ORACLE_TOLERANCE)}")


# --- per-instance errors: (claim, control, ...) ------------------------------------------------

def content_scaling_errors(item: Instance) -> tuple[float, float, float]:
    """(A^pt_ij vs A_ij (1 - alpha_i); control A^pt_ij vs A_ij; RoPE: the reference at the
    UNSHIFTED positions 0..n-1, which must agree too because RoPE scores depend on i - j only)."""
    run = run_block(item)
    claim = _max_abs(run.content - run.A * (1 - run.alpha))
    control = _max_abs(run.content - run.A)
    unshifted = float("nan")
    if item.spec.rotary_base is not None:
        cache: dict[str, np.ndarray] = {}
        forward(item.spec, item.x, cache=cache)  # positions 0..n-1
        unshifted = _max_abs(run.content - cache["blocks.0.attn.pattern"][0] * (1 - run.alpha))
    return claim, control, unshifted


def output_bias_errors(item: Instance) -> tuple[float, float, float, float, float]:
    """n_S = 1. (per-head identity; block-level statement; control: bias dropped; control: alpha
    of another query; control: one fixed direction for the whole block (H >= 2 only))."""
    run = run_block(item)
    attn = item.spec.blocks[0].attention
    alpha, bias = run.alpha, run.prefix_values  # (H, n, 1), (H, 1, d_head)
    claim = _max_abs(run.z_pt - ((1 - alpha) * run.z + alpha * bias))
    dropped = _max_abs(run.z_pt - (1 - alpha) * run.z)
    wrong_row = float("nan")
    if item.x.shape[1] > 1:
        wrong = np.roll(alpha, 1, axis=1)
        wrong_row = _max_abs(run.z_pt - ((1 - wrong) * run.z + wrong * bias))
    # block level: o^pt_i = b_O + sum_h (1 - alpha^h_i) z^h_i W_O[h] + sum_h alpha^h_i d^h
    directions = np.einsum("hse,hed->hd", bias, attn.W_O)  # (H, d): d^h = v^h_s W_O[h]
    kept = np.einsum("hne,hed->nd", (1 - alpha) * run.z, attn.W_O) + attn.b_O  # (n, d)
    block_bias = run.attn_out_pt - kept  # (n, d)
    block = _max_abs(block_bias - np.einsum("hn,hd->nd", alpha[..., 0], directions))
    single = float("nan")
    if attn.n_heads >= 2 and item.x.shape[1] >= 2:
        # the naive statement: block_bias_i = a_i * u for ONE fixed u (any u, any a_i). Its best
        # fit is the rank-1 truncation of block_bias; the residual is the 2nd singular value.
        singular = np.linalg.svd(block_bias, compute_uv=False)
        single = float(singular[1]) if len(singular) > 1 else 0.0
    return claim, block, dropped, wrong_row, single


def multi_prefix_errors(item: Instance) -> tuple[float, float, float]:
    """(identity error, simplex error, control error with unnormalised beta)."""
    run = run_block(item)
    on_prefix = run.A_pt[:, :, : run.n_prefix]  # (H, n, n_S)
    beta = on_prefix / run.alpha
    combined = np.einsum("hns,hse->hne", beta, run.prefix_values)  # sum_k beta_ik v^h_k
    claim = _max_abs(run.z_pt - ((1 - run.alpha) * run.z + run.alpha * combined))
    simplex = max(_max_abs(beta.sum(-1) - 1), float(np.max(np.maximum(-beta, 0))))
    unnormalised = np.einsum("hns,hse->hne", on_prefix, run.prefix_values)
    control = _max_abs(run.z_pt - ((1 - run.alpha) * run.z + run.alpha * unnormalised))
    return claim, simplex, control


def first_block(spec: TransformerSpec) -> TransformerSpec:
    """The spec cut after its first block."""
    return TransformerSpec.build(spec.W_E, spec.W_pos, spec.blocks[:1], spec.W_U,
                                 attention_scale=spec.attention_scale, rotary_base=spec.rotary_base)


def variant_prefix(spec: TransformerSpec, vectors: np.ndarray, norm: bool = True, first_position: int = 0) -> PrefixKV:
    """Block 0's prefix keys/values from vectors s, optionally WITHOUT the block's pre-attention
    norm, with RoPE applied at positions first_position..first_position+n_S-1 (the true prefix:
    norm=True, first_position=0, which is ``constructions.prefix.prefix_from_vectors``)."""
    block = spec.blocks[0]
    attn = block.attention
    h = vectors if (block.ln1 is None or not norm) else NUMPY.norm(vectors, block.ln1)
    keys = np.einsum("nd,hde->hne", h, attn.W_K) + attn.b_K[:, None, :]
    values = np.einsum("nd,hde->hne", h, attn.W_V) + attn.b_V[:, None, :]
    if spec.rotary_base is not None:
        positions = first_position + np.arange(len(vectors))
        keys = NUMPY.rotate(keys, *rotary_angles(spec.rotary_base, keys.shape[-1], positions))
    return PrefixKV(keys, values)


def soft_prompt_errors(item: Instance) -> tuple[float, float, float, float]:
    """(layer 1: soft prompt vs prefix-tuning; block 2 of 2: the same comparison with the same s
    fed as block 2's prefix vectors; control: layer 1 against prefix keys/values built without
    the block's norm (NaN without a norm); control: layer 1 against prefix keys rotated at
    positions 1..n_S (NaN without RoPE)). The soft prompt runs [s; x] as one sequence, the
    prefix prepends block-wise keys and values."""
    first = first_block(item.spec)
    soft = soft_prompted_forward(first, item.x, item.s)
    one = _max_abs(soft - prefix_tuned_forward(first, item.x, [item.s]))
    two = _max_abs(soft_prompted_forward(item.spec, item.x, item.s)
                   - prefix_tuned_forward(item.spec, item.x, [item.s, item.s]))
    positions = len(item.s) + np.arange(item.x.shape[1])

    def against(prefix: PrefixKV) -> float:
        return _max_abs(soft - forward(first, item.x, prefix=[prefix], positions=positions))

    no_norm = against(variant_prefix(first, item.s, norm=False)) if first.blocks[0].ln1 is not None else float("nan")
    late = against(variant_prefix(first, item.s, first_position=1)) if first.rotary_base is not None else float("nan")
    return one, two, no_norm, late


# --- reporting ----------------------------------------------------------------------------------

def _worst(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return max(finite) if finite else float("nan")


def _min(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return min(finite) if finite else float("nan")


def _errors_measured(errors: list[float]) -> dict[str, Any]:
    finite = [e for e in errors if not np.isnan(e)]
    return {"worst_abs_error": _worst(errors), "min_abs_error": _min(errors), "instances": len(finite),
            "instances_above_tolerance": int(sum(e > TOLERANCE for e in finite)),
            "instances_above_control_min": int(sum(e > CONTROL_MIN_ERROR for e in finite))}


def numeric_control(name: str, variant: str, errors: list[float], could_fail_because: str,
                    symbolic: dict[str, Any] | None = None, applies_to: str = "every instance") -> Control:
    """The wrong variant through the same checker: refuted when its worst error over the
    instances (``applies_to``) exceeds CONTROL_MIN_ERROR and, if a symbolic form is given, sympy
    does not reduce it to 0 and a witness gives a non-zero value."""
    measured = {**_errors_measured(errors), "applies_to": applies_to}
    refuted = bool(_worst(errors) > CONTROL_MIN_ERROR)
    criterion = f"worst |err| of the wrong variant > {CONTROL_MIN_ERROR:g} over {applies_to}"
    if symbolic is not None:
        measured["symbolic"] = symbolic
        refuted = refuted and bool(symbolic["refuted"])
        criterion += "; and sympy does not reduce its difference to 0 (non-zero at a witness)"
    return Control(name, variant, criterion, measured, refuted, could_fail_because)


def _by_architecture(items: list[Instance], errors: list[float]) -> dict[str, float]:
    """Worst error per architecture option (heads, biases, norm, RoPE), so each is visible."""
    worst: dict[str, float] = {}
    for item, error in zip(items, errors):
        for option in item.label.split():
            worst[option] = max(worst.get(option, 0.0), error)
    return dict(sorted(worst.items()))


def _rung(proof: dict[str, bool]) -> Rung:
    """SYMBOLIC when every sympy step holds; otherwise the randomized check is the rung reached."""
    return Rung.SYMBOLIC if all(proof.values()) else Rung.RANDOMIZED


def _numeric(items: list[Instance], errors: list[float], prefix_lengths, extra: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    return {"instances": len(items), "prefix_lengths": list(prefix_lengths),
            "content_lengths": [1, MAX_CONTENT], "d_model": D_MODEL, "d_head": D_HEAD,
            "heads": [1, MAX_HEADS], "norms": ["none" if n is None else n for n in NORMS],
            "rope_base": ROPE_BASE, "mask": "causal", "dtype": "float64",
            "forward": "constructions.forward.forward with per-block prefix keys/values",
            "worst_abs_error": _worst(errors), "worst_by_architecture": _by_architecture(items, errors),
            "tolerance": TOLERANCE, **(extra or {})}


def _summary(proof: dict[str, bool], items: list[Instance], worst: float, more: str = "") -> str:
    return (f"sympy {sum(proof.values())}/{len(proof)} steps hold (symbolic sizes); {len(items)} random blocks "
            f"(1-{MAX_HEADS} heads, biases, LN/RMSNorm, RoPE): worst |err| {compare(worst, TOLERANCE)}{more}")


def _evidence(holds: bool, summary: str, proof: dict[str, bool], numeric: dict[str, Any],
              extra: dict[str, Any] | None = None) -> Evidence:
    return Evidence(holds, summary, _rung(proof),
                    {"symbolic": {"proof": proof, "all_steps_hold": all(proof.values())}, "numeric": numeric,
                     **(extra or {})})


@check("petrov.sec4.content-scaling", controls=("no_scaling_factor",))
def content_scaling(context: Context) -> Finding:
    cid = "petrov.sec4.content-scaling"
    items = list(random_instances(context.rng(cid), PREFIX_LENGTHS))
    errors = [content_scaling_errors(item) for item in items]
    proof = prove(cid)
    claim_errors = [e[0] for e in errors]
    worst, unshifted = _worst(claim_errors), _worst([e[2] for e in errors])
    impl = implementation_checks(items)
    holds = all(proof.values()) and worst <= TOLERANCE and unshifted <= TOLERANCE and impl["holds"]
    numeric = _numeric(items, claim_errors, PREFIX_LENGTHS, {
        "rope_reference_at_unshifted_positions_worst": unshifted,
        "rope_note": "with RoPE the identity also holds against a reference run at positions 0..n-1, "
                     "because RoPE scores depend only on i - j"})
    summary = _summary(proof, items, worst, f"; RoPE vs unshifted reference {compare(unshifted, TOLERANCE)}"
                       + _implementation_summary(impl))
    control = numeric_control(
        "no_scaling_factor", "A^pt_ij = A_ij (the (1 - alpha_i) factor dropped)", [e[1] for e in errors],
        "given the true identity, this variant's error is alpha_i A_ij: had the random prefixes drawn "
        "negligible attention (alpha_i A_ij <= 1e-6 on every instance, e.g. prefix keys far from every "
        "query), the same checker could not tell the variant from the claim and the control would stand",
        REFUTATIONS[cid]())
    return Finding(_evidence(holds, summary, proof, numeric, {"implementations": impl}), (control,))


@check("petrov.sec4.output-bias", controls=("bias_dropped", "alpha_from_wrong_row", "one_direction_for_all_heads"))
def output_bias(context: Context) -> Finding:
    cid = "petrov.sec4.output-bias"
    items = list(random_instances(context.rng(cid), (1,)))
    errors = [output_bias_errors(item) for item in items]
    proof = prove(cid)
    claim_errors = [e[0] for e in errors]
    worst, block = _worst(claim_errors), _worst([e[1] for e in errors])
    symbolic = REFUTATIONS[cid]()
    impl = implementation_checks(items)
    holds = all(proof.values()) and worst <= TOLERANCE and block <= TOLERANCE and impl["holds"]
    numeric = _numeric(items, claim_errors, (1,), {
        "block_level_worst_abs_error": block,
        "block_level_statement": "o^pt_i = b_O + sum_h (1 - alpha^h_i) z^h_i W_O[h] + sum_h alpha^h_i d^h, "
                                 "d^h = v^h_s W_O[h], v^h_s = N1(s) W_V[h] + b_V[h]"})
    summary = _summary(proof, items, worst, f" per head, block level {compare(block, TOLERANCE)}"
                       + _implementation_summary(impl))
    controls = (
        numeric_control(
            "bias_dropped", "t^pt = (1 - alpha) t (the prefix value v_s dropped)", [e[2] for e in errors],
            "given the true identity, this variant's error is alpha_i |v_s|: a prefix with negligible "
            "attention or a near-zero value vector would make it indistinguishable and the control would stand",
            symbolic["bias_dropped"]),
        numeric_control(
            "alpha_from_wrong_row", "alpha taken from query i-1 instead of query i", [e[3] for e in errors],
            "given the true identity, this variant's error is |alpha_i - alpha_{i-1}| |v_s - t_i|: if the "
            "prefix's attention mass were the same for every query (it depends on the query through "
            "(W_Q x_i).(W_K s) and Z_i), the variant would pass and the control would stand",
            symbolic["alpha_from_wrong_row"], applies_to="instances with content length >= 2"),
        numeric_control(
            "one_direction_for_all_heads",
            "the block's output bias is a_i u for ONE fixed u (any u, any a_i): its residual is the 2nd "
            "singular value of the stacked biases", [e[4] for e in errors],
            "the per-head statement allows a bias spanning up to H directions but does not force it: if the "
            "heads' directions d^h were parallel or their alphas proportional across queries, one direction "
            "would fit and the control would stand",
            applies_to="instances with >= 2 heads and content length >= 2"),
    )
    return Finding(_evidence(holds, summary, proof, numeric, {"implementations": impl}), controls)


@check("petrov.sec4.multi-prefix-convex", controls=("unnormalised_beta",))
def multi_prefix_convex(context: Context) -> Finding:
    cid = "petrov.sec4.multi-prefix-convex"
    items = list(random_instances(context.rng(cid), PREFIX_LENGTHS))
    errors = [multi_prefix_errors(item) for item in items]
    proof = prove(cid)
    claim_errors = [e[0] for e in errors]
    worst, simplex = _worst(claim_errors), _worst([e[1] for e in errors])
    impl = implementation_checks(items)
    holds = all(proof.values()) and worst <= TOLERANCE and simplex <= TOLERANCE and impl["holds"]
    numeric = _numeric(items, claim_errors, PREFIX_LENGTHS, {"worst_simplex_violation": simplex})
    summary = _summary(proof, items, worst, f"; simplex violation {compare(simplex, TOLERANCE)}"
                       + _implementation_summary(impl))
    control = numeric_control(
        "unnormalised_beta", "beta_ik = A^pt_{i,s_k} (not divided by alpha_i)", [e[2] for e in errors],
        "given the true identity, this variant's error is alpha_i (1 - alpha_i) |sum_k beta_ik v_k|: with "
        "prefix mass alpha_i near 0 or 1 on every query, or prefix values averaging to ~0, it would pass "
        "and the control would stand", REFUTATIONS[cid]())
    return Finding(_evidence(holds, summary, proof, numeric, {"implementations": impl}), (control,))


SOFT_SCOPE = ("sympy: one head with Linear biases and the causal mask, block matrices at symbolic n_S, n, d, "
              "d_head (scores, values and mask blocks of the soft-prompted sequence equal prefix-tuning's, "
              "then the reduction lemma); residual and MLP act row-wise (prose); LayerNorm/RMSNorm, RoPE, "
              "several heads with W_O and the MLP are covered by the randomized rung only")


@check("petrov.sec4.soft-prompt-is-prefix-in-layer-1", controls=("prefix_keys_without_norm", "prefix_keys_one_position_late"))
def soft_prompt_is_prefix(context: Context) -> Finding:
    cid = "petrov.sec4.soft-prompt-is-prefix-in-layer-1"
    items = list(random_instances(context.rng(cid), PREFIX_LENGTHS, layers=2, d_mlp=D_MLP))
    errors = [soft_prompt_errors(item) for item in items]
    proof = prove(cid)
    claim_errors, block_2 = [e[0] for e in errors], [e[1] for e in errors]
    worst, least_2 = _worst(claim_errors), _min(block_2)
    deeper = REFUTATIONS[cid]()
    # "in deeper layers they differ": on every random instance, by more than CONTROL_MIN_ERROR,
    # and symbolically (the block steps fail at symbolic sizes once the prefix rows carry S + O)
    differ = least_2 > CONTROL_MIN_ERROR and deeper["refuted"]
    impl = implementation_checks(items)
    holds = all(proof.values()) and worst <= TOLERANCE and differ and impl["holds"]
    numeric = _numeric(items, claim_errors, PREFIX_LENGTHS, {
        "model": "2 pre-norm blocks: attention + residual + ReLU MLP + residual; the prefix at positions "
                 "0..n_S-1, content at n_S..n_S+n-1 in both methods"})
    block_2_measured = {**_errors_measured(block_2), "criterion": f"min |diff| over every instance > "
                        f"{CONTROL_MIN_ERROR:g}, and the symbolic block steps fail for prefix rows S + O",
                        "symbolic": deeper, "holds": bool(differ)}
    summary = _summary(proof, items, worst, f" in block 1; block 2 differs by min "
                       f"{compare(least_2, CONTROL_MIN_ERROR, below=False)}" + _implementation_summary(impl))
    controls = (
        numeric_control(
            "prefix_keys_without_norm",
            "prefix-tuning whose prefix keys/values skip the block's pre-attention norm (W_K s + b_K instead "
            "of W_K N1(s) + b_K), compared with the soft prompt in block 1", [e[2] for e in errors],
            "the layer-1 comparison would miss this if it only looked at content-to-content attention or if "
            "the norm left the prompt vectors (nearly) unchanged; then the wrong prefix would pass as equal to "
            "the soft prompt and the control would stand", applies_to="instances with LayerNorm or RMSNorm"),
        numeric_control(
            "prefix_keys_one_position_late",
            "prefix-tuning whose prefix keys are rotated at positions 1..n_S instead of 0..n_S-1, compared "
            "with the soft prompt in block 1", [e[3] for e in errors],
            "RoPE scores depend on the query-key offset; if the comparison ignored the prefix keys' positions "
            "or the rotation frequencies were too low to move a score by 1e-6 for a one-position shift, the "
            "wrong prefix would pass and the control would stand", applies_to="instances with RoPE"),
    )
    return Finding(_evidence(holds, summary, proof, numeric,
                             {"symbolic_scope": SOFT_SCOPE, "block_2_differs": block_2_measured,
                              "implementations": impl}), controls)
