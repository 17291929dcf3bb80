"""benchmarks/sps.py end to end on a tiny budget: it runs, its report holds every table, and its
figures are consistent with each other (the floor is the sum of its parts, efficiency is floor / ms
per step, the in-sequence pieces fit in the loop's time). No speed is asserted: speed belongs in the
README, measured on an idle machine, never in a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SPS = REPO / "benchmarks" / "sps.py"


def run_sps(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(SPS), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_sps_runs_and_its_figures_add_up(tmp_path):
    out = tmp_path / "bench.md"
    proc = run_sps(["--envs", "Pendulum-v1", "--repeats", "1", "--steps", "400", "--start-steps", "100",
                    "--threads", "1", "--no-sb3", "--no-compile", "--floor-rounds", "2", "--loop-steps", "40",
                    "--extra-args", "--hidden-sizes 32 32 --batch-size 32", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in ["## Training runs", "## The floor", "## The same pieces in sequence", "## The update"]:
        assert heading in text
    rows = [line for line in text.splitlines() if line.startswith("| Pendulum-v1 |")]
    assert len(rows) == 4, text
    assert "skipped" in rows[0]  # the SB3 column, with --no-sb3
    assert "--hidden-sizes 32 32 --batch-size 32" in text  # the extra flags are on record

    results = json.loads(out.with_suffix(".json").read_text())
    entry = results["envs"]["Pendulum-v1"]
    f = entry["floor"]
    assert f["floor_ms"] == pytest.approx(f["env_step_ms"] + f["actor_forward_ms"] + f["sample_ms"] + f["update_ms"])
    for key in ["env_step_ms", "actor_forward_ms", "sample_ms", "update_ms", "eager_update_ms", "update_num_q2_ms",
                "update_td3_ms", "update_batch1_ms", "eager_update_batch1_ms", "in_sequence_loop_ms"]:
        assert f[key] > 0, key
    assert f["update_speedup"] == pytest.approx(f["eager_update_ms"] / f["update_ms"])
    # every variant timed in every round; the loop ran between them, all 40 steps
    assert set(f["rounds"]["update_ms"]) == {"default", "num_q=2", "td3", "eager", "default@1", "eager@1"}
    assert all(len(v) == 2 for v in f["rounds"]["update_ms"].values())
    assert f["loop_steps"] == 40
    pieces = f["in_sequence_ms"]
    assert set(pieces) == {"act", "env_step", "store", "sample", "update"}
    assert all(v > 0 for v in pieces.values())
    assert sum(pieces.values()) <= f["in_sequence_loop_ms"] * 1.0001  # the loop's time holds its pieces
    assert f["in_sequence_efficiency"] == pytest.approx(f["floor_ms"] / f["in_sequence_loop_ms"])
    assert f["compiled_update_ms"] is None and f["compile_s"] is None  # --no-compile

    (run,) = entry["runs"]
    assert run["trainer"] == "ddpg" and run["ok"] and run["sps"] > 0
    assert run["peak_rss_mib"] > 100  # torch alone is more than that
    assert entry["ms_per_step"] == pytest.approx(1e3 / run["sps"])
    assert entry["efficiency"] == pytest.approx(f["floor_ms"] / entry["ms_per_step"])


@pytest.mark.parametrize("args", [["--loop-steps", "0"], ["--steps", "100", "--start-steps", "100"],
                                  ["--extra-args", "--batch-size 0"]])
def test_sps_rejects_bad_options_in_one_line(args):
    proc = run_sps([*args, "--no-sb3", "--no-compile"], timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error" in proc.stderr.strip().splitlines()[-1]


def test_denormals_script_runs_both_modes_and_flush_to_zero_leaves_none():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "denormals.py"), "--env-id", "Pendulum-v1",
                           "--start-steps", "300", "--learn", "200", "--measure", "20", "--repeats", "1",
                           "--threads", "1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modes = [line for line in proc.stderr.splitlines() if line.startswith("flush-to-zero")]
    assert len(modes) == 2 and any(" on " in m for m in modes) and any(" off:" in m for m in modes), modes
    on = next(m for m in modes if " on " in m)
    assert on.endswith("0.0% of Adam's state denormal")  # flushed: none left, whatever the machine
    assert "Pendulum-v1, learning steps 201-220, 1 threads, medians of 1" in proc.stdout
