"""Where each claim lives: its check, the constructions or training experiment it rests on, its
notes and its tests (``python -m verify list --where``).

Nothing here is a hand-kept table that could drift from the code. Every location is derived:

    check          the registered check function's source file and first line
                   (a training check: the verdict function it wraps, ``__wrapped__``)
    constructions  the ``constructions.*`` modules whose objects the check function uses, directly
                   or through the functions of its own module that it calls (transitively, by the
                   names their code objects load); plumbing (errors, thread settings) left out
    theorems       the ``theorems.*`` modules it uses the same way (statements, sympy proofs)
    machinery      the other ``verify.*`` modules it uses (certificates, searches, HF models)
    experiment     for a training claim, the module that defines its experiment(s)
                   (``verify/experiments/experiments.py`` or the experiment's own module)
    notes          the files under ``notes/`` whose text names the claim id, most mentions first
    tests          the files under ``tests/`` whose text names the claim id or imports the
                   check's module, most mentions first

so a newcomer goes from a claim id to everything about it in one step, and a test asserts that
every claim has a check, a note and a test and that every listed file exists.
"""

from __future__ import annotations

import dis
import inspect
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# constructions.* modules that are plumbing, not a construction a claim rests on.
INFRASTRUCTURE = frozenset({"constructions.errors", "constructions.torch_threads", "constructions.io",
                            "verify.protocol", "verify.registry", "verify.result"})
# The packages a check rests on, each listed under its own heading.
PACKAGES = ("constructions", "theorems", "verify")


@dataclass(frozen=True)
class ClaimLocations:
    """Repository-relative paths (``path:line`` for the check) of everything about one claim."""

    claim_id: str
    check: str
    constructions: tuple[str, ...]
    theorems: tuple[str, ...]
    machinery: tuple[str, ...]
    experiments: tuple[str, ...]
    notes: tuple[str, ...]
    tests: tuple[str, ...]

    def files(self) -> list[str]:
        """Every file named here (the check without its line number)."""
        return [self.check.rsplit(":", 1)[0], *self.constructions, *self.theorems, *self.machinery,
                *self.experiments, *self.notes, *self.tests]


def relative(path: str | Path) -> str:
    return Path(path).resolve().relative_to(ROOT).as_posix()


def check_function(claim_id: str):
    """The function that decides the claim: the registered check, or the record verdict a
    training check wraps."""
    from verify.registry import CHECKS

    fn = CHECKS[claim_id]
    return getattr(fn, "__wrapped__", fn)


def _loaded_names(code: types.CodeType) -> set[str]:
    """Every global or attribute name a code object (and the code nested in it) loads."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _loaded_names(const)
    return names


def _imported_modules(code: types.CodeType) -> set[str]:
    """The modules a code object (and the code nested in it) imports inside its body:
    ``import m`` gives m, ``from m import a`` gives m and m.a (the caller keeps those that are
    project modules)."""
    modules: set[str] = set()
    current = None
    for instruction in dis.get_instructions(code):
        if instruction.opname == "IMPORT_NAME":
            current = instruction.argval
            modules.add(current)
        elif instruction.opname == "IMPORT_FROM" and current is not None:
            modules.add(f"{current}.{instruction.argval}")
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            modules |= _imported_modules(const)
    return modules


def module_file(name: str, package_ok: bool = True) -> Path | None:
    """The project file of module ``name`` (a package's ``__init__.py`` if ``package_ok``), else None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    for path in (ROOT / (name.replace(".", "/") + ".py"),
                 *((ROOT / name.replace(".", "/") / "__init__.py",) if package_ok else ())):
        if path.is_file():
            return path
    return None


def used_modules(fn: Callable) -> dict[str, tuple[str, ...]]:
    """Per package of PACKAGES, the files of its modules whose objects ``fn`` uses: the names its
    code loads, resolved in its module's namespace, following the functions of the same module it
    calls; plumbing (INFRASTRUCTURE) and ``fn``'s own module left out."""
    module = sys.modules[fn.__module__]
    namespace = vars(module)
    owners, seen, todo = set(), set(), [fn]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        owners |= {m for m in _imported_modules(current.__code__)
                   if module_file(m, package_ok=False) and m not in INFRASTRUCTURE and m != module.__name__}
        for name in _loaded_names(current.__code__):
            value = namespace.get(name)
            if value is None:
                continue
            owner = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
            if inspect.isfunction(value) and value.__module__ == module.__name__:
                todo.append(value)
            elif (isinstance(owner, str) and module_file(owner)
                  and owner not in INFRASTRUCTURE and owner != module.__name__):
                owners.add(owner)
    return {package: tuple(sorted(relative(module_file(name)) for name in owners
                                  if name.split(".")[0] == package)) for package in PACKAGES}


def experiment_files(claim_id: str) -> tuple[str, ...]:
    """For a training claim, the module defining each experiment it rests on."""
    from verify.experiments.scales import EXPERIMENT_MODULES
    from verify.registry import TRAININGS

    training = TRAININGS.get(claim_id)
    if training is None:
        return ()
    members = getattr(training, "members", (training,))
    modules = {EXPERIMENT_MODULES.get(t.experiment, "verify.experiments.experiments") for t in members}
    return tuple(sorted(relative(ROOT / (m.replace(".", "/") + ".py")) for m in modules))


@cache
def _texts(folder: str, suffix: str) -> tuple[tuple[str, str], ...]:
    """(relative path, text) of every ``*suffix`` file under ``folder``, sorted."""
    return tuple((relative(p), p.read_text(errors="replace")) for p in sorted((ROOT / folder).rglob(f"*{suffix}")))


def files_naming(folder: str, suffix: str, *needles: str, patterns: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The files under ``folder`` that contain any of ``needles`` (or match a regex of
    ``patterns``), most occurrences first."""
    counts = [(sum(text.count(n) for n in needles) + sum(len(re.findall(p, text)) for p in patterns), path)
              for path, text in _texts(folder, suffix)]
    return tuple(path for count, path in sorted(counts, key=lambda c: (-c[0], c[1])) if count)


def locate(claim_id: str) -> ClaimLocations:
    """Everything about ``claim_id`` (KeyError if no check is registered for it)."""
    fn = check_function(claim_id)
    source = relative(inspect.getsourcefile(fn))
    line = inspect.getsourcelines(fn)[1]
    module = fn.__module__
    used = used_modules(fn)
    return ClaimLocations(
        claim_id=claim_id, check=f"{source}:{line}", constructions=used["constructions"],
        theorems=used["theorems"], machinery=used["verify"],
        experiments=experiment_files(claim_id), notes=files_naming("notes", ".md", claim_id),
        tests=files_naming("tests", ".py", claim_id, f"import {module}", f"from {module} import",
                           patterns=(_from_parent_import(module),)))


def _from_parent_import(module: str) -> str:
    """A regex for ``from parent import ..., leaf, ...`` of ``module`` = parent.leaf."""
    parent, _, leaf = module.rpartition(".")
    return rf"from {re.escape(parent)} import [^\n]*\b{re.escape(leaf)}\b"


def all_locations() -> list[ClaimLocations]:
    """``locate`` for every claim with a check, in the claims' order."""
    import verify.checks  # noqa: F401  (registers every check)
    from theorems.claims import CLAIMS
    from verify.registry import CHECKS

    return [locate(claim.id) for claim in CLAIMS if claim.id in CHECKS]
