"""Each training experiment as a function (config, seed) -> metrics, and the record-aware runner.

``descending`` (petrov.sec5.descending-not-learnable, paper notes 4.1):
    M_0  = GPT trained from scratch on ascending sort            ("pretrained")
    M_ft = M_0 with every weight fine-tuned on descending sort    ("finetuned")
    M_pt = M_0 frozen + a prefix (n_S positions) on descending    ("prefix")
    M_r  = M_pt's prefix, trained further on ascending with the descending prefix's budget (same
           steps, lr)                                            ("recover_prefix", the positive
           control of the check: it starts where the claim's prefix ended, whose ascending
           accuracy A[prefix][ascending] is measured, and a prefix optimiser that can move
           accuracy at this budget must bring a pretrained skill back)
  metrics: exact-match accuracy of each model on the seeded 3,200-example test sets of ascending
  and descending (M_r on ascending), trainable parameter counts, per-stage steps/s and seconds, and the layer-1
  attention pattern of each model on the paper's input [2,6,0,1,4,6,3,0,1,2] followed by the
  model's own greedy answer (the sequence it attends over while generating).

Every experiment also records, through its Runner:
  curves[stage]       the learning curve of each adapter stage (train.py: step, mean training loss,
                      held-out loss, teacher-forced exact match every E steps, from step 0);
  convergence[stage]  {converged, steps, cap, rule}: whether the convergence rule stopped the stage
                      (True) or it reached its cap (False);
and the experiments with a rival to the prefix record ``forgetting`` (petrov.discussion.forgetting):
the pretraining tasks, the pretrained model's exact match on an independently seeded test set of
each (the noise control; digit tasks only), and ``restoration`` (below): whether removing the prefix
gives back the pretrained model bit for bit. The rivals' accuracies on the pretraining tasks are in
``accuracy`` (here A[finetuned][ascending]).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from constructions.torch_threads import torch_threads
from verify.experiments import records
from verify.experiments.gpt import GPT, GPTConfig, add_prefix, count_parameters, generate, unfreeze_all, without_prefix
from verify.experiments.scales import config_for
from verify.experiments.tasks import LENGTH, exact_match, monitor_set
from verify.experiments.train import BatchStream, StageConfig, StageResult, train_stage

PAPER_INPUT = (2, 6, 0, 1, 4, 6, 3, 0, 1, 2)  # notebook 01's attention-map input


class Runner:
    """Trains the stages of one (experiment, scale, seed) run with checkpoints under ``directory``."""

    def __init__(self, config: dict, seed: int, device: str, directory: Path | None, key: str,
                 quiet: bool = False, label: str = "") -> None:
        self.config, self.seed, self.device = config, seed, device
        self.directory, self.key, self.quiet, self.label = directory, key, quiet, label
        self.timings: dict[str, dict] = {}
        self.curves: dict[str, dict] = {}  # stage -> learning curve (stages with a convergence rule)
        self.convergence: dict[str, dict] = {}  # stage -> {"converged", "steps", "cap", "rule"}

    def stage(self, model: GPT, name: str, stream: BatchStream | None = None,
              monitor: tuple[torch.Tensor, torch.Tensor] | None = None) -> StageResult:
        """Train stage ``name`` of the config on ``model`` (in place), resuming from its checkpoint;
        batches from ``stream`` (default: the stage's digit task); a stage with a convergence rule
        watches ``monitor`` (default: tasks.monitor_set of the stage's digit task)."""
        stage = StageConfig(**self.config["stages"][name])
        if stage.converge is not None and monitor is None:
            monitor = monitor_set(stage.task, self.seed, self.config["n_prefix"])
        checkpoint = None if self.directory is None else self.directory / f"{name}.pt"
        result = train_stage(model, stage, self.seed, self.config["n_prefix"], checkpoint,
                             f"{self.key}:{name}", f"{self.label}{name}", quiet=self.quiet, stream=stream,
                             monitor=monitor)
        self.timings[name] = {"steps": result.steps, "steps_run": result.steps_run,
                              "seconds": round(result.seconds, 2),
                              "steps_per_second": round(result.steps_per_second, 1) if result.steps_run else None,
                              "final_loss": round(result.final_loss, 4)}
        if result.curve is not None:
            self.curves[name] = result.curve
            self.convergence[name] = {"converged": result.converged, "steps": result.steps, "cap": stage.iters,
                                      "rule": stage.converge}
        return result

    def learning(self) -> dict:
        """What every experiment records about its adapters' training: curves and convergence."""
        return {"curves": self.curves, "convergence": self.convergence}

    def accuracy(self, model: GPT, task: str) -> float:
        return exact_match(model, task, self.seed, self.config["n_prefix"], self.config["eval_examples"])

    def new_model(self) -> GPT:
        torch.manual_seed(self.seed)
        return GPT(GPTConfig(**self.config["model"])).to(self.device)


def attention_on(model: GPT, n_prefix: int, inp: tuple[int, ...] = PAPER_INPUT) -> dict:
    """Layer-1, head-1 attention (T, T) over [dummy prefix] + inp + the model's greedy answer[:-1]."""
    device = next(model.parameters()).device
    x = torch.tensor([[0] * n_prefix + list(inp)], device=device)
    answer = generate(model, x, LENGTH)  # (1, 10)
    seq = torch.cat([x, answer[:, :-1]], dim=1)  # (1, n_S + 19)
    pattern = model.attention_patterns(seq)[0][0, 0]  # (T, T)
    return {"tokens": seq[0].tolist(), "answer": answer[0].tolist(),
            "pattern": np.round(pattern.cpu().numpy(), 4).tolist()}


RESAMPLE_SEED_OFFSET = 7_000_003  # the forgetting claim's noise control: an independently seeded test set


def _logits(model: GPT, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])  # (N, T, V)


def restoration(pretrained: GPT, prefixed: GPT, x: torch.Tensor) -> dict:
    """Does removing the prefix restore the pretrained model exactly (petrov.discussion.forgetting)?
    On inputs x (N, T) of a pretraining task:
        restored(m) = [every weight of m equals the pretrained one, bit for bit]
                      and [max |logits(m, x) - logits(pretrained, x)| == 0]
    for m = the prefix model with its prefix removed (gpt.without_prefix), and for the control m' =
    the pretrained model with its largest-magnitude weight moved by one ulp (the smallest change a
    criterion could be asked to see: a criterion that compared accuracies, not bits, would call m'
    restored). Also the prefix model WITH its prefix on x, for contrast (how much the attached
    prefix moves the pretraining task's logits)."""
    reference = pretrained.state_dict()
    base = without_prefix(prefixed)
    nudged = copy.deepcopy(pretrained)
    with torch.no_grad():
        name, p = max(nudged.named_parameters(), key=lambda item: float(item[1].abs().max()))
        flat = p.view(-1)
        i = int(flat.abs().argmax())
        flat[i] = torch.nextafter(flat[i], torch.tensor(float("inf"), dtype=flat.dtype))
    target = _logits(pretrained, x)

    def compare(model: GPT) -> dict:
        state = model.state_dict()
        identical = state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in reference)
        return {"weights_identical": bool(identical),
                "max_abs_logit_diff": float((_logits(model, x) - target).abs().max())}

    return {"prefix_removed": compare(base), "one_ulp_control": {**compare(nudged), "weight": name},
            "prefix_attached_max_abs_logit_diff": float((_logits(prefixed, x) - target).abs().max()),
            "inputs": len(x)}


def descending(config: dict, seed: int, device: str = "cpu", directory: Path | None = None, key: str = "",
               quiet: bool = False) -> dict:
    """Pretrain on ascending; fine-tune fully and prefix-tune on descending; then continue the
    descending prefix on ascending (the recovery control). Returns the metrics (accuracies in [0, 1])."""
    run = Runner(config, seed, device, directory, key, quiet, label=f"seed {seed} ")
    n_prefix = config["n_prefix"]
    pretrained = run.new_model()
    run.stage(pretrained, "pretrain")
    finetuned = copy.deepcopy(pretrained)
    unfreeze_all(finetuned)
    full_params = count_parameters(finetuned)
    run.stage(finetuned, "finetune")
    prefix_generator = torch.Generator().manual_seed(seed)
    prefixed = copy.deepcopy(pretrained)
    add_prefix(prefixed, n_prefix, prefix_generator)
    prefix_params = count_parameters(prefixed)
    run.stage(prefixed, "prefix")
    recovered = copy.deepcopy(prefixed)  # starts at the trained descending prefix
    run.stage(recovered, "recover_prefix")
    models = {"pretrained": pretrained, "finetuned": finetuned, "prefix": prefixed}
    accuracy = {name: {task: run.accuracy(m, task) for task in ("ascending", "descending")}
                for name, m in models.items()}
    accuracy["recover_prefix"] = {"ascending": run.accuracy(recovered, "ascending")}
    resampled = exact_match(pretrained, "ascending", seed + RESAMPLE_SEED_OFFSET, n_prefix, config["eval_examples"])
    return {"accuracy": accuracy,
            "parameters": {"model": full_params, "full_finetune": full_params, "prefix": prefix_params},
            "training": run.timings, **run.learning(),
            "forgetting": {"pretraining_tasks": ["ascending"], "resampled_pretrained": {"ascending": resampled},
                           "restoration": restoration(pretrained, prefixed, monitor_set("ascending", seed, n_prefix)[0])},
            "attention": {name: attention_on(m, n_prefix) for name, m in models.items()}}


EXPERIMENT_FUNCTIONS: dict[str, Callable[..., dict]] = {"descending": descending}


def run_experiment(name: str, scale: str = "cpu", seeds: tuple[int, ...] = (0, 1, 2), device: str = "cpu",
                   retrain: bool = False, results_dir: Path = records.RESULTS_DIR,
                   checkpoint_dir: Path | None = records.CHECKPOINT_DIR, quiet: bool = False,
                   log: Callable[[str], None] | None = None) -> list[dict]:
    """One record per seed: the current record when its key matches (and not ``retrain``),
    otherwise train (resuming from checkpoints of the same key), write the record, return it.
    Each returned record carries ``path`` (where it lies) and ``reused`` (True: not retrained)."""
    config = config_for(name, scale)
    code = records.code_hash()
    out = []
    for seed in seeds:
        record = None if retrain else records.load_current(name, scale, seed, config, code, results_dir)
        path = records.record_path(name, scale, seed, results_dir)
        if record is None:
            key = records.run_key(name, scale, seed, config, code)
            directory = None if checkpoint_dir is None else checkpoint_dir / name / scale / f"seed{seed}"
            if retrain and directory is not None:
                for stale in directory.glob("*.pt"):
                    stale.unlink()
            start = time.perf_counter()
            with torch_threads(1):
                metrics = EXPERIMENT_FUNCTIONS[name](config, seed, device, directory, key, quiet)
            metrics["seconds_total"] = round(time.perf_counter() - start, 1)
            metrics["device"] = device
            path = records.write_record(name, scale, seed, config, code, metrics, results_dir)
            record = records.load_current(name, scale, seed, config, code, results_dir)
            reused = False
            if log is not None:
                log(f"{name} seed {seed}: trained in {metrics['seconds_total']} s -> {records.relative(path)}")
        else:
            reused = True
            if log is not None:
                log(f"{name} seed {seed}: current record {records.relative(path)}")
        out.append({**record, "path": records.relative(path), "reused": reused})
    return out
