"""theorems.testing: the Section 4 identities as a testing API for other people's attention code.

The reference passes every check; realistic wrong implementations (an independent per-head loop
below, one bug at a time) are each refuted by the check that should see them, with a message that
names the identity, the worst error and a small counterexample; the checks that cannot see a bug
are shown to pass it (the identities are necessary conditions, not a specification)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings

from constructions.forward import PrefixKV, forward
from constructions.layers import spec_from_layers
from theorems.testing import (
    IDENTITIES,
    TOLERANCE,
    AttentionConvention,
    AttentionResult,
    ConventionError,
    PrefixIdentityError,
    check_content_scaling,
    check_multi_prefix_convexity,
    check_output_bias,
    check_prefix_attention,
    check_ratio_invariance,
    prefix_instances,
    reference_attention,
)

pytest_plugins = ["pytester"]

EXAMPLES = 25
ROPE_BASE = 100.0  # a small base turns the low frequencies too, so a position shift moves every score


def _rope(vectors: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """RoPE written as complex multiplication: coordinates (m, m + e/2) are the real and imaginary
    parts of c_m, turned to c_m exp(i pos ROPE_BASE^(-2m/e)). vectors (n, e), positions (n,)."""
    half = vectors.shape[-1] // 2
    c = vectors[:, :half] + 1j * vectors[:, half:]
    turned = c * np.exp(1j * positions[:, None] * ROPE_BASE ** (-2.0 * np.arange(half) / vectors.shape[-1]))
    return np.concatenate([turned.real, turned.imag], axis=-1)


def attention(weights, x, prefix_k=None, prefix_v=None, *, bug: str | None = None, rope: bool = False,
              dtype=np.float64, returns: tuple[str, ...] = ("output", "pattern", "z")):
    """One head at a time, plain numpy, independent of theorems.testing.reference_attention;
    ``bug`` switches on one realistic mistake:

    scale-by-sequence-length     scores / sqrt(number of keys) (the authors' notebook), not / sqrt(d_head)
    mask-over-whole-sequence     the causal mask built over [prefix; content] with query i at row i:
                                 query i sees keys 0..i of the concatenation (too few content keys)
    prefix-masked-causally       prefix column k visible to query i only when k <= i
    rope-over-whole-sequence     RoPE over the concatenated keys [prefix; content] at 0..n_S+p-1
                                 (prefix keys rotated again), the queries at 0..p-1
    prefix-value-unweighted      z^pt_i = sum_j A^pt[i, n_S + j] v_j + sum_k prefix_v[k]
    no-renormalisation           content attention softmaxed alone, the prefix's term added:
                                 z^pt_i = sum_j A[i, j] v_j + sum_k A^pt[i, k] prefix_v[k]
    ignores-prefix               the prefix never enters (its pattern columns are 0)
    """
    cast = {name: np.asarray(a, dtype=dtype) for name, a in weights.items()}
    x = np.asarray(x, dtype=dtype)
    p, n_heads, d_head = len(x), cast["W_Q"].shape[0], cast["W_Q"].shape[2]
    n_prefix = 0 if prefix_k is None or bug == "ignores-prefix" else prefix_k.shape[1]
    pattern_columns = 0 if prefix_k is None else prefix_k.shape[1]
    patterns, zs = [], []
    for h in range(n_heads):
        q = x @ cast["W_Q"][h] + cast["b_Q"][h]  # (p, d_head)
        k = x @ cast["W_K"][h] + cast["b_K"][h]
        v = x @ cast["W_V"][h] + cast["b_V"][h]
        pk = np.zeros((0, d_head), dtype) if n_prefix == 0 else np.asarray(prefix_k[h], dtype)  # (n_S, d_head)
        pv = np.zeros((0, d_head), dtype) if n_prefix == 0 else np.asarray(prefix_v[h], dtype)
        if rope and bug == "rope-over-whole-sequence":
            q = _rope(q, np.arange(p))
            keys = _rope(np.concatenate([pk, k]), np.arange(n_prefix + p))
        else:
            if rope:
                q, k = _rope(q, n_prefix + np.arange(p)), _rope(k, n_prefix + np.arange(p))
            keys = np.concatenate([pk, k])  # (n_S + p, d_head)
        values = np.concatenate([pv, v])
        scale = dtype(1 / np.sqrt(len(keys) if bug == "scale-by-sequence-length" else d_head))
        scores = (q @ keys.T) * scale  # (p, n_S + p)
        rows, cols = np.arange(p)[:, None], np.arange(n_prefix + p)[None, :]
        if bug == "mask-over-whole-sequence":
            visible = cols <= rows
        elif bug == "prefix-masked-causally":
            visible = np.where(cols < n_prefix, cols <= rows, cols - n_prefix <= rows)
        else:
            visible = (cols < n_prefix) | (cols - n_prefix <= rows)
        e = np.where(visible, np.exp(scores - scores.max(-1, keepdims=True)), 0)
        A = e / e.sum(-1, keepdims=True)  # (p, n_S + p)
        z = A @ values  # (p, d_head)
        if bug == "prefix-value-unweighted" and n_prefix:
            z = A[:, n_prefix:] @ v + pv.sum(0)
        if bug == "no-renormalisation" and n_prefix:
            content = e[:, n_prefix:] / e[:, n_prefix:].sum(-1, keepdims=True)
            z = content @ v + A[:, :n_prefix] @ pv
        if bug == "ignores-prefix" and pattern_columns:
            A = np.concatenate([np.zeros((p, pattern_columns), dtype), A], axis=1)
        patterns.append(A)
        zs.append(z)
    z = np.stack(zs)  # (H, p, d_head)
    output = np.einsum("hpe,hed->pd", z, cast["W_O"]) + cast["b_O"]
    result = {"output": output, "pattern": np.stack(patterns), "z": z}
    return {name: result[name] for name in returns}


def buggy(bug: str | None, **options):
    return functools.partial(attention, bug=bug, **options)


def refutation(check, attn) -> PrefixIdentityError:
    with pytest.raises(PrefixIdentityError) as caught:
        check(attn, max_examples=EXAMPLES)
    return caught.value


def assert_clear(error: PrefixIdentityError, identity: str, step: str) -> str:
    """The message names the identity and its equation, the violated step, the worst error against
    the tolerance and a counterexample shrunk to one head and one model dimension."""
    message = str(error)
    assert error.identity.name == identity and error.step.startswith(step), message
    assert message.startswith(f"{identity} ({IDENTITIES[identity].claim}) does not hold"), message
    assert f"identity: {IDENTITIES[identity].equation}" in message and f"violated: {error.step}" in message
    assert ("worst |error|" in message and f"> tolerance {TOLERANCE:g}" in message) or "least margin" in message
    assert "minimal counterexample" in message and "n_heads=1 d_model=1" in message, message
    assert error.instance.sizes["n_heads"] == 1 and error.instance.sizes["d_model"] == 1
    # the exception's instance is the counterexample: the wrong callable violates the step there
    assert error.drawn >= error.violated >= 1
    return message


# --- the reference passes -------------------------------------------------------------------------

@pytest.mark.parametrize("attn", [reference_attention, functools.partial(reference_attention, rotary_base=ROPE_BASE),
                                  functools.partial(reference_attention, causal=False), attention,
                                  buggy(None, rope=True)],
                         ids=["reference", "reference-rope", "reference-bidirectional", "loop", "loop-rope"])
def test_correct_implementations_pass_every_check_at_rounding_level(attn):
    results = check_prefix_attention(attn, max_examples=EXAMPLES)
    assert [r.identity.name for r in results] == list(IDENTITIES)
    for result in results:
        assert result.instances == EXAMPLES
        assert result.worst_error <= 1e-14  # measured rounding, far below TOLERANCE
        assert result.least_margin > 1e-3  # alpha_i and beta_ik well inside (0, 1): nothing degenerate
    assert results[1].details["compared"] > 10 * EXAMPLES  # ratio pairs actually compared


def test_three_line_usage():
    from theorems.testing import check_prefix_attention
    def test_mine(): check_prefix_attention(reference_attention)  # noqa: E704
    test_mine()


def test_three_line_usage_inside_pytest(pytester):
    pytester.makepyfile(test_user="""
        from theorems.testing import check_prefix_attention, reference_attention
        def test_mine():
            check_prefix_attention(reference_attention, max_examples=10)
    """)
    pytester.makepyfile(test_user_wrong="""
        import functools
        from theorems.testing import check_prefix_attention, reference_attention
        def ignores_prefix(weights, x, prefix_k, prefix_v):
            return reference_attention(weights, x)  # the pattern lacks the prefix columns
        def test_mine():
            check_prefix_attention(ignores_prefix, max_examples=10)
    """)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*ConventionError: pattern with a prefix: expected shape (n_heads, p, n_S + p)*"])


def test_the_reference_is_the_projects_forward_pass_restricted_to_one_attention_layer():
    """reference_attention vs constructions.forward (the forward the Section 4 checks compare with
    torch and a definitions oracle): pattern, z and the block's attention output, with and without
    a prefix and RoPE (content at n_S..n_S+p-1 after a prefix, as in constructions.prefix)."""
    worst = 0.0

    @settings(max_examples=20, deadline=None, database=None)
    @given(instance=prefix_instances(AttentionConvention()))
    def agrees(instance):
        nonlocal worst
        for rope in (None, 10_000.0):
            spec = spec_from_layers([instance.weights], causal=True, rotary_base=rope)
            for prefix in (None, PrefixKV(instance.prefix_k, instance.prefix_v)):
                n_prefix = 0 if prefix is None else prefix.length
                cache = {}
                forward(spec, instance.x[None], cache=cache, prefix=None if prefix is None else [prefix],
                        positions=n_prefix + np.arange(len(instance.x)))
                ours = reference_attention(instance.weights, instance.x, *(() if prefix is None else
                                                                            (prefix.keys, prefix.values)),
                                           rotary_base=rope)
                for theirs, mine in ((cache["blocks.0.attn.pattern"][0], ours.pattern),
                                     (cache["blocks.0.attn.z"][0], ours.z),
                                     (cache["blocks.0.resid_mid"][0] - instance.x, ours.output)):
                    worst = max(worst, float(np.max(np.abs(theirs - mine))))

    agrees()
    assert worst <= 1e-14


# --- wrong implementations are refuted ------------------------------------------------------------

def test_a_one_over_sqrt_sequence_length_scale_changes_content_attention():
    """The authors' notebook scales by 1/sqrt(number of keys): with a prefix that number grows, so
    the content scores shrink and their ratios move. Both pattern identities see it."""
    attn = buggy("scale-by-sequence-length")
    assert_clear(refutation(check_content_scaling, attn), "content-scaling", "A^pt[h, i, n_S + j] = (1 - alpha_i)")
    message = assert_clear(refutation(check_ratio_invariance, attn), "ratio-invariance",
                           "A^pt[h, i, n_S + j] A[h, i, j']")
    assert "A^pt ratio" in message and "A ratio" in message


def test_a_causal_mask_built_over_the_whole_sequence_is_refuted():
    """Query i sees keys 0..i of [prefix; content]: the first query sees only the prefix (alpha = 1),
    later ones too few content keys."""
    attn = buggy("mask-over-whole-sequence")
    error = refutation(check_content_scaling, attn)
    assert_clear(error, "content-scaling", error.step)
    assert error.step.startswith(("0 < alpha_i < 1", "A^pt[h, i, n_S + j] = (1 - alpha_i)"))
    assert_clear(refutation(check_ratio_invariance, attn), "ratio-invariance", "A^pt[h, i, n_S + j] A[h, i, j']")


def test_a_prefix_masked_causally_is_seen_only_by_multi_prefix_convexity():
    """Query i sees prefix positions k <= i only. The visible part of the prefix is still a prefix:
    content scaling, ratio invariance and the one-vector bias hold; beta_ik > 0 does not."""
    attn = buggy("prefix-masked-causally")
    for check in (check_content_scaling, check_ratio_invariance, check_output_bias):
        assert check(attn, max_examples=EXAMPLES).worst_error <= 1e-14
    message = assert_clear(refutation(check_multi_prefix_convexity, attn), "multi-prefix-convex", "beta_ik")
    assert "least margin 0 (must be > 0)" in message and "n_S=2 p=1" in message


def test_rope_over_the_concatenated_keys_is_refuted():
    """Content keys rotated at n_S + j but queries at i: scores depend on i - j - n_S, so the
    relative content attention changes with the prefix. A correct RoPE (queries and content keys
    at the same shift, prefix keys as given) passes (test_correct_implementations_...)."""
    attn = buggy("rope-over-whole-sequence", rope=True)
    assert_clear(refutation(check_content_scaling, attn), "content-scaling", "A^pt[h, i, n_S + j] = (1 - alpha_i)")
    assert_clear(refutation(check_ratio_invariance, attn), "ratio-invariance", "A^pt[h, i, n_S + j] A[h, i, j']")


@pytest.mark.parametrize("bug", ["prefix-value-unweighted", "no-renormalisation"])
def test_wrong_value_mixing_is_seen_by_the_bias_identities_only(bug):
    """The pattern is right, the values are mixed wrongly: the pattern identities pass, output-bias
    and multi-prefix convexity refute it, per head on z."""
    attn = buggy(bug)
    assert check_content_scaling(attn, max_examples=EXAMPLES).worst_error <= 1e-14
    for check, identity in ((check_output_bias, "output-bias"),
                            (check_multi_prefix_convexity, "multi-prefix-convex")):
        message = assert_clear(refutation(check, attn), identity, "per head, on z")
        assert "z^pt = " in message


def test_the_block_output_form_works_without_z():
    """A callable that returns only (output, pattern): the bias identities run at the block level
    (each head's contribution by zeroing the other heads' W_O), pass on a correct one, refute a bug."""
    assert check_output_bias(buggy(None, returns=("output", "pattern")), max_examples=EXAMPLES).worst_error <= 1e-14
    error = refutation(check_output_bias, buggy("prefix-value-unweighted", returns=("output", "pattern")))
    assert_clear(error, "output-bias", "block output")
    pattern_and_z = buggy(None, returns=("pattern", "z"))
    assert check_multi_prefix_convexity(pattern_and_z, max_examples=EXAMPLES).worst_error <= 1e-14


def test_no_check_passes_vacuously_on_an_attention_that_ignores_the_prefix():
    """Ignoring the prefix keeps every content ratio (ratio invariance cannot see it), but leaves
    alpha_i = 0: content scaling refutes it, and so does the full check."""
    attn = buggy("ignores-prefix")
    assert check_ratio_invariance(attn, max_examples=EXAMPLES).worst_error <= 1e-14
    message = assert_clear(refutation(check_content_scaling, attn), "content-scaling", "0 < alpha_i < 1")
    assert "least margin 0 (must be > 0)" in message and "alpha_i = 0" in message
    with pytest.raises(PrefixIdentityError, match="content-scaling"):
        check_prefix_attention(attn, max_examples=EXAMPLES)


# --- convention, tolerance, determinism -----------------------------------------------------------

def test_a_result_of_the_wrong_shape_is_a_convention_error():
    with pytest.raises(ConventionError, match=r"pattern with a prefix: expected shape \(n_heads, p, n_S \+ p\)"):
        check_content_scaling(lambda w, x, k, v: reference_attention(w, x), max_examples=5)
    with pytest.raises(ConventionError, match="needs the values"):
        check_output_bias(buggy(None, returns=("pattern",)), max_examples=5)
    with pytest.raises(ConventionError, match="returned str"):
        check_content_scaling(lambda w, x, k, v: "pattern", max_examples=5)


def test_float32_needs_the_stated_looser_tolerance():
    attn = buggy(None, dtype=np.float32)
    error = refutation(check_content_scaling, attn)
    assert 1e-9 < error.worst < 1e-5
    assert check_prefix_attention(attn, max_examples=EXAMPLES, tolerance=1e-5)


def test_a_check_is_deterministic_and_the_seed_changes_the_instances():
    def seen(seed: int) -> list[bytes]:
        inputs: list[bytes] = []

        def recording(weights, x, prefix_k, prefix_v):
            inputs.append(x.tobytes() + weights["W_Q"].tobytes())
            return reference_attention(weights, x, prefix_k, prefix_v)

        check_content_scaling(recording, max_examples=10, seed=seed)
        return inputs

    assert seen(0) == seen(0) and seen(0) != seen(1)


def test_convention_arguments_are_validated():
    from hypothesis.errors import InvalidArgument
    for bad in ({"max_heads": 0}, {"max_prefix": 1}, {"d_heads": ()}, {"d_heads": (32,)}):
        with pytest.raises(InvalidArgument):
            AttentionConvention(**bad)
    with pytest.raises(InvalidArgument):
        check_content_scaling(reference_attention, max_examples=0)


def test_torch_tensors_and_attention_results_are_accepted():
    torch = pytest.importorskip("torch")

    def torch_attention(weights, x, prefix_k, prefix_v):
        r = reference_attention(weights, x, prefix_k, prefix_v)
        return AttentionResult(pattern=torch.from_numpy(r.pattern), output=torch.from_numpy(r.output))

    assert check_output_bias(torch_attention, max_examples=10).worst_error <= 1e-14
