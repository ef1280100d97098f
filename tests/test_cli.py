"""The command-line contract of ``python -m verify`` (DESIGN.md, "CLI contract").

Most cases call ``verify.cli.main`` in-process (fast); a few run ``python -m verify`` in a
subprocess to check what a user really sees: the exit code, and no traceback on stderr.
"""

from __future__ import annotations

import json
from importlib.resources import files

import jsonschema
import pytest
from cli_helpers import assert_usage_error, cli, cli_subprocess

from theorems.claims import CLAIMS
from verify.cli import main
from verify.registry import CHECKS

EVIDENCE_KINDS = {"symbolic", "certificate", "convex", "randomized", "trained", "measured"}
CLAIM_KEYS = {"id", "paper", "section", "statement", "evidence_kind", "status", "rung", "reasons", "evidence", "control",
              "seconds"}








def without_timings(report: dict) -> dict:
    return {**report, "claims": [{k: v for k, v in c.items() if k != "seconds"} for c in report["claims"]]}


IMPLEMENTED = [c for c in CLAIMS if c.id in CHECKS]


# --- list -------------------------------------------------------------------------------------
def test_list_prints_one_tab_separated_line_per_implemented_claim(capsys):
    code, out, err = cli(capsys, "list")
    assert code == 0
    lines = out.rstrip("\n").split("\n")
    assert [line.split("\t") for line in lines] == [
        [c.id, c.paper, c.section, c.evidence_kind] for c in IMPLEMENTED
    ]
    assert all(len(line.split("\t")) == 4 and all(line.split("\t")) for line in lines)
    assert {line.split("\t")[3] for line in lines} <= EVIDENCE_KINDS
    assert len({line.split("\t")[0] for line in lines}) == len(lines)


def test_list_includes_the_section3_claims(capsys):
    _, out, _ = cli(capsys, "list")
    ids = {line.split("\t")[0] for line in out.splitlines()}
    assert {"petrov.thm1.unconditional", "petrov.thm2.conditional", "petrov.thm2.long-response",
            "petrov.sec3.capacity"} <= ids


# --- bad input: exit 2, one line, nothing written --------------------------------------------
def test_run_unknown_claim_exits_2_with_one_line(capsys):
    code, out, err = cli(capsys, "run", "petrov.no-such-claim")
    assert_usage_error(code, err)
    assert "petrov.no-such-claim" in err


def test_run_unknown_prefix_among_known_ones_runs_nothing(capsys, tmp_path):
    report = tmp_path / "report.json"
    code, out, err = cli(capsys, "run", "petrov.sec3", "nosuch", "--json", report)
    assert_usage_error(code, err)
    assert "nosuch" in err
    assert not report.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["run", "petrov.sec3", "--seed", "-1"],
        ["run", "petrov.sec3", "--seed", "x"],
        ["run", "petrov.sec3", "--seed", "1.5"],
        ["all", "--seed", "-1"],
        ["check-export", ".", "--seed", "x"],
        ["frobnicate"],
        [],
        ["run"],
        ["export", "unconditional"],
        ["export", "--out", "somewhere"],
        ["check-export"],
        ["list", "extra"],
        ["bench", "--targets", "0"],
        ["export", "unconditional", "--out", "x", "--length", "0"],
        ["export", "unconditional", "--out", "x", "--inverse-temperature", "nan"],
        ["export", "unconditional", "--out", "x", "--inverse-temperature", "-1"],
    ],
    ids=lambda a: " ".join(a) or "(no arguments)",
)
def test_bad_options_exit_2_with_one_line(capsys, args):
    code, out, err = cli(capsys, *args)
    assert_usage_error(code, err)


def test_json_into_a_missing_directory_exits_2_and_writes_nothing(capsys, tmp_path):
    target = tmp_path / "missing" / "report.json"
    code, out, err = cli(capsys, "run", "petrov.sec3", "--json", target)
    assert_usage_error(code, err)
    assert "running" not in err  # refused before any claim ran
    assert list(tmp_path.iterdir()) == []


def test_check_export_json_into_a_missing_directory_exits_2(capsys, tmp_path):
    code, out, err = cli(capsys, "check-export", tmp_path, "--json", tmp_path / "missing" / "r.json")
    assert_usage_error(code, err)
    assert list(tmp_path.iterdir()) == []


def test_json_naming_an_existing_directory_is_a_usage_error(tmp_path):
    result = cli_subprocess("run", "petrov.sec3", "--json", tmp_path)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2
    assert list(tmp_path.iterdir()) == []


def test_unknown_claim_end_to_end_has_no_traceback():
    result = cli_subprocess("run", "UNKNOWN")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_bad_seed_end_to_end_has_no_traceback():
    result = cli_subprocess("run", "petrov.sec3", "--seed", "-1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "verify: error: argument --seed: must be a non-negative integer, got '-1'"
    ]


# --- run: JSON report, determinism, selection --------------------------------------------------
CHEAP = "petrov.thm2.conditional"  # a certificate claim that runs in under a second


@pytest.fixture(scope="module")
def cheap_report(tmp_path_factory) -> tuple[int, dict]:
    """``run petrov.thm2.conditional --json F`` (seed 0), in-process: (exit code, report). (A fast
    certificate claim: ``petrov.sec3`` now also selects a training sub-claim, which trains for
    any seed without committed records.)"""
    path = tmp_path_factory.mktemp("thm2") / "report.json"
    code = main(["run", CHEAP, "--json", str(path)])
    return code, json.loads(path.read_text())


def test_run_writes_the_design_json_schema_and_exits_0(cheap_report):
    code, report = cheap_report
    assert code == 0
    jsonschema.validate(report, json.loads(files("verify").joinpath("report.schema.json").read_text()))
    assert set(report) == {"promptproof", "seed", "claims"}
    assert isinstance(report["promptproof"], str) and report["promptproof"]
    assert report["seed"] == 0
    assert [c["id"] for c in report["claims"]] == [CHEAP]
    records = {c.id: c for c in CLAIMS}
    for item in report["claims"]:
        assert set(item) == CLAIM_KEYS
        record = records[item["id"]]
        assert (item["paper"], item["section"], item["statement"], item["evidence_kind"]) == (
            record.paper, record.section, record.statement, record.evidence_kind)
        assert item["status"] == "pass"
        assert item["rung"] == item["evidence_kind"]  # the rung the record promises was reached
        assert isinstance(item["evidence"], dict) and item["evidence"]
        assert isinstance(item["control"], dict) and item["control"]  # a negative control was run
        assert isinstance(item["seconds"], (int, float)) and item["seconds"] >= 0


def test_same_seed_gives_the_same_report_apart_from_timings(cheap_report, tmp_path):
    """Across processes too: the second run is a fresh ``python -m verify``."""
    _, first = cheap_report
    path = tmp_path / "again.json"
    result = cli_subprocess("run", CHEAP, "--seed", "0", "--json", path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert without_timings(json.loads(path.read_text())) == without_timings(first)


def test_a_different_seed_still_passes(capsys, tmp_path):
    path = tmp_path / "seed7.json"
    code, out, err = cli(capsys, "run", CHEAP, "--seed", "7", "--json", path)
    assert code == 0
    report = json.loads(path.read_text())
    assert report["seed"] == 7
    assert [c["status"] for c in report["claims"]] == ["pass"]
    assert "petrov.thm2" in out and "1 pass" in out  # the table for people


def test_prefix_selects_exactly_the_matching_claims(capsys, tmp_path):
    path = tmp_path / "thm1.json"
    code, out, err = cli(capsys, "run", "petrov.thm1", "--json", path)
    assert code == 0
    report = json.loads(path.read_text())
    expected = [c.id for c in IMPLEMENTED if c.id.startswith("petrov.thm1")]
    assert expected == ["petrov.thm1.unconditional"]
    assert [c["id"] for c in report["claims"]] == expected
    assert [c["status"] for c in report["claims"]] == ["pass"]
    assert "petrov.thm2" not in out
