"""The check protocol (verify/protocol.py): the runner, not the check, decides; every claim has a
check and every check declares at least one control; the JSON report obeys its schema."""

from __future__ import annotations

import json
from importlib.resources import files

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from theorems.claims import CLAIMS, claim
from verify.protocol import Control, Evidence, Finding, ProtocolError, Rung, Skipped, compare, verdict
from verify.registry import CHECKS, CONTROLS, Context, run_claim
from verify.report import report_json, summarize_control

SCHEMA = json.loads(files("verify").joinpath("report.schema.json").read_text())
ANY_CLAIM = "petrov.sec3.capacity"


def control(name: str, refuted: bool) -> Control:
    return Control(name, wrong_variant="a wrong variant", criterion="x < 1", measured={"x": 0.5},
                   refuted=refuted, could_fail_because="x could have been >= 1")


def finding(holds: bool, refuted: list[bool]) -> Finding:
    return Finding(Evidence(holds, "worst 0.1 <= 1", Rung.RANDOMIZED, {"worst": 0.1}),
                   tuple(control(f"c{k}", r) for k, r in enumerate(refuted)))


@given(st.booleans(), st.lists(st.booleans(), max_size=4))
def test_pass_iff_evidence_holds_and_every_control_is_refuted(holds, refuted):
    decided = verdict(finding(holds, refuted))
    should_pass = holds and len(refuted) >= 1 and all(refuted)
    assert (decided.status == "pass") == should_pass
    assert bool(decided.reasons) != should_pass
    assert sum("not refuted" in r for r in decided.reasons) == refuted.count(False)


def test_a_finding_without_controls_fails():
    assert verdict(finding(True, [])).reasons == ("no negative control: a check that cannot fail proves nothing",)


@pytest.mark.parametrize("bad", [
    dict(refuted=1.0), dict(refuted=None), dict(could_fail_because=""), dict(criterion="  "),
    dict(measured=[1, 2]),
])
def test_a_control_must_be_fully_stated(bad):
    fields = dict(name="c", wrong_variant="w", criterion="k", measured={}, refuted=True, could_fail_because="b")
    with pytest.raises(ProtocolError):
        Control(**{**fields, **bad})


def test_evidence_details_cannot_shadow_the_verdict_fields():
    with pytest.raises(ProtocolError, match="holds"):
        Evidence(True, "s", Rung.SYMBOLIC, {"holds": False})


def test_numpy_bools_are_accepted_as_bools():
    np = pytest.importorskip("numpy")
    assert control("c", np.bool_(True)).refuted is True


def test_compare_prints_the_true_comparator():
    assert compare(0.107, 1e-12) == "0.107 > 1e-12"
    assert compare(3e-16, 1e-12) == "3e-16 <= 1e-12"
    assert compare(0.3, 0.25, below=False) == "0.3 >= 0.25"
    assert compare(0.2, 0.25, below=False) == "0.2 < 0.25"
    assert compare(float("nan"), 1.0).startswith("nan (not <=")


# --- the runner decides ----------------------------------------------------------------------
def run_with(monkeypatch, returned, declared=("c0",)):
    monkeypatch.setitem(CHECKS, ANY_CLAIM, lambda context: returned)
    monkeypatch.setitem(CONTROLS, ANY_CLAIM, declared)
    return run_claim(claim(ANY_CLAIM), Context(seed=0))


def test_a_standing_control_fails_the_claim_and_the_report_names_it(monkeypatch):
    result = run_with(monkeypatch, finding(True, [True, False]), declared=("c0", "c1"))
    assert result.status == "fail"
    assert result.reasons == ["control 'c1' not refuted: x < 1"]
    assert summarize_control(result) == "1/2 refuted; NOT refuted: c1"


def test_evidence_that_does_not_hold_fails_with_its_summary(monkeypatch):
    result = run_with(monkeypatch, finding(False, [True]))
    assert result.status == "fail" and result.reasons == ["evidence does not hold: worst 0.1 <= 1"]


def test_controls_other_than_the_declared_ones_are_an_error(monkeypatch):
    result = run_with(monkeypatch, finding(True, [True, True]), declared=("c0",))
    assert result.status == "error" and "differ from those declared" in result.reasons[0]


def test_a_return_value_outside_the_protocol_is_an_error(monkeypatch):
    result = run_with(monkeypatch, {"holds": True})
    assert result.status == "error" and "must return Finding or Skipped" in result.reasons[0]


def test_skipped_carries_its_reason(monkeypatch):
    result = run_with(monkeypatch, Skipped("no extra installed", {"extra": "real"}))
    assert result.status == "skipped" and result.reasons == ["skipped: no extra installed"]
    assert result.rung is None and result.evidence == {"reason": "no extra installed", "extra": "real"}


# --- claims, checks and controls: one for one -----------------------------------------------
def test_every_claim_has_exactly_one_check_and_every_check_a_claim():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(CHECKS)


@pytest.mark.parametrize("claim_id", [c.id for c in CLAIMS])
def test_every_check_declares_at_least_one_control(claim_id):
    assert len(CONTROLS.get(claim_id, ())) >= 1, f"{claim_id} declares no control"


# --- the JSON schema -------------------------------------------------------------------------
def test_reports_of_every_status_obey_the_schema(monkeypatch):
    results = [run_with(monkeypatch, finding(True, [True])), run_with(monkeypatch, finding(False, [True])),
               run_with(monkeypatch, Skipped("quick")), run_with(monkeypatch, finding(True, [True, True]))]
    assert [r.status for r in results] == ["pass", "fail", "skipped", "error"]
    jsonschema.validate(json.loads(json.dumps(report_json(results, seed=3))), SCHEMA)


def test_the_schema_rejects_a_pass_with_a_standing_control(monkeypatch):
    report = json.loads(json.dumps(report_json([run_with(monkeypatch, finding(True, [True]))], seed=0)))
    report["claims"][0]["control"]["c0"]["refuted"] = False
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(report, SCHEMA)
