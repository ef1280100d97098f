"""The report: a readable table for people, the same content as JSON for machines."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from verify.result import ClaimResult

VERSION = "0.1.0"
STATUS_STYLE = {"pass": "green", "fail": "bold red", "error": "bold magenta", "skipped": "yellow"}


def summarize_evidence(result: ClaimResult) -> str:
    """The check's own one-line summary (``Evidence.summary``), or why it errored or was skipped."""
    if result.status in ("error", "skipped"):
        return "; ".join(result.reasons)
    rung = f"[{result.rung}] " if result.rung else ""
    return rung + str(result.evidence["summary"])


def summarize_control(result: ClaimResult) -> str:
    """'k/n refuted', naming each control that was not refuted (those make the claim fail)."""
    if result.status in ("error", "skipped"):
        return ""
    standing = [name for name, c in result.control.items() if not c["refuted"]]
    text = f"{len(result.control) - len(standing)}/{len(result.control)} refuted"
    return text + (f"; NOT refuted: {', '.join(standing)}" if standing else "")


def render_table(results: list[ClaimResult], console: Console) -> None:
    table = Table(title="promptproof", show_lines=False)
    for column in ("claim", "status", "evidence", "controls", "s"):
        table.add_column(column, overflow="fold")
    for r in results:
        table.add_row(r.id, f"[{STATUS_STYLE[r.status]}]{r.status}[/]", summarize_evidence(r),
                      summarize_control(r), f"{r.seconds:.1f}")
    console.print(table)
    for r in results:
        if r.status in ("fail", "error"):
            for reason in r.reasons:
                console.print(f"[{STATUS_STYLE[r.status]}]{r.id}[/]: {reason}", highlight=False)
    counts = {s: sum(r.status == s for r in results) for s in STATUS_STYLE}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no claims run")


def report_json(results: list[ClaimResult], seed: int) -> dict[str, Any]:
    return {"promptproof": VERSION, "seed": seed, "claims": [r.to_json() for r in results]}


def write_json_atomically(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file beside ``path`` and rename: never a half-written report."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(payload, out, indent=2, sort_keys=False, default=_jsonable)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays -> plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
