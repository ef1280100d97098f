"""Speed changes of petrov.sec4.rotation-not-a-bias (issue 14) that must not change a single bit:
the branch-and-bound's lengths equal np.linalg.norm's; the search with its attention mask built
once equals the search that rebuilds it at every step; wherever is_zero's rational test says
zero, simplify says zero too (elsewhere is_zero is simplify), on every expression the proofs check."""

import numpy as np
import sympy as sp
import torch

import theorems.rotation as theorem
import verify.search.prefix as prefix_search
from verify.certificates.rotation import _length, cone_distance, ray_distance, segment_distance
from verify.search.prefix import LayerSpec, SearchConfig, circle_inputs, plane_rotation, search


def same_bits(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all((a.view(np.int64) == b.view(np.int64)) | (np.isnan(a) & np.isnan(b))))


def test_lengths_are_numpys_norm_bit_for_bit():
    rng = np.random.default_rng(0)
    with np.errstate(all="ignore"):
        for d in (1, 2, 3, 8):
            x = rng.normal(size=(40, 30, d)) * np.exp(rng.normal(size=(40, 30, d)) * 20)
            x[0, 0] = np.inf
            x[1, 1, 0] = np.nan
            assert same_bits(_length(x), np.linalg.norm(x, axis=-1))


def test_distances_are_the_norm_formulas_bit_for_bit():
    rng = np.random.default_rng(1)
    for d in (2, 3):
        y, v = rng.normal(size=(50, d)), rng.normal(size=(50, d))
        b = rng.normal(size=(300, d)) * 4
        u = b / np.linalg.norm(b, axis=1, keepdims=True)
        w = (y - v)[None]
        t = np.maximum(np.einsum("kd,imd->km", u, w), 0.0)
        assert same_bits(ray_distance(y, v, u), np.linalg.norm(w - t[..., None] * u[:, None, :], axis=-1))
        bb = b[:, None, :]
        dd = bb - v
        proj = np.einsum("...k,...k->...", y - v, dd) / np.einsum("...k,...k->...", dd, dd)
        a = np.clip(proj, 0.0, 1.0)[..., None]
        assert same_bits(segment_distance(y, v, bb), np.linalg.norm(v + a * (bb - v) - y, axis=-1))
        assert np.all(cone_distance(y, v, b, np.full(len(b), 0.5)) <= segment_distance(y, v, bb) + 1e-12)


def test_the_search_with_its_mask_built_once_is_the_search_that_rebuilds_it(monkeypatch):
    for setting, heads, lengths in (("tied", 1, [1, 3]), ("untied", 2, [2, 1, 4])):
        layer = LayerSpec(4, heads, seed=2).build()
        inputs = circle_inputs(4, 10)
        targets = torch.stack([inputs @ plane_rotation(4, 0.3 * (i + 1)).T for i in range(len(lengths))])
        config = SearchConfig(restarts=2, steps=40, seed=5)
        fast = search(layer, setting, inputs, targets, lengths, config)
        # the reference: every step builds its mask afresh, as prefixed_outputs does
        outputs = prefix_search._outputs

        def rebuilt(layer, inputs, keys, values, mask):
            fresh = prefix_search._attention_mask(lengths, keys.shape[1], layer.num_heads, keys.shape[2], len(inputs))
            assert torch.equal(fresh, mask)
            return outputs(layer, inputs, keys, values, fresh)

        monkeypatch.setattr(prefix_search, "_outputs", rebuilt)
        slow = search(layer, setting, inputs, targets, lengths, config)
        monkeypatch.undo()
        assert fast.worst == slow.worst and fast.mean == slow.mean and fast.per_restart == slow.per_restart
        assert torch.equal(fast.keys, slow.keys) and torch.equal(fast.values, slow.values)


def rational_zero(expr):
    return sp.expand(sp.fraction(sp.together(expr))[0]) == 0


def test_is_zero_agrees_with_simplify_on_every_step(monkeypatch):
    checked = []  # every expression the proofs (true and wrong premises) and the control test
    monkeypatch.setattr(theorem, "is_zero", lambda expr: checked.append(expr) or rational_zero(expr))
    for name, proof in theorem.PROOFS.items():
        proof()
        proof(theorem.WRONG[name])
    theorem.refute_translation()
    monkeypatch.undo()
    assert len(checked) > 40
    said_zero = [expr for expr in checked if rational_zero(expr)]  # elsewhere is_zero is simplify's answer
    assert len(said_zero) >= 25
    for expr in said_zero:
        assert sp.simplify(expr) == 0 and theorem.is_zero(expr), expr
