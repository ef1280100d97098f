"""``python -m verify``: list | all | run | real-model | export | export-trained | check-export | figures | bench
| experiments | audit-records | mutants.

* ``export-trained EXPERIMENT STAGE [--seed K] [--scale cpu] --out DIR [--format spec|lens] [--train]``:
  a model a training run trained (its stage checkpoint, tagged with the current run key), exported
  as the one transformer spec or to TransformerLens after a float64 parity check
  (verify/experiments/trained_export.py).

* ``audit-records [--seeds K] [--seed N] [--experiment NAME] [--scale cpu] [--json FILE]``: retrain
  K recorded runs chosen by default_rng(N) into a temporary directory and report whether each
  reproduces its record bit-identically apart from timings (verify/experiments/audit.py).
* ``figures REPORT.json [--out DIR]``: draw the figures that come from a report (the Oymak claims',
  verify/checks/oymak/figures.py) into DIR, all or nothing.
* ``mutants [--subset fast|all] [--seed N] [--json FILE]``: apply seeded mutants to the
  constructions, the forward pass, the theorems and the checks' inputs, run the claim each must
  be caught by, print the mutation score and every survivor (verify/mutants/).

Exit codes: 0 = every claim run passed (or was skipped), every audited run reproduced, every
mutant was refuted; 1 = a claim failed or errored, exported weights fail their checks, an audited
run does not reproduce, a mutant survived; 2 = bad input (one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from constructions.errors import PromptproofError
from theorems.claims import CLAIMS, claims_matching
from verify.experiments.executors import EXECUTORS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(PromptproofError):
    """Bad command-line input."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line and exits 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> Parser:
    parser = Parser(prog="python -m verify", description="Machine-checked claims of context-based fine-tuning theory.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    listing = sub.add_parser("list", help="one line per claim: id, paper, section, evidence kind")
    listing.add_argument("--where", action="store_true",
                         help="per claim, where it lives: its check (file:line), the constructions, theorems, "
                              "machinery or training experiment it rests on, its notes and its tests")

    def add_run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
        p.add_argument("--seed", type=_seed, default=0, help="seed of every random draw (default 0)")

    def add_jobs_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--jobs", type=_positive_int, default=1, metavar="J",
                       help="training runs to train at a time, one process and one thread each (default 1; "
                            "--jobs 2 on a 2-core machine)")
        p.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="where training runs execute: local (default; --jobs processes) | ray (one Ray task "
                            "per run; needs the 'cluster' extra)")
        p.add_argument("--address", metavar="ADDR",
                       help="with --executor ray: the cluster to join, HOST:PORT (default: find or start a local one)")

    def add_processes_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--processes", type=_positive_int, default=None, metavar="P",
                       help="run the claims' checks in P processes (default: one per usable core, at most 4, "
                            "when the chosen claims take long enough to pay for starting them; else 1); "
                            "the report is the same")

    p_all = sub.add_parser("all", help="run every claim")
    add_run_options(p_all)
    p_all.add_argument("--quick", action="store_true", help="skip the training claims (reported as skipped)")
    p_all.add_argument("--retrain", action="store_true", help="ignore cached training records")
    add_jobs_option(p_all)
    add_processes_option(p_all)

    p_run = sub.add_parser("run", help="run the claims whose id starts with one of the given prefixes")
    p_run.add_argument("ids", nargs="+", metavar="ID_OR_PREFIX")
    add_run_options(p_run)
    add_jobs_option(p_run)
    add_processes_option(p_run)

    p_real = sub.add_parser("real-model", help="run the real-model claims (peft prefix-tuning on a local "
                                               "Hugging Face model) and write their figures")
    p_real.add_argument("--model", type=Path, metavar="DIR",
                        help="local model directory (model_type bert, roberta, gpt2, llama, qwen2 or mistral; "
                             "eager attention); default: the packaged all-MiniLM-L6-v2")
    add_run_options(p_real)
    p_real.add_argument("--figures", type=Path, default=Path("notes/figures"), metavar="DIR",
                        help="where the PNG figures go (default notes/figures; created if missing)")

    p_export = sub.add_parser("export", help="write a construction as weights (safetensors + config.json)")
    p_export.add_argument("name", help="unconditional | conditional | long-response | two-token")
    p_export.add_argument("--out", type=Path, required=True, metavar="DIR")
    p_export.add_argument("--target", help="target string (unconditional): also write its virtual token")
    p_export.add_argument("--map", type=Path, metavar="FILE", help="JSON map (conditional constructions)")
    p_export.add_argument("--vocab", help="ascii (default) | letters:N | literal:SYMBOLS")
    p_export.add_argument("--length", type=_positive_int, help="N, the target length (unconditional)")
    p_export.add_argument("--response-length", type=_positive_int, help="N0 (long-response)")
    p_export.add_argument("--inverse-temperature", type=_positive_float, help="T, folded into W_Q")
    p_export.add_argument("--format", choices=("safetensors", "lens"), default="safetensors",
                          help="safetensors (default): model.safetensors + config.json, re-checked by check-export | "
                               "lens: a TransformerLens model (tl_config.json, tl_model.safetensors, load_lens.py; "
                               "needs the 'lens' extra)")

    p_trained = sub.add_parser("export-trained", help="write a model the training experiments trained (a stage "
                                                      "checkpoint of the current code) as the spec or to TransformerLens")
    p_trained.add_argument("experiment", metavar="EXPERIMENT", help="descending | elicit | skills | translation")
    p_trained.add_argument("stage", metavar="STAGE", help="a stage of its configuration, e.g. prefix_double_hist")
    p_trained.add_argument("--seed", type=_seed, default=0)
    p_trained.add_argument("--scale", default="cpu", help="ci | cpu (default) | paper")
    p_trained.add_argument("--out", type=Path, required=True, metavar="DIR")
    p_trained.add_argument("--format", choices=("spec", "lens"), default="spec",
                           help="spec (default): model.safetensors + config.json (+ adapters.safetensors), "
                                "reloaded by verify.experiments.spec_export.load_gpt | lens: TransformerLens "
                                "(no prefix; needs the 'lens' extra)")
    p_trained.add_argument("--train", action="store_true",
                           help="train the run first when its checkpoint is missing or stale (checkpoints only, "
                                "no record is written)")
    p_trained.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p_trained.add_argument("--figure", type=Path, metavar="FILE.png",
                           help="also draw the exported model's attention on the one forward pass, on the input "
                                "of the run record's attention figure")

    p_check = sub.add_parser("check-export", help="reload exported weights and re-run the construction's checks")
    p_check.add_argument("directory", type=Path)
    p_check.add_argument("--json", type=Path, metavar="FILE")
    p_check.add_argument("--seed", type=_seed, default=0)

    p_fig = sub.add_parser("figures", help="draw the figures that come from a report (the Oymak claims': "
                                           "notes/figures/oymak_*.png) from a `verify all --json` file")
    p_fig.add_argument("report", type=Path, metavar="REPORT.json")
    p_fig.add_argument("--out", type=Path, default=Path("notes/figures"), metavar="DIR",
                       help="where the PNG figures go (default notes/figures; created if missing)")

    p_bench = sub.add_parser("bench", help="benchmarks that print figures and ratios")
    p_bench.add_argument("suite", nargs="?", default="constructions", choices=["constructions", "training"],
                         help="constructions (default): verification speed; training: steps/s of the experiments")
    p_bench.add_argument("--targets", type=_positive_int, default=10_000, help="random targets to verify")
    p_bench.add_argument("--steps", type=_positive_int, default=100, help="training: steps timed per stage")
    p_bench.add_argument("--jobs", type=_positive_int, default=2, metavar="J",
                         help="training: also estimate the wall time of retraining with J runs at a time (default 2)")

    from verify.experiments.scales import EXPERIMENTS, SCALES

    p_exp = sub.add_parser("experiments", help="training experiments: use current run records or train, "
                                                "print accuracies and benchmark, write figures")
    p_exp.add_argument("name", choices=EXPERIMENTS, metavar="NAME", help=" | ".join(EXPERIMENTS))
    p_exp.add_argument("--scale", choices=SCALES, default="cpu", help="ci | cpu (default) | paper")
    p_exp.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p_exp.add_argument("--seeds", type=_positive_int, default=3, help="seeds 0..N-1 (default 3)")
    p_exp.add_argument("--retrain", action="store_true", help="ignore run records and checkpoints")
    add_jobs_option(p_exp)
    p_exp.add_argument("--figures", type=Path, default=Path("notes/figures"), metavar="DIR",
                       help="where the PNG figures go (default notes/figures)")

    p_audit = sub.add_parser("audit-records", help="retrain randomly chosen recorded runs from scratch (in a "
                                                   "temporary directory) and check they reproduce bit-identically")
    p_audit.add_argument("--seeds", type=_positive_int, default=1, metavar="K", help="runs to audit (default 1)")
    p_audit.add_argument("--seed", type=_seed, default=0, help="seed of the choice of runs (default 0)")
    p_audit.add_argument("--experiment", choices=EXPERIMENTS, metavar="NAME",
                         help="audit only this experiment's runs: " + " | ".join(EXPERIMENTS))
    p_audit.add_argument("--scale", choices=SCALES, default="cpu", help="ci | cpu (default) | paper")
    p_audit.add_argument("--json", type=Path, metavar="FILE", help="also write the audit as JSON")

    p_mut = sub.add_parser("mutants", help="apply seeded mutants to the constructions, forward pass, theorems and "
                                           "checks' inputs; print the mutation score and every survivor")
    p_mut.add_argument("--subset", choices=("fast", "all"), default="all",
                       help="fast: the subset the tests run | all (default)")
    p_mut.add_argument("--seed", type=_seed, default=0, help="seed of the claims and of the mutants' choices")
    p_mut.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    return parser


def _number(cast: type, what: str, acceptable: Callable[[float], bool]) -> Callable[[str], Any]:
    """An argparse type: ``cast(text)`` that must satisfy ``acceptable``, else '... must be <what>'."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not acceptable(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


_seed = _number(int, "a non-negative integer", lambda v: v >= 0)
_positive_int = _number(int, "a positive integer", lambda v: v >= 1)
_positive_float = _number(float, "a positive finite number", lambda v: 0 < v < float("inf"))


def _check_output_path(path: Path | None) -> None:
    """Refuse an unwritable report path before any work is done."""
    if path is None:
        return
    if not path.parent.resolve().is_dir():
        raise UsageError(f"cannot write {path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise UsageError(f"cannot write {path}: it is a directory")


def cmd_list(console: Console, where: bool = False) -> int:
    from verify.registry import CHECKS

    if where:
        from verify.where import all_locations

        for loc in all_locations():
            print(loc.claim_id)
            for label, paths in (("check", (loc.check,)), ("constructions", loc.constructions),
                                 ("theorems", loc.theorems), ("machinery", loc.machinery),
                                 ("experiment", loc.experiments), ("notes", loc.notes), ("tests", loc.tests)):
                if paths:
                    print(f"  {label + ':':15}{', '.join(paths)}")
        return EXIT_OK
    for claim in CLAIMS:
        if claim.id in CHECKS:
            print(f"{claim.id}\t{claim.paper}\t{claim.section}\t{claim.evidence_kind}")
    return EXIT_OK


def cmd_run(patterns: list[str], args: argparse.Namespace, console: Console) -> int:
    from verify.registry import CHECKS, Context
    from verify.report import render_table, report_json, write_json_atomically

    implemented = [c for c in CLAIMS if c.id in CHECKS]
    chosen = [c for c in claims_matching(patterns) if c.id in CHECKS]
    for pattern in patterns:
        if not any(c.id.startswith(pattern) for c in implemented):
            raise UsageError(f"unknown claim id or prefix {pattern!r} (see: python -m verify list)")
    _check_output_path(args.json)
    context = Context(seed=args.seed, quick=getattr(args, "quick", False), retrain=getattr(args, "retrain", False))
    executor = _executor(args, None if context.quick else "cpu")
    if not context.quick:
        context = _prepare_training(chosen, context, executor)
    results = _run_claims(chosen, context, getattr(args, "processes", None))
    render_table(results, console)
    if args.json is not None:
        write_json_atomically(report_json(results, args.seed), args.json)
    return EXIT_OK if all(r.status in ("pass", "skipped") for r in results) else EXIT_FAILED


def _executor(args: argparse.Namespace, device: str | None) -> Any:
    """The executor that --executor, --address and --jobs name, validated before any work (bad
    input, ray missing, an unreachable cluster, cuda without a GPU: exit 2, one line); with a
    ``device``, connected and checked for it (None: --quick, nothing will train)."""
    from verify.experiments.executors import make_executor

    executor = make_executor(args.executor, args.address, args.jobs)
    if device is not None:
        executor.check(device)
    return executor


def _prepare_training(chosen: list, context: Any, executor: Any) -> Any:
    """Train (or find current records of) every run the chosen training checks rest on, each run
    once, on ``executor``; the checks then read them from the returned context."""
    from dataclasses import replace

    from verify.experiments.schedule import needed_runs, prepare_runs
    from verify.registry import TRAININGS

    runs = needed_runs([TRAININGS[c.id] for c in chosen if c.id in TRAININGS], context.seed)
    if not runs:
        return context
    err = Console(stderr=True)
    try:
        prepared = prepare_runs(runs, context.retrain, log=lambda line: err.print(line, highlight=False),
                                executor=executor)
    finally:
        executor.close()
    return replace(context, prepared_runs=prepared)


def _run_claims(chosen: list, context: Any, processes: int | None = 1) -> list:
    """Run ``chosen`` claims in order with a progress bar (or one line per claim) on stderr;
    with ``processes`` > 1 in several processes (verify.registry.run_claims_parallel: the same
    results, in the same order), one line per claim as it finishes. ``None``: as many as
    ``registry.default_processes`` finds worth it."""
    from verify.registry import default_processes, run_claim, run_claims_parallel

    if processes is None:
        processes = default_processes(chosen)
    results = []
    err = Console(stderr=True)
    if processes > 1 and len(chosen) > 1:
        err.print(f"running {len(chosen)} claims in {processes} processes ...", highlight=False)
        return run_claims_parallel(chosen, context, processes, on_done=lambda r: err.print(
            f"done {r.id}: {r.status} ({r.seconds:.1f} s)", highlight=False))
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as progress:
        bar = progress.add_task("claims", total=len(chosen))
        for claim in chosen:
            progress.update(bar, description=claim.id)
            if not err.is_terminal:
                err.print(f"running {claim.id} ...", highlight=False)
            results.append(run_claim(claim, context))
            progress.advance(bar)
    return results


REAL_MODEL_CLAIMS = ("petrov.sec4.real-model", "petrov.sec6.cross-layer-attention-shift")


def cmd_real_model(args: argparse.Namespace, console: Console) -> int:
    """Validate everything (output paths, the optional extra, the model directory, that it loads
    with eager attention) before any work; write the JSON report and the figures only at the end."""
    from verify.real_model import missing_extra
    from verify.registry import Context
    from verify.report import render_table, report_json, write_json_atomically

    _check_output_path(args.json)
    figures = args.figures
    if figures.exists() and not figures.is_dir():
        raise UsageError(f"cannot write figures into {figures}: it is not a directory")
    reason = missing_extra(need_default_model=args.model is None)
    if reason is not None:
        raise UsageError(reason)
    from verify.checks.petrov_sec4_real import shared_suite
    from verify.real_model.figures import write_figures
    from verify.real_model.loading import default_model_dir
    from verify.real_model.suite import validate

    model_dir = (args.model if args.model is not None else default_model_dir()).resolve()
    validate(model_dir)  # ModelDirError (exit 2): missing, unsupported, not eager, unusable tokenizer
    chosen = [c for c in CLAIMS if c.id in REAL_MODEL_CLAIMS]
    context = Context(seed=args.seed, model_dir=model_dir)
    results = _run_claims(chosen, context)
    render_table(results, console)
    if all(r.status in ("pass", "fail") for r in results):
        suite, _ = shared_suite(context)  # cached: the run the claims just made
        for path in write_figures(suite, figures):
            console.print(f"wrote {path}", highlight=False)
    if args.json is not None:
        write_json_atomically(report_json(results, args.seed), args.json)
    return EXIT_OK if all(r.status == "pass" for r in results) else EXIT_FAILED


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from verify.exports import run_export

    options = {"length": args.length, "response_length": args.response_length,
               "inverse_temperature": args.inverse_temperature}
    exported = run_export(args.name, args.out, args.vocab, args.target, args.map, options, args.format)
    for path in exported.paths:
        console.print(f"wrote {path}", highlight=False)
    if exported.summary is not None:
        console.print(exported.summary, highlight=False)
    return EXIT_OK


def cmd_export_trained(args: argparse.Namespace, console: Console) -> int:
    from verify.experiments.trained_export import export_trained

    log = lambda line: console.print(line, highlight=False)  # noqa: E731
    exported = export_trained(args.experiment, args.stage, args.out, args.seed, args.scale, args.format,
                              args.train, args.device, log=log, figure=args.figure)
    for path in exported.paths:
        console.print(f"wrote {path}", highlight=False)
    return EXIT_OK


def cmd_check_export(args: argparse.Namespace, console: Console) -> int:
    from verify.exports import check_export
    from verify.report import write_json_atomically

    _check_output_path(args.json)
    found = check_export(args.directory, args.seed)
    console.print("weights (information): " + ", ".join(f"{k}={v}" for k, v in found.weights.items()))
    for name, item in found.results.items():
        verdict = "[green]holds[/]" if item["holds"] else "[bold red]FAILS[/]"
        details = ", ".join(f"{k}={v}" for k, v in item.items() if k != "holds")
        console.print(f"{name}: {verdict}  {details}")
    console.print(f"{found.construction}: the theorem {'holds' if found.holds else 'does NOT hold'} for these weights")
    if args.json is not None:
        write_json_atomically({"construction": found.construction, "holds": found.holds,
                               "weights": found.weights, "checks": found.results}, args.json)
    return EXIT_OK if found.holds else EXIT_FAILED


def cmd_figures(args: argparse.Namespace, console: Console) -> int:
    """Draw the report's figures into a temporary folder beside ``--out``, then move them in:
    a bad report leaves nothing behind."""
    import json
    import shutil
    import tempfile

    from verify.checks.oymak.figures import plot_figures

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"cannot write figures into {out}: it is not a directory")
    try:
        report = json.loads(args.report.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {args.report}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{args.report} is not JSON: {exc.msg} (line {exc.lineno})") from None
    if not (isinstance(report, dict) and isinstance(report.get("claims"), list)
            and all(isinstance(c, dict) and "id" in c and "status" in c for c in report["claims"])):
        raise UsageError(f"{args.report} is not a promptproof report (no list of claims with id and status)")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".figures-") as tmp:
        try:
            drawn = plot_figures(report, tmp)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise UsageError(f"{args.report}: a claim's evidence lacks what its figure needs "
                             f"({type(exc).__name__}: {exc})") from None
        written = [shutil.move(path, out / Path(path).name) for path in drawn]
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    if not written:
        console.print("no figures: the report has none of the Oymak claims passing or failing", highlight=False)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    if args.suite == "training":
        from verify.bench.training import bench_training

        bench_training(console, args.steps, args.jobs)
        return EXIT_OK
    from verify.bench.constructions import bench_constructions

    bench_constructions(console, args.targets)
    return EXIT_OK


def cmd_experiments(args: argparse.Namespace, console: Console) -> int:
    """Validate the figure directory, the executor and the device first (cuda: on this machine,
    or somewhere in the Ray cluster); then records or training, table, figures."""
    if args.figures.exists() and not args.figures.is_dir():
        raise UsageError(f"cannot write figures into {args.figures}: it is not a directory")
    executor = _executor(args, args.device)
    from verify.experiments.present import present
    from verify.experiments.schedule import RunFailed, RunId, prepare_runs

    err = Console(stderr=True)
    wanted = [RunId(args.name, args.scale, seed) for seed in range(args.seeds)]
    try:
        prepared = prepare_runs(wanted, args.retrain, device=args.device,
                                log=lambda line: err.print(line, highlight=False), executor=executor)
    finally:
        executor.close()
    failed = [str(prepared[run]) for run in wanted if isinstance(prepared[run], RunFailed)]
    if failed:
        console.print("\n".join(failed), highlight=False)
        return EXIT_FAILED
    runs = [prepared[run] for run in wanted]
    for path in present(args.name, runs, console, args.figures):
        console.print(f"wrote {path}", highlight=False)
    return EXIT_OK


def cmd_audit_records(args: argparse.Namespace, console: Console) -> int:
    """Choose the runs (bad input exits 2 before any training), retrain and compare each, table."""
    from rich.table import Table

    from verify.experiments.audit import AuditInputError, all_reproduce, audit, choose_runs, recorded_runs
    from verify.experiments import records
    from verify.report import write_json_atomically

    _check_output_path(args.json)
    try:
        chosen = choose_runs(recorded_runs(records.RESULTS_DIR, args.experiment, args.scale), args.seeds, args.seed)
    except AuditInputError as exc:
        raise UsageError(f"audit-records: {exc} (experiment {args.experiment or 'any'}, scale {args.scale}, "
                         f"in {records.relative(records.RESULTS_DIR)})") from None
    err = Console(stderr=True)
    rows = audit(chosen, records.RESULTS_DIR, log=lambda line: err.print(line, highlight=False))
    table = Table(title=f"audit of {len(rows)} recorded run(s), choice seed {args.seed}")
    for column in ("run", "record", "status", "detail", "s"):
        table.add_column(column, overflow="fold")
    for row in rows:
        style = "green" if row.status == "reproduces" else "bold red"
        table.add_row(str(row.run), row.record, f"[{style}]{row.status}[/]", row.detail, f"{row.seconds:.0f}")
    console.print(table)
    ok = sum(r.status == "reproduces" for r in rows)
    console.print(f"{ok} of {len(rows)} run(s) reproduce bit-identically (timing fields excluded)", highlight=False)
    if args.json is not None:
        write_json_atomically({"seed": args.seed, "runs": [r.to_json() for r in rows]}, args.json)
    return EXIT_OK if all_reproduce(rows) else EXIT_FAILED


def cmd_mutants(args: argparse.Namespace, console: Console) -> int:
    """Resolve every mutant first (a missing target is bad input, exit 2), then run, table, score."""
    from rich.table import Table

    from verify.mutants import EQUIVALENT, MutantError, run_mutants, select
    from verify.report import write_json_atomically

    _check_output_path(args.json)
    chosen = select(args.subset)
    try:
        for m in chosen:
            m.resolve()
    except MutantError as exc:
        raise UsageError(f"mutants: {exc}") from None
    err = Console(stderr=True)
    report = run_mutants(chosen, args.seed, args.subset, log=lambda line: err.print(line, highlight=False))
    table = Table(title=f"mutants ({args.subset}, seed {args.seed})")
    for column in ("mutant", "kind", "claims", "status", "caught by / why not"):
        table.add_column(column, overflow="fold")
    for r in report.results:
        style = "green" if r.status == "refuted" else "bold red"
        claims = ", ".join(f"{c}={s}" for c, s in r.claims.items()) or ", ".join(r.mutant.claims)
        table.add_row(r.mutant.name, r.mutant.kind, claims, f"[{style}]{r.status}[/]", r.why)
    console.print(table)
    console.print(f"mutation score: {report.refuted}/{len(report.results)} refuted", highlight=False)
    for r in report.survivors:
        note = f" [equivalent: {EQUIVALENT[r.mutant.name]}]" if r.mutant.name in EQUIVALENT else ""
        console.print(f"survivor: {r.mutant.name} ({r.mutant.target}): {r.mutant.description}; {r.why}{note}",
                      highlight=False)
    if args.json is not None:
        write_json_atomically(report.to_json(), args.json)
    return EXIT_OK if not report.survivors else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    console = Console()
    try:
        args = build_parser().parse_args(argv)
        if args.command == "list":
            return cmd_list(console, args.where)
        if args.command == "all":
            return cmd_run([c.id for c in CLAIMS], args, console)
        if args.command == "run":
            return cmd_run(args.ids, args, console)
        if args.command == "real-model":
            return cmd_real_model(args, console)
        if args.command == "export":
            return cmd_export(args, console)
        if args.command == "export-trained":
            return cmd_export_trained(args, console)
        if args.command == "check-export":
            return cmd_check_export(args, console)
        if args.command == "figures":
            return cmd_figures(args, console)
        if args.command == "bench":
            return cmd_bench(args, console)
        if args.command == "experiments":
            return cmd_experiments(args, console)
        if args.command == "audit-records":
            return cmd_audit_records(args, console)
        if args.command == "mutants":
            return cmd_mutants(args, console)
        raise UsageError(f"unknown command {args.command!r}")
    except PromptproofError as exc:
        print(f"verify: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("verify: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`verify list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
