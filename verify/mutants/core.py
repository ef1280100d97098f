"""Mutants: small, named, deliberate bugs, each applied by patching one attribute, and the claim
that must catch it.

A mutant is (target, replacement, claims):

    target       "package.module:attr" or "package.module:Class.attr", resolved at start
    replacement  built from the original object and a seeded generator by one of
                   edit(old, new)   the original function's source with one exact snippet replaced
                                    (the snippet must occur exactly once: a rename or rewrite of the
                                    target is caught when the catalogue is resolved, never skipped)
                   wrap(f)          f(original, rng) -> a function that calls the original wrongly
                   value(f)         f(original, rng) -> a wrong constant
    claims       the claim ids that must catch it: the mutant is *refuted* when every one of them
                 has a status other than "pass" while the mutant is applied.

Applying a mutant patches the attribute where it is defined and in every loaded module that holds
the same object under the same name (``from m import f`` copies a reference; patching only ``m``
would leave those copies honest and the mutant would survive for a reason unrelated to the
checker). Every ``functools.cache`` of the project is cleared before and after, so that no
result computed honestly is reused under the mutant and none computed under it outlives it.
"""

from __future__ import annotations

import __future__
import functools
import hashlib
import importlib
import inspect
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROJECT_PACKAGES = ("constructions", "theorems", "verify")


class MutantError(RuntimeError):
    """A mutant cannot be applied as written: its target is gone or its source snippet changed."""


Make = Callable[[Any, np.random.Generator], Any]


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug. ``kind`` groups mutants in the report (sign flip, off-by-one, ...)."""

    name: str
    kind: str
    target: str
    description: str
    claims: tuple[str, ...]
    make: Make = field(repr=False, compare=False)
    snippet: tuple[str, int] | None = field(default=None, compare=False)  # (old, count) for edit()

    def rng(self, seed: int) -> np.random.Generator:
        """The mutant's own generator: seeded by (seed, sha256 of its name), independent of order."""
        digest = int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:8], "little")
        return np.random.default_rng([seed, digest])

    def resolve(self) -> Any:
        """The original object; MutantError if the target or its source snippet is gone."""
        original = resolve(self.target)
        if self.snippet is not None:
            old, count = self.snippet
            found = _source(original).count(old)
            if found != count:
                raise MutantError(f"{self.name}: {self.target} contains {old!r} {found} time(s), expected {count}")
        return original

    @contextmanager
    def applied(self, seed: int) -> Iterator[None]:
        """Patch the target (everywhere it is referenced) for the duration of the block."""
        original = self.resolve()
        replacement = self.make(original, self.rng(seed))
        clear_caches()
        try:
            with patched(self.target, original, replacement):
                yield
        finally:
            clear_caches()


# --- resolving and patching -------------------------------------------------------------------

def _split(target: str) -> tuple[str, list[str]]:
    if ":" not in target:
        raise MutantError(f"target {target!r}: expected 'module:attribute'")
    module, attrs = target.split(":", 1)
    return module, attrs.split(".")


def resolve(target: str) -> Any:
    """The object named by ``module:attr.attr``; MutantError if any part is missing."""
    module_name, attrs = _split(target)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise MutantError(f"target {target!r}: cannot import {module_name}: {exc}") from None
    for attr in attrs:
        if attr in getattr(obj, "__dict__", {}):
            obj = obj.__dict__[attr]  # the raw attribute (a staticmethod stays one)
        elif hasattr(obj, attr):
            obj = getattr(obj, attr)
        else:
            raise MutantError(f"target {target!r}: {attr!r} not found")
    return obj


@contextmanager
def patched(target: str, original: Any, replacement: Any) -> Iterator[None]:
    """Set ``target`` to ``replacement``, and every project module attribute that IS ``original``
    under the same name; restore all of them afterwards."""
    module_name, attrs = _split(target)
    owner: Any = importlib.import_module(module_name)
    for attr in attrs[:-1]:
        owner = getattr(owner, attr)
    name = attrs[-1]
    sites = [(owner, name)]
    if len(attrs) == 1:  # a module-level name: find the copies imported by name
        for other_name, module in list(sys.modules.items()):
            if module is owner or not other_name.startswith(PROJECT_PACKAGES) or module is None:
                continue
            if module.__dict__.get(name) is original:
                sites.append((module, name))
    saved = [(obj, attr, obj.__dict__[attr]) for obj, attr in sites]
    try:
        for obj, attr in sites:
            setattr(obj, attr, replacement)
        yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


def clear_caches() -> None:
    """cache_clear() every functools cache defined in a loaded project module."""
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith(PROJECT_PACKAGES):
            continue
        for value in list(vars(module).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and isinstance(value, functools._lru_cache_wrapper):
                clear()


# --- the three ways to build a replacement ----------------------------------------------------

def _function(original: Any) -> Any:
    """The plain function behind a staticmethod, classmethod or property (its getter)."""
    if isinstance(original, property):
        return original.fget
    return original.__func__ if isinstance(original, staticmethod | classmethod) else original


def _rewrapped(original: Any, function: Any) -> Any:
    """``function`` in the same kind of descriptor as ``original``."""
    if isinstance(original, property):
        return property(function, original.fset, original.fdel, original.__doc__)
    if isinstance(original, staticmethod):
        return staticmethod(function)
    if isinstance(original, classmethod):
        return classmethod(function)
    return function


def _source(original: Any) -> str:
    return textwrap.dedent(inspect.getsource(_function(original)))


def edit(old: str, new: str, count: int = 1) -> tuple[Make, tuple[str, int]]:
    """A replacement compiled from the original's source with ``old`` replaced by ``new``
    (``count`` occurrences, exactly), in the original's module globals."""

    def make(original: Any, rng: np.random.Generator) -> Any:
        base = inspect.unwrap(_function(original))  # through functools.cache: its decorator is re-applied
        source = _source(original)
        if source.count(old) != count:
            raise MutantError(f"{base.__qualname__}: snippet {old!r} found {source.count(old)} time(s)")
        flags = __future__.annotations.compiler_flag
        code = compile(source.replace(old, new), inspect.getsourcefile(base) or "<mutant>", "exec",
                       flags=flags, dont_inherit=True)
        namespace: dict[str, Any] = {}
        exec(code, base.__globals__, namespace)  # noqa: S102 (our own source, one snippet changed)
        mutated = _function(namespace[base.__name__])  # the source's own @property / @staticmethod
        if inspect.isfunction(mutated):
            mutated.__qualname__ = base.__qualname__
        return _rewrapped(original, mutated)

    return make, (old, count)


def wrap(factory: Callable[[Any, np.random.Generator], Any]) -> Make:
    """A replacement function built by ``factory(original, rng)``; it keeps the original's name."""

    def make(original: Any, rng: np.random.Generator) -> Any:
        function = _function(original)
        replacement = factory(function, rng)
        functools.update_wrapper(replacement, function)
        del replacement.__wrapped__  # not the original: inspect must not see through it
        return _rewrapped(original, replacement)

    return make


def value(factory: Callable[[Any, np.random.Generator], Any]) -> Make:
    """A replacement constant ``factory(original, rng)``."""
    return factory


def mutant(name: str, kind: str, target: str, description: str, claims: str | tuple[str, ...],
           how: Make | tuple[Make, tuple[str, int]]) -> Mutant:
    """Build a Mutant from ``edit(...)`` (a (make, snippet) pair), ``wrap(...)`` or ``value(...)``."""
    make, snippet = how if isinstance(how, tuple) else (how, None)
    return Mutant(name, kind, target, description, (claims,) if isinstance(claims, str) else tuple(claims),
                  make, snippet)
