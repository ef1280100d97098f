"""``python -m verify bench constructions``: how fast whole target generations are verified.

Compares, in one run, on the Theorem 1 construction (V = 94, N = 20):
  - batched: ``Construction.responds_correctly`` (one teacher-forced forward pass over a batch,
    equivalent to greedy decoding by induction) and batched greedy ``generate``;
  - loop: the authors' notebook style, one target at a time, re-running the whole prefix at every
    decoding step with Python loops over query positions, keys and heads.
The loop is a benchmark baseline only; it is checked to produce the same tokens.
Figures are printed, never asserted (the machine is shared and noisy).
"""

from __future__ import annotations

import time

import numpy as np
from rich.console import Console
from rich.table import Table

from constructions.petrov.unconditional import Unconditional
from constructions.spec import TransformerSpec
from constructions.vocab import Vocabulary

LOOP_TARGETS = 100  # the loop is slow; its rate is measured on this many targets (~1 s)


def loop_forward_last(spec: TransformerSpec, x: np.ndarray) -> np.ndarray:
    """Logits at the last position of one sequence x (n, d), position by position (baseline)."""
    n = x.shape[0]
    x = [row.copy() for row in x]
    for block in spec.blocks:
        attn = block.attention
        new = []
        for i in range(n):
            out = attn.b_O.copy()
            for h in range(attn.n_heads):
                q = x[i] @ attn.W_Q[h] + attn.b_Q[h]
                scores = [spec.attention_scale * float(q @ (x[j] @ attn.W_K[h] + attn.b_K[h]))
                          for j in range(i + 1 if spec.causal else n)]
                top = max(scores)
                weights = [np.exp(s - top) for s in scores]
                total = sum(weights)
                mixed = sum(w / total * (x[j] @ attn.W_V[h] + attn.b_V[h]) for j, w in enumerate(weights))
                out = out + mixed @ attn.W_O[h]
            new.append(x[i] + out)
        x = new
        if block.mlp is not None:
            mlp = block.mlp
            x = [row + np.maximum(row @ mlp.W_in + mlp.b_in, 0) @ mlp.W_out + mlp.b_out for row in x]
    return x[-1] @ spec.W_U + spec.b_U


def loop_generate(spec: TransformerSpec, virtual: np.ndarray, steps: int) -> list[int]:
    """Greedy generation from one virtual token (d,), recomputing the prefix at every step."""
    tokens: list[int] = []
    for _ in range(steps):
        rows = [virtual + spec.W_pos[0]] + [spec.W_E[t] + spec.W_pos[i + 1] for i, t in enumerate(tokens)]
        tokens.append(int(np.argmax(loop_forward_last(spec, np.stack(rows)))))
    return tokens


def bench_constructions(console: Console, count: int = 10_000, seed: int = 0) -> dict[str, float]:
    construction = Unconditional(Vocabulary.printable_ascii())
    rng = np.random.default_rng(seed)
    targets = construction.random_tasks(rng, count)
    no_user = np.zeros((count, 0), dtype=np.int64)

    start = time.perf_counter()
    virtual = construction.virtual_tokens(targets)
    verified = construction.responds_correctly(targets, no_user)
    batched_verify = time.perf_counter() - start

    few = min(count, 1000)
    start = time.perf_counter()
    greedy = construction.respond(virtual[:few], no_user[:few])
    batched_generate = time.perf_counter() - start

    start = time.perf_counter()
    loop_out = [loop_generate(construction.spec, virtual[i, 0], construction.length) for i in range(LOOP_TARGETS)]
    loop_time = time.perf_counter() - start

    agree = bool(np.array_equal(np.array(loop_out), greedy[:LOOP_TARGETS]))
    rates = {
        "batched_verify_per_s": count / batched_verify,
        "batched_generate_per_s": few / batched_generate,
        "loop_generate_per_s": LOOP_TARGETS / loop_time,
    }
    table = Table(title=f"Theorem 1 construction, V = 94, N = 20 ({count} random targets)")
    for column in ("method", "targets", "seconds", "targets / s", "vs loop"):
        table.add_column(column, justify="right")
    rows = [("batched, teacher-forced verification", count, batched_verify, rates["batched_verify_per_s"]),
            ("batched, greedy generation", few, batched_generate, rates["batched_generate_per_s"]),
            ("per-position loop (notebook style)", LOOP_TARGETS, loop_time, rates["loop_generate_per_s"])]
    for name, n, seconds, rate in rows:
        table.add_row(name, str(n), f"{seconds:.3f}", f"{rate:,.0f}", f"{rate / rates['loop_generate_per_s']:,.0f}x")
    console.print(table)
    console.print(f"all {count} targets generated exactly: {bool(verified.all())}; "
                  f"loop and batched outputs agree: {agree}")
    console.print(f"ratio batched verification / loop: {rates['batched_verify_per_s'] / rates['loop_generate_per_s']:,.0f}x "
                  f"(target >= 100x); {count} targets verified in {batched_verify:.2f} s (target < 10 s)")
    return rates
