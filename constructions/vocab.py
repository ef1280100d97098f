"""Vocabularies: token id <-> one-character symbol."""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from constructions.errors import ConstructionError


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of distinct one-character symbols; token id = index."""

    symbols: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.symbols) < 2:
            raise ConstructionError("a vocabulary needs at least 2 symbols")
        if any(len(symbol) != 1 for symbol in self.symbols):
            raise ConstructionError("every vocabulary symbol must be a single character")
        if len(set(self.symbols)) != len(self.symbols):
            raise ConstructionError("vocabulary symbols must be distinct")

    @property
    def size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text``; ConstructionError naming the first unknown character."""
        index = {symbol: i for i, symbol in enumerate(self.symbols)}
        for position, char in enumerate(text):
            if char not in index:
                raise ConstructionError(
                    f"character {char!r} at position {position} is not in the vocabulary "
                    f"({self.describe()})"
                )
        return np.array([index[char] for char in text], dtype=np.int64)

    def decode(self, ids) -> str:
        return "".join(self.symbols[int(i)] for i in ids)

    def describe(self) -> str:
        text = "".join(self.symbols)
        return f"{self.size} symbols {text[:12]!r}...{text[-4:]!r}" if self.size > 16 else repr(text)

    @classmethod
    def printable_ascii(cls) -> "Vocabulary":
        """The authors' 94 symbols: token c <-> chr(32 + c), i.e. space .. '}' ('~' excluded)."""
        return cls(tuple(chr(32 + c) for c in range(94)))

    @classmethod
    def letters(cls, size: int) -> "Vocabulary":
        """'A', 'B', ... (the two-token construction uses V = 10 letters A-J)."""
        if not 2 <= size <= 26:
            raise ConstructionError(f"letters vocabulary size must be in [2, 26], got {size}")
        return cls(tuple(string.ascii_uppercase[:size]))

    @classmethod
    def from_string(cls, text: str) -> "Vocabulary":
        return cls(tuple(text))
