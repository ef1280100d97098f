"""The training loop: AdamW, grad-norm clip, batch 64, progress on stderr, checkpoints, resume.

One *stage* trains one set of parameters of a model on one task:
    loss = mean over the 10 solution positions of cross-entropy(logits, y)   (IGNORE elsewhere)
    AdamW(lr, betas (0.9, 0.95), weight decay on Linear weights only), clip ||grad||_2 <= 1.0.
Pretraining and full fine-tuning run in train() mode (dropout on) with weight decay 0.1, as the
companion code's Trainer; prefix and LoRA stages run in eval() mode (dropout off) with AdamW's
default 0.01 (PrefixTrainer / minLoRA notebook).

A stage with a ``converge`` rule (every adapter: prefix, soft prompt, LoRA, full fine-tuning) is
trained until the rule stops it or its ``iters`` (the cap) is reached. Every E = ``every`` steps,
and at step 0, it measures on a fixed held-out monitor set (x_m, y_m), in eval() mode without
gradients (no random draw, so the run's parameters are those of a run without monitoring):
    L_k = masked cross-entropy(model(x_m), y_m)      held-out loss at step k E
    X_k = mean over examples of [argmax logits == y at every solution position]
(X_k is the teacher-forced exact match; it equals greedy exact match, since greedy decoding
reproduces the solution iff every teacher-forced argmax is the solution token), and stops, as
*converged*, at the first k with, for w = patience / E evaluations,
    k >= w   and   min(L_{k-w+1}, ..., L_k) > (1 - d) min(L_0, ..., L_{k-w})
i.e. the best held-out loss of the last w evaluations has not improved on the best before them
by the relative amount d = ``min_rel_improvement``. A stage that reaches its cap first has not
converged (it was still improving by that measure). The learning curve (step, mean training loss
over the last E steps, L_k, X_k) is returned and recorded.

A stage writes a checkpoint (model and optimizer state, data stream state, torch RNG state,
step, losses) every ``checkpoint_every`` steps and at the end, tagged with a ``key`` (the hash of
the code and config that produced it). A later call with the same key resumes from it; one with a
different key starts over. Resuming gives the same parameters as an uninterrupted run: every
random draw after the checkpoint comes from saved generator states.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.nn import functional as F

from verify.experiments.gpt import GPT, decay_groups
from verify.experiments.tasks import IGNORE, TaskStream


@dataclass(frozen=True)
class StageConfig:
    """How one stage trains: task, steps, learning rate, optimizer and dropout mode."""

    task: str
    iters: int
    lr: float
    weight_decay: float
    dropout_on: bool  # train() mode (pretraining, full fine-tuning) or eval() mode (prefix, LoRA)
    batch_size: int = 64
    grad_clip: float = 1.0
    checkpoint_every: int = 1000
    converge: dict | None = None  # {"every", "patience", "min_rel_improvement"} (Convergence); None: fixed steps

    def to_json(self) -> dict:
        return asdict(self)

    def rule(self) -> Convergence | None:
        return None if self.converge is None else Convergence(**self.converge)


@dataclass(frozen=True)
class Convergence:
    """The stop rule of the module docstring: held-out loss every ``every`` steps; converged when the
    last patience / every evaluations improve the best before them by less than ``min_rel_improvement``."""

    every: int
    patience: int
    min_rel_improvement: float

    def __post_init__(self) -> None:
        if self.every < 1 or self.patience < self.every or self.patience % self.every:
            raise ValueError(f"patience must be a positive multiple of every, got {self.patience} and {self.every}")
        if not 0 <= self.min_rel_improvement < 1:
            raise ValueError(f"min_rel_improvement must be in [0, 1), got {self.min_rel_improvement}")

    def plateaued(self, heldout: list[float]) -> bool:
        """heldout = [L_0, L_1, ..., L_k]: True iff k >= w and min(L_{k-w+1..k}) > (1 - d) min(L_{0..k-w})."""
        w = self.patience // self.every
        if len(heldout) <= w:
            return False
        return min(heldout[-w:]) > (1 - self.min_rel_improvement) * min(heldout[:-w])


def default_rule(cap: int) -> dict:
    """The rule every adapter stage uses, stated before the runs (notes/experiments.md): an
    evaluation every cap / 40 steps, patience a quarter of the cap (10 evaluations), d = 1%."""
    every = max(1, cap // 40)
    return {"every": every, "patience": 10 * every, "min_rel_improvement": 0.01}


@dataclass
class StageResult:
    steps: int
    seconds: float  # wall time of the steps run in THIS call (resumed steps not counted)
    steps_run: int
    final_loss: float
    losses: list[float] = field(default_factory=list)  # mean loss per checkpoint interval
    curve: dict[str, list] | None = None  # {"step", "train_loss", "heldout_loss", "exact"}; None: no rule
    converged: bool | None = None  # the rule stopped it (True) or the cap did (False); None: no rule

    @property
    def steps_per_second(self) -> float:
        return self.steps_run / self.seconds if self.seconds > 0 else float("nan")


def masked_loss(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x, y (B, T): mean cross-entropy over the positions where y != IGNORE."""
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE)


@torch.no_grad()
def monitor_scores(model: GPT, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> tuple[float, float]:
    """(held-out loss L, teacher-forced exact match X) on x, y (N, T) in eval() mode (module
    docstring); the model's train/eval mode is restored. Loss: mean over all non-IGNORE targets."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count, exact = 0.0, 0, 0
    for start in range(0, len(x), batch):
        xb, yb = x[start:start + batch].to(device), y[start:start + batch].to(device)
        logits = model(xb)  # (b, T, V)
        mask = yb != IGNORE  # (b, T)
        total += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), yb.reshape(-1), ignore_index=IGNORE,
                                       reduction="sum"))
        count += int(mask.sum())
        exact += int(((logits.argmax(dim=-1) == yb) | ~mask).all(dim=1).sum())
    model.train(was_training)
    return total / count, exact / len(x)


def _save_atomically(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@contextmanager
def _progress(description: str, total: int, start: int, quiet: bool) -> Iterator:
    """A rich progress bar on stderr with loss and ETA; a line per 10% when stderr is no terminal."""
    console = Console(stderr=True)
    live = console.is_terminal and not quiet
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("eta"),
                  TimeRemainingColumn(), console=console, disable=not live) as progress:
        bar = progress.add_task(description, total=total, completed=start, loss="-")

        def update(step: int, loss: float) -> None:
            progress.update(bar, completed=step, loss=f"{loss:.4f}")
            if not live and not quiet and (step % max(1, total // 10) == 0 or step == total):
                console.print(f"{description}: step {step}/{total} loss {loss:.4f}", highlight=False)

        yield update


class BatchStream(Protocol):
    """Where a stage's batches come from: next() -> (x, y) long tensors (B, T) with y = IGNORE where
    no loss is taken; state() / load_state() make it checkpointable. TaskStream is one."""

    def next(self) -> tuple[torch.Tensor, torch.Tensor]: ...
    def state(self) -> dict: ...
    def load_state(self, state: dict) -> None: ...


def train_stage(model: GPT, stage: StageConfig, seed: int, n_prefix: int, checkpoint: Path | None,
                key: str, description: str = "train", stop_at: int | None = None,
                quiet: bool = False, stream: BatchStream | None = None,
                monitor: tuple[torch.Tensor, torch.Tensor] | None = None) -> StageResult:
    """Train the trainable parameters of ``model`` in place for ``stage.iters`` steps, or until the
    stage's convergence rule stops it (measured on ``monitor`` = (x, y), required with a rule), or
    until ``stop_at`` (to simulate an interruption), resuming from ``checkpoint`` when its key
    matches. Batches come from ``stream`` (default: the digit task ``stage.task``, seeded by ``seed``)."""
    rule = stage.rule()
    if rule is not None and monitor is None:
        raise ValueError("a stage with a convergence rule needs a monitor set")
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(decay_groups(model, stage.weight_decay), lr=stage.lr, betas=(0.9, 0.95))
    if stream is None:
        stream = TaskStream(stage.task, seed, n_prefix, stage.batch_size)
    torch.manual_seed(seed)  # dropout draws
    step, losses, converged, pending = 0, [], False, []  # pending: training losses since the last evaluation
    curve: dict[str, list] = {"step": [], "train_loss": [], "heldout_loss": [], "exact": []}
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved.get("key") == key:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            stream.load_state(saved["stream"])
            torch.set_rng_state(saved["torch_rng"])
            step, losses = saved["step"], list(saved["losses"])
            curve, converged = saved.get("curve", curve), saved.get("converged", False)
            pending = list(saved.get("pending", []))
    model.train(stage.dropout_on)

    def measure(train_loss: float | None) -> None:
        heldout, exact = monitor_scores(model, *monitor)
        for name, value in (("step", step), ("train_loss", None if train_loss is None else round(train_loss, 5)),
                            ("heldout_loss", round(heldout, 5)), ("exact", round(exact, 4))):
            curve[name].append(value)

    if rule is not None and not curve["step"]:
        measure(None)  # L_0: the starting point (no training loss yet)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    end = stage.iters if stop_at is None else min(stop_at, stage.iters)
    start_step, start_time, window = step, time.perf_counter(), []
    with _progress(description, stage.iters, step, quiet) as update:
        while step < end and not converged:
            x, y = stream.next()
            loss = masked_loss(model, x.to(device), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, stage.grad_clip)
            optimizer.step()
            step += 1
            window.append(loss.item())
            if rule is not None:
                pending.append(window[-1])
            if step % 50 == 0 or step == end:
                update(step, sum(window[-50:]) / len(window[-50:]))
            if rule is not None and step % rule.every == 0:
                measure(sum(pending) / len(pending))
                pending = []
                converged = rule.plateaued(curve["heldout_loss"])
            if step % stage.checkpoint_every == 0 or step == end or converged:
                losses.append(sum(window) / len(window))
                window = []
                if checkpoint is not None:
                    _save_atomically({"key": key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                      "stream": stream.state(), "torch_rng": torch.get_rng_state(),
                                      "step": step, "losses": losses, "curve": curve, "converged": converged,
                                      "pending": pending},
                                     checkpoint)
    model.eval()
    seconds = time.perf_counter() - start_time
    return StageResult(step, seconds, step - start_step, losses[-1] if losses else float("nan"), losses,
                       curve if rule is not None else None, converged if rule is not None else None)
