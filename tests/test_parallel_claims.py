"""verify all --processes: the same results, in report order, as the serial runner."""

import verify.checks  # noqa: F401
from theorems.claims import CLAIMS
from verify.bench.compare import compare_reports
from verify.registry import Context, claim_groups, run_claim, run_claims_parallel
from verify.report import report_json


def test_groups_keep_shared_claims_together_and_cover_every_claim():
    groups = claim_groups(list(CLAIMS))
    flat = sorted(i for g in groups for i in g)
    assert flat == list(range(len(CLAIMS)))
    ids = [[CLAIMS[i].id for i in g] for g in groups]
    assert ["petrov.sec4.real-model", "petrov.sec6.cross-layer-attention-shift"] in ids
    assert ids[0] == ["oymak.c4.real-data-attends-relevant"]  # the longest first


def test_parallel_results_equal_serial_ones_in_order():
    chosen = [c for c in CLAIMS if c.id in ("petrov.sec4.output-bias", "petrov.thm2.conditional",
                                             "petrov.sec3.capacity")]
    context = Context(seed=3, quick=True)
    serial = [run_claim(c, context) for c in chosen]
    parallel = run_claims_parallel(chosen, context, 2)
    assert [r.id for r in parallel] == [c.id for c in chosen]
    assert compare_reports(report_json(serial, 3), report_json(parallel, 3)) == []


def test_the_default_is_parallel_only_when_the_work_pays_for_starting_processes():
    from verify.registry import PARALLEL_WORTH_SECONDS, default_processes, usable_cores

    short = [c for c in CLAIMS if c.id in ("petrov.sec4.output-bias", "petrov.thm2.conditional")]
    assert default_processes(short) == 1
    assert default_processes(list(CLAIMS)[:1]) == 1
    assert default_processes(list(CLAIMS)) == min(usable_cores(), 4)
    long_ones = [c for c in CLAIMS if c.id.startswith("oymak.c")]
    assert sum(1 for _ in long_ones) == 4 and PARALLEL_WORTH_SECONDS <= 100
    assert default_processes(long_ones) == min(usable_cores(), 4)


def test_three_processes_this_one_and_two_workers_give_the_serial_results():
    chosen = [c for c in CLAIMS if c.id in ("petrov.sec4.output-bias", "petrov.thm2.conditional",
                                             "petrov.sec3.capacity", "petrov.sec4.content-scaling")]
    context = Context(seed=1, quick=True)
    serial = [run_claim(c, context) for c in chosen]
    parallel = run_claims_parallel(chosen, context, 3)
    assert [r.id for r in parallel] == [c.id for c in chosen]
    assert compare_reports(report_json(serial, 1), report_json(parallel, 1)) == []
