"""Symbolic statements: the minimal inverse temperatures and the claim catalogue."""

import math

import pytest
from hypothesis import given
from hypothesis.errors import InvalidArgument

from theorems.claims import CLAIMS, claims_matching
from theorems.petrov_sec3 import THRESHOLDS
from theorems.strategies import normal_arrays, pair_maps, targets, total_maps


@pytest.mark.parametrize("name", sorted(THRESHOLDS))
def test_every_step_of_the_threshold_proof_reduces_exactly(name):
    proof = THRESHOLDS[name].prove()
    assert proof and all(proof.values()), proof


def test_threshold_values_at_the_papers_sizes():
    assert math.isclose(THRESHOLDS["unconditional"].value(V=94, N=20), math.log(19 * 185))
    assert math.isclose(THRESHOLDS["conditional"].value(V=94), math.log(185))
    assert math.isclose(THRESHOLDS["long-response"].value(V=94, N0=10), math.log(19 * 373))


def test_a_wrong_threshold_fails_the_proof():
    """Negative control: T* with a dropped factor does not satisfy err(T*) = 1/(2V)."""
    import sympy as sp

    from theorems.petrov_sec3 import N, T, Threshold, V

    wrong = Threshold("wrong", N - 1, (V - 1) / V, ())
    assert sp.simplify(wrong.error.subs(T, sp.log((N - 1) * 2 * V)) - 1 / (2 * V)) != 0


def test_claim_ids_are_unique_and_prefix_selection_works():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    assert [c.id for c in claims_matching(["petrov.thm2"])] == ["petrov.thm2.conditional",
                                                                 "petrov.thm2.long-response",
                                                                 "petrov.thm2.two-token"]


@pytest.mark.parametrize("make", [lambda: targets("a", 3), lambda: targets("ab", 0), lambda: total_maps("aa"),
                                  lambda: total_maps("ab", 0), lambda: pair_maps(""),
                                  lambda: normal_arrays((2, -1)), lambda: normal_arrays((2,), 0.0)])
def test_strategies_validate_arguments_eagerly(make):
    with pytest.raises(InvalidArgument):
        make()


@given(mapping=pair_maps("abc"))
def test_pair_maps_are_total(mapping):
    assert sorted(mapping) == sorted(a + b for a in "abc" for b in "abc")
    assert set(mapping.values()) <= set("abc")
