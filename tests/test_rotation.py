"""petrov.sec4.rotation-not-a-bias: one prefix vector cannot imitate a rotation of W_V.

The tests read like the claim: the convex solvers agree with the closed form; the certified bound
is positive for every rotation and never above what a bias achieves; the certifier says no for
R = I and for a translation; the plane reduction holds; the search over actual prefixes of
torch's attention never beats the certificate, finds realizable targets, and is deterministic.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import verify.checks.petrov_sec4_rotation as check_module
from theorems.claims import claim
from theorems.rotation import PROOFS, WRONG, minimax_error, prove, refute_identity, refute_translation
from verify.certificates.rotation import (
    BNB_GAP,
    FLOAT_SLACK,
    best_alpha,
    best_bias_least_squares,
    best_bias_least_squares_cvxpy,
    best_bias_worst_case_cvxpy,
    branch_and_bound,
    certify_rotation,
    certify_symmetric,
    cone_distance,
    null_query_bound,
    ray_distance,
    relaxed_errors,
    segment_distance,
    worst_relaxed_error,
)
from verify.search.prefix import (
    LayerSpec,
    SearchConfig,
    circle_inputs,
    layer_outputs,
    plane_rotation,
    prefixed_outputs,
    search,
)
from verify.protocol import Rung
from verify.registry import CONTROLS, Context, run_claim

circle = check_module.circle
rotation_2d = check_module.rotation_2d
FAST = SearchConfig(restarts=2, steps=120, seed=3)
ANGLES = st.floats(min_value=0.5, max_value=180.0)


# --- the theorem ---------------------------------------------------------------------------------

def test_every_proof_step_reduces_exactly():
    proof = prove()
    assert len(proof) >= 15 and all(proof.values()), [k for k, v in proof.items() if not v]


@pytest.mark.parametrize("name", sorted(PROOFS))
def test_a_wrong_premise_makes_a_step_of_each_proof_false(name):
    """Every step is computed from a premise, so the wrong one (a wrong best alpha, a swapped
    mixing weight, a target that is not odd, a wrong m(theta), ...) must break the proof."""
    assert set(WRONG) == set(PROOFS)
    assert not all(PROOFS[name](WRONG[name]).values())


def test_the_certificates_number_is_the_proved_closed_form():
    """A 5% larger minimax_error (the float the certificates use) breaks the closed-form proof."""
    import theorems.rotation as theorem

    original = theorem.minimax_error
    try:
        theorem.minimax_error = lambda angle: 1.05 * original(angle)
        assert not all(theorem.prove_closed_form().values())
    finally:
        theorem.minimax_error = original


def test_the_theorem_gives_nothing_for_the_identity_or_a_translation():
    assert refute_identity()["refuted"] and refute_identity()["m(0)"] == 0
    translation = refute_translation()
    assert translation["refuted"] and translation["not odd"]


def test_minimax_value_is_sin_then_one_and_rejects_bad_angles():
    assert minimax_error(math.radians(30)) == pytest.approx(0.5)
    assert minimax_error(math.pi / 2) == 1.0 == minimax_error(math.pi)
    with pytest.raises(ValueError):
        minimax_error(4.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 5))
def test_no_bias_beats_zero_on_a_symmetric_set_with_an_odd_target(seed, d):
    """The theorem for ANY linear target (not only rotations): F(b) >= F(0) for every b."""
    rng = np.random.default_rng(seed)
    half = rng.normal(size=(6, d))
    inputs = np.concatenate([half, -half])
    L = rng.normal(size=(d, d))
    targets = inputs @ L.T
    f0 = worst_relaxed_error(inputs, targets, np.zeros(d))
    biases = rng.normal(size=(400, d)) * rng.choice([0.1, 1.0, 10.0, 1e3], size=(400, 1))
    assert relaxed_errors(inputs, targets, biases).max(1).min() >= f0 - 1e-12


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_the_error_of_one_input_is_quasiconvex_in_the_bias(seed):
    rng = np.random.default_rng(seed)
    y, v, b1, b2 = rng.normal(size=(4, 3))
    lam = rng.uniform()
    mid = segment_distance(y, v, lam * b1 + (1 - lam) * b2)
    assert mid <= max(segment_distance(y, v, b1), segment_distance(y, v, b2)) + 1e-12


# --- distances and convex solvers ---------------------------------------------------------------

def test_best_alpha_beats_a_dense_grid_of_alphas():
    rng = np.random.default_rng(0)
    y, v, b = rng.normal(size=(3, 50, 3))
    grid = np.linspace(0, 1, 2001)[:, None, None]
    dense = np.linalg.norm((1 - grid) * v + grid * b - y, axis=-1).min(0)
    assert np.all(segment_distance(y, v, b) <= dense + 1e-12)
    assert np.all((best_alpha(y, v, b) >= 0) & (best_alpha(y, v, b) <= 1))


@pytest.mark.parametrize("d", [2, 3])
def test_least_squares_bias_closed_form_equals_cvxpy(d):
    rng = np.random.default_rng(d)
    inputs = rng.normal(size=(40, d))
    targets = inputs @ np.linalg.qr(rng.normal(size=(d, d)))[0].T
    alphas = rng.uniform(0.05, 1, size=40)
    b_closed, v_closed = best_bias_least_squares(inputs, targets, alphas)
    b_cvx, v_cvx = best_bias_least_squares_cvxpy(inputs, targets, alphas)
    assert np.max(np.abs(b_closed - b_cvx)) <= 1e-6 and v_closed == pytest.approx(v_cvx, rel=1e-6)


@pytest.mark.parametrize("angle", [10.0, 45.0, 90.0])
def test_at_the_optimal_alphas_the_best_worst_case_bias_is_zero_with_value_m(angle):
    V = circle(72)
    alphas = np.full(72, 1 - max(math.cos(math.radians(angle)), 0.0))
    b, value = best_bias_worst_case_cvxpy(V, V @ rotation_2d(angle).T, alphas)
    assert value == pytest.approx(minimax_error(math.radians(angle)), abs=1e-6)
    assert np.linalg.norm(b) <= 1e-6


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_cone_distance_is_the_minimum_over_the_disk(seed):
    """Exact: never above the error at any bias in the disk, and reached by some bias in it."""
    rng = np.random.default_rng(seed)
    y, v, c = rng.normal(size=(3, 1, 2))
    r = rng.uniform(0.01, 2.0)
    bound = cone_distance(y, v, c, np.array([r]))[0, 0]
    angle = rng.uniform(0, 2 * np.pi, 4000)
    radius = r * np.sqrt(rng.uniform(0, 1, 4000))
    disk = c + radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    sampled = segment_distance(y, v, disk)
    assert bound <= sampled.min() + 1e-12
    assert sampled.min() <= bound + 0.05 * r + 1e-9  # 4000 samples come close to the minimiser


def test_far_field_lemmas_on_random_instances():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2, 1000, 2)) * rng.uniform(0.1, 10, size=(2, 1000, 1))

    def unit(z):
        return z / np.linalg.norm(z, axis=-1, keepdims=True)

    assert np.all(np.linalg.norm(unit(x) - unit(y), axis=-1) <= 2 * np.linalg.norm(x - y, axis=-1)
                  / np.linalg.norm(y, axis=-1) + 1e-12)
    target, start = rng.normal(size=(2, 1, 2))
    u, w = unit(rng.normal(size=(2, 500, 2)))
    moved = np.abs(ray_distance(target, start, u) - ray_distance(target, start, w))[:, 0]
    assert np.all(moved <= np.linalg.norm(target - start) * np.linalg.norm(u - w, axis=1) + 1e-12)


# --- the certificate ------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(ANGLES)
def test_branch_and_bound_certifies_a_positive_bound_for_every_rotation(angle):
    """Two antipodal inputs suffice; the bound is within BNB_GAP of m(theta) and never above."""
    pair = circle(2)
    result = branch_and_bound(pair, pair @ rotation_2d(angle).T)
    m = minimax_error(math.radians(angle))
    assert result.certified and result.complete
    assert (1 - BNB_GAP) * m - 2 * FLOAT_SLACK <= result.bound <= m


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_branch_and_bound_is_sound_for_arbitrary_targets(seed):
    """No symmetry needed: the bound never exceeds F at any bias tried (random targets)."""
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(5, 2))
    targets = rng.normal(size=(5, 2)) * 1.5
    result = branch_and_bound(inputs, targets)
    biases = np.concatenate([rng.normal(size=(3000, 2)) * rng.choice([0.3, 3, 300], size=(3000, 1)),
                             np.zeros((1, 2))])
    assert result.bound <= relaxed_errors(inputs, targets, biases).max(1).min() + 1e-12


def test_certifier_says_no_for_identity_translation_and_shrinking_but_yes_for_growing():
    V = circle(72)
    for name, Y in (("identity", V.copy()), ("translation", V + np.array([0.3, -0.2])),
                    ("scale 1/2", 0.5 * V)):
        assert not branch_and_bound(V, Y).certified, name
    assert certify_symmetric(V, V + np.array([0.3, -0.2])) is None  # not odd: theorem silent
    assert not certify_symmetric(V, 0.5 * V)["certified"]
    assert not certify_rotation(np.eye(4))["certified"]
    grow = branch_and_bound(V, 2 * V)  # a prefix cannot push outputs outward: error 1
    assert grow.certified and grow.bound == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("d", [3, 5, 8])
def test_random_orthogonal_maps_get_the_theorem_bound_and_branch_and_bound_agrees(d):
    rng = np.random.default_rng(d)
    R = check_module.haar(d, rng)
    theorem = certify_rotation(R)
    points, targets, basis = check_module.principal_plane(R)
    assert np.allclose(targets @ basis.T, (R @ (points @ basis.T).T).T)  # v and R v stay in the plane
    bnb = branch_and_bound(points, targets)
    assert theorem["certified"] and 0 < bnb.bound <= theorem["bound"] + 2 * FLOAT_SLACK
    assert bnb.bound >= (1 - BNB_GAP) * theorem["bound"] - 2 * FLOAT_SLACK
    sphere = rng.normal(size=(4000, d))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    f0 = worst_relaxed_error(sphere, sphere @ R.T, np.zeros(d))  # sup over the sphere is m(theta_max)
    assert f0 <= theorem["bound"] + 1e-8


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 8))
def test_plane_reduction_only_lowers_the_error(seed, d):
    """R rotates a random plane P; for v in P, projecting b onto P never increases the error."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    R = basis @ np.block([[rotation_2d(rng.uniform(0, 180)), np.zeros((2, d - 2))],
                          [np.zeros((d - 2, 2)), np.eye(d - 2)]]) @ basis.T
    v = basis[:, :2] @ circle(12).T  # (d, 12) unit vectors in P
    Pi = basis[:, :2] @ basis[:, :2].T
    b, alpha = rng.normal(size=d) * 3, rng.uniform()
    p = (1 - alpha) * v.T + alpha * b
    assert np.all(np.linalg.norm(p @ Pi - v.T @ R.T, axis=1) <= np.linalg.norm(p - v.T @ R.T, axis=1) + 1e-12)
    assert np.all(segment_distance(v.T @ R.T, v.T, Pi @ b) <= segment_distance(v.T @ R.T, v.T, b) + 1e-12)


# --- the search over actual prefixes ------------------------------------------------------------

def test_masked_prefix_slots_are_exactly_absent():
    layer = LayerSpec(4, 2, seed=1).build()
    inputs = circle_inputs(4, 6)
    gen = torch.Generator().manual_seed(0)
    keys, values = torch.randn(2, 1, 1, 5, 4, generator=gen, dtype=torch.float64)
    padded = prefixed_outputs(layer, inputs, keys, values, [3])
    exact = prefixed_outputs(layer, inputs, keys[:, :, :3], values[:, :, :3], [3])
    assert torch.max(torch.abs(padded - exact)) <= 1e-14


def test_one_prefix_position_is_the_papers_bias_formula_on_torch_attention():
    """t = (1 - alpha) v + alpha W_V s with alpha = softmax weight of the prefix (scale 1/sqrt(d))."""
    spec = LayerSpec(3, 1, gain=2.0, seed=2)
    layer, w = spec.build(), spec.weights()
    inputs = circle_inputs(3, 8)
    s = torch.tensor([[0.4, -1.1, 0.7]], dtype=torch.float64)
    out = layer_outputs(layer, inputs, s, s, 1)
    q, k_own, k_pre = inputs @ w["W_Q"].T, inputs @ w["W_K"].T, s @ w["W_K"].T
    scores = torch.stack([(q * k_pre).sum(1), (q * k_own).sum(1)], 1) / math.sqrt(3)
    alpha = torch.softmax(scores, 1)[:, :1]
    expected = (1 - alpha) * inputs + alpha * (s @ w["W_V"].T)
    assert torch.max(torch.abs(out - expected)) <= 1e-14


@pytest.mark.parametrize("setting", ["tied", "untied"])
def test_the_search_never_beats_the_certified_bound_with_one_prefix_position(setting):
    d = 3
    layer = LayerSpec(d, 1, seed=0).build()
    inputs = circle_inputs(d, 16)
    angles = (5.0, 30.0, 90.0, 150.0)
    targets = torch.stack([inputs @ plane_rotation(d, math.radians(a)).T for a in angles])
    result = search(layer, setting, inputs, targets, [1] * len(angles), FAST)
    for angle, upper in zip(angles, result.worst):
        assert upper >= minimax_error(math.radians(angle))


def test_the_search_finds_a_planted_prefix():
    layer = LayerSpec(8, 4, seed=0).build()
    inputs = circle_inputs(8, 16)
    gen = torch.Generator().manual_seed(11)
    planted = layer_outputs(layer, inputs, torch.randn(1, 8, generator=gen, dtype=torch.float64),
                            torch.randn(1, 8, generator=gen, dtype=torch.float64), 1)
    result = search(layer, "untied", inputs, planted[None], [1], SearchConfig(restarts=2, steps=250, seed=1))
    assert result.worst[0] <= check_module.PLANTED_TOLERANCE


def test_the_search_is_deterministic_for_a_seed():
    layer = LayerSpec(4, 2, seed=0).build()
    inputs = circle_inputs(4, 8)
    targets = torch.stack([inputs @ plane_rotation(4, 0.5).T, inputs])
    runs = [search(layer, "untied", inputs, targets, [2, 1], FAST) for _ in range(2)]
    assert runs[0].worst == runs[1].worst and runs[0].per_restart == runs[1].per_restart
    assert torch.equal(runs[0].keys, runs[1].keys)
    other = search(layer, "untied", inputs, targets, [2, 1], SearchConfig(restarts=2, steps=120, seed=4))
    assert other.per_restart != runs[0].per_restart


def test_bad_search_arguments_are_rejected():
    layer = LayerSpec(2, 1).build()
    inputs = circle_inputs(2, 4)
    with pytest.raises(ValueError):
        search(layer, "shared", inputs, inputs[None], [1])
    with pytest.raises(ValueError):
        search(layer, "tied", inputs, inputs[None], [0])
    with pytest.raises(ValueError):
        LayerSpec(5, 2)


def test_untied_heads_with_a_vanishing_query_have_a_floor_no_prefix_goes_below():
    """d = 2, two heads of width 1: random untied prefixes of every length stay above the bound
    at the witness inputs +-v (where the head attends uniformly)."""
    spec = LayerSpec(2, 2, seed=5)
    layer, w = spec.build(), {k: t.numpy() for k, t in spec.weights().items()}
    gen = torch.Generator().manual_seed(0)
    R = rotation_2d(60.0)
    for n in (1, 3, 9):
        bound = null_query_bound(w["W_Q"], w["W_V"], 2, R, n)
        v = torch.tensor(bound["witness"], dtype=torch.float64)
        pair = torch.stack([v, -v])
        for _ in range(20):
            keys, values = torch.randn(2, n, 2, generator=gen, dtype=torch.float64) * 3
            error = (layer_outputs(layer, pair, keys, values, n) - pair @ torch.from_numpy(R).T).norm(dim=1)
            assert error.max() >= bound["bound"] - 1e-12


# --- the claim ------------------------------------------------------------------------------------

def test_search_controls_fail_when_the_search_misses():
    single = {"planted": [{"setting": "tied", "d": 2, "error": 0.2}],
              "identity": [{"setting": "tied", "d": 2, "error": 0.5}]}
    translation = {"lengths": [1, 4], "worst_error": {"untied": {"1": 0.3, "4": 0.2}}}
    controls = check_module.search_controls(single, {"planted": []}, translation)
    assert not any(c.refuted for c in controls)


@pytest.fixture(scope="module")
def outcome():
    return run_claim(claim("petrov.sec4.rotation-not-a-bias"), Context(seed=0))


def test_the_claim_holds_and_every_control_is_refuted(outcome):
    assert outcome.status == "pass", outcome.reasons
    assert outcome.rung == Rung.SYMBOLIC.value
    assert set(outcome.control) == set(CONTROLS["petrov.sec4.rotation-not-a-bias"]) == {
        "certifier_refuses_identity", "certifier_refuses_translation", "search_finds_realizable",
        "search_can_do_nothing", "search_matches_translation"}
    assert all(c["refuted"] and c["could_fail_because"].endswith("would stand") for c in outcome.control.values())
    ev = outcome.evidence
    assert ev["summary"] and all(ev["symbolic"]["proof"].values())
    for row in ev["single_prefix_search"]["rows"]:
        assert row["upper"] >= row["lower"] > 0
    for row in ev["certified_table"]["rows"]:
        assert 0 < row["bnb_pair"] <= row["m_theta"]


def test_the_evidence_reports_how_longer_prefixes_fare(outcome):
    longer = outcome.evidence["longer_prefixes"]
    assert set(longer["settings"]) == {"tied", "untied"} and set(longer["verdict"]) == {"tied", "untied"}
    for data in longer["settings"].values():
        for errors in data["worst_error"].values():
            assert len(errors) == len(longer["lengths"])
        assert all(np.isfinite(r["exponent"]) for r in data["rate"].values())
