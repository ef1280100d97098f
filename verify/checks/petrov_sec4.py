"""Checks of Section 4 (Petrov et al.): a prefix only scales content attention and adds a bias.

Each claim rests on
  1. a sympy proof for general content length and prefix count (theorems.petrov_sec4.prove),
     with a fixed-size fully expanded cross-check (n = 3 causal, n_S = 2);
  2. randomized float64 instances: random single-head attention (random W_Q, W_K, W_V, causal
     mask), prefix lengths 1, 2, 5 (1 only for output-bias), content lengths 1..12, 1,000
     instances; the worst absolute error of the identity must be <= TOLERANCE.
Controls: a deliberately wrong variant of each identity, run through the same two checkers:
its symbolic difference must not reduce to 0 and its worst numeric error must exceed
CONTROL_MIN_ERROR (far above TOLERANCE).

The attention here is a self-contained reference written for these identities (prefix keys and
values prepended, the way prefix-tuning is implemented), separate from the construction forward
pass: soft prompting runs the whole sequence [s; x] through the same layer code, prefix-tuning
prepends W_K s_k, W_V s_k to content-only projections, so the two are different code paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from theorems.petrov_sec4 import REFUTATIONS, prove
from verify.registry import Context, check
from verify.result import Outcome

# Entries are O(1-10) and each identity is a few float64 operations on rows of <= 17 terms:
# rounding is ~1e-15 (measured worst 6.4e-15 at seed 0), so 1e-12 leaves over two orders of margin.
TOLERANCE = 1e-12
# A control is refuted only when its worst error is this large: 1e6 x TOLERANCE, never rounding.
CONTROL_MIN_ERROR = 1e-6
INSTANCES = 1_000
PREFIX_LENGTHS = (1, 2, 5)
MAX_CONTENT = 12
D_MODEL = 8
D_HEAD = 4
D_MLP = 16


@dataclass(frozen=True)
class Head:
    W_Q: np.ndarray  # (d_head, d_model)
    W_K: np.ndarray
    W_V: np.ndarray  # (d_model, d_model): output in the residual width
    scale: float

    @staticmethod
    def random(rng: np.random.Generator, d_model: int = D_MODEL, d_head: int = D_HEAD) -> Head:
        return Head(rng.normal(size=(d_head, d_model)), rng.normal(size=(d_head, d_model)),
                    rng.normal(size=(d_model, d_model)) / np.sqrt(d_model), 1 / np.sqrt(d_head))


def softmax_rows(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    scores = np.where(mask, scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(axis=-1, keepdims=True)


def causal(n_queries: int, n_keys: int) -> np.ndarray:
    """Query i (the last n_queries of the n_keys positions) sees keys 0..offset+i."""
    offset = n_keys - n_queries
    return np.arange(n_keys)[None, :] <= offset + np.arange(n_queries)[:, None]


def attend(head: Head, queries: np.ndarray, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Causal attention of ``queries`` (n, d_head) over ``keys``/``values`` (n_keys, .): (A, t)."""
    A = softmax_rows(head.scale * queries @ keys.T, causal(len(queries), len(keys)))
    return A, A @ values


def plain(head: Head, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """No prefix: A (p, p), t (p, d)."""
    return attend(head, x @ head.W_Q.T, x @ head.W_K.T, x @ head.W_V.T)


def prefixed(head: Head, x: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prefix-tuning: keys W_K s_k and values W_V s_k prepended. A^pt (p, n_S + p), t^pt (p, d)."""
    keys = np.concatenate([s @ head.W_K.T, x @ head.W_K.T])
    values = np.concatenate([s @ head.W_V.T, x @ head.W_V.T])
    return attend(head, x @ head.W_Q.T, keys, values)


@dataclass(frozen=True)
class Layer:
    """Attention + residual + ReLU MLP + residual (no LayerNorm, as in the theory)."""

    head: Head
    W_in: np.ndarray
    W_out: np.ndarray

    @staticmethod
    def random(rng: np.random.Generator) -> Layer:
        return Layer(Head.random(rng), rng.normal(size=(D_MLP, D_MODEL)) / np.sqrt(D_MODEL),
                     rng.normal(size=(D_MODEL, D_MLP)) / np.sqrt(D_MLP))

    def mlp(self, h: np.ndarray) -> np.ndarray:
        return h + np.maximum(h @ self.W_in.T, 0) @ self.W_out.T

    def whole(self, h: np.ndarray) -> np.ndarray:
        """Run every position of ``h`` (soft prompting: the prefix positions are ordinary inputs)."""
        return self.mlp(h + plain(self.head, h)[1])

    def with_prefix(self, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Content positions only, with this layer's prefix s prepended as keys/values."""
        return self.mlp(x + prefixed(self.head, x, s)[1])


def soft_prompt(layers: list[Layer], x: np.ndarray, s: np.ndarray) -> np.ndarray:
    h = np.concatenate([s, x])
    for layer in layers:
        h = layer.whole(h)
    return h[len(s):]


def prefix_tuning(layers: list[Layer], x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The same prefix vectors s fed to every layer's attention (as keys/values)."""
    for layer in layers:
        x = layer.with_prefix(x, s)
    return x


def instances(rng: np.random.Generator, prefix_lengths: tuple[int, ...], count: int = INSTANCES):
    for index in range(count):
        n_prefix = prefix_lengths[index % len(prefix_lengths)]
        p = int(rng.integers(1, MAX_CONTENT + 1))
        yield n_prefix, rng.normal(size=(p, D_MODEL)), rng.normal(size=(n_prefix, D_MODEL))


# --- per-instance errors: (claim, control) --------------------------------------------------

def content_scaling_errors(head: Head, x: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    A, _ = plain(head, x)
    A_pt, _ = prefixed(head, x, s)
    alpha = A_pt[:, :len(s)].sum(1)
    content = A_pt[:, len(s):]
    return (float(np.max(np.abs(content - A * (1 - alpha)[:, None]))),
            float(np.max(np.abs(content - A))))  # control: no (1 - alpha) factor


def output_bias_errors(head: Head, x: np.ndarray, s: np.ndarray) -> tuple[float, float, float]:
    _, t = plain(head, x)
    A_pt, t_pt = prefixed(head, x, s)
    alpha = A_pt[:, :1]
    bias = s[0] @ head.W_V.T
    claim = np.max(np.abs(t_pt - ((1 - alpha) * t + alpha * bias)))
    dropped = np.max(np.abs(t_pt - (1 - alpha) * t))
    if len(x) > 1:  # alpha of the previous (cyclically) row
        wrong = np.roll(alpha, 1, axis=0)
        wrong_row = np.max(np.abs(t_pt - ((1 - wrong) * t + wrong * bias)))
    else:
        wrong_row = np.nan
    return float(claim), float(dropped), float(wrong_row)


def multi_prefix_errors(head: Head, x: np.ndarray, s: np.ndarray) -> tuple[float, float, float]:
    """(identity error, simplex error, control error with unnormalised beta)."""
    _, t = plain(head, x)
    A_pt, t_pt = prefixed(head, x, s)
    on_prefix = A_pt[:, :len(s)]
    alpha = on_prefix.sum(1, keepdims=True)
    beta = on_prefix / alpha
    biases = s @ head.W_V.T  # (n_S, d)
    claim = np.max(np.abs(t_pt - ((1 - alpha) * t + alpha * beta @ biases)))
    simplex = max(np.max(np.abs(beta.sum(1) - 1)), float(np.max(np.maximum(-beta, 0))))
    control = np.max(np.abs(t_pt - ((1 - alpha) * t + alpha * on_prefix @ biases)))
    return float(claim), float(simplex), float(control)


def soft_prompt_errors(layers: list[Layer], x: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """(layer 1: soft prompt vs prefix; control: the same comparison after layer 2)."""
    one = np.max(np.abs(soft_prompt(layers[:1], x, s) - prefix_tuning(layers[:1], x, s)))
    two = np.max(np.abs(soft_prompt(layers, x, s) - prefix_tuning(layers, x, s)))
    return float(one), float(two)


def _worst(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return max(finite) if finite else float("nan")


def _min(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return min(finite) if finite else float("nan")


def _numeric_control(variant: str, errors: list[float]) -> dict[str, Any]:
    worst, least = _worst(errors), _min(errors)
    return {"variant": variant, "worst_abs_error": worst, "min_abs_error": least,
            "instances_above_tolerance": int(sum(e > TOLERANCE for e in errors if not np.isnan(e))),
            "refuted": worst > CONTROL_MIN_ERROR}


def _control(numeric: dict[str, Any], symbolic: dict[str, Any]) -> dict[str, Any]:
    """A control is refuted only if BOTH its numeric and its symbolic form are refuted."""
    return {**numeric, "symbolic": symbolic, "refuted": numeric["refuted"] and symbolic["refuted"]}


def _evidence(claim_id: str, proof: dict[str, bool], worst: float, count: int, prefix_lengths, extra=None):
    return {
        "summary": f"sympy {sum(proof.values())}/{len(proof)} steps; {count} random instances, "
                   f"worst |err| {worst:.2e} <= {TOLERANCE:g}",
        "symbolic": {"proof": proof, "holds": all(proof.values())},
        "numeric": {"instances": count, "prefix_lengths": list(prefix_lengths), "content_lengths": [1, MAX_CONTENT],
                    "d_model": D_MODEL, "d_head": D_HEAD, "mask": "causal", "dtype": "float64",
                    "worst_abs_error": worst, "tolerance": TOLERANCE, **(extra or {})},
    }


def _symbolic_control(claim_id: str) -> dict[str, Any]:
    return REFUTATIONS[claim_id]()


@check("petrov.sec4.content-scaling")
def content_scaling(context: Context) -> Outcome:
    cid = "petrov.sec4.content-scaling"
    rng = context.rng(cid)
    errors = [content_scaling_errors(Head.random(rng), x, s) for _, x, s in instances(rng, PREFIX_LENGTHS)]
    proof = prove(cid)
    worst = _worst([e[0] for e in errors])
    symbolic = _symbolic_control(cid)
    numeric = _numeric_control("A^pt_ij = A_ij (no (1 - alpha_i) factor)", [e[1] for e in errors])
    control = {"no_scaling_factor": _control(numeric, symbolic)}
    return Outcome(all(proof.values()) and worst <= TOLERANCE, _evidence(cid, proof, worst, len(errors), PREFIX_LENGTHS),
                   control, control["no_scaling_factor"]["refuted"])


@check("petrov.sec4.output-bias")
def output_bias(context: Context) -> Outcome:
    cid = "petrov.sec4.output-bias"
    rng = context.rng(cid)
    errors = [output_bias_errors(Head.random(rng), x, s) for _, x, s in instances(rng, (1,))]
    proof = prove(cid)
    worst = _worst([e[0] for e in errors])
    symbolic = _symbolic_control(cid)
    dropped = _numeric_control("t^pt = (1 - alpha) t (bias W_V s dropped)", [e[1] for e in errors])
    wrong = _numeric_control("alpha taken from row i-1 (content length >= 2)", [e[2] for e in errors])
    control = {
        "bias_dropped": _control(dropped, symbolic["bias_dropped"]),
        "alpha_from_wrong_row": _control(wrong, symbolic["alpha_from_wrong_row"]),
    }
    return Outcome(all(proof.values()) and worst <= TOLERANCE, _evidence(cid, proof, worst, len(errors), (1,)),
                   control, all(c["refuted"] for c in control.values()))


@check("petrov.sec4.multi-prefix-convex")
def multi_prefix_convex(context: Context) -> Outcome:
    cid = "petrov.sec4.multi-prefix-convex"
    rng = context.rng(cid)
    errors = [multi_prefix_errors(Head.random(rng), x, s) for _, x, s in instances(rng, PREFIX_LENGTHS)]
    proof = prove(cid)
    worst = _worst([e[0] for e in errors])
    simplex = _worst([e[1] for e in errors])
    symbolic = _symbolic_control(cid)
    numeric = _numeric_control("beta_ik = A^pt_{i,s_k} (not divided by alpha_i)", [e[2] for e in errors])
    control = {"unnormalised_beta": _control(numeric, symbolic)}
    holds = all(proof.values()) and worst <= TOLERANCE and simplex <= TOLERANCE
    evidence = _evidence(cid, proof, worst, len(errors), PREFIX_LENGTHS, {"worst_simplex_violation": simplex})
    return Outcome(holds, evidence, control, control["unnormalised_beta"]["refuted"])


@check("petrov.sec4.soft-prompt-is-prefix-in-layer-1")
def soft_prompt_is_prefix(context: Context) -> Outcome:
    cid = "petrov.sec4.soft-prompt-is-prefix-in-layer-1"
    rng = context.rng(cid)
    errors = [soft_prompt_errors([Layer.random(rng), Layer.random(rng)], x, s)
              for _, x, s in instances(rng, PREFIX_LENGTHS)]
    proof = prove(cid)
    worst = _worst([e[0] for e in errors])
    symbolic = _symbolic_control(cid)
    numeric = _numeric_control("soft prompt vs prefix-tuning (same s at each layer) after LAYER 2 of 2",
                               [e[1] for e in errors])
    control = {"layer_2": _control(numeric, symbolic)}
    evidence = _evidence(cid, proof, worst, len(errors), PREFIX_LENGTHS,
                         {"model": "attention + residual + ReLU MLP + residual, no LayerNorm"})
    return Outcome(all(proof.values()) and worst <= TOLERANCE, evidence, control, control["layer_2"]["refuted"])
