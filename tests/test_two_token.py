"""Two-token conditioning (petrov.thm2.two-token): the authors' published result (100% of a
random map over V = 10), ground truth, every random map, the compositional certificate (holds
at the defaults and at the largest exact V, refuted for a wrong weight and a too-small
temperature, tight at the symbolic temperature), soundness of its intermediate bounds against
concrete forward passes, clear errors, and torch parity."""

from fractions import Fraction

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.errors import ConstructionError
from constructions.forward import NUMPY, attention_mask, embed, forward, logits
from constructions.petrov.two_token import (
    DEFAULT_RAMP_WIDTH,
    MAX_VOCAB_FLOAT64,
    TwoToken,
    digits_of,
    largest_vocab_for_precision,
    leakage_witnesses,
    min_inverse_temperature,
    row_codes,
)
from constructions.spec import MLP, Block, TransformerSpec
from constructions.torch_module import SpecTransformer
from constructions.vocab import Vocabulary
from theorems.strategies import pair_maps
from theorems.petrov_sec3 import two_token_front_from_scores, two_token_thresholds
from verify.certificates.cover import certify
from verify.certificates.two_token import certify_two_token
from verify.checks.petrov_sec3 import perturbed_readout, read_leakage, two_token_threshold

LETTERS10 = Vocabulary.letters(10)
TIGHTNESS_DELTA = 1e-4  # in T; float64 rounding moves V = 10's threshold by ~1e-5


@pytest.fixture(scope="module")
def ten():
    return TwoToken(LETTERS10)


def respond_all_pairs(construction, task):
    users = construction.all_user_inputs()
    tasks = np.repeat(task, len(users), axis=0)
    got = construction.respond(construction.virtual_tokens(tasks), users)[:, 0]
    return got, construction.expected(tasks, users)[:, 0]


def with_block(spec, index, block):
    blocks = list(spec.blocks)
    blocks[index] = block
    return TransformerSpec.build(spec.W_E, spec.W_pos, blocks, spec.W_U, spec.b_U,
                                 spec.attention_scale, spec.causal, spec.subspaces)


def with_mlp(spec, index, **changes):
    mlp = spec.blocks[index].mlp
    arrays = {name: np.array(getattr(mlp, name)) for name in ("W_in", "W_out", "b_in", "b_out")}
    for name, edit in changes.items():
        edit(arrays[name])
    return with_block(spec, index, Block(spec.blocks[index].attention, MLP.build(spec.d_model, **arrays)))


# --- the authors' published output and ground truth --------------------------------------

def test_completes_100_percent_of_a_random_map_over_V10(ten):
    """Authors: "Correctly completed sequences: 100.00%" (V = 10, A-J), by greedy generation."""
    task = ten.random_tasks(np.random.default_rng(2024), 1)
    got, want = respond_all_pairs(ten, task)
    assert len(got) == 100 and np.array_equal(got, want)


def test_ground_truth_pair_BG(ten):
    mapping = {a + b: "A" for a in LETTERS10.symbols for b in LETTERS10.symbols}
    mapping.update({"BG": "H", "GB": "J", "JJ": "C", "AA": "J"})
    task = ten.parse_task(mapping)
    for pair, image in [("BG", "H"), ("GB", "J"), ("JJ", "C"), ("AA", "J"), ("BB", "A")]:
        out = ten.respond(ten.virtual_tokens(task), LETTERS10.encode(pair)[None])
        assert LETTERS10.decode(out[0]) == image


def test_encoding_is_the_authors_base_V_fraction(ten):
    task = ten.random_tasks(np.random.default_rng(1), 3)
    exact = [[sum(Fraction(int(task[b, i, j]), 10 ** (j + 1)) for j in range(10)) for i in range(10)]
             for b in range(3)]
    assert np.array_equal(ten.encode_rows(task), np.array([[float(q) for q in row] for row in exact]))
    assert np.array_equal(digits_of(row_codes(task), 10), task)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), size=st.integers(min_value=2, max_value=6))
def test_realises_any_map(data, size):
    vocab = Vocabulary.letters(size)
    mapping = data.draw(pair_maps("".join(vocab.symbols)))
    c = TwoToken(vocab)
    task = c.parse_task(mapping)
    got, want = respond_all_pairs(c, task)
    assert np.array_equal(got, want)
    assert c.task_to_json(task[0]) == mapping


def test_digits_are_exact_integers_in_float64(ten):
    tasks = ten.random_tasks(np.random.default_rng(5), 20)
    users = ten.all_user_inputs()
    t_idx = np.repeat(np.arange(20), 100)
    tokens = ten.prompt_tokens(np.tile(users, (20, 1)))
    x = embed(ten.spec, tokens, ten.virtual_tokens(tasks)[t_idx], (0,))
    cache = {}
    forward(ten.spec, x, NUMPY, cache)
    digits = cache[f"blocks.{2 * 10}.resid_post"][:, 2, ten.layout["digit"]]
    assert np.array_equal(digits, tasks[t_idx, np.tile(users[:, 0], 20)].astype(float))


# --- the compositional certificate ----------------------------------------------------------

@pytest.mark.parametrize("size", [2, 5, 10, MAX_VOCAB_FLOAT64])
def test_certificate_holds_at_the_defaults(size):
    result = certify_two_token(TwoToken(Vocabulary.letters(size)))
    assert result.holds, result.first_failure
    assert result.chains == size * size and result.worst_margin >= 1.0
    assert result.smallest_slack > 0


def test_largest_exact_vocabulary():
    assert MAX_VOCAB_FLOAT64 == 13 == largest_vocab_for_precision(53)
    assert largest_vocab_for_precision(24) == 8
    assert certify_two_token(TwoToken(Vocabulary.letters(13)), arithmetic="real").holds


def test_certificate_refutes_a_perturbed_weight(ten):
    # the checks' standard control: first MLP bias + 0.5 (the selector lets other rows leak in)
    spec = with_mlp(ten.spec, 0, b_in=lambda b: b.__setitem__(0, b[0] + 0.5))
    result = certify_two_token(ten, spec)
    assert not result.holds and result.failing > 0
    assert any(not ten.responds_correctly(*ten.witness(label, np.random.default_rng(0)), spec)[0]
               for label in result.failing_examples)


def test_certificate_refutes_a_tiny_perturbation_of_the_remainder(ten):
    # rem_1 += V(1 + 1e-6) rem_0: invisible to most maps, fatal to some (error x V^9)
    row = ten.layout.index("rem", 1)
    spec = with_mlp(ten.spec, 1, W_out=lambda w: w.__setitem__((9, row), w[9, row] * (1 + 1e-6)))
    result = certify_two_token(ten, spec)
    assert not result.holds
    found = [label for label in result.failing_examples
             if not ten.responds_correctly(*ten.witness(label, np.random.default_rng(0)), spec)[0]]
    assert found


@pytest.mark.parametrize("T", [3.0, 8.0, 20.0])
def test_leakage_formula_of_the_analysis(ten, T):
    """rem_0 = x - 2w(1 + x) (u0 != u1) and x - w(1 + 2x) (u0 = u1), w = 1/(e^T + 2)."""
    c = TwoToken(LETTERS10, inverse_temperature=T)
    task = c.random_tasks(np.random.default_rng(11), 1)
    x = c.encode_rows(task)[0]
    w = 1 / (np.exp(T) + 2)
    for u0, u1 in [(3, 7), (4, 4)]:
        cache = {}
        forward(c.spec, embed(c.spec, c.prompt_tokens(np.array([[u0, u1]])), c.virtual_tokens(task), (0,)),
                NUMPY, cache)
        rem0 = cache["blocks.0.resid_post"][0, 2, c.layout.index("rem", 0)]
        want = x[u0] - (2 * w * (1 + x[u0]) if u0 != u1 else w * (1 + 2 * x[u0]))
        assert rem0 == pytest.approx(want, abs=1e-14)


def test_minimal_temperature_is_symbolic_and_tight():
    th = two_token_thresholds(10, DEFAULT_RAMP_WIDTH)
    assert all(th["checks"].values())
    critical = th["certified"]
    assert critical == pytest.approx(min_inverse_temperature(10), abs=1e-12)
    assert critical == pytest.approx(np.log(4 * (2 * 10.0**10 - 1) / (15 / 16) - 2))
    above = TwoToken(LETTERS10, inverse_temperature=critical + TIGHTNESS_DELTA)
    assert certify_two_token(above).holds
    below = TwoToken(LETTERS10, inverse_temperature=critical - TIGHTNESS_DELTA)
    assert not certify_two_token(below).holds
    tasks, users = leakage_witnesses(below)
    assert not below.responds_correctly(tasks, users).all()  # a concrete wrong answer
    refuted = certify_two_token(below)
    assert any(not below.responds_correctly(*below.witness(label, np.random.default_rng(0)))[0]
               for label in refuted.failing_examples[:300])
    # the analytic witness: the all-(V-1) row's last digit fails below ln(8 V^V - 6)
    last = TwoToken(LETTERS10, inverse_temperature=th["witness"] - 1e-3)
    task = np.zeros((1, 10, 10), dtype=np.int64)
    task[0, 0] = 9
    assert not last.responds_correctly(task, np.array([[0, 9]]))[0]


def ten_builder(T=None):
    return TwoToken(LETTERS10) if T is None else TwoToken(LETTERS10, inverse_temperature=T)


def test_the_error_model_is_tied_to_the_weights():
    """rem_0 - x = -2w(1 + x) and the remainder gain V are read off the built weights."""
    threshold = two_token_threshold(ten_builder, 10)
    assert all(threshold["proof"].values()), threshold["proof"]
    front = threshold["from_the_weights"]
    assert front["visible_keys_not_attended"] == 2 and front["rem0_shift_per_leak"] == "-1 + (-1) x"
    assert front["gains"] == ["10"] * 9


def test_an_off_by_one_score_in_the_front_makes_the_tie_false(monkeypatch):
    import constructions.petrov.parts as parts
    import constructions.petrov.two_token as module

    def shifted(layout, position, inverse_temperature):  # the attended key scores T + 1
        W_Q, W_K = parts.attend_to_position(layout, position, inverse_temperature)
        W_Q[layout.index("one"), 0] += 1.0
        return W_Q, W_K

    monkeypatch.setattr(module, "attend_to_position", shifted)
    proof = two_token_threshold(ten_builder, 10)["proof"]
    assert proof["weights: rem_0 - x from the weights' scores = the model's -2w(1 + x)"] is False
    assert all(v for k, v in proof.items() if k.startswith("model"))  # the typed model's algebra is unmoved


def test_a_wrong_gain_or_shift_is_not_the_model():
    reading = read_leakage(ten_builder, readout="rem")
    worst = reading.positions[0]
    right = two_token_front_from_scores(worst.row, worst.kappa[0], worst.slope, [Fraction(10)] * 9, 10)
    assert all(right.values())
    assert not all(two_token_front_from_scores(worst.row, worst.kappa[0], worst.slope,
                                               [Fraction(10)] * 8 + [Fraction(11)], 10).values())
    assert not all(two_token_front_from_scores(worst.row, Fraction(-1, 2), worst.slope, [Fraction(10)] * 9,
                                               10).values())


@pytest.mark.parametrize("factor, breaks", [(2.0, True), (0.5, False)])
def test_the_readout_bias_control_flips_at_the_certified_margin(ten, factor, breaks):
    """The checks' control 'perturbed_readout_bias': b_U[c*] += factor x the certified margin."""
    certificate = certify_two_token(ten)
    wrong = perturbed_readout(ten.spec, certificate.worst_competitor, factor * certificate.worst_margin)
    result = certify_two_token(ten, wrong)
    assert result.holds is not breaks
    if breaks:
        assert any(not ten.responds_correctly(*ten.witness(label, np.random.default_rng(0)), wrong)[0]
                   for label in result.failing_examples)


def test_box_cover_cross_check_for_small_V():
    """The generic interval certificate over the complete V^2 V^V box cover agrees."""
    c = TwoToken(Vocabulary.letters(3))
    assert certify(c).holds and certify(c).cases == 9 * 27
    wrong = with_mlp(c.spec, 0, b_in=lambda b: b.__setitem__(0, b[0] + 0.5))
    assert not certify(c, wrong).holds
    with pytest.raises(ConstructionError, match="certify_two_token"):
        next(TwoToken(Vocabulary.letters(6)).certificate_cases())


# --- soundness of the intermediate forms ---------------------------------------------------

def contained(form, row, value, t):
    """|value - (c + g t)| <= r for every coordinate, in exact rational arithmetic."""
    c, g, r = form.c[row].ravel(), form.g[row].ravel(), form.r[row].ravel()
    for ci, gi, ri, vi in zip(c, g, r, np.asarray(value).ravel()):
        if abs(Fraction(vi) - Fraction(ci) - Fraction(gi) * t) > Fraction(ri):
            return False
    return True


def traced_forms(construction, arithmetic):
    forms = []
    certify_two_token(construction, arithmetic=arithmetic,
                      trace=lambda stage, n, rows, bands, form: forms.append((stage, n, rows, bands, form)))
    return forms


def check_trace(construction, forms, task, u0, u1, states):
    """states[l]: the residual after block l, (3, d), of the model run on (task, u0, u1)."""
    V = construction.vocab.size
    code = int(row_codes(task[None])[0, u0])
    y = int(task[u0, u1])
    chain = u1 * V + y
    checked = 0
    for stage, n, rows, bands, form in forms:
        if stage == "front":
            assert contained(form, u0 * V + u1, states[0], Fraction(code, V**V))
        elif stage == "final":
            assert contained(form, chain, states[2 * V + 1][-form.shape[1]:], 0)
        else:
            t = Fraction(code % V ** (V - n), V ** (V - n))
            digit = int(task[u0, n])
            row = int(np.flatnonzero((rows == chain) & (bands == digit))[0])
            block = 1 + 2 * n if stage == "ramp" else 2 + 2 * n
            assert contained(form, row, states[block][-form.shape[1]:], t), (stage, n)
        checked += 1
    assert checked == 2 * V + 2


@pytest.mark.parametrize("size, T", [(3, 100.0), (10, 100.0), (10, 25.2), (10, 24.0), (13, 100.0), (13, 36.0)])
def test_float64_forms_contain_the_float64_forward_pass(size, T):
    c = TwoToken(Vocabulary.letters(size), inverse_temperature=T)
    forms = traced_forms(c, "float64")
    rng = np.random.default_rng(size)
    tasks = c.random_tasks(rng, 4)
    witness_tasks, _ = leakage_witnesses(c)
    tasks = np.concatenate([tasks, witness_tasks[:: size][-3:]])
    for task in tasks:
        for u0, u1 in [(0, size - 1), (size - 1, 0), (1, 1)]:
            x = embed(c.spec, c.prompt_tokens(np.array([[u0, u1]])), c.virtual_tokens(task[None]), (0,))
            cache = {}
            forward(c.spec, x, NUMPY, cache)
            states = [cache[f"blocks.{l}.resid_post"][0] for l in range(c.spec.n_layers)]
            check_trace(c, forms, task, u0, u1, states)


def exact_forward(spec, virtual_exact, tokens):
    """The forward pass in high precision (the real-number model), object arrays of mpf; call
    inside ``mpmath.workdps``."""
    mpf = np.vectorize(mpmath.mpf, otypes=[object])
    x = mpf(spec.W_E[tokens] + 0.0)
    x[0] = virtual_exact
    x = x + mpf(spec.W_pos[: len(tokens)])
    mask = attention_mask(spec, len(tokens))
    states = []
    relu = np.vectorize(lambda v: v if v > 0 else mpmath.mpf(0), otypes=[object])
    expo = np.vectorize(mpmath.exp, otypes=[object])
    for block in spec.blocks:
        attn = block.attention
        for h in range(attn.n_heads):
            q = x @ mpf(attn.W_Q[h]) + mpf(attn.b_Q[h])
            k = x @ mpf(attn.W_K[h]) + mpf(attn.b_K[h])
            v = x @ mpf(attn.W_V[h]) + mpf(attn.b_V[h])
            s = (q @ k.T) * mpmath.mpf(spec.attention_scale)
            e = np.where(mask, expo(s), mpmath.mpf(0))
            pattern = e / e.sum(axis=1, keepdims=True)
            x = x + (pattern @ v) @ mpf(attn.W_O[h])
        if attn.n_heads:
            x = x + mpf(attn.b_O)
        if block.mlp is not None:
            m = block.mlp
            x = x + relu(x @ mpf(m.W_in) + mpf(m.b_in)) @ mpf(m.W_out) + mpf(m.b_out)
        states.append(x)
    return states


def contained_mp(form, row, value, t):
    c, g, r = form.c[row].ravel(), form.g[row].ravel(), form.r[row].ravel()
    tt = mpmath.mpf(t.numerator) / t.denominator
    return all(abs(vi - ci - gi * tt) <= ri + mpmath.mpf(10) ** -45
               for ci, gi, ri, vi in zip(c, g, r, np.asarray(value).ravel()))


@pytest.mark.parametrize("size, T", [(3, 6.0), (4, 9.0), (3, 3.0)])  # near, and below, T*
def test_real_forms_contain_the_exact_forward_pass(size, T):
    c = TwoToken(Vocabulary.letters(size), inverse_temperature=T)
    forms = traced_forms(c, "real")
    with mpmath.workdps(60):
        check_exact_trace(c, forms, size)


def check_exact_trace(c, forms, V):
    for task in c.random_tasks(np.random.default_rng(7), 3):
        codes = row_codes(task[None])[0]
        virtual = np.zeros(c.layout.width, dtype=object)
        virtual[:] = mpmath.mpf(0)
        for i in range(V):
            virtual[c.layout.index("map", i)] = mpmath.mpf(int(codes[i])) / V**V
        for u0, u1 in [(0, V - 1), (V - 1, V - 1)]:
            states = exact_forward(c.spec, virtual, np.array([0, u0, u1]))
            code, y = int(codes[u0]), int(task[u0, u1])
            chain = u1 * V + y
            for stage, n, rows, bands, form in forms:
                if stage == "front":
                    assert contained_mp(form, u0 * V + u1, states[0], Fraction(code, V**V))
                elif stage == "final":
                    assert contained_mp(form, chain, states[2 * V + 1][-form.shape[1]:], Fraction(0))
                else:
                    row = int(np.flatnonzero((rows == chain) & (bands == task[u0, n]))[0])
                    block = 1 + 2 * n if stage == "ramp" else 2 + 2 * n
                    t = Fraction(code % V ** (V - n), V ** (V - n))
                    assert contained_mp(form, row, states[block][-form.shape[1]:], t), (stage, n)


# --- bad input ------------------------------------------------------------------------------

def test_non_total_map_is_rejected(ten):
    mapping = {a + b: "A" for a in LETTERS10.symbols for b in LETTERS10.symbols}
    del mapping["CD"]
    with pytest.raises(ConstructionError, match="not total.*'CD'"):
        ten.parse_task(mapping)
    with pytest.raises(ConstructionError, match="pair"):
        ten.parse_task({**mapping, "CD": "A", "CDE": "A"})
    with pytest.raises(ConstructionError, match="one symbol"):
        ten.parse_task({**mapping, "CD": "AB"})
    with pytest.raises(ConstructionError, match="JSON object"):
        ten.parse_task(["AB"])


def test_vocabulary_too_large_for_float64_is_rejected():
    with pytest.raises(ConstructionError, match="too large for float64.*largest exact V is 13"):
        TwoToken(Vocabulary.letters(14))
    with pytest.raises(ConstructionError, match="positive"):
        TwoToken(LETTERS10, inverse_temperature=0.0)
    with pytest.raises(ConstructionError, match="ramp_width"):
        TwoToken(LETTERS10, ramp_width=1.5)


def test_certificate_reports_a_spec_of_the_wrong_shape(ten):
    other = TwoToken(Vocabulary.letters(9)).spec
    result = certify_two_token(ten, other)
    assert not result.holds and "V = 9" in result.reason


# --- parity and round trip ------------------------------------------------------------------

def test_torch_parity(ten):
    rng = np.random.default_rng(3)
    tasks = ten.random_tasks(rng, 16)
    users = rng.integers(0, 10, size=(16, 2))
    tokens = ten.prompt_tokens(users)
    virtual = ten.virtual_tokens(tasks)
    ours = logits(ten.spec, forward(ten.spec, embed(ten.spec, tokens, virtual, (0,))))
    module = SpecTransformer(ten.spec)
    with torch.no_grad():
        theirs = module(module.embed_tokens(torch.from_numpy(tokens), torch.from_numpy(virtual), (0,))).numpy()
    assert np.max(np.abs(ours - theirs)) <= 1e-12


def test_params_round_trip(ten):
    again = TwoToken.from_params(ten.params())
    assert again.params() == ten.params()
    assert all(np.array_equal(a, b) for a, b in zip(again.spec.named_arrays().values(),
                                                    ten.spec.named_arrays().values()))
