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

    def to_finding(self):  # TRANSITIONAL: removed once every check returns verify.protocol types
        from verify.protocol import Control, Evidence, Finding, Rung, Skipped

        if self.skipped_reason is not None:
            return Skipped(self.skipped_reason, self.evidence)
        details = {k: v for k, v in self.evidence.items() if k not in ("holds", "summary", "rung")}
        evidence = Evidence(bool(self.holds), str(self.evidence.get("summary") or "legacy check"), Rung.MEASURED,
                            details)
        controls = tuple(
            Control(name, "legacy control", "legacy control", c if isinstance(c, dict) else {"value": c},
                    bool(c.get("refuted", self.control_refuted)) if isinstance(c, dict) else bool(self.control_refuted),
                    "not stated (legacy check)")
            for name, c in self.control.items())
        return Finding(evidence, controls)


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
