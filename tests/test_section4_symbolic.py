"""Section 4 (Petrov et al.): the prefix identities, symbolically, numerically and as properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theorems.petrov_sec4 import PROOFS, REFUTATIONS, STATEMENTS, prove
from theorems.strategies import normal_arrays, seeds
from verify.checks.petrov_sec4 import (
    CONTROL_MIN_ERROR,
    D_MODEL,
    MAX_CONTENT,
    TOLERANCE,
    Head,
    Layer,
    content_scaling_errors,
    multi_prefix_errors,
    output_bias_errors,
    soft_prompt_errors,
)
from verify.registry import CHECKS, Context

CLAIM_IDS = sorted(PROOFS)


def test_the_four_claims_have_statements_proofs_controls_and_checks():
    assert set(CLAIM_IDS) == set(STATEMENTS) == set(REFUTATIONS) == {
        "petrov.sec4.content-scaling", "petrov.sec4.output-bias",
        "petrov.sec4.multi-prefix-convex", "petrov.sec4.soft-prompt-is-prefix-in-layer-1"}
    assert all(cid in CHECKS for cid in CLAIM_IDS)


@pytest.mark.parametrize("claim_id", CLAIM_IDS)
def test_every_proof_step_reduces_exactly(claim_id):
    proof = prove(claim_id)
    assert len(proof) >= 5 and all(proof.values()), proof
    assert any("symbolic n_S" in step or "symbolic d" in step or "symbolic m" in step for step in proof)
    assert any(step.startswith("fixed") for step in proof)


@pytest.mark.parametrize("claim_id", CLAIM_IDS)
def test_the_wrong_statement_does_not_reduce_to_zero(claim_id):
    control = REFUTATIONS[claim_id]()
    assert control["refuted"], control
    parts = [v for v in control.values() if isinstance(v, dict) and "refuted" in v] or [control]
    for part in parts:
        assert part["value_at_witness"] != 0
        assert not part.get("reduces_to_0", part.get("difference_reduces_to_0"))


@pytest.fixture(scope="module")
def outcomes():
    context = Context(seed=0)
    return {cid: CHECKS[cid](context) for cid in CLAIM_IDS}


@pytest.mark.parametrize("claim_id", CLAIM_IDS)
def test_check_holds_with_worst_error_within_tolerance(outcomes, claim_id):
    outcome = outcomes[claim_id]
    numeric = outcome.evidence["numeric"]
    assert outcome.holds
    assert numeric["instances"] == 1000
    assert numeric["worst_abs_error"] <= TOLERANCE == 1e-12
    assert all(outcome.evidence["symbolic"]["proof"].values())


@pytest.mark.parametrize("claim_id", CLAIM_IDS)
def test_every_control_is_refuted_far_above_tolerance(outcomes, claim_id):
    outcome = outcomes[claim_id]
    assert outcome.control_refuted and outcome.control
    for control in outcome.control.values():
        assert control["refuted"] and control["symbolic"]["refuted"]
        assert control["worst_abs_error"] > CONTROL_MIN_ERROR >= 1e6 * TOLERANCE


def test_multi_prefix_beta_lies_in_the_simplex(outcomes):
    assert outcomes["petrov.sec4.multi-prefix-convex"].evidence["numeric"]["worst_simplex_violation"] <= TOLERANCE


# --- properties over hypothesis-drawn instances ------------------------------------------------

def _head(W_Q, W_K, W_V):
    return Head(W_Q, W_K, W_V / np.sqrt(D_MODEL), 0.5)


@settings(max_examples=40, deadline=None)
@given(W_Q=normal_arrays((4, D_MODEL)), W_K=normal_arrays((4, D_MODEL)), W_V=normal_arrays((D_MODEL, D_MODEL)),
       x=st.integers(1, MAX_CONTENT).flatmap(lambda p: normal_arrays((p, D_MODEL))),
       s=st.sampled_from([1, 2, 5]).flatmap(lambda n: normal_arrays((n, D_MODEL))))
def test_prefix_identities_hold_on_any_instance(W_Q, W_K, W_V, x, s):
    head = _head(W_Q, W_K, W_V)
    assert content_scaling_errors(head, x, s)[0] <= TOLERANCE
    claim, simplex, _ = multi_prefix_errors(head, x, s)
    assert claim <= TOLERANCE and simplex <= TOLERANCE
    assert output_bias_errors(head, x, s[:1])[0] <= TOLERANCE


@settings(max_examples=25, deadline=None)
@given(seed=seeds(), n_prefix=st.sampled_from([1, 2, 5]), p=st.integers(1, MAX_CONTENT))
def test_soft_prompt_equals_prefix_in_layer_1_for_any_seed(seed, n_prefix, p):
    rng = np.random.default_rng(seed)
    layers = [Layer.random(rng), Layer.random(rng)]
    x, s = rng.normal(size=(p, D_MODEL)), rng.normal(size=(n_prefix, D_MODEL))
    assert soft_prompt_errors(layers, x, s)[0] <= TOLERANCE


@settings(max_examples=25, deadline=None)
@given(seed=seeds())
def test_a_prefix_changes_layer_2_unlike_a_soft_prompt(seed):
    """The control, as a property: with several content tokens, layer 2 differs (generic weights)."""
    rng = np.random.default_rng(seed)
    layers = [Layer.random(rng), Layer.random(rng)]
    x, s = rng.normal(size=(6, D_MODEL)), rng.normal(size=(2, D_MODEL))
    assert soft_prompt_errors(layers, x, s)[1] > CONTROL_MIN_ERROR
