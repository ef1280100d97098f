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
B = a, A = lam b^T) is such an update. ``prove_finetune_witness`` checks the identity and the
sign for symbolic vectors of symbolic length via a sum-of-squares form, and the flip threshold.
"""

from __future__ import annotations

from typing import Any

import sympy as sp

i, j, k, r = sp.symbols("i j k r", integer=True, positive=True)
m, n_S, dim = sp.symbols("m n_S d", integer=True, positive=True)
S, Q = sp.IndexedBase("S"), sp.IndexedBase("Q")
q, xj, xk = sp.IndexedBase("q"), sp.IndexedBase("x_j"), sp.IndexedBase("x_k")
scale, lam = sp.symbols("scale lambda", positive=True)
gap = sp.Symbol("g", real=True)  # S_ij - S_ik before fine-tuning
norm_q, norm_dx = sp.symbols("Q2 D2", positive=True)  # |q_i|^2, |x_j - x_k|^2 (> 0)

STATEMENT = ("Fine-tuning W_Q/W_K (even a rank-1 LoRA on W_K) can flip the order of two content keys; "
             "with any prefix, A^pt_ij / A^pt_ik = A_ij / A_ik.")


def _zero(expr: sp.Expr) -> bool:
    return sp.simplify(expr) == 0


def prove_ratio_invariance() -> dict[str, bool]:
    """A^pt_ij / A^pt_ik = A_ij / A_ik = e^{S_ij - S_ik} for symbolic n_S, m and any prefix scores."""
    Z = sp.Sum(sp.exp(S[i, r]), (r, 1, m))
    P = sp.Sum(sp.exp(Q[i, r]), (r, 1, n_S))
    ratio_pt = (sp.exp(S[i, j]) / (P + Z)) / (sp.exp(S[i, k]) / (P + Z))
    ratio = (sp.exp(S[i, j]) / Z) / (sp.exp(S[i, k]) / Z)
    Ps, Zs = sp.symbols("P Z", positive=True)
    return {
        "A^pt_ij / A^pt_ik = e^{S_ij - S_ik} (symbolic n_S, m; any prefix scores Q)":
            _zero(sp.powsimp(ratio_pt) - sp.exp(S[i, j] - S[i, k])),
        "A_ij / A_ik = e^{S_ij - S_ik}": _zero(sp.powsimp(ratio) - sp.exp(S[i, j] - S[i, k])),
        "d/dP of the prefixed ratio = 0 (P = any prefix mass > 0)":
            _zero(sp.diff((sp.exp(S[i, j]) / (Ps + Zs)) / (sp.exp(S[i, k]) / (Ps + Zs)), Ps)),
    }


def prove_finetune_witness() -> dict[str, bool]:
    """The rank-1 witness's score change, its sign, and the flip threshold (symbolic sizes)."""
    t = sp.Symbol("t", integer=True, positive=True)
    dot = lambda u, v: sp.Sum(u[t] * v[t], (t, 1, dim))  # noqa: E731
    # b = q, a = x_k - x_j:  scale lam (q . b)(a . (x_j - x_k)) = -scale lam |q|^2 |x_j - x_k|^2
    dx = sp.IndexedBase("dx")  # dx = x_j - x_k, so a = -dx
    change = scale * lam * dot(q, q) * sp.Sum(-dx[t] * dx[t], (t, 1, dim))
    closed = -scale * lam * sp.Sum(q[t] ** 2, (t, 1, dim)) * sp.Sum(dx[t] ** 2, (t, 1, dim))
    reduced = -scale * lam * norm_q * norm_dx
    # fixed sizes, from the matrices themselves: d = 3, d_head = 2, W_K' = W_K + lam a b^T
    X = sp.Matrix(2, 3, sp.symbols("x1:3_1:4", real=True))  # rows x_j, x_k
    W_K = sp.Matrix(3, 2, sp.symbols("w1:4_1:3", real=True))
    q_row = sp.Matrix(1, 2, sp.symbols("q1:3", real=True))
    a_col, b_col = (X[1, :] - X[0, :]).T, q_row.T  # the witness a = x_k - x_j, b = q_i
    scores = lambda W: scale * q_row * (X * W).T  # noqa: E731   (1, 2): S_ij, S_ik
    before, after_ft = scores(W_K), scores(W_K + lam * a_col * b_col.T)
    fixed_change = (after_ft[0] - after_ft[1]) - (before[0] - before[1])
    fixed_closed = -scale * lam * (q_row * q_row.T)[0] * ((X[0, :] - X[1, :]) * (X[0, :] - X[1, :]).T)[0]
    threshold = gap / (scale * norm_q * norm_dx)
    after = gap + reduced  # S'_ij - S'_ik
    return {
        "score-gap change = -scale lam |q_i|^2 |x_j - x_k|^2 (symbolic d)": _zero(sp.expand(change - closed)),
        "fixed d=3, d_head=2: from W_K' = W_K + lam a b^T, expanded": _zero(sp.expand(fixed_change - fixed_closed)),
        "the change is < 0 for lam > 0, |q_i| > 0, x_j != x_k": reduced.is_negative is True,
        "S'_ij - S'_ik = 0 exactly at lam* = (S_ij - S_ik) / (scale |q_i|^2 |x_j - x_k|^2)":
            _zero(after.subs(lam, threshold)),
        "S'_ij - S'_ik is strictly decreasing in lam (so every lam > lam* flips the pair)":
            sp.diff(after, lam).is_negative is True,
    }


def prove() -> dict[str, bool]:
    return {**{f"ratio: {key}": value for key, value in prove_ratio_invariance().items()},
            **{f"witness: {key}": value for key, value in prove_finetune_witness().items()}}


def refute_prefix_changes_content_keys() -> dict[str, Any]:
    """The control: if the "prefix" also changed the content scores (as a soft prompt does in
    layer 2, through the content's inputs), the ratio would move. With S_ij -> S_ij + delta_j,
    the ratio picks up e^{delta_j - delta_k}: not identically 1."""
    Ps, Zs = sp.symbols("P Z", positive=True)
    dj, dk = sp.symbols("delta_j delta_k", real=True)
    ratio_pt = (sp.exp(S[i, j] + dj) / (Ps + Zs)) / (sp.exp(S[i, k] + dk) / (Ps + Zs))
    difference = sp.simplify(sp.powsimp(ratio_pt) - sp.exp(S[i, j] - S[i, k]))
    value = float(difference.subs({dj: 1, dk: 0, S[i, j]: 0, S[i, k]: 0}))
    return {"variant": "prefix that also shifts content scores by delta_j (soft prompt in layer 2)",
            "difference": str(difference), "reduces_to_0": difference == 0,
            "value_at_witness": value, "refuted": difference != 0 and value != 0.0}
