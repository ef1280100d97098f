"""Section 4 (Petrov et al.): the prefix identities, symbolically, numerically and as properties."""

import pytest

from theorems.petrov_sec4 import PROOFS, REFUTATIONS, STATEMENTS, prove
from verify.checks.petrov_sec4 import CONTROL_MIN_ERROR, TOLERANCE
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
        assert control["refuted"] and control.get("symbolic", {"refuted": True})["refuted"]
        assert control["worst_abs_error"] > CONTROL_MIN_ERROR >= 1e6 * TOLERANCE


def test_every_architecture_option_is_exercised_and_within_tolerance(outcomes):
    options = {"H=1", "H=2", "H=3", "H=4", "biases", "no-biases", "no-norm", "layernorm", "rmsnorm",
               "rope", "no-rope"}
    for outcome in outcomes.values():
        by_option = outcome.evidence["numeric"]["worst_by_architecture"]
        assert set(by_option) == options
        assert max(by_option.values()) <= TOLERANCE


def test_with_several_heads_the_bias_is_one_fixed_vector_per_head_not_one_direction(outcomes):
    outcome = outcomes["petrov.sec4.output-bias"]
    assert outcome.evidence["numeric"]["block_level_worst_abs_error"] <= TOLERANCE
    assert outcome.control["one_direction_for_all_heads"]["refuted"]


def test_rope_makes_the_identity_hold_even_at_unshifted_positions(outcomes):
    numeric = outcomes["petrov.sec4.content-scaling"].evidence["numeric"]
    assert numeric["rope_reference_at_unshifted_positions_worst"] <= TOLERANCE


def test_multi_prefix_beta_lies_in_the_simplex(outcomes):
    assert outcomes["petrov.sec4.multi-prefix-convex"].evidence["numeric"]["worst_simplex_violation"] <= TOLERANCE
