"""How much a prefix changes the RELATIVE attention over the content, layer by layer.

Per layer l, head h, sentence b, real query i, real content key j:

  R^pt_ij = A^pt_{i,n_S+j} / (1 - alpha_i)    the prefix run's content attention, renormalised
  A_ij                                       the no-prefix reference (same position ids)

  shift_max(l)  = max |R^pt_ij - A_ij|
  tv(l)         = total variation 1/2 sum_j |R^pt_ij - A_ij| per (b, h, i): its max and its mean

Layer 0 sees the same inputs in both runs, so R^pt = A there (content scaling; zero up to
rounding). Deeper layers see the bias-shifted inputs x^pt (the prefix changed the layer-0 output),
so R^pt may differ from A. Mechanism: the no-prefix model whose layer l receives the prefix run's
inputs x^pt_l (a patched run, capture.py) attends exactly R^pt:

  mechanism(l)  = max |R^pt_ij - A^patched_ij|          should be rounding at EVERY layer

so the change of the relative attention comes only through the inputs (W_Q, W_K untouched).

Decisions ("zero up to rounding") use the scaled forms

  scaled_shift(l)     = max |A^pt_{i,n_S+j} - (1 - alpha_i) A_ij|         = max (1 - alpha_i) |R^pt_ij - A_ij|
  scaled_mechanism(l) = max |A^pt_{i,n_S+j} - (1 - alpha_i) A^patched_ij|

because dividing by (1 - alpha_i) multiplies the rounding error by 1 / (1 - alpha_i), which reaches
~100 for a trained prefix that takes 99% of some query's attention; the scaled form is the
content-scaling identity itself and its rounding does not depend on alpha. The table reports R.
Controls (same scaled checker): patching layer l with the inputs of layer l-1 of the prefix run
(l >= 1), and layer 0 measured against the clean theory's positions 0..p-1 (unshifted reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from verify.real_model.capture import Capture
from verify.real_model.identities import key_mask, masked_max, query_mask, split
from verify.real_model.loading import Batch


def scaled_deviation(run: Capture, layer: int, other: torch.Tensor) -> torch.Tensor:
    """A^pt_content - (1 - alpha) X for X (B, H, p, p) -> (B, H, p, p)."""
    parts = split(run.attn[layer], run.n_prefix)
    return parts.content - (1 - parts.alpha)[..., None] * other


def renormalised_content(run: Capture, layer: int) -> torch.Tensor:
    """R^pt (B, H, p, p) = A^pt_content / (1 - alpha)."""
    parts = split(run.attn[layer], run.n_prefix)
    return parts.content / (1 - parts.alpha)[..., None]


@dataclass
class LayerShift:
    """Per-layer measurements of one prefix kind in one dtype (lists indexed by layer)."""

    shift_max: list[float] = field(default_factory=list)
    tv_max: list[float] = field(default_factory=list)
    tv_mean: list[float] = field(default_factory=list)
    mechanism: list[float] = field(default_factory=list)
    scaled_shift: list[float] = field(default_factory=list)
    scaled_mechanism: list[float] = field(default_factory=list)
    min_one_minus_alpha: list[float] = field(default_factory=list)
    # controls
    patched_with_previous_layer_inputs: list[float | None] = field(default_factory=list)
    layer0_vs_unshifted_reference: float = 0.0


def measure(batches: list[Batch], runs: list[Capture], refs: list[Capture], patched: list[Capture],
            previous: list[Capture] | None, unshifted: list[Capture] | None, n_layers: int) -> LayerShift:
    """Every layer's shift and mechanism deviation over all batches.

    ``patched[b]``: the no-prefix run with every layer's input replaced by the prefix run's;
    ``previous[b]`` (optional, control): the same with layer l fed the prefix run's layer l-1 input.
    """
    out = LayerShift()
    for layer in range(n_layers):
        worst, tv_worst, tv_total, tv_count, mech, keep_min = 0.0, 0.0, 0.0, 0, 0.0, 1.0
        prev_worst, scaled, scaled_mech = 0.0, 0.0, 0.0
        for b, batch in enumerate(batches):
            q, k = query_mask(batch), key_mask(batch)
            R = renormalised_content(runs[b], layer)  # (B, H, p, p)
            diff = (R - refs[b].attn[layer]).abs() * k  # pad keys zeroed
            worst = max(worst, masked_max(diff, q & k))
            tv = 0.5 * diff.sum(-1)  # (B, H, p)
            tv_real = tv.masked_select(q[..., 0].expand_as(tv))
            tv_worst = max(tv_worst, float(tv_real.max()))
            tv_total += float(tv_real.sum())
            tv_count += tv_real.numel()
            mech = max(mech, masked_max(R - patched[b].attn[layer], q & k))
            scaled = max(scaled, masked_max(scaled_deviation(runs[b], layer, refs[b].attn[layer]), q & k))
            scaled_mech = max(scaled_mech, masked_max(scaled_deviation(runs[b], layer, patched[b].attn[layer]),
                                                      q & k))
            alpha = split(runs[b].attn[layer], runs[b].n_prefix).alpha
            keep_min = min(keep_min, float((1 - alpha).masked_select(q[..., 0].expand_as(alpha)).min()))
            if previous is not None and layer >= 1:
                prev_worst = max(prev_worst, masked_max(scaled_deviation(runs[b], layer, previous[b].attn[layer]),
                                                        q & k))
        out.shift_max.append(worst)
        out.tv_max.append(tv_worst)
        out.tv_mean.append(tv_total / tv_count)
        out.mechanism.append(mech)
        out.scaled_shift.append(scaled)
        out.scaled_mechanism.append(scaled_mech)
        out.min_one_minus_alpha.append(keep_min)
        out.patched_with_previous_layer_inputs.append(prev_worst if previous is not None and layer >= 1 else None)
    if unshifted is not None:
        out.layer0_vs_unshifted_reference = max(
            masked_max(scaled_deviation(runs[b], 0, unshifted[b].attn[0]), query_mask(batch) & key_mask(batch))
            for b, batch in enumerate(batches))
    return out
