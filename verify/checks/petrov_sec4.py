"""Checks of Section 4 (Petrov et al.): a prefix only scales content attention and adds a bias.

Each claim rests on
  1. a sympy proof for general content length and prefix count (theorems.petrov_sec4.prove),
     with a fixed-size fully expanded cross-check (n = 3 causal, n_S = 2);
  2. randomized float64 instances run through the project's one forward pass
     (constructions.forward, prefix keys/values injected per block): random pre-norm blocks with
     1-4 heads and an output projection W_O, Linear biases on or off, no norm / LayerNorm /
     RMSNorm before attention, RoPE on or off, causal mask, prefix lengths 1, 2, 5 (1 only for
     output-bias), content lengths 1..12; 1,000 instances per claim. The worst absolute error of
     the identity, per head, must be <= TOLERANCE.

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
CONTROL_MIN_ERROR (far above TOLERANCE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from constructions.forward import forward
from constructions.layers import spec_from_layers
from constructions.prefix import prefix_from_vectors, prefix_tuned_forward, soft_prompted_forward
from constructions.spec import TransformerSpec
from theorems.petrov_sec4 import REFUTATIONS, prove
from theorems.strategies import random_layer_weights
from verify.registry import Context, check
from verify.result import Outcome

# Entries are O(1-10) and each identity is a few float64 operations on rows of <= 17 terms
# (plus a norm and a rotation): rounding is ~1e-15 (measured worst ~1e-14 at seed 0), so 1e-12
# leaves two orders of margin.
TOLERANCE = 1e-12
# A control is refuted only when its worst error is this large: 1e6 x TOLERANCE, never rounding.
CONTROL_MIN_ERROR = 1e-6
INSTANCES = 1_000
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
                     d_mlp: int = 0, count: int = INSTANCES) -> Iterator[Instance]:
    """Instances cycling through every architecture option so each is covered evenly."""
    for index in range(count):
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


def soft_prompt_errors(item: Instance) -> tuple[float, float]:
    """(layer 1: soft prompt vs prefix-tuning; control: the same comparison after layer 2, the
    same s fed as layer 2's prefix vectors). Both pass through the same forward; the soft
    prompt runs [s; x] as one sequence, the prefix prepends block-wise keys and values."""
    first = TransformerSpec.build(item.spec.W_E, item.spec.W_pos, item.spec.blocks[:1], item.spec.W_U,
                                  attention_scale=item.spec.attention_scale, rotary_base=item.spec.rotary_base)
    one = _max_abs(soft_prompted_forward(first, item.x, item.s) - prefix_tuned_forward(first, item.x, [item.s]))
    two = _max_abs(soft_prompted_forward(item.spec, item.x, item.s)
                   - prefix_tuned_forward(item.spec, item.x, [item.s, item.s]))
    return one, two


# --- reporting ----------------------------------------------------------------------------------

def _worst(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return max(finite) if finite else float("nan")


def _min(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return min(finite) if finite else float("nan")


def _numeric_control(variant: str, errors: list[float]) -> dict[str, Any]:
    worst, least = _worst(errors), _min(errors)
    return {"variant": variant, "worst_abs_error": worst, "min_abs_error": least,
            "instances": int(sum(not np.isnan(e) for e in errors)),
            "instances_above_tolerance": int(sum(e > TOLERANCE for e in errors if not np.isnan(e))),
            "refuted": worst > CONTROL_MIN_ERROR}


def _control(numeric: dict[str, Any], symbolic: dict[str, Any]) -> dict[str, Any]:
    """A control is refuted only if BOTH its numeric and its symbolic form are refuted."""
    return {**numeric, "symbolic": symbolic, "refuted": numeric["refuted"] and symbolic["refuted"]}


def _by_architecture(items: list[Instance], errors: list[float]) -> dict[str, float]:
    """Worst error per architecture option (heads, biases, norm, RoPE), so each is visible."""
    worst: dict[str, float] = {}
    for item, error in zip(items, errors):
        for option in item.label.split():
            worst[option] = max(worst.get(option, 0.0), error)
    return dict(sorted(worst.items()))


def _evidence(proof: dict[str, bool], items: list[Instance], errors: list[float], prefix_lengths,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    worst = _worst(errors)
    return {
        "summary": f"sympy {sum(proof.values())}/{len(proof)} steps; {len(items)} random blocks "
                   f"(1-{MAX_HEADS} heads, biases, LN/RMSNorm, RoPE), worst |err| {worst:.2e} <= {TOLERANCE:g}",
        "symbolic": {"proof": proof, "holds": all(proof.values())},
        "numeric": {"instances": len(items), "prefix_lengths": list(prefix_lengths),
                    "content_lengths": [1, MAX_CONTENT], "d_model": D_MODEL, "d_head": D_HEAD,
                    "heads": [1, MAX_HEADS], "norms": ["none" if n is None else n for n in NORMS],
                    "rope_base": ROPE_BASE, "mask": "causal", "dtype": "float64",
                    "forward": "constructions.forward.forward with per-block prefix keys/values",
                    "worst_abs_error": worst, "worst_by_architecture": _by_architecture(items, errors),
                    "tolerance": TOLERANCE, **(extra or {})},
    }


@check("petrov.sec4.content-scaling")
def content_scaling(context: Context) -> Outcome:
    cid = "petrov.sec4.content-scaling"
    items = list(random_instances(context.rng(cid), PREFIX_LENGTHS))
    errors = [content_scaling_errors(item) for item in items]
    proof = prove(cid)
    claim_errors = [e[0] for e in errors]
    unshifted = _worst([e[2] for e in errors])
    worst = _worst(claim_errors)
    numeric = _numeric_control("A^pt_ij = A_ij (no (1 - alpha_i) factor)", [e[1] for e in errors])
    control = {"no_scaling_factor": _control(numeric, REFUTATIONS[cid]())}
    extra = {"rope_reference_at_unshifted_positions_worst": unshifted,
             "rope_note": "with RoPE the identity also holds against a reference run at positions 0..n-1, "
                          "because RoPE scores depend only on i - j"}
    holds = all(proof.values()) and worst <= TOLERANCE and unshifted <= TOLERANCE
    return Outcome(holds, _evidence(proof, items, claim_errors, PREFIX_LENGTHS, extra),
                   control, control["no_scaling_factor"]["refuted"])


@check("petrov.sec4.output-bias")
def output_bias(context: Context) -> Outcome:
    cid = "petrov.sec4.output-bias"
    items = list(random_instances(context.rng(cid), (1,)))
    errors = [output_bias_errors(item) for item in items]
    proof = prove(cid)
    claim_errors = [e[0] for e in errors]
    worst, block = _worst(claim_errors), _worst([e[1] for e in errors])
    symbolic = REFUTATIONS[cid]()
    dropped = _numeric_control("t^pt = (1 - alpha) t (bias v_s dropped)", [e[2] for e in errors])
    wrong = _numeric_control("alpha taken from query i-1 (content length >= 2)", [e[3] for e in errors])
    single = _numeric_control("block output bias = a_i u for ONE fixed u (heads >= 2, n >= 2): 2nd singular value",
                              [e[4] for e in errors])
    control = {
        "bias_dropped": _control(dropped, symbolic["bias_dropped"]),
        "alpha_from_wrong_row": _control(wrong, symbolic["alpha_from_wrong_row"]),
        # no symbolic part: the per-head statement's sympy proof already shows which form holds
        "one_direction_for_all_heads": single,
    }
    extra = {"block_level_worst_abs_error": block,
             "block_level_statement": "o^pt_i = b_O + sum_h (1 - alpha^h_i) z^h_i W_O[h] + sum_h alpha^h_i d^h, "
                                      "d^h = v^h_s W_O[h], v^h_s = N1(s) W_V[h] + b_V[h]"}
    holds = all(proof.values()) and worst <= TOLERANCE and block <= TOLERANCE
    return Outcome(holds, _evidence(proof, items, claim_errors, (1,), extra), control,
                   all(c["refuted"] for c in control.values()))


@check("petrov.sec4.multi-prefix-convex")
def multi_prefix_convex(context: Context) -> Outcome:
    cid = "petrov.sec4.multi-prefix-convex"
    items = list(random_instances(context.rng(cid), PREFIX_LENGTHS))
    errors = [multi_prefix_errors(item) for item in items]
    proof = prove(cid)
    claim_errors = [e[0] for e in errors]
    worst, simplex = _worst(claim_errors), _worst([e[1] for e in errors])
    numeric = _numeric_control("beta_ik = A^pt_{i,s_k} (not divided by alpha_i)", [e[2] for e in errors])
    control = {"unnormalised_beta": _control(numeric, REFUTATIONS[cid]())}
    holds = all(proof.values()) and worst <= TOLERANCE and simplex <= TOLERANCE
    evidence = _evidence(proof, items, claim_errors, PREFIX_LENGTHS, {"worst_simplex_violation": simplex})
    return Outcome(holds, evidence, control, control["unnormalised_beta"]["refuted"])


@check("petrov.sec4.soft-prompt-is-prefix-in-layer-1")
def soft_prompt_is_prefix(context: Context) -> Outcome:
    cid = "petrov.sec4.soft-prompt-is-prefix-in-layer-1"
    items = list(random_instances(context.rng(cid), PREFIX_LENGTHS, layers=2, d_mlp=D_MLP))
    errors = [soft_prompt_errors(item) for item in items]
    proof = prove(cid)
    claim_errors = [e[0] for e in errors]
    worst = _worst(claim_errors)
    numeric = _numeric_control("soft prompt vs prefix-tuning (same s at each block) after BLOCK 2 of 2",
                               [e[1] for e in errors])
    control = {"layer_2": _control(numeric, REFUTATIONS[cid]())}
    evidence = _evidence(proof, items, claim_errors, PREFIX_LENGTHS,
                         {"model": "2 pre-norm blocks: attention + residual + ReLU MLP + residual; the "
                                   "prefix at positions 0..n_S-1, content at n_S..n_S+n-1 in both methods"})
    return Outcome(all(proof.values()) and worst <= TOLERANCE, evidence, control, control["layer_2"]["refuted"])
