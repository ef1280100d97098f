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
alpha_i = P_i/(P_i + Z_i) in (0, 1). Values enter linearly, so every output identity is proved
for one output coordinate: v_r = (W_V x_r)_c, u_k = (W_V s_k)_c, content numerator
N_i = sum_r e^{S_ir} v_r, prefix numerator U_i = sum_k e^{Q_ik} u_k, t_i = N_i/Z_i,
t^pt_i = (U_i + N_i)/(P_i + Z_i).

Each ``prove_*`` returns {step: bool}; a step is True only if sympy reduces it to 0 exactly:
once with sympy ``Sum``/``IndexedBase`` over symbolic n_S and m (general sizes), once with
positive symbols Z, P standing for the sums (the lemma's reduced form), and once fully expanded
at fixed sizes (n = 3 content positions, causal, n_S = 2) as a cross-check. ``refute_*`` runs
the same reduction on a deliberately wrong statement: it must NOT reduce to 0, and a numeric
substitution gives a concrete non-zero value.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import sympy as sp

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


def is_zero(expr: sp.Expr) -> bool:
    return sp.simplify(expr) == 0


def reduction_lemma() -> dict[str, bool]:
    """The prefixed softmax denominator over the concatenated keys is P_i + Z_i; alpha in (0,1)."""
    split = sp.Sum(c[j], (j, 1, n_S)) + sp.Sum(c[j], (j, n_S + 1, n_S + m)) - sp.Sum(c[j], (j, 1, n_S + m))
    shifted = sp.Sum(c[j], (j, n_S + 1, n_S + m)).change_index(j, j - n_S, r) - sp.Sum(c[n_S + r], (r, 1, m))
    alpha = Ps / (Ps + Zs)
    row = sp.Sum(sp.exp(Q[i, k]) / (P + Z), (k, 1, n_S)) + sp.Sum(sp.exp(S[i, r]) / (P + Z), (r, 1, m))
    return {
        "sum_{j<=n_S+m} c_j = sum_{k<=n_S} c_k + sum_{n_S<j<=n_S+m} c_j (symbolic n_S, m)": is_zero(split),
        "sum_{n_S<j<=n_S+m} c_j = sum_{r<=m} c_{n_S+r} (index shift)": is_zero(shifted),
        "so the prefixed denominator is P_i + Z_i; the prefixed row sums to 1": is_zero(row - 1),
        "alpha_i = P/(P+Z) > 0 for positive P, Z": alpha.is_positive is True,
        "1 - alpha_i = Z/(P+Z) > 0": sp.simplify(1 - alpha).is_positive is True,
    }


# --- fixed sizes, fully expanded --------------------------------------------------------------

def _fixed(n: int = FIXED_CONTENT, n_prefix: int = FIXED_PREFIX) -> list[dict[str, sp.Expr]]:
    """Per causal query i = 1..n: explicit A, A^pt, alpha, beta, t, t^pt (one value coordinate)."""
    rows = []
    vals = sp.symbols(f"v1:{n + 1}", real=True)
    pvals = sp.symbols(f"u1:{n_prefix + 1}", real=True)
    for q in range(1, n + 1):
        s_sc = sp.symbols(f"S{q}_1:{q + 1}", real=True)
        p_sc = sp.symbols(f"Q{q}_1:{n_prefix + 1}", real=True)
        z = sum(sp.exp(x) for x in s_sc)
        p = sum(sp.exp(x) for x in p_sc)
        A = [sp.exp(x) / z for x in s_sc]
        A_pt = [sp.exp(x) / (p + z) for x in s_sc]
        A_pre = [sp.exp(x) / (p + z) for x in p_sc]
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

def prove_content_scaling() -> dict[str, bool]:
    A_pt, A, alpha = sp.exp(S[i, j]) / (P + Z), sp.exp(S[i, j]) / Z, P / (P + Z)
    fixed = _fixed()
    return {
        **{f"lemma: {k_}": v_ for k_, v_ in reduction_lemma().items()},
        "A^pt_ij - A_ij (1 - alpha_i) = 0 (Sum over symbolic n_S, m)": is_zero(A_pt - A * (1 - alpha)),
        "e^S/(P+Z) - e^S/Z (1 - P/(P+Z)) = 0 (reduced form)":
            is_zero(e_S / (Ps + Zs) - e_S / Zs * (1 - Ps / (Ps + Zs))),
        f"fixed n={FIXED_CONTENT} causal, n_S={FIXED_PREFIX}, every (i, j), expanded": all(
            is_zero(sp.expand(a_pt - a * (1 - row["alpha"])))
            for row in fixed for a, a_pt in zip(row["A"], row["A_pt"])),
    }


def prove_output_bias() -> dict[str, bool]:
    one = {n_S: 1}
    alpha, t, t_pt = (P / (P + Z)).subs(one), N_sum / Z, ((U_sum + N_sum) / (P + Z)).subs(one)
    P1 = P.subs(one).doit()  # = e^{Q_i1}
    fixed = _fixed(n_prefix=1)
    return {
        **{f"lemma: {k_}": v_ for k_, v_ in reduction_lemma().items()},
        "n_S = 1: P_i = e^{Q_i1}, alpha_i = e^Q/(e^Q + Z_i)": is_zero(alpha.doit() - P1 / (P1 + Z)),
        "t^pt_i - ((1 - alpha_i) t_i + alpha_i u_1) = 0 (Sum over symbolic m)":
            is_zero(t_pt.doit() - ((1 - alpha.doit()) * t + alpha.doit() * u[1])),
        "(E u + N)/(E + Z) - ((1 - a) N/Z + a u) = 0, a = E/(E+Z) (reduced form)":
            is_zero((e_Q * us + Ns) / (e_Q + Zs)
                    - ((1 - e_Q / (e_Q + Zs)) * Ns / Zs + e_Q / (e_Q + Zs) * us)),
        f"fixed n={FIXED_CONTENT} causal, n_S=1, every i, expanded": all(
            is_zero(sp.expand(row["t_pt"] - ((1 - row["alpha"]) * row["t"] + row["alpha"] * row["u"][0])))
            for row in fixed),
    }


def prove_multi_prefix_convex() -> dict[str, bool]:
    alpha, t, t_pt = P / (P + Z), N_sum / Z, (U_sum + N_sum) / (P + Z)
    beta = (sp.exp(Q[i, k]) / (P + Z)) / alpha
    fixed = _fixed()
    return {
        **{f"lemma: {k_}": v_ for k_, v_ in reduction_lemma().items()},
        "beta_ik = A^pt_{i,s_k}/alpha_i = e^{Q_ik}/P_i": is_zero(beta - sp.exp(Q[i, k]) / P),
        "beta_ik > 0 (e^Q and P_i positive)": (sp.exp(Q[i, k]) / Ps).subs(Q[i, k], sp.Symbol("q", real=True))
        .is_positive is True,
        "sum_k beta_ik = 1 (symbolic n_S)": is_zero(sp.Sum(sp.exp(Q[i, k]) / P, (k, 1, n_S)) - 1),
        "t^pt_i - ((1 - alpha_i) t_i + alpha_i sum_k beta_ik u_k) = 0 (symbolic n_S, m)":
            is_zero(t_pt - ((1 - alpha) * t + alpha * sp.Sum(sp.exp(Q[i, k]) / P * u[k], (k, 1, n_S)))),
        "(U + N)/(P + Z) - ((1 - a) N/Z + a U/P) = 0, a = P/(P+Z) (reduced form)":
            is_zero((Us + Ns) / (Ps + Zs) - ((1 - Ps / (Ps + Zs)) * Ns / Zs + Ps / (Ps + Zs) * Us / Ps)),
        f"fixed n={FIXED_CONTENT} causal, n_S={FIXED_PREFIX}, every i, expanded (identity and simplex)": all(
            is_zero(sp.expand(row["t_pt"] - ((1 - row["alpha"]) * row["t"]
                                             + row["alpha"] * sum(b * x for b, x in zip(row["beta"], row["u"])))))
            and is_zero(sum(row["beta"]) - 1)
            for row in fixed),
    }


def _soft_vs_prefix_fixed(d: int = 2, n: int = FIXED_CONTENT, n_prefix: int = FIXED_PREFIX) -> list[sp.Expr]:
    """Layer-1 head outputs at content positions, built two ways, minus each other (d x 1 each).

    Soft prompt: the input sequence h = [s_1..s_nS, x_1..x_n] goes through the head (q, k, v from h).
    Prefix-tuning: content-only projections, with keys W_K s_k and values W_V s_k prepended."""
    WQ, WK, WV = (sp.Matrix(d, d, lambda a, b, name=name: sp.Symbol(f"{name}{a}{b}", real=True))
                  for name in ("WQ", "WK", "WV"))
    xs = [sp.Matrix(d, 1, lambda a, b, p=p: sp.Symbol(f"x{p}_{a}", real=True)) for p in range(n)]
    ss = [sp.Matrix(d, 1, lambda a, b, p=p: sp.Symbol(f"s{p}_{a}", real=True)) for p in range(n_prefix)]
    scale = 1 / sp.sqrt(d)
    h = ss + xs
    diffs = []
    for p in range(n):
        pos = n_prefix + p
        q = WQ * h[pos]
        w = [sp.exp(scale * (q.T * (WK * h[key]))[0]) for key in range(pos + 1)]
        soft = sum((wi * (WV * h[key]) for key, wi in enumerate(w)), sp.zeros(d, 1)) / sum(w)
        keys = [WK * s for s in ss] + [WK * x for x in xs[:p + 1]]
        values = [WV * s for s in ss] + [WV * x for x in xs[:p + 1]]
        q2 = WQ * xs[p]
        w2 = [sp.exp(scale * (q2.T * kk)[0]) for kk in keys]
        prefix = sum((wi * vv for wi, vv in zip(w2, values)), sp.zeros(d, 1)) / sum(w2)
        diffs.extend(list(soft - prefix))
    return diffs


def prove_soft_prompt_is_prefix_in_layer_1() -> dict[str, bool]:
    d = sp.Symbol("d", integer=True, positive=True)
    WQ, WK, WV = (sp.MatrixSymbol(name, d, d) for name in ("W_Q", "W_K", "W_V"))
    s_k, x_i, x_r = (sp.MatrixSymbol(name, d, 1) for name in ("s_k", "x_i", "x_r"))
    h = {"prefix": s_k, "content_query": x_i, "content_key": x_r}  # layer-1 input = embeddings
    # every (score, value) pair of query i agrees, so by the lemma both rows are the same softmax
    # over P_i + Z_i and t_i agrees; residual + MLP at i read only (x_i, t_i), so the block agrees.
    return {
        **{f"lemma: {k_}": v_ for k_, v_ in reduction_lemma().items()},
        "prefix keys: W_K h_k - W_K s_k = 0 (symbolic d)": sp.simplify(WK * h["prefix"] - WK * s_k) == sp.ZeroMatrix(d, 1),
        "prefix values: W_V h_k - W_V s_k = 0": sp.simplify(WV * h["prefix"] - WV * s_k) == sp.ZeroMatrix(d, 1),
        "content queries/keys/values: W h_i - W x_i = 0": all(
            sp.simplify(W * h[name] - W * x) == sp.ZeroMatrix(d, 1)
            for W in (WQ, WK, WV) for name, x in (("content_query", x_i), ("content_key", x_r))),
        f"fixed d=2, n={FIXED_CONTENT} causal, n_S={FIXED_PREFIX}: both forward passes expanded, equal":
            all(is_zero(diff) for diff in _soft_vs_prefix_fixed()),
    }


PROOFS: dict[str, Callable[[], dict[str, bool]]] = {
    "petrov.sec4.content-scaling": prove_content_scaling,
    "petrov.sec4.output-bias": prove_output_bias,
    "petrov.sec4.multi-prefix-convex": prove_multi_prefix_convex,
    "petrov.sec4.soft-prompt-is-prefix-in-layer-1": prove_soft_prompt_is_prefix_in_layer_1,
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
    """Two layers, d = 1, n_S = 1, one content token, residual stream, no MLP. Layer 2 under the
    soft prompt sees the prefix position's layer-1 residual s + w_V1 s; prefix-tuning (same s at
    layer 2) sees s. The layer-2 outputs at the content position must differ."""
    s, x, q1, k1, v1, q2, k2, v2 = sp.symbols("s x q1 k1 v1 q2 k2 v2", real=True)

    def head(query, keys_values, wq, wk, wv):
        w = [sp.exp(wq * query * wk * key) for key, _ in keys_values]
        return sum(wi * wv * val for wi, (_, val) in zip(w, keys_values)) / sum(w)

    layer1_s = s + head(s, [(s, s)], q1, k1, v1)  # the prefix position attends only to itself
    layer1_x = x + head(x, [(s, s), (x, x)], q1, k1, v1)  # identical in both (the layer-1 claim)
    soft = layer1_x + head(layer1_x, [(layer1_s, layer1_s), (layer1_x, layer1_x)], q2, k2, v2)
    prefix = layer1_x + head(layer1_x, [(s, s), (layer1_x, layer1_x)], q2, k2, v2)
    witness = {s: 1, x: sp.Rational(1, 2), q1: 1, k1: 1, v1: 1, q2: 1, k2: 1, v2: 1}
    diff = soft - prefix
    value = float(diff.subs(witness).evalf())
    reduced = sp.cancel(sp.together(diff))  # a non-zero value at the witness already refutes
    return {"variant": "soft prompt vs prefix-tuning compared in layer 2 (same s at both layers)",
            "difference_reduces_to_0": reduced == 0, "witness": {str(a): str(b) for a, b in witness.items()},
            "value_at_witness": value, "refuted": reduced != 0 and abs(value) > 0}


REFUTATIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "petrov.sec4.content-scaling": refute_content_scaling,
    "petrov.sec4.output-bias": refute_output_bias,
    "petrov.sec4.multi-prefix-convex": refute_multi_prefix_convex,
    "petrov.sec4.soft-prompt-is-prefix-in-layer-1": refute_soft_prompt_in_layer_2,
}
