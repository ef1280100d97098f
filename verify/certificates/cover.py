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
from verify.certificates.interval import INTERVAL, Box, _Index, logit_margins

CHUNK = 256  # cases per interval pass: amortises Python overhead, arrays stay in cache


@dataclass
class CoverCertificate:
    """Outcome of certifying every case of a construction's cover.

    ``readout``: when asked for (``keep_readout``), per batch of the cover the boxes of the
    final residual's coordinates that W_U reads at the read position, with the batch's required
    tokens and labels: enough to certify the same weights with another unembedding bias without
    a second forward pass (``certify_readout``)."""

    cases: int = 0
    failing: int = 0
    worst_margin: float = np.inf  # min over cases of the certified lower bound of the margin
    worst_case: np.ndarray | None = None
    worst_competitor: int | None = None  # the token c whose margin is the worst one, at worst_case
    failing_examples: list[np.ndarray] = field(default_factory=list)
    spec: TransformerSpec | None = field(default=None, repr=False)
    readout: list[tuple[Box, np.ndarray, np.ndarray]] | None = field(default=None, repr=False)

    @property
    def holds(self) -> bool:
        return self.cases > 0 and self.failing == 0

    def add(self, resid_at_read: Box, spec: TransformerSpec, expected: np.ndarray, labels: np.ndarray,
            keep_failures: int) -> None:
        """Fold one batch in: resid_at_read (B, d) boxes of the final residual at the read position."""
        rows = np.arange(len(expected))
        margins = logit_margins(resid_at_read, spec.W_U, spec.b_U, expected)  # box (B, V)
        lower = margins.lo.copy()
        lower[rows, expected] = np.inf  # c = y is not a competitor
        lower[np.isnan(lower)] = -np.inf  # no information: a failure
        competitor = lower.argmin(axis=1)
        worst_per_case = lower[rows, competitor]
        self.cases += len(rows)
        bad = worst_per_case <= 0
        self.failing += int(bad.sum())
        for index in np.flatnonzero(bad)[: max(0, keep_failures - len(self.failing_examples))]:
            self.failing_examples.append(labels[index])
        argmin = int(np.argmin(worst_per_case))
        if worst_per_case[argmin] < self.worst_margin:
            self.worst_margin = float(worst_per_case[argmin])
            self.worst_case = labels[argmin]
            self.worst_competitor = int(competitor[argmin])


def certify(construction: Construction, spec: TransformerSpec | None = None, chunk: int = CHUNK,
            keep_failures: int = 5, keep_readout: bool = False) -> CoverCertificate:
    """Run the interval certificate over every case of ``construction``'s cover.

    ``spec`` replaces the construction's own weights (e.g. weights reloaded from an export).
    """
    return certify_specs(construction, [spec or construction.spec], chunk, keep_failures, keep_readout)[0]


def certify_specs(construction: Construction, specs: list[TransformerSpec], chunk: int = CHUNK,
                  keep_failures: int = 5, keep_readout: bool = False) -> list[CoverCertificate]:
    """The certificate of each of ``specs`` over ONE pass of ``construction``'s cover: each batch
    of boxes is built once and run through every spec (the tightness runs at T* +- delta use
    the same cover as the construction: it depends on the vocabulary, the sizes, W_E and W_pos,
    not on T). The result for a spec is the one ``certify`` gives it alone: the same batches in
    the same order through the same arithmetic.

    Only the read position's residual is computed in the last block (``forward(..., read=)``:
    its queries, softmax row, output projection and MLP; keys and values everywhere), which is
    the residual the margins are read from. ``keep_readout``: keep, for the FIRST spec, the
    coordinates W_U reads at the read position (``CoverCertificate.readout``)."""
    results = [CoverCertificate(spec=spec) for spec in specs]
    if keep_readout:
        results[0].readout = []
        read_by_unembedding = _Index(np.flatnonzero((specs[0].W_U != 0).any(axis=1)))
    for batch in construction.certificate_cases(chunk):
        for i, (spec, result) in enumerate(zip(specs, results)):
            at_read = forward(spec, Box(batch.x_lo, batch.x_hi), INTERVAL, read=batch.read_position)[:, 0]  # (B, d)
            result.add(at_read, spec, batch.expected, batch.labels, keep_failures)
            if keep_readout and i == 0:
                lo, hi = at_read.take(read_by_unembedding)
                kept = Box._columns(None, at_read.shape, read_by_unembedding, np.array(lo), np.array(hi))
                result.readout.append((kept, batch.expected, batch.labels))
    return results


def same_except_unembedding_bias(a: TransformerSpec, b: TransformerSpec) -> bool:
    """Every weight, the attention scale and the mask equal, the unembedding bias aside."""
    wa, wb = a.named_arrays(), b.named_arrays()
    return (wa.keys() == wb.keys() and a.attention_scale == b.attention_scale and a.causal == b.causal
            and a.rotary_base == b.rotary_base
            and all(np.array_equal(wa[k], wb[k]) for k in wa if k != "unembed.b_U"))


def certify_readout(previous: CoverCertificate, spec: TransformerSpec, keep_failures: int = 5) -> CoverCertificate:
    """The certificate of ``spec``, which differs from ``previous.spec`` only in its unembedding
    bias b_U, from the residual boxes ``previous`` kept: the forward pass does not read b_U, so
    the residual box at every read position is the same, and the margins
    (W_U[:, y] - W_U[:, c]) . x + b_U[y] - b_U[c] read only the coordinates kept (the rows of W_U
    that are not zero, the same W_U). Equal to ``certify(construction, spec)``, batch by batch."""
    if previous.readout is None or previous.spec is None:
        raise ValueError("certify_readout: the previous certificate kept no readout (keep_readout=True)")
    if not same_except_unembedding_bias(previous.spec, spec):
        raise ValueError("certify_readout: the weights differ from the certified ones beyond the unembedding bias")
    result = CoverCertificate(spec=spec)
    for kept, expected, labels in previous.readout:
        result.add(kept, spec, expected, labels, keep_failures)
    return result
