"""Theorem 2 (Petrov et al.): one virtual token makes a fixed transformer realise ANY map
m: V -> V on the user's token.

Residual stream:  token (V) | map (V) | pos (2) | one (1) | copy (V) | readout (1)

    position 0, virtual token:  map = (m(0), ..., m(V-1)) / V
    position 1, user token u:   token = e_u
    head "first":  q = T, k_j = [j == 0], v_j = map_j  ->  copy_1 = A_10 m / V
    MLP selector:  h_c = ReLU(copy_1c + token_1c - 1) -> readout_1 = A_10 m(u) / V
    unembedding:   nearest grid point -> m(u)

Position 1 sees two positions (scores T and 0): A_10 = e^T / (e^T + 1); the decoding error
(1 - A_10) m(u)/V is below 1/(2V) for every map iff e^T > 2V - 3.

Certificate cover: the output depends on u and the u-th coordinate of the virtual token; case
(u, y) holds every map with m(u) = y (all other coordinates anywhere in [0, (V-1)/V]), so the V^2
cases cover all V^V maps and all V inputs.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from constructions.construction import CaseBatch, Construction
from constructions.errors import ConstructionError
from constructions.petrov.parts import (
    HeadBuilder,
    ResidualLayout,
    attend_to_position,
    copy_matrices,
    grid_readout,
    one_hot_embeddings,
    selector_mlp,
)
from constructions.spec import Block, TransformerSpec
from constructions.vocab import Vocabulary


def parse_total_map(vocab: Vocabulary, obj: Any, value_length: int | None = None) -> np.ndarray:
    """A total map {symbol: symbol} (value_length None) or {symbol: string of <= value_length}.

    Returns (V,) or (V, value_length) token ids; strings are padded with symbol 0.
    """
    if not isinstance(obj, dict):
        raise ConstructionError("a map must be a JSON object from input symbols to outputs")
    missing = [s for s in vocab.symbols if s not in obj]
    if missing:
        raise ConstructionError(
            f"the map is not total: {len(missing)} of {vocab.size} symbols have no image, e.g. {missing[0]!r}"
        )
    unknown = [k for k in obj if k not in vocab.symbols]
    if unknown:
        raise ConstructionError(f"map key {unknown[0]!r} is not a symbol of the vocabulary")
    rows = []
    for symbol in vocab.symbols:
        value = obj[symbol]
        if not isinstance(value, str):
            raise ConstructionError(f"map value for {symbol!r} must be a string")
        if value_length is None:
            if len(value) != 1:
                raise ConstructionError(f"map value for {symbol!r} must be one symbol, got {value!r}")
            rows.append(vocab.encode(value)[0])
        else:
            if len(value) > value_length:
                raise ConstructionError(
                    f"response for {symbol!r} has {len(value)} symbols; at most {value_length} allowed"
                )
            ids = vocab.encode(value)
            rows.append(np.concatenate([ids, np.zeros(value_length - len(ids), dtype=np.int64)]))
    return np.array(rows, dtype=np.int64)


def _layout(vocab_size: int) -> ResidualLayout:
    return ResidualLayout([("token", vocab_size), ("map", vocab_size), ("pos", 2), ("one", 1),
                           ("copy", vocab_size), ("readout", 1)])


class Conditional(Construction):
    name = "conditional"
    claim_id = "petrov.thm2.conditional"
    case_fields = ("user_token", "image")

    def __init__(self, vocab: Vocabulary, inverse_temperature: float = 100.0,
                 spec: TransformerSpec | None = None) -> None:
        if not inverse_temperature > 0:
            raise ConstructionError(f"inverse temperature must be positive, got {inverse_temperature}")
        self.layout = _layout(vocab.size)
        super().__init__(spec or self._build(vocab, inverse_temperature), vocab, inverse_temperature)

    def _build(self, vocab: Vocabulary, T: float) -> TransformerSpec:
        layout, V = self.layout, vocab.size
        W_E, W_pos = one_hot_embeddings(layout, V, 2)
        heads = HeadBuilder(layout.width)
        heads.add(*attend_to_position(layout, 0, T), *copy_matrices(layout, "map", "copy"))
        W_U, b_U = grid_readout(layout, V)
        block = Block(heads.build(), selector_mlp(layout, values="copy", pointer="token"))
        return TransformerSpec.build(W_E, W_pos, [block], W_U, b_U, subspaces=layout.ranges)

    virtual_positions = (0,)
    n_user_tokens = 1
    response_length = 1

    def virtual_tokens(self, tasks: np.ndarray) -> np.ndarray:
        """maps (B, V) -> (B, 1, d): map = m / V."""
        virtual = np.zeros((tasks.shape[0], 1, self.layout.width))
        virtual[:, 0, self.layout["map"]] = tasks / self.vocab.size
        return virtual

    def expected(self, tasks: np.ndarray, user: np.ndarray) -> np.ndarray:
        return np.take_along_axis(tasks, user[:, :1], axis=1)

    def random_tasks(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(0, self.vocab.size, size=(count, self.vocab.size))

    def parse_task(self, obj: Any) -> np.ndarray:
        return parse_total_map(self.vocab, obj)[None]

    def task_to_json(self, task: np.ndarray) -> Any:
        return {s: self.vocab.symbols[int(t)] for s, t in zip(self.vocab.symbols, task)}

    def certificate_cases(self, chunk: int = 512) -> Iterator[CaseBatch]:
        V, layout, spec = self.vocab.size, self.layout, self.spec
        users, images = np.divmod(np.arange(V * V), V)
        for start in range(0, V * V, chunk):
            u, y = users[start : start + chunk], images[start : start + chunk]
            batch, rows = len(u), np.arange(len(u))
            lo = np.zeros((batch, 2, layout.width))
            hi = np.zeros((batch, 2, layout.width))
            hi[:, 0, layout["map"]] = (V - 1) / V
            lo[rows, 0, layout.index("map") + u] = y / V
            hi[rows, 0, layout.index("map") + u] = y / V
            lo[:, 1] = hi[:, 1] = spec.W_E[u]
            lo += spec.W_pos[:2]
            hi += spec.W_pos[:2]
            yield CaseBatch(lo, hi, np.ones(batch, dtype=np.int64), y, np.stack([u, y], axis=1))

    def witness(self, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        u, y = int(label[0]), int(label[1])
        task = self.random_tasks(rng, 1)
        task[0, u] = y
        return task, np.array([[u]])

    def describe_case(self, label: np.ndarray) -> str:
        s = self.vocab.symbols
        return f"input {s[int(label[0])]!r} must map to {s[int(label[1])]!r}"
