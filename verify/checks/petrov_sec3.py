"""Checks of Section 3 (Petrov et al.): the constructions hold for ALL inputs, at exactly which
temperature they start to, and how many behaviours one virtual token reaches.

Each construction claim rests on four pieces of evidence and two refuted controls:
  1. certificate: the interval forward pass over the construction's finite cover of all inputs
     (verify.certificates.cover) proves the right token wins at every read position;
  2. minimal inverse temperature: T* derived and proved with sympy (theorems.petrov_sec3), then
     shown tight on the weights: the certificate holds at T* + delta, and at T* - delta the checker
     finds a concrete input that is answered wrongly (control "too_small_temperature");
  3. randomized: 10,000 random tasks verified by teacher forcing, a subset by greedy decoding, and
     the torch module's logits against the numpy forward;
  4. the authors' published output (e.g. "I love transformers!").
Control "perturbed_weight": one MLP bias moved by +0.5; the same certificate must fail and a
concrete wrong answer must be found.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from constructions.construction import Construction, all_sequences
from constructions.errors import ConstructionError
from constructions.forward import embed, forward, generate, logits
from constructions.petrov import demos
from constructions.petrov.conditional import Conditional
from constructions.petrov.long_response import LongResponse
from constructions.petrov.two_token import (
    MAX_VOCAB_FLOAT64,
    TwoToken,
    largest_vocab_for_precision,
    leakage_witnesses,
    rows_in_top_binade,
)
from constructions.petrov.unconditional import Unconditional
from constructions.spec import MLP, Block, TransformerSpec
from constructions.torch_module import SpecTransformer
from constructions.vocab import Vocabulary
from theorems.petrov_sec3 import THRESHOLDS, two_token_thresholds
from verify.certificates import certify_construction
from verify.registry import Context, check
from verify.result import Outcome

# Offset from T* at which tightness is shown. The certified margin at T* + delta is about
# delta * d(margin)/dT ~ 1e-10 here, five orders of magnitude above float64 rounding (~1e-15).
TIGHTNESS_DELTA = 1e-6
# float64 forward vs torch float64 module: same operations in a different order.
TORCH_PARITY_TOLERANCE = 1e-12
RANDOM_INSTANCES = 10_000
GREEDY_INSTANCES = 256
PERTURBATION = 0.5  # added to blocks[0].mlp.b_in[0]: a deliberately wrong weight


def perturbed(spec: TransformerSpec, amount: float = PERTURBATION) -> TransformerSpec:
    """A copy of ``spec`` with the first block's first MLP bias moved by ``amount``."""
    block = spec.blocks[0]
    b_in = np.array(block.mlp.b_in)
    b_in[0] += amount
    mlp = MLP.build(spec.d_model, block.mlp.W_in, block.mlp.W_out, b_in, block.mlp.b_out)
    blocks = (Block(block.attention, mlp),) + spec.blocks[1:]
    return TransformerSpec.build(spec.W_E, spec.W_pos, blocks, spec.W_U, spec.b_U,
                                 spec.attention_scale, spec.causal, spec.subspaces)


def find_counterexample(construction: Construction, spec: TransformerSpec, labels: list[np.ndarray],
                        rng: np.random.Generator) -> dict[str, Any] | None:
    """A concrete (task, user input) answered wrongly, searched inside the failing cases."""
    vocab = construction.vocab
    for label in labels:
        task, user = construction.witness(label, rng)
        if not construction.responds_correctly(task, user, spec)[0]:
            got = construction.respond(construction.virtual_tokens(task), user, spec)[0]
            return {"case": construction.describe_case(label), "user_input": vocab.decode(user[0]),
                    "expected": vocab.decode(construction.expected(task, user)[0]),
                    "generated": vocab.decode(got)}
    return None


def refute(construction: Construction, spec: TransformerSpec, rng: np.random.Generator,
           what: str) -> dict[str, Any]:
    """Run the claim's checker on a wrong variant; refuted = certificate fails AND a concrete
    wrong answer is found (a certificate may fail from looseness alone; a counterexample cannot)."""
    result = certify_construction(construction, spec, keep_failures=100)
    example = None if result.holds else find_counterexample(construction, spec, result.failing_examples, rng)
    return {"variant": what, "certificate_holds": result.holds, "failing_cases": result.failing,
            "counterexample": example, "refuted": (not result.holds) and example is not None}


def torch_parity(construction: Construction, rng: np.random.Generator, count: int = 64) -> float:
    """max |numpy logits - torch logits| on random tasks and inputs (float64 both)."""
    tasks = construction.random_tasks(rng, count)
    user = rng.integers(0, construction.vocab.size, size=(count, construction.n_user_tokens))
    tokens = np.concatenate([construction.prompt_tokens(user), construction.expected(tasks, user)[:, :-1]], 1)
    virtual = construction.virtual_tokens(tasks)
    ours = logits(construction.spec, forward(construction.spec, embed(construction.spec, tokens, virtual,
                                                                      construction.virtual_positions)))
    module = SpecTransformer(construction.spec)
    with torch.no_grad():
        theirs = module(module.embed_tokens(torch.from_numpy(tokens), torch.from_numpy(virtual),
                                            construction.virtual_positions)).numpy()
    return float(np.max(np.abs(ours - theirs)))


def randomized(construction: Construction, rng: np.random.Generator) -> dict[str, Any]:
    tasks = construction.random_tasks(rng, RANDOM_INSTANCES)
    user = rng.integers(0, construction.vocab.size, size=(RANDOM_INSTANCES, construction.n_user_tokens))
    forced = construction.responds_correctly(tasks, user)
    few = slice(0, GREEDY_INSTANCES)
    greedy = construction.respond(construction.virtual_tokens(tasks[few]), user[few])
    greedy_ok = np.all(greedy == construction.expected(tasks[few], user[few]), axis=1)
    return {"instances": RANDOM_INSTANCES, "correct": int(forced.sum()),
            "greedy_generations": GREEDY_INSTANCES, "greedy_correct": int(greedy_ok.sum())}


def describe_worst(construction: Construction, worst: Any) -> str:
    return construction.describe_case(worst) if isinstance(worst, np.ndarray) else str(worst)


def check_construction(
    context: Context,
    claim_id: str,
    build: Callable[[float | None], Construction],
    threshold: dict[str, Any],
    demo: Callable[[Construction], dict[str, Any]],
    delta: float = TIGHTNESS_DELTA,
    extra: dict[str, Any] | None = None,
) -> Outcome:
    """The evidence and controls shared by every construction claim (module docstring).

    ``threshold``: {"formula": str, "value": T*, "proof": {step: bool}} for the construction.
    ``extra``: further evidence entries; each may carry "holds" (False fails the claim).
    """
    rng = context.rng(claim_id)
    construction = build(None)
    critical = threshold["value"]

    certificate = certify_construction(construction)
    above = certify_construction(build(critical + delta))
    rand = randomized(construction, rng)
    parity = torch_parity(construction, rng)
    shown = demo(construction)

    evidence = {
        "config": construction.params(),
        "certificate": {"holds": certificate.holds, "cases": certificate.cases,
                        "worst_margin": certificate.worst_margin,
                        "worst_case": describe_worst(construction, certificate.worst_case)},
        "min_inverse_temperature": {
            "formula": threshold["formula"], "value": critical, "proof": threshold["proof"],
            "delta": delta, "certificate_holds_at_T*+delta": above.holds,
            "margin_at_T*+delta": above.worst_margin,
        },
        "randomized": rand,
        "torch_parity_max_abs": parity,
        "published_output": shown,
        **(extra or {}),
    }
    holds = (certificate.holds and above.holds and all(threshold["proof"].values())
             and rand["correct"] == rand["instances"] and rand["greedy_correct"] == rand["greedy_generations"]
             and parity <= TORCH_PARITY_TOLERANCE and shown["matches"]
             and all(item.get("holds", True) for item in (extra or {}).values()))
    cold = build(critical - delta)
    control = {
        "perturbed_weight": refute(construction, perturbed(construction.spec), rng,
                                   f"blocks.0.mlp.b_in[0] += {PERTURBATION}"),
        "too_small_temperature": refute(cold, cold.spec, rng, f"inverse temperature T* - {delta}"),
    }
    refuted = all(item["refuted"] for item in control.values())
    return Outcome(holds, evidence, control, refuted)


def symbolic_threshold(name: str, **sizes: float) -> dict[str, Any]:
    """T* of a one-layer construction (theorems.petrov_sec3.THRESHOLDS), with its sympy proof."""
    threshold = THRESHOLDS[name]
    return {"formula": f"T* = {threshold.critical}", "value": threshold.value(**sizes), "proof": threshold.prove()}


def _ascii() -> Vocabulary:
    return Vocabulary.printable_ascii()


@check("petrov.thm1.unconditional")
def unconditional(context: Context) -> Outcome:
    def build(T: float | None) -> Unconditional:
        return Unconditional(_ascii()) if T is None else Unconditional(_ascii(), inverse_temperature=T)

    def demo(c: Construction) -> dict[str, Any]:
        target = demos.UNCONDITIONAL_TARGET
        out = c.vocab.decode(c.respond(c.virtual_tokens(c.parse_task(target)), np.zeros((1, 0), np.int64))[0])
        return {"target": target, "generated": out, "matches": out == target}

    return check_construction(context, "petrov.thm1.unconditional", build,
                              symbolic_threshold("unconditional", V=94, N=20), demo)


@check("petrov.thm2.conditional")
def conditional(context: Context) -> Outcome:
    def build(T: float | None) -> Conditional:
        return Conditional(_ascii()) if T is None else Conditional(_ascii(), inverse_temperature=T)

    def demo(c: Construction) -> dict[str, Any]:
        task = c.parse_task(demos.case_flip(c.vocab.symbols))
        out = c.vocab.decode(c.respond(c.virtual_tokens(task), c.vocab.encode("f")[None])[0])
        return {"map": "flip letter case", "input": "f", "generated": out, "matches": out == "F"}

    return check_construction(context, "petrov.thm2.conditional", build, symbolic_threshold("conditional", V=94), demo)


QUICK_RESPONSE_LENGTH = 3  # N0 under --quick (the full run uses 10)


@check("petrov.thm2.long-response")
def long_response(context: Context) -> Outcome:
    """Default N0 = 10; under --quick N0 = QUICK_RESPONSE_LENGTH (the same checks and controls on a
    smaller instance: the certificate's cost grows with V^2 N0, 36 s at N0 = 10)."""
    n0 = QUICK_RESPONSE_LENGTH if context.quick else 10

    def build(T: float | None) -> LongResponse:
        if T is None:
            return LongResponse(_ascii(), response_length=n0)
        return LongResponse(_ascii(), response_length=n0, inverse_temperature=T)

    def demo(c: Construction) -> dict[str, Any]:
        task = c.parse_task(demos.animals_and_foods(c.vocab.symbols, n0))
        out = "b" + c.vocab.decode(c.respond(c.virtual_tokens(task), c.vocab.encode("b")[None])[0]).rstrip()
        expected = "b" + "lueberries"[:n0]
        return {"map": "capital -> animal, lower case -> food", "input": "b", "generated": out,
                "matches": out == expected}

    extra = {"quick_mode": {"quick": True, "N0": n0, "full_run_N0": 10}} if context.quick else None
    return check_construction(context, "petrov.thm2.long-response", build,
                              symbolic_threshold("long-response", V=94, N0=n0), demo, extra=extra)


# --- petrov.sec3.capacity -------------------------------------------------------------------

CAPACITY_SMALL = {"V": 3, "N": 4}  # exhaustive: 3^4 = 81 targets, every real prompt up to n = 3
CAPACITY_SAMPLES = 10_000


def count_real_prompt_behaviours(spec: TransformerSpec, vocab_size: int, n: int) -> int:
    """Distinct greedy continuations (filling the context) over ALL V^n real-token prompts."""
    prompts = all_sequences(vocab_size, n)
    continuations = generate(spec, prompts, spec.n_ctx - n + 1)
    return len({row.tobytes() for row in continuations})


def random_like(spec: TransformerSpec, rng: np.random.Generator) -> TransformerSpec:
    """A generic transformer of the same shapes: every weight N(0, 1/d_model), embeddings N(0, 1)."""
    scale = {k: 1.0 if k in ("embed.W_E", "pos_embed.W_pos") else spec.d_model**-0.5
             for k in spec.named_arrays()}
    arrays = {k: rng.normal(scale=scale[k], size=v.shape) for k, v in spec.named_arrays().items()}
    return TransformerSpec.from_named_arrays(arrays, spec.n_layers, 1.0, spec.causal)


@check("petrov.sec3.capacity")
def capacity(context: Context) -> Outcome:
    rng = context.rng("petrov.sec3.capacity")
    V, N = CAPACITY_SMALL["V"], CAPACITY_SMALL["N"]
    small = Unconditional(Vocabulary.letters(V), length=N)

    # one virtual token: every one of the V^N targets, exhaustively
    targets = all_sequences(V, N)
    completions = small.respond(small.virtual_tokens(targets), np.zeros((len(targets), 0), np.int64))
    virtual_distinct = len({row.tobytes() for row in completions})
    virtual_exact = bool(np.all(completions == targets))

    # real-token prompts of length n: all V^n of them, on the construction and a generic model
    generic = random_like(small.spec, rng)
    real = {f"n={n}": {"bound V^n": V**n,
                       "construction": count_real_prompt_behaviours(small.spec, V, n),
                       "random_model": count_real_prompt_behaviours(generic, V, n)}
            for n in range(1, N)}
    real_within_bound = all(v["construction"] <= v["bound V^n"] and v["random_model"] <= v["bound V^n"]
                            for v in real.values())

    # defaults: sampled targets, and every single real token
    full = Unconditional(Vocabulary.printable_ascii())
    sample = full.random_tasks(rng, CAPACITY_SAMPLES)
    sample_distinct = len({row.tobytes() for row in sample})
    reached = full.responds_correctly(sample, np.zeros((len(sample), 0), np.int64))
    one_real = count_real_prompt_behaviours(full.spec, full.vocab.size, 1)

    evidence = {
        "summary": f"V={V}, N={N}: one virtual token reaches {virtual_distinct}/{V**N}; "
                   f"real prompts n<N reach <= V^n",
        "exhaustive": {"V": V, "N": N, "virtual_token_distinct": virtual_distinct, "V^N": V**N,
                       "each_target_generated": virtual_exact, "real_prompts": real},
        "defaults": {"V": 94, "N": 20, "sampled_targets": CAPACITY_SAMPLES, "distinct_in_sample": sample_distinct,
                     "generated_exactly": int(reached.sum()),
                     "one_real_token_distinct": one_real, "one_real_token_bound": full.vocab.size,
                     "all_V^N_reachable": "by the petrov.thm1.unconditional certificate (94^20 ~ 2.9e39)"},
    }
    holds = (virtual_distinct == V**N and virtual_exact and real_within_bound
             and int(reached.sum()) == CAPACITY_SAMPLES)
    # control: claim that ONE REAL token (its embedding in the virtual slot) reaches V^N behaviours
    real_as_virtual = small.spec.W_E[:, None, :]  # (V, 1, d): each real token's embedding at position 0
    outs = small.respond(real_as_virtual, np.zeros((V, 0), np.int64))
    counted = len({row.tobytes() for row in outs})
    control = {"one_real_token_reaches_V^N": {
        "variant": "the V real token embeddings placed where the virtual token goes",
        "distinct": counted, "required": V**N, "refuted": counted < V**N}}
    return Outcome(holds, evidence, control, control["one_real_token_reaches_V^N"]["refuted"])


# --- petrov.thm2.two-token ------------------------------------------------------------------

TWO_TOKEN_DELTA = 1e-4  # in T: float64 rounding moves V = 10's certified threshold by ~1e-5
FLOAT32_VOCABS = range(2, MAX_VOCAB_FLOAT64 + 1)
FLOAT32_MAPS = 20


def float32_accuracy(vocab_size: int, maps: int = FLOAT32_MAPS, seed: int = 0,
                     inverse_temperature: float = 100.0) -> dict[str, Any]:
    """The two-token model run in float32 (torch module cast to float32, virtual tokens rounded
    to float32) on ``maps`` random maps plus the leakage witnesses, every (u0, u1) pair."""
    construction = TwoToken(Vocabulary.letters(vocab_size), inverse_temperature)
    rng = np.random.default_rng(seed)
    witness_tasks, _ = leakage_witnesses(construction)
    tasks = np.concatenate([construction.random_tasks(rng, maps), witness_tasks[::vocab_size]])
    users = construction.all_user_inputs()
    t_idx = np.repeat(np.arange(len(tasks)), len(users))
    u_idx = np.tile(np.arange(len(users)), len(tasks))
    module = SpecTransformer(construction.spec).float()
    tokens = torch.from_numpy(construction.prompt_tokens(users[u_idx]))
    virtual = torch.from_numpy(construction.virtual_tokens(tasks)[t_idx].astype(np.float32))
    with torch.no_grad():
        out = module(module.embed_tokens(tokens, virtual, construction.virtual_positions))
    predicted = out[:, -1].argmax(-1).numpy()
    want = construction.expected(tasks[t_idx], users[u_idx])[:, 0]
    correct = int((predicted == want).sum())
    return {"V": vocab_size, "pairs": len(want), "correct": correct, "accuracy": correct / len(want)}


@check("petrov.thm2.two-token")
def two_token(context: Context) -> Outcome:
    letters = Vocabulary.letters(10)

    def build(T: float | None) -> TwoToken:
        return TwoToken(letters) if T is None else TwoToken(letters, inverse_temperature=T)

    def demo(c: Construction) -> dict[str, Any]:
        """The notebook's test: a seeded random map over A-J, all 100 pairs by greedy decoding."""
        task = c.random_tasks(np.random.default_rng(0), 1)
        users = c.all_user_inputs()
        got = c.respond(np.repeat(c.virtual_tokens(task), len(users), axis=0), users)
        correct = int(np.sum(got == c.expected(np.repeat(task, len(users), axis=0), users)))
        return {"map": "random map over A-J (seed 0)", "pairs": len(users), "correct": correct,
                "matches": correct == len(users)}

    rho = build(None).ramp_width
    derived = two_token_thresholds(10, rho)
    threshold = {"formula": f"T* = {derived['certified_formula']} (rho = ramp width = {rho})",
                 "value": derived["certified"], "proof": derived["checks"]}

    largest = TwoToken(Vocabulary.letters(MAX_VOCAB_FLOAT64))
    at_largest = certify_construction(largest)
    try:
        TwoToken(Vocabulary.letters(MAX_VOCAB_FLOAT64 + 1))
        refused = None
    except ConstructionError as exc:
        refused = str(exc)
    measured = [float32_accuracy(V) for V in FLOAT32_VOCABS]
    exact32 = [m["V"] for m in measured if m["correct"] == m["pairs"]]
    largest32 = max((V for V in exact32 if all(W in exact32 for W in range(2, V + 1))), default=None)
    extra = {
        "float64_precision": {
            "holds": at_largest.holds and refused is not None,
            "largest_exact_V": MAX_VOCAB_FLOAT64,
            f"certificate_at_V={MAX_VOCAB_FLOAT64}": at_largest.holds,
            f"V={MAX_VOCAB_FLOAT64 + 1}_refused": refused,
            "argument": "V^V/2 rows encode into [1/2, 1), which holds 2^52 float64 values: "
                        f"{rows_in_top_binade(MAX_VOCAB_FLOAT64):.3e} fit, "
                        f"{rows_in_top_binade(MAX_VOCAB_FLOAT64 + 1):.3e} do not",
        },
        "float32_measured": {
            "largest_V_all_correct": largest32,
            "counting_limit": largest_vocab_for_precision(24),
            "per_V": {m["V"]: f"{m['correct']}/{m['pairs']}" for m in measured},
        },
        "witness_threshold": {"formula": f"T_w = {derived['witness_formula']}", "value": derived["witness"],
                              "meaning": "below T_w the all-(V-1) row answers its last digit wrongly"},
    }
    return check_construction(context, "petrov.thm2.two-token", build, threshold, demo,
                              delta=TWO_TOKEN_DELTA, extra=extra)
