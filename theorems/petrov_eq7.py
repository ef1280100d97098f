"""Eq. 7 of Petrov et al.: fine-tuning W_Q / W_K can reorder attention; a prefix cannot.

Notation as in :mod:`theorems.petrov_sec4` (query i, content keys j, k, prefix keys s_1..s_nS):

    S_ij = scale q_i . k_j,  q_i = x_i W_Q + b_Q,  k_j = x_j W_K + b_K  (row vectors; RoPE rotates
    q_i and k_j by position, which changes nothing below because it acts on q and k alone).

Ratio invariance (any prefix). With P_i = sum_k e^{Q_ik} > 0 and Z_i = sum_r e^{S_ir},

    A^pt_ij / A^pt_ik = (e^{S_ij}/(P_i + Z_i)) / (e^{S_ik}/(P_i + Z_i)) = e^{S_ij - S_ik} = A_ij / A_ik,

for every prefix length n_S and every prefix (P_i is arbitrary): no prefix changes the order of,
or any ratio between, two content keys. Proved with symbolic sums (general n_S, m) below.

Fine-tuning (Eq. 7). A rank-1 update of W_K,  W_K' = W_K + lam a b^T  (a: (d,), b: (d_head,)),
changes key j by  lam (x_j . a) b,  so

    (S'_ij - S'_ik) - (S_ij - S_ik) = scale lam (q_i . b) (a . (x_j - x_k)).

The witness b = q_i, a = x_k - x_j gives  -scale lam |q_i|^2 |x_j - x_k|^2 < 0  for lam > 0 and
x_j != x_k, so any

    lam > (S_ij - S_ik) / (scale |q_i|^2 |x_j - x_k|^2)

makes k more attended than j (the order of the pair flips). A rank-1 LoRA on W_K (B A with
B = a, A = lam b^T) is such an update. ``prove_finetune_witness`` derives the score-gap change
from the matrices at symbolic d, d_head (sympy MatrixSymbol: the scores are computed from
W_K' = W_K + lam a b^T, not typed in), substitutes the witness, shows the result is
-scale lam |q_i|^2 |x_j - x_k|^2 with both norms sums of squares (non-negative for symbolic d),
and derives the flip threshold from that change.

Premises. Both proofs start from stated premises (``Premises``): the content scores the prefixed
row uses (true: the unprefixed S_ij, the prefix adds keys only) and the witness direction
(true: a = x_k - x_j). ``WRONG`` replaces each by a deliberately wrong one (a prefix that also
shifts content scores; a = x_j - x_k); the tests check that each makes some step False.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy as sp
from sympy.matrices.expressions.special import ZeroMatrix

i, j, k, r = sp.symbols("i j k r", integer=True, positive=True)
m, n_S, dim, dim_head = sp.symbols("m n_S d d_h", integer=True, positive=True)
S, Q = sp.IndexedBase("S"), sp.IndexedBase("Q")
scale, lam = sp.symbols("scale lambda", positive=True)
gap = sp.Symbol("g", real=True)  # S_ij - S_ik before fine-tuning
delta_j, delta_k = sp.symbols("delta_j delta_k", real=True)

# row vectors and matrices of symbolic size: q_i (1, d_h), x_j, x_k (1, d), W_K (d, d_h), a (d, 1), b (d_h, 1)
q_row = sp.MatrixSymbol("q", 1, dim_head)
x_j, x_k = sp.MatrixSymbol("x_j", 1, dim), sp.MatrixSymbol("x_k", 1, dim)
W_K = sp.MatrixSymbol("W_K", dim, dim_head)
a_col, b_col = sp.MatrixSymbol("a", dim, 1), sp.MatrixSymbol("b", dim_head, 1)

STATEMENT = ("Fine-tuning W_Q/W_K (even a rank-1 LoRA on W_K) can flip the order of two content keys; "
             "with any prefix, A^pt_ij / A^pt_ik = A_ij / A_ik.")


@dataclass(frozen=True)
class Premises:
    """``content_shift``: the prefixed row's content scores are S_ij + delta_j (true: False, a
    prefix adds keys and values only). ``witness_sign``: the witness direction is
    a = sign (x_k - x_j) (true: +1)."""

    content_shift: bool = False
    witness_sign: int = 1


TRUE = Premises()
WRONG: dict[str, Premises] = {
    "the prefix also shifts the content scores by delta_j (soft prompt in layer 2)": Premises(content_shift=True),
    "witness direction a = x_j - x_k (sign flipped)": Premises(witness_sign=-1),
}


def _zero(expr: sp.Expr) -> bool:
    return sp.simplify(expr) == 0


def _zero_matrix(expr: sp.MatrixExpr) -> bool:
    """Expanded, the difference of two matrix expressions is ZeroMatrix (simplify only if not)."""
    reduced = sp.expand(expr.doit())
    if not (isinstance(reduced, ZeroMatrix) or reduced == 0):
        reduced = sp.simplify(reduced)
    return isinstance(reduced, ZeroMatrix) or reduced == 0


def prove_ratio_invariance(premises: Premises = TRUE) -> dict[str, bool]:
    """A^pt_ij / A^pt_ik = A_ij / A_ik = e^{S_ij - S_ik} for symbolic n_S, m and any prefix scores."""
    Z = sp.Sum(sp.exp(S[i, r]), (r, 1, m))
    P = sp.Sum(sp.exp(Q[i, r]), (r, 1, n_S))
    dj, dk = (delta_j, delta_k) if premises.content_shift else (0, 0)
    ratio_pt = (sp.exp(S[i, j] + dj) / (P + Z)) / (sp.exp(S[i, k] + dk) / (P + Z))
    ratio = (sp.exp(S[i, j]) / Z) / (sp.exp(S[i, k]) / Z)
    Ps, Zs = sp.symbols("P Z", positive=True)
    return {
        "A^pt_ij / A^pt_ik = A_ij / A_ik (symbolic n_S, m; any prefix scores Q)":
            _zero(sp.powsimp(ratio_pt) - sp.powsimp(ratio)),
        "A_ij / A_ik = e^{S_ij - S_ik}": _zero(sp.powsimp(ratio) - sp.exp(S[i, j] - S[i, k])),
        "d/dP of the prefixed ratio = 0 (P = any prefix mass > 0)":
            _zero(sp.diff((sp.exp(S[i, j] + dj) / (Ps + Zs)) / (sp.exp(S[i, k] + dk) / (Ps + Zs)), Ps)),
    }


def _score(W: sp.MatrixExpr, x: sp.MatrixSymbol) -> sp.MatrixExpr:
    """S = scale q_i (x W)^T, a 1 x 1 matrix."""
    return scale * q_row * (x * W).T


def prove_finetune_witness(premises: Premises = TRUE) -> dict[str, bool]:
    """The rank-1 witness's score change, derived from the matrices, its sign, the flip threshold."""
    tuned = W_K + lam * a_col * b_col.T
    change = (_score(tuned, x_j) - _score(tuned, x_k)) - (_score(W_K, x_j) - _score(W_K, x_k))
    general = scale * lam * (q_row * b_col) * (a_col.T * (x_j - x_k).T)
    witness = {b_col: q_row.T, a_col: premises.witness_sign * (x_k - x_j).T}
    dx = x_j - x_k
    closed = -scale * lam * (q_row * q_row.T) * (dx * dx.T)
    # |q|^2 and |x_j - x_k|^2 as sums of squares of real entries (symbolic length)
    t = sp.Symbol("t", integer=True, positive=True)
    qi, dxi = sp.IndexedBase("q", real=True), sp.IndexedBase("dx", real=True)
    norm_q, norm_dx = sp.Sum(qi[t] ** 2, (t, 1, dim_head)), sp.Sum(dxi[t] ** 2, (t, 1, dim))
    Q2, D2 = sp.symbols("Q2 D2", positive=True)  # their values under q_i != 0, x_j != x_k
    after = gap - scale * lam * Q2 * D2  # S'_ij - S'_ik, from the derived change
    threshold = list(sp.roots(sp.Poly(after, lam)))
    # fixed sizes, from explicit matrices: d = 3, d_head = 2
    X = sp.Matrix(2, 3, sp.symbols("x1:3_1:4", real=True))  # rows x_j, x_k
    W = sp.Matrix(3, 2, sp.symbols("w1:4_1:3", real=True))
    q_fixed = sp.Matrix(1, 2, sp.symbols("q1:3", real=True))
    a_fixed, b_fixed = premises.witness_sign * (X[1, :] - X[0, :]).T, q_fixed.T
    scores = lambda M: scale * q_fixed * (X * M).T  # noqa: E731   (1, 2): S_ij, S_ik
    before, after_ft = scores(W), scores(W + lam * a_fixed * b_fixed.T)
    fixed_change = (after_ft[0] - after_ft[1]) - (before[0] - before[1])
    fixed_closed = -scale * lam * (q_fixed * q_fixed.T)[0] * ((X[0, :] - X[1, :]) * (X[0, :] - X[1, :]).T)[0]
    return {
        "score-gap change under W_K + lam a b^T = scale lam (q_i . b)(a . (x_j - x_k)) (symbolic d, d_head)":
            _zero_matrix(change - general),
        "at b = q_i, a = x_k - x_j it is -scale lam |q_i|^2 |x_j - x_k|^2 (derived from the matrices)":
            _zero_matrix(change.subs(witness) - closed),
        "fixed d=3, d_head=2: from explicit W_K' = W_K + lam a b^T, expanded":
            _zero(sp.expand(fixed_change - fixed_closed)),
        "|q_i|^2 and |x_j - x_k|^2 are sums of squares: >= 0 for every d (so the change is <= 0)":
            norm_q.is_nonnegative is True and norm_dx.is_nonnegative is True,
        "S'_ij - S'_ik = g - scale lam Q2 D2 has exactly one root lam* = g / (scale Q2 D2)":
            len(threshold) == 1 and _zero(threshold[0] - gap / (scale * Q2 * D2)),
        "S'_ij - S'_ik is strictly decreasing in lam for Q2, D2 > 0 (every lam > lam* flips the pair)":
            sp.diff(after, lam).is_negative is True,
    }


def prove(premises: Premises = TRUE) -> dict[str, bool]:
    return {**{f"ratio: {key}": value for key, value in prove_ratio_invariance(premises).items()},
            **{f"witness: {key}": value for key, value in prove_finetune_witness(premises).items()}}


def refute_prefix_changes_content_keys() -> dict[str, Any]:
    """The control: if the "prefix" also changed the content scores (as a soft prompt does in
    layer 2, through the content's inputs), the ratio would move. With S_ij -> S_ij + delta_j the
    ratio-invariance proof must have a False step, and the ratio picks up e^{delta_j - delta_k}:
    non-zero at a witness."""
    shifted = WRONG["the prefix also shifts the content scores by delta_j (soft prompt in layer 2)"]
    failing = [step for step, ok in prove_ratio_invariance(shifted).items() if not ok]
    Ps, Zs = sp.symbols("P Z", positive=True)
    ratio_pt = (sp.exp(S[i, j] + delta_j) / (Ps + Zs)) / (sp.exp(S[i, k] + delta_k) / (Ps + Zs))
    difference = sp.simplify(sp.powsimp(ratio_pt) - sp.exp(S[i, j] - S[i, k]))
    value = float(difference.subs({delta_j: 1, delta_k: 0, S[i, j]: 0, S[i, k]: 0}))
    return {"variant": "prefix that also shifts content scores by delta_j (soft prompt in layer 2)",
            "ratio_steps_false": failing, "difference": str(difference), "reduces_to_0": difference == 0,
            "value_at_witness": value, "refuted": bool(failing) and difference != 0 and value != 0.0}
