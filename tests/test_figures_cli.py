"""``verify figures REPORT.json``: the Oymak figures drawn from a report, all or nothing."""

from __future__ import annotations

import json

import pytest

import verify.checks  # noqa: F401
from theorems.claims import CLAIMS
from tests.cli_helpers import assert_usage_error, cli
from verify.registry import Context, run_claim
from verify.report import report_json

CHOSEN = ("oymak.c2.gd-learns-prompt-and-head", "oymak.c3.finite-sample-exact")


@pytest.fixture(scope="module")
def report() -> dict:
    context = Context(seed=0, quick=True)
    return report_json([run_claim(c, context) for c in CLAIMS if c.id in CHOSEN], 0)


def test_the_figures_of_the_claims_in_the_report_are_drawn(report, tmp_path, capsys) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    code, out, _ = cli(capsys, "figures", path, "--out", tmp_path / "figs")
    assert code == 0
    drawn = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert drawn == ["oymak_c2_gd.png", "oymak_c3_curve.png"]  # c1 and c4 are not in the report
    assert all((tmp_path / "figs" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in drawn)
    assert "wrote" in out


def test_a_report_without_oymak_claims_draws_nothing(tmp_path, capsys) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"promptproof": "x", "seed": 0, "claims": [{"id": "petrov.thm1.unconditional",
                                                                          "status": "pass"}]}))
    code, out, _ = cli(capsys, "figures", path, "--out", tmp_path / "figs")
    assert code == 0 and "no figures" in out
    assert list((tmp_path / "figs").iterdir()) == []


@pytest.mark.parametrize("content, fragment", [(None, "cannot read"), ("{not json", "is not JSON"),
                                               ('{"claims": 3}', "not a promptproof report")])
def test_bad_report_is_one_line_exit_2_and_nothing_written(content, fragment, tmp_path, capsys) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    code, _, err = cli(capsys, "figures", path, "--out", tmp_path / "figs")
    assert_usage_error(code, err)
    assert fragment in err
    assert not (tmp_path / "figs").exists()


def test_evidence_missing_a_field_leaves_no_figure_behind(report, tmp_path, capsys) -> None:
    broken = json.loads(json.dumps(report))
    c3 = next(c for c in broken["claims"] if c["id"] == "oymak.c3.finite-sample-exact")
    c3["evidence"] = {"summary": "edited"}  # c2's figure is drawn first, then c3's fails
    path = tmp_path / "report.json"
    path.write_text(json.dumps(broken))
    code, _, err = cli(capsys, "figures", path, "--out", tmp_path / "figs")
    assert_usage_error(code, err)
    assert "lacks what its figure needs" in err
    assert list((tmp_path / "figs").iterdir()) == []


def test_out_naming_a_file_is_a_usage_error(report, tmp_path, capsys) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    (tmp_path / "file").write_text("x")
    code, _, err = cli(capsys, "figures", path, "--out", tmp_path / "file")
    assert_usage_error(code, err)
