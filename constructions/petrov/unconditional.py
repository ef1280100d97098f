"""Theorem 1 (Petrov et al.): one virtual token makes a fixed 1-layer transformer generate ANY
target (Y_1..Y_N) over a vocabulary of V symbols.

Residual stream (disjoint subspaces):  token (V) | value (N) | pos (N) | one (1) | copy (N) | readout (1)

    virtual token (position 0):  value = (Y_1/V, ..., Y_N/V)            (token ids 0..V-1)
    real token c at position i:  token = e_c;  every position: pos = e_i, one = 1
    head "first":  q_i = T,  k_j = [j == 0],  v_j = value_j  ->  copy_i = A_i0 (Y_1..Y_N)/V
                   (real tokens carry no value, so nothing else is mixed in)
    MLP:           h_j = ReLU(copy_ij + pos_ij - 1)  ->  readout_i = A_i0 Y_{i+1}/V
    unembedding:   nearest grid point c/V to readout_i  ->  token Y_{i+1}

With the causal mask, query i sees i+1 positions, one with score T and i with score 0, so
A_i0 = e^T / (e^T + i) and the decoding error is (1 - A_i0) Y_{i+1}/V. It is below 1/(2V) for
every target iff e^T > (N - 1)(2V - 3) (derived in theorems.petrov_sec3).

Versus the authors' notebook: one head instead of two (the residual stream carries the position
that their "pos" head copied), a one-hidden-layer MLP instead of three layers (the readout is the
unembedding), causal mask, attention scale 1 with T in W_Q.

Certificate cover: case (i, y) = "position i must emit y" holds every target with Y_{i+1} = y,
every other value coordinate anywhere in [0, (V-1)/V] and every token at positions 1..i; the
cases over all i, y cover every target and every generated prefix.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from constructions.construction import CaseBatch, Construction
from constructions.errors import ConstructionError
from constructions.petrov.parts import (
    HeadBuilder,
    ResidualLayout,
    any_token_box,
    attend_to_position,
    copy_matrices,
    grid_readout,
    one_hot_embeddings,
    selector_mlp,
)
from constructions.spec import Block, TransformerSpec
from constructions.vocab import Vocabulary


def _layout(vocab_size: int, length: int) -> ResidualLayout:
    return ResidualLayout([("token", vocab_size), ("value", length), ("pos", length), ("one", 1),
                           ("copy", length), ("readout", 1)])


class Unconditional(Construction):
    name = "unconditional"
    claim_id = "petrov.thm1.unconditional"
    case_fields = ("position", "token")

    def __init__(self, vocab: Vocabulary, length: int = 20, inverse_temperature: float = 50.0,
                 spec: TransformerSpec | None = None) -> None:
        if length < 1:
            raise ConstructionError(f"target length N must be >= 1, got {length}")
        if not inverse_temperature > 0:
            raise ConstructionError(f"inverse temperature must be positive, got {inverse_temperature}")
        self.length = int(length)
        self.layout = _layout(vocab.size, self.length)
        super().__init__(spec or self._build(vocab, inverse_temperature), vocab, inverse_temperature)

    def _build(self, vocab: Vocabulary, T: float) -> TransformerSpec:
        layout, V, N = self.layout, vocab.size, self.length
        W_E, W_pos = one_hot_embeddings(layout, V, N)
        heads = HeadBuilder(layout.width)
        heads.add(*attend_to_position(layout, 0, T), *copy_matrices(layout, "value", "copy"))
        W_U, b_U = grid_readout(layout, V)
        block = Block(heads.build(), selector_mlp(layout, values="copy", pointer="pos"))
        return TransformerSpec.build(W_E, W_pos, [block], W_U, b_U, subspaces=layout.ranges)

    # --- prompt shape -----------------------------------------------------------------------
    virtual_positions = (0,)
    n_user_tokens = 0

    @property
    def response_length(self) -> int:
        return self.length

    # --- tasks ------------------------------------------------------------------------------
    def size_params(self) -> dict[str, int]:
        return {"length": self.length}

    def virtual_tokens(self, tasks: np.ndarray) -> np.ndarray:
        """targets (B, N) -> (B, 1, d): value = targets / V."""
        virtual = np.zeros((tasks.shape[0], 1, self.layout.width))
        virtual[:, 0, self.layout["value"]] = tasks / self.vocab.size
        return virtual

    def expected(self, tasks: np.ndarray, user: np.ndarray) -> np.ndarray:
        return tasks

    def random_tasks(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(0, self.vocab.size, size=(count, self.length))

    def parse_task(self, obj: Any) -> np.ndarray:
        """A target string of length <= N, padded with symbol 0 (a space for printable ASCII)."""
        if not isinstance(obj, str):
            raise ConstructionError("the unconditional construction takes a target string")
        if len(obj) > self.length:
            raise ConstructionError(f"target has {len(obj)} characters; this construction generates at most N = {self.length}")
        ids = self.vocab.encode(obj)
        return np.concatenate([ids, np.zeros(self.length - len(ids), dtype=np.int64)])[None]

    def task_to_json(self, task: np.ndarray) -> Any:
        return self.vocab.decode(task)

    # --- certificate ------------------------------------------------------------------------
    def certificate_cases(self, chunk: int = 512) -> Iterator[CaseBatch]:
        V, N, layout, spec = self.vocab.size, self.length, self.layout, self.spec
        token_lo, token_hi = any_token_box(spec.W_E)
        for position in range(N):
            ys = np.arange(V)
            for start in range(0, V, chunk):
                y = ys[start : start + chunk]
                batch, n = len(y), position + 1  # causal: positions after `position` are irrelevant
                lo = np.zeros((batch, n, layout.width))
                hi = np.zeros((batch, n, layout.width))
                value = layout["value"]
                hi[:, 0, value] = (V - 1) / V
                lo[:, 0, layout.index("value", position)] = y / V
                hi[:, 0, layout.index("value", position)] = y / V
                lo[:, 1:], hi[:, 1:] = token_lo, token_hi
                lo += spec.W_pos[:n]
                hi += spec.W_pos[:n]
                yield CaseBatch(lo, hi, np.full(batch, position), y,
                                np.stack([np.full(batch, position), y], axis=1))

    def witness(self, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        position, token = int(label[0]), int(label[1])
        target = self.random_tasks(rng, 1)
        target[0, position] = token
        return target, np.zeros((1, 0), dtype=np.int64)

    def describe_case(self, label: np.ndarray) -> str:
        return f"position {int(label[0])} must emit {self.vocab.symbols[int(label[1])]!r}"
