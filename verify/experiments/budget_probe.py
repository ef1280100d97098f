"""How far one prefix gets with a larger cap than its record's: a budget probe.

``petrov.sec5.combines-skills`` asks a prefix on the frozen mixture model to learn sort-and-increment
(the paper: 71.59%). At the fair budget (the prefix's cap = LoRA's 4,000 steps) the prefix hit its
cap on every seed, still improving (notes/experiments.md). The probe answers "what budget would it
need": it retrains that one stage of a recorded run with a larger cap under the same rule

    every E = cap / 40 steps: held-out loss L_k and exact match X_k on the monitor set;
    stop at the first k >= 10 with min(L_{k-9..k}) > 0.99 min(L_{0..k-10})   (train.default_rule)

from the same pretrained model (pretraining is deterministic: the run's own pretrain stage, same
seed and config) and the same initial prefix (the first draw of torch.Generator(seed), as in
skills.skills, where this stage comes first). Monitoring draws no random numbers and the rule only
decides where to stop, so the probe's parameters at step s are those of the recorded run at step s
for every s the record trained: the probe *extends* the record's trajectory (tested at ci scale:
with the record's cap, the probe ends at the record's accuracy and steps).

The probe is not evidence for any verdict (the check reads the records, at the configured cap); it
is a measurement, written to ``notes/probes/skills-<scale>-seed<k>-cap<cap>.json`` (outside
notes/results, which holds sealed run records only).

    python -m verify.experiments.budget_probe --seed 2 --cap 40000
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from verify.experiments import records, scales
from verify.experiments.experiments import Runner
from verify.experiments.gpt import add_prefix
from verify.experiments.scales import config_for
from verify.experiments.skills import COMBINED_TASK, PREFIX_STAGES
from verify.experiments.tasks import greedy_scores
from verify.experiments.train import default_rule
from constructions.torch_threads import torch_threads

STAGE = f"prefix_{COMBINED_TASK}"
assert next(iter(PREFIX_STAGES)) == STAGE, "the probe's prefix init assumes this stage is trained first"


def probe_config(scale: str, cap: int) -> tuple[dict, str]:
    """The run's configuration with one extra stage, ``probe_<stage>_<cap>``: the stage's settings
    with ``cap`` steps and the rule default_rule(cap). Returns (config, probe stage name)."""
    config = config_for("skills", scale)
    name = f"probe_{STAGE}_{cap}"
    config["stages"][name] = dict(config["stages"][STAGE])
    config = scales._with_iters(config, {name: cap})  # iters and checkpoint spacing as every stage's
    config["stages"][name]["converge"] = default_rule(cap)
    return config, name


def probe(seed: int, cap: int, scale: str = "cpu", checkpoint_dir: Path | None = records.CHECKPOINT_DIR,
          quiet: bool = False) -> dict:
    """Pretrain as the recorded run does, train the sort-and-increment prefix with ``cap``, and
    return its convergence, learning curve and exact match on the run's evaluation set."""
    if cap < 1:
        raise ValueError(f"the cap must be a positive number of steps, got {cap}")
    recorded = config_for("skills", scale)
    config, name = probe_config(scale, cap)
    key = records.run_key("skills", scale, seed, recorded, records.code_hash())  # the run's own key:
    directory = None if checkpoint_dir is None else checkpoint_dir / "skills" / scale / f"seed{seed}"
    start = time.perf_counter()
    with torch_threads(1):
        run = Runner(config, seed, "cpu", directory, key, quiet, label=f"probe seed {seed} ")
        pretrained = run.new_model()
        run.stage(pretrained, "pretrain")  # reuses the run's pretrain checkpoint when present
        model = copy.deepcopy(pretrained)
        add_prefix(model, recorded["prefix_length"], torch.Generator().manual_seed(seed))
        run.stage(model, name)
        exact, per_token = greedy_scores(model, COMBINED_TASK, seed, recorded["n_prefix"], recorded["eval_examples"])
    return {"experiment": "skills", "scale": scale, "seed": seed, "stage": STAGE, "cap": cap,
            "run_key": key, "convergence": run.convergence[name], "curve": run.curves[name],
            "accuracy": {COMBINED_TASK: exact}, "token_accuracy": {COMBINED_TASK: per_token},
            "training": run.timings[name], "seconds_total": round(time.perf_counter() - start, 1)}


PROBES_DIR = records.RESULTS_DIR.parent / "probes"


def probe_path(scale: str, seed: int, cap: int, directory: Path = PROBES_DIR) -> Path:
    return directory / f"skills-{scale}-seed{seed}-cap{cap}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify.experiments.budget_probe",
                                     description="retrain the combines-skills prefix with a larger cap")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--cap", type=int, required=True)
    parser.add_argument("--scale", default="cpu")
    args = parser.parse_args(argv)
    try:
        config_for("skills", args.scale)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.cap < 1 or args.seed < 0:
        print("error: --cap must be positive and --seed non-negative", file=sys.stderr)
        return 2
    result = probe(args.seed, args.cap, args.scale)
    path = probe_path(args.scale, args.seed, args.cap)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"seed {args.seed}: {result['convergence']} exact {result['accuracy'][COMBINED_TASK]:.4f} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
