"""CI's reading of the main job's report (.ci/check_report.py): strict expected failures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("check_report", Path(__file__).parents[1] / ".ci" / "check_report.py")
check_report = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(check_report)


@pytest.fixture
def expected(tmp_path, monkeypatch):
    path = tmp_path / "expected_failures.txt"
    path.write_text("# reasons live in the notes\nclaim.b   # does not reproduce at cpu scale\n")
    monkeypatch.setattr(check_report, "EXPECTED", path)


def report(tmp_path, rungs: dict[str, str] | None = None, **statuses) -> str:
    """A report whose claims promise ``symbolic`` and reach it, unless ``rungs`` says otherwise."""
    path = tmp_path / "report.json"
    rungs = rungs or {}
    path.write_text(json.dumps({"claims": [
        {"id": k.replace("_", "."), "status": v, "evidence_kind": "symbolic", "rung": rungs.get(k, "symbolic")}
        for k, v in statuses.items()]}))
    return str(path)


def test_exactly_the_listed_failures_pass_ci(tmp_path, expected):
    assert check_report.main(report(tmp_path, claim_a="pass", claim_b="fail", claim_c="skipped"), "1") == 0


def test_an_unlisted_failure_fails_ci(tmp_path, expected):
    assert check_report.main(report(tmp_path, claim_a="fail", claim_b="fail"), "1") == 1


def test_a_listed_claim_that_now_passes_fails_ci(tmp_path, expected):
    assert check_report.main(report(tmp_path, claim_a="pass", claim_b="pass"), "0") == 1


def test_errors_usage_exits_and_inconsistent_exit_codes_fail_ci(tmp_path, expected):
    assert check_report.main(report(tmp_path, claim_a="error", claim_b="fail"), "1") == 1
    assert check_report.main(report(tmp_path, claim_a="pass", claim_b="fail"), "2") == 1
    assert check_report.main(report(tmp_path, claim_a="pass", claim_b="fail"), "0") == 1


def test_a_passing_claim_at_another_rung_than_promised_fails_ci(tmp_path, expected, capsys):
    path = report(tmp_path, rungs={"claim_a": "randomized"}, claim_a="pass", claim_b="fail")
    assert check_report.main(path, "1") == 1
    assert "claim.a (reached randomized, promised symbolic)" in capsys.readouterr().out


def test_a_failing_claim_may_stop_below_its_promised_rung(tmp_path, expected):
    assert check_report.main(report(tmp_path, rungs={"claim_b": "randomized"}, claim_a="pass", claim_b="fail"), "1") == 0


def test_the_committed_list_names_existing_claims():
    from theorems.claims import CLAIMS

    assert check_report.expected_failures() <= {c.id for c in CLAIMS}
