"""Training runs execute on the local process pool (the default) or as Ray tasks on a real Ray
cluster, with the same records apart from timings (verify/experiments/executors.py)."""

from __future__ import annotations

import json
import sys
import types

import pytest

ray = pytest.importorskip("ray")

import verify.experiments.experiments as experiments_module  # noqa: E402
from verify.cli import build_parser  # noqa: E402
from verify.experiments import records  # noqa: E402
from verify.experiments import schedule  # noqa: E402
from verify.experiments.executors import (RAY_MISSING, ExecutorUnavailable, LocalExecutor, RayExecutor,  # noqa: E402
                                          RunTask, make_executor)
from verify.experiments.schedule import RunFailed, RunId, prepare_runs  # noqa: E402
from tests.cli_helpers import assert_usage_error, cli  # noqa: E402
from tests.test_schedule import FakeTrainer, _without_timings  # noqa: E402

RUNS = [RunId("descending", "ci", 0), RunId("descending", "ci", 1)]


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster of 2 CPUs and no GPU, for the whole module."""
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_ray_tasks_give_the_records_of_the_local_pool(ray_cluster, tmp_path):
    lines: list[str] = []
    local = prepare_runs(RUNS, jobs=2, results_dir=tmp_path / "local", checkpoint_dir=tmp_path / "ck-local")
    on_ray = prepare_runs(RUNS, executor=RayExecutor(), results_dir=tmp_path / "ray",
                          checkpoint_dir=tmp_path / "ck-ray", log=lines.append)
    assert any("Ray task" in line for line in lines)
    assert all(not on_ray[r]["reused"] for r in RUNS)
    assert [_without_timings(on_ray[r]) for r in RUNS] == [_without_timings(local[r]) for r in RUNS]
    assert _without_timings(on_ray[RUNS[0]]) != _without_timings(on_ray[RUNS[1]])  # control: seeds differ
    for run in RUNS:  # on disk: the sealed bytes write_record writes, current for today's code
        path = records.record_path(run.experiment, run.scale, run.seed, tmp_path / "ray")
        body = {k: v for k, v in on_ray[run].items() if k not in ("path", "reused")}
        assert path.read_text() == json.dumps(body, indent=1, sort_keys=True) + "\n"
        config = experiments_module.config_for(run.experiment, run.scale)
        assert records.load_current(run.experiment, run.scale, run.seed, config, records.code_hash(),
                                    tmp_path / "ray") == body


def test_a_run_that_raises_on_ray_is_the_runfailed_of_the_local_pool(ray_cluster, tmp_path):
    run = [RunId("descending", "ci", 0)]  # an unknown torch device: the run raises as it builds its model
    local = prepare_runs(run, device="bogus", results_dir=tmp_path / "local", checkpoint_dir=None)
    on_ray = prepare_runs(run, device="bogus", executor=RayExecutor(), results_dir=tmp_path / "ray",
                          checkpoint_dir=None)
    assert isinstance(local[run[0]], RunFailed) and isinstance(on_ray[run[0]], RunFailed)
    assert str(on_ray[run[0]]) == str(local[run[0]])
    assert str(local[run[0]]).startswith("training descending ci seed 0 failed: RuntimeError: ")


def test_each_ray_task_declares_one_cpu_and_a_gpu_only_for_cuda(tmp_path):
    executor = RayExecutor()
    task = RunTask(RUNS[0], False, "cpu", tmp_path, None)
    assert executor.resources(task) == {"num_cpus": 1, "num_gpus": 0}
    assert executor.resources(RunTask(RUNS[0], False, "cuda", tmp_path, None)) == {"num_cpus": 1, "num_gpus": 1}


def test_the_local_executor_is_the_default(tmp_path, monkeypatch):
    args = build_parser().parse_args(["all"])
    assert (args.executor, args.address, args.jobs) == ("local", None, 1)
    assert isinstance(make_executor(), LocalExecutor)
    fake = FakeTrainer()  # replaced in this process only: it is called iff the runs train here
    monkeypatch.setattr(experiments_module, "run_experiment", fake)
    prepare_runs(RUNS, results_dir=tmp_path, checkpoint_dir=None)
    assert sorted(fake.calls) == [("descending", "ci", (0,), False), ("descending", "ci", (1,), False)]


def test_the_cli_hands_prepare_runs_the_local_pool_with_its_jobs(tmp_path, monkeypatch, capsys):
    seen = []

    def capture(runs, *args, executor=None, **kwargs):
        seen.append(executor)
        return {run: RunFailed("not trained in this test") for run in runs}

    monkeypatch.setattr(schedule, "prepare_runs", capture)
    code, out, _ = cli(capsys, "experiments", "descending", "--scale", "ci", "--jobs", "2",
                       "--figures", tmp_path / "figures")
    assert code == 1 and "not trained in this test" in out
    assert isinstance(seen[0], LocalExecutor) and seen[0].jobs == 2


def _unconnectable_ray() -> types.ModuleType:
    """Stands in for ray where ray.init raises the ConnectionError a cluster that is not there gives."""
    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: False

    def init(address=None, **kwargs):
        raise ConnectionError("Could not find any running Ray instance.\nPlease specify the one to connect to.")

    fake.init = init
    return fake


@pytest.mark.parametrize("command", [["all"], ["run", "petrov.sec5"], ["experiments", "descending", "--scale", "ci"]])
@pytest.mark.parametrize("options, fake_ray, expected", [
    (["--executor", "ray"], None, RAY_MISSING),
    (["--address", "127.0.0.1:6379"], "real", "needs --executor ray"),
    (["--executor", "ray", "--address", "127.0.0.1:1"], "real", "cannot reach the Ray cluster at 127.0.0.1:1"),
    (["--executor", "ray"], "unconnectable", "cannot connect to the Ray cluster (local): Could not find any"),
    (["--executor", "ray", "--jobs", "2"], "real", "--jobs 2 applies to --executor local"),
])
def test_bad_executor_input_is_one_line_exit_2_and_writes_nothing(command, options, fake_ray, expected, tmp_path,
                                                                   monkeypatch, capsys):
    if fake_ray != "real":
        monkeypatch.setitem(sys.modules, "ray", None if fake_ray is None else _unconnectable_ray())
    output = ["--figures", tmp_path / "figures"] if command[0] == "experiments" else ["--json", tmp_path / "r.json"]
    code, _, err = cli(capsys, *command, *options, *output)
    assert_usage_error(code, err)
    assert expected in err
    assert list(tmp_path.iterdir()) == []


def test_cuda_on_a_ray_cluster_without_a_gpu_is_refused_before_any_work(ray_cluster, tmp_path, capsys):
    code, _, err = cli(capsys, "experiments", "descending", "--scale", "ci", "--device", "cuda", "--executor", "ray",
                       "--figures", tmp_path / "figures")
    assert_usage_error(code, err)
    assert "--device cuda: the Ray cluster has no GPU" in err
    with pytest.raises(ExecutorUnavailable, match="no GPU"):
        RayExecutor().check("cuda")
    RayExecutor().check("cpu")  # control: the same cluster is fine for cpu runs
