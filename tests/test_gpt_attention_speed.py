"""The training GPT's attention was made faster (issue 12) without changing a single bit:

    plain:  S = masked_fill((q k^T) / sqrt(d_head), causal mask, -inf);  A = softmax(S);  y = A v
    fast:   S = (additive_mask + alpha q k^T) / divisor, in one baddbmm kernel (gpt._score_scaling)

Folding 1 / sqrt(d_head) into the product is exact only when sqrt(d_head) is a power of two;
otherwise the division is kept. These tests compare the module's forward and gradients with the
plain formula (written out here as the oracle), in eval and train mode, with and without a
prepended memory, for head sizes of both kinds; and show that folding a non-power-of-two scale
WOULD change bits (so the exactness condition is doing work)."""

import math

import pytest
import torch
from torch.nn import functional as F

from verify.experiments.gpt import CausalSelfAttention, GPTConfig, _score_scaling


def plain_attention(module: CausalSelfAttention, u: torch.Tensor, memory: torch.Tensor | None) -> torch.Tensor:
    """The formulation the records were first trained with (before issue 12's speed work)."""
    B, T, d = u.shape
    q, k, v = module.c_attn(u).split(d, dim=2)
    M = 0
    if memory is not None:
        M = memory.shape[0]
        _, k_mem, v_mem = module.c_attn(memory).split(d, dim=1)
        k = torch.cat([k_mem.unsqueeze(0).expand(B, -1, -1), k], dim=1)
        v = torch.cat([v_mem.unsqueeze(0).expand(B, -1, -1), v], dim=1)
    q, k, v = (z.view(B, z.shape[1], module.n_head, d // module.n_head).transpose(1, 2) for z in (q, k, v))
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, H, T, M + T)
    scores = scores.masked_fill(~module.mask[M:M + T, :M + T], float("-inf"))
    att = F.softmax(scores, dim=-1)
    y = module.attn_dropout(att) @ v
    y = y.transpose(1, 2).contiguous().view(B, T, d)
    return module.resid_dropout(module.c_proj(y))


@pytest.mark.parametrize("d_head", [1, 2, 4, 8, 16, 32, 64, 96, 100, 256])
def test_the_scale_is_folded_exactly_when_sqrt_d_head_is_a_power_of_two(d_head):
    alpha, divisor = _score_scaling(d_head)
    root = math.sqrt(d_head)
    if d_head in (1, 4, 16, 64, 256):
        assert (alpha, divisor) == (1.0 / root, 1.0)
        assert alpha * root == 1.0
    else:
        assert (alpha, divisor) == (1.0, root)


@pytest.mark.parametrize("n_embd,n_head", [(64, 4), (96, 1), (128, 4), (16, 2), (64, 1)])
@pytest.mark.parametrize("memory_rows", [0, 7])
@pytest.mark.parametrize("training", [False, True])
def test_attention_equals_the_plain_formula_bit_for_bit(n_embd, n_head, memory_rows, training):
    config = GPTConfig(n_embd=n_embd, n_head=n_head, block_size=40, dropout=0.1)
    torch.manual_seed(0)
    module = CausalSelfAttention(config).train(training)
    g = torch.Generator().manual_seed(1)
    u = torch.randn(5, 40 - memory_rows, n_embd, generator=g, requires_grad=True)  # (B, T, d)
    memory = torch.randn(memory_rows, n_embd, generator=g, requires_grad=True) if memory_rows else None
    inputs = (u,) if memory is None else (u, memory)
    outputs = []
    for run in (lambda: module(u, memory), lambda: plain_attention(module, u, memory)):
        torch.manual_seed(2)  # the same dropout masks for both
        y = run()
        grads = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(),
                                    (*inputs, *module.parameters()))
        outputs.append((y.detach(), grads))
    (fast, fast_grads), (plain, plain_grads) = outputs
    assert torch.equal(fast, plain)
    assert all(torch.equal(a, b) for a, b in zip(fast_grads, plain_grads))


def test_folding_a_scale_that_is_not_a_power_of_two_would_change_bits():
    """The control of the exactness condition: with d_head = 96, multiplying the product by the
    rounded 1 / sqrt(96) differs from dividing by sqrt(96) somewhere on a random instance."""
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(64, 31, 96, generator=g), torch.randn(64, 31, 96, generator=g)
    divided = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(96)
    folded = torch.baddbmm(torch.zeros(31, 31), q, k.transpose(1, 2), alpha=1 / math.sqrt(96))
    assert not torch.equal(divided, folded)
