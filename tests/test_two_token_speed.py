"""Speed changes of petrov.thm2.two-token (issue 14) that must not change a single bit:
float32_accuracy on one torch thread gives the same logits as on two."""

import numpy as np

from verify.checks.petrov_sec3 import float32_logits


def test_float32_logits_do_not_depend_on_the_thread_count():
    for vocab_size in (4, 9, 13):
        (one, want), (two, _) = float32_logits(vocab_size, threads=1), float32_logits(vocab_size, threads=2)
        assert one.dtype == np.float32 and one.shape == (len(want), 3, vocab_size)
        assert np.array_equal(one.view(np.uint32), two.view(np.uint32)), vocab_size
