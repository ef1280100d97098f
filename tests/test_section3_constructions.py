"""Section 3 constructions: the authors' published outputs, every random task, certificates that
are tight at the symbolic minimal temperature, the leakage model read off the weights (an
off-by-one in the construction's scores or in the model makes a derivation step False), and
clear errors for impossible requests."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings

from constructions.errors import ConstructionError
from constructions.petrov import demos
from constructions.petrov.conditional import Conditional
from constructions.petrov.long_response import LongResponse
from constructions.petrov.unconditional import Unconditional
from constructions.vocab import Vocabulary
import constructions.petrov.parts as parts
import theorems.petrov_sec3 as th
from theorems.petrov_sec3 import THRESHOLDS, Threshold, from_scores
from theorems.strategies import targets, total_maps
from verify.certificates.cover import certify
from verify.checks.petrov_sec3 import construction_threshold, find_counterexample, perturbed_readout, read_leakage

ASCII = Vocabulary.printable_ascii()
NO_USER = np.zeros((1, 0), dtype=np.int64)
DELTA = 1e-6


def generate_text(construction, task, user_text=""):
    user = construction.vocab.encode(user_text)[None] if user_text else NO_USER
    return construction.vocab.decode(construction.respond(construction.virtual_tokens(task), user)[0])


def test_theorem1_generates_i_love_transformers():
    c = Unconditional(ASCII)
    assert generate_text(c, c.parse_task("I love transformers!")) == "I love transformers!"


def test_theorem2_case_flip_sends_f_to_F():
    c = Conditional(ASCII)
    assert generate_text(c, c.parse_task(demos.case_flip(ASCII.symbols)), "f") == "F"


def test_long_response_sends_b_to_blueberries():
    c = LongResponse(ASCII)
    response = generate_text(c, c.parse_task(demos.animals_and_foods(ASCII.symbols)), "b")
    assert "b" + response.rstrip() == "blueberries"


@settings(max_examples=40, deadline=None)
@given(target=targets("".join(ASCII.symbols), 20))
def test_theorem1_generates_any_target(target):
    c = Unconditional(ASCII)
    assert generate_text(c, c.parse_task(target)) == target.ljust(20)


@settings(max_examples=20, deadline=None)
@given(mapping=total_maps("abcdefgh"))
def test_theorem2_realises_any_map(mapping):
    c = Conditional(Vocabulary.from_string("abcdefgh"))
    task = c.parse_task(mapping)
    for symbol, image in mapping.items():
        assert generate_text(c, task, symbol) == image


@settings(max_examples=15, deadline=None)
@given(mapping=total_maps("abcde", response_length=4))
def test_long_response_realises_any_map(mapping):
    c = LongResponse(Vocabulary.from_string("abcde"), response_length=4)
    task = c.parse_task(mapping)
    for symbol, response in mapping.items():
        assert generate_text(c, task, symbol) == response.ljust(4, "a")


SMALL = [
    (Unconditional, dict(vocab=Vocabulary.letters(7), length=5), {"V": 7, "N": 5}),
    (Conditional, dict(vocab=Vocabulary.letters(9)), {"V": 9}),
    (LongResponse, dict(vocab=Vocabulary.letters(5), response_length=3), {"V": 5, "N0": 3}),
]


@pytest.mark.parametrize("cls, kwargs, sizes", SMALL, ids=lambda v: getattr(v, "name", ""))
def test_certificate_is_tight_at_the_symbolic_minimal_temperature(cls, kwargs, sizes):
    critical = THRESHOLDS[cls.name].value(**sizes)
    assert certify(cls(**kwargs, inverse_temperature=critical + DELTA)).holds
    cold = cls(**kwargs, inverse_temperature=critical - DELTA)
    failed = certify(cold, keep_failures=100)
    assert not failed.holds
    counterexample = find_counterexample(cold, cold.spec, failed.failing_examples, np.random.default_rng(0))
    assert counterexample is not None and counterexample["expected"] != counterexample["generated"]


@pytest.mark.parametrize("cls, kwargs, sizes", SMALL, ids=lambda v: getattr(v, "name", ""))
def test_every_task_is_answered_correctly_above_the_threshold(cls, kwargs, sizes):
    """Exhaustive where small: all user inputs, 2,000 random tasks, just above T*."""
    c = cls(**kwargs, inverse_temperature=THRESHOLDS[cls.name].value(**sizes) + DELTA)
    rng = np.random.default_rng(1)
    tasks = c.random_tasks(rng, 2000)
    users = c.all_user_inputs()
    for user in users:
        assert c.responds_correctly(tasks, np.repeat(user[None], len(tasks), axis=0)).all()


@pytest.mark.parametrize("cls, kwargs, sizes", SMALL, ids=lambda v: getattr(v, "name", ""))
def test_a_readout_bias_of_twice_the_margin_is_refuted_and_half_is_harmless(cls, kwargs, sizes):
    c = cls(**kwargs)
    certificate = certify(c)
    assert certificate.holds and certificate.worst_competitor is not None
    for factor, breaks in ((2.0, True), (0.5, False)):
        wrong = perturbed_readout(c.spec, certificate.worst_competitor, factor * certificate.worst_margin)
        failed = certify(c, wrong, keep_failures=100)
        assert failed.holds is not breaks
        if breaks:
            assert find_counterexample(c, wrong, failed.failing_examples, np.random.default_rng(0)) is not None


# --- the leakage model, read off the weights ------------------------------------------------

MODEL = {"unconditional": lambda s: (s["N"] - 1, Fraction(s["V"] - 1, s["V"])),
         "conditional": lambda s: (1, Fraction(s["V"] - 1, s["V"])),
         "long-response": lambda s: (2 * s["N0"] - 1, Fraction(2 * s["V"] - 1, s["V"]))}


def builder(cls, kwargs):
    return lambda T: cls(**kwargs) if T is None else cls(**kwargs, inverse_temperature=T)


@pytest.mark.parametrize("cls, kwargs, sizes", SMALL, ids=lambda v: getattr(v, "name", ""))
def test_the_weights_give_the_models_m_and_c_at_the_binding_position(cls, kwargs, sizes):
    reading = read_leakage(builder(cls, kwargs))
    assert all(reading.preconditions.values()), reading.preconditions
    derived = from_scores(reading.rows, sizes["V"], THRESHOLDS[cls.name], sizes)
    assert all(derived["steps"].values())
    binding = next(p for p in reading.positions if p.row.position == derived["binding_position"])
    assert (binding.row.others, binding.row.spread) == MODEL[cls.name](sizes)
    assert binding.row.attended == (0, 1, 0) and binding.row.other == (0, 0, 0)  # scores T and 0


@pytest.mark.parametrize("cls, kwargs, sizes", SMALL, ids=lambda v: getattr(v, "name", ""))
def test_every_derivation_step_holds_on_the_real_weights(cls, kwargs, sizes):
    threshold = construction_threshold(cls.name, builder(cls, kwargs), sizes)
    assert threshold["proof"] and all(threshold["proof"].values()), threshold["proof"]


def shifted_scores(layout, position, inverse_temperature):
    """Off by one in the scores: the attended key scores T + 1 instead of T (a bias on the query)."""
    W_Q, W_K = parts.attend_to_position(layout, position, inverse_temperature)
    W_Q[layout.index("one"), 0] += 1.0
    return W_Q, W_K


def two_keys(layout, position, inverse_temperature):
    """Off by one in the keys: position + 1 scores T as well."""
    W_Q, W_K = parts.attend_to_position(layout, position, inverse_temperature)
    if position + 1 < layout["pos"].stop - layout["pos"].start:
        W_K[layout.index("pos", position + 1), 0] = 1.0
    return W_Q, W_K


WEIGHT_STEPS = ("weights: err(T) from the weights' scores = the model's m c/(e^T + m)",
                "weights: T* solved from the weights = the model's ln(m (2Vc - 1))")


def test_an_off_by_one_score_makes_the_derivation_false_while_the_old_proof_stays_true(monkeypatch):
    """Score T + 1 on the attended key: the construction still works (it is MORE robust), the
    model's own algebra is still all True, but the weights' error is m c/(e^(T+1) + m)."""
    import constructions.petrov.unconditional as module

    monkeypatch.setattr(module, "attend_to_position", shifted_scores)
    cls, kwargs, sizes = SMALL[0]
    threshold = construction_threshold("unconditional", builder(cls, kwargs), sizes)
    proof = threshold["proof"]
    assert all(v for k, v in proof.items() if k.startswith("model"))  # the asserted formula's algebra
    assert [proof[k] for k in WEIGHT_STEPS] == [False, False]
    assert abs(threshold["from_the_weights"]["T*_value"] - (np.log(4 * 11) - 1)) < 1e-12  # ln((N-1)(2V-3)) - 1


def test_a_second_attended_key_makes_the_derivation_false(monkeypatch):
    import constructions.petrov.conditional as module

    monkeypatch.setattr(module, "attend_to_position", two_keys)
    cls, kwargs, sizes = SMALL[1]
    proof = construction_threshold("conditional", builder(cls, kwargs), sizes)["proof"]
    assert proof["weights: each head attends one key per read position; the other keys share one score; "
                 "the heads share the gap"] is False


def test_an_off_by_one_in_the_model_makes_the_derivation_false(monkeypatch):
    """m = N instead of N - 1: every step of the model's own algebra still reduces (the issue's
    finding), but the weights disagree with it."""
    wrong = Threshold("unconditional", th.N, (th.V - 1) / th.V, ())
    assert all(wrong.prove().values())
    monkeypatch.setitem(THRESHOLDS, "unconditional", wrong)
    cls, kwargs, sizes = SMALL[0]
    proof = construction_threshold("unconditional", builder(cls, kwargs), sizes)["proof"]
    assert [proof[k] for k in WEIGHT_STEPS] == [False, False]


def test_certificate_margin_equals_the_analysis_at_default_temperature():
    """At T = 50 the leakage is ~e^-50, so z sits on the grid point y/V and the margin is the
    readout's own: logit_y - logit_c = (z - c/V)^2 - (z - y/V)^2 = ((y - c)/V)^2 >= 1/V^2."""
    result = certify(Unconditional(ASCII))
    assert result.holds and result.cases == 94 * 20
    assert np.isclose(result.worst_margin, 1 / 94**2, rtol=1e-9)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Unconditional(ASCII).parse_task("x" * 21), "at most N = 20"),
        (lambda: Unconditional(ASCII).parse_task("café"), "not in the vocabulary"),
        (lambda: Conditional(Vocabulary.from_string("ab")).parse_task({"a": "b"}), "not total"),
        (lambda: Conditional(Vocabulary.from_string("ab")).parse_task({"a": "b", "b": "zz"}), "one symbol"),
        (lambda: Conditional(Vocabulary.from_string("ab")).parse_task({"a": "b", "b": "a", "c": "a"}), "not a symbol"),
        (lambda: LongResponse(Vocabulary.from_string("ab"), 2).parse_task({"a": "abb", "b": ""}), "at most 2"),
        (lambda: Unconditional(ASCII, length=0), "N must be >= 1"),
        (lambda: Conditional(ASCII, inverse_temperature=0.0), "positive"),
        (lambda: Vocabulary.from_string("aa"), "distinct"),
    ],
)
def test_impossible_requests_raise_a_clear_error(make, message):
    with pytest.raises(ConstructionError, match=message):
        make()


def test_the_direct_mask_test_sees_a_mask_that_lets_query_i_see_key_i_plus_1(monkeypatch):
    """At the construction's own T a leaked key weighs below e^-50 (torch parity cannot see it);
    the direct test on generic weights of the same shapes must, in numpy and in torch alike."""
    import constructions.forward as forward_module
    import constructions.torch_module as torch_module
    from verify.checks.petrov_sec3 import TORCH_PARITY_TOLERANCE, causal_mask_leak

    spec = LongResponse(Vocabulary.printable_ascii(), response_length=4).spec
    honest = causal_mask_leak(spec, np.random.default_rng(0))
    assert honest["holds"] and max(honest["max_change_before_the_changed_position"].values()) <= TORCH_PARITY_TOLERANCE
    assert honest["min_change_at_or_after_it"] > 1e-3  # the redrawn positions really changed the output

    original_mask = forward_module.attention_mask

    def leaky(spec, n, n_prefix=0):
        mask = original_mask(spec, n, n_prefix)
        mask[:, n_prefix:] |= np.eye(n, k=1, dtype=bool)
        return mask

    monkeypatch.setattr(forward_module, "attention_mask", leaky)
    numpy_leak = causal_mask_leak(spec, np.random.default_rng(0))
    assert not numpy_leak["holds"] and numpy_leak["max_change_before_the_changed_position"]["numpy"] > 1e-3
    assert numpy_leak["max_change_before_the_changed_position"]["torch"] <= TORCH_PARITY_TOLERANCE
    monkeypatch.setattr(forward_module, "attention_mask", original_mask)

    original_forward = torch_module.AttentionLayer.forward

    def torch_leaky(self, x, prefix=None, positions=None):
        causal, self.causal = self.causal, False  # no mask at all: every later key visible
        try:
            return original_forward(self, x, prefix, positions)
        finally:
            self.causal = causal

    monkeypatch.setattr(torch_module.AttentionLayer, "forward", torch_leaky)
    torch_leak = causal_mask_leak(spec, np.random.default_rng(0))
    assert not torch_leak["holds"] and torch_leak["max_change_before_the_changed_position"]["torch"] > 1e-3
