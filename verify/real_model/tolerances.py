"""Named tolerances of the real-model checks, and why.

FLOAT64: the model run in float64 (``model.double()``; the float32 prefix is exact in float64).
  The two runs being compared execute the same operations on the same inputs except that the
  prefix run's softmax rows have n_S more terms; the identities are a few float64 operations on
  attention rows of <= 30 keys and on context vectors of size ~1: rounding is O(1e-16), so 1e-12
  leaves about three orders of magnitude of margin (the measured worst deviations are reported).
FLOAT32: the same in float32, the dtype the model is trained and used in. Rounding is O(1e-7)
  relative; DESIGN.md fixes 1e-5 for float32 real models.
CONTROL_MIN_ERROR: a deliberately wrong variant counts as refuted only when its worst deviation
  is at least this large: 1e-3 is 100x the float32 tolerance and 1e9x the float64 one, a visible
  change of an attention weight or a context vector, never rounding.
CLEAR_SHIFT: "a deeper layer's relative attention clearly changes" means a worst change of at
  least 1e-3 in some attention weight (in float64): again never rounding.
"""

from __future__ import annotations

FLOAT64 = 1e-12
FLOAT32 = 1e-5
CONTROL_MIN_ERROR = 1e-3
CLEAR_SHIFT = 1e-3

BY_DTYPE = {"float64": FLOAT64, "float32": FLOAT32}
