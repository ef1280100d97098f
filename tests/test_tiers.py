"""The two test tiers: the fast one by default, the slow one on request, CI running both."""

from __future__ import annotations

import re
import tomllib

from tests.cli_helpers import REPO
from tests.conftest import SLOW


def test_every_slow_name_is_a_test_function_of_its_file() -> None:
    for file, names in SLOW.items():
        text = (REPO / "tests" / file).read_text()
        for name in names:
            assert re.search(rf"^def {name}\(", text, re.MULTILINE), f"tests/{file} has no test {name}"


def test_the_default_run_is_the_fast_tier_on_two_workers() -> None:
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert "-m 'not slow'" in options and "-n 2" in options


def test_ci_runs_the_readme_command_and_the_slow_tier() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert ". .venv/bin/activate && python -m pytest\n" in readme
    assert "python -m pytest -m slow" in ci and "python -m pytest\n" in ci


def test_the_hypothesis_profile_follows_ci():
    """Under CI every property test draws fixed examples (conftest: profile "ci"); elsewhere new ones."""
    import os

    from hypothesis import settings

    ci = bool(os.environ.get("CI")) or os.environ.get("HYPOTHESIS_PROFILE") == "ci"
    assert settings.default.derandomize is ci
    if ci:
        assert settings.default.database is None
