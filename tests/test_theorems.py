"""Symbolic statements: the minimal inverse temperatures (the model's algebra, the readout lemma,
and the derivation from score rows), and the claim catalogue."""

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis.errors import InvalidArgument

from theorems.claims import CLAIMS, claims_matching
from theorems.petrov_sec3 import THRESHOLDS, ScoreRow, from_scores, readout_lemma, vanishes
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


def test_the_readout_lemma_reduces_exactly():
    assert all(readout_lemma().values())


def test_vanishes_decides_identities_and_non_identities():
    import sympy as sp

    from theorems.petrov_sec3 import T

    assert vanishes(sp.exp(T) / (sp.exp(T) + 3) - 1 + 3 / (sp.exp(T) + 3))
    assert not vanishes(sp.exp(T) / (sp.exp(T) + 3) - 1 + 2 / (sp.exp(T) + 3))
    assert vanishes(sp.log(3515) - sp.log(19 * 185)) and not vanishes(sp.log(3516) - sp.log(19 * 185))


def rows(m_last: int, attended=(0, 1, 0), spread=Fraction(93, 94)):
    """Score rows of the unconditional model at V = 94, N = 20 (query i: score T on one key, 0 on
    i others), with the last row's m, attended score or spread replaced."""
    zero = (Fraction(0),) * 3
    out = [ScoreRow(i, tuple(map(Fraction, (0, 1, 0))), zero, i, Fraction(93, 94)) for i in range(1, 19)]
    out.append(ScoreRow(19, tuple(map(Fraction, attended)), zero, m_last, spread))
    return out


@pytest.mark.parametrize("change, holds", [
    (dict(m_last=19), True),
    (dict(m_last=20), False),  # one key too many at the last position
    (dict(m_last=19, attended=(1, 1, 0)), False),  # score T + 1
    (dict(m_last=19, spread=Fraction(92, 94)), False),  # a different value factor
])
def test_the_derivation_from_scores_rejects_an_off_by_one(change, holds):
    derived = from_scores(rows(**change), 94, THRESHOLDS["unconditional"], {"V": 94, "N": 20})
    assert all(derived["steps"].values()) is holds
    assert derived["binding_position"] == (18 if change.get("attended") else 19)  # T + 1 lowers row 19's T*


def test_the_derivation_solves_the_threshold_from_the_rows():
    derived = from_scores(rows(19), 94, THRESHOLDS["unconditional"], {"V": 94, "N": 20})
    assert derived["T*"] == "log(3515)" and math.isclose(derived["T*_value"], math.log(19 * 185))
    assert derived["per_position"]["1"] == pytest.approx(math.log(185))


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
