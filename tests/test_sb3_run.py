"""experiments/sb3_run.py: Stable-Baselines3 beside ddpg.py at the same budget (issue 15).

Its runs must look like ddpg.py's to plot.py (the same summary.json fields, the same run-folder names),
be evaluated by ddpg.py's own protocol, carry ddpg.py's hyperparameters, and be skipped when finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, TINY, run_cli, single_run_dir
from test_plot import load_plot_module

pytest.importorskip("stable_baselines3")  # in experiments/requirements.txt, so in requirements-dev.txt

SB3_RUN = REPO / "experiments" / "sb3_run.py"
SMALL = ["--env-id", "Pendulum-v1", "--total-steps", "600", "--start-steps", "200", "--eval-every", "300",
         "--eval-episodes", "2"]


def sb3_run(args: list, runs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SB3_RUN), *map(str, args), "--runs-dir", str(runs)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def td3_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("sb3")
    proc = sb3_run(["--algo", "td3", *SMALL, "--seeds", "3", "--exp-name", "cmp_sb3-td3"], runs)
    assert proc.returncode == 0, proc.stderr
    return runs, single_run_dir(runs), proc


def test_summary_has_ddpg_py_fields_and_its_evaluation_steps(td3_run, tmp_path):
    runs, run_dir, _ = td3_run
    summary = json.loads((run_dir / "summary.json").read_text())
    rc, _, err = run_cli(["--env-id", "Pendulum-v1", *TINY, "--runs-dir", tmp_path])
    assert rc == 0, err
    ours = json.loads((single_run_dir(tmp_path) / "summary.json").read_text())
    assert set(summary) == set(ours)
    assert summary["status"] == "finished" and summary["steps"] == 600 and summary["seed"] == 3
    assert [s for s, _ in summary["eval_returns"]] == [300, 600]
    assert summary["final_eval_return_mean"] == summary["eval_returns"][-1][1]
    assert -1800 < summary["final_eval_return_mean"] < 0  # Pendulum's returns, 2 episodes of 200 steps
    assert run_dir.name.startswith("Pendulum-v1__cmp_sb3-td3__3__")


def test_hyperparameters_are_ddpg_py_defaults(td3_run):
    import ddpg

    _, run_dir, _ = td3_run
    config = json.loads((run_dir / "config.json").read_text())
    d = ddpg.Args()
    assert config["trainer"].startswith("stable-baselines3 ") and config["trainer"].endswith(" TD3")
    assert config["policy_kwargs"] == {"net_arch": list(d.hidden_sizes)}
    assert (config["learning_rate"], config["batch_size"], config["buffer_size"], config["tau"], config["gamma"]) == (
        d.policy_lr, d.batch_size, d.buffer_size, d.tau, d.gamma) and d.policy_lr == d.value_lr
    assert (config["train_freq"], config["gradient_steps"], config["learning_starts"]) == (1, 1, 200)
    assert config["noise_std"] == d.noise_std
    assert (config["policy_delay"], config["target_policy_noise"], config["target_noise_clip"]) == (2, 0.2, 0.5)


def test_a_finished_seed_is_skipped(td3_run):
    runs, run_dir, _ = td3_run
    proc = sb3_run(["--algo", "td3", *SMALL, "--seeds", "3", "--exp-name", "cmp_sb3-td3"], runs)
    assert proc.returncode == 0 and f"# skip, finished: {run_dir}" in proc.stdout
    assert [p.name for p in runs.iterdir()] == [run_dir.name]


def test_plot_names_ddpg_py_and_sb3_arms_together(td3_run, tmp_path):
    runs, _, _ = td3_run
    rc, _, err = run_cli(["--env-id", "Pendulum-v1", *TINY, "--exp-name", "cmp_ddpg", "--seed", "3", "--runs-dir", runs])
    assert rc == 0, err
    plot = load_plot_module()
    groups = plot.group_runs(plot.load_runs([runs], False), plot.differing_keys(plot.load_runs([runs], False)))
    assert sorted(g.label for g in groups) == ["ddpg", "sb3-td3"]
    assert all(np.isfinite(g.runs[0].returns).all() for g in groups)
