"""CI's reading of ``python -m verify all``: the scientific verdicts are the report's, CI checks
that they are the expected ones.

A claim that does not reproduce is reported as failing (exit 1), with its evidence; it is listed,
with the reason, in .ci/expected_failures.txt. CI passes when the main job ran (exit 0 or 1, never 2
or a crash), no claim errored, and the failing claims are EXACTLY the listed ones: an unlisted
failure fails CI, and so does a listed claim that now passes (strict, like pytest's xfail(strict)),
so the list and the notes cannot go stale. A passing claim must also reach the rung its record
promises (``rung == evidence_kind``): a check that silently fell to a weaker rung (a sympy step
that no longer holds, a certificate replaced by a search) fails CI even though its verdict is a pass.

    python .ci/check_report.py REPORT.json EXIT_CODE
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXPECTED = Path(__file__).with_name("expected_failures.txt")


def expected_failures() -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in EXPECTED.read_text().splitlines())
    return {line for line in lines if line}


def main(report_path: str, exit_code: str) -> int:
    if exit_code not in ("0", "1"):
        print(f"ci: verify all exited {exit_code} (0 or 1 expected)")
        return 1
    claims = json.loads(Path(report_path).read_text())["claims"]
    errored = sorted(c["id"] for c in claims if c["status"] == "error")
    failed = {c["id"] for c in claims if c["status"] == "fail"}
    expected = expected_failures()
    unknown = sorted(expected - {c["id"] for c in claims})
    problems = []
    if errored:
        problems.append(f"claims errored: {', '.join(errored)}")
    if failed - expected:
        problems.append(f"unexpected failures: {', '.join(sorted(failed - expected))}")
    if expected - failed - set(unknown):
        problems.append(f"listed as failing but passed or skipped (update .ci/expected_failures.txt and the notes): "
                        f"{', '.join(sorted(expected - failed - set(unknown)))}")
    weaker = sorted(f"{c['id']} (reached {c['rung']}, promised {c['evidence_kind']})" for c in claims
                    if c["status"] == "pass" and c["rung"] != c["evidence_kind"])
    if weaker:
        problems.append(f"passing claims not at the rung their record promises: {', '.join(weaker)}")
    if unknown:
        problems.append(f"listed claims that do not exist: {', '.join(unknown)}")
    if (exit_code == "1") != bool(failed):
        problems.append(f"exit code {exit_code} does not match {len(failed)} failing claims")
    for p in problems:
        print(f"ci: {p}")
    if not problems:
        print(f"ci: {len(claims)} claims; failing exactly as expected: {', '.join(sorted(failed)) or 'none'}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
