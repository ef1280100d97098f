"""``verify export`` and ``verify check-export``: constructions as weights on disk, and the
construction's checks re-run on whatever weights are on disk (a user may have edited them)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from constructions.construction import Construction
from constructions.errors import ConstructionError, ExportError, PromptproofError
from constructions.io import export_construction, read_json, load_spec, load_virtual_tokens, read_config
from constructions.petrov import CONSTRUCTIONS
from constructions.vocab import Vocabulary
from verify.certificates import certify_construction

CHECK_EXPORT_RANDOM_TASKS = 1000


def parse_vocab(text: str) -> Vocabulary:
    """'ascii' | 'letters:N' | 'literal:SYMBOLS'."""
    if text == "ascii":
        return Vocabulary.printable_ascii()
    if text.startswith("letters:"):
        try:
            size = int(text.split(":", 1)[1])
        except ValueError:
            raise ConstructionError(f"bad vocabulary {text!r}: expected letters:N with an integer N") from None
        return Vocabulary.letters(size)
    if text.startswith("literal:"):
        return Vocabulary.from_string(text.split(":", 1)[1])
    raise ConstructionError(f"bad vocabulary {text!r}: use ascii, letters:N or literal:SYMBOLS")


def build(name: str, vocab: Vocabulary | None, options: dict[str, Any]) -> Construction:
    """A construction by name from CLI options (None options take the construction's defaults)."""
    if name not in CONSTRUCTIONS:
        raise ConstructionError(f"unknown construction {name!r}; choose from {', '.join(sorted(CONSTRUCTIONS))}")
    cls = CONSTRUCTIONS[name]
    params = {k: v for k, v in options.items() if v is not None}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "vocab", "spec"}
    for key in params:
        if key not in accepted:
            flag = "--" + key.replace("_", "-")
            raise ConstructionError(f"option {flag} does not apply to the {name} construction")
    default_vocab = getattr(cls, "default_vocabulary", Vocabulary.printable_ascii)
    return cls(vocab or default_vocab(), **params)


def read_task(construction: Construction, target: str | None, map_file: Path | None) -> np.ndarray | None:
    if target is not None and map_file is not None:
        raise ConstructionError("give either --target or --map, not both")
    if target is not None:
        return construction.parse_task(target)
    if map_file is not None:
        return construction.parse_task(read_json(Path(map_file), ConstructionError, "map file"))
    return None


@dataclass
class ExportCheck:
    """What check-export found for the weights on disk."""

    construction: str
    results: dict[str, Any]  # the checks that decide: each item has "holds"
    weights: dict[str, Any]  # informational: how the weights on disk differ from the construction

    @property
    def holds(self) -> bool:
        return all(item["holds"] for item in self.results.values())


def check_export(directory: Path, seed: int = 0) -> ExportCheck:
    """Reload an export from disk and re-run the construction's checks on those weights."""
    config = read_config(directory)
    name = config["construction"]
    if name not in CONSTRUCTIONS:
        raise ExportError(f"config.json names unknown construction {name!r}")
    spec = load_spec(directory, config)
    try:
        reference = CONSTRUCTIONS[name].from_params(config["params"])
    except (PromptproofError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise ExportError(f"config.json: bad construction parameters: {exc}") from None
    # Values may be edited freely; the architecture (every weight's name and shape) may not.
    ours, theirs = reference.spec.named_arrays(), spec.named_arrays()
    for key in sorted(set(ours) | set(theirs)):
        if key not in ours or key not in theirs or ours[key].shape != theirs[key].shape:
            found = theirs[key].shape if key in theirs else "absent"
            wanted = ours[key].shape if key in ours else "absent"
            raise ExportError(f"model.safetensors: weight {key!r} has shape {found}; the {name} construction "
                              f"in config.json needs {wanted}")
    construction = CONSTRUCTIONS[name].from_params(config["params"], spec)

    results: dict[str, Any] = {}
    changed = {k: float(np.max(np.abs(ours[k] - theirs[k]))) for k in ours if not np.array_equal(ours[k], theirs[k])}
    weights = {"identical_to_construction": not changed, "edited": dict(sorted(changed.items())[:10]),
               "note": "informational: edited weights are judged by the checks, not by this difference"}
    certificate = _certify(construction, spec)
    results["certificate"] = {"holds": certificate["holds"], **certificate}
    rng = np.random.default_rng(seed)
    tasks = construction.random_tasks(rng, CHECK_EXPORT_RANDOM_TASKS)
    user = rng.integers(0, construction.vocab.size, size=(len(tasks), construction.n_user_tokens))
    correct = int(construction.responds_correctly(tasks, user).sum())
    results["randomized"] = {"holds": correct == len(tasks), "instances": len(tasks), "correct": correct}
    virtual = load_virtual_tokens(directory, spec.d_model, len(construction.virtual_positions))
    if virtual is not None:
        if config.get("task") is None:
            raise ExportError("virtual_tokens.safetensors present but config.json records no task")
        task = construction.parse_task(config["task"])
        users = construction.all_user_inputs()
        batch = np.repeat(virtual[None], len(users), axis=0)
        got = construction.respond(batch, users)
        want = construction.expected(np.repeat(task, len(users), axis=0), users)
        wrong = np.flatnonzero(~np.all(got == want, axis=1))
        item: dict[str, Any] = {"holds": wrong.size == 0, "user_inputs": len(users),
                                "correct": int(len(users) - wrong.size)}
        if wrong.size:
            first = wrong[0]
            vocab = construction.vocab
            item["first_wrong"] = {"user_input": vocab.decode(users[first]), "expected": vocab.decode(want[first]),
                                   "generated": vocab.decode(got[first])}
        results["virtual_tokens"] = item
    return ExportCheck(name, results, weights)


def _certify(construction: Construction, spec) -> dict[str, Any]:
    result = certify_construction(construction, spec)
    out = {"cases": result.cases, "failing_cases": result.failing, "worst_margin": result.worst_margin}
    if result.failing_examples:
        out["first_failing_case"] = construction.describe_case(result.failing_examples[0])
    out["holds"] = result.holds
    return out


EXPORT_FORMATS = ("safetensors", "lens")


@dataclass
class Exported:
    """What ``verify export`` wrote, and a line to print about it (the lens format's parity)."""

    paths: list[Path]
    summary: str | None = None


def run_export(name: str, out: Path, vocab: str | None, target: str | None, map_file: Path | None,
               options: dict[str, Any], fmt: str = "safetensors") -> Exported:
    """Write construction ``name`` in ``fmt``: "safetensors" (promptproof's own format, re-checked by
    check-export) or "lens" (a TransformerLens model: constructions.lens). Nothing is written when
    anything fails, including a missing ``lens`` extra (checked first)."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
    if fmt == "lens":
        from constructions.lens import LENS_TOLERANCE, require_transformer_lens, save_lens

        require_transformer_lens()
    construction = build(name, parse_vocab(vocab) if vocab else None, options)
    task = read_task(construction, target, map_file)
    if fmt == "safetensors":
        return Exported(export_construction(construction, out, task))
    paths, worst = save_lens(construction, out, task)
    return Exported(paths, f"TransformerLens logits match promptproof's forward: max |difference| = {worst:.3g} "
                           f"(tolerance {LENS_TOLERANCE:g})")
