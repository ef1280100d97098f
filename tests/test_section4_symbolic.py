"""Section 4 (Petrov et al.): the prefix identities, symbolically, numerically and as properties."""

import pytest

from theorems.claims import claim
from theorems.petrov_sec4 import (
    PROOFS,
    REFUTATIONS,
    STATEMENTS,
    WRONG_PREMISES,
    is_zero_rational,
    prove,
    soft_prompt_blocks,
)
from verify.checks.petrov_sec4 import CONTROL_MIN_ERROR, TOLERANCE
from verify.protocol import Rung
from verify.registry import CHECKS, CONTROLS, Context, run_claim

CLAIM_IDS = sorted(PROOFS)


def test_the_four_claims_have_statements_proofs_controls_and_checks():
    assert set(CLAIM_IDS) == set(STATEMENTS) == set(REFUTATIONS) == set(WRONG_PREMISES) == {
        "petrov.sec4.content-scaling", "petrov.sec4.output-bias",
        "petrov.sec4.multi-prefix-convex", "petrov.sec4.soft-prompt-is-prefix-in-layer-1"}
    assert all(cid in CHECKS for cid in CLAIM_IDS)


@pytest.mark.parametrize("claim_id", CLAIM_IDS)
def test_every_proof_step_reduces_exactly(claim_id):
    proof = prove(claim_id)
    assert len(proof) >= 7 and all(proof.values()), proof
    assert any("symbolic n_S" in step for step in proof)
    assert any(step.startswith("fixed") for step in proof)


@pytest.mark.parametrize("claim_id", CLAIM_IDS)
def test_each_wrong_premise_makes_a_step_of_the_proof_false(claim_id):
    """No step compares a thing with itself: every proof is computed from its premises, so a
    deliberately wrong premise must break it somewhere."""
    for name, premises in WRONG_PREMISES[claim_id].items():
        proof = PROOFS[claim_id](premises)
        assert not all(proof.values()), f"{claim_id}: the wrong premise '{name}' leaves every step True"


def test_a_prefix_left_out_of_the_normaliser_breaks_the_identity_itself_not_only_the_lemma():
    wrong = WRONG_PREMISES["petrov.sec4.content-scaling"]["prefixed row normalised by Z_i alone (the prefix mass left out)"]
    for claim_id in ("petrov.sec4.content-scaling", "petrov.sec4.output-bias", "petrov.sec4.multi-prefix-convex"):
        failing = [step for step, ok in PROOFS[claim_id](wrong).items() if not ok and not step.startswith("lemma")]
        assert any("symbolic" in step for step in failing) and any(step.startswith("fixed") for step in failing)


def test_soft_prompt_equals_prefix_in_layer_1_at_symbolic_sizes_and_not_in_block_2():
    """The block-matrix steps hold for symbolic n_S, n, d, d_head; once the prefix rows carry an
    earlier block's update (S + O) the prefix-key scores and the prefix values no longer match."""
    assert all(soft_prompt_blocks().values())
    block_2 = WRONG_PREMISES["petrov.sec4.soft-prompt-is-prefix-in-layer-1"]
    failing = [step for step, ok in soft_prompt_blocks(next(iter(block_2.values()))).items() if not ok]
    assert any(step.startswith("scores, content queries x prefix keys") for step in failing)
    assert any(step.startswith("values at the prefix rows") for step in failing)


def test_the_exact_zero_test_for_rational_functions_can_say_no():
    import sympy as sp

    x, y = sp.symbols("x y", positive=True)
    assert is_zero_rational(x / (x + y) + y / (x + y) - 1)
    assert not is_zero_rational(x / (x + y) - 1)


@pytest.mark.parametrize("claim_id", CLAIM_IDS)
def test_the_wrong_statement_does_not_reduce_to_zero(claim_id):
    control = REFUTATIONS[claim_id]()
    assert control["refuted"], control
    parts = [v for v in control.values() if isinstance(v, dict) and "refuted" in v] or [control]
    for part in parts:
        assert part["value_at_witness"] != 0
        assert not part.get("reduces_to_0", False)


@pytest.fixture(scope="module")
def results():
    context = Context(seed=0)
    return {cid: run_claim(claim(cid), context) for cid in CLAIM_IDS}


@pytest.mark.parametrize("claim_id", CLAIM_IDS)
def test_check_passes_at_the_symbolic_rung_with_worst_error_within_tolerance(results, claim_id):
    result = results[claim_id]
    numeric = result.evidence["numeric"]
    assert result.status == "pass", result.reasons
    assert result.rung == Rung.SYMBOLIC.value
    assert numeric["instances"] == 1000
    assert numeric["worst_abs_error"] <= TOLERANCE == 1e-12
    assert all(result.evidence["symbolic"]["proof"].values())
    assert f"{numeric['worst_abs_error']:.3g} <= 1e-12" in result.evidence["summary"]


@pytest.mark.parametrize("claim_id", CLAIM_IDS)
def test_every_control_is_refuted_far_above_tolerance_and_says_why_it_could_fail(results, claim_id):
    result = results[claim_id]
    assert set(result.control) == set(CONTROLS[claim_id])
    for control in result.control.values():
        assert control["refuted"] and control["measured"].get("symbolic", {"refuted": True})["refuted"]
        assert control["measured"]["worst_abs_error"] > CONTROL_MIN_ERROR >= 1e6 * TOLERANCE
        assert "would stand" in control["could_fail_because"]


def test_every_architecture_option_is_exercised_and_within_tolerance(results):
    options = {"H=1", "H=2", "H=3", "H=4", "biases", "no-biases", "no-norm", "layernorm", "rmsnorm",
               "rope", "no-rope"}
    for result in results.values():
        by_option = result.evidence["numeric"]["worst_by_architecture"]
        assert set(by_option) == options
        assert max(by_option.values()) <= TOLERANCE


def test_with_several_heads_the_bias_is_one_fixed_vector_per_head_not_one_direction(results):
    result = results["petrov.sec4.output-bias"]
    assert result.evidence["numeric"]["block_level_worst_abs_error"] <= TOLERANCE
    assert result.control["one_direction_for_all_heads"]["refuted"]


def test_rope_makes_the_identity_hold_even_at_unshifted_positions(results):
    numeric = results["petrov.sec4.content-scaling"].evidence["numeric"]
    assert numeric["rope_reference_at_unshifted_positions_worst"] <= TOLERANCE


def test_multi_prefix_beta_lies_in_the_simplex(results):
    assert results["petrov.sec4.multi-prefix-convex"].evidence["numeric"]["worst_simplex_violation"] <= TOLERANCE


def test_soft_prompt_and_prefix_differ_in_block_2_on_every_instance(results):
    evidence = results["petrov.sec4.soft-prompt-is-prefix-in-layer-1"].evidence
    assert evidence["block_2_differs"]["holds"]
    assert evidence["block_2_differs"]["min_abs_error"] > CONTROL_MIN_ERROR
    assert "symbolic n_S, n, d" in evidence["symbolic_scope"]


def test_a_summary_that_breaks_its_tolerance_prints_the_true_comparator(monkeypatch):
    """With the tolerance below float64 rounding the claim must fail and the summary must say '>'."""
    import verify.checks.petrov_sec4 as module

    monkeypatch.setattr(module, "TOLERANCE", 1e-18)
    monkeypatch.setattr(module, "INSTANCES", 48)  # RoPE from instance 24 on
    result = run_claim(claim("petrov.sec4.content-scaling"), Context(seed=0))
    assert result.status == "fail"
    assert "> 1e-18" in result.evidence["summary"] and "<= 1e-18" not in result.evidence["summary"]
