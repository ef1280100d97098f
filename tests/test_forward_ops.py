"""The forward pass asks its ops only for what the spec needs: ops without norms, RoPE or
prefixes (the interval certificates) are refused by name on a spec that uses them."""

from __future__ import annotations

import numpy as np
import pytest

from constructions.errors import PromptproofError
from constructions.forward import NUMPY, ArchitectureOps, PrefixKV, embed, forward, logits
from constructions.spec import Block, Norm, TransformerSpec
from tests.test_spec_and_forward import random_spec
from verify.certificates.interval import Box, IntervalOps


def with_norms(spec: TransformerSpec, final: bool = False) -> TransformerSpec:
    d = spec.d_model
    blocks = [Block(b.attention, b.mlp, Norm.build(d, "layernorm"), None) for b in spec.blocks]
    return TransformerSpec.build(spec.W_E, spec.W_pos, blocks, spec.W_U, spec.b_U,
                                 attention_scale=spec.attention_scale, causal=spec.causal,
                                 **({"ln_final": Norm.build(d, "rmsnorm")} if final else {}))


def test_numpy_ops_have_the_architecture_and_interval_ops_do_not() -> None:
    assert isinstance(NUMPY, ArchitectureOps)
    assert not isinstance(IntervalOps(), ArchitectureOps)


def test_interval_ops_run_a_plain_spec_and_refuse_norms_and_prefixes() -> None:
    spec = random_spec(0, layers=1)
    x = embed(spec, np.zeros((1, 3), dtype=int))
    box = forward(spec, Box.point(x), IntervalOps())
    assert np.all(box.lo <= forward(spec, x)) and np.all(forward(spec, x) <= box.hi)
    with pytest.raises(PromptproofError, match="IntervalOps cannot run norms, RoPE, GELU or prefixes"):
        forward(with_norms(spec), Box.point(x), IntervalOps())
    head = spec.blocks[0].attention
    prefix = [PrefixKV(np.zeros((head.n_heads, 1, head.W_K.shape[-1])), np.zeros((head.n_heads, 1, head.W_V.shape[-1])))]
    with pytest.raises(PromptproofError, match="cannot run norms"):
        forward(spec, Box.point(x), IntervalOps(), prefix=prefix)


def test_a_final_norm_needs_architecture_ops_too() -> None:
    spec = with_norms(random_spec(1, layers=1), final=True)
    x = embed(spec, np.zeros((1, 3), dtype=int))
    resid = forward(spec, x)
    assert logits(spec, resid).shape == (1, 3, spec.vocab_size)
    with pytest.raises(PromptproofError, match=r"cannot run the final norm \(ln_final\)"):
        logits(spec, Box.point(resid), IntervalOps())
