"""Compare two ``verify all --json`` reports apart from their timing fields.

``python -m verify.bench.compare BEFORE.json AFTER.json [--subset]`` prints every difference (a JSON
path and both values) and exits 0 iff the reports are identical once the fields that measure the machine
rather than the claims are removed: any key named ``seconds`` or starting with ``seconds_`` (the
claim's wall time, the real-model suite's load/train/measure times). Everything else, every
verdict, evidence number and control, must be equal exactly (floats compared by value, so a
float that changes in its last bit is a difference). A performance change is acceptable only when
this comparison passes on the same seed. ``--subset``: AFTER ran some of BEFORE's claims
(``verify run PREFIX``); those are compared, in BEFORE's order.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def is_timing(key: str) -> bool:
    """Keys that measure the machine: ``seconds`` and ``seconds_*``."""
    return key == "seconds" or key.startswith("seconds_")


def strip_timings(obj: Any) -> Any:
    """A copy of ``obj`` without timing keys (at every depth)."""
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items() if not is_timing(k)}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    return obj


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """Every place where ``a`` and ``b`` differ, as 'path: a != b' lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                yield f"{path}/{key}: only in {'after' if key not in a else 'before'}"
            else:
                yield from differences(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}[{i}]")
    elif a != b or type(a) is not type(b):
        if not (isinstance(a, float) and isinstance(b, float) and a != a and b != b):  # NaN == NaN here
            yield f"{path}: {a!r} != {b!r}"


def claims_by_id(report: dict) -> dict[str, dict]:
    return {c["id"]: c for c in report.get("claims", [])}


def compare_reports(before: dict, after: dict, subset: bool = False) -> list[str]:
    """Differences between two reports apart from timings; claims are compared in order and by id
    (a reordered report is a difference: the report order is part of the contract). ``subset``:
    only the claims ``after`` has (which must appear in ``before``, in the same order)."""
    out = list(differences(strip_timings({k: v for k, v in before.items() if k != "claims"}),
                           strip_timings({k: v for k, v in after.items() if k != "claims"})))
    order_b = [c["id"] for c in after.get("claims", [])]
    order_a = [c["id"] for c in before.get("claims", []) if not subset or c["id"] in order_b]
    if order_a != order_b:
        out.append(f"/claims: order or set differs: {order_a} != {order_b}")
    a, b = claims_by_id(before), claims_by_id(after)
    for claim_id in order_a:
        if claim_id in b:
            out += list(differences(strip_timings(a[claim_id]), strip_timings(b[claim_id]), f"/claims[{claim_id}]"))
    return out


def timings(report: dict) -> dict[str, float]:
    return {c["id"]: float(c.get("seconds", 0.0)) for c in report.get("claims", [])}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    subset = "--subset" in args
    args = [a for a in args if a != "--subset"]
    if len(args) != 2:
        print("usage: python -m verify.bench.compare BEFORE.json AFTER.json [--subset]", file=sys.stderr)
        return 2
    try:
        before, after = (json.loads(Path(p).read_text()) for p in args)
    except (OSError, ValueError) as exc:
        print(f"verify.bench.compare: error: {exc}", file=sys.stderr)
        return 2
    found = compare_reports(before, after, subset)
    t_a, t_b = timings(before), timings(after)
    both = [claim_id for claim_id in t_a if claim_id in t_b]
    for claim_id in both:
        print(f"{claim_id:55s} {t_a[claim_id]:8.1f} s -> {t_b[claim_id]:8.1f} s")
    print(f"{'total':55s} {sum(t_a[c] for c in both):8.1f} s -> {sum(t_b[c] for c in both):8.1f} s")
    for line in found:
        print(line)
    print("identical apart from timings" if not found else f"{len(found)} difference(s)")
    return 0 if not found else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
