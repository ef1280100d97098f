"""Mutants of the one forward pass (constructions/forward.py), the spec (spec.py), the torch module
(torch_module.py) and the prefix helpers (prefix.py): the code every claim runs through."""

from __future__ import annotations

from typing import Any

import numpy as np

from verify.mutants.core import Mutant, edit, mutant, wrap

F = "constructions.forward"
S = "constructions.spec"
TM = "constructions.torch_module"
P = "constructions.prefix"

THM1 = "petrov.thm1.unconditional"
THM2 = "petrov.thm2.conditional"
LONG = "petrov.thm2.long-response"
TWO = "petrov.thm2.two-token"
CAPACITY = "petrov.sec3.capacity"
SCALING = "petrov.sec4.content-scaling"
BIAS = "petrov.sec4.output-bias"
SOFT = "petrov.sec4.soft-prompt-is-prefix-in-layer-1"


def _virtual_without_position(original: Any, rng: np.random.Generator) -> Any:
    def embed(spec, tokens, virtual_tokens=None, virtual_positions=()):
        x = original(spec, tokens, virtual_tokens, virtual_positions)
        if virtual_positions:
            x = x.copy()
            x[:, list(virtual_positions)] -= spec.W_pos[list(virtual_positions)]
        return x

    return embed


MUTANTS: tuple[Mutant, ...] = (
    # --- NumpyOps: the float64 arithmetic ------------------------------------------------------
    mutant("forward.softmax.half-temperature", "wrong temperature", f"{F}:NumpyOps.softmax",
           "softmax(s/2) instead of softmax(s): every attention is twice as hot as the spec says",
           THM1, edit("weights = np.exp(shifted)", "weights = np.exp(0.5 * shifted)")),
    mutant("forward.softmax.extra-sink", "extra term", f"{F}:NumpyOps.softmax",
           "the softmax normaliser has an extra e^0 (a phantom key with score 0)",
           THM2, edit("weights / weights.sum(axis=-1, keepdims=True)",
                      "weights / (weights.sum(axis=-1, keepdims=True) + 1.0)")),
    mutant("forward.linear.skips-negative-rows", "wrong condition", f"{F}:NumpyOps.linear",
           "the zero-row shortcut also skips rows whose entries are all negative or zero",
           TWO, edit("np.any(W != 0, axis=1)", "np.any(W > 0, axis=1)")),
    mutant("forward.linear.no-bias", "dropped term", f"{F}:NumpyOps.linear",
           "x @ W without + b in every linear map", THM2, edit("flat += b", "flat += 0 * b")),
    mutant("forward.layernorm.uncentred", "dropped term", f"{F}:NumpyOps.norm",
           "LayerNorm divides by the root mean square instead of the standard deviation",
           SCALING, edit("np.sqrt((centred**2).mean(axis=-1, keepdims=True) + norm.eps)",
                         "np.sqrt((x**2).mean(axis=-1, keepdims=True) + norm.eps)")),
    mutant("forward.rmsnorm.no-sqrt", "wrong exponent", f"{F}:NumpyOps.norm",
           "RMSNorm divides by the mean square, not its square root",
           SCALING, edit("return x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + norm.eps) * norm.w",
                         "return x / ((x**2).mean(axis=-1, keepdims=True) + norm.eps) * norm.w")),
    mutant("forward.rope.sign-flip", "sign flip", f"{F}:NumpyOps.rotate",
           "RoPE rotates by -p theta (rotate_half with the signs exchanged) in the numpy forward",
           SOFT, edit("[-x[..., half:], x[..., :half]]", "[x[..., half:], -x[..., :half]]")),
    # --- the masks and positions -----------------------------------------------------------------
    mutant("forward.mask.sees-next-token", "off-by-one position", f"{F}:attention_mask",
           "the causal mask lets query i see key i+1", THM2,
           edit("np.tril(np.ones((n, n), dtype=bool))", "np.tril(np.ones((n, n), dtype=bool), k=1)")),
    mutant("forward.mask.prefix-causal", "off-by-one position", f"{F}:attention_mask",
           "prefix key k is hidden from content queries i < k (the prefix treated as causal content)",
           SOFT, edit("np.ones((n, n_prefix), dtype=bool)",
                         "np.arange(n)[:, None] >= np.arange(n_prefix)[None, :]")),
    mutant("forward.embed.positions-shifted", "off-by-one position", f"{F}:embed",
           "token i receives the positional embedding of position i-1 (cyclically)",
           THM2, edit("return x + spec.W_pos[:n]", "return x + np.roll(spec.W_pos[:n], 1, axis=0)")),
    mutant("forward.embed.virtual-without-position", "dropped term", f"{F}:embed",
           "virtual tokens do not receive their positional embedding", THM2,
           wrap(_virtual_without_position)),
    mutant("forward.rope.positions-shifted", "off-by-one position", f"{F}:rotary_angles",
           "every RoPE angle uses position p + 1 (prefix keys, content, numpy and torch alike)",
           SOFT, edit("np.asarray(positions, dtype=np.float64)[:, None]",
                      "(np.asarray(positions, dtype=np.float64)[:, None] + 1)")),
    mutant("forward.rope.frequency-off-by-one", "off-by-one", f"{F}:rotary_angles",
           "theta_m = base^(-(2m+1)/width) instead of base^(-2m/width)",
           SOFT, edit("np.arange(0, width, 2, dtype=np.float64) / width",
                      "np.arange(1, width + 1, 2, dtype=np.float64) / width")),
    # --- the block -------------------------------------------------------------------------------
    mutant("forward.scale.over-sqrt-length", "length-dependent attention scale", f"{F}:forward",
           "scores multiplied by attention_scale / sqrt(number of keys)", THM2,
           edit("spec.attention_scale)", "spec.attention_scale / np.sqrt(n_prefix + n))")),
    mutant("forward.scale.ignored", "dropped factor", f"{F}:forward",
           "the spec's attention_scale is ignored (1.0 always)", SCALING,
           edit("spec.attention_scale)", "1.0)")),
    mutant("forward.heads.swapped", "swapped head", f"{F}:forward",
           "head h's mixed values go through W_O of head H-1-h", BIAS,
           edit("attn.W_O.reshape(heads * d_v, d)", "attn.W_O[::-1].reshape(heads * d_v, d)")),
    mutant("forward.attention.no-residual", "dropped term", f"{F}:forward",
           "the attention output replaces the residual stream instead of adding to it", THM2,
           edit("x = ops.add(x, ops.linear(mixed, attn.W_O.reshape(heads * d_v, d), attn.b_O))",
                "x = ops.linear(mixed, attn.W_O.reshape(heads * d_v, d), attn.b_O)")),
    mutant("forward.value.no-bias", "dropped term", f"{F}:forward",
           "values lose their bias b_V", SOFT,
           edit("v = project(attn.W_V, attn.b_V, d_v)", "v = project(attn.W_V, 0 * attn.b_V, d_v)")),
    mutant("forward.key.bias-sign-flip", "sign flip", f"{F}:forward",
           "keys get -b_K instead of +b_K", SOFT,
           edit("k = project(attn.W_K, attn.b_K, d_head)", "k = project(attn.W_K, -attn.b_K, d_head)")),
    mutant("forward.prefix.after-content", "off-by-one position", f"{F}:forward",
           "prefix keys are appended after the content keys (the mask and the values still put them first)",
           SCALING, edit("k = ops.concat([keys, k], axis=2)", "k = ops.concat([k, keys], axis=2)")),
    mutant("forward.prefix.values-dropped", "dropped term", f"{F}:forward",
           "prefix values are zero (the prefix only dilutes attention, adds no bias)",
           BIAS, edit("v = ops.concat([values, v], axis=2)", "v = ops.concat([0 * values, v], axis=2)")),
    mutant("forward.prefix.one-minus-alpha-dropped", "dropped factor", f"{F}:forward",
           "content attention is not scaled by (1 - alpha): the content row is renormalised to 1 and the "
           "prefix weight alpha is added on top, t^pt = t + alpha W_V s",
           BIAS, edit("z = ops.matmul(pattern, v)",
                      "z = ops.matmul(pattern if not n_prefix else np.concatenate([pattern[..., :n_prefix], "
                      "pattern[..., n_prefix:] / (1 - pattern[..., :n_prefix].sum(-1, keepdims=True))], -1), v)")),
    mutant("forward.mlp.no-relu", "dropped nonlinearity", f"{F}:forward",
           "the MLP's ReLU is the identity", THM2,
           edit('hidden = ops.relu(pre) if mlp.activation == "relu"', 'hidden = pre if mlp.activation == "relu"')),
    mutant("forward.mlp.no-residual", "dropped term", f"{F}:forward",
           "the MLP output replaces the residual stream", TWO,
           edit("x = ops.add(x, ops.linear(hidden, mlp.W_out, mlp.b_out))",
                "x = ops.linear(hidden, mlp.W_out, mlp.b_out)")),
    # --- decoding --------------------------------------------------------------------------------
    mutant("forward.logits.no-bias", "dropped term", f"{F}:logits", "logits lose b_U", THM2,
           edit("ops.linear(resid, spec.W_U, spec.b_U)", "ops.linear(resid, spec.W_U, 0 * spec.b_U)")),
    mutant("forward.predictions.argmin", "sign flip", f"{F}:next_token_predictions",
           "teacher-forced predictions take the argmin of the logits", THM2,
           edit("np.argmax(", "np.argmin(")),
    mutant("forward.generate.next-token-off-by-one", "off-by-one token", f"{F}:generate",
           "greedy decoding emits the token after the argmax (mod V)", THM2,
           edit("out[:, step] = np.argmax(logits(spec, forward(spec, x))[:, -1], axis=-1)",
                "out[:, step] = (np.argmax(logits(spec, forward(spec, x))[:, -1], axis=-1) + 1) % spec.vocab_size")),
    # --- the spec --------------------------------------------------------------------------------
    mutant("spec.attention.default-output-bias", "perturbed bias", f"{S}:Attention.build",
           "an absent b_O defaults to ones instead of zeros", THM2,
           edit("zeros(d_model) if b_O is None else b_O", "np.ones(d_model) if b_O is None else b_O")),
    mutant("spec.attention.key-is-query", "swapped weights", f"{S}:Attention.build",
           "W_K is built from W_Q", THM2, edit('W_K=_as_f64(f"{where}.W_K", W_K,', 'W_K=_as_f64(f"{where}.W_K", W_Q,')),
    mutant("spec.mlp.input-bias-dropped", "dropped term", f"{S}:MLP.build",
           "the MLP's b_in is replaced by zeros", THM2,
           edit("np.zeros(d_mlp) if b_in is None else b_in", "np.zeros(d_mlp)")),
    mutant("spec.attention-scale-dropped", "dropped factor", f"{S}:TransformerSpec.build",
           "the spec stores attention_scale 1.0 whatever it is given", SCALING,
           edit("attention_scale=scale,", "attention_scale=1.0,")),
    mutant("spec.unembedding-bias-dropped", "dropped term", f"{S}:TransformerSpec.build",
           "b_U given to the spec is replaced by zeros", THM2,
           edit("np.zeros(vocab_size) if b_U is None else b_U", "np.zeros(vocab_size)")),
    # --- the torch module ------------------------------------------------------------------------
    mutant("torch.mask.sees-next-token", "off-by-one position", f"{TM}:AttentionLayer.forward",
           "the torch causal mask lets query i see key i+1", THM2,
           edit(".tril(n_prefix)", ".tril(n_prefix + 1)")),
    mutant("torch.scale.ignored", "dropped factor", f"{TM}:AttentionLayer.forward",
           "the torch module ignores attention_scale", SCALING,
           edit("scores = self.attention_scale * (q @ k.transpose(-1, -2))", "scores = (q @ k.transpose(-1, -2))")),
    mutant("torch.key.no-bias", "dropped term", f"{TM}:AttentionLayer.forward",
           "torch keys lose b_K", SCALING,
           edit('k = torch.einsum("bnd,hde->bhne", x, self.W_K) + self.b_K[:, None, :]',
                'k = torch.einsum("bnd,hde->bhne", x, self.W_K)')),
    mutant("torch.mlp.gelu", "wrong nonlinearity", f"{TM}:MLPLayer.forward",
           "the torch MLP uses GELU instead of ReLU", THM2,
           edit("torch.relu(", "torch.nn.functional.gelu(")),
    mutant("torch.virtual-token.off-by-one", "off-by-one position", f"{TM}:SpecTransformer.embed_tokens",
           "the torch module writes virtual tokens one position late", THM2,
           edit("x[:, list(virtual_positions)] = virtual_tokens.to(x.dtype)",
                "x[:, [p + 1 for p in virtual_positions]] = virtual_tokens.to(x.dtype)")),
    # --- prefixes and soft prompts ---------------------------------------------------------------
    mutant("prefix.key-positions-off-by-one", "off-by-one position", f"{P}:prefix_from_vectors",
           "prefix keys are rotated at positions 1..n_S instead of 0..n_S-1",
           SOFT, edit("np.arange(len(vectors))", "np.arange(1, len(vectors) + 1)")),
    mutant("prefix.keys-skip-norm", "dropped term", f"{P}:prefix_from_vectors",
           "prefix keys and values are computed from s without the block's pre-attention norm",
           SOFT, edit("h = vectors if block.ln1 is None else NUMPY.norm(vectors, block.ln1)", "h = vectors")),
    mutant("prefix.content-positions-unshifted", "off-by-one position", f"{P}:prefix_tuned_forward",
           "content after a prefix keeps positions 0..n-1 (RoPE) instead of n_S..n_S+n-1",
           SOFT, edit("positions=n_prefix + np.arange(x.shape[1])", "positions=np.arange(x.shape[1])")),
    mutant("prefix.soft-prompt-rows-off-by-one", "off-by-one position", f"{P}:soft_prompted_forward",
           "the soft-prompted forward returns rows shifted by one (the last prompt row, not the last content row)",
           SOFT, edit("[:, len(vectors):]", "[:, len(vectors) - 1:-1]")),
)
