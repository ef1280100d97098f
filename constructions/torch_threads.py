"""One place that sets torch's intra-op thread count for a block of work, then restores it.

The checks run tiny tensors (a few hundred numbers): with several intra-op threads on a shared
2-core machine each op waits on spinning workers and runs 5-25x slower, and one thread also makes
reductions deterministic. Every torch search and training loop in promptproof runs inside
``torch_threads(1)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(threads: int = 1) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads; restore the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
