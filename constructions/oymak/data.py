"""Data for the Oymak et al. claims: a contextual mixture generator and digit-image sequences.

Contextual mixture (our formalization; notes/oymak.md, Section 2). Fixed orthonormal directions
e_0 (context) and e_1 (class) in R^d, d >= 2; q = Q e_0 (context vector), mu = M e_1 (class vector).

    y ~ Unif{-1, +1};   R subset [T] uniform with |R| = k
    relevant   t in R :  x_t = q + y mu + sigma z_t
    irrelevant t not in R: x_t = rho q - y c mu + sigma z_t
    z_t ~ N(0, I_d) i.i.d.

Knobs: T (sequence length), k (number of relevant tokens, zeta = k/T), Q (context strength),
M (class signal), sigma (noise), c >= 0 ("confusion": irrelevant tokens carry the opposite class
signal), rho ("context overlap": irrelevant tokens share a fraction rho of the context vector).

Digit sequences (claim c4): tokens are 8x8 scikit-learn digit images (64-dim, pixel/16). A
sequence has k relevant tokens, all images of one class in ``relevant_classes`` = (a, b)
(y = +1 for a, -1 for b), and T - k distractors drawn from the other eight classes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np

CONTEXT_AXIS, CLASS_AXIS = 0, 1


@dataclass(frozen=True)
class MixtureKnobs:
    """Knobs of the contextual mixture (see the module docstring)."""

    T: int = 12
    k: int = 2
    d: int = 6
    Q: float = 3.0
    M: float = 1.0
    sigma: float = 1.0
    c: float = 0.0
    rho: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.T, int) and self.T >= 1):
            raise ValueError(f"T must be a positive integer, got {self.T!r}")
        if not (isinstance(self.k, int) and 1 <= self.k <= self.T):
            raise ValueError(f"k must be an integer in 1..T, got {self.k!r}")
        if not (isinstance(self.d, int) and self.d >= 2):
            raise ValueError(f"d must be an integer >= 2, got {self.d!r}")
        if not (self.Q >= 0 and self.M >= 0 and self.sigma > 0 and self.c >= 0):
            raise ValueError("need Q >= 0, M >= 0, sigma > 0, c >= 0")
        if not np.isfinite(self.rho):
            raise ValueError("rho must be finite")

    @property
    def zeta(self) -> float:
        """Fraction of relevant tokens k / T."""
        return self.k / self.T

    @property
    def q(self) -> np.ndarray:
        """Context vector q = Q e_0, shape (d,)."""
        out = np.zeros(self.d)
        out[CONTEXT_AXIS] = self.Q
        return out

    @property
    def mu(self) -> np.ndarray:
        """Class vector mu = M e_1, shape (d,)."""
        out = np.zeros(self.d)
        out[CLASS_AXIS] = self.M
        return out

    def with_(self, **changes: float) -> "MixtureKnobs":
        """A copy with some knobs changed."""
        return replace(self, **changes)


@dataclass(frozen=True)
class MixtureSample:
    """n sequences: X (n, T, d), y (n,) in {-1, +1}, R (n, T) bool (relevant set), means (n, T, d)."""

    X: np.ndarray
    y: np.ndarray
    R: np.ndarray
    means: np.ndarray


def relevant_sets(rng: np.random.Generator, n: int, T: int, k: int) -> np.ndarray:
    """(n, T) boolean masks, each with exactly k True entries, uniform over subsets."""
    order = np.argsort(rng.random((n, T)), axis=1)[:, :k]
    mask = np.zeros((n, T), dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def token_means(knobs: MixtureKnobs, y: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Noiseless tokens m_t (n, T, d): q + y mu on R, rho q - y c mu off R."""
    rel = knobs.q[None, None, :] + y[:, None, None] * knobs.mu[None, None, :]
    irr = knobs.rho * knobs.q[None, None, :] - knobs.c * y[:, None, None] * knobs.mu[None, None, :]
    return np.where(R[:, :, None], rel, irr)


def sample_labels_and_sets(knobs: MixtureKnobs, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """y (n,) uniform in {-1, +1} and R (n, T) with |R| = k."""
    y = rng.choice(np.array([-1.0, 1.0]), size=n)
    return y, relevant_sets(rng, n, knobs.T, knobs.k)


def sample_mixture(knobs: MixtureKnobs, n: int, rng: np.random.Generator) -> MixtureSample:
    """n i.i.d. sequences of the contextual mixture (float64)."""
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    y, R = sample_labels_and_sets(knobs, int(n), rng)
    means = token_means(knobs, y, R)
    X = rng.standard_normal(means.shape)
    X *= knobs.sigma  # in place: the same numbers as means + sigma * z (+ and * commute exactly),
    X += means        # without two temporaries of n T d floats
    return MixtureSample(X, y, R, means)


# --- digits (claim c4) ---------------------------------------------------------------------------

@cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(np.float64) / 16.0, data.target.astype(np.int64)


def digit_pools(test_fraction: float = 0.3, seed: int = 0,
                valid_fraction: float = 0.0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Disjoint pools of digit images: {"train": (images (m, 64), labels (m,)), "test": ...} and,
    when ``valid_fraction`` > 0, "valid": that fraction of the non-test images, taken out of "train".

    The split is a fixed permutation of the 1,797 images (numpy generator seeded by ``seed``), so
    no image appears in two pools (the test pool does not depend on ``valid_fraction``)."""
    if not (0 < test_fraction < 1 and 0 <= valid_fraction < 1):
        raise ValueError(f"need 0 < test_fraction < 1 and 0 <= valid_fraction < 1, got {test_fraction}, {valid_fraction}")
    images, labels = _digits()
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(round(len(labels) * (1 - test_fraction)))
    fit = int(round(cut * (1 - valid_fraction)))
    pools = {"train": (images[order[:fit]], labels[order[:fit]]),
             "test": (images[order[cut:]], labels[order[cut:]])}
    if valid_fraction > 0:
        pools["valid"] = (images[order[fit:cut]], labels[order[fit:cut]])
    return pools


@dataclass(frozen=True)
class DigitSequences:
    """X (n, T, 64) digit tokens, y (n,) in {-1, +1}, R (n, T) bool relevant mask, digits (n, T) classes."""

    X: np.ndarray
    y: np.ndarray
    R: np.ndarray
    digits: np.ndarray


def digit_sequences(pool: tuple[np.ndarray, np.ndarray], n: int, T: int, k: int, rng: np.random.Generator,
                    relevant_classes: tuple[int, int] = (0, 1)) -> DigitSequences:
    """n sequences of T digit images from ``pool``: k relevant images, all of class a (y=+1) or
    b (y=-1) with (a, b) = relevant_classes, and T - k distractors from the other classes."""
    if not (1 <= k <= T):
        raise ValueError(f"need 1 <= k <= T, got k={k}, T={T}")
    images, labels = pool
    a, b = relevant_classes
    by_class = {cls: np.flatnonzero(labels == cls) for cls in range(10)}
    distract = np.flatnonzero((labels != a) & (labels != b))
    y = rng.choice(np.array([-1.0, 1.0]), size=n)
    R = relevant_sets(rng, n, T, k)
    index = distract[rng.integers(0, len(distract), size=(n, T))]
    pos_pick = by_class[a][rng.integers(0, len(by_class[a]), size=(n, T))]
    neg_pick = by_class[b][rng.integers(0, len(by_class[b]), size=(n, T))]
    rel_index = np.where(y[:, None] > 0, pos_pick, neg_pick)
    index = np.where(R, rel_index, index)
    return DigitSequences(images[index], y, R, labels[index])
