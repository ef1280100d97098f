"""Section 3 constructions: the authors' published outputs, every random task, certificates that
are tight at the symbolic minimal temperature, and clear errors for impossible requests."""

import numpy as np
import pytest
from hypothesis import given, settings

from constructions.errors import ConstructionError
from constructions.petrov import demos
from constructions.petrov.conditional import Conditional
from constructions.petrov.long_response import LongResponse
from constructions.petrov.unconditional import Unconditional
from constructions.vocab import Vocabulary
from theorems.petrov_sec3 import THRESHOLDS
from theorems.strategies import targets, total_maps
from verify.certificates.cover import certify
from verify.checks.petrov_sec3 import find_counterexample, perturbed

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
def test_perturbed_weight_is_refuted_by_the_same_certificate(cls, kwargs, sizes):
    c = cls(**kwargs)
    assert certify(c).holds
    wrong = perturbed(c.spec)
    failed = certify(c, wrong, keep_failures=100)
    assert not failed.holds
    assert find_counterexample(c, wrong, failed.failing_examples, np.random.default_rng(0)) is not None


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
