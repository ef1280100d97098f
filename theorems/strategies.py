"""Public hypothesis strategies: random targets, maps, arrays, attention layers and prefixes.

    from theorems.strategies import targets, total_maps, pair_maps, normal_arrays, seeds
    from theorems.strategies import attention_layers, prefix_vectors, random_layer_weights
    from theorems.strategies import mixture_knobs, token_batches, attention_params   # Oymak et al.

``attention_layers`` and ``random_layer_weights`` give plain arrays (TransformerLens shapes); a
library author can load them into their own attention code and property-test it against the
Section 4 identities (``constructions.layers.spec_from_layers`` loads them into a promptproof spec).
"""

from theorems._oymak_strategies import attention_params, mixture_knobs, token_batches
from theorems._strategies import (
    attention_layers,
    normal_arrays,
    pair_maps,
    prefix_vectors,
    random_layer_weights,
    seeds,
    targets,
    total_maps,
)

__all__ = ["attention_layers", "attention_params", "mixture_knobs", "normal_arrays", "pair_maps",
           "prefix_vectors", "random_layer_weights", "seeds", "targets", "token_batches", "total_maps"]
