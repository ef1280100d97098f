"""Shared statistics and decision rules of the Oymak checks (all fixed before any run).

A Monte Carlo error e from n draws has standard error sqrt(e (1 - e) / n). Two classifiers on
the same test set are compared by the paired difference of their 0-1 losses, whose standard
error is sd(diff) / sqrt(n) (much smaller than the unpaired one when they mostly agree).

The decision functions below take measurements (loss vectors, estimates and standard errors) and
return plain dicts with a boolean verdict; they are what the checks and their controls apply, and
what the tests call on synthetic measurements.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from verify.protocol import Control

# 4 standard errors for "a measurement agrees with a closed form / predicted law": a correct
# formula fails with probability ~6e-5 per comparison; a formula off by more than ~4 SE is refuted.
Z_CLOSED_FORM = 4.0
# 3 paired standard errors for "A is better than B" (one-sided level ~1.3e-3 per comparison).
Z_COMPARE = 3.0
# A trained model that contains uniform attention may miss uniform attention's exact optimum by at
# most this much error (beyond Z_COMPARE paired SEs) before it counts as stuck above that floor.
# Why 0.005: the candidates include the uniform solution itself, and the selection among them is
# made on a validation set of 10,000 sequences (4,000 in --quick); a candidate worse than the
# uniform solution by delta wins that comparison with probability Phi(-delta / se_v), se_v =
# sqrt(p_disagree / n_valid) <= sqrt(0.2 / 10,000) = 0.0045, so a shortfall of 0.005 is what
# validation selection alone can leave (about one time in seven), while 0.015 is left with
# probability < 5e-4. A larger shortfall is a search that failed, not selection noise.
FLOOR_TOLERANCE = 0.005
# A separation "PA better than a rival" counts only if the rival's best-found error exceeds PA's
# by more than this margin (beyond Z_COMPARE paired SEs). The rivals' best errors are upper
# bounds (non-convex searches); the margin is the optimisation uncertainty we grant them over the
# best of several searches (random inits, the uniform-attention solution, the structured solution
# of every model they contain). Why 0.01: twice FLOOR_TOLERANCE, i.e. twice the largest amount by
# which we accept that a search misses an optimum we KNOW (uniform attention's); an optimum we do
# not know is granted twice that. The control 'replicate_search' tests the margin: an independent
# replicate of a model's own search must not be 'separated' from it.
SEPARATION_MARGIN = 0.01


def se_of_rate(err: float, n: int) -> float:
    """Standard error sqrt(e (1 - e) / n) of an error rate from n draws (floored for e in {0, 1})."""
    return float(np.sqrt(max(err * (1 - err), 1e-12) / n))


def paired(loss_a: np.ndarray, loss_b: np.ndarray) -> dict[str, float]:
    """Paired comparison of two per-example 0-1 loss vectors: mean(a - b) and its standard error."""
    diff = np.asarray(loss_a, float) - np.asarray(loss_b, float)
    return {"diff": float(diff.mean()), "se": float(diff.std(ddof=1) / np.sqrt(len(diff)) + 1e-12)}


def chance_test(loss: np.ndarray) -> dict[str, Any]:
    """Is the error consistent with exactly 1/2? |e - 1/2| <= Z_CLOSED_FORM standard errors."""
    e = float(np.mean(loss))
    se = se_of_rate(0.5, len(loss))
    return {"error": e, "se": se, "z": abs(e - 0.5) / se, "at_chance": bool(abs(e - 0.5) <= Z_CLOSED_FORM * se)}


def floor_reached(loss_model: np.ndarray, loss_floor: np.ndarray, tolerance: float = FLOOR_TOLERANCE) -> dict[str, Any]:
    """The sanity floor: a model that contains uniform attention must do at least as well as
    uniform attention's exact optimum (``loss_floor``: that optimum's losses on the same test set).
    Reached iff the paired shortfall mean(model - floor) <= tolerance + Z_COMPARE se."""
    cmp = paired(loss_model, loss_floor)
    allowed = tolerance + Z_COMPARE * cmp["se"]
    return {"shortfall": cmp["diff"], "se": cmp["se"], "allowed": allowed, "tolerance": tolerance,
            "reached": bool(cmp["diff"] <= allowed)}


def separated(loss_pa: np.ndarray, loss_rival: np.ndarray, margin: float = SEPARATION_MARGIN) -> dict[str, Any]:
    """PA beats a rival whose error is an upper bound from a search: the rival's error exceeds
    PA's by more than ``margin`` + Z_COMPARE paired SEs (same test set)."""
    cmp = paired(loss_rival, loss_pa)
    needed = margin + Z_COMPARE * cmp["se"]
    return {"gap": cmp["diff"], "se": cmp["se"], "needed": needed, "margin": margin,
            "separated": bool(cmp["diff"] > needed)}


def separated_from_bound(loss_pa: np.ndarray, bound: float) -> dict[str, Any]:
    """PA beats a rival whose best error is KNOWN to be at least ``bound`` (a proof, e.g. 1/2 by
    the mirror argument): bound - e_PA > Z_COMPARE SE(e_PA); no search margin is needed."""
    e = float(np.mean(loss_pa))
    se = se_of_rate(e, len(loss_pa))
    return {"gap": bound - e, "se": se, "needed": Z_COMPARE * se, "margin": 0.0,
            "separated": bool(bound - e > Z_COMPARE * se)}


def mean_se(x: np.ndarray) -> tuple[float, float]:
    """Sample mean and its standard error."""
    x = np.asarray(x, float)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))


def replicate_search_control(replicate: dict[str, dict[str, Any]], wrong_variant: str,
                             could_fail_because: str) -> Control:
    """The control that tests SEPARATION_MARGIN: each model's search against an independent replicate
    of itself (``replicate[model]`` holds ``separated`` results in both directions, "original better"
    and "replicate better"); refuted iff no model is separated from its own replicate."""
    return Control(
        "replicate_search", wrong_variant,
        criterion=f"separation criterion (gap > {SEPARATION_MARGIN:g} + {Z_COMPARE:g} paired SE): refuted iff it "
                  "separates no model from its replicate in either direction",
        measured=replicate,
        refuted=not any(r["original better"]["separated"] or r["replicate better"]["separated"]
                        for r in replicate.values()),
        could_fail_because=could_fail_because)
