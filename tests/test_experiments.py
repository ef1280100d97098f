"""Tests of verify/experiments: the small GPT, the tasks, records, resume, the ci pipeline."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from constructions.torch_threads import torch_threads
from tests.cli_helpers import assert_usage_error, cli
from tests.synthetic_training import learning
from verify.experiments import records
from verify.experiments.experiments import run_experiment
from verify.experiments.gpt import (GPT, GPTConfig, LoRALinear, add_lora, add_prefix, add_soft_prompt,
                                    count_parameters, unfreeze_all)
from verify.experiments.scales import config_for
from verify.experiments.tasks import (IGNORE, eval_set, exact_match, greedy_scores, is_test, make_batch,
                                      sample_inputs, solve)
from verify.experiments.train import StageConfig, train_stage
from theorems.claims import claim
from verify.experiments.schedule import RunId
from verify.protocol import Skipped
from verify.registry import CHECKS, CONTROLS, QUICK_SKIP, Context, run_claim


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def test_shapes_and_full_parameter_count():
    config = GPTConfig(block_size=20, n_layer=1, n_head=1, n_embd=96)
    model = GPT(config)
    logits = model(torch.zeros(3, 19, dtype=torch.long))
    assert logits.shape == (3, 19, 10)
    d = 96  # embeddings + per block (2 LN, c_attn, c_proj, c_fc, c_proj) + ln_f + lm_head
    expected = 10 * d + 20 * d + (2 * 2 * d + d * 3 * d + 3 * d + d * d + d + d * 4 * d + 4 * d + 4 * d * d + d) \
        + 2 * d + d * 10
    unfreeze_all(model)
    assert count_parameters(model) == expected
    patterns = model.attention_patterns(torch.zeros(2, 19, dtype=torch.long))
    assert len(patterns) == 1 and patterns[0].shape == (2, 1, 19, 19)
    assert torch.allclose(patterns[0].sum(-1), torch.ones(2, 1, 19))
    assert torch.all(patterns[0][0, 0].triu(1) == 0)  # causal


def test_lora_rank1_paper_placement_equals_12_position_prefix():
    config = GPTConfig(block_size=31, n_layer=4, n_head=4, n_embd=256)
    torch.manual_seed(0)
    lora = GPT(config)
    wrapped = add_lora(lora, rank=1)
    assert sorted({name.split(".", 2)[2] for name in wrapped}) == ["attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    assert count_parameters(lora) == 12_288
    prefixed = GPT(config)
    add_prefix(prefixed, 12, torch.Generator().manual_seed(0))
    assert count_parameters(prefixed) == 12_288 == 4 * 12 * 256
    # B = 0 at init: LoRA starts as the base model
    base = copy.deepcopy(lora)
    for name, module in base.named_modules():
        if isinstance(module, LoRALinear):
            module.lora_B.data.normal_()
    x = torch.randint(0, 10, (2, 31))
    lora.eval()
    plain = GPT(config)
    plain.load_state_dict({k.replace(".base.", "."): v for k, v in lora.state_dict().items() if "lora_" not in k})
    plain.eval()
    assert torch.equal(lora(x), plain(x))
    # other placements by option
    other = GPT(config)
    assert len(add_lora(other, rank=2, targets=("c_attn",))) == 4
    assert count_parameters(other) == 4 * 2 * (256 + 768)


def test_prefix_in_one_layer_equals_soft_prompt_float64():
    """DESIGN ambiguity 5: in a 1-layer model a prefix and a soft prompt with the same vectors give
    the same logits at every content position (exact up to float64 rounding)."""
    config = GPTConfig(block_size=23, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(1)
    base = GPT(config).double().eval()
    prefixed, soft = copy.deepcopy(base), copy.deepcopy(base)
    add_prefix(prefixed, 4, torch.Generator().manual_seed(2))
    add_soft_prompt(soft, 4, torch.Generator().manual_seed(3))
    soft.soft_prompt.data.copy_(prefixed.prefix.data[0])
    x = torch.cat([torch.zeros(5, 4, dtype=torch.long), torch.randint(0, 10, (5, 19))], dim=1)
    with torch.no_grad():
        a, b = prefixed(x)[:, 4:], soft(x)[:, 4:]
        assert torch.max(torch.abs(a - b)).item() < 1e-12
        # and it does change the output (the check is not vacuous) ...
        assert torch.max(torch.abs(a - base(x)[:, 4:])).item() > 1e-3
        # ... and in 2 layers they differ (deeper prefix rows are free only for the prefix)
        deep = GPT(GPTConfig(block_size=23, n_layer=2, n_head=2, n_embd=16)).double().eval()
        p2, s2 = copy.deepcopy(deep), copy.deepcopy(deep)
        add_prefix(p2, 4, torch.Generator().manual_seed(2))
        add_soft_prompt(s2, 4, torch.Generator().manual_seed(3))
        s2.soft_prompt.data.copy_(p2.prefix.data[0])
        assert torch.max(torch.abs(p2(x)[:, 4:] - s2(x)[:, 4:])).item() > 1e-6


def test_task_definitions():
    x = np.array([[2, 6, 0, 1, 4, 6, 3, 0, 1, 2]])
    assert solve("ascending", x).tolist() == [[0, 0, 1, 1, 2, 2, 3, 4, 6, 6]]
    assert solve("descending", x).tolist() == [[6, 6, 4, 3, 2, 2, 1, 1, 0, 0]]
    assert solve("add1", x).tolist() == [[3, 7, 1, 2, 5, 7, 4, 1, 2, 3]]
    assert solve("add2", x).tolist() == [[4, 8, 2, 3, 6, 8, 5, 2, 3, 4]]
    assert solve("ascending_add1", x).tolist() == [[1, 1, 2, 2, 3, 3, 4, 5, 7, 7]]
    # per-position occurrence count
    assert solve("double_hist", x).tolist() == [[2, 2, 2, 2, 1, 2, 1, 2, 2, 2]]
    assert solve("double_hist", np.array([[5, 5, 5, 1, 2, 3, 4, 6, 7, 0]])).tolist() == [[3, 3, 3] + [1] * 7]
    four = np.repeat(x, 4, axis=0)
    mixed = solve("random", four, start_index=0)
    for i, name in enumerate(("ascending", "descending", "add1", "add2")):
        assert mixed[i].tolist() == solve(name, x)[0].tolist()
    with pytest.raises(ValueError):
        solve("nope", x)


def test_sampling_split_and_batches():
    rng = np.random.default_rng(0)
    train = sample_inputs(rng, 500, "train")
    test = sample_inputs(rng, 500, "test")
    assert train.shape == (500, 10) and train.min() >= 0 and train.max() <= 7
    assert not any(is_test(r) for r in train) and all(is_test(r) for r in test)
    assert not ({r.tobytes() for r in train} & {r.tobytes() for r in test})
    # stable: a fixed value, independent of the process (sha256, not Python's hash)
    assert is_test(np.array([0] * 10)) == is_test([0] * 10)
    rates = np.mean([is_test(r) for r in np.random.default_rng(1).integers(0, 8, (4000, 10))])
    assert 0.22 < rates < 0.28
    # rejection boosts repeats: a draw with > 5 distinct digits survives with probability 1/2, so
    # the share q of accepted inputs with <= 5 distinct digits is p / (p + (1 - p) / 2), p uniform's
    many = sample_inputs(np.random.default_rng(2), 4000, "train")
    q = np.mean([len(set(r)) <= 5 for r in many])
    p = np.mean([len(set(r)) <= 5 for r in np.random.default_rng(3).integers(0, 8, (4000, 10))])
    assert abs(q - p / (p + (1 - p) / 2)) < 0.03 and q > p + 0.1
    x, y = make_batch(train[:2], solve("ascending", train[:2]), n_prefix=1)
    assert x.shape == y.shape == (2, 20)
    assert (x[:, 0] == 0).all() and (y[:, :10] == IGNORE).all() and (y[:, 10:] >= 0).all()
    a, b = eval_set("descending", 3, 50), eval_set("descending", 3, 50)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], eval_set("ascending", 3, 50)[0])


class SortOracle(torch.nn.Module):
    """Emits the ascending solution (logits on the right token) at every generation step after one
    dummy position, the last output token shifted by ``last_token_offset``."""

    def __init__(self, last_token_offset: int = 0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.last_token_offset = last_token_offset

    def forward(self, idx):
        sol = np.sort(idx[:, 1:11].numpy(), axis=1)
        step = idx.shape[1] - 11
        token = sol[:, step] + (self.last_token_offset if step == 9 else 0)
        logits = torch.zeros(idx.shape[0], idx.shape[1], 10)
        logits[torch.arange(idx.shape[0]), -1, torch.from_numpy(token)] = 1.0
        return logits


def test_exact_match_counts_whole_sequences():
    assert exact_match(SortOracle(), "ascending", 0, 1, n=64) == 1.0
    assert exact_match(SortOracle(), "descending", 0, 1, n=64) < 0.2


def test_greedy_scores_give_exact_match_and_per_token_accuracy_from_one_generation():
    last_token_wrong = SortOracle(last_token_offset=1)  # the last output token always one too high
    assert greedy_scores(last_token_wrong, "ascending", 0, 1, n=64) == (0.0, 0.9)
    assert greedy_scores(last_token_wrong, "ascending", 0, 1, n=64, batch=7) == (0.0, 0.9)  # batches of 7, 1 left


def test_record_key_invalidation(tmp_path):
    config = config_for("descending", "ci")
    code = records.code_hash()
    records.write_record("descending", "ci", 0, config, code, {"accuracy": 1}, tmp_path)
    assert records.load_current("descending", "ci", 0, config, code, tmp_path)["metrics"] == {"accuracy": 1}
    changed = copy.deepcopy(config)
    changed["stages"]["prefix"]["iters"] += 1
    assert records.load_current("descending", "ci", 0, changed, code, tmp_path) is None
    assert records.load_current("descending", "ci", 0, config, "0" * 64, tmp_path) is None
    assert records.load_current("descending", "ci", 1, config, code, tmp_path) is None
    # the code hash follows the producing files' bytes
    for name in records.PRODUCING_FILES:
        (tmp_path / name).write_text("a")
    before = records.code_hash(directory=tmp_path)
    (tmp_path / records.PRODUCING_FILES[0]).write_text("b")
    assert records.code_hash(directory=tmp_path) != before
    # a corrupt record is ignored
    records.record_path("descending", "ci", 0, tmp_path).write_text("{")
    assert records.load_current("descending", "ci", 0, config, code, tmp_path) is None


def test_resume_equals_uninterrupted(tmp_path):
    config = GPTConfig(block_size=20, n_layer=1, n_head=2, n_embd=16)
    stage = StageConfig("ascending", iters=12, lr=1e-3, weight_decay=0.1, dropout_on=True, checkpoint_every=4)

    def fresh() -> GPT:
        torch.manual_seed(5)
        return GPT(config)

    whole = fresh()
    train_stage(whole, stage, seed=5, n_prefix=1, checkpoint=None, key="k", quiet=True)
    ck = tmp_path / "stage.pt"
    part = fresh()
    first = train_stage(part, stage, seed=5, n_prefix=1, checkpoint=ck, key="k", stop_at=8, quiet=True)
    assert first.steps == 8
    resumed = fresh()  # a new process: starts from the initial model, loads the checkpoint
    second = train_stage(resumed, stage, seed=5, n_prefix=1, checkpoint=ck, key="k", quiet=True)
    assert second.steps == 12 and second.steps_run == 4
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # a checkpoint with another key is not resumed
    other = fresh()
    again = train_stage(other, stage, seed=5, n_prefix=1, checkpoint=ck, key="different", quiet=True)
    assert again.steps_run == 12


def test_ci_pipeline_end_to_end(tmp_path):
    runs = run_experiment("descending", "ci", seeds=(0,), results_dir=tmp_path / "results",
                          checkpoint_dir=tmp_path / "ck", quiet=True)
    (run,) = runs
    assert not run["reused"]
    metrics = run["metrics"]
    assert set(metrics["accuracy"]) == {"pretrained", "finetuned", "prefix", "recover_prefix"}
    assert set(metrics["training"]) == {"pretrain", "finetune", "prefix", "recover_prefix"}
    stages = config_for("descending", "ci")["stages"]  # the recovery control has the prefix's budget
    assert {k: stages["recover_prefix"][k] for k in ("iters", "lr")} == {k: stages["prefix"][k] for k in ("iters", "lr")}
    assert all(0.0 <= v <= 1.0 for by_task in metrics["accuracy"].values() for v in by_task.values())
    assert metrics["parameters"]["prefix"] == 96 and metrics["parameters"]["full_finetune"] > 100_000
    assert np.asarray(metrics["attention"]["prefix"]["pattern"]).shape == (20, 20)
    stored = json.loads((tmp_path / "results" / "descending" / "ci-seed0.json").read_text())
    assert stored["key"] == run["key"] and stored["config"]["stages"]["pretrain"]["iters"] == 60
    again = run_experiment("descending", "ci", seeds=(0,), results_dir=tmp_path / "results",
                           checkpoint_dir=tmp_path / "ck", quiet=True)
    assert again[0]["reused"] and again[0]["metrics"] == metrics
    # the verdict machinery on ci numbers: runs, returns a well-formed finding
    from verify.checks.petrov_sec5 import descending_verdict

    finding = descending_verdict(runs)
    assert set(finding.evidence.details["prefix_descending"]) == {"per_seed", "mean", "std", "min", "max"}
    assert {c.name for c in finding.controls} == set(CONTROLS["petrov.sec5.descending-not-learnable"])


def test_check_skipped_under_quick():
    import verify.checks.petrov_sec5  # noqa: F401  (registers the check)

    outcome = CHECKS["petrov.sec5.descending-not-learnable"](Context(seed=0, quick=True))
    assert isinstance(outcome, Skipped) and outcome.reason == QUICK_SKIP


def test_lora_at_initialisation_is_exactly_the_pretrained_function():
    """B = 0 at initialisation: the 'LoRA frozen at init' controls use the pretrained model's
    accuracy, which is valid only because the two compute the same logits bit for bit."""
    torch.manual_seed(0)
    base = GPT(GPTConfig(block_size=31, n_layer=2, n_head=2, n_embd=16, dropout=0.0)).eval()
    lora = copy.deepcopy(base)
    add_lora(lora, 4, ("c_attn", "c_proj", "c_fc"))
    x = torch.randint(0, 10, (3, 20))
    assert torch.equal(base(x), lora(x))


def descending_record(seed, prefix=0.0, finetuned=0.85, start=0.02, recovered=0.9, pre_desc=0.0,
                      not_converged=(), caps=None):
    acc = {"pretrained": {"ascending": 0.9, "descending": pre_desc},
           "finetuned": {"ascending": 0.0, "descending": finetuned},
           "prefix": {"ascending": start, "descending": prefix}, "recover_prefix": {"ascending": recovered}}
    training = {s: {"final_loss": 0.1} for s in ("prefix", "finetune", "recover_prefix")}
    return {"seed": seed, "scale": "cpu", "path": "x", "reused": True,
            "config": {"stages": {"prefix": {"iters": 8000, "lr": 5e-4}}},
            "metrics": {"accuracy": acc, "parameters": {"prefix": 96, "full_finetune": 1}, "training": training,
                        **learning({"prefix": 3000, "finetune": 2000, "recover_prefix": 3000}, not_converged, caps)}}


def runner_result(claim_id: str, experiment: str, records: list[dict]):
    """The runner's verdict (registry.run_claim) on synthetic records handed over as prepared runs."""
    prepared = {RunId(experiment, "cpu", r["seed"]): r for r in records}
    return run_claim(claim(claim_id), Context(seed=0, prepared_runs=prepared))


def test_verdict_on_synthetic_records():
    """Passes on the paper's pattern; fails when the prefix learns descending, or full fine-tuning
    does not, on one seed."""
    from verify.checks.petrov_sec5 import descending_verdict

    good = descending_verdict([descending_record(s) for s in range(3)])
    assert good.evidence.holds and all(c.refuted for c in good.controls)
    bad = [descending_record(0), descending_record(1, prefix=0.3), descending_record(2)]
    assert not descending_verdict(bad).evidence.holds
    assert not descending_verdict([descending_record(s, finetuned=0.02) for s in range(3)]).evidence.holds


@pytest.mark.parametrize(("control", "wrong"), [
    ("prefix_budget_recovers_pretrained_task", {"recovered": 0.04}),  # the budget cannot move accuracy
    ("prefix_budget_recovers_pretrained_task", {"start": 0.6, "recovered": 0.95}),  # start had the skill
    ("prefix_budget_recovers_pretrained_task", {"start": 0.3, "recovered": 0.6}),  # gain 30 < 45 points
    ("finetune_criterion_on_untrained_model", {"pre_desc": 0.6}),  # pretrained model already does it
])
def test_each_control_can_flip_while_the_pass_condition_holds(control, wrong):
    claim_id = "petrov.sec5.descending-not-learnable"
    good = runner_result(claim_id, "descending", [descending_record(s) for s in range(3)])
    flipped = runner_result(claim_id, "descending", [descending_record(s, **wrong) for s in range(3)])
    assert good.evidence["holds"] and flipped.evidence["holds"]  # the pass condition holds in both
    assert good.control[control]["refuted"] and not flipped.control[control]["refuted"]
    assert (good.status, flipped.status) == ("pass", "fail")
    assert any(control in reason for reason in flipped.reasons)


def test_cli_experiments_bad_input(capsys):
    code, _, err = cli(capsys, "experiments", "nope")
    assert_usage_error(code, err)
    code, _, err = cli(capsys, "experiments", "descending", "--scale", "huge")
    assert_usage_error(code, err)
    code, _, err = cli(capsys, "experiments", "descending", "--device", "tpu")
    assert_usage_error(code, err)
    code, _, err = cli(capsys, "experiments", "descending", "--seeds", "0")
    assert_usage_error(code, err)
    if not torch.cuda.is_available():
        code, _, err = cli(capsys, "experiments", "descending", "--device", "cuda")
        assert_usage_error(code, err)
