"""What every hand-built construction provides: weights, an encoding of tasks into virtual
tokens, the ground truth, and a finite cover of all its inputs for certificates.

A *task* is what the virtual tokens encode (a target, a map), held as an integer array with a
leading batch axis so that thousands are checked in one forward pass. A *user input* is the
real tokens typed after the virtual tokens, shape (B, n_user). ``respond`` runs the model;
``expected`` says what it must answer.

Certificates cover every (task, user input) pair at once: ``certificate_cases`` yields boxes of
first-layer inputs (see ``verify.certificates``), each tagged with the position it reads and the
token it must produce there. The union of the boxes must contain every input the claim is about;
each construction documents why its cover is complete.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import numpy as np

from constructions.forward import embed, generate, next_token_predictions
from constructions.spec import TransformerSpec
from constructions.vocab import Vocabulary


# Rows per teacher-forced verification pass: 256 sequences of the Theorem 1 model keep the
# residual stream (256 x 20 x 156 float64, 6 MB) near the cache; 1024 (the first choice) ran
# 1.4x slower (verify bench constructions, notes/performance.md).
VERIFY_CHUNK = 256


def all_sequences(vocab_size: int, length: int) -> np.ndarray:
    """Every sequence of ``length`` tokens, (V^length, length), in lexicographic order."""
    if length == 0:
        return np.zeros((1, 0), dtype=np.int64)
    grids = np.meshgrid(*[np.arange(vocab_size)] * length, indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1).astype(np.int64)


@dataclass(frozen=True)
class CaseBatch:
    """A batch of input boxes for an interval certificate.

    x_lo, x_hi: (B, n, d) first-layer inputs (embeddings + positions), lo <= hi;
    read_position: (B,) where the logits are read; expected: (B,) the token required there;
    labels: (B, k) ints naming each case (meaning given by ``case_fields``).
    """

    x_lo: np.ndarray
    x_hi: np.ndarray
    read_position: np.ndarray
    expected: np.ndarray
    labels: np.ndarray


class Construction(ABC):
    """A transformer whose virtual tokens realise a family of tasks, with its weights."""

    name: ClassVar[str]
    claim_id: ClassVar[str]
    case_fields: ClassVar[tuple[str, ...]]  # names of the label columns of CaseBatch

    def __init__(self, spec: TransformerSpec, vocab: Vocabulary, inverse_temperature: float) -> None:
        self.spec = spec
        self.vocab = vocab
        self.inverse_temperature = float(inverse_temperature)

    # --- shape of the prompt ----------------------------------------------------------------
    @property
    @abstractmethod
    def virtual_positions(self) -> tuple[int, ...]: ...

    @property
    @abstractmethod
    def n_user_tokens(self) -> int: ...

    @property
    @abstractmethod
    def response_length(self) -> int: ...

    # --- tasks ------------------------------------------------------------------------------
    def size_params(self) -> dict[str, int]:
        """The construction's sizes as constructor keyword arguments (e.g. {"length": 20})."""
        return {}

    def params(self) -> dict[str, Any]:
        """JSON-able parameters from which ``from_params`` rebuilds the same construction."""
        return {"vocab": "".join(self.vocab.symbols), **self.size_params(),
                "inverse_temperature": self.inverse_temperature}

    @classmethod
    def from_params(cls, params: dict[str, Any], spec: TransformerSpec | None = None) -> "Construction":
        """Rebuild from ``params``; with ``spec`` given, use those (possibly edited) weights."""
        sizes = {k: int(v) for k, v in params.items() if k not in ("vocab", "inverse_temperature")}
        return cls(Vocabulary.from_string(params["vocab"]), **sizes,
                   inverse_temperature=float(params["inverse_temperature"]), spec=spec)

    @abstractmethod
    def virtual_tokens(self, tasks: np.ndarray) -> np.ndarray:
        """Encode tasks (B, ...) as virtual tokens (B, n_virtual, d)."""

    @abstractmethod
    def expected(self, tasks: np.ndarray, user: np.ndarray) -> np.ndarray:
        """The correct response (B, response_length) to user tokens (B, n_user)."""

    @abstractmethod
    def random_tasks(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` tasks drawn uniformly from all tasks."""

    @abstractmethod
    def parse_task(self, obj: Any) -> np.ndarray:
        """A task from its user-facing form (a string, a JSON map) -> (1, ...); errors are clear."""

    @abstractmethod
    def task_to_json(self, task: np.ndarray) -> Any:
        """Inverse of ``parse_task`` for one task (no batch axis)."""

    def all_user_inputs(self) -> np.ndarray:
        """Every possible user input, (V ** n_user, n_user)."""
        return all_sequences(self.vocab.size, self.n_user_tokens)

    # --- running ----------------------------------------------------------------------------
    def prompt_tokens(self, user: np.ndarray) -> np.ndarray:
        """Token ids of the prompt: placeholders (id 0) at virtual positions, then the user's."""
        batch = user.shape[0]
        placeholders = np.zeros((batch, len(self.virtual_positions)), dtype=np.int64)
        return np.concatenate([placeholders, user.astype(np.int64)], axis=1)

    def respond(self, virtual: np.ndarray, user: np.ndarray, spec: TransformerSpec | None = None) -> np.ndarray:
        """Greedy response (B, response_length) of the model to virtual tokens and user tokens."""
        return generate(
            spec or self.spec, self.prompt_tokens(user), self.response_length, virtual, self.virtual_positions
        )

    def responds_correctly(
        self, tasks: np.ndarray, user: np.ndarray, spec: TransformerSpec | None = None, chunk: int | None = None
    ) -> np.ndarray:
        """(B,) bool: greedy decoding would produce exactly ``expected(tasks, user)``.

        One teacher-forced forward pass replaces ``response_length`` decoding steps: by
        induction over steps, greedy decoding reproduces the expected response iff the
        prediction at every response position, given the expected prefix, is correct.

        ``chunk`` (default VERIFY_CHUNK) rows at a time: every row's prediction is computed by the
        same operations whatever the chunk (the forward pass treats rows independently), so the
        chunk changes the speed only.
        """
        chunk = VERIFY_CHUNK if chunk is None else chunk
        spec = spec or self.spec
        correct = np.empty(len(tasks), dtype=bool)
        for start in range(0, len(tasks), chunk):  # bounded memory, cache-sized batches
            part = slice(start, start + chunk)
            want = self.expected(tasks[part], user[part])  # (b, R)
            tokens = np.concatenate([self.prompt_tokens(user[part]), want[:, :-1]], axis=1)
            x = embed(spec, tokens, self.virtual_tokens(tasks[part]), self.virtual_positions)
            predicted = next_token_predictions(spec, x)[:, -self.response_length :]
            correct[part] = np.all(predicted == want, axis=1)
        return correct

    # --- certificates -----------------------------------------------------------------------
    @abstractmethod
    def certificate_cases(self, chunk: int = 512) -> Iterator[CaseBatch]:
        """A finite cover of all (task, user input) pairs by boxes; see the module docstring."""

    @abstractmethod
    def witness(self, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A concrete (task (1, ...), user (1, n_user)) inside the case named by ``label``,
        chosen as the case's worst instance where the construction's analysis names one."""

    @abstractmethod
    def describe_case(self, label: np.ndarray) -> str: ...
