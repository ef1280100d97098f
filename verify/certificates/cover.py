"""Certify a construction for ALL inputs: interval forward pass over its finite cover of boxes.

For every case (a box of first-layer inputs, a read position, a required token y) the interval
forward pass bounds the final residual x at the read position, and

    margin_c = (W_U[:, y] - W_U[:, c]) . x + b_U[y] - b_U[c]      for every c != y

is bounded below. If the lower bound is > 0 for every c and every case, then for every input in
every box the argmax at the read position is y (ties count as failures, and so does a NaN
bound, which means "no information"). Together with the construction's argument that its boxes
cover all inputs, this proves the claim for all inputs (in exact real arithmetic; see
``interval`` for the floating-point side).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from constructions.construction import Construction
from constructions.forward import forward
from constructions.spec import TransformerSpec
from verify.certificates.interval import INTERVAL, Box, logit_margins

CHUNK = 256  # cases per interval pass: amortises Python overhead, arrays stay in cache


@dataclass
class CoverCertificate:
    """Outcome of certifying every case of a construction's cover."""

    cases: int = 0
    failing: int = 0
    worst_margin: float = np.inf  # min over cases of the certified lower bound of the margin
    worst_case: np.ndarray | None = None
    worst_competitor: int | None = None  # the token c whose margin is the worst one, at worst_case
    failing_examples: list[np.ndarray] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return self.cases > 0 and self.failing == 0


def certify(construction: Construction, spec: TransformerSpec | None = None, chunk: int = CHUNK,
            keep_failures: int = 5) -> CoverCertificate:
    """Run the interval certificate over every case of ``construction``'s cover.

    ``spec`` replaces the construction's own weights (e.g. weights reloaded from an export).
    """
    spec = spec or construction.spec
    result = CoverCertificate()
    for batch in construction.certificate_cases(chunk):
        resid = forward(spec, Box(batch.x_lo, batch.x_hi), INTERVAL)
        rows = np.arange(len(batch.expected))
        at_read = resid[rows, batch.read_position]  # box (B, d)
        margins = logit_margins(at_read, spec.W_U, spec.b_U, batch.expected)  # box (B, V)
        lower = margins.lo.copy()
        lower[rows, batch.expected] = np.inf  # c = y is not a competitor
        lower[np.isnan(lower)] = -np.inf  # no information: a failure
        competitor = lower.argmin(axis=1)
        worst_per_case = lower[rows, competitor]
        result.cases += len(rows)
        bad = worst_per_case <= 0
        result.failing += int(bad.sum())
        for index in np.flatnonzero(bad)[: max(0, keep_failures - len(result.failing_examples))]:
            result.failing_examples.append(batch.labels[index])
        argmin = int(np.argmin(worst_per_case))
        if worst_per_case[argmin] < result.worst_margin:
            result.worst_margin = float(worst_per_case[argmin])
            result.worst_case = batch.labels[argmin]
            result.worst_competitor = int(competitor[argmin])
    return result
