"""The training loop: AdamW, grad-norm clip, batch 64, progress on stderr, checkpoints, resume.

One *stage* trains one set of parameters of a model on one task:
    loss = mean over the 10 solution positions of cross-entropy(logits, y)   (IGNORE elsewhere)
    AdamW(lr, betas (0.9, 0.95), weight decay on Linear weights only), clip ||grad||_2 <= 1.0.
Pretraining and full fine-tuning run in train() mode (dropout on) with weight decay 0.1, as the
companion code's Trainer; prefix and LoRA stages run in eval() mode (dropout off) with AdamW's
default 0.01 (PrefixTrainer / minLoRA notebook).

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

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class StageResult:
    steps: int
    seconds: float  # wall time of the steps run in THIS call (resumed steps not counted)
    steps_run: int
    final_loss: float
    losses: list[float] = field(default_factory=list)  # mean loss per checkpoint interval

    @property
    def steps_per_second(self) -> float:
        return self.steps_run / self.seconds if self.seconds > 0 else float("nan")


def masked_loss(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x, y (B, T): mean cross-entropy over the positions where y != IGNORE."""
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE)


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
                quiet: bool = False, stream: BatchStream | None = None) -> StageResult:
    """Train the trainable parameters of ``model`` in place for ``stage.iters`` steps (or until
    ``stop_at``, to simulate an interruption), resuming from ``checkpoint`` when its key matches.
    Batches come from ``stream`` (default: the digit task ``stage.task``, seeded by ``seed``)."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(decay_groups(model, stage.weight_decay), lr=stage.lr, betas=(0.9, 0.95))
    if stream is None:
        stream = TaskStream(stage.task, seed, n_prefix, stage.batch_size)
    torch.manual_seed(seed)  # dropout draws
    step, losses = 0, []
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved.get("key") == key:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            stream.load_state(saved["stream"])
            torch.set_rng_state(saved["torch_rng"])
            step, losses = saved["step"], list(saved["losses"])
    model.train(stage.dropout_on)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    end = stage.iters if stop_at is None else min(stop_at, stage.iters)
    start_step, start_time, window = step, time.perf_counter(), []
    with _progress(description, stage.iters, step, quiet) as update:
        while step < end:
            x, y = stream.next()
            loss = masked_loss(model, x.to(device), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, stage.grad_clip)
            optimizer.step()
            step += 1
            window.append(loss.item())
            if step % 50 == 0 or step == end:
                update(step, sum(window[-50:]) / len(window[-50:]))
            if step % stage.checkpoint_every == 0 or step == end:
                losses.append(sum(window) / len(window))
                window = []
                if checkpoint is not None:
                    _save_atomically({"key": key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                      "stream": stream.state(), "torch_rng": torch.get_rng_state(),
                                      "step": step, "losses": losses}, checkpoint)
    model.eval()
    seconds = time.perf_counter() - start_time
    return StageResult(step, seconds, step - start_step, losses[-1] if losses else float("nan"), losses)
