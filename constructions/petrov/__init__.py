"""Constructions realising the proofs of Petrov, Torr, Bibi (ICLR 2024), Section 3."""

from __future__ import annotations

from constructions.construction import Construction
from constructions.petrov.conditional import Conditional
from constructions.petrov.long_response import LongResponse
from constructions.petrov.two_token import TwoToken
from constructions.petrov.unconditional import Unconditional

CONSTRUCTIONS: dict[str, type[Construction]] = {
    cls.name: cls for cls in (Unconditional, Conditional, LongResponse, TwoToken)
}
