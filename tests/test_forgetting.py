"""petrov.discussion.forgetting: the rivals forget the pretraining tasks, a removed prefix restores
the pretrained model bit for bit; its measurement (experiments.restoration) and its verdict."""

from __future__ import annotations

import copy

import pytest
import torch

from theorems.claims import claim
from verify.checks.petrov_forgetting import CLAIM, forgetting_verdict
from verify.experiments.experiments import restoration
from verify.experiments.gpt import GPT, GPTConfig, add_prefix
from verify.experiments.schedule import RunId
from verify.registry import CONTROLS, TRAININGS, Context, run_claim

TASKS = {"descending": ["ascending"], "skills": ["ascending", "descending", "add1", "add2"], "translation": ["A"]}
RIVAL_ROWS = {"descending": ("finetuned",), "skills": ("lora_double_hist",), "translation": ("finetuned", "lora")}


def _record(experiment: str, seed: int, before=0.8, after=0.1, resampled=None, restored=True, nudge_diff=1e-7) -> dict:
    tasks = TASKS[experiment]
    accuracy = {"pretrained": {t: before for t in tasks}, **{row: {t: after for t in tasks} for row in RIVAL_ROWS[experiment]}}
    measured = {"prefix_removed": {"weights_identical": restored, "max_abs_logit_diff": 0.0 if restored else 1e-3},
                "one_ulp_control": {"weights_identical": False, "max_abs_logit_diff": nudge_diff, "weight": "ln_f.weight"},
                "prefix_attached_max_abs_logit_diff": 0.4, "inputs": 512}
    forgetting = {"pretraining_tasks": tasks, "restoration": measured}
    if experiment != "translation":
        forgetting["resampled_pretrained"] = {t: before if resampled is None else resampled for t in tasks}
    return {"seed": seed, "scale": "cpu", "path": f"{experiment}{seed}", "reused": True,
            "metrics": {"accuracy": accuracy, "forgetting": forgetting}}


def _records(**overrides) -> dict[str, list[dict]]:
    """Honest records, with ``overrides`` = {experiment: kwargs} applied to seed 1 of that experiment."""
    return {e: [_record(e, s, **(overrides.get(e, {}) if s == 1 else {})) for s in range(3)] for e in TASKS}


def test_the_claim_reads_three_experiments_and_declares_two_controls():
    assert {t.experiment for t in TRAININGS[CLAIM].members} == set(TASKS)
    assert sorted({r.experiment for r in TRAININGS[CLAIM].runs(0)}) == sorted(TASKS)
    assert len(TRAININGS[CLAIM].runs(0)) == 9
    assert len(CONTROLS[CLAIM]) == 2


def test_it_holds_when_every_rival_forgets_and_every_prefix_restores():
    finding = forgetting_verdict(_records())
    assert finding.evidence.holds and all(c.refuted for c in finding.controls)
    assert "9/9 runs" in finding.evidence.summary


@pytest.mark.parametrize("wrong", [
    {"skills": {"after": 0.75}},          # LoRA kept the mixture tasks on one seed (5 < 10 points)
    {"translation": {"after": 0.71}},     # full fine-tuning and LoRA lost only 9 points of A
    {"descending": {"restored": False}},  # a prefix run whose base model moved
])
def test_it_fails_when_one_rival_keeps_its_tasks_or_one_prefix_does_not_restore(wrong):
    assert not forgetting_verdict(_records(**wrong)).evidence.holds


@pytest.mark.parametrize(("control", "wrong"), [
    ("resampled_test_set_not_forgetting", {"skills": {"resampled": 0.6}}),  # 20 points of resampling noise
    ("one_ulp_change_not_restored", {"translation": {"nudge_diff": 0.0}}),  # logits blind to a 1-ulp change
])
def test_each_control_can_flip_while_the_pass_condition_holds(control, wrong):
    prepared = lambda by_exp: {RunId(e, "cpu", r["seed"]): r for e, rs in by_exp.items() for r in rs}  # noqa: E731
    good = run_claim(claim(CLAIM), Context(seed=0, prepared_runs=prepared(_records())))
    flipped = run_claim(claim(CLAIM), Context(seed=0, prepared_runs=prepared(_records(**wrong))))
    assert good.status == "pass"
    assert flipped.evidence["holds"] and flipped.status == "fail"
    assert not flipped.control[control]["refuted"]
    assert all(v["refuted"] for k, v in flipped.control.items() if k != control)


def _tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=10, block_size=20, n_layer=1, n_head=2, n_embd=16, dropout=0.0)).eval()


def test_removing_a_trained_prefix_restores_the_model_and_a_one_ulp_change_is_seen():
    pretrained = _tiny()
    prefixed = copy.deepcopy(pretrained)
    add_prefix(prefixed, 1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        prefixed.prefix.mul_(3.0)  # any trained prefix: only the prefix moves
    x = torch.randint(0, 8, (64, 19))
    measured = restoration(pretrained, prefixed, x)
    assert measured["prefix_removed"] == {"weights_identical": True, "max_abs_logit_diff": 0.0}
    assert measured["prefix_attached_max_abs_logit_diff"] > 1e-3
    assert not measured["one_ulp_control"]["weights_identical"]
    assert measured["one_ulp_control"]["max_abs_logit_diff"] > 0.0


def test_a_base_weight_moved_during_prefix_training_is_not_restored():
    """What the criterion is for: an optimiser that touched a 'frozen' weight (weight decay on a
    parameter wrongly left in the optimizer, say) leaves a difference behind."""
    pretrained = _tiny()
    prefixed = copy.deepcopy(pretrained)
    add_prefix(prefixed, 1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        prefixed.blocks[0].attn.c_attn.weight.mul_(1 - 1e-4)
    measured = restoration(pretrained, prefixed, torch.randint(0, 8, (64, 19)))
    assert not measured["prefix_removed"]["weights_identical"]
    assert measured["prefix_removed"]["max_abs_logit_diff"] > 0.0
