"""A claim's row in the report (what a check returns is in verify/protocol.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "error", "skipped"]


@dataclass
class ClaimResult:
    id: str
    paper: str
    section: str
    statement: str
    evidence_kind: str
    status: Status
    evidence: dict[str, Any] = field(default_factory=dict)
    control: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)  # why it failed / errored / was skipped
    rung: str | None = None  # the evidence rung the check reached (None: error or skipped)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "paper": self.paper, "section": self.section, "statement": self.statement,
            "evidence_kind": self.evidence_kind, "status": self.status, "rung": self.rung,
            "reasons": list(self.reasons), "evidence": self.evidence, "control": self.control,
            "seconds": round(self.seconds, 3),
        }
