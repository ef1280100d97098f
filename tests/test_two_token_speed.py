"""Speed changes of petrov.thm2.two-token (issue 14) that must not change a single bit:
float32_accuracy on one torch thread, in chunks, gives the same logits as in one call on two; the parts of the claim
that call BLAS or torch give the same results inside ``one_thread`` as outside; the certificate's
nextafter by integer arithmetic equals np.nextafter; its column-restricted linear, add and join give
the same forms, bit for bit, as the dense versions, on the construction and on edited weights; a
spec that differs only in the readout reuses the forms before it and gets the fresh certificate."""

import dataclasses

import numpy as np
import pytest

import verify.certificates.two_token as two_token
from constructions.forward import embed, forward, logits
from constructions.petrov.two_token import TwoToken
from constructions.spec import MLP, Block, TransformerSpec
from constructions.vocab import Vocabulary
from verify.checks.petrov_sec3 import (
    FLOAT32_CHUNK,
    FLOAT32_VOCABS,
    causal_mask_leak,
    float32_logits,
    one_thread,
    perturbed_readout,
    torch_parity,
)


def test_float32_logits_do_not_depend_on_chunks():
    """The claim's chunks of FLOAT32_CHUNK sequences against one call, every V of the claim."""
    for vocab_size in FLOAT32_VOCABS:
        (fast, want), (whole, _) = float32_logits(vocab_size), float32_logits(vocab_size, chunk=None)
        assert fast.dtype == np.float32 and fast.shape == (len(want), 3, vocab_size)
        assert len(want) > FLOAT32_CHUNK or vocab_size < 7
        assert np.array_equal(fast.view(np.uint32), whole.view(np.uint32)), vocab_size


@pytest.mark.slow  # two threads on the shared machine: ~15 s
def test_float32_logits_do_not_depend_on_threads_or_chunks():
    """The claim's configuration (one thread, chunks) against the former one (one call on two
    threads), every V of the claim."""
    for vocab_size in FLOAT32_VOCABS:
        fast, whole = float32_logits(vocab_size)[0], float32_logits(vocab_size, threads=2, chunk=None)[0]
        assert np.array_equal(fast.view(np.uint32), whole.view(np.uint32)), vocab_size


def test_the_threaded_parts_of_the_claim_do_not_depend_on_one_thread():
    construction = TwoToken(Vocabulary.letters(10))

    def parts():
        rng = np.random.default_rng(0)
        certificate = dataclasses.asdict(two_token.certify_two_token(TwoToken(Vocabulary.letters(5))))
        certificate.pop("seconds")
        tasks, users = construction.random_tasks(rng, 2048), rng.integers(0, 10, size=(2048, 2))
        tokens = construction.prompt_tokens(users)
        x = embed(construction.spec, tokens, construction.virtual_tokens(tasks), construction.virtual_positions)
        return (repr(certificate), logits(construction.spec, forward(construction.spec, x)),
                repr((torch_parity(construction, rng), causal_mask_leak(construction.spec, rng))))

    outside = parts()
    with one_thread():
        inside = parts()
    assert inside[0] == outside[0] and inside[2] == outside[2]
    assert same_bits(inside[1], outside[1])


def same_bits(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all((a.view(np.int64) == b.view(np.int64)) | (np.isnan(a) & np.isnan(b))))


def test_up_and_down_are_nextafter_bit_for_bit():
    rng = np.random.default_rng(0)
    info = np.finfo(np.float64)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 5e-324, -5e-324, info.max, -info.max,
                        info.tiny, -info.tiny, 1.0, -1.0, 0.5, -2.0])
    patterns = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=200_000, dtype=np.int64)
    random = patterns.view(np.float64)
    finite = random[np.isfinite(random)]  # the fast path (no inf or NaN in the array)
    scaled = rng.normal(size=(50, 3, 7)) * np.exp(rng.normal(size=(50, 3, 7)) * 30)  # zeros, subnormals
    with np.errstate(all="ignore"):
        for x in (special, random, finite, scaled, np.abs(finite), np.zeros(4), -np.zeros(4), np.float64(-0.0)):
            assert same_bits(two_token._up(x), np.nextafter(x, np.inf))
            assert same_bits(two_token._down(x), np.nextafter(x, -np.inf))


class DenseOps(two_token.AffineOps):
    """The reference: every op over every entry."""

    def linear(self, x, W, b):
        return self.linear_dense(x, W, b)

    def add(self, x, y):
        return self.add_dense(x, y)


def certificate_and_forms(construction, spec, arithmetic, ops, monkeypatch):
    monkeypatch.setattr(two_token, "AffineOps", ops)
    if ops is DenseOps:
        monkeypatch.setattr(two_token, "join", two_token.join_dense)
    forms = []
    result = two_token.certify_two_token(construction, spec, arithmetic, trace=lambda *args: forms.append(args[-1]))
    monkeypatch.undo()
    fields = dataclasses.asdict(result)
    fields.pop("seconds")
    return repr(fields), forms


def edited(spec, index, edit):
    block = spec.blocks[index]
    arrays = [np.array(a, dtype=np.float64) for a in (block.mlp.W_in, block.mlp.W_out, block.mlp.b_in, block.mlp.b_out)]
    edit(*arrays)
    blocks = list(spec.blocks)
    blocks[index] = Block(block.attention, MLP.build(spec.d_model, *arrays))
    return TransformerSpec.build(spec.W_E, spec.W_pos, blocks, spec.W_U, spec.b_U, spec.attention_scale,
                                 spec.causal, spec.subspaces)


def edits(construction):
    layout, rng = construction.layout, np.random.default_rng(1)
    rem1, digit1 = layout.index("rem", 1), layout.index("digit", 1)
    return {
        "dense W_in": lambda W_in, W_out, b_in, b_out: W_in.__iadd__(rng.normal(size=W_in.shape) * 1e-9),
        "dense W_out": lambda W_in, W_out, b_in, b_out: W_out.__iadd__(rng.normal(size=W_out.shape) * 1e-9),
        "one weight": lambda W_in, W_out, b_in, b_out: W_in.__setitem__((rem1, 0), W_in[rem1, 0] * 1.001),
        "a second row read": lambda W_in, W_out, b_in, b_out: W_in.__setitem__((layout.index("rem", 0), 0), 0.5),
        "a bias on an unread column": lambda W_in, W_out, b_in, b_out: b_out.__setitem__(layout.index("readout"), 0.25),
        "a huge weight": lambda W_in, W_out, b_in, b_out: W_in.__setitem__((rem1, 0), 1e300),
        "a huge output weight": lambda W_in, W_out, b_in, b_out: W_out.__setitem__((0, digit1), 1e200),
    }


@pytest.mark.parametrize("size, T, arithmetic", [(3, 100.0, "float64"), (5, 100.0, "float64"), (10, 100.0, "float64"),
                                                 (10, 24.0, "float64"), (4, 9.0, "real"), (3, 3.0, "real")])
def test_restricted_ops_give_the_dense_forms(size, T, arithmetic, monkeypatch):
    construction = TwoToken(Vocabulary.letters(size), T)
    for spec in (None, perturbed_readout(construction.spec, 1, 0.3)):
        fast = certificate_and_forms(construction, spec, arithmetic, two_token.AffineOps, monkeypatch)
        dense = certificate_and_forms(construction, spec, arithmetic, DenseOps, monkeypatch)
        assert fast[0] == dense[0]
        assert len(fast[1]) == len(dense[1]) > 2 * size
        for a, b in zip(fast[1], dense[1]):
            assert all(same_bits(getattr(a, k), getattr(b, k)) for k in ("c", "g", "r", "t_lo", "t_hi"))


def test_restricted_ops_give_the_dense_forms_on_edited_weights(monkeypatch):
    construction = TwoToken(Vocabulary.letters(5))
    verdicts = set()
    with np.errstate(all="ignore"):
        for name, edit in edits(construction).items():
            for index in (3, 4):  # digit 1's ramp and clean blocks
                spec = edited(construction.spec, index, edit)
                for arithmetic in ("float64", "real"):
                    fast = certificate_and_forms(construction, spec, arithmetic, two_token.AffineOps, monkeypatch)
                    dense = certificate_and_forms(construction, spec, arithmetic, DenseOps, monkeypatch)
                    assert fast[0] == dense[0], name
                    for a, b in zip(fast[1], dense[1]):
                        assert all(same_bits(getattr(a, k), getattr(b, k)) for k in ("c", "g", "r")), name
                    verdicts.add("holds" in fast[0] and "'holds': True" in fast[0])
    assert verdicts == {True, False}  # some edits break the certificate, some do not


def certificate_fields(result):
    fields = dataclasses.asdict(result)
    fields.pop("seconds")
    return repr(fields)


def test_a_readout_change_reuses_the_forms_and_gives_the_fresh_certificate():
    construction, cache = TwoToken(Vocabulary.letters(10)), two_token._cached_before_readout
    for amount in (0.3, 50.0):  # harmless, and breaking (the readout-bias control's two outcomes)
        perturbed = perturbed_readout(construction.spec, 1, amount)
        cache.cache_clear()
        fresh = certificate_fields(two_token.certify_two_token(construction, perturbed))
        cache.cache_clear()
        base = two_token.certify_two_token(construction)
        reused = certificate_fields(two_token.certify_two_token(construction, perturbed))
        assert cache.cache_info().hits == 1 and reused == fresh
        assert base.holds and ("'holds': True" in fresh) == (amount < base.worst_margin)
    other = edited(construction.spec, 3, edits(construction)["one weight"])
    two_token.certify_two_token(construction, other)  # other weights: another entry
    two_token.certify_two_token(construction, arithmetic="real")  # other arithmetic: another entry
    assert cache.cache_info().currsize == 3 and cache.cache_info().hits == 1


def test_the_mutation_runs_clear_the_cache_of_forms():
    from verify.mutants.core import clear_caches

    two_token.certify_two_token(TwoToken(Vocabulary.letters(3)))
    assert two_token._cached_before_readout.cache_info().currsize >= 1
    clear_caches()
    assert two_token._cached_before_readout.cache_info().currsize == 0
