"""The convergence rule every adapter stage trains under (verify/experiments/train.py), and the
'cannot learn' verdicts' requirement that the prefix plateaued at a budget no smaller than its rival's."""

from __future__ import annotations

import pytest
import torch

from tests.synthetic_training import learning
from verify.checks import convergence
from verify.experiments.gpt import GPT, GPTConfig, add_prefix, generate
from verify.experiments.tasks import LENGTH, monitor_set, solve
from verify.experiments.train import Convergence, StageConfig, default_rule, monitor_scores, train_stage

RULE = Convergence(every=2, patience=6, min_rel_improvement=0.01)  # w = 3 evaluations


@pytest.mark.parametrize(("heldout", "plateaued"), [
    ([1.0, 0.9, 0.8], False),                    # fewer than w + 1 evaluations: never
    ([1.0, 0.9, 0.8, 0.7], False),               # the last 3 improve on the best before them
    ([1.0, 1.0, 1.0, 1.0], True),                # flat
    ([1.0, 0.5, 0.6, 0.7, 0.8], True),           # got worse after the best
    ([1.0, 0.5, 0.5, 0.5, 0.4951], True),        # improved by less than 1% of 0.5 (0.99 * 0.5 = 0.495)
    ([1.0, 0.5, 0.5, 0.5, 0.4949], False),       # improved by more than 1%
])
def test_the_rule_stops_only_when_the_last_window_does_not_improve_by_d(heldout, plateaued):
    assert RULE.plateaued(heldout) is plateaued


def test_the_default_rule_is_a_quarter_of_the_cap_at_one_percent():
    assert default_rule(4000) == {"every": 100, "patience": 1000, "min_rel_improvement": 0.01}
    assert default_rule(8000) == {"every": 200, "patience": 2000, "min_rel_improvement": 0.01}
    with pytest.raises(ValueError):
        Convergence(every=3, patience=4, min_rel_improvement=0.01)  # patience not a multiple of every


def _prefix_model() -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=10, block_size=20, n_layer=1, n_head=1, n_embd=16, dropout=0.1))
    add_prefix(model, 1, torch.Generator().manual_seed(0))
    return model


@pytest.mark.parametrize("interrupt_at", [6, 30])  # mid-evaluation-interval, and after convergence
def test_an_interrupted_stage_resumes_to_the_same_parameters_curve_and_stop(tmp_path, interrupt_at):
    stage = StageConfig("descending", iters=80, lr=1e-2, weight_decay=0.01, dropout_on=False, checkpoint_every=20,
                        converge={"every": 4, "patience": 12, "min_rel_improvement": 0.01})
    monitor = monitor_set("descending", 0, 1, 64)
    whole = _prefix_model()
    uninterrupted = train_stage(whole, stage, 3, 1, None, "k", quiet=True, monitor=monitor)
    checkpoint = tmp_path / "stage.pt"
    train_stage(_prefix_model(), stage, 3, 1, checkpoint, "k", stop_at=interrupt_at, quiet=True, monitor=monitor)
    resumed_model = _prefix_model()
    resumed = train_stage(resumed_model, stage, 3, 1, checkpoint, "k", quiet=True, monitor=monitor)
    assert torch.equal(whole.prefix, resumed_model.prefix)
    assert resumed.curve == uninterrupted.curve and resumed.converged == uninterrupted.converged
    assert uninterrupted.curve["step"][0] == 0 and uninterrupted.curve["train_loss"][0] is None


def test_a_stage_still_improving_runs_to_its_cap_unconverged():
    """A learnable task at a high rate with no tolerance (d = 0) keeps improving for 24 steps."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=10, block_size=19, n_layer=1, n_head=1, n_embd=32, dropout=0.0))
    stage = StageConfig("ascending", iters=24, lr=3e-3, weight_decay=0.1, dropout_on=False,
                        converge={"every": 4, "patience": 8, "min_rel_improvement": 0.0})
    result = train_stage(model, stage, 0, 0, None, "k", quiet=True, monitor=monitor_set("ascending", 0, 0, 128))
    assert result.steps == 24 and result.converged is False
    assert result.curve["heldout_loss"][-1] < result.curve["heldout_loss"][0]


def test_a_rule_without_a_monitor_set_is_refused():
    stage = StageConfig("ascending", iters=4, lr=1e-3, weight_decay=0.1, dropout_on=False, converge=default_rule(40))
    with pytest.raises(ValueError, match="monitor"):
        train_stage(_prefix_model(), stage, 0, 1, None, "k", quiet=True)


class SolutionOracle(torch.nn.Module):
    """A causal stand-in for a trained model on ``task``: the logits at content position p >= 9 put
    all mass on solution token p - 9 of the 10 inputs, except on inputs whose first digit is even,
    where position 9 + WRONG_AT predicts the wrong token. Its greedy exact match is the fraction of
    odd-first-digit inputs, known without a model that took minutes to train."""

    WRONG_AT = 3

    def __init__(self, task: str) -> None:
        super().__init__()
        self.task = task
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # so that next(parameters()) gives a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.shape  # (B, T) with T >= 10
        solution = torch.from_numpy(solve(self.task, x[:, :LENGTH].numpy()))  # (B, 10)
        logits = torch.zeros(B, T, 10)
        for p in range(LENGTH - 1, min(T, 2 * LENGTH - 1)):
            k = p - (LENGTH - 1)
            token = solution[:, k].clone()
            if k == self.WRONG_AT:
                even = x[:, 0] % 2 == 0
                token[even] = (token[even] + 1) % 10
            logits[torch.arange(B), p, token] = 1.0
        return logits


def test_teacher_forced_exact_match_equals_greedy_exact_match():
    """The curve's X_k is the teacher-forced 'every solution token is the argmax'; greedy decoding
    reproduces the solution iff that holds. On the oracle both must give the odd-first-digit share
    (an off-by-one in the targets, or a mask over the wrong positions, would not)."""
    oracle = SolutionOracle("ascending")
    x, y = monitor_set("ascending", 5, 0, 256)
    _, teacher_forced = monitor_scores(oracle, x, y)
    inputs = x[:, :LENGTH]  # (N, 10)
    greedy = generate(oracle, inputs, LENGTH).numpy()  # (N, 10)
    greedy_exact = float((greedy == solve("ascending", inputs.numpy())).all(axis=1).mean())
    expected = float((inputs[:, 0] % 2 == 1).float().mean())
    assert 0.05 < expected < 0.95
    assert teacher_forced == pytest.approx(greedy_exact, abs=1e-12) and greedy_exact == pytest.approx(expected)


# --- the verdicts' use of it ----------------------------------------------------------------------

def _runs(not_converged=(), caps=None) -> list[dict]:
    return [{"seed": s, "metrics": learning({"prefix": 3000, "lora": 4000}, not_converged, caps)} for s in range(3)]


def test_plateau_and_fair_cap_are_read_per_seed():
    assert convergence.plateaued(_runs(), "prefix")
    assert not convergence.plateaued(_runs(not_converged=("prefix",)), "prefix")
    assert convergence.cap_at_least(_runs(), "prefix", "lora")
    assert not convergence.cap_at_least(_runs(caps={"prefix": 2000, "lora": 4000}), "prefix", "lora")
    text = convergence.describe(_runs(not_converged=("lora",)), {"prefix": "prefix", "LoRA": "lora"})
    assert text == "prefix converged 3/3 (steps 3000/3000/3000, cap 4000); LoRA hit its cap 3/3 (steps 4000/4000/4000, cap 4000)"


def test_cannot_learn_verdicts_need_a_plateaued_prefix_at_a_fair_cap():
    """descending, double_hist and translation: the same accuracies, the prefix at its cap while
    still improving, or with a smaller cap than its rival, is no longer 'cannot learn'."""
    from tests.test_experiments import descending_record
    from tests.test_experiments_skills import runs as skills_runs
    from tests.test_experiments_translation import _synthetic as translation_record
    from verify.checks.petrov_appC import translation_verdict
    from verify.checks.petrov_sec5 import descending_verdict
    from verify.checks.petrov_sec5_skills import double_hist_verdict

    assert descending_verdict([descending_record(s) for s in range(3)]).evidence.holds
    assert not descending_verdict([descending_record(s, not_converged=("prefix",)) for s in range(3)]).evidence.holds
    assert not descending_verdict([descending_record(s, caps={"prefix": 1000, "finetune": 2000})
                                   for s in range(3)]).evidence.holds
    assert double_hist_verdict(skills_runs()).evidence.holds
    assert not double_hist_verdict(skills_runs(not_converged=("prefix_double_hist",))).evidence.holds
    assert not double_hist_verdict(skills_runs(caps={"prefix_double_hist": 1500, "lora_double_hist": 4000})).evidence.holds
    assert translation_verdict([translation_record(s) for s in range(3)]).evidence.holds
    assert not translation_verdict([translation_record(s, not_converged=("prefix",)) for s in range(3)]).evidence.holds
    assert not translation_verdict([translation_record(s, caps={"prefix": 500, "lora": 1000, "finetune": 400})
                                    for s in range(3)]).evidence.holds


def test_the_summary_says_whether_each_adapter_converged():
    from tests.test_experiments_skills import runs as skills_runs
    from verify.checks.petrov_sec5_skills import combines_verdict, lora_verdict

    text = combines_verdict(skills_runs(not_converged=("prefix_ascending_add1",))).evidence.summary
    assert "prefix hit its cap 3/3" in text
    assert "LoRA converged 3/3" in lora_verdict(skills_runs()).evidence.summary
