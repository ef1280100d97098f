"""The mutation score of the checker (verify/mutants/): every mutant resolves against today's code,
the fast subset is refuted by claims that pass on the unmutated code, the seeded choices are
deterministic, and the rare-combination mutants are rare enough that random sampling misses them."""

from __future__ import annotations

import json

import numpy as np
import pytest

import verify.checks  # noqa: F401  (registers every check)
from tests.cli_helpers import assert_usage_error, cli
from theorems.claims import CLAIMS
from verify import mutants as mutants_package
from verify.mutants import EQUIVALENT, catalogue, run_mutants, select
from verify.mutants.core import MutantError, clear_caches, edit, mutant, patched, resolve, wrap
from verify.registry import CHECKS

CATALOGUE = catalogue()
IMPLEMENTED = {c.id for c in CLAIMS if c.id in CHECKS}


def test_at_least_sixty_mutants_with_unique_names():
    assert len(CATALOGUE) >= 60
    assert len({m.name for m in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("m", CATALOGUE, ids=lambda m: m.name)
def test_every_target_exists_and_every_claim_is_implemented(m):
    m.resolve()  # the module, the attribute and (for source edits) the exact snippet, once
    m.make(m.resolve(), m.rng(0))  # the replacement builds
    assert m.claims and set(m.claims) <= IMPLEMENTED


def test_the_issue_s_kinds_of_mutant_are_all_present():
    kinds = {m.kind for m in CATALOGUE}
    assert {"sign flip", "off-by-one", "off-by-one position", "wrong temperature", "swapped head",
            "perturbed bias", "rare combination", "wrong constant", "length-dependent attention scale",
            "dropped factor", "perturbed record"} <= kinds
    names = {m.name for m in CATALOGUE}
    assert {"conditional.bias-twice-the-margin", "forward.prefix.one-minus-alpha-dropped"} <= names


def test_a_renamed_target_or_a_changed_snippet_is_caught_not_skipped():
    gone = mutant("x", "off-by-one", "constructions.forward:no_such_function", "d", "petrov.thm2.conditional",
                  edit("a", "b"))
    with pytest.raises(MutantError, match="not found"):
        gone.resolve()
    changed = mutant("y", "off-by-one", "constructions.forward:attention_mask", "d", "petrov.thm2.conditional",
                     edit("np.tril(np.ones((n, n), dtype=bool), k=7)", "b"))
    with pytest.raises(MutantError, match="0 time"):
        changed.resolve()


def test_a_patch_reaches_names_imported_by_name_and_is_undone():
    import constructions.construction as construction_module
    import constructions.forward as forward_module

    original = forward_module.embed
    assert construction_module.embed is original  # `from constructions.forward import embed`
    with patched("constructions.forward:embed", original, "mutated"):
        assert forward_module.embed == "mutated" and construction_module.embed == "mutated"
    assert forward_module.embed is original and construction_module.embed is original


def test_a_source_edit_changes_exactly_the_snippet():
    make, _ = edit("np.tril(np.ones((n, n), dtype=bool))", "np.tril(np.ones((n, n), dtype=bool), k=1)")
    honest = resolve("constructions.forward:attention_mask")
    leaky = make(honest, np.random.default_rng(0))
    from constructions.spec import TransformerSpec

    spec = TransformerSpec.build(np.eye(2), np.zeros((4, 2)), [], np.eye(2))
    assert not honest(spec, 3)[0, 1] and leaky(spec, 3)[0, 1]  # query 0 now sees key 1
    assert np.array_equal(honest(spec, 3)[:, 0], leaky(spec, 3)[:, 0])


def test_seeded_choices_are_deterministic():
    rare = next(m for m in CATALOGUE if m.name == "conditional.rare-combination")
    assert np.array_equal(rare.rng(3).random(4), rare.rng(3).random(4))
    assert not np.array_equal(rare.rng(3).random(4), rare.rng(4).random(4))
    other = next(m for m in CATALOGUE if m.name == "unconditional.rare-combination")
    assert not np.array_equal(rare.rng(3).random(4), other.rng(3).random(4))  # each mutant its own stream


@pytest.mark.parametrize("name", ["conditional.rare-combination", "unconditional.rare-combination"])
def test_a_rare_combination_bug_survives_ten_thousand_random_instances(name):
    """The mutant is wrong on some inputs (its exhaustive witness) yet right on 10,000 random ones,
    so only a check over every input (the certificate) can catch it."""
    from constructions.petrov.conditional import Conditional
    from constructions.petrov.unconditional import Unconditional
    from constructions.vocab import Vocabulary
    from verify.certificates.cover import certify

    m = next(x for x in CATALOGUE if x.name == name)
    build = Conditional if name.startswith("conditional") else Unconditional
    rng = np.random.default_rng(2024)
    with m.applied(seed=0):
        c = build(Vocabulary.printable_ascii())
        tasks = c.random_tasks(rng, 10_000)
        user = rng.integers(0, c.vocab.size, size=(10_000, c.n_user_tokens))
        assert c.responds_correctly(tasks, user).all()
        found = certify(c, keep_failures=1)
        assert not found.holds  # the certificate covers every input: it sees the combination
        task, user_input = witness(c)
        assert not c.responds_correctly(task, user_input)[0]  # and the combination is really wrong
    assert certify(build(Vocabulary.printable_ascii())).holds  # unmutated: certified


def witness(c) -> tuple[np.ndarray, np.ndarray]:
    """The input on which the rare-combination mutant fires (the combination it recorded)."""
    combo, top = c.rare_combination, c.vocab.size - 1
    if "user" in combo:  # conditional: the user types a, the map sends a and c to the last symbol
        task = np.zeros((1, c.vocab.size), dtype=np.int64)
        task[0, [combo["user"], combo["also_top"]]] = top
        return task, np.array([[combo["user"]]])
    task = np.zeros((1, c.length), dtype=np.int64)  # Y_{i+1} is task[0, i]; position p holds token Y_p
    task[0, [combo["position"], combo["other_position"]]] = top
    task[0, combo["position"] - 1] = combo["token"]
    return task, np.zeros((1, 0), dtype=np.int64)


@pytest.fixture(scope="module")
def fast_report():
    return run_mutants(select("fast"), seed=0, subset="fast")


def test_the_unmutated_code_passes_every_claim_the_fast_mutants_target(fast_report):
    assert fast_report.baseline and all(status == "pass" for status in fast_report.baseline.values())


def test_every_fast_mutant_is_refuted(fast_report):
    survivors = {r.mutant.name: r.why for r in fast_report.survivors}
    assert survivors == {}
    assert fast_report.refuted == len(select("fast")) >= 25


def test_the_report_names_what_caught_each_mutant(fast_report):
    for r in fast_report.results:
        assert all(status in ("fail", "error") for status in r.claims.values())
        assert r.why.split(":")[0] in r.mutant.claims


def test_no_mutant_outlives_its_block():
    """After the fast run, the code is honest again: the claims still pass."""
    from verify.mutants.run import contexts, run_claim_id

    clear_caches()
    context = contexts(["petrov.thm2.conditional"], 0)["petrov.thm2.conditional"]
    assert run_claim_id("petrov.thm2.conditional", context)[0] == "pass"


def test_the_cli_prints_the_score_and_every_survivor(monkeypatch, capsys, tmp_path):
    chosen = [m for m in CATALOGUE if m.name == "forward.softmax.extra-sink"]
    harmless = mutant("test.identity-wrap", "no-op", "constructions.forward:logits", "a wrapper that changes nothing",
                      "petrov.thm2.conditional", wrap(lambda original, rng: lambda *a, **k: original(*a, **k)))
    monkeypatch.setattr(mutants_package, "select", lambda subset: [*chosen, harmless])
    monkeypatch.setenv("COLUMNS", "300")
    report = tmp_path / "mutants.json"
    code, out, _ = cli(capsys, "mutants", "--subset", "fast", "--json", report)
    assert code == 1  # a survivor
    assert "mutation score: 1/2 refuted" in out
    assert "survivor: test.identity-wrap (constructions.forward:logits)" in out
    data = json.loads(report.read_text())
    assert data["score"] == {"refuted": 1, "total": 2}
    assert [m["status"] for m in data["mutants"]] == ["refuted", "survived"]


def test_bad_subset_is_one_line_and_exit_2(capsys):
    code, _, err = cli(capsys, "mutants", "--subset", "some")
    assert_usage_error(code, err)


def test_equivalent_mutants_are_named_in_the_catalogue():
    assert set(EQUIVALENT) <= {m.name for m in CATALOGUE}


def _apply(name: str):
    return next(m for m in CATALOGUE if m.name == name).applied(seed=0)


def test_swapping_the_long_response_heads_changes_no_logit():
    from constructions.forward import embed, forward, logits
    from constructions.petrov.long_response import LongResponse
    from constructions.vocab import Vocabulary

    def all_logits(c, tasks, user):
        tokens = np.concatenate([c.prompt_tokens(user), c.expected(tasks, user)[:, :-1]], axis=1)
        x = embed(c.spec, tokens, c.virtual_tokens(tasks), c.virtual_positions)
        return logits(c.spec, forward(c.spec, x))

    rng = np.random.default_rng(5)
    honest = LongResponse(Vocabulary.printable_ascii(), response_length=4)
    tasks = honest.random_tasks(rng, 512)
    user = rng.integers(0, honest.vocab.size, size=(512, 1))
    with _apply("parts.heads.swapped"):
        swapped = LongResponse(Vocabulary.printable_ascii(), response_length=4)
    assert not np.array_equal(swapped.spec.blocks[0].attention.W_O, honest.spec.blocks[0].attention.W_O)
    assert np.max(np.abs(all_logits(swapped, tasks, user) - all_logits(honest, tasks, user))) <= 1e-12


def test_shifting_every_rope_position_changes_no_output():
    from constructions.layers import spec_from_layers
    from constructions.prefix import prefix_tuned_forward, soft_prompted_forward
    from theorems.strategies import random_layer_weights

    rng = np.random.default_rng(11)
    spec = spec_from_layers([random_layer_weights(rng, 8, 2, 4, True, "rmsnorm", 16) for _ in range(2)],
                            rotary_base=10_000.0)
    x, s = rng.normal(size=(3, 5, 8)), rng.normal(size=(2, 8))
    honest = (prefix_tuned_forward(spec, x, [s, s]), soft_prompted_forward(spec, x, s))
    import constructions.forward as forward_module

    honest_angles = forward_module.rotary_angles(10_000.0, 4, np.arange(3))
    with _apply("forward.rope.positions-shifted"):
        shifted = (prefix_tuned_forward(spec, x, [s, s]), soft_prompted_forward(spec, x, s))
        assert not np.allclose(forward_module.rotary_angles(10_000.0, 4, np.arange(3))[0], honest_angles[0])
    for a, b in zip(honest, shifted, strict=True):
        assert np.max(np.abs(a - b)) <= 1e-12
    assert np.max(np.abs(honest[0])) > 0.1  # a real output, not zeros


def test_a_perturbed_record_is_refused_by_its_check_and_the_file_is_untouched():
    """records.skills.lora-fails hands the LoRA check one seed at 10% (in memory only)."""
    from verify.experiments import records
    from verify.mutants.run import contexts, run_one

    files = sorted(records.RESULTS_DIR.glob("skills/*.json"))
    before = [p.read_bytes() for p in files]
    m = next(x for x in CATALOGUE if x.name == "records.skills.lora-fails")
    context = contexts(m.claims, 0)
    from verify.mutants.run import run_claim_id

    baseline = {c: run_claim_id(c, context[c])[0] for c in m.claims}
    assert baseline == {"petrov.sec6.lora-learns-double-histogram": "pass"}
    result = run_one(m, 0, context, baseline)
    assert result.status == "refuted", result.why
    assert [p.read_bytes() for p in files] == before


def test_the_same_seed_gives_the_same_report():
    chosen = [m for m in CATALOGUE if m.name in ("conditional.rare-combination", "conditional.bias-twice-the-margin",
                                                 "forward.softmax.extra-sink")]

    def without_timings(report) -> dict:
        data = report.to_json()
        for m in data["mutants"]:
            m.pop("seconds")
        return data

    assert without_timings(run_mutants(chosen, seed=4)) == without_timings(run_mutants(chosen, seed=4))


FORMER_SURVIVORS = ("forward.layernorm.uncentred", "forward.rope.frequency-off-by-one", "spec.attention-scale-dropped",
                    "torch.key.no-bias", "forward.mask.sees-next-token", "torch.mask.sees-next-token")


def test_the_section4_parity_oracle_and_mask_test_refute_former_survivors():
    """Survivors of the 60/81 run, now caught: norms and torch scale/bias by the Section 4 torch
    parity, the RoPE frequency and the stored scale by the oracle, the masks by the direct mask
    test of the Section 3 checks (notes/mutants.md)."""
    chosen = [m for m in CATALOGUE if m.name in FORMER_SURVIVORS]
    assert len(chosen) == len(FORMER_SURVIVORS)
    report = run_mutants(chosen, seed=0, subset="chosen")
    assert all(status == "pass" for status in report.baseline.values())
    assert {r.mutant.name: r.status for r in report.results} == {name: "refuted" for name in FORMER_SURVIVORS}
