"""Mutants of the Section 3 constructions (constructions/petrov/): their weights, their encodings,
and two bugs built to be rare: each fires on about one (task, input) in V^3 ~ 830,000, so 10,000
random instances almost surely miss it (probability 1 - (1 - V^-3)^10000 ~ 1.2% of a hit, V = 94)
while the interval certificate, which covers every task and input at once, must catch it."""

from __future__ import annotations

from typing import Any

import numpy as np

from constructions.spec import MLP, Block, TransformerSpec
from verify.mutants.core import Mutant, edit, mutant, wrap

PARTS = "constructions.petrov.parts"
UNC = "constructions.petrov.unconditional"
CON = "constructions.petrov.conditional"
LR = "constructions.petrov.long_response"
TT = "constructions.petrov.two_token"

THM1 = "petrov.thm1.unconditional"
THM2 = "petrov.thm2.conditional"
LONG = "petrov.thm2.long-response"
TWO = "petrov.thm2.two-token"


def with_extra_unit(spec: TransformerSpec, w_in: np.ndarray, b_in: float, w_out: np.ndarray) -> TransformerSpec:
    """``spec`` with one more hidden unit in block 0's MLP: h = ReLU(x . w_in + b_in), x += h w_out."""
    block = spec.blocks[0]
    mlp = block.mlp
    grown = MLP.build(spec.d_model, np.column_stack([mlp.W_in, w_in]), np.vstack([mlp.W_out, w_out]),
                      np.append(mlp.b_in, b_in), mlp.b_out)
    blocks = (Block(block.attention, grown, block.ln1, block.ln2), *spec.blocks[1:])
    return TransformerSpec.build(spec.W_E, spec.W_pos, blocks, spec.W_U, spec.b_U, spec.attention_scale,
                                 spec.causal, spec.subspaces)


def rare_unit(layout: Any, vocab_size: int, gates: list[int], copies: tuple[int, int]) -> tuple:
    """A unit that fires only when every one-hot ``gates`` coordinate is 1 and both ``copies``
    coordinates hold the top value (V-1)/V (times an attention weight ~ 1):

        pre = sum(gates) + K (copy_a + copy_c) - (len(gates) + K (2V - 5/2)/V),   K = V

    All conditions true: pre = K/(2V) = 1/2. One gate 0: pre <= 1/2 - 1 < 0. One copy at most
    (V-2)/V: pre <= -1/2. Its output moves the readout down by 2/V * h = 1/V: the last symbol
    decodes as the one before it."""
    V, K = vocab_size, float(vocab_size)
    w_in = np.zeros(layout.width)
    w_in[gates] = 1.0
    w_in[list(copies)] += K
    w_out = np.zeros(layout.width)
    w_out[layout.index("readout")] = -2.0 / V
    return w_in, -(len(gates) + K * (2 * V - 2.5) / V), w_out


def _rare_conditional(original: Any, rng: np.random.Generator) -> Any:
    """Wrong only when the user types symbol a AND the map sends both a and c to the last symbol."""
    draws = rng.random(2)

    def _build(self, vocab, T):
        spec = original(self, vocab, T)
        V = vocab.size
        a = int(draws[0] * V)
        c = (a + 1 + int(draws[1] * (V - 1))) % V  # c != a
        self.rare_combination = {"user": a, "also_top": c}  # for the test that builds the witness
        layout = self.layout
        w_in, b_in, w_out = rare_unit(layout, V, [layout.index("token", a)],
                                      (layout.index("copy", a), layout.index("copy", c)))
        return with_extra_unit(spec, w_in, b_in, w_out)

    return _build


def _rare_unconditional(original: Any, rng: np.random.Generator) -> Any:
    """Wrong only at one position p, when the token there is a AND the targets at p+1 and q+1 are
    both the last symbol."""
    draws = rng.random(3)

    def _build(self, vocab, T):
        spec = original(self, vocab, T)
        V, N = vocab.size, self.length
        p = 1 + int(draws[0] * (N - 1))  # 1..N-1: a real token sits there
        q = (p + 1 + int(draws[1] * (N - 2))) % N  # q not p (the read target), not p - 1 (the token there)
        a = int(draws[2] * V)
        self.rare_combination = {"position": p, "other_position": q, "token": a}
        layout = self.layout
        w_in, b_in, w_out = rare_unit(layout, V, [layout.index("pos", p), layout.index("token", a)],
                                      (layout.index("copy", p), layout.index("copy", q)))
        return with_extra_unit(spec, w_in, b_in, w_out)

    return _build


def _bias_twice_the_margin(original: Any, rng: np.random.Generator) -> Any:
    """b_U of the worst case's nearest competitor raised by twice the certificate's worst margin."""
    from verify.certificates.cover import certify

    def _build(self, vocab, T):
        spec = original(self, vocab, T)
        honest = object.__new__(type(self))
        honest.__dict__.update(self.__dict__, spec=spec, vocab=vocab)
        found = certify(honest)
        y = int(found.worst_case[-1])
        competitor = y + 1 if y + 1 < vocab.size else y - 1
        b_U = np.array(spec.b_U)
        b_U[competitor] += 2.0 * found.worst_margin
        return TransformerSpec.build(spec.W_E, spec.W_pos, spec.blocks, spec.W_U, b_U, spec.attention_scale,
                                     spec.causal, spec.subspaces)

    return _build


MUTANTS: tuple[Mutant, ...] = (
    # --- shared parts ----------------------------------------------------------------------------
    mutant("parts.readout.bias-sign-flip", "sign flip", f"{PARTS}:grid_readout",
           "the readout's bias is +(c/V)^2 instead of -(c/V)^2", THM2,
           edit("return W_U, -(grid**2)", "return W_U, grid**2")),
    mutant("parts.readout.grid-off-by-one", "off-by-one", f"{PARTS}:grid_readout",
           "the readout grid is (c+1)/V instead of c/V", THM2,
           edit("grid = np.arange(vocab_size) / vocab_size", "grid = np.arange(1, vocab_size + 1) / vocab_size")),
    mutant("parts.selector.half-bias", "perturbed bias", f"{PARTS}:selector_mlp",
           "the selector's bias is -1/2 instead of -1 (unselected values leak into the readout)", THM2,
           edit("b_in=-np.ones(width)", "b_in=-0.5 * np.ones(width)")),
    mutant("parts.attend.position-off-by-one", "off-by-one position", f"{PARTS}:attend_to_position",
           "the attending head looks at position + 1", THM2,
           edit('W_K[layout.index("pos", position), 0] = 1.0', 'W_K[layout.index("pos", position + 1), 0] = 1.0')),
    mutant("parts.attend.half-temperature", "wrong temperature", f"{PARTS}:attend_to_position",
           "W_Q carries T/2 instead of T", THM2,
           edit('W_Q[layout.index("one"), 0] = inverse_temperature',
                'W_Q[layout.index("one"), 0] = inverse_temperature / 2')),
    mutant("parts.copy.target-off-by-one", "off-by-one", f"{PARTS}:copy_matrices",
           "the copy head writes coordinate j of the source into coordinate j+1 of the target", THM2,
           edit("W_O[:, layout[target]] = np.eye(width)", "W_O[:, layout[target]] = np.eye(width, k=1)")),
    mutant("parts.embedding.half-one", "wrong temperature", f"{PARTS}:one_hot_embeddings",
           "the constant 'one' coordinate is 1/2 (every query's temperature halves)", THM2,
           edit('W_pos[:, layout.index("one")] = 1.0', 'W_pos[:, layout.index("one")] = 0.5')),
    mutant("parts.heads.swapped", "swapped head", f"{PARTS}:HeadBuilder.build",
           "head h gets the output matrix of head H-1-h", LONG,
           edit("W_O[h, : o.shape[0]] = o", "W_O[len(self.heads) - 1 - h, : o.shape[0]] = o")),
    # --- encodings ---------------------------------------------------------------------------------
    mutant("unconditional.encoding.wrong-normaliser", "off-by-one", f"{UNC}:Unconditional.virtual_tokens",
           "targets are encoded as Y/(V-1) instead of Y/V", THM1,
           edit("tasks / self.vocab.size", "tasks / (self.vocab.size - 1)")),
    mutant("conditional.encoding.rolled", "off-by-one", f"{CON}:Conditional.virtual_tokens",
           "map coordinate u holds m(u-1)", THM2,
           edit('virtual[:, 0, self.layout["map"]] = tasks / self.vocab.size',
                'virtual[:, 0, self.layout["map"]] = np.roll(tasks, 1, axis=1) / self.vocab.size')),
    mutant("long-response.encoding.slots-reversed", "swapped head", f"{LR}:LongResponse.virtual_tokens",
           "virtual token p carries slot N0-1-p of the response", LONG,
           edit("tasks.transpose(0, 2, 1) / self.vocab.size", "tasks.transpose(0, 2, 1)[:, ::-1] / self.vocab.size")),
    # --- weights -----------------------------------------------------------------------------------
    mutant("conditional.rare-combination", "rare combination", f"{CON}:Conditional._build",
           "one extra MLP unit: wrong only when the user types a and the map sends a and c to the last "
           "symbol (about 1 input in V^3; a, c seeded)", THM2, wrap(_rare_conditional)),
    mutant("unconditional.rare-combination", "rare combination", f"{UNC}:Unconditional._build",
           "one extra MLP unit: wrong only at position p when the token there is a and the targets at p+1, "
           "q+1 are the last symbol (about 1 target in V^3; p, q, a seeded)", THM1, wrap(_rare_unconditional)),
    mutant("conditional.bias-twice-the-margin", "perturbed bias", f"{CON}:Conditional._build",
           "b_U of the worst case's competitor raised by twice the certificate's worst margin", THM2,
           wrap(_bias_twice_the_margin)),
    mutant("long-response.slot-head-off-by-one", "off-by-one position", f"{LR}:LongResponse._build",
           "response slot k reads virtual token k+1 (mod N0)", LONG,
           edit('W_K[layout.index("pos", k), k] = 1.0', 'W_K[layout.index("pos", (k + 1) % n0), k] = 1.0')),
    mutant("two-token.pointer-bias-sign-flip", "sign flip", f"{TT}:TwoToken._front",
           "the pointer head's value bias is +1 instead of -1", TWO,
           edit("b_V=np.stack([np.zeros(V), -np.ones(V)])", "b_V=np.stack([np.zeros(V), np.ones(V)])")),
    mutant("two-token.carry-factor", "wrong constant", f"{TT}:TwoToken._digit_blocks",
           "the remainder is carried times V-1 instead of V", TWO,
           edit('W_out[V - 1, layout.index("rem", n + 1)] = float(V)',
                'W_out[V - 1, layout.index("rem", n + 1)] = float(V - 1)')),
    mutant("two-token.select-bias", "perturbed bias", f"{TT}:TwoToken._select",
           "the selector's bias is -(V-1) instead of -V", TWO,
           edit("-float(V) * np.ones(V)", "-float(V - 1) * np.ones(V)")),
    mutant("two-token.ramp-off-centre", "sign flip", f"{TT}:ramp_start",
           "the ramps start at k/V - g(1 - rho)/2 instead of k/V - g(1 + rho)/2 (not centred in the gap)", TWO,
           edit("gap * (1 + ramp_width) / 2", "gap * (1 - ramp_width) / 2")),
)
