"""A small GPT (minGPT-like, one file) with the four ways of adapting it that Petrov et al. compare.

Architecture (as the companion code's minGPT, Sec. 1.3 of the paper notes):
    h_0      = E_tok[x] + E_pos[0..T-1]                       (B, T, d)
    for each block l:
        u    = input of attention: h_{l-1}, with the prefix rows replaced (prefix-tuning)
        h    = h_{l-1} + Attn( LN1(u) )                        causal, heads summed via c_proj
        h_l  = h + MLP( LN2(h) ),  MLP(z) = c_proj(GELU(c_fc(z))),  width 4d
    logits   = lm_head( LN_f(h_L) )                            (B, T, V), no bias
Attention per head: A = softmax(q k^T / sqrt(d_head) + causal mask), t = A v. q, k, v come from one
Linear ``c_attn`` with bias; ``c_proj`` with bias. Dropout (embedding, attention, residual) is
active only in ``train()`` mode. Init N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 L)).

Adaptation methods (only the adapter's parameters are trainable, except for full fine-tuning):
  * soft prompt: the block-1 input at the n_S prefix positions is replaced by learned vectors
    s_1..s_{n_S} in R^d (input-embedding replacement, LLaMA ``virtual_tokens``); deeper layers
    compute the prefix activations normally. Parameters n_S * d.
  * prefix: in EVERY layer l, the attention input at the prefix positions is replaced by learned
    s^(l)_1..s^(l)_{n_S}; the residual stream at those positions keeps the dummy-token
    activations. Parameters L * n_S * d. (In a 1-layer model the two coincide on content outputs.)
  * LoRA of rank r on every nn.Linear whose qualified name contains one of the target substrings:
    W' = W + (alpha / r) B A, A (r, in) kaiming-uniform, B (out, r) zero (minLoRA).
    Parameters r * (in + out) per wrapped Linear. Default targets ("c_proj", "c_fc") = the paper's:
    attn.c_proj, mlp.c_fc and mlp.c_proj.
  * full fine-tuning: every weight.
The prefix positions hold the dummy token 0 in the input, as in the companion code.

``prefix_mode`` "prepend" (ours, for prefixes longer than the dummy positions a model was pretrained
with): the n_S prefix rows are put IN FRONT of the attention input instead of replacing its first
rows, u = [s_1; ...; s_{n_S}; h_{l-1}] (B, n_S + T, d), and only the last T output rows are kept; a
soft prompt likewise adds n_S rows in front of the block-1 input that run through every layer and
are dropped before the head. Content positions keep their position embeddings 0..T-1, and the
sequence needs no dummy tokens. For content rows the two modes compute the same function of the
prefix rows (the rows of a replaced prefix never reach content except through their keys and
values); only the content position ids differ (test: equal logits when E_pos = 0).
Since only the content rows' outputs are kept, a prepended prefix enters attention as *memory*:
its rows give keys and values, K = [LN1(S) W_K; LN1(h) W_K], V = [LN1(S) W_V; LN1(h) W_V], and no
queries, so the prefix rows cost no query, no output row and no (n_S x n_S) block of scores
(the paper's prefix-tuning in its key/value form, as peft's past_key_values). The attention pattern
of such a layer is (B, H, T, n_S + T): content queries, then prefix keys first.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

PAPER_LORA_TARGETS: tuple[str, ...] = ("c_proj", "c_fc")


@dataclass(frozen=True)
class GPTConfig:
    """Model sizes. ``block_size`` = 2 * 10 - 1 + n_prefix for the digit tasks."""

    vocab_size: int = 10
    block_size: int = 20
    n_layer: int = 1
    n_head: int = 1
    n_embd: int = 96
    dropout: float = 0.1
    skip_layer_norm: bool = False  # ln_1 = identity (notebook 02)
    prefix_mode: str = "replace"  # "replace" (companion code) | "prepend" (rows in front; module docstring)

    def __post_init__(self) -> None:
        if self.prefix_mode not in ("replace", "prepend"):
            raise ValueError(f"prefix_mode must be 'replace' or 'prepend', got {self.prefix_mode!r}")

    def to_json(self) -> dict:
        return asdict(self)


class LoRALinear(nn.Module):
    """y = x W^T + b + (alpha / r) x A^T B^T: a frozen Linear plus a rank-r update B A."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 1.0) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        like = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **like))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **like))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * (x @ self.lora_A.T) @ self.lora_B.T


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention; the last pattern is kept in ``self.pattern`` when asked."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        mask = torch.tril(torch.ones(config.block_size, config.block_size, dtype=torch.bool))
        self.register_buffer("mask", mask, persistent=False)
        # 0 where a query may see a key, -inf elsewhere: adding it is exactly masked_fill(-inf)
        self.register_buffer("additive_mask", torch.zeros(mask.shape).masked_fill(~mask, float("-inf")),
                             persistent=False)
        self.scale_first, self.divisor = _score_scaling(config.n_embd // config.n_head)
        self.keep_pattern = False
        self.pattern: torch.Tensor | None = None

    def forward(self, u: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """u (B, T, d) -> (B, T, d). ``memory`` (M, d): rows in front of u that every row of u
        attends to and that give keys and values only (a prepended prefix, after LN1); then the
        scores are (B, H, T, M + T), row i seeing the M memory keys and keys 0..i of u."""
        B, T, d = u.shape
        q, k, v = self.c_attn(u).split(d, dim=2)  # each (B, T, d)
        M = 0
        if memory is not None:
            M = memory.shape[0]
            _, k_mem, v_mem = self.c_attn(memory).split(d, dim=1)  # each (M, d)
            k = torch.cat([k_mem.unsqueeze(0).expand(B, -1, -1), k], dim=1)  # (B, M + T, d)
            v = torch.cat([v_mem.unsqueeze(0).expand(B, -1, -1), v], dim=1)  # (B, M + T, d)
        H, dh = self.n_head, d // self.n_head
        q, k, v = (z.view(B, z.shape[1], H, dh).transpose(1, 2).reshape(B * H, z.shape[1], dh)
                   for z in (q, k, v))  # (B H, T, dh), (B H, M + T, dh), (B H, M + T, dh)
        # one kernel: mask + scale_first * q k^T, then / divisor (module docstring of _score_scaling)
        scores = torch.baddbmm(self.additive_mask[M:M + T, :M + T], q, k.transpose(1, 2),
                               alpha=self.scale_first)  # (B H, T, M + T)
        if self.divisor != 1.0:
            scores = scores / self.divisor
        att = F.softmax(scores, dim=-1)  # (B H, T, M + T)
        if self.keep_pattern:
            self.pattern = att.detach().view(B, H, T, M + T)
        y = torch.bmm(self.attn_dropout(att), v)  # (B H, T, dh)
        y = y.view(B, H, T, dh).transpose(1, 2).contiguous().view(B, T, d)  # heads side by side
        return self.resid_dropout(self.c_proj(y))


def _score_scaling(d_head: int) -> tuple[float, float]:
    """How the scores q k^T / sqrt(d_head) are formed, bit for bit the same either way:
    (alpha, divisor) with scores = (mask + alpha q k^T) / divisor. When sqrt(d_head) is a power of
    two, multiplying by alpha = 1 / sqrt(d_head) inside the product is exact (only the exponent
    changes), so the division is folded into the matmul kernel (alpha, 1); otherwise the rounded
    reciprocal would not be, and the division stays a division: (1, sqrt(d_head)). Adding the
    additive mask (0 or -inf) before the division is exact too: x + 0 = x and -inf / c = -inf."""
    root = math.sqrt(d_head)
    if root == 2.0 ** round(math.log2(root)):
        return 1.0 / root, 1.0
    return 1.0, root


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.prepend = config.prefix_mode == "prepend"
        self.ln_1 = nn.Identity() if config.skip_layer_norm else nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, h: torch.Tensor, prefix: torch.Tensor | None) -> torch.Tensor:
        """h (B, T, d); prefix (n_S, d) or None: the attention input's first n_S rows become the
        prefix ("replace"), or the prefix rows go in front of it ("prepend")."""
        if prefix is None:
            h = h + self.attn(self.ln_1(h))
        elif self.prepend:  # u = [prefix; h], of whose outputs only the last T rows are kept
            h = h + self.attn(self.ln_1(h), memory=self.ln_1(prefix))
        else:
            n = prefix.shape[0]
            u = torch.cat([prefix.unsqueeze(0).expand(h.shape[0], -1, -1), h[:, n:, :]], dim=1)  # (B, T, d)
            h = h + self.attn(self.ln_1(u))
        return h + self.mlp(self.ln_2(h))


class GPT(nn.Module):
    """The model; ``soft_prompt`` (n_S, d) and ``prefix`` (L, n_S, d) are None until added."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.soft_prompt: nn.Parameter | None = None
        self.prefix: nn.Parameter | None = None
        self.apply(_init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, V)."""
        B, T = idx.shape
        h = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))  # (B, T, d)
        n_soft = 0
        if self.soft_prompt is not None:
            n = self.soft_prompt.shape[0]
            soft = self.soft_prompt.unsqueeze(0).expand(B, -1, -1)  # (B, n_S, d)
            if self.config.prefix_mode == "prepend":
                h, n_soft = torch.cat([soft, h], dim=1), n  # (B, n_S + T, d)
            else:
                h = torch.cat([soft, h[:, n:, :]], dim=1)
        h = self.drop(h)
        for layer, block in enumerate(self.blocks):
            h = block(h, None if self.prefix is None else self.prefix[layer])
        return self.lm_head(self.ln_f(h[:, n_soft:, :]))  # (B, T, V)

    def attention_patterns(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """One attention pattern per layer for ``idx`` (eval mode, no grad): (B, H, T, T); in
        "prepend" mode with a soft prompt (B, H, n_S + T, n_S + T) (its rows first), with a prefix
        (B, H, T, n_S + T) (content queries; the prefix keys first)."""
        attns = [block.attn for block in self.blocks]
        for a in attns:
            a.keep_pattern = True
        try:
            with torch.no_grad():
                self(idx)
            return [a.pattern for a in attns]
        finally:
            for a in attns:
                a.keep_pattern, a.pattern = False, None


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# --- adaptation --------------------------------------------------------------------------------

def freeze(model: GPT) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def add_prefix(model: GPT, n_prefix: int, generator: torch.Generator) -> nn.Parameter:
    """Freeze the model and add a prefix (L, n_S, d) ~ N(0, 1) (companion code's torch.randn)."""
    freeze(model)
    c = model.config
    w = model.wte.weight
    values = torch.randn(c.n_layer, n_prefix, c.n_embd, generator=generator, dtype=w.dtype)  # drawn on the CPU
    model.prefix = nn.Parameter(values.to(w.device))
    return model.prefix


def add_soft_prompt(model: GPT, n_prefix: int, generator: torch.Generator) -> nn.Parameter:
    """Freeze the model and add a soft prompt (n_S, d) ~ N(0, 1) replacing the block-1 input."""
    freeze(model)
    w = model.wte.weight
    values = torch.randn(n_prefix, model.config.n_embd, generator=generator, dtype=w.dtype)  # drawn on the CPU
    model.soft_prompt = nn.Parameter(values.to(w.device))
    return model.soft_prompt


def without_prefix(model: GPT) -> GPT:
    """A copy of ``model`` with its prefix and soft prompt removed: the frozen model it was added to."""
    out = copy.deepcopy(model)
    out.prefix, out.soft_prompt = None, None
    return out


def add_lora(model: GPT, rank: int, targets: tuple[str, ...] = PAPER_LORA_TARGETS,
             alpha: float = 1.0) -> list[str]:
    """Freeze the model and wrap every Linear whose qualified name contains a target substring
    (lm_head included if named). Returns the wrapped names. A kaiming init of A uses torch's
    global generator: seed it (torch.manual_seed) before calling."""
    freeze(model)
    chosen = [name for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and any(t in name for t in targets)]
    if not chosen:
        raise ValueError(f"no Linear module matches {targets}")
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha))
    return chosen


def unfreeze_all(model: GPT) -> None:
    """Full fine-tuning: every weight trainable."""
    for p in model.parameters():
        p.requires_grad_(True)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """minGPT's optimizer groups: weight decay on Linear weights only (not biases, LN, embeddings);
    only trainable parameters."""
    decay, no_decay = [], []
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding: idx (B, T0) -> (B, new_tokens), each token argmax of the last logits."""
    for _ in range(new_tokens):
        logits = model(idx)[:, -1, :]  # (B, V)
        idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return idx[:, -new_tokens:]
