"""The check protocol: what a check returns, and how the runner turns it into a verdict.

A check measures; it never decides its own status. It returns a ``Finding``

    Finding(evidence: Evidence, controls: tuple[Control, ...])

or ``Skipped(reason)`` when it cannot run for a stated reason (``--quick``, a missing extra).
The runner (``verify.registry.run_claim``), and only the runner, computes the verdict:

    pass  <=>  evidence.holds  AND  len(controls) >= 1  AND  every control.refuted
    fail  otherwise, with one reason per broken condition, e.g.
          "evidence does not hold: <evidence.summary>"
          "control '<name>' not refuted: <criterion>"

An exception inside a check is an ``error`` (a checker bug is reported, never hidden).

Evidence: ``holds`` (the claim's pass condition came out true), ``summary`` (one line that prints
the true comparator, e.g. "worst |err| 0.107 > 1e-12" when it fails), ``rung`` (the strongest
rung of the evidence ladder the check actually reached, see ``Rung``) and ``details`` (the
figures: free-form JSON data).

Control: a deliberately wrong variant that the same checker must refute. It states the variant
(``wrong_variant``), the criterion the checker applied to it (``criterion``), what it measured
(``measured``), whether the criterion refuted it (``refuted``) and why that could have come out
the other way (``could_fail_because``): a control whose result follows from the check's own pass
condition proves nothing, so every control must say what would have made it fail.

The report (table and JSON) is rendered from these types only; ``verify/report.schema.json`` is
the JSON schema, validated in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Rung(str, Enum):
    """The evidence ladder of DESIGN.md, strongest first. A check reports the rung it reached,
    which may be below the claim record's ``evidence_kind`` (the notes say where and why)."""

    SYMBOLIC = "symbolic"        # sympy: the identity reduces to 0 for symbolic sizes / scores
    CERTIFICATE = "certificate"  # every case of a finite domain, exhaustively or by intervals
    CONVEX = "convex"            # a solver's optimal value or dual bound, cross-checked
    RANDOMIZED = "randomized"    # many random instances, worst error reported
    TRAINED = "trained"          # real models trained from scratch, seeded, paper's metric
    MEASURED = "measured"        # a measurement with a stated criterion, no stronger argument


RESERVED_EVIDENCE_KEYS = frozenset({"holds", "summary", "rung"})


class ProtocolError(TypeError):
    """A check returned something the protocol does not accept (a checker bug: an 'error')."""


def _nonempty(text: Any, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ProtocolError(f"{what} must be a non-empty string, got {text!r}")
    return text


def _strict_bool(value: Any, what: str) -> bool:
    """True/False, also from numpy bools; anything else (a float, None) is a checker bug."""
    if type(value).__name__ in ("bool", "bool_", "bool8"):
        return bool(value)
    raise ProtocolError(f"{what} must be a bool, got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class Evidence:
    """The claim's own evidence: whether its pass condition holds, in one line and in figures."""

    holds: bool
    summary: str
    rung: Rung
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "holds", _strict_bool(self.holds, "Evidence.holds"))
        _nonempty(self.summary, "Evidence.summary")
        object.__setattr__(self, "rung", Rung(self.rung))
        clash = RESERVED_EVIDENCE_KEYS & set(self.details)
        if clash:
            raise ProtocolError(f"Evidence.details may not use the keys {sorted(clash)}")

    def to_json(self) -> dict[str, Any]:
        return {"holds": self.holds, "summary": self.summary, "rung": self.rung.value, **self.details}


@dataclass(frozen=True)
class Control:
    """A deliberately wrong variant, the criterion applied to it, and the result.

    ``refuted`` is True when the checker's criterion rejected the wrong variant (the control
    did its job). ``could_fail_because`` says what would have made it come out the other way.
    """

    name: str
    wrong_variant: str
    criterion: str
    measured: Mapping[str, Any]
    refuted: bool
    could_fail_because: str

    def __post_init__(self) -> None:
        _nonempty(self.name, "Control.name")
        _nonempty(self.wrong_variant, f"control {self.name!r}: wrong_variant")
        _nonempty(self.criterion, f"control {self.name!r}: criterion")
        _nonempty(self.could_fail_because, f"control {self.name!r}: could_fail_because")
        if not isinstance(self.measured, Mapping):
            raise ProtocolError(f"control {self.name!r}: measured must be a mapping")
        object.__setattr__(self, "refuted", _strict_bool(self.refuted, f"control {self.name!r}: refuted"))

    def to_json(self) -> dict[str, Any]:
        return {"wrong_variant": self.wrong_variant, "criterion": self.criterion,
                "measured": dict(self.measured), "refuted": self.refuted,
                "could_fail_because": self.could_fail_because}


@dataclass(frozen=True)
class Finding:
    """What a check returns: its evidence and its controls (at least one; names unique)."""

    evidence: Evidence
    controls: tuple[Control, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.evidence, Evidence):
            raise ProtocolError(f"Finding.evidence must be an Evidence, got {type(self.evidence).__name__}")
        controls = tuple(self.controls)
        if not all(isinstance(c, Control) for c in controls):
            raise ProtocolError("Finding.controls must all be Control")
        names = [c.name for c in controls]
        if len(set(names)) != len(names):
            raise ProtocolError(f"control names repeat: {names}")
        object.__setattr__(self, "controls", controls)


@dataclass(frozen=True)
class Skipped:
    """A check that did not run, and why (e.g. '--quick skips training claims')."""

    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _nonempty(self.reason, "Skipped.reason")


@dataclass(frozen=True)
class Verdict:
    status: str          # "pass" | "fail"
    reasons: tuple[str, ...]


def verdict(finding: Finding) -> Verdict:
    """pass <=> evidence holds, there is at least one control, and every control is refuted."""
    reasons = []
    if not finding.evidence.holds:
        reasons.append(f"evidence does not hold: {finding.evidence.summary}")
    if not finding.controls:
        reasons.append("no negative control: a check that cannot fail proves nothing")
    for c in finding.controls:
        if not c.refuted:
            reasons.append(f"control '{c.name}' not refuted: {c.criterion}")
    return Verdict("fail" if reasons else "pass", tuple(reasons))


def compare(value: float, bound: float, below: bool = True, fmt: str = ".3g") -> str:
    """'value <= bound' or 'value > bound' (the TRUE comparator, for summaries); NaN prints as
    'nan (not <= bound)'. ``below=False`` states value >= bound instead."""
    if isinstance(value, float) and math.isnan(value):
        return f"nan (not {'<=' if below else '>='} {bound:{fmt}})"
    ok = value <= bound if below else value >= bound
    op = ("<=" if ok else ">") if below else (">=" if ok else "<")
    return f"{value:{fmt}} {op} {bound:{fmt}}"
