"""experiments/sweep.py: grid expansion, config merging, and real tiny sweeps of ddpg.py with
the local backend and with Ray (skipped when ray is not installed)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "experiments" / "sweep.py"
PLOT = ROOT / "experiments" / "plot.py"
TINY = ["--total-steps", "400", "--start-steps", "100", "--batch-size", "32", "--eval-every", "200",
        "--eval-episodes", "1", "--save-every", "400", "--hidden-sizes", "32", "32"]
GRID = ["--env-id", "Pendulum-v1", "--seeds", "1", "2", "--grid", "noise-type=gaussian,ou", "--workers", "2"]


def load_sweep_module():
    spec = importlib.util.spec_from_file_location("experiments_sweep", SWEEP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sweep = load_sweep_module()


# A hang guard, not a time limit on the behaviour: beside other work (pytest -n auto's own workers, its background
# learning runs and two busy processes: 6 CPU-bound processes on 2 cores) a Ray trial of 400 steps took 287 s,
# most of it Ray's worker and the trial's imports, and the 4-trial Ray sweep passed 300 s.
def run_sweep(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SWEEP), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def summaries(runs_dir: Path) -> dict[tuple[str, int], dict]:
    """(exp_name, seed) -> summary.json of every run folder."""
    out = {}
    for path in runs_dir.glob("*/summary.json"):
        summary = json.loads(path.read_text())
        out[(summary["exp_name"], summary["seed"])] = summary
    return out


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def make_sweep(**overrides):
    fields = {"name": "study", "env_ids": ["Pendulum-v1", "MountainCarContinuous-v0"], "seeds": [1, 2],
              "grid": {"noise-type": ["gaussian", "ou"], "target-noise": [0.0, 0.2]}, "fixed": {}}
    return sweep.Sweep(**{**fields, **overrides})


def test_expand_covers_every_env_point_and_seed_once():
    trials = sweep.expand(make_sweep())
    assert len(trials) == 2 * 4 * 2
    assert len({(t.env_id, t.exp_name, t.seed) for t in trials}) == len(trials)
    assert {t.exp_name for t in trials} == {
        "study_noise-type-gaussian_target-noise-0.0", "study_noise-type-gaussian_target-noise-0.2",
        "study_noise-type-ou_target-noise-0.0", "study_noise-type-ou_target-noise-0.2"}
    # seed-major: every grid point and env of seed 1 comes before any trial of seed 2
    assert [t.seed for t in trials] == [1] * 8 + [2] * 8
    point = dict(trials[-1].point)
    assert point == {"noise-type": "ou", "target-noise": 0.2}


def test_expand_without_grid_gives_one_trial_per_env_and_seed():
    trials = sweep.expand(make_sweep(grid={}, env_ids=["Pendulum-v1"], seeds=[3, 4, 5]))
    assert [(t.exp_name, t.seed) for t in trials] == [("study", 3), ("study", 4), ("study", 5)]


def test_exp_names_are_valid_deterministic_and_bounded():
    ddpg_exp_name = re.compile(r"[\w.+-]+")  # what ddpg.py accepts
    weird = sweep.exp_name("my sweep!", (("hidden-sizes", [64, 64]), ("env", "mod:Thing/v1"), ("ln", True)))
    assert weird == "my-sweep_hidden-sizes-64-64_env-mod-Thing-v1_ln-true"
    long = sweep.exp_name("s", tuple((f"option-{i}", "value" * 5) for i in range(10)))
    assert len(long) <= sweep.MAX_NAME and long == sweep.exp_name("s", tuple((f"option-{i}", "value" * 5)
                                                                               for i in range(10)))
    assert ddpg_exp_name.fullmatch(weird) and ddpg_exp_name.fullmatch(long)


def test_grid_points_that_collide_after_sanitizing_are_refused():
    with pytest.raises(sweep.SweepError, match="both give exp-name"):
        sweep.expand(make_sweep(grid={"x": ["a b", "a-b"]}))


def test_trial_args_render_booleans_lists_and_fixed_options():
    s = make_sweep(fixed={"hidden-sizes": [32, 32], "critic-layer-norm": True}, extra=["--gamma", "0.98"],
                   grid={"actor-layer-norm": [False]}, env_ids=["Pendulum-v1"], seeds=[7])
    (trial,) = sweep.expand(s)
    args = sweep.trial_args(s, trial, cuda=False)
    assert args == ["--env-id", "Pendulum-v1", "--seed", "7", "--exp-name", "study_actor-layer-norm-false",
                    "--torch-threads", "0", "--no-cuda", "--hidden-sizes", "32", "32", "--critic-layer-norm",
                    "--gamma", "0.98", "--no-actor-layer-norm"]
    command = sweep.ddpg_command(Path("ddpg.py"), args, Path("runs/x"), None)
    assert command[-2:] == ["--runs-dir", "runs/x"]
    assert sweep.ddpg_command(Path("ddpg.py"), args, Path("runs/x"), Path("runs/x/run"))[2:] == [
        "--resume", "runs/x/run"]


def test_variants_are_named_arms_crossed_with_the_grid(tmp_path):
    config = tmp_path / "arms.toml"
    config.write_text("""
[sweep]
name = "arms"
env_ids = ["Pendulum-v1"]
seeds = [1, 2]
[fixed]
total-steps = 400
[grid]
gamma = [0.9, 0.99]
[variants.ddpg]
[variants.td3]
num-q = 2
q-reduce = "min"
policy-delay = 2
[variants."3 critics"]
num_q = 3
q-reduce = "mean"
""")
    s = sweep.load_config(config)
    sweep.check_sweep(s)
    trials = sweep.expand(s)
    assert len(trials) == 2 * 3 * 2
    assert {t.exp_name for t in trials if t.seed == 1} == {
        "arms_ddpg_gamma-0.9", "arms_ddpg_gamma-0.99", "arms_td3_gamma-0.9", "arms_td3_gamma-0.99",
        "arms_3-critics_gamma-0.9", "arms_3-critics_gamma-0.99"}
    td3 = next(t for t in trials if t.exp_name == "arms_td3_gamma-0.99" and t.seed == 2)
    assert dict(td3.point) == {"num-q": 2, "q-reduce": "min", "policy-delay": 2, "gamma": 0.99}
    args = sweep.trial_args(s, td3, cuda=False)
    assert args[-8:] == ["--num-q", "2", "--q-reduce", "min", "--policy-delay", "2", "--gamma", "0.99"]
    ddpg = next(t for t in trials if t.exp_name == "arms_ddpg_gamma-0.9")
    assert dict(ddpg.point) == {"gamma": 0.9}
    # a variant may not set what the grid, the fixed options or the sweep itself set
    for clash, message in [({"gamma": 0.5}, "both in a variant and fixed or in the grid"),
                           ({"total-steps": 5}, "both in a variant and fixed or in the grid"),
                           ({"seed": 5}, "--seed is set by the sweep")]:
        with pytest.raises(sweep.SweepError, match=message):
            sweep.check_sweep(dataclasses.replace(s, variants={"x": clash}))


def test_shipped_configs_all_load_and_expand():
    for path in sorted(sweep.CONFIGS.glob("*.toml")):
        s = sweep.load_config(path)
        sweep.check_sweep(s)
        assert sweep.expand(s), path


def test_grid_option_parsing():
    assert sweep.parse_grid_option("noise_type=gaussian, ou") == ("noise-type", ["gaussian", "ou"])
    assert sweep.parse_grid_option("actor-layer-norm=true,False") == ("actor-layer-norm", [True, False])
    assert sweep.parse_grid_option("hidden-sizes=64 64,256") == ("hidden-sizes", [["64", "64"], "256"])
    for bad in ("noise-type", "=a,b", "noise-type="):
        with pytest.raises(sweep.SweepError):
            sweep.parse_grid_option(bad)


def parse(*argv: str):
    return sweep.build_parser().parse_args(list(argv))


def test_config_file_merges_with_the_command_line():
    s = sweep.sweep_from_args(parse("--config", "smoke", "--seeds", "5", "--grid", "hidden-sizes=16,8"),
                              ["--noise-type", "param", "--gamma", "0.9"])
    assert (s.name, s.env_ids, s.seeds, s.workers) == ("smoke", ["Pendulum-v1"], [5], 2)
    assert s.grid == {"hidden-sizes": ["16", "8"]}  # the command line replaced the file's noise-type grid
    assert "hidden-sizes" not in s.fixed and s.fixed["total-steps"] == 400
    assert s.extra == ["--noise-type", "param", "--gamma", "0.9"]


@pytest.mark.parametrize("argv, extra, message", [
    ([], [], "no environment"),
    (["--env-id", "Pendulum-v1"], ["--seed", "3"], "--seed is set by the sweep"),
    (["--env-id", "Pendulum-v1", "--grid", "runs-dir=a,b"], [], "--runs-dir is set by the sweep"),
    (["--env-id", "Pendulum-v1", "--grid", "gamma=0.9,0.99"], ["--gamma", "0.9"], "both after -- and in --grid"),
    (["--env-id", "Pendulum-v1", "--seeds", "1", "1"], [], "seeds repeat"),
    (["--config", "no-such-config"], [], "not found"),
])
def test_bad_sweeps_are_refused(argv, extra, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.sweep_from_args(parse(*argv), extra)


def test_bad_input_exits_2_with_an_error_line(tmp_path):
    result = run_sweep("--env-id", "Pendulum-v1", "--", "--exp-name", "x", cwd=tmp_path)
    assert result.returncode == 2
    assert "error: --exp-name is set by the sweep" in result.stderr


def test_help_documents_options_and_config_format(tmp_path):
    result = run_sweep("--help", cwd=tmp_path)
    assert result.returncode == 0
    for word in ("--grid", "--seeds", "--ray-address", "--workers", "--dry-run", "[fixed]", "[grid]", "resume"):
        assert word in result.stdout


def fake_run(runs_dir: Path, name: str, env_id: str, exp_name: str, seed: int, status: str | None,
             checkpoint: bool) -> Path:
    """A run folder as ddpg.py leaves it (with an empty checkpoint file: only its presence counts here)."""
    folder = runs_dir / name
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"env_id": env_id, "exp_name": exp_name, "seed": seed}))
    if status:
        (folder / "summary.json").write_text(json.dumps({"status": status, "final_eval_return_mean": -1.0}))
    if checkpoint:
        (folder / "checkpoints" / "latest.pt").write_bytes(b"")
    return folder


def test_plan_skips_finished_resumes_interrupted_and_reruns_the_rest(tmp_path):
    s = make_sweep(env_ids=["Pendulum-v1"], seeds=[1, 2, 3, 4], grid={})
    fake_run(tmp_path, "Pendulum-v1__study__1__100", "Pendulum-v1", "study", 1, "interrupted", True)
    fake_run(tmp_path, "Pendulum-v1__study__1__200", "Pendulum-v1", "study", 1, "finished", True)
    interrupted = fake_run(tmp_path, "Pendulum-v1__study__2__100", "Pendulum-v1", "study", 2, "interrupted", True)
    fake_run(tmp_path, "Pendulum-v1__study__3__100", "Pendulum-v1", "study", 3, "diverged", True)
    fake_run(tmp_path, "Other-v0__study__4__100", "Other-v0", "study", 4, "finished", True)  # other env
    jobs, done = sweep.plan(s, sweep.expand(s), tmp_path, cuda=False)
    assert [r.path.name for r in done] == ["Pendulum-v1__study__1__200"]
    assert [(j.trial.seed, j.resume) for j in jobs] == [(2, interrupted), (3, None), (4, None)]


# ---------------------------------------------------------------------------------------------
# Real sweeps of ddpg.py (tiny budget)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """One 2 x 2 sweep with the local backend, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("local")
    result = run_sweep("--name", "tiny", *GRID, "--", *TINY, cwd=cwd)
    return cwd, cwd / "runs" / "tiny", result


def test_local_sweep_runs_every_trial_into_its_own_folder(local_sweep):
    _, runs_dir, result = local_sweep
    assert result.returncode == 0, result.stdout + result.stderr
    found = summaries(runs_dir)
    assert set(found) == {("tiny_noise-type-gaussian", 1), ("tiny_noise-type-gaussian", 2),
                          ("tiny_noise-type-ou", 1), ("tiny_noise-type-ou", 2)}
    assert all(s["status"] == "finished" and s["steps"] == 400 for s in found.values())
    configs = [json.loads(p.read_text()) for p in runs_dir.glob("*/config.json")]
    assert {c["noise_type"] for c in configs} == {"gaussian", "ou"}
    assert all(c["torch_threads"] == 0 and c["cuda"] is False and c["hidden_sizes"] == [32, 32] for c in configs)
    assert len(list((runs_dir / "logs").glob("*.log"))) == 4
    assert result.stdout.count("finished  Pendulum-v1") == 4
    assert "4 finished, 0 failed" in result.stdout


def test_rerun_skips_finished_trials(local_sweep):
    cwd, runs_dir, _ = local_sweep
    folders = sorted(p.name for p in runs_dir.iterdir())
    dry = run_sweep("--name", "tiny", *GRID, "--dry-run", "--", *TINY, cwd=cwd)
    assert dry.returncode == 0 and dry.stdout.count("# skip, finished") == 4
    again = run_sweep("--name", "tiny", *GRID, "--", *TINY, cwd=cwd)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "all 4 trials finished before" in again.stdout
    assert sorted(p.name for p in runs_dir.iterdir()) == folders


def test_dry_run_prints_the_commands_with_their_threads(tmp_path):
    result = run_sweep("--name", "dry", *GRID, "--dry-run", "--", *TINY, cwd=tmp_path)
    assert result.returncode == 0
    lines = result.stdout.splitlines()  # by default ddpg.py's own: the threads follow the free cores
    assert len(lines) == 4 and all(ln.startswith(sys.executable) and "--torch-threads 0" in ln for ln in lines)
    result = run_sweep("--name", "dry", *GRID, "--threads", "1", "--dry-run", "--", *TINY, cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and all(ln.startswith("OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ") and "--torch-threads 1" in ln
                                   for ln in lines)
    assert not (tmp_path / "runs").exists()
    assert sweep.trial_env(0).get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS")
    assert sweep.trial_env(3)["OMP_NUM_THREADS"] == sweep.trial_env(3)["MKL_NUM_THREADS"] == "3"


def test_a_failing_trial_is_reported_and_the_others_finish(tmp_path):
    result = run_sweep("--name", "bad", "--env-id", "Pendulum-v1", "--seeds", "1", "--workers", "2",
                       "--grid", "noise-type=bogus,gaussian", "--", *TINY, cwd=tmp_path)
    assert result.returncode == 1
    assert "FAILED    Pendulum-v1 bad_noise-type-bogus seed 1: exit 2" in result.stdout
    assert "error: --noise-type must be one of gaussian, ou, param, got 'bogus'" in result.stdout  # its log's tail
    assert "1 finished, 1 failed" in result.stdout
    assert summaries(tmp_path / "runs" / "bad")[("bad_noise-type-gaussian", 1)]["status"] == "finished"


def test_interrupted_sweep_resumes_its_trials(tmp_path):
    """Ctrl-C stops the running trial at a checkpoint (exit 130); the same command resumes it."""
    args = ["--name", "stop", "--env-id", "Pendulum-v1", "--seeds", "1", "--", *TINY, "--total-steps", "1000",
            "--log-every", "100"]
    proc = subprocess.Popen([sys.executable, str(SWEEP), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "runs" / "stop" / "logs" / "Pendulum-v1__stop__1.log"
    deadline = time.time() + 60
    while not (log.is_file() and "step 200/" in log.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "1 stopped" in out
    (summary,) = summaries(tmp_path / "runs" / "stop").values()
    assert summary["status"] == "interrupted" and summary["steps"] < 1000
    again = run_sweep(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 to resume" in again.stdout
    (summary,) = summaries(tmp_path / "runs" / "stop").values()  # the same folder, finished
    assert summary["status"] == "finished" and summary["steps"] == 1000


def test_plot_of_the_sweep(local_sweep):
    cwd, runs_dir, _ = local_sweep
    result = subprocess.run([sys.executable, str(PLOT), str(runs_dir), "--out", str(cwd / "figs" / "tiny")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (cwd / "figs" / "tiny.png").stat().st_size > 0 and (cwd / "figs" / "tiny.svg").is_file()
    table = (cwd / "figs" / "tiny.md").read_text()
    # named by the sweep's arms (its grid points), not by option lists
    assert "| Pendulum-v1 | noise-type-gaussian | 2 |" in table and "| Pendulum-v1 | noise-type-ou | 2 |" in table


@pytest.fixture(scope="module")
def ray_address():
    """A Ray instance in this process (2 CPUs, no dashboard); the sweep connects to it."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_ray_sweep_brings_run_folders_back(ray_address, tmp_path):
    result = run_sweep("--name", "tiny", *GRID, "--ray-address", ray_address, "--", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "as Ray tasks" in result.stdout
    runs_dir = tmp_path / "runs" / "tiny"
    found = summaries(runs_dir)
    assert len(found) == 4 and all(s["status"] == "finished" for s in found.values())
    assert all((p / "checkpoints" / "final.pt").is_file() for p in runs_dir.glob("Pendulum-v1__*"))
    assert all("done: Pendulum-v1 400 steps" in p.read_text() for p in (runs_dir / "logs").glob("*.log"))
    again = run_sweep("--name", "tiny", *GRID, "--ray-address", ray_address, "--", *TINY, cwd=tmp_path)
    assert again.returncode == 0 and "all 4 trials finished before" in again.stdout
