"""The training experiments' GPT on the one forward pass (verify.experiments.spec_export): gpt.py's
logits and the spec's agree to 1e-12 in float64, random-init and trained, with a prefix, a soft
prompt or merged LoRA; the same comparison refutes wrong exports (tanh GELU, no ln_f, LoRA left
out, content at the wrong positions, heads split the wrong way); the export goes to disk and to
TransformerLens."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from constructions.errors import ExportError, PromptproofError
from constructions.forward import NumpyOps, embed, forward, logits as spec_logits
from constructions.spec import Attention, Block, TransformerSpec
from constructions.torch_threads import torch_threads
from verify.experiments.gpt import GPT, GPTConfig, add_lora, add_prefix, add_soft_prompt, decay_groups
from verify.experiments.spec_export import (
    ExportedGPT,
    GPTExportError,
    export_gpt,
    gpt_logits,
    gpt_to_spec,
    load_gpt,
    save_gpt,
    save_gpt_lens,
)
from verify.experiments.tasks import TaskStream
from verify.experiments.train import masked_loss

# float64, the same arithmetic summed in another order (torch's fused Linear and LayerNorm vs
# numpy's matmuls; LoRA merged into W instead of a second product; the attention scale multiplied
# instead of divided): logits are O(1-10), one ulp 2e-16, and measured differences are ~3e-15.
PARITY = 1e-12
# A wrong export must miss by far more than the tolerance: 1000x.
REFUTED = 1e3 * PARITY
LENGTH = 19  # tasks.make_batch: 10 input digits + 9 fed solution tokens, plus n_S dummy tokens


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def small_gpt(mode: str = "replace", seed: int = 0, std: float | None = 0.3, skip_ln: bool = False,
              n_layer: int = 2, n_head: int = 2, n_embd: int = 24, n_prefix: int = 3) -> GPT:
    """A float64 GPT; ``std`` redraws every weight N(0, std^2) (gpt.py's 0.02 init keeps the MLP and
    attention nearly linear, so a wrong GELU or norm would move logits only a little), None keeps it."""
    torch.manual_seed(seed)
    config = GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=LENGTH + n_prefix + 2,
                       prefix_mode=mode, skip_layer_norm=skip_ln)
    model = GPT(config).double()
    if std is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, std)
    return model


def tokens(batch: int = 6, length: int = LENGTH, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, size=(batch, length))


def parity(model: GPT, exported: ExportedGPT | None = None, idx: np.ndarray | None = None) -> float:
    """max |gpt.py logits - spec logits| over every represented row."""
    exported = export_gpt(model) if exported is None else exported
    idx = tokens() if idx is None else idx
    theirs = gpt_logits(model, idx)[:, exported.represented_rows(idx.shape[1])]
    ours = exported.logits(idx)
    assert ours.shape == theirs.shape and ours.dtype == np.float64
    return float(np.max(np.abs(theirs - ours)))


def with_adapter(model: GPT, adapter: str, seed: int = 1) -> GPT:
    generator = torch.Generator().manual_seed(seed)
    if adapter == "prefix":
        add_prefix(model, 3, generator)
    elif adapter == "soft_prompt":
        add_soft_prompt(model, 3, generator)
    elif adapter == "lora":
        torch.manual_seed(seed)
        add_lora(model, rank=2, targets=("c_attn", "c_proj", "c_fc", "lm_head"), alpha=2.0)
        with torch.no_grad():  # B = 0 at init would make the merge trivially exact
            for name, p in model.named_parameters():
                if name.endswith("lora_B"):
                    p.normal_(0.0, 0.3, generator=generator)
    return model


# --- parity on random-init models ---------------------------------------------------------------
@pytest.mark.parametrize("mode", ["replace", "prepend"])
@pytest.mark.parametrize("adapter", [None, "prefix", "soft_prompt", "lora"])
def test_random_gpt_matches_the_spec_forward_to_1e12(mode, adapter):
    model = with_adapter(small_gpt(mode), adapter) if adapter else small_gpt(mode)
    assert parity(model) <= PARITY


@pytest.mark.parametrize("skip_ln, n_head", [(True, 3), (False, 1), (False, 4)])
def test_identity_ln1_and_head_counts_match(skip_ln, n_head):
    model = with_adapter(small_gpt(skip_ln=skip_ln, n_head=n_head), "prefix")
    exported = export_gpt(model)
    assert (exported.spec.blocks[0].ln1 is None) == skip_ln
    assert exported.spec.blocks[0].attention.n_heads == n_head
    assert parity(model, exported) <= PARITY


def test_gpt_init_and_train_mode_export_the_eval_function():
    model = small_gpt(std=None)  # gpt.py's own init, left in train() mode (dropout 0.1)
    model.train()
    assert parity(model) <= PARITY
    assert model.training  # gpt_logits restores the mode


@pytest.mark.parametrize("mode, adapter", [("replace", None), ("replace", "prefix"), ("prepend", "prefix"),
                                           ("prepend", "soft_prompt")])
def test_attention_patterns_for_figures_match_gpt(mode, adapter):
    model = with_adapter(small_gpt(mode), adapter) if adapter else small_gpt(mode)
    exported, idx = export_gpt(model), tokens()
    theirs = [p.numpy() for p in model.eval().attention_patterns(torch.from_numpy(idx))]
    rows = exported.represented_rows(idx.shape[1]) if mode == "replace" else slice(None)
    for ours, gpt_pattern in zip(exported.attention_patterns(idx), theirs):
        assert ours.shape == gpt_pattern[:, :, rows].shape
        assert np.max(np.abs(ours - gpt_pattern[:, :, rows])) <= PARITY


def test_spec_fields_are_the_gpt_weights():
    model = small_gpt(n_head=2)
    spec = gpt_to_spec(model)
    block, attn, e = model.blocks[1], model.blocks[1].attn, 12
    C = attn.c_attn.weight.detach().numpy()
    assert np.array_equal(spec.blocks[1].attention.W_K[1], C[24 + e:24 + 2 * e].T)  # head 1 of K: (d, e)
    assert np.array_equal(spec.blocks[1].attention.W_O[0], attn.c_proj.weight.detach().numpy()[:, :e].T)
    assert np.array_equal(spec.blocks[1].mlp.W_in, block.mlp.c_fc.weight.detach().numpy().T)
    assert spec.blocks[1].mlp.activation == "gelu" and spec.ln_final.eps == model.ln_f.eps == 1e-5
    assert spec.attention_scale == 1 / np.sqrt(e) and spec.n_ctx == model.config.block_size
    assert np.array_equal(spec.W_U, model.lm_head.weight.detach().numpy().T) and not np.any(spec.b_U)


# --- a trained model --------------------------------------------------------------------------
def train(model: GPT, steps: int, n_prefix: int, task: str = "ascending", seed: int = 0) -> list[float]:
    """A few AdamW steps of the experiments' masked loss on a task stream (float64 batches)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(decay_groups(model, 0.1) if len(params) > 20 else params, lr=3e-3)
    stream = TaskStream(task, seed, n_prefix, 64)
    losses = []
    with torch_threads(1):  # also for the module-scoped fixture, set up outside one_thread
        for _ in range(steps):
            x, y = stream.next()
            loss = masked_loss(model, x, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    return losses


@pytest.fixture(scope="module")
def trained() -> GPT:
    """gpt.py's init, 60 training steps on ascending sort (train() mode, dropout on), float64."""
    model = small_gpt(std=None, n_embd=32, n_prefix=2)
    model.train()
    losses = train(model, 60, n_prefix=2)
    assert np.mean(losses[-10:]) < losses[0]  # it learned something
    return model.eval()


def trained_inputs(n_prefix: int = 2) -> np.ndarray:
    x, _ = TaskStream("ascending", 7, n_prefix, 16).next()
    return x.numpy()


def test_trained_gpt_matches_the_spec_forward(trained):
    assert parity(trained, idx=trained_inputs()) <= PARITY


@pytest.mark.parametrize("adapter", ["prefix", "lora"])
def test_trained_adapter_matches_the_spec_forward(trained, adapter):
    import copy

    model = copy.deepcopy(trained)
    if adapter == "prefix":
        add_prefix(model, 2, torch.Generator().manual_seed(3))
    else:
        torch.manual_seed(3)
        add_lora(model, rank=2)  # the paper's targets, B = 0: training moves it
    model.eval()
    train(model, 20, n_prefix=2, task="descending")
    changed = export_gpt(model).prefix if adapter == "prefix" else model.blocks[0].mlp.c_fc.lora_B.detach()
    assert np.any(np.asarray(changed) != 0)
    assert parity(model, idx=trained_inputs()) <= PARITY


def test_section4_content_scaling_holds_on_the_exported_trained_prefix(trained):
    """Petrov et al. Sec. 4 on the one forward: in block 0, A^pt_ij = A_ij (1 - alpha_i), alpha_i the
    attention on the prefix; a deeper block's inputs change, so the identity is for block 0 only."""
    import copy

    model = copy.deepcopy(trained)
    add_prefix(model, 2, torch.Generator().manual_seed(4))
    train(model, 10, n_prefix=2, task="descending")
    exported = export_gpt(model)
    x = exported.inputs(trained_inputs())  # the content rows (B, T - 2, d), as the GPT feeds them
    tuned, plain = {}, {}
    forward(exported.spec, x, cache=tuned, prefix=exported.prefix_kv())
    forward(exported.spec, x, cache=plain)
    with_prefix = tuned["blocks.0.attn.pattern"]  # (B, H, n, 2 + n)
    without = plain["blocks.0.attn.pattern"]  # (B, H, n, n)
    alpha = with_prefix[..., :2].sum(-1, keepdims=True)  # (B, H, n, 1)
    assert np.max(np.abs(with_prefix[..., 2:] - without * (1 - alpha))) <= PARITY
    assert np.min(alpha) > 1e-3  # the prefix takes real attention: the identity is not 0 = 0


# --- negative controls: the same comparison refutes wrong exports --------------------------------
class TanhGeluOps(NumpyOps):
    """The tanh approximation ("gelu_new", GPT-2's) in place of the exact erf GELU."""

    def gelu(self, x: np.ndarray) -> np.ndarray:
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _plain_difference(model: GPT, spec: TransformerSpec, ops=None, idx=None) -> float:
    idx = trained_inputs() if idx is None else idx
    ops = ops or NumpyOps()
    ours = spec_logits(spec, forward(spec, embed(spec, idx), ops=ops), ops=ops)
    return float(np.max(np.abs(gpt_logits(model, idx) - ours)))


def test_the_right_export_passes_the_same_plain_comparison(trained):
    assert _plain_difference(trained, gpt_to_spec(trained)) <= PARITY


def test_tanh_gelu_is_refuted(trained):
    assert _plain_difference(trained, gpt_to_spec(trained), TanhGeluOps()) > REFUTED


def test_dropping_ln_f_is_refuted(trained):
    spec = dataclasses.replace(gpt_to_spec(trained), ln_final=None)
    assert _plain_difference(trained, spec) > REFUTED


def test_swapped_head_split_is_refuted():
    """W_Q/W_K/W_V heads read as (e, H) instead of (H, e) columns: refuted with 2 heads."""
    model = small_gpt(n_head=2)
    spec = gpt_to_spec(model)
    d, H, e = 24, 2, 12

    def interleave(W):  # (H, d, e) -> columns h + H j instead of h e + j
        return W.transpose(1, 0, 2).reshape(d, H * e).reshape(d, e, H).transpose(2, 0, 1)

    blocks = []
    for block in spec.blocks:
        a = block.attention
        wrong = Attention.build(d, interleave(a.W_Q), interleave(a.W_K), interleave(a.W_V), a.W_O,
                                a.b_Q.reshape(-1).reshape(e, H).T, a.b_K.reshape(-1).reshape(e, H).T,
                                a.b_V.reshape(-1).reshape(e, H).T, a.b_O)
        blocks.append(Block(wrong, block.mlp, block.ln1, block.ln2))
    assert _plain_difference(model, dataclasses.replace(spec, blocks=tuple(blocks)), idx=tokens()) > REFUTED


def test_lora_left_unmerged_is_refuted():
    model = with_adapter(small_gpt(), "lora")
    base = model.blocks[0].mlp.c_fc
    scale, base.scale = base.scale, 0.0  # export the frozen weights only
    spec = gpt_to_spec(model)
    base.scale = scale
    assert _plain_difference(model, spec, idx=tokens()) > REFUTED


def test_replaced_prefix_content_at_positions_0_is_refuted():
    """'replace' content sits at positions n_S..T-1; feeding it W_pos[0..] instead is refuted."""
    model = with_adapter(small_gpt("replace"), "prefix")
    exported = export_gpt(model)
    idx = tokens()
    wrong = forward(exported.spec, embed(exported.spec, idx[:, 3:]), prefix=exported.prefix_kv())
    theirs = gpt_logits(model, idx)[:, 3:]
    assert np.max(np.abs(theirs - spec_logits(exported.spec, wrong))) > REFUTED


# --- refusals ----------------------------------------------------------------------------------
def test_an_unsupported_module_is_named():
    model = small_gpt()
    model.blocks[1].mlp.c_fc = nn.Sequential(nn.Linear(24, 96))
    with pytest.raises(GPTExportError, match=r"'blocks\.1\.mlp\.c_fc' of type Sequential"):
        gpt_to_spec(model)
    with pytest.raises(GPTExportError, match="expected a verify.experiments.gpt.GPT"):
        gpt_to_spec(nn.Linear(2, 2))


def test_prefix_and_soft_prompt_together_are_refused():
    model = with_adapter(with_adapter(small_gpt(), "prefix"), "soft_prompt")
    with pytest.raises(GPTExportError, match="both a prefix and a soft prompt"):
        export_gpt(model)


def test_replace_prefix_needs_content():
    exported = export_gpt(with_adapter(small_gpt(), "prefix"))
    with pytest.raises(PromptproofError, match="no content"):
        exported.logits(tokens(length=3))


# --- through the export paths ------------------------------------------------------------------
@pytest.mark.parametrize("adapter", [None, "prefix", "soft_prompt"])
def test_saved_export_reloads_to_the_same_logits(tmp_path, trained, adapter):
    import copy

    model = copy.deepcopy(trained)
    if adapter:
        with_adapter(model, adapter)
    exported = export_gpt(model)
    paths = save_gpt(model, tmp_path / "gpt")
    config = json.loads((tmp_path / "gpt" / "config.json").read_text())
    assert config["format"] == "promptproof-spec" and config["source"]["adapter"] == adapter
    assert config["architecture"]["norms"]["ln_final"] == {"kind": "layernorm", "eps": 1e-5}
    assert config["architecture"]["activation"] == "gelu"
    assert {p.name for p in paths} == {"model.safetensors", "config.json"} | (
        {"adapters.safetensors"} if adapter else set())
    again = load_gpt(tmp_path / "gpt")
    idx = trained_inputs()
    assert np.array_equal(again.logits(idx), exported.logits(idx))
    assert parity(model, again, idx) <= PARITY


def test_corrupt_export_is_an_export_error(tmp_path, trained):
    save_gpt(trained, tmp_path / "gpt")
    (tmp_path / "gpt" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ExportError, match="not a readable safetensors file"):
        load_gpt(tmp_path / "gpt")


def test_trained_gpt_in_transformer_lens_matches_to_1e10(tmp_path, trained):
    pytest.importorskip("transformer_lens")
    from constructions.lens import LENS_TOLERANCE, lens_logits, load_lens

    idx = trained_inputs()
    _, worst = save_gpt_lens(trained, tmp_path / "tl", idx)
    loaded = load_lens(tmp_path / "tl")
    assert loaded.model.cfg.normalization_type == "LN" and loaded.model.cfg.act_fn == "gelu"
    theirs = lens_logits(loaded.model, idx)
    assert worst <= LENS_TOLERANCE
    assert np.max(np.abs(theirs - gpt_logits(trained, idx))) <= LENS_TOLERANCE


def test_replace_soft_prompt_in_transformer_lens_and_prefix_refused(tmp_path, trained):
    pytest.importorskip("transformer_lens")
    import copy

    from constructions.lens import LENS_TOLERANCE, LensExportError, lens_logits, load_lens

    model = with_adapter(copy.deepcopy(trained), "soft_prompt")
    idx = trained_inputs(3)
    save_gpt_lens(model, tmp_path / "tl", idx)
    loaded = load_lens(tmp_path / "tl")
    positions = loaded.meta["prompt"]["virtual_positions"]
    theirs = lens_logits(loaded.model, idx, loaded.virtual_tokens, positions)
    assert np.max(np.abs(theirs - gpt_logits(model, idx))) <= LENS_TOLERANCE
    with pytest.raises(LensExportError, match="prefix"):
        save_gpt_lens(with_adapter(copy.deepcopy(trained), "prefix"), tmp_path / "no", idx)
    assert not (tmp_path / "no").exists()
