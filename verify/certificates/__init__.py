"""Certificates over all inputs: interval boxes (``cover``), and the compositional certificate of
the two-token construction (``two_token``). ``certify_construction`` picks the right one."""

from __future__ import annotations

import numpy as np

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


def shares_cover(a: Construction, b: Construction) -> bool:
    """True when ``a`` and ``b`` have the same certificate cover: the same class, vocabulary and
    sizes, and equal token and positional embeddings (what ``certificate_cases`` of the cover
    constructions reads; the inverse temperature enters W_Q only)."""
    return (type(a) is type(b) and a.vocab.symbols == b.vocab.symbols and a.size_params() == b.size_params()
            and np.array_equal(a.spec.W_E, b.spec.W_E) and np.array_equal(a.spec.W_pos, b.spec.W_pos))


def certify_constructions(constructions: list[Construction], keep_failures: int = 100, keep_readout: bool = False):
    """``[certify_construction(c) for c in constructions]``, with the cover built once where the
    constructions share it (``shares_cover``, e.g. one construction at several temperatures): the
    same boxes through each construction's weights (``cover.certify_specs``), the same results.
    ``keep_readout``: the first certificate keeps what ``cover.certify_readout`` needs."""
    from verify.certificates.cover import certify_specs

    first = constructions[0]
    if isinstance(first, TwoToken) or not all(shares_cover(first, c) for c in constructions[1:]):
        results = [certify_construction(c, keep_failures=keep_failures) for c in constructions]
        if keep_readout and not isinstance(first, TwoToken):
            from verify.certificates.cover import certify

            results[0] = certify(first, keep_failures=keep_failures, keep_readout=True)
        return results
    return certify_specs(first, [c.spec for c in constructions], keep_failures=keep_failures,
                         keep_readout=keep_readout)
