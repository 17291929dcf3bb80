"""Learning tests: fixed seeds, real thresholds on the final evaluation return.

Pendulum-v1: a random policy scores about -1200, a solved one about -150; a correct DDPG is far
above -300 after 15k steps (seed 1 gave -194 DDPG, -197 TD3, -195 OU). The three trainings are
subprocesses with one torch thread each, at most two at a time; they start in the background
as soon as the tests are collected (see BackgroundRuns in conftest.py)."""

from __future__ import annotations

import json

import pytest

from conftest import single_run_dir

THRESHOLD = -300.0
BASE = ["--env-id", "Pendulum-v1", "--seed", "1", "--total-steps", "15000", "--start-steps", "1000",
        "--eval-every", "5000", "--eval-episodes", "10", "--torch-threads", "1", "--no-cuda", "--log-every", "5000"]
CONFIGS = {
    "ddpg": [],
    "td3": ["--num-q", "2", "--q-reduce", "min", "--target-noise", "0.2", "--target-noise-clip", "0.5",
            "--policy-delay", "2"],
    "ou-noise": ["--noise-type", "ou"],
}
RUNS = {name: [*BASE, *extra, "--exp-name", name] for name, extra in CONFIGS.items()}

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.background_run(f"learning-{name}", argv))
                                  for name, argv in RUNS.items()])
def test_pendulum_learns(name, background_runs):
    rc, out, err, runs_dir = background_runs.result(f"learning-{name}", RUNS[name])
    assert rc == 0, err
    summary = json.loads((single_run_dir(runs_dir) / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["total_steps"] == 15000
    curve = summary["eval_returns"]
    assert [step for step, _ in curve] == [5000, 10000, 15000]
    final = summary["final_eval_return_mean"]
    assert final >= THRESHOLD, f"{name}: final mean eval return {final:.1f} < {THRESHOLD} (curve {curve})"
