"""From a claim id to its check, what it rests on, its notes and its tests in one step
(``verify list --where``), and no note or docstring citing a file that does not exist."""

from __future__ import annotations

import re

import pytest

import verify.checks  # noqa: F401  (registers every check)
from theorems.claims import CLAIMS
from tests.cli_helpers import REPO, cli
from verify.registry import CHECKS
from verify.where import ROOT, all_locations, files_naming, locate, used_modules

LOCATIONS = {loc.claim_id: loc for loc in all_locations()}


def test_every_claim_with_a_check_is_located() -> None:
    assert list(LOCATIONS) == [c.id for c in CLAIMS if c.id in CHECKS]


@pytest.mark.parametrize("claim_id", list(LOCATIONS))
def test_every_claim_has_a_check_a_note_and_a_test_that_exist(claim_id: str) -> None:
    loc = LOCATIONS[claim_id]
    path, line = loc.check.rsplit(":", 1)
    source = (ROOT / path).read_text().splitlines()
    assert re.match(r"\s*(def |@)", source[int(line) - 1]), f"{loc.check} is not where a function begins"
    assert loc.notes, f"no note names {claim_id}"
    assert loc.tests, f"no test names {claim_id} or imports its check's module"
    for name in loc.files():
        assert (ROOT / name).is_file(), name


def test_a_construction_claim_points_at_its_construction() -> None:
    assert "constructions/petrov/unconditional.py" in LOCATIONS["petrov.thm1.unconditional"].constructions
    assert "constructions/petrov/two_token.py" in LOCATIONS["petrov.thm2.two-token"].constructions
    # a check uses only what it calls: Theorem 1's check does not rest on the two-token construction
    assert "constructions/petrov/two_token.py" not in LOCATIONS["petrov.thm1.unconditional"].constructions


def test_a_training_claim_points_at_its_experiment_and_its_verdict() -> None:
    loc = LOCATIONS["petrov.sec5.combines-skills"]
    assert loc.experiments == ("verify/experiments/skills.py",)
    assert loc.check.startswith("verify/checks/petrov_sec5_skills.py:")  # the verdict, not the registry's wrapper
    assert LOCATIONS["petrov.sec5.descending-not-learnable"].experiments == ("verify/experiments/experiments.py",)


def test_imports_inside_a_check_body_are_followed() -> None:
    # petrov_sec4_real imports its suite and tolerances inside the check functions
    assert "verify/real_model/tolerances.py" in LOCATIONS["petrov.sec4.real-model"].machinery


def test_the_most_specific_note_comes_first() -> None:
    assert LOCATIONS["petrov.sec4.real-model"].notes[0] == "notes/real_model.md"
    assert LOCATIONS["oymak.c1.prompt-attention-more-expressive"].notes[0] in ("notes/oymak.md", "notes/mutants.md")


def test_a_function_using_nothing_of_the_project_rests_on_nothing() -> None:
    def plain(x: int) -> int:
        return x + 1

    assert used_modules(plain) == {"constructions": (), "theorems": (), "verify": ()}
    assert files_naming("notes", ".md", "no.such.claim-id") == ()
    with pytest.raises(KeyError):
        locate("no.such.claim-id")


def test_cli_list_where_prints_each_claim_and_its_check(capsys) -> None:
    code, out, _ = cli(capsys, "list", "--where")
    assert code == 0
    for claim_id, loc in LOCATIONS.items():
        assert f"{claim_id}\n  check:         {loc.check}\n" in out


# Paths a note, the README or a docstring cites: repo-relative files of the project's folders.
CITED_PATH = re.compile(r"(?<![\w/.])((?:verify|constructions|theorems|tests|notes|\.ci)/[\w./-]*\w\."
                        r"(?:py|md|json|txt|png|toml))")
TEMPLATES = {"notes/figures/sec5_NAME_learning.png"}  # a pattern, spelled out beside it in the note


def cited_paths() -> dict[str, list[str]]:
    sources = [REPO / "README.md", *sorted((REPO / "notes").rglob("*.md")),
               *(p for folder in ("verify", "constructions", "theorems", "tests") for p in sorted((REPO / folder).rglob("*.py")))]
    cited: dict[str, list[str]] = {}
    for source in sources:
        for match in CITED_PATH.finditer(source.read_text(errors="replace")):
            cited.setdefault(match.group(1), []).append(source.relative_to(REPO).as_posix())
    return cited


def test_notes_readme_and_docstrings_cite_only_files_that_exist() -> None:
    cited = cited_paths()
    assert len(cited) > 50  # the scan reads what it should
    missing = {path: where for path, where in cited.items() if path not in TEMPLATES and not (REPO / path).exists()}
    assert not missing, f"cited but missing: {missing}"


def test_the_citation_scan_finds_a_missing_file(tmp_path) -> None:
    missing = "verify/" + "no_such_module.py"  # built, not written: this file is scanned too
    found = [m.group(1) for m in CITED_PATH.finditer(f"see {missing} and notes/protocol.md")]
    assert found == [missing, "notes/protocol.md"]
    assert not (REPO / found[0]).exists() and (REPO / found[1]).exists()
