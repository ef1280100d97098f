"""``python -m verify export-trained EXPERIMENT STAGE``: a model the training experiments trained, exported.

The run records (notes/results) keep measurements, not weights. The weights are in the stage
checkpoints every run writes, ``out/experiments/<experiment>/<scale>/seed<k>/<stage>.pt``, each tagged
``"<run key>:<stage>"`` where the run key is ``records.run_key(experiment, scale, seed, config, code)``:
the key the record of that run carries. A checkpoint is exported only when its tag is the one
today's code and configuration give (a stale checkpoint is not the model today's record measures,
and is refused), and the export says whether the committed record has the same key.

Rebuilding the trained model from the checkpoint's state dict (a stage trains one of these):
    "prefix" (L, n_S, d)          -> GPT.prefix        (prefix-tuning, gpt.add_prefix's shape)
    "soft_prompt" (n_S, d)        -> GPT.soft_prompt
    "<name>.lora_A" (r, in)       -> those Linears wrapped by gpt.add_lora (one rank r for all,
                                     alpha = the config's lora alpha, default 1 as add_lora's)
    none of these                 -> the plain GPT (pretraining, full fine-tuning)
then ``load_state_dict(strict=True)``: every tensor must fit and none may be left over.

``train=True`` (``--train``): when the checkpoint is missing or stale, the experiment is run for that
seed first (the function and key ``verify experiments`` uses, resuming from checkpoints of the
current key), writing checkpoints and NO record: committed records are never touched. Runs are
deterministic, so the model exported is the one whose measurements the record holds.

Before anything is written the export is compared with the GPT in float64 on seeded token
sequences: max |logits_export - logits_gpt| <= PARITY (1e-10), else nothing is written. The
TransformerLens format (``lens``) takes a model without a prefix (spec_export.save_gpt_lens says why)
and checks TransformerLens's own logits to the same bound.

``figure`` (``--figure FILE.png``): the exported model's head-averaged attention, computed by the
one forward pass (``ExportedGPT.attention_patterns``), drawn on the input of the run record's own
attention figure; the sec5 figures under notes/figures are drawn from the records, whose maps
tests/test_trained_export.py holds equal to these to rounding.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from constructions.errors import PromptproofError
from constructions.torch_threads import torch_threads
from verify.experiments import records
from verify.experiments.experiments import EXPERIMENT_FUNCTIONS
from verify.experiments.gpt import GPT, GPTConfig, add_lora, freeze
from verify.experiments.scales import EXPERIMENTS, SCALES, config_for
from verify.experiments.spec_export import ExportedGPT, export_gpt, gpt_logits, save_gpt, save_gpt_lens

PARITY = 1e-10
FORMATS = ("spec", "lens")
PARITY_SEQUENCES = 4


class TrainedExportError(PromptproofError):
    """A trained model that cannot be exported: its message is one line naming what to do."""


@dataclass(frozen=True)
class TrainedRun:
    """Where one stage of one training run keeps its weights, and the key they must carry."""

    experiment: str
    scale: str
    seed: int
    stage: str
    key: str  # the run key (records.run_key); the checkpoint's tag is f"{key}:{stage}"
    directory: Path  # the run's checkpoint directory
    config: dict

    @property
    def checkpoint(self) -> Path:
        return self.directory / f"{self.stage}.pt"

    def describe(self) -> str:
        return f"{self.experiment} {self.scale} seed {self.seed} stage {self.stage}"


def locate(experiment: str, stage: str, seed: int = 0, scale: str = "cpu",
           checkpoint_dir: Path | None = None) -> TrainedRun:
    """The run and stage named, validated: TrainedExportError for an unknown experiment, scale or
    stage. Checkpoints under ``checkpoint_dir`` (default records.CHECKPOINT_DIR, read at call time)."""
    checkpoint_dir = records.CHECKPOINT_DIR if checkpoint_dir is None else checkpoint_dir
    if experiment not in EXPERIMENTS:
        raise TrainedExportError(f"unknown experiment {experiment!r}; known: {', '.join(EXPERIMENTS)}")
    if scale not in SCALES:
        raise TrainedExportError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    if seed < 0:
        raise TrainedExportError(f"seed must be >= 0, got {seed}")
    config = config_for(experiment, scale)
    if stage not in config["stages"]:
        raise TrainedExportError(f"{experiment} has no stage {stage!r}; its stages: {', '.join(config['stages'])}")
    key = records.run_key(experiment, scale, seed, config, records.code_hash())
    return TrainedRun(experiment, scale, seed, stage, key, checkpoint_dir / experiment / scale / f"seed{seed}", config)


def _saved_state(run: TrainedRun) -> dict | None:
    """The checkpoint's model state if the checkpoint exists and carries the current tag."""
    if not run.checkpoint.exists():
        return None
    try:
        saved = torch.load(run.checkpoint, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say so, do not guess
        raise TrainedExportError(f"{records.relative(run.checkpoint)} is not a readable checkpoint ({exc})") from None
    if not isinstance(saved, dict) or saved.get("key") != f"{run.key}:{run.stage}":
        return None
    return saved["model"]


def rebuild(state: dict[str, torch.Tensor], config: dict) -> GPT:
    """The trained model from its state dict (module docstring), loaded strictly, in eval() mode."""
    model = GPT(GPTConfig(**config["model"]))
    freeze(model)
    L, d = model.config.n_layer, model.config.n_embd
    for name, leading in (("prefix", (L,)), ("soft_prompt", ())):
        if name not in state:
            continue
        shape = tuple(state[name].shape)
        if len(shape) != len(leading) + 2 or shape[:len(leading)] != leading or shape[-1] != d:
            expected = "(n_layer, n_S, n_embd)" if leading else "(n_S, n_embd)"
            raise TrainedExportError(f"the checkpoint does not fit the configured model: {name} has shape {shape}, "
                                     f"expected {expected} with n_layer {L}, n_embd {d}")
        setattr(model, name, torch.nn.Parameter(torch.empty(shape), requires_grad=False))
    wrapped = sorted(k[: -len(".lora_A")] for k in state if k.endswith(".lora_A"))
    if wrapped:
        ranks = {state[f"{name}.lora_A"].shape[0] for name in wrapped}
        if len(ranks) != 1:
            raise TrainedExportError(f"the checkpoint does not fit the configured model: LoRA ranks {sorted(ranks)}")
        try:  # the experiments' own wrapping, on exactly the checkpoint's Linears
            add_lora(model, ranks.pop(), tuple(wrapped), float(config.get("lora", {}).get("alpha", 1.0)))
        except ValueError as exc:
            raise TrainedExportError(f"the checkpoint does not fit the configured model: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise TrainedExportError(f"the checkpoint does not fit the configured model: {' '.join(first[:2])}") from None
    return model.eval()


def train_run(run: TrainedRun, device: str = "cpu", quiet: bool = False) -> None:
    """Run the experiment for ``run.seed`` into its checkpoint directory (resuming), writing no record."""
    with torch_threads(1):
        EXPERIMENT_FUNCTIONS[run.experiment](run.config, run.seed, device, run.directory, run.key, quiet)


def load_trained(run: TrainedRun, train: bool = False, device: str = "cpu", quiet: bool = False) -> GPT:
    """The stage's trained model; trains the run first when ``train`` and its checkpoint is missing
    or stale, else TrainedExportError with the command that makes it."""
    state = _saved_state(run)
    if state is None and train:
        train_run(run, device, quiet)
        state = _saved_state(run)
    if state is None:
        where = records.relative(run.checkpoint)
        why = "is stale (another code or configuration)" if run.checkpoint.exists() else "does not exist"
        raise TrainedExportError(f"the checkpoint of {run.describe()} ({where}) {why}; add --train to train "
                                 f"that run (checkpoints only, no record is written)")
    return rebuild(state, run.config)


def parity_tokens(model: GPT, seed: int) -> np.ndarray:
    """(PARITY_SEQUENCES, T) seeded token ids, T the longest content an adapted model takes: the
    block size, less the rows a prepended prefix or soft prompt puts in front."""
    c = model.config
    adapter = model.prefix if model.prefix is not None else model.soft_prompt
    rows = adapter.shape[-2] if adapter is not None and c.prefix_mode == "prepend" else 0
    return np.random.default_rng(seed).integers(0, c.vocab_size, size=(PARITY_SEQUENCES, c.block_size - rows))


def spec_parity(model: GPT, exported: ExportedGPT, tokens: np.ndarray) -> float:
    """max |logits of the spec export - logits of the GPT| over the rows the export represents, both float64."""
    reference = gpt_logits(copy.deepcopy(model).double(), tokens)  # (B, T, V)
    return float(np.abs(exported.logits(tokens) - reference[:, exported.represented_rows(tokens.shape[1])]).max())


def figure_tokens(run: TrainedRun, record: dict | None) -> list[int]:
    """The token sequence the run record's attention figure is drawn on: skills' ``attention_maps``
    tokens (a double_hist test input + its answer), or the ``attention`` tokens of the stage's model
    (descending: the paper's input + that model's greedy answer). ``record``: the run's current
    record (:func:`current_record`); None refuses."""
    if record is None:
        raise TrainedExportError(f"--figure needs the current record of {run.experiment} {run.scale} seed {run.seed} "
                                 "(its attention input); there is none")
    metrics = record["metrics"]
    if "attention_maps" in metrics:
        return list(metrics["attention_maps"]["tokens"])
    by_model = metrics.get("attention", {})
    name = {"pretrain": "pretrained", "finetune": "finetuned"}.get(run.stage, run.stage)
    if name in by_model:
        return list(by_model[name]["tokens"])
    raise TrainedExportError(f"the record of {run.experiment} draws no attention figure of stage {run.stage}")


def one_forward_attention(exported: ExportedGPT, tokens: list[int]) -> tuple[np.ndarray, int]:
    """Head-averaged attention of the exported model on the one forward pass: (L, rows, C) with
    rows = the content queries the export represents and C = n_S prefix keys (first) + content keys;
    and n_S (0 without a prefix)."""
    patterns = exported.attention_patterns(np.asarray([tokens]))  # per layer (1, H, rows, C)
    n = exported.n_prefix if exported.prefix is not None else 0
    return np.stack([p[0].mean(axis=0) for p in patterns]), n


def draw_attention(exported: ExportedGPT, tokens: list[int], path: Path, title: str) -> Path:
    """One panel per layer of :func:`one_forward_attention`, the prefix keys summed into one column
    (ΣP), as the sec5 figures draw them; written atomically."""
    from verify.experiments.figures import _save, plt
    from verify.experiments.skills_figures import content_view

    maps, n = one_forward_attention(exported, tokens)  # (L, rows, C)
    if maps.shape[1] > len(tokens):
        raise TrainedExportError("--figure: a prepended soft prompt's rows have no tokens to label them")
    rows = [str(t) for t in tokens[len(tokens) - maps.shape[1]:]]
    columns = [str(t) for t in tokens[len(tokens) - (maps.shape[2] - n):]]
    fig, axes = plt.subplots(1, len(maps), figsize=(4.8 * len(maps), 4.6), squeeze=False)
    for layer, pattern in enumerate(maps):
        ax = axes[0, layer]
        ax.imshow(content_view(pattern, n), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(columns) + 1), ["ΣP", *columns], fontsize=5)
        ax.set_yticks(range(len(rows)), rows, fontsize=5)
        ax.set_title(f"layer {layer + 1}", fontsize=9)
    fig.suptitle(title, fontsize=9)
    return _save(fig, Path(path))


@dataclass(frozen=True)
class TrainedExport:
    run: TrainedRun
    paths: list[Path]
    parity: float  # max |logits difference| measured before writing (spec: against the GPT; lens: TL's)
    record: str  # what the committed record says about this run: "same key" / "other key" / "none" / "refused"


def current_record(run: TrainedRun, results_dir: Path | None = None) -> tuple[str, dict | None]:
    """(status, record) of the run's committed record: "same key" with the record when it is
    current (the checkpoint's code and config are the record's); else None with "other key" (a
    stale record exists), "none" or "refused" (its digest is wrong)."""
    results_dir = records.RESULTS_DIR if results_dir is None else results_dir
    try:
        record = records.load_current(run.experiment, run.scale, run.seed, run.config, records.code_hash(),
                                      results_dir)
    except records.RecordRefused:
        return "refused", None
    if record is not None:
        return "same key", record
    stale = records.record_path(run.experiment, run.scale, run.seed, results_dir).exists()
    return ("other key" if stale else "none"), None


def export_trained(experiment: str, stage: str, out: Path, seed: int = 0, scale: str = "cpu", fmt: str = "spec",
                   train: bool = False, device: str = "cpu", checkpoint_dir: Path | None = None,
                   results_dir: Path | None = None, quiet: bool = False,
                   log: Callable[[str], None] | None = None, figure: Path | None = None) -> TrainedExport:
    """Export one trained stage (module docstring); nothing is written unless the parity holds.
    ``figure``: also draw the exported model's attention on the one forward pass, on the input of
    the run record's attention figure (:func:`figure_tokens`), into that PNG."""
    if fmt not in FORMATS:
        raise TrainedExportError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if Path(out).exists() and not Path(out).is_dir():
        raise TrainedExportError(f"cannot export into {out}: it is not a directory")
    if figure is not None and (Path(figure).suffix != ".png" or Path(figure).is_dir()):
        raise TrainedExportError(f"--figure {figure}: expected a .png file path")
    run = locate(experiment, stage, seed, scale, checkpoint_dir)
    model = load_trained(run, train, device, quiet)
    status, record = current_record(run, results_dir)
    tokens_for_figure = None if figure is None else figure_tokens(run, record)
    exported = export_gpt(model)
    provenance = {"trained_run": {"experiment": experiment, "scale": scale, "seed": seed, "stage": stage,
                                  "run_key": run.key, "checkpoint": records.relative(run.checkpoint)}}
    tokens = parity_tokens(model, seed)
    if fmt == "lens":
        paths, parity = save_gpt_lens(model, Path(out), tokens, provenance)
    else:
        parity = spec_parity(model, exported, tokens)
        if not parity <= PARITY:
            raise TrainedExportError(f"the export's logits differ from the GPT's by {parity:.3g} > {PARITY:g}; "
                                     "nothing written")
        paths = save_gpt(model, Path(out), provenance)
    if tokens_for_figure is not None:
        paths.append(draw_attention(exported, tokens_for_figure, Path(figure),
                                    f"{run.describe()}: head-averaged attention on the one forward pass "
                                    "(exported weights); ΣP = total attention on the prefix keys"))
    if log is not None:
        log(f"{run.describe()}: parity {parity:.2e} (bound {PARITY:g}); record of this run: {status}")
    return TrainedExport(run, paths, parity, status)
