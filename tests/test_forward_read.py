"""The read-row path of the forward pass (``forward(..., read=)``) equals the full forward at the
read positions, and the certificates built on it (one pass over a shared cover, the readout-bias
certificate from kept residual boxes) equal the certificates computed one by one."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.errors import PromptproofError
from constructions.forward import PrefixKV, forward
from constructions.petrov.conditional import Conditional
from constructions.petrov.long_response import LongResponse
from constructions.petrov.unconditional import Unconditional
from constructions.spec import Block, MLP, Norm, TransformerSpec, no_attention
from constructions.vocab import Vocabulary
from theorems.strategies import seeds
from verify.certificates import certify_constructions
from verify.certificates.cover import certify, certify_readout, certify_specs
from verify.certificates.interval import INTERVAL, Box, logit_margins
from verify.checks.petrov_sec3 import perturbed_readout

from tests.test_spec_and_forward import random_spec


def _full_at(spec, x, read, **kwargs):
    return forward(spec, x, **kwargs)[np.arange(len(read)), read]


@settings(max_examples=30, deadline=None)
@given(seed=seeds(), causal=st.booleans(), heads=st.integers(1, 3), layers=st.integers(1, 3),
       batch=st.integers(2, 9))
def test_read_rows_equal_the_full_forward_bit_for_bit(seed, causal, heads, layers, batch):
    """Random dense weights, random inputs and read positions: the same float64 values."""
    spec = random_spec(seed, heads=heads, layers=layers, causal=causal)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, spec.n_ctx, spec.d_model))
    read = rng.integers(0, spec.n_ctx, size=batch)
    fast = forward(spec, x, read=read)
    assert fast.shape == (batch, 1, spec.d_model)
    assert np.array_equal(fast[:, 0], _full_at(spec, x, read))


@settings(max_examples=15, deadline=None)
@given(seed=seeds(), n_prefix=st.integers(1, 3))
def test_read_rows_with_a_prefix_norms_and_rope_equal_the_full_forward(seed, n_prefix):
    base = random_spec(seed, layers=2, d=8, heads=2, d_head=4)
    rng = np.random.default_rng(seed)
    norm = Norm.build(8, "layernorm", rng.normal(size=8), rng.normal(size=8))
    blocks = [Block(b.attention, b.mlp, ln1=norm, ln2=norm) for b in base.blocks]
    spec = TransformerSpec.build(base.W_E, base.W_pos, blocks, base.W_U, base.b_U, base.attention_scale,
                                 True, rotary_base=10_000.0)
    prefix = [PrefixKV(rng.normal(size=(2, n_prefix, 4)), rng.normal(size=(2, n_prefix, 4))) for _ in blocks]
    x = rng.normal(size=(4, spec.n_ctx, 8))
    read = rng.integers(0, spec.n_ctx, size=4)
    positions = np.arange(n_prefix, n_prefix + spec.n_ctx)
    fast = forward(spec, x, prefix=prefix, positions=positions, read=read)[:, 0]
    assert np.array_equal(fast, _full_at(spec, x, read, prefix=prefix, positions=positions))


def test_read_rows_of_an_mlp_only_last_block():
    base = random_spec(5, layers=1)
    spec = TransformerSpec.build(base.W_E, base.W_pos, [*base.blocks, Block(no_attention(base.d_model), base.blocks[0].mlp)],
                                 base.W_U, base.b_U, base.attention_scale, True)
    x = np.random.default_rng(5).normal(size=(3, spec.n_ctx, spec.d_model))
    read = np.array([0, 6, 3])
    assert np.array_equal(forward(spec, x, read=read)[:, 0], _full_at(spec, x, read))


def test_bad_read_positions_are_refused():
    spec = random_spec(0)
    x = np.zeros((2, spec.n_ctx, spec.d_model))
    for read in (np.array([0]), np.array([0, spec.n_ctx]), np.array([-1, 0])):
        with pytest.raises(PromptproofError, match="read"):
            forward(spec, x, read=read)


# --- interval boxes: the constructions' certificates ---------------------------------------------

def _small_vocab() -> Vocabulary:
    return Vocabulary.letters(7)


def _constructions(T=None):
    vocab = _small_vocab()
    kw = {} if T is None else {"inverse_temperature": T}
    return [Unconditional(vocab, length=5, **kw), Conditional(vocab, **kw), LongResponse(vocab, response_length=4, **kw)]


@pytest.mark.parametrize("T", [None, 3.0, 12.0])
def test_interval_read_rows_equal_the_full_interval_forward(T):
    """Every batch of every cover: the read path's residual box at the read position and the
    certified margins are the full forward's, bit for bit (also near and below the threshold)."""
    for construction in _constructions(T):
        spec = construction.spec
        for batch in construction.certificate_cases(16):
            rows = np.arange(len(batch.expected))
            full = forward(spec, Box(batch.x_lo, batch.x_hi), INTERVAL)[rows, batch.read_position]
            fast = forward(spec, Box(batch.x_lo, batch.x_hi), INTERVAL, read=batch.read_position)[:, 0]
            assert np.array_equal(full.lo, fast.lo) and np.array_equal(full.hi, fast.hi)
            a, b = (logit_margins(box, spec.W_U, spec.b_U, batch.expected) for box in (full, fast))
            assert np.array_equal(a.lo, b.lo, equal_nan=True)


def _same(a, b) -> bool:
    return (a.cases == b.cases and a.failing == b.failing and a.worst_margin == b.worst_margin
            and np.array_equal(a.worst_case, b.worst_case) and a.worst_competitor == b.worst_competitor
            and len(a.failing_examples) == len(b.failing_examples)
            and all(np.array_equal(x, y) for x, y in zip(a.failing_examples, b.failing_examples)))


def _reference_certify(construction, spec, keep_failures):
    """The certificate computed the old way: the full interval forward, the read row taken after."""
    from verify.certificates.cover import CoverCertificate

    result = CoverCertificate()
    for batch in construction.certificate_cases(256):
        rows = np.arange(len(batch.expected))
        resid = forward(spec, Box(batch.x_lo, batch.x_hi), INTERVAL)
        result.add(resid[rows, batch.read_position], spec, batch.expected, batch.labels, keep_failures)
    return result


@pytest.mark.parametrize("index", [0, 1, 2])
def test_one_pass_over_a_shared_cover_equals_separate_certificates(index):
    """The construction at T, just above and below its threshold (one holds, one fails): one
    pass over the cover gives each the certificate it gets alone, and the full-forward one."""
    builds = [_constructions(T)[index] for T in (None, 2.0, 30.0)]
    together = certify_constructions(builds, keep_failures=20)
    for construction, result in zip(builds, together):
        assert _same(result, certify(construction, keep_failures=20))
        assert _same(result, _reference_certify(construction, construction.spec, 20))
    assert {r.holds for r in together} == {True, False}  # the comparison covers both outcomes


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("factor", [0.5, 2.0, 40.0])
def test_the_readout_certificate_equals_a_second_pass(index, factor):
    construction = _constructions()[index]
    first = certify_specs(construction, [construction.spec], keep_failures=20, keep_readout=True)[0]
    token = int(first.worst_competitor)
    spec = perturbed_readout(construction.spec, token, factor * first.worst_margin)
    assert _same(certify_readout(first, spec, keep_failures=20), certify(construction, spec, keep_failures=20))


def test_the_readout_certificate_refuses_other_weights():
    construction = _constructions()[1]
    first = certify_specs(construction, [construction.spec], keep_readout=True)[0]
    other = _constructions(7.0)[1].spec  # another W_Q
    with pytest.raises(ValueError, match="beyond the unembedding bias"):
        certify_readout(first, other)
    with pytest.raises(ValueError, match="kept no readout"):
        certify_readout(certify(construction), construction.spec)


def test_the_verification_chunk_changes_no_prediction():
    """responds_correctly's chunk only batches rows: the logits of every row are bit-identical."""
    from constructions.forward import embed, logits

    construction = Unconditional(Vocabulary.printable_ascii())
    spec = construction.spec
    targets = construction.random_tasks(np.random.default_rng(1), 600)
    no_user = np.zeros((600, 0), dtype=np.int64)
    tokens = np.concatenate([construction.prompt_tokens(no_user), targets[:, :-1]], axis=1)
    x = embed(spec, tokens, construction.virtual_tokens(targets), construction.virtual_positions)
    whole = logits(spec, forward(spec, x))
    parts = np.concatenate([logits(spec, forward(spec, x[s : s + 256])) for s in range(0, 600, 256)])
    assert np.array_equal(whole, parts)
    assert np.array_equal(construction.responds_correctly(targets, no_user, chunk=256),
                          construction.responds_correctly(targets, no_user, chunk=1024))


def test_bench_counts_the_products_the_verification_runs():
    from verify.bench.constructions import verification_products

    construction = Unconditional(Vocabulary.printable_ascii())
    targets = construction.random_tasks(np.random.default_rng(0), 300)
    counted = verification_products(construction, targets)
    assert counted.products and counted.flops > 0
    # twice the targets, twice the work (the same products per row)
    assert verification_products(construction, np.concatenate([targets, targets])).flops == 2 * counted.flops
