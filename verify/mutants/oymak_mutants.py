"""Mutants of the Oymak et al. objects: the contextual-mixture data (constructions/oymak/data.py),
the attention models (models.py) and the closed forms the checks compare against
(theorems/oymak.py), including the issue's wrong constant in a derived rate (c2's K x 0.8)."""

from __future__ import annotations

from typing import Any

import numpy as np

from verify.mutants.core import Mutant, edit, mutant, wrap

DATA = "constructions.oymak.data"
MODELS = "constructions.oymak.models"
TH = "theorems.oymak"

C1 = "oymak.c1.prompt-attention-more-expressive"
C2 = "oymak.c2.gd-learns-prompt-and-head"
C3 = "oymak.c3.finite-sample-exact"


def _k_scaled(factor: float) -> Any:
    """gd_prompt_alignment_constant with K (and each of its parts, and the d-slope) times ``factor``."""

    def factory(original: Any, rng: np.random.Generator) -> Any:
        def gd_prompt_alignment_constant(*args: Any, **kwargs: Any) -> dict[str, float]:
            return {key: value * factor for key, value in original(*args, **kwargs).items()}

        return gd_prompt_alignment_constant

    return factory


def _one_more_relevant(original: Any, rng: np.random.Generator) -> Any:
    def relevant_sets(rng_, n, T, k):
        return original(rng_, n, T, min(k + 1, T))

    return relevant_sets


MUTANTS: tuple[Mutant, ...] = (
    mutant("theorem.oymak.c2-K-scaled", "wrong constant", f"{TH}:gd_prompt_alignment_constant",
           "the derived alignment constant K of GD's prompt (and its d-slope) times 0.8", C2, wrap(_k_scaled(0.8))),
    mutant("theorem.oymak.uniform-error-wrong-exponent", "wrong constant", f"{TH}:uniform_bayes_error",
           "the exact uniform-attention error uses sigma / T instead of sigma / sqrt(T)", C1,
           edit("(sigma * np.sqrt(T))", "(sigma * T)")),
    mutant("oymak.softmax.sign-flip", "sign flip", f"{MODELS}:softmax",
           "the models' softmax is softmax(-a)", C3,
           edit("e = np.exp(a - a.max(axis=axis, keepdims=True))", "e = np.exp(a.min(axis=axis, keepdims=True) - a)")),
    mutant("oymak.features.uniform", "dropped factor", f"{MODELS}:pa_features",
           "prompt attention's features are the mean token (the attention weights dropped)", C3,
           edit('np.einsum("nt,ntd->nd", pa_attention(X, p, W), X)', "X.mean(axis=1)")),
    mutant("oymak.data.irrelevant-sign-flip", "sign flip", f"{DATA}:token_means",
           "irrelevant tokens carry + c y mu instead of - c y mu", C2,
           edit("- knobs.c * y[:, None, None]", "+ knobs.c * y[:, None, None]")),
    mutant("oymak.data.one-more-relevant-token", "off-by-one", f"{DATA}:relevant_sets",
           "every sequence has k + 1 relevant tokens instead of k", C2, wrap(_one_more_relevant)),
)
