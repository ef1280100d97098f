"""The digit tasks of the companion code (minGPT/mingpt/data_tools.py), with a stable split.

An example is [n_S zeros (dummy prefix tokens)] + input (10 digits in 0..7) + solution (10 tokens
in 0..9); the model reads x = example[:-1] and predicts y = example[1:], with the loss only on the
10 solution positions (the rest of y is IGNORE = -1).

Sampling (rejection, as the companion code): draw 10 uniform digits; with probability 1/2 reject
the draw if it has more than 5 distinct digits (boosts repeats); keep it only if its split is the
requested one. Split: 'test' iff int.from_bytes(sha256(bytes(input))[:8], 'little') % 4 == 0
(about 25%); the companion code used Python's salted ``hash(pickle.dumps(...))``, which differs
per process (paper notes, ambiguity 7).

Tasks (ambiguity 6: as the code does):
  ascending   sort(x)                 descending  sort(x) reversed
  add1        x + 1                   add2        x + 2
  ascending_add1 ("sort and increment")  sort(x) + 1
  double_hist out_k = #{j : x_j = x_k} (a per-position occurrence count, 1..10)
  random      example i gets task [ascending, descending, add1, add2][i % 4], no task indicator
double_hist would emit 10 (outside the vocabulary) only for a constant input: such inputs
(8 of 8^10) are rejected for that task.

Evaluation: exact match of all 10 greedy tokens on a seeded set of 3,200 test-split examples.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch

LENGTH = 10
NUM_DIGITS = 8
VOCAB_SIZE = NUM_DIGITS + 2
IGNORE = -1
EVAL_EXAMPLES = 3200
MIXTURE = ("ascending", "descending", "add1", "add2")


def _double_hist(x: np.ndarray) -> np.ndarray:
    """(B, 10) -> (B, 10): out[b, k] = number of j with x[b, j] == x[b, k]."""
    return (x[:, :, None] == x[:, None, :]).sum(axis=2)


TASKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ascending": lambda x: np.sort(x, axis=1),
    "descending": lambda x: np.sort(x, axis=1)[:, ::-1],
    "add1": lambda x: x + 1,
    "add2": lambda x: x + 2,
    "ascending_add1": lambda x: np.sort(x, axis=1) + 1,
    "double_hist": _double_hist,
}
TASK_NAMES = (*TASKS, "random")


def is_test(inp: np.ndarray) -> bool:
    """Stable split of one input (10,) of digits: sha256 of its bytes, 'test' iff value % 4 == 0."""
    digest = hashlib.sha256(bytes(int(v) for v in inp)).digest()
    return int.from_bytes(digest[:8], "little") % 4 == 0


def sample_inputs(rng: np.random.Generator, n: int, split: str, task: str = "") -> np.ndarray:
    """n inputs (n, 10) of the split by the companion code's rejection sampling (vectorised:
    candidates are drawn in blocks and accepted in order)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    kept: list[np.ndarray] = []
    total = 0
    while total < n:
        cand = rng.integers(0, NUM_DIGITS, size=(2 * n + 16, LENGTH))  # (C, 10)
        coin = rng.random(len(cand))  # the companion code's torch.rand(1) < 0.5
        s = np.sort(cand, axis=1)
        distinct = 1 + (s[:, 1:] != s[:, :-1]).sum(axis=1)
        ok = ~((coin < 0.5) & (distinct > LENGTH // 2))
        if task == "double_hist":
            ok &= distinct > 1
        test = np.array([is_test(row) for row in cand])
        ok &= test if split == "test" else ~test
        kept.append(cand[ok])
        total += int(ok.sum())
    return np.concatenate(kept)[:n]


def solve(task: str, inp: np.ndarray, start_index: int = 0) -> np.ndarray:
    """Solutions (n, 10) of ``task`` for inputs (n, 10); 'random' uses (start_index + i) % 4."""
    if task == "random":
        ids = (start_index + np.arange(len(inp))) % len(MIXTURE)
        out = np.empty_like(inp)
        for t, name in enumerate(MIXTURE):
            out[ids == t] = TASKS[name](inp[ids == t])
        return out
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_NAMES)}")
    return TASKS[task](inp)


def make_batch(inp: np.ndarray, out: np.ndarray, n_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples -> (x, y), both (B, n_S + 19) long; y = IGNORE except at the 10 solution targets."""
    B = len(inp)
    seq = np.concatenate([np.zeros((B, n_prefix), dtype=np.int64), inp, out], axis=1)  # (B, n_S + 20)
    x, y = seq[:, :-1].copy(), seq[:, 1:].copy()
    y[:, : n_prefix + LENGTH - 1] = IGNORE
    return torch.from_numpy(x), torch.from_numpy(y)


class TaskStream:
    """Endless training batches of one task from a seeded numpy generator (state is checkpointable)."""

    def __init__(self, task: str, seed: int, n_prefix: int, batch_size: int) -> None:
        if task not in TASK_NAMES:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_NAMES)}")
        self.task, self.n_prefix, self.batch_size = task, n_prefix, batch_size
        self.rng = np.random.default_rng([seed, 0x7A5C])
        self.index = 0  # examples drawn so far: the mixture's task of example i is i % 4

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        inp = sample_inputs(self.rng, self.batch_size, "train", self.task)
        out = solve(self.task, inp, self.index)
        self.index += self.batch_size
        return make_batch(inp, out, self.n_prefix)

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "index": self.index}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.index = state["index"]


def eval_set(task: str, seed: int, n: int = EVAL_EXAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """The seeded evaluation set: n test-split inputs and their solutions, drawn from a generator
    seeded by (seed, task): identical for every method evaluated on that task and seed."""
    tag = int.from_bytes(hashlib.sha256(task.encode()).digest()[:4], "little")
    rng = np.random.default_rng([seed, 0xE7A1, tag])
    inp = sample_inputs(rng, n, "test", task)
    return inp, solve(task, inp)


MONITOR_EXAMPLES = 512


def monitor_set(task: str, seed: int, n_prefix: int, n: int = MONITOR_EXAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out set a stage's convergence rule watches (train.py): n test-split inputs (never
    trained on) from a generator seeded by (seed, 0x5A11, task), a different draw from eval_set's,
    as training examples (x, y) (n, n_S + 19)."""
    tag = int.from_bytes(hashlib.sha256(task.encode()).digest()[:4], "little")
    inp = sample_inputs(np.random.default_rng([seed, 0x5A11, tag]), n, "test", task)
    return make_batch(inp, solve(task, inp), n_prefix)


def greedy_scores(model: torch.nn.Module, task: str, seed: int, n_prefix: int, n: int = EVAL_EXAMPLES,
                  batch: int = 200) -> tuple[float, float]:
    """(exact match, per-token accuracy) of the 10 greedy tokens on the seeded test set:
        exact = mean over examples of [pred == solution on all 10 positions]
        token = mean over examples and positions of [pred_k == solution_k]
    from one generation, ``batch`` examples per forward pass."""
    from verify.experiments.gpt import generate

    inp, out = eval_set(task, seed, n)  # (n, 10) each
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    exact, tokens = 0, 0
    for start in range(0, n, batch):
        chunk = inp[start:start + batch]
        x = torch.from_numpy(np.concatenate([np.zeros((len(chunk), n_prefix), dtype=np.int64), chunk], axis=1))
        right = generate(model, x.to(device), LENGTH).cpu().numpy() == out[start:start + batch]  # (b, 10)
        exact += int(right.all(axis=1).sum())
        tokens += int(right.sum())
    model.train(was_training)
    return exact / n, tokens / (n * LENGTH)


def exact_match(model: torch.nn.Module, task: str, seed: int, n_prefix: int, n: int = EVAL_EXAMPLES) -> float:
    """Fraction of the seeded test set whose 10 greedy tokens all equal the solution."""
    return greedy_scores(model, task, seed, n_prefix, n)[0]
