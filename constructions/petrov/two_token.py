"""Conditioning on two tokens (Petrov et al., appendix generalisation of Theorem 2): ONE virtual
token makes a fixed transformer realise ANY map m: V x V -> V on two user tokens (u0, u1), with
the base-V unpacking done by real ReLU layers (the authors' notebook used a Python function).

Encoding (the authors'): virtual-token coordinate i holds row i of the map as a base-V fraction

    x_i = fl( N_i / V^V ),   N_i = sum_j m(i, j) V^(V-1-j)   (an integer < V^V),

i.e. x_i = sum_j m(i, j) V^-(j+1) rounded ONCE to float64 (N_i and V^V are exact in float64).

Residual stream (disjoint subspaces), positions 0 = virtual token, 1 = u0, 2 = u1 (read at 2):

    token (V) | map (V) | pos (3) | one (1) | xcopy (V) | pointer (V) | rem (V) | ramp (V(V-1))
    | digit (V) | readout (1)                                    d = V^2 + 5V + 5

    block 0, head X:  q = T, k_j = [j == 0], v_j = map_j            -> xcopy  = A x
             head P:  q = T, k_j = [j == 1], v_j = token_j - 1      -> pointer ~ e_u0 - 1
             MLP:     h_c = ReLU(xcopy_c + pointer_c)               -> rem_0 = x_u0 (leakage below)
    for each digit n = 0..V-1, two MLP-only blocks (H = 0 heads):
      block 1+2n "ramp":  a_nk = ReLU(s_n (rem_n - t_nk)), k = 1..V-1    -> ramp_nk
                          p    = ReLU(rem_n)                             -> rem_{n+1} += V p
      block 2+2n "clean": b_nk = ReLU(1 - a_nk)
                          digit_n  = (V-1) - sum_k b_nk                  (= #{k : a_nk >= 1})
                          rem_{n+1} += -digit_n                          (so rem_{n+1} = V rem_n - d_n)
    block 2V+1 "select":  h_j = ReLU(digit_j + V token_j - V)         -> readout = digit_u1
    unembedding:          logit_c = 2 c z - c^2  (nearest integer to z; margin (y - c)^2 >= 1)

Digit extraction. The exact remainder r_n = sum_{j>=n} m(u0, j) V^-(j-n+1) lies on a grid of
spacing g_n = V^-(V-n) and its digit is floor(V r_n): band m = [m/V, (m+1)/V - g_n]. Between
band k-1 and band k lies a gap (k/V - g_n, k/V) containing no grid point; the ramp of unit
(n, k) rises from 0 to 1 on [t_nk, t_nk + rho g_n], centred in that gap (rho = ramp_width,
default 1/16, slope s_n = V^(V-n) / rho). So on band m, every unit k <= m has pre-activation
>= 1 and every unit k > m has pre-activation <= 0, with a clearance mu_n = (1 - rho) g_n / 2
on each side. Two ReLU layers make the step exact: a_nk is exactly 0 or >= 1, so
b_nk = ReLU(1 - a_nk) is exactly 1 or 0, the digit is an exact small integer and rem_{n+1}
= V rem_n - d_n carries the error of rem_n times V (one ReLU layer cannot do this: its units
grow linearly past the ramp and their rounding, ~ s_n u, would swamp the digit).

Leakage and the minimal inverse temperature. Query 2 sees three keys; with a = e^T/(e^T + 2)
and w = 1/(e^T + 2), head X gives xcopy = a x and head P gives pointer_u0 = -(1 - a) = -2w
(u0 != u1; -w when u0 = u1), pointer_c <= -1 + w otherwise, so

    rem_0 = x - 2w (1 + x)      (worst case u0 != u1; the error is always DOWNWARD)

and rem_n = r_n - V^n 2w (1 + x). A digit is safe while this error stays below mu_n; the
binding case is the last digit n = V-1 of a row whose digits are all V-1 (x = 1 - V^-V):

    certified  (error <= clearance):    e^T >= 4 (2 V^V - 1) / (1 - rho) - 2
    wrong output (last digit, step <= 1/2):  e^T <= 8 V^V - 6      (a concrete failing map)

(``theorems.petrov_sec3.two_token_thresholds`` derives both with sympy; digit n alone needs
e^T >= 4 (2 V^V - V^(V-n-1)) / (1 - rho) - 2, which grows with n.) The certified threshold is
also essentially the true one: a row whose remainder sits exactly on a band's lower edge at an
earlier digit n (digits V-1 up to n, then zeros) enters a ramp at an error-to-clearance ratio
within 1 + O(V^(n+1-V)) of the binding one, and the partial step it takes is multiplied by V at
every later digit until some digit comes out wrong (``leakage_witnesses``). For V = 10 the
certificate holds at T* + 1e-4 and such a map is answered wrongly at T* - 1e-4.
Defaults: T = 100 (T* = 25.17 for V = 10, 35.49 for V = 13).

Precision. Two different rows must stay distinguishable after rounding x_i to float64: the
floor(V^V / 2) rows with x in [1/2, 1) must fit into the 2^52 floats of [1/2, 1). For V = 14
they do not (14^14 / 2 ~ 5.6e15 > 4.5e15), so by pigeonhole NO decoder whatsoever is exact
for V >= 14: the constructor raises ConstructionError. For V <= 13 ``certify_two_token``
(verify.certificates.two_token) proves
the float64 forward pass exact for every map (not just real arithmetic), V = 13 included: the
rounding budget is V^V u (u = 2^-53), 0.034 for V = 13. At V = 13 that budget is nearly used up,
so the float64 certificate there needs T >= 37.43 (= ln 2^54: the attention weight on the
virtual token is then exactly 1.0 in float64) rather than T* = 35.49; for V <= 12 rounding is
negligible next to the leakage. The same count gives V <= 8 for float32, which is also the
largest V measured to be 100% correct in float32 (``verify.checks.petrov_sec3.float32_accuracy``).

Certificate (``certify_two_token`` in verify.certificates.two_token), compositional, sound, over
ALL V^(V^2) maps and V^2 inputs.
Interval arithmetic over the hull x in [0, 1) fails (digit extraction is discontinuous) and the
V^V possible rows cannot be enumerated beyond tiny V. Instead every residual vector is carried as
a one-variable affine form c + g t + [-r, r] ("Affine"), where t is the EXACT remainder of the
row being decoded and r bounds everything else: leakage, the other rows, and every float64
rounding error of the actual forward pass (sums are charged gamma_k over their k non-zero terms,
products by powers of two and sums of small dyadic numbers are exact, a softmax whose other
terms sum below 2^-53 returns exactly 1.0) as well as the rounding of the forms' own arithmetic.
The ops implement the ``Ops`` interface of ``constructions.forward`` so the SAME forward code
runs on forms.
  (a) front: for every (u0, u1), block 0 on forms with t = x_u0 (the other rows are boxes);
      attention scores do not depend on the virtual token's values, so the head output stays
      affine in t and the leakage shows up in the coefficients; forms are joined over u0.
  (b) digits: a chain (u1, y) holds every map and u0 with m(u0, u1) = y. At digit n its state is
      split into the bands m of t = r_n (only band y when n = u1), pushed through the ramp and
      clean blocks (every ramp unit is then provably <= 0 or >= 1, so the layer is exactly affine
      on the band), re-expressed in the next remainder t' = V t - m (an exact change of
      variable) and joined over the bands. Nothing is sampled: bands cover every grid value.
  (c) select + readout: the logit margins of each chain are bounded from the final forms.
The split/join points are a proof strategy, not an assumption about the weights: with edited
weights the same steps stay sound (a mixed ReLU is relaxed, a failure is reported).
The generic box cover of ``verify.certificates.cover`` is also provided (``certificate_cases``:
one box per (u0, u1, row value), every other row a box): it is complete but has V^2 V^V cases,
so it is an independent cross-check for V <= 5.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np

from constructions.construction import CaseBatch, Construction
from constructions.errors import ConstructionError
from constructions.petrov.parts import (
    ResidualLayout,
    attend_to_position,
    copy_matrices,
    one_hot_embeddings,
)
from constructions.spec import MLP, Attention, Block, TransformerSpec, no_attention
from constructions.vocab import Vocabulary

DEFAULT_RAMP_WIDTH = Fraction(1, 16)
MAX_EXHAUSTIVE_CASES = 200_000  # the box cover of certificate_cases: V^2 V^V cases (V <= 5)


# --- precision limits ----------------------------------------------------------------------

def rows_in_top_binade(vocab_size: int) -> int:
    """How many distinct rows encode into [1/2, 1): floor(V^V / 2)."""
    return vocab_size**vocab_size // 2


def largest_vocab_for_precision(mantissa_bits: int) -> int:
    """Largest V whose rows can all be told apart after rounding to a float with ``mantissa_bits``
    bits of precision (53: float64, 24: float32). Above it, two rows with x in [1/2, 1) share
    one float (pigeonhole: more rows than the 2^(p-1) floats of [1/2, 1)), so no decoder can be
    exact. 13 for float64, 8 for float32."""
    vocab = 2
    while rows_in_top_binade(vocab + 1) <= 2 ** (mantissa_bits - 1):
        vocab += 1
    return vocab


MAX_VOCAB_FLOAT64 = largest_vocab_for_precision(53)  # 13


def row_codes(tasks: np.ndarray) -> np.ndarray:
    """N_i = sum_j m(i, j) V^(V-1-j): (B, V, V) maps -> (B, V) exact integers (int64)."""
    V = tasks.shape[-1]
    weights = np.array([V ** (V - 1 - j) for j in range(V)], dtype=np.int64)
    return tasks.astype(np.int64) @ weights


def digits_of(codes: np.ndarray, vocab_size: int) -> np.ndarray:
    """Inverse of ``row_codes``: (...,) integers -> (..., V) base-V digits, most significant first."""
    V = vocab_size
    powers = np.array([V ** (V - 1 - j) for j in range(V)], dtype=np.int64)
    return (np.asarray(codes, dtype=np.int64)[..., None] // powers) % V


# --- construction --------------------------------------------------------------------------

def _layout(vocab_size: int) -> ResidualLayout:
    V = vocab_size
    return ResidualLayout([("token", V), ("map", V), ("pos", 3), ("one", 1), ("xcopy", V),
                           ("pointer", V), ("rem", V), ("ramp", V * (V - 1)), ("digit", V),
                           ("readout", 1)])


def ramp_start(vocab_size: int, digit: int, threshold: int, ramp_width: Fraction) -> Fraction:
    """t_nk: the ramp of unit (n, k) rises on [t_nk, t_nk + rho g_n], centred in the gap
    (k/V - g_n, k/V) between band k-1 and band k (g_n = V^-(V-n))."""
    gap = Fraction(1, vocab_size ** (vocab_size - digit))
    return Fraction(threshold, vocab_size) - gap * (1 + ramp_width) / 2


def parse_pair_map(vocab: Vocabulary, obj: Any) -> np.ndarray:
    """{"AB": "C", ...} over ALL V^2 ordered pairs -> (V, V) token ids; clear errors otherwise."""
    if not isinstance(obj, dict):
        raise ConstructionError('a two-token map must be a JSON object like {"AB": "C", ...}')
    symbols = vocab.symbols
    for key in obj:
        if not (isinstance(key, str) and len(key) == 2 and key[0] in symbols and key[1] in symbols):
            raise ConstructionError(f"map key {key!r} is not a pair of vocabulary symbols ({vocab.describe()})")
    missing = [a + b for a in symbols for b in symbols if a + b not in obj]
    if missing:
        raise ConstructionError(
            f"the map is not total: {len(missing)} of {vocab.size ** 2} pairs have no image, e.g. {missing[0]!r}"
        )
    table = np.zeros((vocab.size, vocab.size), dtype=np.int64)
    for i, a in enumerate(symbols):
        for j, b in enumerate(symbols):
            value = obj[a + b]
            if not (isinstance(value, str) and len(value) == 1):
                raise ConstructionError(f"map value for {a + b!r} must be one symbol, got {value!r}")
            table[i, j] = vocab.encode(value)[0]
    return table


class TwoToken(Construction):
    """One virtual token realising any map V x V -> V; see the module docstring."""

    name = "two-token"
    claim_id = "petrov.thm2.two-token"
    case_fields = ("first_token", "second_token", "row_code")  # the box cover's cases

    def __init__(self, vocab: Vocabulary, inverse_temperature: float = 100.0,
                 ramp_width: float | Fraction = DEFAULT_RAMP_WIDTH,
                 spec: TransformerSpec | None = None) -> None:
        if vocab.size > MAX_VOCAB_FLOAT64:
            V = vocab.size
            raise ConstructionError(
                f"V = {V} is too large for float64: {rows_in_top_binade(V):.3e} distinct map rows encode "
                f"into [1/2, 1), which holds only 2^52 = {2 ** 52:.3e} float64 values, so two rows would "
                f"share one virtual-token value; the largest exact V is {MAX_VOCAB_FLOAT64}"
            )
        try:
            T = float(inverse_temperature)
        except (TypeError, ValueError):
            T = float("nan")
        if not (math.isfinite(T) and T > 0):
            raise ConstructionError(f"inverse temperature must be a positive number, got {inverse_temperature}")
        rho = Fraction(ramp_width).limit_denominator(1 << 20)
        if not 0 < rho < 1:
            raise ConstructionError(f"ramp_width must be in (0, 1), got {ramp_width}")
        self.ramp_width = rho
        self.layout = _layout(vocab.size)
        self.vocab = vocab  # the builders below read it; Construction.__init__ sets it again
        super().__init__(spec or self._build(vocab, T), vocab, T)

    # --- weights ----------------------------------------------------------------------------
    def ramp_index(self, digit: int, threshold: int) -> int:
        """Residual coordinate of ramp unit (n, k), k = 1..V-1."""
        return self.layout.index("ramp", digit * (self.vocab.size - 1) + threshold - 1)

    def _build(self, vocab: Vocabulary, T: float) -> TransformerSpec:
        layout, V, d = self.layout, vocab.size, self.layout.width
        W_E, W_pos = one_hot_embeddings(layout, V, 3)
        blocks = [self._front(T), *[b for n in range(V) for b in self._digit_blocks(n)], self._select()]
        W_U = np.zeros((d, V))
        W_U[layout.index("readout")] = 2.0 * np.arange(V)
        b_U = -(np.arange(V, dtype=np.float64) ** 2)
        return TransformerSpec.build(W_E, W_pos, blocks, W_U, b_U, subspaces=layout.ranges)

    def _front(self, T: float) -> Block:
        layout, V, d = self.layout, self.vocab.size, self.layout.width
        q_x, k_x = attend_to_position(layout, 0, T)
        v_x, o_x = copy_matrices(layout, "map", "xcopy")
        q_p, k_p = attend_to_position(layout, 1, T)
        v_p, o_p = copy_matrices(layout, "token", "pointer")
        attention = Attention.build(
            d, np.stack([q_x, q_p]), np.stack([k_x, k_p]), np.stack([v_x, v_p]), np.stack([o_x, o_p]),
            b_V=np.stack([np.zeros(V), -np.ones(V)]),  # pointer = attended one-hot - 1
        )
        W_in = np.zeros((d, V))
        W_in[layout["xcopy"], :] = np.eye(V)
        W_in[layout["pointer"], :] += np.eye(V)
        W_out = np.zeros((V, d))
        W_out[:, layout.index("rem", 0)] = 1.0
        return Block(attention, MLP.build(d, W_in, W_out))

    def _digit_blocks(self, n: int) -> tuple[Block, Block]:
        layout, V, d, rho = self.layout, self.vocab.size, self.layout.width, self.ramp_width
        last = n == V - 1
        slope = Fraction(V ** (V - n)) / rho
        units = V - 1 + (0 if last else 1)
        W_in = np.zeros((d, units))
        b_in = np.zeros(units)
        W_out = np.zeros((units, d))
        for k in range(1, V):
            W_in[layout.index("rem", n), k - 1] = float(slope)
            b_in[k - 1] = float(-slope * ramp_start(V, n, k, rho))
            W_out[k - 1, self.ramp_index(n, k)] = 1.0
        if not last:  # pass-through: rem_{n+1} += V rem_n
            W_in[layout.index("rem", n), V - 1] = 1.0
            W_out[V - 1, layout.index("rem", n + 1)] = float(V)
        ramp = Block(no_attention(d), MLP.build(d, W_in, W_out, b_in))

        W_in = np.zeros((d, V - 1))
        W_out = np.zeros((V - 1, d))
        b_out = np.zeros(d)
        for k in range(1, V):
            W_in[self.ramp_index(n, k), k - 1] = -1.0
            W_out[k - 1, layout.index("digit", n)] = -1.0
            if not last:
                W_out[k - 1, layout.index("rem", n + 1)] = 1.0
        b_out[layout.index("digit", n)] = V - 1
        if not last:
            b_out[layout.index("rem", n + 1)] = -(V - 1)
        clean = Block(no_attention(d), MLP.build(d, W_in, W_out, np.ones(V - 1), b_out))
        return ramp, clean

    def _select(self) -> Block:
        layout, V, d = self.layout, self.vocab.size, self.layout.width
        W_in = np.zeros((d, V))
        W_in[layout["digit"], :] = np.eye(V)
        W_in[layout["token"], :] += V * np.eye(V)
        W_out = np.zeros((V, d))
        W_out[:, layout.index("readout")] = 1.0
        return Block(no_attention(d), MLP.build(d, W_in, W_out, -float(V) * np.ones(V)))

    @staticmethod
    def default_vocabulary() -> Vocabulary:
        """The authors' letters A-J (V = 10)."""
        return Vocabulary.letters(10)

    # --- prompt shape -----------------------------------------------------------------------
    virtual_positions = (0,)
    n_user_tokens = 2
    response_length = 1

    # --- tasks ------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"vocab": "".join(self.vocab.symbols), "inverse_temperature": self.inverse_temperature,
                "ramp_width": str(self.ramp_width)}

    @classmethod
    def from_params(cls, params: dict[str, Any], spec: TransformerSpec | None = None) -> TwoToken:
        return cls(Vocabulary.from_string(params["vocab"]), float(params["inverse_temperature"]),
                   Fraction(params.get("ramp_width", str(DEFAULT_RAMP_WIDTH))), spec)

    def encode_rows(self, tasks: np.ndarray) -> np.ndarray:
        """(B, V, V) maps -> (B, V) float64 x_i = fl(N_i / V^V): one correctly rounded division."""
        V = self.vocab.size
        return row_codes(tasks).astype(np.float64) / float(V**V)

    def virtual_tokens(self, tasks: np.ndarray) -> np.ndarray:
        """maps (B, V, V) -> (B, 1, d): map_i = x_i (row i as a base-V fraction)."""
        virtual = np.zeros((tasks.shape[0], 1, self.layout.width))
        virtual[:, 0, self.layout["map"]] = self.encode_rows(tasks)
        return virtual

    def expected(self, tasks: np.ndarray, user: np.ndarray) -> np.ndarray:
        return tasks[np.arange(len(tasks)), user[:, 0], user[:, 1]][:, None]

    def random_tasks(self, rng: np.random.Generator, count: int) -> np.ndarray:
        V = self.vocab.size
        return rng.integers(0, V, size=(count, V, V))

    def parse_task(self, obj: Any) -> np.ndarray:
        return parse_pair_map(self.vocab, obj)[None]

    def task_to_json(self, task: np.ndarray) -> Any:
        s = self.vocab.symbols
        return {s[i] + s[j]: s[int(task[i, j])] for i in range(len(s)) for j in range(len(s))}

    # --- the box cover (complete, V^2 V^V cases: a cross-check for small V) -----------------
    def exhaustive_cases(self) -> int:
        V = self.vocab.size
        return V * V * V**V

    def certificate_cases(self, chunk: int = 512) -> Iterator[CaseBatch]:
        """Case (u0, u1, N): row u0 of the map has code N (its x is the point fl(N/V^V)), every
        other row anywhere in [0, fl((V^V-1)/V^V)]; the output must be digit u1 of N. The output
        depends only on u0, u1 and row u0, so the V^2 V^V cases cover every map and input.
        Only feasible for V <= 5; ``certify_two_token`` (verify.certificates.two_token) covers
        every V <= 13."""
        V, layout, spec = self.vocab.size, self.layout, self.spec
        total = self.exhaustive_cases()
        if total > MAX_EXHAUSTIVE_CASES:
            raise ConstructionError(
                f"the box cover of the two-token construction has V^2 V^V = {total:.3e} cases for V = {V} "
                f"(limit {MAX_EXHAUSTIVE_CASES}); use certify_two_token, the compositional certificate"
            )
        rows = V**V
        x_max = float(rows - 1) / float(rows)
        for start in range(0, total, chunk):
            q = np.arange(start, min(start + chunk, total), dtype=np.int64)
            u0, u1, code = q // (V * rows), (q // rows) % V, q % rows
            batch, idx = len(q), np.arange(len(q))
            lo = np.zeros((batch, 3, layout.width))
            hi = np.zeros((batch, 3, layout.width))
            hi[:, 0, layout["map"]] = x_max
            point = code.astype(np.float64) / float(rows)
            lo[idx, 0, layout.index("map") + u0] = point
            hi[idx, 0, layout.index("map") + u0] = point
            lo[:, 1] = hi[:, 1] = spec.W_E[u0]
            lo[:, 2] = hi[:, 2] = spec.W_E[u1]
            lo += spec.W_pos[:3]
            hi += spec.W_pos[:3]
            want = digits_of(code, V)[idx, u1]
            yield CaseBatch(lo, hi, np.full(batch, 2), want, np.stack([u0, u1, code], axis=1))

    def witness(self, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        u0, u1, code = (int(v) for v in label)
        task = self.random_tasks(rng, 1)
        task[0, u0] = digits_of(np.array(code), self.vocab.size)
        return task, np.array([[u0, u1]])

    def describe_case(self, label: np.ndarray) -> str:
        u0, u1, code = (int(v) for v in label)
        s = self.vocab.symbols
        row = self.vocab.decode(digits_of(np.array(code), self.vocab.size))
        return f"input {s[u0] + s[u1]!r} with row {s[u0]!r} = {row!r} must give {row[u1]!r}"


def min_inverse_temperature(vocab_size: int, ramp_width: float | Fraction = DEFAULT_RAMP_WIDTH) -> float:
    """ln(4 (2 V^V - 1)/(1 - rho) - 2), exact-arithmetic threshold of the certificate."""
    rho = Fraction(ramp_width)
    return math.log(float(Fraction(4 * (2 * vocab_size**vocab_size - 1)) / (1 - rho) - 2))


def leakage_witnesses(construction: TwoToken) -> tuple[np.ndarray, np.ndarray]:
    """The maps that suffer most from the leakage: row 0 = (V-1)^(n+1) 0^(V-1-n) for n = 0..V-1
    (its remainder at digit n is exactly the lower edge of band V-1, after the largest prefix),
    every other row 0. Each is paired with every input (0, u1). Returns tasks (V^2, V, V) and
    users (V^2, 2); the u1 = 0 pairs have u0 = u1, the milder leakage case."""
    V = construction.vocab.size
    tasks, users = [], []
    for n in range(V):
        task = np.zeros((V, V), dtype=np.int64)
        task[0, : n + 1] = V - 1
        for u1 in range(V):
            tasks.append(task)
            users.append((0, u1))
    return np.array(tasks), np.array(users, dtype=np.int64)
