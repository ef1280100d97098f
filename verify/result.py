"""What a check returns, and how it becomes a claim's row in the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "error", "skipped"]


@dataclass
class Outcome:
    """A check's verdict. ``holds``: the claim's evidence stands; ``control_refuted``: the
    deliberately wrong variant was refuted by the same checker. Both are needed to pass."""

    holds: bool
    evidence: dict[str, Any]
    control: dict[str, Any]
    control_refuted: bool
    skipped_reason: str | None = None


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

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "paper": self.paper, "section": self.section, "statement": self.statement,
            "evidence_kind": self.evidence_kind, "status": self.status, "evidence": self.evidence,
            "control": self.control, "seconds": round(self.seconds, 3),
        }
