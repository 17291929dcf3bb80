"""benchmarks/sps.py end to end on a tiny budget: it runs, its report holds every table, and its
figures are consistent with each other (the floor is the sum of its parts, efficiency is floor / ms
per step, the in-sequence pieces fit in the loop's time); --load runs every repetition again beside
busy processes and kills them; the CleanRL columns work end to end with stand-in scripts that print
what CleanRL's print (CleanRL itself is never needed here). No speed is asserted: speed belongs in the
README, measured on an idle machine, never in a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    assert len(rows) == 5, text  # training runs, memory, floor, in sequence, update
    assert "skipped" in rows[0]  # the SB3 column, with --no-sb3
    assert "CleanRL" not in rows[0] and "CleanRL columns skipped: to add them, pass --cleanrl DIR" in text
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


TINY_SPS = ["--envs", "Pendulum-v1", "--repeats", "1", "--steps", "500", "--start-steps", "100", "--threads", "1",
            "--no-sb3", "--no-compile", "--floor-rounds", "1", "--loop-steps", "10",
            "--extra-args", "--hidden-sizes 32 32 --batch-size 32"]
BUSY_MARK = "os.getppid() == parent"  # in the busy processes' command line


def busy_pids() -> set[int]:
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if BUSY_MARK in cmdline.read_bytes().decode(errors="replace"):
                pids.add(int(cmdline.parent.name))
        except OSError:  # gone meanwhile
            pass
    return pids


def test_sps_load_runs_idle_then_loaded_and_leaves_no_busy_process(tmp_path):
    before = busy_pids()
    out = tmp_path / "load.md"
    proc = run_sps([*TINY_SPS, "--load", "1", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.with_suffix(".json").read_text())
    entry = results["envs"]["Pendulum-v1"]
    idle, loaded = ([x for x in entry["runs"] if x["load"] == n] for n in (0, 1))
    assert [x["trainer"] for x in idle] == [x["trainer"] for x in loaded] == ["ddpg"]
    assert all(x["ok"] and x["sps"] > 0 for x in idle + loaded)
    assert entry["medians"] == {"idle": {"ddpg": idle[0]["sps"]}, "loaded": {"ddpg": loaded[0]["sps"]}}
    assert entry["ms_per_step"] == pytest.approx(1e3 / idle[0]["sps"])  # the floor's comparison: idle runs
    (busy,) = results["load_procs"]  # one busy process, for the one loaded repetition
    assert busy["cpu_share"] > 0
    assert not Path(f"/proc/{busy['pid']}").exists() and busy_pids() <= before  # killed, none left behind
    text = out.read_text()
    assert "- load: every repetition runs idle, then again with 1 busy process (" in text
    rows = [line for line in text.splitlines() if line.startswith("| Pendulum-v1 |")]
    assert "| idle |" in rows[0] and "| 1 busy |" in rows[1], text


# Stand-ins for CleanRL's two scripts: the same flags (tyro's names) and the same output, an 'SPS:' line at
# each 0-based global_step divisible by 100 above --learning-starts, after a known sleep per step. They check
# that sps.py's one-line cleanrl_utils shim is importable and note their own learning-phase steps/s.
STAND_IN = """import argparse, importlib.util, json, sys, time
p = argparse.ArgumentParser()
for flag in ["--env-id", "--exploration-noise", "--learning-rate", "--batch-size", "--policy-noise", "--noise-clip"]:
    p.add_argument(flag)
p.add_argument("--total-timesteps", type=int)
p.add_argument("--learning-starts", type=int)
p.add_argument("--policy-frequency", type=int, default=2)
args, _ = p.parse_known_args()
if importlib.util.find_spec("cleanrl_utils.buffers") is None:
    sys.exit("no cleanrl_utils.buffers on the path")
start = time.time()
for global_step in range(args.total_timesteps):
    if global_step > args.learning_starts:
        time.sleep(0.004 if args.policy_frequency == 1 else 0.002)
        if global_step % 100 == 0:
            print("SPS:", int(global_step / (time.time() - start)))
"""


def test_sps_cleanrl_columns_with_stand_in_scripts(tmp_path):
    stand_ins = tmp_path / "cleanrl"
    stand_ins.mkdir()
    for name in ["ddpg_continuous_action.py", "td3_continuous_action.py"]:
        (stand_ins / name).write_text(STAND_IN)
    out = tmp_path / "cleanrl.md"
    proc = run_sps([*TINY_SPS, "--td3", "--cleanrl", str(stand_ins), "--cleanrl-python", sys.executable,
                    "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CleanRL's scripts have 256x256 networks" in proc.stderr  # --hidden-sizes 32 32 is not matched
    results = json.loads(out.with_suffix(".json").read_text())
    assert results["trainers"] == ["ddpg", "cleanrl-pf1", "cleanrl-pf2", "ddpg-td3", "cleanrl-td3"]
    entry = results["envs"]["Pendulum-v1"]
    runs = {x["trainer"]: x for x in entry["runs"]}
    assert all(x["ok"] and x["sps"] > 0 for x in runs.values()), entry["runs"]
    for name, sleep in [("cleanrl-pf1", 0.004), ("cleanrl-pf2", 0.002), ("cleanrl-td3", 0.002)]:
        run = runs[name]
        assert run["sps_lines"] == 3 and run["measured_steps"] == "200-400"  # lines at steps 200, 300, 400
        assert run["sps"] <= 1.02 / sleep  # each step sleeps that long: no faster than that
        assert run["peak_rss_mib"] > 0
    for name, flags in [("cleanrl-pf1", "--policy-frequency 1"), ("cleanrl-pf2", "--policy-frequency 2"),
                        ("cleanrl-td3", "--policy-frequency 2 --policy-noise 0.2 --noise-clip 0.5")]:
        assert flags in runs[name]["cmd"], runs[name]["cmd"]
        for matched in ["--learning-rate 0.001", "--learning-starts 100", "--exploration-noise 0.1",
                        "--batch-size 32", "--tau 0.005", "--gamma 0.99", "--no-cuda"]:
            assert matched in runs[name]["cmd"], (matched, runs[name]["cmd"])
    assert "--num-q 2 --target-noise 0.2 --policy-delay 2" in runs["ddpg-td3"]["cmd"]
    med = entry["medians"]["idle"]
    assert entry["ratios"]["idle"] == pytest.approx({
        "ddpg / cleanrl-pf1": med["ddpg"] / med["cleanrl-pf1"], "ddpg / cleanrl-pf2": med["ddpg"] / med["cleanrl-pf2"],
        "ddpg-td3 / cleanrl-td3": med["ddpg-td3"] / med["cleanrl-td3"]})
    text = out.read_text()
    ddpg_row, td3_row = [line for line in text.splitlines() if line.startswith("| Pendulum-v1 | idle |")]
    assert ddpg_row.endswith(f"| {entry['ratios']['idle']['ddpg / cleanrl-pf1']:.2f}x | "
                             f"{entry['ratios']['idle']['ddpg / cleanrl-pf2']:.2f}x |")
    assert "| skipped |" in ddpg_row and "| skipped |" in td3_row  # SB3, with --no-sb3
    for header in ["| CleanRL DDPG pf=1 | CleanRL DDPG pf=2 |", "ddpg.py / CleanRL pf=1", "| CleanRL TD3 |",
                   "ddpg.py TD3 / CleanRL"]:
        assert header in text


def test_cleanrl_probe_finds_what_its_python_can_make(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import sps
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    probe = sps.probe_cleanrl(Path(sys.executable), ["Pendulum-v1", "NoSuchEnv-v9", "HopperBulletEnv-v0"], tmp_path)
    assert probe["envs"]["Pendulum-v1"] == {"id": "Pendulum-v1"}
    assert probe["envs"]["NoSuchEnv-v9"]["note"].startswith("no NoSuchEnv-v9 in its gymnasium ")
    # PyBullet's ids register on import, which CleanRL's scripts do not do: they get gymnasium's module:Id form
    assert probe["envs"]["HopperBulletEnv-v0"] == {"id": "pybullet_envs_gymnasium:HopperBulletEnv-v0"}
    assert probe["versions"]["gymnasium"] and "error" not in probe


@pytest.mark.parametrize("args", [["--loop-steps", "0"], ["--steps", "100", "--start-steps", "100"],
                                  ["--extra-args", "--batch-size 0"], ["--load", "-1"], ["--threads", "-1"],
                                  ["--cleanrl", "/nonexistent", "--steps", "250", "--start-steps", "100"],
                                  ["--cleanrl", "/nonexistent", "--cleanrl-python", sys.executable]])
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
