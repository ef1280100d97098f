"""Longer responses (Petrov et al., appendix generalisation of Theorem 2): N0 virtual tokens
realise ANY map m: V -> V^N0 from one user token to a response of N0 tokens.

Residual stream:  token (V) | map (V) | pos (2 N0) | one (1) | slot (V) | user (V) | readout (1)

    positions 0..N0-1: virtual token p with map = (m(0)_p, ..., m(V-1)_p) / V
    position N0: user token u;  positions N0+1..2N0-1: the response generated so far
    head "slot":  q_i = T e_{i-N0}, k_j = e_j (j < N0)  -> position N0+k copies virtual token k
    head "user":  q = T, k_j = [j == N0]                -> every position copies e_u
    MLP selector: h_c = ReLU(slot_c + user_c - 1)     -> readout = m(u)_k / V (up to leakage)
    unembedding:  nearest grid point -> m(u)_k

Query N0+k sees N0+k+1 positions; each head puts A = e^T/(e^T + N0 + k) on its target and
w = 1/(e^T + N0 + k) on every other position. Writing S = sum_{p != k} m(u)_p / V (the other
slots' values at coordinate u) and G = #{generated tokens equal to u}, the readout is
    z = v + w (S + G) - (N0 + k) w (1 + v),      v = m(u)_k / V,
whose error is largest at S = G = 0, v = (V-1)/V; decoding is exact for every map iff
e^T > (2 N0 - 1)(4V - 3) (theorems.petrov_sec3).

Certificate cover: case (k, u, y) holds every map with m(u)_k = y (every other coordinate of
every virtual token anywhere in [0, (V-1)/V]) and any tokens at positions N0+1..N0+k.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from constructions.construction import CaseBatch, Construction
from constructions.errors import ConstructionError
from constructions.petrov.conditional import parse_total_map
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


def _layout(vocab_size: int, response_length: int) -> ResidualLayout:
    return ResidualLayout([("token", vocab_size), ("map", vocab_size), ("pos", 2 * response_length),
                           ("one", 1), ("slot", vocab_size), ("user", vocab_size), ("readout", 1)])


class LongResponse(Construction):
    name = "long-response"
    claim_id = "petrov.thm2.long-response"
    case_fields = ("response_slot", "user_token", "image")

    def __init__(self, vocab: Vocabulary, response_length: int = 10, inverse_temperature: float = 100.0,
                 spec: TransformerSpec | None = None) -> None:
        if response_length < 1:
            raise ConstructionError(f"response length N0 must be >= 1, got {response_length}")
        if not inverse_temperature > 0:
            raise ConstructionError(f"inverse temperature must be positive, got {inverse_temperature}")
        self.n0 = int(response_length)
        self.layout = _layout(vocab.size, self.n0)
        super().__init__(spec or self._build(vocab, inverse_temperature), vocab, inverse_temperature)

    def _build(self, vocab: Vocabulary, T: float) -> TransformerSpec:
        layout, V, n0 = self.layout, vocab.size, self.n0
        W_E, W_pos = one_hot_embeddings(layout, V, 2 * n0)
        heads = HeadBuilder(layout.width)
        # head "slot": query position N0+k points at key position k
        W_Q = np.zeros((layout.width, n0))
        W_K = np.zeros((layout.width, n0))
        for k in range(n0):
            W_Q[layout.index("pos", n0 + k), k] = T
            W_K[layout.index("pos", k), k] = 1.0
        heads.add(W_Q, W_K, *copy_matrices(layout, "map", "slot"))
        heads.add(*attend_to_position(layout, n0, T), *copy_matrices(layout, "token", "user"))
        W_U, b_U = grid_readout(layout, V)
        block = Block(heads.build(), selector_mlp(layout, values="slot", pointer="user"))
        return TransformerSpec.build(W_E, W_pos, [block], W_U, b_U, subspaces=layout.ranges)

    @property
    def virtual_positions(self) -> tuple[int, ...]:
        return tuple(range(self.n0))

    n_user_tokens = 1

    @property
    def response_length(self) -> int:
        return self.n0

    def size_params(self) -> dict[str, int]:
        return {"response_length": self.n0}

    def virtual_tokens(self, tasks: np.ndarray) -> np.ndarray:
        """maps (B, V, N0) -> (B, N0, d): virtual token p has map = m[:, p] / V."""
        virtual = np.zeros((tasks.shape[0], self.n0, self.layout.width))
        virtual[:, :, self.layout["map"]] = tasks.transpose(0, 2, 1) / self.vocab.size
        return virtual

    def expected(self, tasks: np.ndarray, user: np.ndarray) -> np.ndarray:
        return tasks[np.arange(len(tasks)), user[:, 0]]

    def random_tasks(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(0, self.vocab.size, size=(count, self.vocab.size, self.n0))

    def parse_task(self, obj: Any) -> np.ndarray:
        return parse_total_map(self.vocab, obj, self.n0)[None]

    def task_to_json(self, task: np.ndarray) -> Any:
        return {s: self.vocab.decode(row) for s, row in zip(self.vocab.symbols, task)}

    def certificate_cases(self, chunk: int = 512) -> Iterator[CaseBatch]:
        V, n0, layout, spec = self.vocab.size, self.n0, self.layout, self.spec
        token_lo, token_hi = any_token_box(spec.W_E)
        users, images = np.divmod(np.arange(V * V), V)
        for k in range(n0):
            n = n0 + k + 1  # causal: later positions are irrelevant to position n0 + k
            for start in range(0, V * V, chunk):
                u, y = users[start : start + chunk], images[start : start + chunk]
                batch, rows = len(u), np.arange(len(u))
                lo = np.zeros((batch, n, layout.width))
                hi = np.zeros((batch, n, layout.width))
                hi[:, :n0, layout["map"]] = (V - 1) / V
                lo[rows, k, layout.index("map") + u] = y / V
                hi[rows, k, layout.index("map") + u] = y / V
                lo[:, n0] = hi[:, n0] = spec.W_E[u]
                lo[:, n0 + 1 :], hi[:, n0 + 1 :] = token_lo, token_hi
                lo += spec.W_pos[:n]
                hi += spec.W_pos[:n]
                labels = np.stack([np.full(batch, k), u, y], axis=1)
                yield CaseBatch(lo, hi, np.full(batch, n0 + k), y, labels)

    def witness(self, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The analysis' worst instance: m(u) = (0, ..., 0, y at slot k, 0, ...)."""
        k, u, y = (int(v) for v in label)
        task = self.random_tasks(rng, 1)
        task[0, u] = 0
        task[0, u, k] = y
        return task, np.array([[u]])

    def describe_case(self, label: np.ndarray) -> str:
        k, u, y = (int(v) for v in label)
        s = self.vocab.symbols
        return f"response slot {k} for input {s[u]!r} must be {s[y]!r}"
