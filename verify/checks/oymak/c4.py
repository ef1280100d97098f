"""oymak.c4: on real data, prompt-tuning attends to the context-relevant tokens (OUR formalization,
notes/oymak.md): sequences of scikit-learn digit images, k relevant images of class 3 (y = +1) or
8 (y = -1) among T - k distractors of the other classes; train and test images from disjoint pools.

Every model is searched as in c1: random inits and the best solutions we know (uniform attention's
best logistic fit, inside every model that contains it: PA at
p = 0, SA and SAq at W = 0), trained at once by batched Adam, the untrained uniform solution kept as a candidate,
the best chosen on validation sequences (validation pool), measured on test sequences (test pool).

Verdict: (a) floors: PA, SA and SAq reach uniform attention's test accuracy (``stats.floor_reached``);
(b) PA beats SA, SAq, LPA and uniform attention by more than SEPARATION_MARGIN + 3 paired SE;
(c) PA's attention mass on the relevant tokens exceeds chance k / T by more than 3 SE.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from constructions.oymak.data import DigitSequences, digit_pools, digit_sequences
from constructions.oymak.models import (AttentionModel, fit_restarts, fit_restarts_adam, forward, pa_attention,
                                        param_shapes, zero_one_error)
from verify.checks.oymak.stats import (FLOOR_TOLERANCE, SEPARATION_MARGIN, Z_COMPARE, floor_reached, mean_se,
                                       replicate_search_control, se_of_rate, separated)
from verify.protocol import Control, Evidence, Finding, Rung, Skipped, compare
from verify.registry import QUICK_SKIP, Context, check

CLAIM = "oymak.c4.real-data-attends-relevant"
C4_T, C4_K = 8, 2
C4_CLASSES = (3, 8)
C4_TRAIN, C4_VALID, C4_TEST = 3_000, 3_000, 5_000
# Validation sequences are built from their own images (a quarter of the non-test images). A first
# version drew them from the training images: there a uniform-attention start whose head had grown
# to norm ~290 (an unregularised fit of nearly separable training data) won the validation with
# 0.0017 error and lost the test with 0.0134, while random starts had 0.0033 and 0.005.
C4_VALID_FRACTION = 0.25
# Adam, 300 full-batch steps at rate 0.02 (the protocol of the earlier check). Not L-BFGS to
# convergence: the digit training sequences are separable for PA, and an unregularised fit run to
# convergence overfits (measured while building this check: PA's test error rose from 0.007 after
# 25 L-BFGS iterations to 0.025 after 200, against 0.004-0.007 for this Adam budget).
C4_STEPS, C4_LR = 300, 0.02
C4_UNIFORM_ITERATIONS = 200  # uniform attention's logistic fit by L-BFGS to convergence (one of its two candidates)
INIT_SCALE = 0.1
# SA starts only from the uniform solution: one SA training on 64-dimensional tokens costs as much as
# all the other searches together. Leaving out its random start can only weaken SA, i.e. it biases
# the comparison towards PA (a random start reached 0.946 accuracy in the earlier protocol against
# the uniform start's 0.977 in the run that built this check).
RANDOM_STARTS = {"PA": 2, "SA": 0, "SAq": 1, "LPA": 2}
CONTAINS_UNIFORM = ("PA", "SA", "SAq")
RIVALS = ("SA", "SAq", "LPA", "UNIF")
REPLICATED = ("PA", "LPA")  # the cheap searches: PA itself and the rival with the noisiest search


def digit_data(rng: np.random.Generator) -> dict[str, Any]:
    """Train, validation and test sequences from three disjoint image pools (validation images are
    a quarter of the non-test images: selection on sequences of TRAINING images would reward a model
    that memorised them); tokens are pixel/16 minus the training pool's mean image."""
    pools = digit_pools(valid_fraction=C4_VALID_FRACTION)
    centre = pools["train"][0].mean(axis=0)

    def draw(pool: str, n: int) -> DigitSequences:
        s = digit_sequences(pools[pool], n, C4_T, C4_K, rng, C4_CLASSES)
        return DigitSequences(s.X - centre, s.y, s.R, s.digits)

    return {"train": draw("train", C4_TRAIN), "valid": draw("valid", C4_VALID), "test": draw("test", C4_TEST)}


def relevant_mass(attention: np.ndarray, R: np.ndarray) -> tuple[float, float]:
    """Mean over sequences of sum_{t in R} s_t, with its standard error."""
    return mean_se((attention * R).sum(axis=1))


def uniform_fit(data: dict[str, Any]) -> dict[str, Any]:
    """Uniform attention's best solution: the logistic fit of v . xbar by the same Adam budget as
    the other models and by L-BFGS run to convergence (convex; unregularised, its norm grows on
    nearly separable data), the lower validation error chosen."""
    train, zero = data["train"], [{"v": np.zeros(data["train"].X.shape[-1])}]
    candidates = {"Adam": fit_restarts_adam("UNIF", train.X, train.y, zero, C4_STEPS, C4_LR)[0],
                  "L-BFGS to convergence": fit_restarts("UNIF", train.X, train.y, zero, C4_UNIFORM_ITERATIONS)[0]}
    valid = {k: float(zero_one_error(forward("UNIF", p, data["valid"].X), data["valid"].y).mean())
             for k, p in candidates.items()}
    label = min(valid, key=valid.get)
    return {"label": f"uniform logistic fit ({label})", "params": candidates[label], "valid_errors": valid}


def embed_uniform(name: str, v: np.ndarray) -> dict[str, np.ndarray]:
    """The uniform solution v . xbar inside ``name`` (p = 0 for PA, W = 0 for SA and SAq)."""
    return {key: (v if key == "v" else np.zeros(shape)) for key, shape in param_shapes(name, len(v)).items()}


def search(name: str, data: dict[str, Any], uniform_v: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Best of random starts and (if contained) the uniform solution, trained at once by Adam;
    the untrained uniform solution is a candidate too; lowest validation error wins."""
    d = data["train"].X.shape[-1]
    known = [("uniform solution", embed_uniform(name, uniform_v))] if name in CONTAINS_UNIFORM else []
    starts = [(f"random {j}", {key: INIT_SCALE * rng.standard_normal(shape) for key, shape in
                               param_shapes(name, d).items()}) for j in range(RANDOM_STARTS[name])] + known
    trained = fit_restarts_adam(name, data["train"].X, data["train"].y, [p for _, p in starts], C4_STEPS, C4_LR)
    candidates = [(f"{label}, trained", p) for (label, _), p in zip(starts, trained)]
    candidates += [(f"{label}, as is", p) for label, p in known]
    valid = [float(zero_one_error(forward(name, p, data["valid"].X), data["valid"].y).mean()) for _, p in candidates]
    best = int(np.argmin(valid))
    return {"label": candidates[best][0], "params": candidates[best][1]}


def attention(name: str, params: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Each model's attention over tokens (``AttentionModel.attention``), shape (n, T)."""
    model = AttentionModel(name, X.shape[-1], init=params)
    with torch.no_grad():
        return model.attention(torch.as_tensor(X)).numpy()


@check(CLAIM, controls=("random_prompt_same_norm", "replicate_search"))
def check_c4(context: Context) -> Finding | Skipped:
    if context.quick:
        return Skipped(QUICK_SKIP, {"note": "trained at every full run (seconds on CPU); no cached record"})
    rng = context.rng(CLAIM)
    data = digit_data(rng)
    test = data["test"]
    uniform = uniform_fit(data)
    uniform_v = uniform["params"]["v"]
    found = {name: search(name, data, uniform_v, rng) for name in ("PA", "SA", "SAq", "LPA")}
    found["UNIF"] = uniform
    losses = {name: zero_one_error(forward(name, f["params"], test.X), test.y) for name, f in found.items()}
    results = {}
    for name, f in found.items():
        acc = 1 - float(losses[name].mean())
        results[name] = {"accuracy": acc, "accuracy_se": se_of_rate(acc, len(test.y)), "search_chosen": f["label"],
                         "relevant_mass": relevant_mass(attention(name, f["params"], test.X), test.R)}
    floors = {name: floor_reached(losses[name], losses["UNIF"]) for name in CONTAINS_UNIFORM}
    versus = {rival: separated(losses["PA"], losses[rival]) for rival in RIVALS}
    chance = C4_K / C4_T
    pa_mass, pa_mass_se = results["PA"]["relevant_mass"]
    attends = bool(pa_mass - chance > Z_COMPARE * pa_mass_se)
    weakest = min(versus, key=lambda r: versus[r]["gap"] - versus[r]["needed"])
    worst_floor = max(floors, key=lambda m: floors[m]["shortfall"] - floors[m]["allowed"])
    summary = (f"digits {C4_CLASSES[0]} vs {C4_CLASSES[1]}, T={C4_T}, k={C4_K}: accuracy "
               + ", ".join(f"{m} {r['accuracy']:.3f}" for m, r in results.items())
               + f"; floors: worst shortfall {compare(floors[worst_floor]['shortfall'], floors[worst_floor]['allowed'])} "
                 f"({worst_floor}); PA's weakest gap {compare(versus[weakest]['gap'], versus[weakest]['needed'], below=False)}"
                 f" (vs {weakest}, margin {SEPARATION_MARGIN:g} + {Z_COMPARE:g} SE); PA relevant mass "
                 f"{pa_mass:.3f} (chance {chance:.3f}, z {(pa_mass - chance) / pa_mass_se:.1f})")
    evidence = Evidence(
        holds=attends and all(f["reached"] for f in floors.values()) and all(v["separated"] for v in versus.values()),
        summary=summary, rung=Rung.TRAINED,
        details={"results": results, "floors": floors, "PA_vs": versus, "attends_relevant": attends,
                 "constants": {"floor_tolerance": FLOOR_TOLERANCE, "separation_margin": SEPARATION_MARGIN,
                               "z_compare": Z_COMPARE},
                 "protocol": {"T": C4_T, "k": C4_K, "relevant_classes": C4_CLASSES, "n_train": C4_TRAIN,
                              "n_valid": C4_VALID, "n_test": C4_TEST, "valid_image_fraction": C4_VALID_FRACTION, "adam_steps": C4_STEPS, "lr": C4_LR,
                              "random_starts": RANDOM_STARTS, "pools": "disjoint split of the 1,797 images: 30% test; of the rest, 25% validation, 75% training",
                              "tokens": "pixel/16 minus the train pool's mean image",
                              "record": "trained at every run (seconds on CPU); no cached record"}})
    # control 1: the attention test on a random prompt of the learned prompt's norm
    p = found["PA"]["params"]["p"]
    g = rng.standard_normal(p.shape)
    random_p = g / np.linalg.norm(g) * np.linalg.norm(p)
    ctrl_mass, ctrl_se = relevant_mass(pa_attention(test.X, random_p), test.R)
    # control 2: each model's search repeated on fresh train / validation sequences, same test set
    again = digit_data(rng)
    again["test"] = test
    again_uniform_v = uniform_fit(again)["params"]["v"]  # deterministic and draws nothing: fitted once for both
    replicate = {}
    for name in REPLICATED:
        loss = zero_one_error(forward(name, search(name, again, again_uniform_v, rng)["params"], test.X), test.y)
        replicate[name] = {"original": 1 - float(losses[name].mean()), "replicate": 1 - float(loss.mean()),
                           "original better": separated(losses[name], loss),
                           "replicate better": separated(loss, losses[name])}
    controls = (
        Control("random_prompt_same_norm",
                wrong_variant="PA's attention with a random prompt direction of the learned prompt's norm",
                criterion=f"the attention test (relevant mass > k/T + {Z_COMPARE:g} SE): refuted iff it fails",
                measured={"relevant_mass": ctrl_mass, "se": ctrl_se, "chance": chance},
                refuted=not bool(ctrl_mass - chance > Z_COMPARE * ctrl_se),
                could_fail_because="a random direction in pixel space can correlate with the 3/8 strokes (or any "
                                   "large-norm prompt could concentrate attention on bright images); then the "
                                   "attention test would credit attention that prompt-tuning did not learn"),
        replicate_search_control(
            replicate,
            wrong_variant=f"each of {list(REPLICATED)} 'separated' from an independent replicate of its own search",
            could_fail_because="if a search's outcome varied with the training sequences and inits by more than "
                               "the margin, PA's gaps could be search luck rather than a difference of models"),
    )
    return Finding(evidence, controls)
