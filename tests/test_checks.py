"""Claim-level verdicts: a claim passes only when its evidence holds AND its negative control is
refuted; an exception inside a check is reported as an error, not hidden."""

import pytest

import verify.checks.petrov_sec3 as sec3
from theorems.claims import claim
from verify.registry import CHECKS, Context, run_claim


@pytest.fixture(scope="module")
def theorem1():
    return run_claim(claim("petrov.thm1.unconditional"), Context(seed=0))


def test_theorem1_passes_with_certificate_and_refuted_controls(theorem1):
    assert theorem1.status == "pass"
    ev = theorem1.evidence
    assert ev["certificate"]["holds"] and ev["certificate"]["cases"] == 94 * 20
    assert ev["min_inverse_temperature"]["certificate_holds_at_T*+delta"]
    assert ev["randomized"]["correct"] == ev["randomized"]["instances"] == 10_000
    assert ev["published_output"]["generated"] == "I love transformers!"
    assert all(c["refuted"] for c in theorem1.control.values())
    assert theorem1.control["too_small_temperature"]["counterexample"]["expected"] != \
        theorem1.control["too_small_temperature"]["counterexample"]["generated"]


def test_capacity_claim_passes():
    result = run_claim(claim("petrov.sec3.capacity"), Context(seed=0))
    assert result.status == "pass"
    assert result.evidence["exhaustive"]["virtual_token_distinct"] == 81


def test_a_control_that_is_not_wrong_makes_the_claim_fail(monkeypatch):
    """If the 'perturbed' weight is not perturbed, the control cannot be refuted: fail, not pass."""
    monkeypatch.setattr(sec3, "PERTURBATION", 0.0)
    monkeypatch.setattr(sec3.perturbed, "__defaults__", (0.0,))
    result = run_claim(claim("petrov.thm2.conditional"), Context(seed=0))
    assert result.status == "fail"
    assert result.control["perturbed_weight"]["refuted"] is False
    assert result.control["too_small_temperature"]["refuted"] is True


def test_an_exception_in_a_check_is_an_error(monkeypatch):
    def broken(context):
        raise RuntimeError("boom")

    monkeypatch.setitem(CHECKS, "petrov.sec3.capacity", broken)
    result = run_claim(claim("petrov.sec3.capacity"), Context(seed=0))
    assert result.status == "error" and "boom" in result.evidence["error"]


def test_claim_rngs_are_stable_and_independent():
    a, b = Context(seed=3).rng("x").integers(0, 2**31, 4), Context(seed=3).rng("x").integers(0, 2**31, 4)
    assert (a == b).all()
    assert (Context(seed=3).rng("y").integers(0, 2**31, 4) != a).any()
