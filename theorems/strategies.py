"""Public hypothesis strategies: random targets, maps and arrays for property tests.

    from theorems.strategies import targets, total_maps, pair_maps, normal_arrays, seeds
"""

from theorems._strategies import normal_arrays, pair_maps, seeds, targets, total_maps

__all__ = ["normal_arrays", "pair_maps", "seeds", "targets", "total_maps"]
