"""Section 4 of Petrov et al.: a prefix only scales content attention and adds a bias.

One attention head (one layer unless stated). Query i is a content position; it sees the n_S
prefix positions and m content positions (m = i under the causal mask, m = n without one; every
identity below holds for any m >= 1, so both cases are covered). Scores are

    S_ir = scale * (W_Q x_i) . (W_K x_r)      (content keys, r = 1..m)
    Q_ik = scale * (W_Q x_i) . (W_K s_k)      (prefix keys,  k = 1..n_S)

Reduction lemma (``reduction_lemma``). The prefixed row is a softmax over the concatenated key
sequence c_1..c_{n_S+m} = (e^{Q_i1}, .., e^{Q_in_S}, e^{S_i1}, .., e^{S_im}); its denominator
splits as sum_{j<=n_S+m} c_j = P_i + Z_i with

    P_i = sum_k e^{Q_ik} > 0,   Z_i = sum_r e^{S_ir} > 0,

so A_ir = e^{S_ir}/Z_i, A^pt_ir = e^{S_ir}/(P_i + Z_i), A^pt_{i,s_k} = e^{Q_ik}/(P_i + Z_i),
alpha_i = sum_k A^pt_{i,s_k} in (0, 1). Values enter linearly, so every output identity is proved
for one output coordinate: v_r = (W_V x_r)_c, u_k = (W_V s_k)_c, content numerator
N_i = sum_r e^{S_ir} v_r, prefix numerator U_i = sum_k e^{Q_ik} u_k, t_i = N_i/Z_i,
t^pt_i = (U_i + N_i)/(P_i + Z_i).

Each ``prove_*`` returns {step: bool}; a step is True only if sympy reduces it to 0 exactly (or
decides the stated sign). The proofs start from ``Premises``: where the content keys sit in the
concatenated sequence and what normalises the prefixed row. Every step is computed FROM the
premises, never compared with a copy of itself, so a deliberately wrong premise (``WRONG``:
content keys overlapping the last prefix key; the prefixed row normalised by Z_i alone, as if
the prefix took no mass) makes steps come out False -- the tests check that for every proof.
Sizes: sympy ``Sum``/``IndexedBase`` over symbolic n_S and m (general sizes); the reduced form
with positive symbols Z, P standing for the sums where it differs from the ``Sum`` form; and a
fully expanded cross-check at fixed sizes (n = 3 content positions, causal, n_S = 2), where the
softmax weights e^{score} are positive symbols and zero is decided exactly (the numerator of the
rational function expands to 0).

Soft prompt = prefix-tuning in layer 1 (``prove_soft_prompt_is_prefix_in_layer_1``), for
symbolic n_S, n, d, d_head with sympy block matrices: the soft-prompted block reads
H = [S; X] ((n_S + n) x d), its queries/keys/values are H W + 1 b. The content rows of the score
matrix (H W_Q + 1 b_Q)(H W_K + 1 b_K)^T are, block by block, the prefix-tuned scores
(X W_Q + 1 b_Q)(S W_K + 1 b_K)^T and (X W_Q + 1 b_Q)(X W_K + 1 b_K)^T; the value blocks are
S W_V + 1 b_V and X W_V + 1 b_V; under the causal mask every content query (global index
n_S + i) sees every prefix key (index k < n_S). By the reduction lemma each content row of the
softmax is then the same function of the same blocks, so the head outputs agree; residual and
MLP act row-wise and read the same content row X. Scope of the symbolic argument: one head with
Linear biases, causal mask, no norm/RoPE (norms and RoPE act row-wise by position; several heads
are summed through W_O): those are covered by the randomized check, not here.

``refute_*`` runs the same reduction on a deliberately wrong statement: it must NOT reduce to 0,
and a numeric substitution gives a concrete non-zero value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import sympy as sp
from sympy.matrices.expressions.special import ZeroMatrix

# --- symbols ----------------------------------------------------------------------------------

i, j, k, r = sp.symbols("i j k r", integer=True, positive=True)
m, n_S = sp.symbols("m n_S", integer=True, positive=True)
S, Q, v, u, c = (sp.IndexedBase(name) for name in ("S", "Q", "v", "u", "c"))
Zs, Ps = sp.symbols("Z P", positive=True)  # the lemma's positive row sums
e_S, e_Q = sp.symbols("E_S E_Q", positive=True)  # e^{S_ij} and e^{Q_ik} for one fixed key
Ns, Us, vs, us = sp.symbols("N U v u", real=True)

Z = sp.Sum(sp.exp(S[i, r]), (r, 1, m))
P = sp.Sum(sp.exp(Q[i, k]), (k, 1, n_S))
N_sum = sp.Sum(sp.exp(S[i, r]) * v[r], (r, 1, m))
U_sum = sp.Sum(sp.exp(Q[i, k]) * u[k], (k, 1, n_S))

FIXED_CONTENT = 3  # n, causal: query i sees content positions 1..i
FIXED_PREFIX = 2  # n_S

STATEMENTS: dict[str, str] = {
    "petrov.sec4.content-scaling":
        "A^pt_ij = A_ij (1 - alpha_i) for every content key j, alpha_i = sum_k A^pt_{i,s_k}.",
    "petrov.sec4.output-bias":
        "With one prefix vector s: t^pt_i = (1 - alpha_i) t_i + alpha_i W_V s.",
    "petrov.sec4.multi-prefix-convex":
        "With n_S prefix vectors: t^pt_i = (1 - alpha_i) t_i + alpha_i sum_k beta_ik W_V s_k, "
        "beta_ik = A^pt_{i,s_k} / alpha_i, beta_i in the probability simplex.",
    "petrov.sec4.soft-prompt-is-prefix-in-layer-1":
        "In the first layer, soft prompting (prepend input embeddings s_k) and prefix-tuning "
        "(prepend keys W_K s_k and values W_V s_k) give identical outputs at every content position.",
}


def _plus(p: sp.Expr, z: sp.Expr) -> sp.Expr:
    return p + z


@dataclass(frozen=True)
class Premises:
    """What the Section 4 proofs start from (the defaults are the true premises).

    ``content_offset``: the content keys occupy the concatenated indices offset+1..offset+m
    (true: n_S, right after the prefix). ``denominator(P, Z)``: the normaliser of the prefixed
    softmax row, from the prefix mass P and the content mass Z (true: P + Z; the lemma's row-sum
    step is what ties it to the concatenated sum)."""

    content_offset: sp.Expr = n_S
    denominator: Callable[[sp.Expr, sp.Expr], sp.Expr] = field(default=_plus)


TRUE = Premises()
WRONG: dict[str, Premises] = {
    "content keys start one index early (overlap the last prefix key)": Premises(content_offset=n_S - 1),
    "prefixed row normalised by Z_i alone (the prefix mass left out)": Premises(denominator=lambda p, z: z),
}


def is_zero(expr: sp.Expr) -> bool:
    return sp.simplify(expr) == 0


def is_zero_rational(expr: sp.Expr) -> bool:
    """Exact zero test for a rational function: its numerator over a common denominator expands to 0."""
    return sp.expand(sp.numer(sp.together(expr))) == 0


def _prefix_weight(premises: Premises) -> sp.Expr:
    """A^pt_{i,s_k} for a symbolic prefix key k."""
    return sp.exp(Q[i, k]) / premises.denominator(P, Z)


def _alpha(premises: Premises) -> sp.Expr:
    """alpha_i = sum_k A^pt_{i,s_k}, as a Sum over symbolic n_S."""
    return sp.Sum(_prefix_weight(premises), (k, 1, n_S))


def reduction_lemma(premises: Premises = TRUE) -> dict[str, bool]:
    """The prefixed denominator over the concatenated keys is P_i + Z_i; alpha in (0,1)."""
    o = premises.content_offset
    split = sp.Sum(c[j], (j, 1, n_S)) + sp.Sum(c[j], (j, o + 1, o + m)) - sp.Sum(c[j], (j, 1, n_S + m))
    shifted = sp.Sum(c[j], (j, o + 1, o + m)).change_index(j, j - o, r) - sp.Sum(c[n_S + r], (r, 1, m))
    den = premises.denominator(P, Z)
    row = sp.Sum(sp.exp(Q[i, k]) / den, (k, 1, n_S)) + sp.Sum(sp.exp(S[i, r]) / den, (r, 1, m))
    alpha = Ps / premises.denominator(Ps, Zs)
    return {
        "sum_{j<=n_S+m} c_j = sum_{k<=n_S} c_k + sum_{content} c_j (symbolic n_S, m)": is_zero(split),
        "sum_{content} c_j = sum_{r<=m} c_{n_S+r} (index shift)": is_zero(shifted),
        "with c = (e^Q, e^S) the prefixed row, normalised as premised, sums to 1": is_zero(row - 1),
        "alpha_i = P/(denominator) > 0 for positive P, Z": alpha.is_positive is True,
        "1 - alpha_i > 0": sp.simplify(1 - alpha).is_positive is True,
    }


@cache
def _true_lemma() -> tuple[tuple[str, bool], ...]:
    return tuple(reduction_lemma(TRUE).items())


def _lemma(premises: Premises) -> dict[str, bool]:
    steps = dict(_true_lemma()) if premises is TRUE else reduction_lemma(premises)
    return {f"lemma: {key}": value for key, value in steps.items()}


# --- fixed sizes, fully expanded --------------------------------------------------------------

def _fixed(premises: Premises = TRUE, n: int = FIXED_CONTENT, n_prefix: int = FIXED_PREFIX) -> list[dict[str, Any]]:
    """Per causal query q = 1..n: explicit A, A^pt, alpha, beta, t, t^pt (one value coordinate).

    The softmax weights e^{score} are positive symbols w (content) and p (prefix): the identities
    are rational identities in them, decided exactly by ``is_zero_rational``."""
    rows = []
    vals = sp.symbols(f"v1:{n + 1}", real=True)
    pvals = sp.symbols(f"u1:{n_prefix + 1}", real=True)
    for q in range(1, n + 1):
        w = sp.symbols(f"w{q}_1:{q + 1}", positive=True)
        p = sp.symbols(f"p{q}_1:{n_prefix + 1}", positive=True)
        z, mass = sum(w), sum(p)
        den = premises.denominator(mass, z)
        A = [x / z for x in w]
        A_pt = [x / den for x in w]
        A_pre = [x / den for x in p]
        alpha = sum(A_pre)
        rows.append({
            "A": A, "A_pt": A_pt, "A_pre": A_pre, "alpha": alpha,
            "beta": [a / alpha for a in A_pre],
            "t": sum(a * x for a, x in zip(A, vals)),
            "t_pt": sum(a * x for a, x in zip(A_pt, vals)) + sum(a * x for a, x in zip(A_pre, pvals)),
            "u": pvals,
        })
    return rows


# --- the four claims --------------------------------------------------------------------------

def prove_content_scaling(premises: Premises = TRUE) -> dict[str, bool]:
    den = premises.denominator(P, Z)
    A_pt, A = sp.exp(S[i, j]) / den, sp.exp(S[i, j]) / Z
    return {
        **_lemma(premises),
        "A^pt_ij - A_ij (1 - alpha_i) = 0, alpha_i = sum_k A^pt_{i,s_k} (symbolic n_S, m)":
            is_zero(A_pt - A * (1 - _alpha(premises))),
        f"fixed n={FIXED_CONTENT} causal, n_S={FIXED_PREFIX}, every (i, j), expanded": all(
            is_zero_rational(a_pt - a * (1 - row["alpha"]))
            for row in _fixed(premises) for a, a_pt in zip(row["A"], row["A_pt"])),
    }


def prove_output_bias(premises: Premises = TRUE) -> dict[str, bool]:
    one = {n_S: 1}
    alpha = _alpha(premises).subs(one).doit()  # = A^pt_{i,s_1}
    t, t_pt = N_sum / Z, ((U_sum + N_sum) / premises.denominator(P, Z)).subs(one).doit()
    a = e_Q / premises.denominator(e_Q, Zs)
    return {
        **_lemma(premises),
        "t^pt_i - ((1 - alpha_i) t_i + alpha_i u_1) = 0, n_S = 1 (Sum over symbolic m)":
            is_zero(t_pt - ((1 - alpha) * t + alpha * u[1])),
        "(E u + N)/den(E, Z) - ((1 - a) N/Z + a u) = 0, a = E/den(E, Z) (reduced form)":
            is_zero((e_Q * us + Ns) / premises.denominator(e_Q, Zs) - ((1 - a) * Ns / Zs + a * us)),
        f"fixed n={FIXED_CONTENT} causal, n_S=1, every i, expanded": all(
            is_zero_rational(row["t_pt"] - ((1 - row["alpha"]) * row["t"] + row["alpha"] * row["u"][0]))
            for row in _fixed(premises, n_prefix=1)),
    }


def prove_multi_prefix_convex(premises: Premises = TRUE) -> dict[str, bool]:
    alpha = _alpha(premises)
    beta = _prefix_weight(premises) / alpha
    t, t_pt = N_sum / Z, (U_sum + N_sum) / premises.denominator(P, Z)
    a_reduced = Ps / premises.denominator(Ps, Zs)
    beta_reduced = (e_Q / premises.denominator(Ps, Zs)) / a_reduced
    return {
        **_lemma(premises),
        "beta_ik = A^pt_{i,s_k}/alpha_i = e^{Q_ik}/P_i (the prefix's own softmax)": is_zero(beta - sp.exp(Q[i, k]) / P),
        "beta_ik > 0 (from positive e^Q, P, Z)": sp.simplify(beta_reduced).is_positive is True,
        "sum_k beta_ik = 1 (symbolic n_S)": is_zero(sp.Sum(beta, (k, 1, n_S)) - 1),
        "t^pt_i - ((1 - alpha_i) t_i + alpha_i sum_k beta_ik u_k) = 0 (symbolic n_S, m)":
            is_zero(t_pt - ((1 - alpha) * t + alpha * sp.Sum(beta * u[k], (k, 1, n_S)))),
        "(U + N)/den(P, Z) - ((1 - a) N/Z + a U/P) = 0, a = P/den(P, Z) (reduced form)":
            is_zero((Us + Ns) / premises.denominator(Ps, Zs) - ((1 - a_reduced) * Ns / Zs + a_reduced * Us / Ps)),
        f"fixed n={FIXED_CONTENT} causal, n_S={FIXED_PREFIX}, every i, expanded (identity and simplex)": all(
            is_zero_rational(row["t_pt"] - ((1 - row["alpha"]) * row["t"]
                                            + row["alpha"] * sum(b * x for b, x in zip(row["beta"], row["u"]))))
            and is_zero_rational(sum(row["beta"]) - 1)
            for row in _fixed(premises)),
    }


# --- soft prompt = prefix-tuning in layer 1 ---------------------------------------------------

n_block, d_sym, d_head_sym = sp.symbols("n d d_h", integer=True, positive=True)
S_mat = sp.MatrixSymbol("S", n_S, d_sym)  # the n_S prompt vectors, one per row
X_mat = sp.MatrixSymbol("X", n_block, d_sym)  # the n content inputs
O_mat = sp.MatrixSymbol("O", n_S, d_sym)  # what a block before this one adds at the prefix rows
W_Q, W_K, W_V = (sp.MatrixSymbol(name, d_sym, d_head_sym) for name in ("W_Q", "W_K", "W_V"))
b_Q, b_K, b_V = (sp.MatrixSymbol(name, 1, d_head_sym) for name in ("b_Q", "b_K", "b_V"))


@dataclass(frozen=True)
class LayerInput:
    """The premises of the layer-1 argument (defaults true for the first block).

    ``prefix_updated``: the soft-prompted block's input at the prefix positions is S + O, an
    earlier block's update added to the prompt (true in layer 1: False, the block reads the
    prompt vectors S themselves; in block 2 it is True). ``prefix_first``: the prompt precedes
    the content in the sequence."""

    prefix_updated: bool = False
    prefix_first: bool = True


TRUE_LAYER_1 = LayerInput()
BLOCK_2 = "block 2: the prefix rows carry block 1's update, S + O"
WRONG_LAYER_1: dict[str, LayerInput] = {
    BLOCK_2: LayerInput(prefix_updated=True),
    "the prompt is appended after the content": LayerInput(prefix_first=False),
}


def _is_zero_matrix(expr: sp.MatrixExpr) -> bool:
    """Expanded, the difference of two matrix expressions is ZeroMatrix (simplify only if not)."""
    reduced = sp.expand(expr.doit())
    if not (isinstance(reduced, ZeroMatrix) or reduced == 0):
        reduced = sp.simplify(reduced)
    return isinstance(reduced, ZeroMatrix) or reduced == 0


def _project(H: sp.BlockMatrix, ones: sp.BlockMatrix, W: sp.MatrixSymbol, b: sp.MatrixSymbol) -> sp.BlockMatrix:
    """H W + 1 b, block by block."""
    return sp.block_collapse(H * sp.BlockMatrix([[W]]) + ones * sp.BlockMatrix([[b]]))


def soft_prompt_blocks(premises: LayerInput = TRUE_LAYER_1) -> dict[str, bool]:
    """The block-matrix steps at symbolic n_S, n, d, d_head (see the module docstring)."""
    prefix_rows = S_mat + O_mat if premises.prefix_updated else S_mat
    rows = [[prefix_rows], [X_mat]] if premises.prefix_first else [[X_mat], [prefix_rows]]
    ones = [[sp.OneMatrix(n_S, 1)], [sp.OneMatrix(n_block, 1)]]
    ones = sp.BlockMatrix(ones if premises.prefix_first else ones[::-1])
    H = sp.BlockMatrix(rows)
    content, prefix = (1, 0) if premises.prefix_first else (0, 1)
    queries, keys, values = (_project(H, ones, W, b) for W, b in ((W_Q, b_Q), (W_K, b_K), (W_V, b_V)))
    scores = sp.block_collapse(queries * keys.T)
    one_p, one_n = sp.OneMatrix(n_S, 1), sp.OneMatrix(n_block, 1)
    q_x = X_mat * W_Q + one_n * b_Q  # prefix-tuning: content queries
    k_s, v_s = S_mat * W_K + one_p * b_K, S_mat * W_V + one_p * b_V  # the prefix keys/values it prepends
    k_x, v_x = X_mat * W_K + one_n * b_K, X_mat * W_V + one_n * b_V
    # global positions: a content query i (0-based) and a prefix key k = n_S - 1 - a (a >= 0)
    i0, a0 = sp.symbols("i a", integer=True, nonnegative=True)
    query_at = (n_S if premises.prefix_first else 0) + i0
    prefix_key_at = (0 if premises.prefix_first else n_block) + (n_S - 1 - a0)
    return {
        "scores, content queries x prefix keys: block of (H W_Q + 1 b_Q)(H W_K + 1 b_K)^T "
        "= (X W_Q + 1 b_Q)(S W_K + 1 b_K)^T (symbolic n_S, n, d, d_head)":
            _is_zero_matrix(scores.blocks[content, prefix] - q_x * k_s.T),
        "scores, content queries x content keys = (X W_Q + 1 b_Q)(X W_K + 1 b_K)^T":
            _is_zero_matrix(scores.blocks[content, content] - q_x * k_x.T),
        "values at the prefix rows: block of H W_V + 1 b_V = S W_V + 1 b_V":
            _is_zero_matrix(values.blocks[prefix, 0] - v_s),
        "values at the content rows = X W_V + 1 b_V": _is_zero_matrix(values.blocks[content, 0] - v_x),
        "causal mask: content query (index n_S + i) sees every prefix key (index k < n_S)":
            (query_at - prefix_key_at).is_positive is True,
    }


def _matrix(name: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda a, b: sp.Symbol(f"{name}{a}_{b}", real=True))


def _masked_softmax_rows(scores: sp.Matrix, visible: Callable[[int, int], bool]) -> sp.Matrix:
    """Row-wise softmax of ``scores`` over the entries with visible(row, col)."""
    weights = sp.Matrix(scores.rows, scores.cols,
                        lambda a, b: sp.exp(scores[a, b]) if visible(a, b) else sp.Integer(0))
    return sp.Matrix.vstack(*(weights[a, :] / sum(weights[a, :]) for a in range(scores.rows)))


def _soft_vs_prefix_fixed(premises: LayerInput = TRUE_LAYER_1, d: int = 2, d_head: int = 2,
                          n: int = FIXED_CONTENT, n_prefix: int = FIXED_PREFIX) -> list[sp.Expr]:
    """Layer-1 head outputs at the content positions, computed two independent ways, minus each other.

    Soft prompt, as a whole-sequence computation: H = [S; X] ((n_S + n) x d), scores
    (H W_Q + 1 b_Q)(H W_K + 1 b_K)^T / sqrt(d_head), the causal mask of the whole sequence, a
    row-wise softmax, times H W_V + 1 b_V; the content rows of the result. Prefix-tuning: content
    queries X W_Q + 1 b_Q against the key matrix [S W_K + 1 b_K; X W_K + 1 b_K], every prefix key
    visible and the causal mask on the content keys, times [S W_V + 1 b_V; X W_V + 1 b_V]."""
    WQ, WK, WV = (_matrix(name, d, d_head) for name in ("WQ", "WK", "WV"))
    bQ, bK, bV = (_matrix(name, 1, d_head) for name in ("bQ", "bK", "bV"))
    X, Smat, O = _matrix("x", n, d), _matrix("s", n_prefix, d), _matrix("o", n_prefix, d)
    scale = 1 / sp.sqrt(d_head)
    prefix_in = Smat + O if premises.prefix_updated else Smat
    H = sp.Matrix.vstack(prefix_in, X) if premises.prefix_first else sp.Matrix.vstack(X, prefix_in)
    ones = sp.ones(n_prefix + n, 1)
    soft_A = _masked_softmax_rows(scale * (H * WQ + ones * bQ) * (H * WK + ones * bK).T, lambda a, b: b <= a)
    soft = soft_A * (H * WV + ones * bV)
    soft_content = soft[n_prefix:, :] if premises.prefix_first else soft[:n, :]
    ones_n, ones_p = sp.ones(n, 1), sp.ones(n_prefix, 1)
    keys = sp.Matrix.vstack(Smat * WK + ones_p * bK, X * WK + ones_n * bK)
    values = sp.Matrix.vstack(Smat * WV + ones_p * bV, X * WV + ones_n * bV)
    prefix_A = _masked_softmax_rows(scale * (X * WQ + ones_n * bQ) * keys.T,
                                    lambda a, b: b < n_prefix or b - n_prefix <= a)
    return list(soft_content - prefix_A * values)


def prove_soft_prompt_is_prefix_in_layer_1(premises: LayerInput = TRUE_LAYER_1) -> dict[str, bool]:
    """Lemma (the softmax row splits into the prefix block and the content block) + the block
    steps at symbolic sizes + the fixed-size expansion of both forward passes."""
    return {
        **_lemma(TRUE),
        **soft_prompt_blocks(premises),
        f"fixed d=d_head=2, n={FIXED_CONTENT} causal, n_S={FIXED_PREFIX}, Linear biases: whole-sequence "
        "soft prompt vs prepended keys/values, expanded, equal":
            all(is_zero_rational(diff) for diff in _soft_vs_prefix_fixed(premises)),
    }


PROOFS: dict[str, Callable[[], dict[str, bool]]] = {
    "petrov.sec4.content-scaling": prove_content_scaling,
    "petrov.sec4.output-bias": prove_output_bias,
    "petrov.sec4.multi-prefix-convex": prove_multi_prefix_convex,
    "petrov.sec4.soft-prompt-is-prefix-in-layer-1": prove_soft_prompt_is_prefix_in_layer_1,
}
# the wrong premises each proof is tested against (tests/test_section4_symbolic.py)
WRONG_PREMISES: dict[str, dict[str, Any]] = {
    "petrov.sec4.content-scaling": WRONG,
    "petrov.sec4.output-bias": WRONG,
    "petrov.sec4.multi-prefix-convex": WRONG,
    "petrov.sec4.soft-prompt-is-prefix-in-layer-1": WRONG_LAYER_1,
}


@cache
def _proved(claim_id: str) -> tuple[tuple[str, bool], ...]:
    return tuple(PROOFS[claim_id]().items())


def prove(claim_id: str) -> dict[str, bool]:
    """{step: bool} for one claim id (computed once per process; a fresh dict each call)."""
    return dict(_proved(claim_id))


# --- wrong statements: must NOT reduce to 0 ---------------------------------------------------

WITNESS = {Zs: 2, Ps: 1, e_S: 1, e_Q: 1, Ns: 1, Us: 3, us: 3}


def _refutation(name: str, difference: sp.Expr, witness: dict[Any, Any]) -> dict[str, Any]:
    reduced = sp.simplify(difference)
    value = float(reduced.subs(witness))
    return {"variant": name, "difference": str(reduced), "reduces_to_0": reduced == 0,
            "witness": {str(key): val for key, val in witness.items()}, "value_at_witness": value,
            "refuted": reduced != 0 and value != 0.0}


def refute_content_scaling() -> dict[str, Any]:
    """A^pt_ij = A_ij (the (1 - alpha) factor dropped)."""
    return _refutation("A^pt_ij = A_ij", e_S / (Ps + Zs) - e_S / Zs, WITNESS)


def refute_output_bias() -> dict[str, Any]:
    """t^pt = (1 - alpha) t (bias term W_V s dropped); and alpha from another row (i')."""
    a = e_Q / (e_Q + Zs)
    Z2 = sp.Symbol("Z_other", positive=True)
    a_wrong = e_Q / (e_Q + Z2)
    t_pt = (e_Q * us + Ns) / (e_Q + Zs)
    dropped = _refutation("t^pt = (1 - alpha) t", t_pt - (1 - a) * Ns / Zs, WITNESS)
    wrong_row = _refutation("alpha taken from another row i'", t_pt - ((1 - a_wrong) * Ns / Zs + a_wrong * us),
                            {**WITNESS, Z2: 5})
    return {"bias_dropped": dropped, "alpha_from_wrong_row": wrong_row,
            "refuted": dropped["refuted"] and wrong_row["refuted"]}


def refute_multi_prefix_convex() -> dict[str, Any]:
    """beta_ik = A^pt_{i,s_k} (not divided by alpha): sum_k beta = alpha != 1, identity fails."""
    a = Ps / (Ps + Zs)
    t_pt = (Us + Ns) / (Ps + Zs)
    identity = _refutation("beta_ik = A^pt_{i,s_k} (unnormalised)",
                           t_pt - ((1 - a) * Ns / Zs + a * (Us / (Ps + Zs))), WITNESS)
    simplex = _refutation("sum_k beta_ik = 1 with unnormalised beta", Ps / (Ps + Zs) - 1, WITNESS)
    return {"identity": identity, "simplex": simplex, "refuted": identity["refuted"] and simplex["refuted"]}


def refute_soft_prompt_in_layer_2() -> dict[str, Any]:
    """Block 2 with the same s as prefix-tuning's block-2 prefix. Symbolically: the block-matrix
    steps under the premise "the prefix rows carry block 1's update S + O" (sizes symbolic) must
    come out False. Concretely: two layers, d = 1, n_S = 1, one content token, residual stream, no
    MLP; under the soft prompt layer 2 sees the prefix position's layer-1 residual s + w_V1 s,
    prefix-tuning (same s at layer 2) sees s; the layer-2 outputs at the content position differ
    at a numeric witness."""
    blocks = soft_prompt_blocks(WRONG_LAYER_1[BLOCK_2])
    s, x, q1, k1, v1, q2, k2, v2 = sp.symbols("s x q1 k1 v1 q2 k2 v2", real=True)

    def head(query, keys_values, wq, wk, wv):
        w = [sp.exp(wq * query * wk * key) for key, _ in keys_values]
        return sum(wi * wv * val for wi, (_, val) in zip(w, keys_values)) / sum(w)

    layer1_s = s + head(s, [(s, s)], q1, k1, v1)  # the prefix position attends only to itself
    layer1_x = x + head(x, [(s, s), (x, x)], q1, k1, v1)  # identical in both (the layer-1 claim)
    soft = layer1_x + head(layer1_x, [(layer1_s, layer1_s), (layer1_x, layer1_x)], q2, k2, v2)
    prefix = layer1_x + head(layer1_x, [(s, s), (layer1_x, layer1_x)], q2, k2, v2)
    witness = {s: 1, x: sp.Rational(1, 2), q1: 1, k1: 1, v1: 1, q2: 1, k2: 1, v2: 1}
    value = float((soft - prefix).subs(witness).evalf())
    failing = [step for step, ok in blocks.items() if not ok]
    return {"variant": "soft prompt vs prefix-tuning compared in block 2 (same s at both blocks)",
            "block_steps_false_at_symbolic_sizes": failing,
            "witness": {str(a): str(b) for a, b in witness.items()},
            "value_at_witness": value, "refuted": bool(failing) and abs(value) > 0}


REFUTATIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "petrov.sec4.content-scaling": refute_content_scaling,
    "petrov.sec4.output-bias": refute_output_bias,
    "petrov.sec4.multi-prefix-convex": refute_multi_prefix_convex,
    "petrov.sec4.soft-prompt-is-prefix-in-layer-1": refute_soft_prompt_in_layer_2,
}

