"""Claim-level verdicts of Section 3 on the check protocol: the runner passes a claim only when
its evidence holds AND every control is refuted; each control can come out either way (run
here on the variant that should NOT be refuted); an exception inside a check is an error."""

import numpy as np
import pytest

import verify.checks.petrov_sec3 as sec3
from constructions.petrov.conditional import Conditional
from constructions.petrov.unconditional import Unconditional
from constructions.vocab import Vocabulary
from theorems.claims import claim
from theorems.petrov_sec3 import THRESHOLDS
from verify.certificates import certify_construction
from verify.registry import CHECKS, CONTROLS, Context, run_claim


@pytest.fixture(scope="module")
def theorem1():
    return run_claim(claim("petrov.thm1.unconditional"), Context(seed=0))


def test_theorem1_passes_with_certificate_and_refuted_controls(theorem1):
    assert theorem1.status == "pass" and theorem1.rung == "certificate"
    ev = theorem1.evidence
    assert ev["certificate"]["holds"] and ev["certificate"]["cases"] == 94 * 20
    assert ev["min_inverse_temperature"]["certificate_holds_at_T*+delta"]
    assert all(ev["min_inverse_temperature"]["proof"].values())
    assert ev["randomized"]["correct"] == ev["randomized"]["instances"] == 10_000
    assert ev["published_output"]["generated"] == "I love transformers!"
    assert set(theorem1.control) == set(CONTROLS["petrov.thm1.unconditional"])
    assert all(c["refuted"] and c["could_fail_because"] for c in theorem1.control.values())
    example = theorem1.control["too_small_temperature"]["measured"]["counterexample"]
    assert example["expected"] != example["generated"]


def test_theorem1_threshold_is_read_off_the_weights(theorem1):
    weights = theorem1.evidence["min_inverse_temperature"]["from_the_weights"]
    assert weights["binding_position"] == 19 and weights["T*"] == "log(3515)"  # ln((N - 1)(2V - 3))
    assert weights["worst_input"]["visible_keys_not_attended"] == 19
    assert weights["worst_input"]["spread_c"] == "93/94"
    at = weights["worst_input"]["forward_at_T*"]
    assert at["difference"] <= 1e-12 and abs(abs(at["shift"]) - 1 / 188) <= 1e-12


def test_summary_prints_the_true_comparator(theorem1):
    assert "> 0" in theorem1.evidence["summary"] and "<= 1e-12" in theorem1.evidence["summary"]


def test_capacity_evidence_is_the_exhaustive_count():
    result = run_claim(claim("petrov.sec3.capacity"), Context(seed=0))
    assert result.status == "pass" and result.rung == "certificate"
    ev = result.evidence
    assert ev["exhaustive"]["distinct_completions"] == ev["exhaustive"]["generated_exactly"] == 81
    assert "definition" in ev["summary"] and "not evidence" in ev["definitions"]["statement"]
    assert result.control["too_small_temperature"]["measured"]["distinct_completions"] < 81
    assert result.control["perturbed_readout_bias"]["refuted"]


def test_the_pigeonhole_bound_does_not_enter_the_capacity_verdict(monkeypatch):
    """A 'count' that breaks the definition V^n cannot make the claim fail: it is no evidence."""
    monkeypatch.setattr(sec3, "count_real_prompt_behaviours", lambda spec, V, n: V**n + 1)
    result = run_claim(claim("petrov.sec3.capacity"), Context(seed=0))
    assert result.status == "pass"
    assert result.evidence["definitions"]["real_prompts"]["n=1"]["construction"] == 4


def test_a_readout_bias_below_the_margin_is_not_refuted_and_the_claim_fails(monkeypatch):
    """Flip of control 'perturbed_readout_bias': at 0.5 x the certified margin the shift is
    provably harmless, the control is not refuted, and the runner fails the claim."""
    monkeypatch.setattr(sec3, "MARGIN_FACTOR", 0.5)
    result = run_claim(claim("petrov.thm2.conditional"), Context(seed=0))
    assert result.status == "fail"
    assert result.control["perturbed_readout_bias"]["refuted"] is False
    assert result.control["perturbed_readout_bias"]["measured"]["certificate_holds"] is True
    assert result.control["too_small_temperature"]["refuted"] is True
    assert any("perturbed_readout_bias" in reason for reason in result.reasons)


def test_the_temperature_control_is_not_refuted_above_the_threshold():
    """Flip of control 'too_small_temperature': the same control just ABOVE T* comes out the
    other way (the certificate holds, no wrong answer)."""
    critical = THRESHOLDS["conditional"].value(V=94)
    warm = Conditional(Vocabulary.printable_ascii(), inverse_temperature=critical + 1e-6)
    control = sec3.temperature_control(warm, np.random.default_rng(0), critical, 1e-6)
    assert control.refuted is False and control.measured["certificate_holds"] is True


@pytest.mark.parametrize("factor, refuted", [(0.5, False), (2.0, True)])
def test_the_capacity_readout_control_flips_at_the_margin(factor, refuted):
    small = Unconditional(Vocabulary.letters(3), length=4)
    certificate = certify_construction(small)
    spec = sec3.perturbed_readout(small.spec, certificate.worst_competitor, factor * certificate.worst_margin)
    assert sec3.capacity_control("c", small, spec, "w", "b").refuted is refuted


def test_the_capacity_temperature_control_flips_at_the_threshold():
    critical = THRESHOLDS["unconditional"].value(V=3, N=4)
    for T, refuted in ((critical - 1e-6, True), (critical + 1e-6, False)):
        model = Unconditional(Vocabulary.letters(3), length=4, inverse_temperature=T)
        assert sec3.capacity_control("c", model, None, "w", "b").refuted is refuted


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
