"""Certificates over all inputs: interval boxes (``cover``), and the compositional certificate of
the two-token construction (``two_token``). ``certify_construction`` picks the right one."""

from __future__ import annotations

from constructions.construction import Construction
from constructions.petrov.two_token import TwoToken
from constructions.spec import TransformerSpec


def certify_construction(construction: Construction, spec: TransformerSpec | None = None,
                         keep_failures: int = 100):
    """The strongest certificate available for ``construction`` (on ``spec`` if given).

    The result has ``holds``, ``cases``, ``failing``, ``worst_margin`` and ``failing_examples``
    (labels in the construction's case format, usable with ``Construction.witness``).
    """
    if isinstance(construction, TwoToken):
        from verify.certificates.two_token import certify_two_token

        return certify_two_token(construction, spec)
    from verify.certificates.cover import certify

    return certify(construction, spec, keep_failures=keep_failures)
