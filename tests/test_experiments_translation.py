"""Tests of the 'translation' experiment (petrov.appC.translation-needs-lora): the generated
lexicon, its batch stream and checkpoint/resume, parameter parity, the ci pipeline end to end, the
verdict and its controls."""

from __future__ import annotations

import json

import pytest
import torch

from tests.synthetic_training import learning

from constructions.torch_threads import torch_threads
from theorems.claims import claim
from verify.experiments import lexicon as lx
from verify.experiments.experiments import run_experiment
from verify.experiments.gpt import GPT, GPTConfig, add_lora, add_prefix, count_parameters
from verify.experiments.scales import PAPER_NUMBERS, config_for
from verify.experiments.tasks import IGNORE
from verify.experiments.train import StageConfig, train_stage
from verify.experiments.translation import lora_parameters
from verify.experiments.schedule import RunId
from verify.protocol import Skipped
from verify.registry import CHECKS, QUICK_SKIP, Context, run_claim


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def test_lexicon_is_deterministic_and_has_its_properties():
    a, b = lx.make_lexicon(200, 0.3, 7), lx.make_lexicon(200, 0.3, 7)
    assert a == b
    assert lx.make_lexicon(200, 0.3, 8).source != a.source
    assert len(set(a.source)) == 200
    assert all(lx.SOURCE_MIN <= len(w) <= lx.SOURCE_MAX for w in a.source)
    for name, lang in a.languages.items():
        moved = [c for c, d in lang.sigma.items() if c != d]
        assert sorted(lang.sigma.values()) == sorted(lx.LETTERS)  # a bijection
        assert len(moved) == lx.CHANGED_CONSONANTS + lx.CHANGED_VOWELS
        assert all((c in lx.VOWELS) == (lang.sigma[c] in lx.VOWELS) for c in lx.LETTERS)
        for w, t, cog in zip(a.source, lang.words, lang.cognate, strict=True):
            if cog:
                assert t == "".join(lang.sigma[c] for c in w) + lx.SUFFIXES[name]
            else:
                assert lx.TARGET_MIN <= len(t) <= lx.TARGET_MAX
            assert 1 <= len(t) <= lx.T_MAX and set(t) <= set(lx.LETTERS)
        assert 0.15 < sum(lang.cognate) / 200 < 0.45  # p_cognate 0.3
    # the two languages are drawn independently: different sound changes and cognate sets
    assert a.languages["A"].sigma != a.languages["B"].sigma
    assert a.languages["A"].cognate != a.languages["B"].cognate
    assert sum(x != y for x, y in zip(a.languages["A"].words, a.languages["B"].words, strict=True)) > 190
    with pytest.raises(ValueError):
        lx.make_lexicon(0, 0.3, 0)


def test_sequences_put_the_loss_on_the_translation_only():
    pairs = [("abc", "xyzw"), ("hello", "ola")]
    x, y = lx.sequences(pairs, n_prefix=3)
    assert x.shape == y.shape == (2, lx.block_size(3))
    assert (x[:, :3] == lx.DUMMY).all()
    for row, (w, t) in enumerate(pairs):
        targets = y[row][y[row] != IGNORE].tolist()
        assert targets == lx.encode(t) + [lx.EOS]
        assert lx.decode(targets) == t
        prompt = lx.prompts([w], 3)[0].tolist()
        assert x[row, :len(prompt)].tolist() == prompt and prompt[-1] == lx.SEP
    assert int(x.max()) < lx.VOCAB_SIZE


def test_stream_covers_every_word_each_epoch_and_restores_its_state():
    lexicon = lx.make_lexicon(50, 0.3, 1)
    stream = lx.LexiconStream(lexicon, "B", seed=0, n_prefix=2, batch_size=10)
    epoch = torch.cat([stream.next()[0] for _ in range(5)])  # 50 = one epoch
    assert len({tuple(r) for r in epoch.tolist()}) == 50
    saved = stream.state()
    after = [stream.next() for _ in range(7)]  # crosses an epoch boundary
    stream.load_state(json.loads(json.dumps(saved)))  # the state survives serialisation
    again = [stream.next() for _ in range(7)]
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(after, again, strict=True))


def _tiny(n_prefix: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=lx.VOCAB_SIZE, block_size=lx.block_size(n_prefix), n_layer=1, n_head=2,
                         n_embd=16))


def test_checkpoint_resume_gives_the_uninterrupted_parameters(tmp_path):
    lexicon = lx.make_lexicon(40, 0.3, 3)
    stage = StageConfig(task="A", iters=12, lr=1e-3, weight_decay=0.1, dropout_on=True, batch_size=8,
                        checkpoint_every=5)
    whole = _tiny(2)
    train_stage(whole, stage, 0, 2, None, "k", quiet=True, stream=lx.LexiconStream(lexicon, "A", 0, 2, 8))
    ck = tmp_path / "pretrain.pt"
    resumed = _tiny(2)
    train_stage(resumed, stage, 0, 2, ck, "k", quiet=True, stop_at=7,
                stream=lx.LexiconStream(lexicon, "A", 0, 2, 8))  # checkpoint at step 5 and 7
    resumed = _tiny(2)
    result = train_stage(resumed, stage, 0, 2, ck, "k", quiet=True, stream=lx.LexiconStream(lexicon, "A", 0, 2, 8))
    assert result.steps == 12 and result.steps_run == 5
    for (name, p), q in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_lora_and_prefix_have_equal_parameters_at_cpu_and_ci_scale():
    for scale in ("ci", "cpu"):
        config = config_for("translation", scale)
        m = config["model"]
        prefixed = GPT(GPTConfig(**m))
        add_prefix(prefixed, config["n_prefix"], torch.Generator().manual_seed(0))
        lora = GPT(GPTConfig(**m))
        add_lora(lora, config["lora"]["rank"], tuple(config["lora"]["targets"]))
        n = m["n_layer"] * config["n_prefix"] * m["n_embd"]
        assert count_parameters(prefixed) == count_parameters(lora) == n
        assert lora_parameters(m["n_layer"], m["n_embd"], config["lora"]["rank"],
                               tuple(config["lora"]["targets"])) == n


def test_paper_config_is_the_memory_capacity_branch():
    paper = config_for("translation", "paper")
    m = paper["model"]
    assert (m["n_layer"], m["n_head"], m["n_embd"], paper["n_prefix"]) == (4, 4, 256, 66)
    assert paper["lora"] == {"rank": 4, "targets": ["c_attn", "c_proj", "c_fc", "lm_head"]}
    s = paper["stages"]
    assert (s["pretrain"]["iters"], s["pretrain"]["lr"]) == (50_000, 5e-4)
    assert (s["prefix"]["iters"], s["prefix"]["lr"]) == (100_000, 5e-5)
    assert (s["lora"]["iters"], s["lora"]["lr"]) == (50_000, 1e-3)
    # closed form vs a model on a small stand-in with the same targets (lm_head included) ...
    small = GPT(GPTConfig(vocab_size=lx.VOCAB_SIZE, block_size=8, n_layer=2, n_head=2, n_embd=16))
    add_lora(small, 3, ("c_attn", "c_proj", "c_fc", "lm_head"))
    assert count_parameters(small) == lora_parameters(2, 16, 3, ("c_attn", "c_proj", "c_fc", "lm_head"))
    # ... and the paper scale: LoRA 66,680 <= prefix 4 * 66 * 256 = 67,584
    assert lora_parameters(4, 256, 4, tuple(paper["lora"]["targets"])) == 66_680 <= 4 * 66 * 256
    assert PAPER_NUMBERS["translation"] == {"lora B": 0.94}


def test_ci_pipeline_end_to_end(tmp_path):
    runs = run_experiment("translation", "ci", seeds=(0,), results_dir=tmp_path / "results",
                          checkpoint_dir=tmp_path / "ck", quiet=True)
    (run,) = runs
    metrics = run["metrics"]
    assert set(metrics["accuracy"]) == {"pretrained", "finetuned", "prefix", "lora", "recover_prefix"}
    assert all(0.0 <= v <= 1.0 for row in metrics["accuracy"].values() for v in row.values())
    assert metrics["parameters"]["lora"] == metrics["parameters"]["prefix"] == 16 * 32
    assert set(metrics["training"]) == {"pretrain", "finetune", "prefix", "lora", "recover_prefix"}
    stages = run["config"]["stages"]  # the recovery control has the B prefix's budget
    assert {k: stages["recover_prefix"][k] for k in ("iters", "lr")} == {k: stages["prefix"][k] for k in ("iters", "lr")}
    assert stages["recover_prefix"]["task"] == "A"
    stored = json.loads((tmp_path / "results" / "translation" / "ci-seed0.json").read_text())
    assert stored["key"] == run["key"]
    again = run_experiment("translation", "ci", seeds=(0,), results_dir=tmp_path / "results",
                           checkpoint_dir=tmp_path / "ck", quiet=True)
    assert again[0]["reused"] and again[0]["metrics"] == metrics
    from verify.checks.petrov_appC import translation_verdict

    finding = translation_verdict(runs)
    assert isinstance(finding.evidence.summary, str) and len(finding.evidence.details["per_seed"]) == 1


def _synthetic(seed, lora=0.9, prefix=0.01, pretrained=0.99, start=0.0, recovered=0.95, finetuned=0.97,
               pretrained_b=0.0, lora_params=4096, not_converged=(), caps=None):
    acc = {"pretrained": {"A": pretrained, "B": pretrained_b}, "finetuned": {"A": 0.1, "B": finetuned},
           "prefix": {"A": start, "B": prefix}, "lora": {"A": 0.0, "B": lora}, "recover_prefix": {"A": recovered}}
    kinds = {m: {"B cognate": 0.5, "B arbitrary": 0.5} for m in ("pretrained", "finetuned", "prefix", "lora")}
    training = {s: {"final_loss": 0.1} for s in ("pretrain", "finetune", "prefix", "lora", "recover_prefix")}
    return {"seed": seed, "scale": "cpu", "path": "x", "reused": True,
            "config": {"stages": {"prefix": {"iters": 1200, "lr": 1e-2}}},
            "metrics": {"accuracy": acc, "by_kind": kinds, "training": training,
                        "parameters": {"prefix": 4096, "lora": lora_params, "full_finetune": 10**5},
                        **learning({"finetune": 400, "prefix": 900, "lora": 1000, "recover_prefix": 1200},
                                   not_converged, caps or {"prefix": 1200, "lora": 1000, "finetune": 400})}}


def test_verdict_on_synthetic_records():
    from verify.checks.petrov_appC import translation_verdict

    good = translation_verdict([_synthetic(s) for s in range(3)])
    assert good.evidence.holds and all(c.refuted for c in good.controls)
    # one seed failing any condition fails the claim
    assert not translation_verdict([_synthetic(0), _synthetic(1, lora=0.45), _synthetic(2)]).evidence.holds
    assert not translation_verdict([_synthetic(0), _synthetic(1, prefix=0.12), _synthetic(2)]).evidence.holds
    assert not translation_verdict([_synthetic(s, pretrained=0.7) for s in range(3)]).evidence.holds
    assert not translation_verdict([_synthetic(s, lora_params=4097) for s in range(3)]).evidence.holds


def runner_result(records: list[dict]):
    prepared = {RunId("translation", "cpu", r["seed"]): r for r in records}
    return run_claim(claim("petrov.appC.translation-needs-lora"), Context(seed=0, prepared_runs=prepared))


@pytest.mark.parametrize(("control", "wrong"), [
    ("prefix_budget_recovers_pretrained_task", {"recovered": 0.05}),  # the budget cannot move accuracy
    ("prefix_budget_recovers_pretrained_task", {"start": 0.6, "recovered": 1.0}),  # the start had the skill
    ("prefix_budget_recovers_pretrained_task", {"start": 0.2, "recovered": 0.55}),  # gain 35 < 40 points
    ("not_learnable_on_full_finetuning_B", {"finetuned": 0.05}),  # B not learnable by anything here
    ("criterion_on_lora_at_initialisation", {"pretrained_b": 0.8}),  # the pretrained model already does B
])
def test_each_control_can_flip_while_the_pass_condition_holds(control, wrong):
    good = runner_result([_synthetic(s) for s in range(3)])
    flipped = runner_result([_synthetic(s, **wrong) for s in range(3)])
    assert good.evidence["holds"] and flipped.evidence["holds"]
    assert good.control[control]["refuted"] and not flipped.control[control]["refuted"]
    assert (good.status, flipped.status) == ("pass", "fail")
    assert any(control in reason for reason in flipped.reasons)


def test_check_skipped_under_quick():
    import verify.checks.petrov_appC  # noqa: F401  (registers the check)

    outcome = CHECKS["petrov.appC.translation-needs-lora"](Context(seed=0, quick=True))
    assert isinstance(outcome, Skipped) and outcome.reason == QUICK_SKIP
