"""Gradient search over actual prefixes of an actual attention layer: UPPER bounds on how well
prefix-tuning can imitate a fine-tuning update (petrov.sec4.rotation-not-a-bias).

The layer is ``torch.nn.MultiheadAttention(bias=False)`` -- PyTorch's attention, not ours -- with
fixed ("pretrained") weights, see ``LayerSpec``. One content token per query: the query token v
attends to [prefix positions; its own token], so without a prefix the layer outputs
W_O W_V v = v (W_O = W_V^T). Two ways of attaching a prefix of n_S positions:

    tied    one head, d_head = d. Prefix vectors s_1..s_n are the key AND value inputs: key
            W_K s_k, value W_V s_k (prefix-tuning as in Sec. 4 of the paper).
    untied  H heads, d_head = d / H. Separate key inputs s^K_k and value inputs s^V_k. Because
            W_K and W_V are invertible, (W_K s^K_k, W_V s^V_k) ranges over ALL per-head prefix
            keys and values: this is HF peft's prefix-tuning, which learns the per-head keys and
            values (past_key_values) directly; W_O then mixes the heads.

Several prefix lengths share one batch: unused prefix slots are masked out with an attention mask
(a masked key gets zero attention, so a length-n prefix in an n_max batch is exactly a length-n
prefix).

The search minimises, for every configuration (target x prefix length) and every seeded restart
independently (Adam is per-coordinate, and the losses are summed), the power mean

    L = (mean_v |t^pt(v) - T(v)|^p)^(1/p)          (a smooth surrogate of max_v |t^pt(v) - T(v)|)

with a cosine-decayed learning rate. The reported value is the EXACT worst-case error over the
finite input set of the best restart: an upper bound on the best worst-case error any prefix of
that length achieves on that input set. It is a search result, never a certificate.

Determinism: all randomness comes from ``torch.Generator``s seeded explicitly; the search runs
with one torch thread (restored afterwards) in float64, so the same seed gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from constructions.torch_threads import torch_threads

DTYPE = torch.float64
Setting = Literal["tied", "untied"]
SETTINGS: tuple[Setting, ...] = ("tied", "untied")


# --- the pretrained layer ---------------------------------------------------------------------

@dataclass(frozen=True)
class LayerSpec:
    """A fixed attention layer: d_model ``d``, ``heads`` heads (d_head = d / heads), no biases.

    W_Q = W_K = sqrt(gain * sqrt(d_head)) * G, G a seeded random matrix, so head h scores a key x
    against the query v by

        score_h(v, x) = (W_Q^h v) . (W_K^h x) / sqrt(d_head) = gain * (G_h v) . (G_h x)

    -- a "self-matching" head: a token's score for itself, gain |G_h v|^2, is its highest score
    among unit keys, so without a prefix each query attends only to itself, and a prefix can be
    made nearly invisible (a zero prefix keeps weight sigma(-gain) on one head). The search then
    measures what a prefix can ADD. ``isotropic`` (default): G is a Haar orthogonal matrix, so a
    single head scores gain * v . x (and the heads' scores sum to it); otherwise G is Gaussian with
    entries N(0, 1/d_head) (a generic self-matching head, used in the notes as a robustness check).
    W_V is a seeded Haar orthogonal matrix for multi-head layers and the identity for one head
    (the claim's W_V = I); W_O = W_V^T, so the unprefixed layer is the identity map v -> v, and
    W_Q, W_K, W_V are invertible (the untied setting reaches every per-head key and value).
    """

    d: int
    heads: int = 1
    gain: float = 4.0
    seed: int = 0
    isotropic: bool = True

    def __post_init__(self) -> None:
        if self.d < 2 or self.heads < 1 or self.d % self.heads:
            raise ValueError(f"need d >= 2 divisible by heads, got d={self.d}, heads={self.heads}")

    @property
    def d_head(self) -> int:
        return self.d // self.heads

    def weights(self) -> dict[str, Tensor]:
        """W_Q, W_K, W_V, W_O, each (d, d) float64, from this spec's seed."""
        gen = torch.Generator().manual_seed(self.seed)
        G = _haar(self.d, gen) if self.isotropic else \
            torch.randn(self.d, self.d, generator=gen, dtype=DTYPE) / math.sqrt(self.d_head)
        W_Q = math.sqrt(self.gain * math.sqrt(self.d_head)) * G
        if self.heads == 1:
            W_V = torch.eye(self.d, dtype=DTYPE)
        else:
            W_V = _haar(self.d, gen)
        return {"W_Q": W_Q, "W_K": W_Q.clone(), "W_V": W_V, "W_O": W_V.T.contiguous()}

    def build(self) -> nn.MultiheadAttention:
        """The torch layer with these weights, frozen."""
        w = self.weights()
        layer = nn.MultiheadAttention(self.d, self.heads, bias=False, batch_first=True, dtype=DTYPE)
        with torch.no_grad():
            layer.in_proj_weight.copy_(torch.cat([w["W_Q"], w["W_K"], w["W_V"]]))
            layer.out_proj.weight.copy_(w["W_O"])
        layer.requires_grad_(False)
        return layer.eval()


def _haar(d: int, gen: torch.Generator) -> Tensor:
    """A Haar-distributed random orthogonal matrix (d, d)."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=DTYPE))
    return q * torch.sign(torch.diagonal(r))


# --- inputs and targets ----------------------------------------------------------------------

def circle_inputs(d: int, count: int) -> Tensor:
    """``count`` equally spaced unit vectors in the plane P = span(e_1, e_2): (count, d).
    For even ``count`` the set is symmetric (v and -v both present)."""
    phi = torch.arange(count, dtype=DTYPE) * (2 * math.pi / count)
    points = torch.zeros(count, d, dtype=DTYPE)
    points[:, 0], points[:, 1] = torch.cos(phi), torch.sin(phi)
    return points


def sphere_inputs(d: int, pairs: int, seed: int) -> Tensor:
    """``pairs`` seeded uniform points on S^{d-1} and their negatives: (2 pairs, d)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(pairs, d, generator=gen, dtype=DTYPE)
    x = x / x.norm(dim=1, keepdim=True)
    return torch.cat([x, -x])


def plane_rotation(d: int, angle_rad: float) -> Tensor:
    """R (d, d): rotation by ``angle_rad`` in P = span(e_1, e_2), identity on P^perp."""
    R = torch.eye(d, dtype=DTYPE)
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    R[0, 0], R[0, 1], R[1, 0], R[1, 1] = c, -s, s, c
    return R


# --- the prefixed layer ------------------------------------------------------------------------

def prefixed_outputs(layer: nn.MultiheadAttention, inputs: Tensor, keys: Tensor, values: Tensor,
                     lengths: Sequence[int]) -> Tensor:
    """The layer's output at the query for every (configuration, restart, input).

    inputs (M, d); keys, values (C, R, n_max, d): key and value INPUTS of the prefix slots (the
    same tensor for the tied setting); lengths: C prefix lengths (slots >= length are masked).
    Returns (C, R, M, d).

    All M inputs of a (configuration, restart) go through ONE call as M queries over the key
    sequence [prefix slots (n_max); the M input tokens]; a mask lets query i see the first
    lengths[c] prefix slots and token i only -- exactly "query i attends to [prefix; its own
    token]", without copying the prefix M times.
    """
    C, R, n_max, d = keys.shape
    return _outputs(layer, inputs, keys, values, _attention_mask(lengths, R, layer.num_heads, n_max, len(inputs)))


def _outputs(layer: nn.MultiheadAttention, inputs: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
    """``prefixed_outputs`` with its attention mask (``_attention_mask``) given: the search
    builds the mask once, not at every step (the same tensor, so the same outputs)."""
    C, R, n_max, d = keys.shape
    M = inputs.shape[0]
    B = C * R
    tokens = inputs.expand(B, M, d)
    key_seq = torch.cat([keys.reshape(B, n_max, d), tokens], dim=1)  # (B, n_max + M, d)
    value_seq = torch.cat([values.reshape(B, n_max, d), tokens], dim=1)
    out, _ = layer(tokens, key_seq, value_seq, attn_mask=mask, need_weights=False)
    return out.reshape(C, R, M, d)


def _attention_mask(lengths: Sequence[int], restarts: int, heads: int, n_max: int, M: int) -> Tensor:
    """(C R H, M, n_max + M) bool, True = not attended: ``_blocked`` for every restart and head."""
    C = len(lengths)
    mask = _blocked(lengths, n_max, M)[:, None, None].expand(C, restarts, heads, M, n_max + M)
    return mask.reshape(C * restarts * heads, M, n_max + M)


def _blocked(lengths: Sequence[int], n_max: int, M: int) -> Tensor:
    """(C, M, n_max + M) bool: key j is hidden from query i unless j < lengths[c] or j = n_max + i."""
    j = torch.arange(n_max + M)
    prefix = j[None, :] < torch.tensor(list(lengths))[:, None]  # (C, n_max + M)
    own = j[None, :] == n_max + torch.arange(M)[:, None]  # (M, n_max + M)
    return ~(prefix[:, None, :] | own[None, :, :])


# --- the search --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchConfig:
    """Optimiser settings (defaults measured on this problem: see notes/rotation.md)."""

    restarts: int = 4
    steps: int = 500
    lr: float = 0.1  # cosine-decayed to lr * LR_FLOOR
    power: float = 16.0  # p of the power-mean surrogate
    init_scale: float = 1.0  # prefix inputs start as init_scale * N(0, 1)
    seed: int = 0


LR_FLOOR = 1e-2


@dataclass
class SearchResult:
    """Per configuration c: the best restart's worst-case and mean error over the inputs, every
    restart's worst-case error, and the best prefix (key and value inputs, (n_max, d) each)."""

    worst: list[float]
    mean: list[float]
    per_restart: list[list[float]]
    keys: Tensor  # (C, n_max, d)
    values: Tensor  # (C, n_max, d)


def search(layer: nn.MultiheadAttention, setting: Setting, inputs: Tensor, targets: Tensor,
           lengths: Sequence[int], config: SearchConfig = SearchConfig()) -> SearchResult:
    """Best prefixes found for every configuration c: prefix length lengths[c], target targets[c].

    inputs (M, d); targets (C, M, d). Tied: one tensor of prefix vectors is both key and value
    input; untied: two independent tensors.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    C, M, d = targets.shape
    if inputs.shape != (M, d) or len(lengths) != C or min(lengths) < 1:
        raise ValueError("need inputs (M, d), targets (C, M, d), C prefix lengths >= 1")
    n_max = max(lengths)
    with torch_threads(1):
        gen = torch.Generator().manual_seed(config.seed)
        shape = (C, config.restarts, n_max, d)
        keys = (config.init_scale * torch.randn(shape, generator=gen, dtype=DTYPE)).requires_grad_()
        values = keys if setting == "tied" else \
            (config.init_scale * torch.randn(shape, generator=gen, dtype=DTYPE)).requires_grad_()
        params = [keys] if setting == "tied" else [keys, values]
        opt = torch.optim.Adam(params, lr=config.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps, config.lr * LR_FLOOR)
        goal = targets.unsqueeze(1)  # (C, 1, M, d)
        mask = _attention_mask(lengths, config.restarts, layer.num_heads, n_max, M)
        for _ in range(config.steps):
            opt.zero_grad()
            err = (_outputs(layer, inputs, keys, values, mask) - goal).norm(dim=-1)  # (C, R, M)
            loss = err.pow(config.power).mean(-1).pow(1 / config.power).sum()
            loss.backward()
            opt.step()
            schedule.step()
        with torch.no_grad():
            err = (_outputs(layer, inputs, keys, values, mask) - goal).norm(dim=-1)
            worst = err.amax(-1)  # (C, R)
            best = worst.argmin(1)  # (C,)
            rows = torch.arange(C)
            return SearchResult(worst[rows, best].tolist(), err.mean(-1)[rows, best].tolist(),
                                worst.tolist(), keys[rows, best].detach().clone(),
                                values[rows, best].detach().clone())


def layer_outputs(layer: nn.MultiheadAttention, inputs: Tensor, keys: Tensor, values: Tensor,
                  length: int) -> Tensor:
    """Outputs (M, d) of the layer with ONE given prefix (key/value inputs (n, d), n >= length)."""
    with torch.no_grad():
        return prefixed_outputs(layer, inputs, keys[None, None], values[None, None], [length])[0, 0]
