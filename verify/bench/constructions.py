"""``python -m verify bench constructions``: how fast whole target generations are verified.

Compares, in one run, on the Theorem 1 construction (V = 94, N = 20):
  - batched: ``Construction.responds_correctly`` (one teacher-forced forward pass over a batch,
    equivalent to greedy decoding by induction) and batched greedy ``generate``;
  - loop: the authors' notebook style, one target at a time, re-running the whole prefix at every
    decoding step with Python loops over query positions, keys and heads.
The loop is a benchmark baseline only; it is checked to produce the same tokens.

Hardware rate: the batched verification's floating-point work is counted by running the same
forward pass once through ``CountingOps`` (NumpyOps that records every matrix product it issues,
2 m k n FLOPs each, with the zero rows NumpyOps.linear skips left out, as executed); the
achieved GFLOP/s is that count over the verification's wall time. Beside it, measured in the
same run: the GEMM rate of exactly those products alone (numpy matmul on arrays of the same
shapes, the same number of times), and of one large square float64 GEMM (the machine's peak).
The ratio achieved / same-shape GEMM says how much of the verification's time is arithmetic.
Figures are printed, never asserted (the machine is shared and noisy); the last line is a
one-line summary for CI logs.
"""

from __future__ import annotations

import time

import numpy as np
from rich.console import Console
from rich.table import Table

from constructions.construction import VERIFY_CHUNK
from constructions.forward import NumpyOps, embed, forward, logits
from constructions.petrov.unconditional import Unconditional
from constructions.spec import TransformerSpec
from constructions.vocab import Vocabulary

LOOP_TARGETS = 100  # the loop is slow; its rate is measured on this many targets (~1 s)
PEAK_GEMM_SIZE = 1024  # the square float64 GEMM whose rate stands for the machine's peak
GOAL_OF_GEMM = 0.30  # issue 14: the batched verification at >= 30% of the GEMM rate
GOAL_VS_LOOP = 1_000  # and >= 1,000x the per-position loop


class CountingOps(NumpyOps):
    """NumpyOps that records the shapes of every matrix product it issues: (a_shape, b_shape),
    each a 2-D or stacked product; ``linear`` records the product it really runs (the rows of W
    that are not all zero, see NumpyOps.linear)."""

    def __init__(self) -> None:
        self.products: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def linear(self, x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        m = int(np.prod(x.shape[:-1]))
        rows = np.flatnonzero(np.any(W != 0, axis=1))
        k = len(rows) if len(rows) < W.shape[0] // 2 else W.shape[0]
        self.products.append(((m, k), (k, W.shape[1])))
        return super().linear(x, W, b)

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.products.append((tuple(a.shape), tuple(b.shape)))
        return super().matmul(a, b)

    @property
    def flops(self) -> float:
        """sum over products of 2 m k n (times the stacked batch)."""
        return float(sum(2 * np.prod(a[:-2], dtype=np.float64) * a[-2] * a[-1] * b[-1] for a, b in self.products))


def verification_products(construction: Unconditional, targets: np.ndarray, chunk: int = VERIFY_CHUNK) -> CountingOps:
    """The matrix products ``responds_correctly`` issues on ``targets`` (the same chunks, the same
    embedding and forward pass, the logits), recorded by one counting run."""
    ops = CountingOps()
    spec = construction.spec
    no_user = np.zeros((len(targets), 0), dtype=np.int64)
    for start in range(0, len(targets), chunk):
        part = slice(start, start + chunk)
        want = construction.expected(targets[part], no_user[part])
        tokens = np.concatenate([construction.prompt_tokens(no_user[part]), want[:, :-1]], axis=1)
        x = embed(spec, tokens, construction.virtual_tokens(targets[part]), construction.virtual_positions)
        logits(spec, forward(spec, x, ops), ops)
    return ops


def gemm_seconds(products: list[tuple[tuple[int, ...], tuple[int, ...]]], rng: np.random.Generator,
                 repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time of numpy matmul on random float64 arrays of the given shapes
    (operands allocated before the clock starts: the pure GEMM time)."""
    operands = [(rng.standard_normal(a), rng.standard_normal(b)) for a, b in products]
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for a, b in operands:
            a @ b
        best = min(best, time.perf_counter() - start)
    return best


def peak_gemm_gflops(rng: np.random.Generator, size: int = PEAK_GEMM_SIZE, repeats: int = 3) -> float:
    a, b = rng.standard_normal((size, size)), rng.standard_normal((size, size))
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


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
    counted = verification_products(construction, targets)
    flops = counted.flops
    gemm = gemm_seconds(counted.products, rng)
    rates.update({
        "verify_gflops": flops / batched_verify / 1e9,
        "same_shape_gemm_gflops": flops / gemm / 1e9,
        "peak_gemm_gflops": peak_gemm_gflops(rng),
        "flops_per_target": flops / count,
    })
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
    vs_loop = rates["batched_verify_per_s"] / rates["loop_generate_per_s"]
    of_gemm = rates["verify_gflops"] / rates["same_shape_gemm_gflops"]
    of_peak = rates["verify_gflops"] / rates["peak_gemm_gflops"]
    rates.update({"verify_vs_loop": vs_loop, "verify_of_same_shape_gemm": of_gemm, "verify_of_peak_gemm": of_peak})
    console.print(f"ratio batched verification / loop: {vs_loop:,.0f}x "
                  f"(target >= 100x); {count} targets verified in {batched_verify:.2f} s (target < 10 s)")
    gemm_table = Table(title=f"arithmetic rate of the batched verification ({flops / count:,.0f} FLOPs per target, "
                             f"{len(counted.products)} matrix products)")
    for column in ("what", "GFLOP/s", "verification / it"):
        gemm_table.add_column(column, justify="right")
    gemm_table.add_row("batched verification (counted FLOPs / wall time)", f"{rates['verify_gflops']:.2f}", "1")
    gemm_table.add_row("numpy GEMM, the same products alone", f"{rates['same_shape_gemm_gflops']:.2f}", f"{of_gemm:.1%}")
    gemm_table.add_row(f"numpy GEMM, {PEAK_GEMM_SIZE} x {PEAK_GEMM_SIZE} (peak)", f"{rates['peak_gemm_gflops']:.2f}",
                       f"{of_peak:.1%}")
    console.print(gemm_table)
    console.print(summary_line(rates, count), highlight=False, soft_wrap=True)
    return rates


def summary_line(rates: dict[str, float], count: int) -> str:
    """One line for CI logs: every figure with its ratio and the goal it is held against."""
    return (f"bench constructions: verify {rates['batched_verify_per_s']:,.0f} targets/s = "
            f"{rates['verify_vs_loop']:,.0f}x loop ({rates['loop_generate_per_s']:,.0f}/s; goal >= {GOAL_VS_LOOP:,}x); "
            f"{rates['verify_gflops']:.2f} GFLOP/s = {rates['verify_of_same_shape_gemm']:.1%} of same-shape GEMM "
            f"{rates['same_shape_gemm_gflops']:.2f} GFLOP/s (goal >= {GOAL_OF_GEMM:.0%}), "
            f"{rates['verify_of_peak_gemm']:.1%} of peak GEMM {rates['peak_gemm_gflops']:.1f} GFLOP/s; "
            f"greedy {rates['batched_generate_per_s']:,.0f} targets/s = "
            f"{rates['batched_generate_per_s'] / rates['loop_generate_per_s']:,.0f}x loop; {count} targets")
