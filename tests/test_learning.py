"""Learning tests: fixed seeds, real thresholds on the final evaluation return.

Pendulum-v1: a random policy scores about -1200, a solved one about -150; a correct DDPG is far
above -300 after 5k steps, TD3 (its actor updates half as often) after 10k (seed 1, in 15k-step runs
whose evaluations at those steps are these runs' final ones: DDPG -197 at 5k, OU -197 at 5k, TD3
-193 at 10k, and -194, -195, -197 at 15k). The budgets are what the signal needs, not more: the
three runs were 45k steps, now 20k. Bugs that still pass a Pendulum threshold (no target networks,
truncation stored as termination; Pendulum never terminates) are caught by test_algorithm.py's
Q-value test instead. The three trainings are
subprocesses with one torch thread each, at most two at a time; they start in the background
as soon as the tests are collected (see BackgroundRuns in conftest.py)."""

from __future__ import annotations

import json

import pytest

from conftest import single_run_dir

THRESHOLD = -300.0
BASE = ["--env-id", "Pendulum-v1", "--seed", "1", "--start-steps", "1000", "--eval-every", "5000",
        "--eval-episodes", "10", "--torch-threads", "1", "--no-cuda", "--log-every", "5000"]
CONFIGS = {  # name: (steps, flags)
    "ddpg": (5000, []),
    "td3": (10000, ["--num-q", "2", "--q-reduce", "min", "--target-noise", "0.2", "--target-noise-clip", "0.5",
                    "--policy-delay", "2"]),
    "ou-noise": (5000, ["--noise-type", "ou"]),
}
RUNS = {name: [*BASE, "--total-steps", str(steps), *extra, "--exp-name", name]
        for name, (steps, extra) in CONFIGS.items()}

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.background_run(f"learning-{name}", argv))
                                  for name, argv in RUNS.items()])
def test_pendulum_learns(name, background_runs):
    rc, out, err, runs_dir = background_runs.result(f"learning-{name}", RUNS[name])
    assert rc == 0, err
    summary = json.loads((single_run_dir(runs_dir) / "summary.json").read_text())
    steps = CONFIGS[name][0]
    assert summary["status"] == "finished" and summary["steps"] == steps
    curve = summary["eval_returns"]
    assert [step for step, _ in curve] == list(range(5000, steps + 1, 5000))
    final = summary["final_eval_return_mean"]
    assert final >= THRESHOLD, f"{name}: final mean eval return {final:.1f} < {THRESHOLD} (curve {curve})"
