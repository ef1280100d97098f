"""Running ``python -m verify`` from tests: in-process (fast) or as a subprocess (what a user sees)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from verify.cli import main

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``main(args)`` in-process -> (exit code, stdout, stderr) with colour codes stripped."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, ANSI.sub("", captured.out), ANSI.sub("", captured.err)


def cli_subprocess(*args, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "verify", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_usage_error(code: int, err: str) -> None:
    """Bad input: exit 2, exactly one line on stderr, no traceback."""
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("verify: error: ")
