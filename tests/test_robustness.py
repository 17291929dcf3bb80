"""Long runs survive (issue 6).

Ctrl-C and SIGTERM save latest.pt and mark the run interrupted; --resume continues the same run
folder, bit for bit when the replay buffer was saved; a kill -9 in the middle of a checkpoint write
never tears latest.pt; a diverging run stops with one line and keeps its last good checkpoint; a
failing Weights & Biases never stops training; incompatible checkpoints and a table of hostile
command lines and files each get one 'error:' line and exit code 2, and leave an earlier run alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import re
import shlex
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import ddpg
from conftest import REPO, TINY, assert_one_error_line, run_cli, scalar_tags, single_run_dir, wandb_records
from tests import envs

PENDULUM_TINY = ["--env-id", "Pendulum-v1", *TINY]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def cli_env(extra: dict | None = None) -> dict:
    """The environment of conftest.run_cli, for the subprocesses this file starts itself."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline",
            "WANDB_SILENT": "true", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "COLUMNS": "200", **(extra or {})}


def start_cli(args: list, extra_env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "ddpg.py"), *map(str, args)], cwd=REPO, env=cli_env(extra_env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)


@pytest.fixture
def spawn():
    """start_cli, and kill at teardown whatever a failing test left running."""
    procs = []

    def start(args: list, extra_env: dict | None = None) -> subprocess.Popen:
        procs.append(start_cli(args, extra_env))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def interrupt_after_line(proc: subprocess.Popen, line_prefix: str, signum: int, timeout: float = 300):
    """Read the run's plain log lines until one starts with line_prefix, then send signum.
    Returns (returncode, stdout, stderr) once the process has exited."""
    seen = []
    deadline = time.time() + timeout
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(line_prefix):
            proc.send_signal(signum)
            break
        assert time.time() < deadline, "no progress line in time"
    else:
        out, err = proc.communicate()
        pytest.fail(f"the run ended before printing {line_prefix!r}: exit {proc.returncode}\n{''.join(seen)}{err}")
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, "".join(seen) + out, err


def stderr_lines(stderr: str) -> list[str]:
    """The non-empty lines ddpg.py wrote to stderr (pybullet's C library prints its build time there)."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("pybullet build time")]


def differences(a, b, where: str = "") -> list[str]:
    """Paths at which two nested checkpoint structures differ (tensors and arrays compared exactly)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
        return [] if same else [where]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return [] if np.array_equal(np.asarray(a), np.asarray(b)) else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys {sorted(map(str, a.keys() ^ b.keys()))}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def pendulum_state(env_pickle: bytes) -> dict:
    env = pickle.loads(env_pickle)
    return {"state": env.unwrapped.state, "last_u": env.unwrapped.last_u,
            "rng": env.unwrapped.np_random.bit_generator.state, "t": env.get_wrapper_attr("_elapsed_steps")}


HINT = re.compile(r"^interrupted at step (\d+); resume with: python ddpg\.py --resume (\S+)$")


# ---------------------------------------------------------------------------------------------
# Ctrl-C, then --resume with the buffer: the same weights as the uninterrupted run
# ---------------------------------------------------------------------------------------------

EXACT = ["--env-id", "Pendulum-v1", "--total-steps", "1600", "--start-steps", "400", "--batch-size", "32",
         "--hidden-sizes", "32", "32", "--save-every", "400", "--save-buffer", "--eval-every", "800",
         "--eval-episodes", "1", "--noise-type", "ou", "--log-every", "400", "--torch-threads", "1", "--no-cuda",
         "--torch-deterministic"]


def test_sigint_then_resume_with_buffer_gives_the_uninterrupted_weights(tmp_path, spawn):
    straight = spawn([*EXACT, "--runs-dir", tmp_path / "a"])  # runs alongside, on its own core
    interrupted = spawn([*EXACT, "--runs-dir", tmp_path / "b"])
    rc, out, err = interrupt_after_line(interrupted, "step 800/1600", signal.SIGINT)

    # the interruption: exit 128 + SIGINT, one line that says how to resume
    assert rc == 130, err
    assert len(stderr_lines(err)) == 1, err
    hint = HINT.match(stderr_lines(err)[0])
    assert hint, err
    k, run_dir = int(hint.group(1)), Path(hint.group(2))
    assert run_dir == single_run_dir(tmp_path / "b")
    assert 800 <= k < 1600
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == k
    assert not (run_dir / "checkpoints" / "final.pt").exists()
    latest = load(run_dir / "checkpoints" / "latest.pt")
    assert latest["loop"]["step"] == k and latest["buffer"]["added"] == k
    if k % 200:  # in the middle of an episode the OU state is not zero
        assert latest["noise"]["x"].any()
    # TensorBoard was flushed and closed: every episode end (Pendulum: 200 steps) up to k is there
    tags = scalar_tags(run_dir)
    assert [s for s, _ in tags["charts/episodic_return"]] == list(range(200, k + 1, 200))
    assert [s for s, _ in tags["eval/return_mean"]] == [800]
    assert not list((run_dir / "checkpoints").glob(".*")), "a temporary checkpoint file was left behind"

    # resume with the command the hint gave: same folder, no warning, finished
    rc, out, err = run_cli(["--resume", run_dir])
    assert rc == 0, err
    assert stderr_lines(err) == [], err
    assert single_run_dir(tmp_path / "b") == run_dir
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2  # one per session
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 1600

    out_a, err_a = straight.communicate(timeout=300)
    assert straight.returncode == 0, err_a
    a = load(single_run_dir(tmp_path / "a") / "checkpoints" / "final.pt")
    b = load(run_dir / "checkpoints" / "final.pt")
    assert a["loop"]["step"] == b["loop"]["step"] == 1600
    assert a["learner"]["n_updates"] == 1600 - 400
    # networks, targets, optimizers, noise, every RNG, the episode in progress, the eval curve:
    # identical to the bit (only the clocks and the runs folder differ; a re-pickled env's bytes
    # differ in pickle's bookkeeping, so the env is compared by its state)
    for ckpt in (a, b):
        ckpt["env_pickle"] = pendulum_state(ckpt["env_pickle"])
        for key in ("wall_time", "learn_time"):
            del ckpt["stats"][key]
        del ckpt["env_signature"]  # the signature of the pickle's bytes
        del ckpt["args"]["runs_dir"]
    diffs = differences(a, b)
    assert diffs == [], diffs
    assert summary["eval_returns"] == json.loads((single_run_dir(tmp_path / "a") / "summary.json").read_text())[
        "eval_returns"]


# ---------------------------------------------------------------------------------------------
# SIGTERM, then --resume without the buffer: warns, refills, then learns again
# ---------------------------------------------------------------------------------------------


NO_BUFFER = ["--env-id", "Pendulum-v1", "--total-steps", "2000", "--start-steps", "200", "--batch-size", "32",
             "--hidden-sizes", "32", "32", "--save-every", "200", "--eval-every", "1000", "--eval-episodes", "1",
             "--log-every", "200", "--torch-threads", "1", "--no-cuda", "--track"]


def test_sigterm_then_resume_without_buffer_refills_before_updating(tmp_path, spawn):
    proc = spawn([*NO_BUFFER, "--runs-dir", tmp_path], {"WANDB_MODE": "offline"})
    rc, out, err = interrupt_after_line(proc, "step 400/2000", signal.SIGTERM)
    assert rc == 128 + signal.SIGTERM == 143, err
    assert len(stderr_lines(err)) == 1, err
    hint = HINT.match(stderr_lines(err)[0])
    assert hint, err
    k, run_dir = int(hint.group(1)), Path(hint.group(2))
    refill = 200  # max(--start-steps, --batch-size)
    assert 400 <= k < 2000 - refill, "interrupted too late for the refill to be visible"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == k
    latest = load(run_dir / "checkpoints" / "latest.pt")
    assert latest["loop"]["step"] == k and "buffer" not in latest
    assert latest["learner"]["n_updates"] == k - 200
    # wandb was closed: its log ends with an exit record, after the last history row
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = wandb_records(log)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "exit" in kinds and kinds.index("exit") > max(i for i, x in enumerate(kinds) if x == "history")
    assert max(r.history.step.num for r in records if r.HasField("history")) == k // 200 * 200

    rc, out, err = run_cli(["--resume", run_dir], env={"WANDB_MODE": "offline"})
    assert rc == 0, err
    lines = stderr_lines(err)
    assert len(lines) == 1 and lines[0].startswith("warning: latest.pt holds no replay buffer"), err
    assert f"refills for {refill} steps before updates resume" in lines[0]
    final = load(run_dir / "checkpoints" / "final.pt")
    # (k - start) updates before the interruption, none for `refill` steps after it, then one per step
    assert final["learner"]["n_updates"] == (k - 200) + (2000 - k - refill)
    assert final["loop"]["step"] == 2000 and final["loop"]["episode"] == 10  # Pendulum's episode resumed mid-way
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 2000
    assert [s for s, _ in summary["eval_returns"]] == [1000, 2000]
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 2  # the resumed session logged too


# ---------------------------------------------------------------------------------------------
# Environments whose state cannot be pickled faithfully (MuJoCo: EzPickle rebuilds it; PyBullet:
# the physics lives in a server the pickle cannot reconnect to)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ["Hopper-v5", "HopperBulletEnv-v0"])
def test_resume_unpicklable_env_starts_a_new_episode_and_continues(env_id, tmp_path):
    base = ["--env-id", env_id, "--start-steps", "100", "--batch-size", "32", "--hidden-sizes", "32", "32",
            "--save-every", "100", "--eval-every", "300", "--eval-episodes", "1", "--torch-threads", "1",
            "--no-cuda", "--runs-dir", tmp_path]
    rc, out, err = run_cli([*base, "--total-steps", "300"])
    assert rc == 0, err
    run_dir = single_run_dir(tmp_path)
    first = load(run_dir / "checkpoints" / "latest.pt")
    assert first["env_pickle"] is None  # not saved: it would come back reset, or disconnected
    if env_id == "HopperBulletEnv-v0":  # an older ddpg.py pickled PyBullet envs: such a pickle is never loaded
        first["env_pickle"] = b"a pickle of a disconnected PyBullet env"
        ddpg.atomic_save(first, run_dir / "checkpoints" / "latest.pt")

    # train longer; the other settings stay the run's, an explicit different one is named as ignored
    rc, out, err = run_cli(["--resume", run_dir, "--total-steps", "500", "--policy-lr", "5e-4", "--seed", "1"])
    assert rc == 0, err
    lines = stderr_lines(err)
    assert len(lines) == 3, err
    assert lines[0] == ("warning: a resume keeps the run's settings; ignoring --policy-lr "
                        "(start a new run to change them)")
    assert lines[1].startswith("warning: latest.pt holds no replay buffer")
    assert lines[2].startswith("warning: this environment's state cannot be saved; the episode in progress")
    final = load(run_dir / "checkpoints" / "final.pt")
    assert final["args"]["policy_lr"] == 1e-3 and final["args"]["total_steps"] == 500
    assert final["loop"]["step"] == 500 and final["loop"]["episode"] > first["loop"]["episode"]
    assert final["learner"]["n_updates"] == (300 - 100) + (500 - 300 - 100)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 500
    assert [s for s, _ in summary["eval_returns"]] == [300, 500]


# ---------------------------------------------------------------------------------------------
# kill -9 in the middle of a checkpoint write
# ---------------------------------------------------------------------------------------------

KILL_DRIVER = r"""
import json, os, random, shutil, signal, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
import ddpg

path, kills = Path(sys.argv[2]), int(sys.argv[3])
payload = torch.arange(2_000_000, dtype=torch.float32)  # 8 MB per version
ddpg.atomic_save({"version": 0, "data": payload}, path)
rng, report = random.Random(0), []
for k in range(kills):
    pid = os.fork()
    if pid == 0:  # the writer: saves versions 10**6 (k + 1) + 0, 1, 2, ... until killed
        v = 10**6 * (k + 1)
        while True:
            ddpg.atomic_save({"version": v, "data": payload + v}, path)
            v += 1
    tmp, seen = path.with_name(f".{path.name}.tmp{pid}"), None
    if k % 2 == 0:  # kill while the temporary file is being written
        deadline = time.time() + 20
        while not (seen := tmp.exists() and tmp.stat().st_size > 0) and time.time() < deadline:
            time.sleep(0.0002)
    else:  # kill at a random moment
        time.sleep(rng.uniform(0.0, 0.4))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    shutil.copy(path, path.with_name(f"after_kill_{k}.pt"))
    report.append({"tmp_seen": seen, "tmp_left": tmp.exists()})
    tmp.unlink(missing_ok=True)
print(json.dumps(report))
"""


@pytest.mark.parametrize("gap_s", [0.0, 0.05])
def test_second_ctrl_c_stops_at_once_without_a_traceback(tmp_path, spawn, gap_s):
    """Two Ctrl-C in a row (the second may land in the checkpoint write or in the clean-up):
    exit 130, one line, no traceback, and whatever latest.pt is on disk loads."""
    proc = spawn([*EXACT, "--runs-dir", tmp_path])
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("step 800/1600"):
            proc.send_signal(signal.SIGINT)
            time.sleep(gap_s)
            proc.send_signal(signal.SIGINT)
            break
    else:
        pytest.fail(f"the run ended early: {''.join(seen)}{proc.communicate()[1]}")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert len(stderr_lines(err)) == 1 and stderr_lines(err)[0].startswith("interrupted"), err
    latest = single_run_dir(tmp_path) / "checkpoints" / "latest.pt"
    assert latest.exists()  # written at step 400 at the latest
    assert 400 <= load(latest)["loop"]["step"] <= 1600


def test_kill_9_during_checkpoint_write_leaves_a_loadable_latest(tmp_path):
    kills = 6
    proc = subprocess.run([sys.executable, "-c", KILL_DRIVER, str(REPO), str(tmp_path / "latest.pt"), str(kills)],
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    full = torch.arange(2_000_000, dtype=torch.float32)
    for k, info in enumerate(report):
        ckpt = load(tmp_path / f"after_kill_{k}.pt")  # a torn file would not load
        v = ckpt["version"]
        assert v == 0 or 10**6 <= v < 10**6 * (k + 2), v  # a version that was completely written
        assert torch.equal(ckpt["data"], full + v), f"kill {k}: version {v} has the wrong contents"
        if k % 2 == 0:
            # the kill really landed in the middle of a write: its temporary file is still there
            assert info["tmp_seen"] and info["tmp_left"], info


# ---------------------------------------------------------------------------------------------
# Divergence
# ---------------------------------------------------------------------------------------------


def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    rc, out, err = run_cli(["--env-id", "tests.envs:DDPGTestNaNReward-v0", "--total-steps", "2000",
                            "--start-steps", "100", "--batch-size", "32", "--hidden-sizes", "32", "32",
                            "--save-every", "100", "--eval-every", "2000", "--eval-episodes", "1",
                            "--torch-threads", "1", "--no-cuda", "--runs-dir", tmp_path])
    assert rc == 3, err
    lines = stderr_lines(err)
    assert "Traceback" not in err and len(lines) == 1, err
    m = re.fullmatch(r"error: training diverged at step (\d+): q_loss is nan; last good checkpoint: (\S+)", lines[0])
    assert m, lines[0]
    step, kept = int(m.group(1)), Path(m.group(2))
    run_dir = single_run_dir(tmp_path)
    assert kept == run_dir / "checkpoints" / "latest.pt"
    # the first NaN reward is the transition of step NAN_REWARD_AFTER + 1; updates sample it soon after
    assert envs.NAN_REWARD_AFTER < step < 2000
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps"] == step
    assert summary["final_eval_return_mean"] is None
    assert not (run_dir / "checkpoints" / "final.pt").exists()
    latest = load(kept)
    assert latest["loop"]["step"] == (step - 1) // 100 * 100  # the last save before the bad update
    for name, t in latest["learner"]["nets"].items():
        assert torch.isfinite(t).all(), name
    for opt in ("actor_opt", "critic_opt"):
        for state in latest["learner"][opt]["state"].values():
            assert all(torch.isfinite(t).all() for t in state.values())


# ---------------------------------------------------------------------------------------------
# Weights & Biases failing
# ---------------------------------------------------------------------------------------------


def test_wandb_unreachable_warns_once_and_training_finishes(tmp_path):
    # nothing listens on port 9 of the loopback; no proxy may carry the requests anywhere else
    env = cli_env({"WANDB_MODE": "online", "WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",
                   "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_INIT_TIMEOUT": "5",
                   "WANDB_ERROR_REPORTING": "false"})
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(REPO / "ddpg.py"), *PENDULUM_TINY, "--track", "--runs-dir",
                           str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.time() - t0
    assert proc.returncode == 0, proc.stderr
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("warning: Weights & Biases disabled ("), proc.stderr
    assert lines[0].endswith("logging to TensorBoard only")
    assert elapsed < 120, "wandb's init timeout was not honoured"
    run_dir = single_run_dir(tmp_path)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert [s for s, _ in scalar_tags(run_dir)["eval/return_mean"]] == [200, 400]


class FakeWandbRun:
    """A wandb run whose log() raises from its second call on."""

    id = "fake-run"

    def __init__(self):
        self.logged = []

    def log(self, values, step):
        if self.logged:
            raise ConnectionError("server went away\nsecond line of the error")
        self.logged.append((step, values))

    def finish(self):
        raise AssertionError("finish() of a dropped run must not be called")


@pytest.mark.parametrize("fail_at", ["init", "log"])
def test_wandb_failure_is_one_warning_and_tensorboard_keeps_logging(fail_at, tmp_path, monkeypatch, capsys):
    run = FakeWandbRun()

    def init(**kwargs):
        if fail_at == "init":
            raise PermissionError("not logged in")
        return run

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "30")  # Logger sets a default; keep this process's environment
    logger = ddpg.Logger(tmp_path, dataclasses.replace(ddpg.Args(), track=True), "run", None)
    for step in range(1, 6):
        logger.scalars({"charts/x": float(step)}, step)
    logger.close()
    err = capsys.readouterr().err
    expected = ("PermissionError: not logged in" if fail_at == "init" else "ConnectionError: server went away")
    assert stderr_lines(err) == [f"warning: Weights & Biases disabled ({expected}); logging to TensorBoard only"]
    assert run.logged == ([] if fail_at == "init" else [(1, {"charts/x": 1.0})])
    assert scalar_tags(tmp_path)["charts/x"] == [(s, float(s)) for s in range(1, 6)]


# ---------------------------------------------------------------------------------------------
# Hostile and careless input: one table, each row in a fork of one warm interpreter
# ---------------------------------------------------------------------------------------------

# Runs `python ddpg.py ARGV` for every row: the interpreter imports torch & co. once, then forks a
# child per row that executes ddpg.py as __main__ (as `python ddpg.py` does) with its stdout and
# stderr in files and, for the disk-full row, RLIMIT_FSIZE set (Python ignores SIGXFSZ, so a write
# past the limit raises OSError EFBIG). After each row the earlier run folder is hashed.
FORK_DRIVER = r"""
import hashlib, json, os, resource, runpy, sys, time, traceback
from pathlib import Path

spec = json.loads(Path(sys.argv[1]).read_text())
sys.path.insert(0, spec["repo"])
import ddpg  # noqa: F401  (warms the imports)
import torch._inductor.config  # noqa: F401  what torch.use_deterministic_algorithms imports (2 s)


def tree_hash(folder):
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        h.update(str(p.relative_to(folder)).encode() + b"\0")
        if p.is_file():
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


results = {"baseline": tree_hash(spec["guard"])}
for row in spec["rows"]:
    out, err = Path(spec["tmp"]) / (row["id"] + ".out"), Path(spec["tmp"]) / (row["id"] + ".err")
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
            os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            if row["fsize"]:
                resource.setrlimit(resource.RLIMIT_FSIZE, (row["fsize"], row["fsize"]))
            os.environ.update(row["env"])
            sys.argv = [spec["ddpg"], *row["argv"]]
            try:
                runpy.run_path(spec["ddpg"], run_name="__main__")
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                if not isinstance(e.code, int) and e.code is not None:
                    print(e.code, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline, status = time.time() + spec["timeout"], None
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(st)
        elif time.time() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            status = "timeout"
        else:
            time.sleep(0.005)
    results[row["id"]] = {"rc": status, "stdout": out.read_text(errors="replace"),
                          "stderr": err.read_text(errors="replace"), "guard": tree_hash(spec["guard"]),
                          "seconds": round(time.time() - t0, 2)}
Path(spec["result"]).write_text(json.dumps(results))
"""

BASE = ["--env-id", "Pendulum-v1", "--total-steps", "400", "--start-steps", "100", "--batch-size", "32",
        "--eval-every", "200", "--eval-episodes", "1", "--save-every", "200", "--hidden-sizes", "32", "32",
        "--torch-threads", "1", "--no-cuda", "--runs-dir", "{runs}"]


@dataclasses.dataclass
class Row:
    id: str
    argv: list[str]  # appended to BASE (later flags win), '{name}' filled from the fixture's paths
    match: str  # regex the error line must contain
    base: bool = True
    fsize: str | None = None  # name of the RLIMIT_FSIZE value computed by the fixture
    code: int = 2  # the exit code: 2 bad input, 4 an environment fault mid-run, 5 a write fault mid-run
    env: dict = dataclasses.field(default_factory=dict)  # environment variables of the row
    warnings: bool = False  # lines starting 'warning:' may come before the error line
    saved: int | None = None  # a mid-run fault: the step of the latest.pt it writes (exp-name = the row's id)


BROKEN = "tests.broken_envs:Broken{}-v0"
FAULT = {"BROKEN_ENV_FAULT": "1"}


def env_row(row_id: str, env_name: str, match: str, **kw) -> Row:
    """A row on one of tests/broken_envs.py's environments, with exp-name = row id (test_broken_env_runs)."""
    return Row(row_id, ["--env-id", BROKEN.format(env_name), "--exp-name", row_id], match, **kw)


def mid_run(row_id: str, env_name: str, match: str, saved: int) -> Row:
    return env_row(row_id, env_name, match, code=4, env=FAULT, saved=saved)


ROWS = [
    # wrong types
    Row("seed-not-an-int", ["--seed", "abc"], r"--seed.*'abc'"),
    Row("gamma-not-a-float", ["--gamma", "x"], r"--gamma.*'x'"),
    Row("total-steps-float-notation", ["--total-steps", "1e3"], r"--total-steps.*'1e3'"),
    Row("hidden-sizes-not-ints", ["--hidden-sizes", "64", "big"], r"--hidden-sizes.*'big'"),
    # zero, negative, out of range
    Row("total-steps-zero", ["--total-steps", "0"], r"--total-steps must be positive, got 0"),
    Row("batch-size-negative", ["--batch-size", "-5"], r"--batch-size must be positive, got -5"),
    Row("buffer-size-zero", ["--buffer-size", "0"], r"--buffer-size must be positive, got 0"),
    Row("hidden-size-zero", ["--hidden-sizes", "0", "32"], r"--hidden-sizes must be positive integers"),
    Row("hidden-sizes-none", ["--hidden-sizes"], r"--hidden-sizes"),
    Row("eval-episodes-zero", ["--eval-episodes", "0"], r"--eval-episodes must be positive"),
    Row("max-episode-steps-zero", ["--max-episode-steps", "0"], r"--max-episode-steps must be positive"),
    Row("value-lr-negative", ["--value-lr", "-1e-3"], r"--value-lr must be positive"),
    Row("noise-std-negative", ["--noise-std", "-0.1"], r"--noise-std must be >= 0"),
    Row("gamma-above-one", ["--gamma", "1.5"], r"--gamma must be in \[0, 1\), got 1\.5"),
    Row("seed-negative", ["--seed", "-1"], r"--seed must be in \[0, 2\*\*32\), got -1"),
    Row("seed-huge", ["--seed", str(2**40)], r"--seed must be in"),
    Row("torch-threads-absurd", ["--torch-threads", "100000"], r"--torch-threads 100000 is more than"),
    Row("batch-above-buffer", ["--batch-size", "64", "--buffer-size", "32"], r"larger than --buffer-size"),
    Row("start-steps-below-batch", ["--start-steps", "10"], r"--start-steps \(10\) is below --batch-size"),
    Row("buffer-beyond-address-space", ["--buffer-size", str(10**15)], r"cannot allocate .* 10{15} transitions"),
    Row("hidden-beyond-address-space", ["--hidden-sizes", str(10**14)], r"cannot allocate the networks"),
    Row("batch-size-zero", ["--batch-size", "0"], r"--batch-size must be positive, got 0"),
    Row("eval-every-zero", ["--eval-every", "0"], r"--eval-every must be positive, got 0"),
    Row("policy-lr-zero", ["--policy-lr", "0"], r"--policy-lr must be positive, got 0"),
    Row("tau-zero", ["--tau", "0"], r"--tau must be in \(0, 1\], got 0"),
    Row("gamma-one", ["--gamma", "1.0"], r"--gamma must be in \[0, 1\), got 1\.0"),
    Row("num-q-zero", ["--num-q", "0"], r"--num-q must be positive, got 0"),
    Row("policy-delay-zero", ["--policy-delay", "0"], r"--policy-delay must be positive, got 0"),
    Row("target-noise-negative", ["--target-noise", "-0.2"], r"--target-noise must be >= 0, got -0\.2"),
    Row("q-data-fraction-zero", ["--q-data-fraction", "0"], r"--q-data-fraction must be in \(0, 1\], got 0"),
    Row("q-data-fraction-above-one", ["--q-data-fraction", "1.5"], r"--q-data-fraction must be in \(0, 1\]"),
    Row("total-steps-a-word", ["--total-steps", "ten"], r"--total-steps.*'ten'"),
    # NaN and infinity
    Row("policy-lr-nan", ["--policy-lr", "nan"], r"--policy-lr must be a finite number, got nan"),
    Row("tau-inf", ["--tau", "inf"], r"--tau must be a finite number, got inf"),
    Row("gamma-minus-inf", ["--gamma", "-inf"], r"--gamma must be a finite number"),
    # unknown choices and flags
    Row("noise-type-unknown", ["--noise-type", "foo"], r"--noise-type must be one of gaussian, ou, param, got 'foo'"),
    Row("q-reduce-unknown", ["--q-reduce", "max"], r"argument --q-reduce: invalid choice: 'max'"),
    Row("weights-init-unknown", ["--weights-init", "he"], r"argument --weights-init: invalid choice: 'he'"),
    Row("unknown-flag", ["--learning-rate", "3e-4"], r"--learning-rate"),
    Row("exp-name-path", ["--exp-name", "../evil"], r"--exp-name must be"),
    Row("eval-only-without-checkpoint", ["--eval-only"], r"--eval-only needs --checkpoint"),
    # environments
    Row("env-id-empty", ["--env-id", ""], r"--env-id is empty"),
    Row("env-id-blank", ["--env-id", "   "], r"--env-id is empty"),
    Row("env-id-typo", ["--env-id", "Pendulum-v9"], r"unknown environment id 'Pendulum-v9'; did you mean Pendulum-v1"),
    Row("env-id-discrete", ["--env-id", "CartPole-v1"], r"CartPole-v1 has a Discrete action space"),
    Row("env-id-missing-module", ["--env-id", "no_such_module_xyz:Foo-v0"],
        r"cannot import module 'no_such_module_xyz' for --env-id: ModuleNotFoundError"),
    Row("env-id-empty-module", ["--env-id", ":Foo-v0"], r"cannot import module ''"),
    Row("env-id-relative-module", ["--env-id", ".envs:Foo-v0"], r"cannot import module '\.envs'"),
    # the file system
    Row("runs-dir-under-a-file", ["--runs-dir", "{a_file}/runs"], r"cannot create run folder .*Not a directory"),
    Row("disk-full-at-checkpoint", ["--exp-name", "diskfull", "--total-steps", "800", "--save-buffer"],
        r"at step 400: cannot write checkpoint .*/latest\.pt: File too large; the previous checkpoint \(latest\.pt "
        r"at step 200\) is kept; resume with: python ddpg\.py --resume", fsize="fsize", code=5),
    # checkpoint files
    Row("checkpoint-truncated", ["--eval-only", "--checkpoint", "{truncated}"],
        r"cannot read checkpoint .*truncated\.pt: corrupt or not a checkpoint"),
    Row("checkpoint-empty-file", ["--eval-only", "--checkpoint", "{empty}"], r"cannot read checkpoint .*empty\.pt"),
    Row("checkpoint-random-bytes", ["--resume", "{junk_run}"], r"cannot read checkpoint .*latest\.pt: corrupt"),
    Row("checkpoint-not-ours", ["--eval-only", "--checkpoint", "{a_list}"], r"a_list\.pt is not a ddpg\.py checkpoint"),
    Row("checkpoint-format-as-text", ["--eval-only", "--checkpoint", "{text_format}"], r"is not a ddpg\.py checkpoint"),
    Row("checkpoint-dir-without-checkpoint", ["--eval-only", "--checkpoint", "{empty_dir}"],
        r"checkpoint not found: .*empty_dir/latest\.pt"),
    Row("resume-missing-dir", ["--resume", "{runs}/no-such-run"], r"checkpoint not found: .*no-such-run"),
    Row("resume-loose-file", ["--resume", "{loose}"], r"--resume needs a run folder or a checkpoint inside"),
    Row("resume-finished-run", ["--resume", "{earlier}"], r"run already at step 400 of 400; pass --total-steps"),
    # checkpoints that do not fit
    Row("checkpoint-other-env", ["--env-id", "MountainCarContinuous-v0", "--eval-only", "--checkpoint", "{earlier}"],
        r"was trained on Pendulum-v1, not on MountainCarContinuous-v0"),
    Row("resume-other-env", ["--resume", "{earlier}", "--env-id", "MountainCarContinuous-v0"],
        r"has env-id=Pendulum-v1, but --env-id is MountainCarContinuous-v0"),
    Row("resume-other-hidden-sizes", ["--resume", "{earlier}", "--hidden-sizes", "16", "16"],
        r"has hidden-sizes=\(32, 32\), but --hidden-sizes is \(16, 16\)"),
    Row("resume-other-num-q", ["--resume", "{earlier}", "--num-q", "2"], r"has num-q=1, but --num-q is 2"),
    Row("checkpoint-newer-format", ["--eval-only", "--checkpoint", "{v99}"],
        r"v99\.pt has checkpoint format 99, newer than this ddpg\.py \(format 2\); update ddpg\.py"),
    Row("checkpoint-unknown-setting", ["--eval-only", "--checkpoint", "{new_flag}"],
        r"has settings this ddpg\.py does not know \(shiny_new_flag\)"),
    Row("checkpoint-weights-do-not-fit", ["--env-id", "Pendulum-v1", "--eval-only", "--checkpoint", "{reshaped}"],
        r"is malformed: learner\['nets'\]\['actor\.net\.0\.weight'\] should be \(16, 3\) torch\.float32, got "
        r"\(32, 3\)", base=False),
    # hand-edited checkpoints: validated as a whole before anything is built from them
    Row("ckpt-args-lack-env-id", ["--resume", "{no_env_id}"], r"no_env_id/checkpoints/latest\.pt is malformed: "
        r"its settings lack env_id"),
    Row("ckpt-args-lack-env-id-eval", ["--eval-only", "--checkpoint", "{no_env_id}"], r"its settings lack env_id"),
    Row("ckpt-no-global-step", ["--resume", "{no_global_step}"], r"is malformed: loop\['step'\] is missing"),
    Row("ckpt-global-step-negative", ["--resume", "{negative_step}"], r"loop\['step'\] is not what this ddpg\.py wrote: -5"),
    Row("ckpt-learner-not-a-state-dict", ["--eval-only", "--checkpoint", "{learner_list}"],
        r"is malformed: learner is not what this ddpg\.py wrote: \[1, 2\]"),
    Row("ckpt-learner-lacks-bounds", ["--eval-only", "--checkpoint", "{no_low}"],
        r"is malformed: learner\['nets'\]\['low'\] is missing"),
    Row("ckpt-batch-size-negative", ["--resume", "{batch_negative}"],
        r"its settings fail the flags' checks: --batch-size must be positive, got -1"),
    Row("ckpt-hidden-sizes-a-string", ["--eval-only", "--checkpoint", "{hidden_string}"],
        r"its setting hidden_sizes='abc' is not a tuple"),
    Row("ckpt-gamma-none", ["--resume", "{gamma_none}"], r"its setting gamma=None is not a <class 'float'>"),
    Row("ckpt-buffer-wrong-width", ["--resume", "{buffer_wide}"],
        r"buffer\['obs'\] should be \(402, 3\) torch\.float32, got \(402, 5\)"),
    Row("ckpt-buffer-position-out-of-range", ["--resume", "{buffer_pos}"], r"'buffer' positions do not fit: pos 5000"),
    Row("ckpt-rng-state-empty", ["--resume", "{rng_empty}"], r"is malformed: rng\['exploration'\] is missing"),
    Row("ckpt-obs-wrong-shape", ["--resume", "{obs_wide}"], r"loop\['obs'\] should be \(3,\) float32, got \(7,\)"),
    Row("ckpt-optimizer-junk", ["--resume", "{opt_junk}"],
        r"learner\['actor_opt'\] is not what this ddpg\.py wrote: 'junk'"),
    Row("ckpt-eval-returns-junk", ["--resume", "{evals_junk}"], r"stats\['eval_returns'\] is not what this ddpg\.py"),
    Row("ckpt-obs-dim-zero", ["--eval-only", "--checkpoint", "{obs_dim_zero}"], r"obs_dim/act_dim must be positive"),
    # values that can never work
    Row("buffer-size-one", ["--buffer-size", "1", "--batch-size", "1", "--start-steps", "1"],
        r"--buffer-size must be at least 2"),
    Row("hidden-sizes-beyond-int64", ["--hidden-sizes", str(2**64)], r"--hidden-sizes is too large for torch"),
    Row("eval-episodes-beyond-numpy", ["--eval-episodes", str(2**62)], r"--eval-episodes is too large"),
    Row("total-steps-huge", ["--total-steps", str(10**30)], r"--total-steps is too large"),
    # broken environments: spaces DDPG cannot use, refused before the run folder exists
    env_row("env-scalar-action", "ScalarAction", r"has actions of shape \(\); DDPG needs a flat Box"),
    env_row("env-matrix-action", "MatrixAction", r"has actions of shape \(2, 2\)"),
    env_row("env-zero-size-action", "ZeroSizeAction", r"has actions of shape \(0,\)"),
    env_row("env-zero-size-obs", "ZeroSizeObs", r"needs a flat Box observation space of at least one dimension"),
    env_row("env-image-obs", "ImageObs", r"needs a flat Box observation space"),
    env_row("env-dict-obs", "DictObs", r"needs a flat Box observation space of at least one dimension, got Dict"),
    env_row("env-unbounded-action", "UnboundedAction", r"has unbounded actions"),
    env_row("env-equal-bounds", "EqualBounds", r"low >= high"),
    # broken environments: the wrong API or garbage at the first reset or step (the start-up check)
    env_row("env-reset-returns-obs-only", "ResetObsOnly", r"reset\(\) returned a ndarray array\(\[.*; gymnasium environments return \(observation, info dict\)"),
    env_row("env-reset-info-not-a-dict", "ResetInfoNotDict", r"The second element returned by `env\.reset\(\)` was not a dictionary"),
    env_row("env-old-step-api", "OldStepApi", r"step\(\) returned a tuple of 4; gymnasium environments return"),
    env_row("env-reward-none", "RewardNone", r"step\(\) returned a reward of NoneType None; DDPG needs a number"),
    env_row("env-reward-two-values", "RewardPair", r"step\(\) returned a reward of ndarray"),
    env_row("env-reward-string", "RewardString", r"step\(\) returned a reward of str '1\.0'"),
    env_row("env-obs-wrong-shape", "ObsWrongShape", r"reset\(\) returned an observation of shape \(4,\)"),
    env_row("env-obs-nan", "ObsNaN", r"reset\(\) returned an observation of shape \(3,\).*finite numbers"),
    env_row("env-obs-none", "ObsNone", r"step\(\) returned an observation of shape \(\), dtype object"),
    env_row("env-terminated-none", "TerminatedNone", r"step\(\) returned terminated=None"),
    env_row("env-reset-raises", "ResetRaises", r"reset\(\) raised RuntimeError: cannot connect to the simulator"),
    env_row("env-init-raises", "InitRaises", r"cannot create environment .*RuntimeError: license file not found"),
    env_row("env-init-exits", "InitExits", r"cannot create environment .*SystemExit: this environment needs a display"),
    env_row("env-step-exits", "StepExitsAtOnce", r"step\(\) raised SystemExit: 3"),
    Row("env-module-exits-on-import", ["--env-id", "tests.exits_on_import:Foo-v0"],
        r"cannot import module 'tests\.exits_on_import' for --env-id: SystemExit: exits_on_import"),
    # broken environments: faults in the middle of a run keep a resumable run
    mid_run("env-step-raises-mid-run", "StepRaisesAt150", r"^error: the environment failed at step 150: step\(\) "
            r"raised RuntimeError: the simulator exploded; latest\.pt saved at step 149; resume with: python ddpg\.py "
            r"--resume \S+env-step-raises-mid-run", saved=149),
    mid_run("env-reward-none-mid-run", "RewardNoneAt150", r"failed at step 150: step\(\) returned a reward of NoneType",
            saved=149),
    mid_run("env-obs-shape-changes-mid-run", "ObsShapeChangesAt150",
            r"failed at step 150: step\(\) returned an observation of shape \(2,\)", saved=149),
    mid_run("env-step-exits-mid-run", "StepExitsAt150", r"failed at step 150: step\(\) raised SystemExit: fatal", saved=149),
    mid_run("env-reset-raises-mid-run", "ResetRaisesAtEpisode3",
            r"failed at step 150: reset\(\) raised RuntimeError: the scene failed to load; latest\.pt saved at step 150",
            saved=150),
    mid_run("env-fails-in-evaluation", "EvalRaises", r"failed at step 200 \(evaluation\): reset\(\) raised "
            r"RuntimeError: evaluation scene missing; latest\.pt saved at step 200", saved=200),
    # a disk that fills up: TensorBoard's writer fails too, and says so in a warning, not a traceback
    Row("disk-full-everywhere", ["--exp-name", "fullest"], r"at step 200: cannot write checkpoint .*latest\.pt: File "
        r"too large; the previous checkpoint \(none written yet\) is kept", fsize="tiny", code=5, warnings=True),
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """An earlier finished run (with its buffer) in the runs folder every row uses, the bad files
    derived from its checkpoint, then every row of ROWS in one driver process."""
    root = tmp_path_factory.mktemp("hostile")
    runs = root / "runs"
    rc, out, err = run_cli([*PENDULUM_TINY, "--save-buffer", "--runs-dir", runs])
    assert rc == 0, err
    earlier = single_run_dir(runs)
    latest_path = earlier / "checkpoints" / "latest.pt"
    latest = load(latest_path)
    data = latest_path.read_bytes()
    paths = {"runs": runs, "earlier": earlier}
    for name, content in [("a_file", b"a regular file\n"), ("truncated.pt", data[: len(data) // 2]),
                          ("empty.pt", b""), ("loose.pt", data)]:
        (root / name).write_bytes(content)
        paths[name.split(".")[0]] = root / name
    paths["junk_run"] = root / "junk_run"
    (paths["junk_run"] / "checkpoints").mkdir(parents=True)
    (paths["junk_run"] / "checkpoints" / "latest.pt").write_bytes(random.Random(0).randbytes(50_000))
    paths["empty_dir"] = root / "empty_dir"
    paths["empty_dir"].mkdir()
    edited = {"a_list": [1, 2, 3], "text_format": {**latest, "format_version": "1"},
              "v99": {**latest, "format_version": 99},
              "new_flag": {**latest, "args": {**latest["args"], "shiny_new_flag": True}},
              "reshaped": {**latest, "args": {**latest["args"], "hidden_sizes": [16, 16]}}}
    for name, obj in edited.items():
        torch.save(obj, root / f"{name}.pt")
        paths[name] = root / f"{name}.pt"
    # disk full: latest.pt at step 200 fits under the limit, the bigger one at step 400 does not
    # (the buffer grows by 200 transitions, about 5 KB; the earlier run's latest.pt is a step-400 one)
    limits = {"fsize": latest_path.stat().st_size - 2000, "tiny": 6000}
    # hand-edited checkpoints: resume rows get a run folder, eval-only rows the file
    args = latest["args"]
    bad = {"no_env_id": {**latest, "args": {k: v for k, v in args.items() if k != "env_id"}},
           "no_global_step": {**latest, "loop": {k: v for k, v in latest["loop"].items() if k != "step"}},
           "negative_step": {**latest, "loop": {**latest["loop"], "step": -5}},
           "learner_list": {**latest, "learner": [1, 2]},
           "no_low": {**latest, "learner": {**latest["learner"],
                                            "nets": {k: v for k, v in latest["learner"]["nets"].items() if k != "low"}}},
           "batch_negative": {**latest, "args": {**args, "batch_size": -1}},
           "hidden_string": {**latest, "args": {**args, "hidden_sizes": "abc"}},
           "gamma_none": {**latest, "args": {**args, "gamma": None}},
           "buffer_wide": {**latest, "buffer": {**latest["buffer"], "obs": torch.zeros(402, 5)}},
           "buffer_pos": {**latest, "buffer": {**latest["buffer"], "pos": 5000, "capacity": 1000}},
           "rng_empty": {**latest, "rng": {}},
           "obs_wide": {**latest, "loop": {**latest["loop"], "obs": np.zeros(7, dtype=np.float32)}},
           "opt_junk": {**latest, "learner": {**latest["learner"], "actor_opt": "junk"}},
           "evals_junk": {**latest, "stats": {**latest["stats"], "eval_returns": "junk"}},
           "obs_dim_zero": {**latest, "obs_dim": 0}}
    for name, obj in bad.items():
        (root / name / "checkpoints").mkdir(parents=True)
        torch.save(obj, root / name / "checkpoints" / "latest.pt")
        paths[name] = root / name

    rows = [{"id": r.id, "argv": [a.format(**paths) for a in (BASE if r.base else []) + r.argv],
             "fsize": limits[r.fsize] if r.fsize else None, "env": r.env} for r in ROWS]
    spec = {"repo": str(REPO), "ddpg": str(REPO / "ddpg.py"), "tmp": str(root), "guard": str(earlier),
            "timeout": 120, "rows": rows, "result": str(root / "results.json")}
    (root / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-c", FORK_DRIVER, str(root / "spec.json")], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((root / "results.json").read_text())
    return types.SimpleNamespace(results=results, paths=paths, runs=runs, earlier=earlier, latest=latest,
                                 limits=limits)


def test_hostile_table_is_large():
    assert len(ROWS) >= 60 and len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_input_is_one_error_line_and_touches_no_earlier_run(row, hostile):
    res = hostile.results[row.id]
    stderr = res["stderr"]
    if row.warnings:
        stderr = "\n".join(ln for ln in stderr.splitlines() if not ln.startswith("warning: "))
    line = assert_one_error_line(res["rc"], stderr, row.code)
    assert re.search(row.match, line), line
    assert res["guard"] == hostile.results["baseline"], "the earlier run folder was changed"


def test_refused_input_leaves_no_run_folder(hostile):
    """Every row refused with exit 2 ran before a run folder existed: the runs folder holds the earlier run and
    the folders of the rows that fail mid-run (exit 4 and 5, their exp-names), nothing else."""
    mid_run_names = {r.argv[r.argv.index("--exp-name") + 1] for r in ROWS if r.code != 2}
    for folder in hostile.runs.iterdir():
        if folder.is_dir() and folder != hostile.earlier:
            assert folder.name.split("__")[1] in mid_run_names, f"left behind: {folder.name}"


@pytest.mark.parametrize("row", [r for r in ROWS if "tests.broken_envs:" in " ".join(r.argv)],
                         ids=lambda r: r.id)
def test_broken_env_runs_leave_no_folder_or_a_resumable_one(row, hostile):
    """Refused at start-up: no run folder. A fault mid-run: summary.json says env-error, and latest.pt holds
    the last consistent step, without the episode in progress (the environment's state is suspect)."""
    folders = list(hostile.runs.glob(f"*__{row.id}__*"))
    if row.saved is None:
        assert folders == [], f"a run folder was left behind: {folders}"
        return
    (folder,) = folders
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "env-error" and summary["final_eval_return_mean"] is None
    kept = load(folder / "checkpoints" / "latest.pt")
    assert kept["loop"]["step"] == row.saved and kept["env_pickle"] is None
    assert "final.pt" not in {p.name for p in (folder / "checkpoints").iterdir()}


def test_disk_full_keeps_the_previous_checkpoint(hostile):
    (run_dir,) = hostile.runs.glob("Pendulum-v1__diskfull__*")
    ckpt_dir = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["latest.pt"], "a temporary file was left behind"
    kept = load(ckpt_dir / "latest.pt")
    assert kept["loop"]["step"] == 200 and kept["buffer"]["added"] == 200
    assert (ckpt_dir / "latest.pt").stat().st_size < hostile.limits["fsize"]
    # config and events were written under the same limit: only the checkpoint failed
    assert json.loads((run_dir / "config.json").read_text())["exp_name"] == "diskfull"
    assert [s for s, _ in scalar_tags(run_dir)["eval/return_mean"]] == [200, 400]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "write-error"


def test_saved_buffer_costs_its_transitions_not_its_capacity(hostile):
    """latest.pt with the buffer minus final.pt without it: (4 obs_dim + 4 act_dim + 9) bytes per
    written slot (float32 obs once, action, reward, terminated; bool valid) plus pickle overhead,
    even though the buffer's capacity is 1M slots."""
    ckpt_dir = hostile.earlier / "checkpoints"
    slots = hostile.latest["buffer"]["high"]
    assert slots == 402  # 400 transitions, 2 episodes, each ending with its own last-observation slot
    per_slot = 4 * 3 + 4 * 1 + 4 + 4 + 1  # Pendulum: obs 3, action 1
    extra = (ckpt_dir / "latest.pt").stat().st_size - (ckpt_dir / "final.pt").stat().st_size
    assert slots * per_slot <= extra <= slots * per_slot + 4096, extra


# ---------------------------------------------------------------------------------------------
# Faults mid-run, environments that cannot be pickled, failing output, signals at odd moments
# ---------------------------------------------------------------------------------------------

TINY_BROKEN = ["--total-steps", "400", "--start-steps", "100", "--batch-size", "32", "--eval-every", "200",
               "--eval-episodes", "1", "--save-every", "200", "--hidden-sizes", "32", "32"]


def test_a_run_stopped_by_an_environment_fault_resumes_to_the_end(tmp_path):
    args = ["--env-id", BROKEN.format("StepRaisesAt150"), *TINY_BROKEN, "--runs-dir", tmp_path]
    rc, _, err = run_cli(args, env=FAULT)
    line = assert_one_error_line(rc, err, 4)
    assert "failed at step 150" in line and "latest.pt saved at step 149" in line
    run_dir = single_run_dir(tmp_path)
    rc, _, err = run_cli(["--resume", run_dir])  # the fault is gone: the run continues
    assert rc == 0, err
    assert "the episode in progress at the interruption is dropped" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 400
    assert [s for s, _ in summary["eval_returns"]] == [200, 400]


def test_an_unpicklable_environment_still_checkpoints_and_resumes(tmp_path):
    args = ["--env-id", BROKEN.format("Unpicklable"), *TINY_BROKEN, "--runs-dir", tmp_path]
    rc, _, err = run_cli(args)
    assert rc == 0, err
    assert stderr_lines(err) == ["warning: the environment's state cannot be pickled (TypeError: cannot pickle "
                                 "'_thread.lock' object); checkpoints keep everything else, and a resume starts a "
                                 "new episode"]
    run_dir = single_run_dir(tmp_path)
    latest = load(run_dir / "checkpoints" / "latest.pt")
    assert latest["loop"]["step"] == 400 and latest["env_pickle"] is None
    rc, _, err = run_cli(["--resume", run_dir, "--total-steps", "600"])
    assert rc == 0, err
    assert "the episode in progress at the interruption is dropped" in err
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 600


@pytest.mark.parametrize("junk", ["bytes", "missing-class"])
def test_a_junk_environment_pickle_drops_the_episode_and_resumes(junk, tmp_path):
    rc, _, err = run_cli([*PENDULUM_TINY, "--runs-dir", tmp_path])
    assert rc == 0, err
    run_dir = single_run_dir(tmp_path)
    path = run_dir / "checkpoints" / "latest.pt"
    ckpt = load(path)
    assert ckpt["env_pickle"] is not None  # Pendulum's state pickles: the junk replaces a real one
    ckpt["env_pickle"] = (b"\x80\x04junk" if junk == "bytes" else
                          pickle.dumps(types.SimpleNamespace()).replace(b"types", b"typez"))
    ckpt["env_signature"] = ddpg.signature(ckpt["env_pickle"])  # junk this user wrote: it does get unpickled
    torch.save(ckpt, path)
    rc, _, err = run_cli(["--resume", run_dir, "--total-steps", str(ckpt["loop"]["step"] + 200)])
    assert rc == 0, err
    lines = stderr_lines(err)
    cause = "UnpicklingError" if junk == "bytes" else "ModuleNotFoundError: No module named 'typez'"
    assert f"warning: cannot restore the environment from the checkpoint ({cause}" in err, err
    assert any("the episode in progress at the interruption is dropped" in line for line in lines), err
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


def test_stdout_on_a_full_disk_or_a_closed_pipe_never_stops_training(tmp_path):
    for i, target in enumerate(["/dev/full", "closed pipe"]):
        runs = tmp_path / str(i)
        cmd = [sys.executable, str(REPO / "ddpg.py"), *map(str, PENDULUM_TINY), "--log-every", "100",
               "--runs-dir", str(runs)]
        if target == "/dev/full":
            with open("/dev/full", "w") as full:
                proc = subprocess.run(cmd, cwd=REPO, env=cli_env(), stdout=full, stderr=subprocess.PIPE, text=True,
                                      timeout=300)
            rc, err = proc.returncode, proc.stderr
        else:
            proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            proc.stdout.close()  # `| head -0`: the first line written meets a broken pipe
            err = proc.stderr.read()
            rc = proc.wait(timeout=300)
        assert rc == 0 and err.strip() == "", (target, rc, err)
        run_dir = single_run_dir(runs)
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
        assert (run_dir / "checkpoints" / "final.pt").is_file()


def test_help_into_a_closed_pipe_is_quiet(tmp_path):
    proc = subprocess.Popen([sys.executable, str(REPO / "ddpg.py"), "--help"], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and err.strip() == "", err


def test_ctrl_c_while_importing_leaves_quietly(spawn):
    proc = spawn(["--help"])
    deadline = time.time() + 60  # wait until torch is loading (seconds): then ddpg.py's first lines have run
    while "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err == "", (proc.returncode, err)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_start_up_stops_at_once_and_leaves_no_run_folder(signum, tmp_path, spawn):
    marker = tmp_path / "constructing"
    runs = tmp_path / "runs"
    proc = spawn(["--env-id", BROKEN.format("SlowInit"), *TINY_BROKEN, "--runs-dir", runs],
                 {"BROKEN_ENV_MARKER": str(marker)})
    deadline = time.time() + 120
    while not marker.exists():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    t0 = time.time()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert time.time() - t0 < 5
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum
    assert stderr_lines(err) == [f"interrupted ({name}) during start-up; nothing was saved"]
    assert not runs.exists() or list(runs.iterdir()) == []


def test_sigterm_stops_an_evaluation_that_never_ends_and_saves(tmp_path, spawn):
    """Pendulum-v1 with a time limit of a billion steps: the evaluation at step 200 never ends."""
    proc = spawn(["--env-id", "Pendulum-v1", "--max-episode-steps", "1000000000", *TINY_BROKEN, "--log-every", "100",
                  "--runs-dir", tmp_path])
    for line in proc.stdout:
        if line.startswith("step 100/"):
            break
    time.sleep(3)  # steps 100 to 200 take well under a second; then the evaluation runs on
    assert proc.poll() is None
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert time.time() - t0 < 5 and proc.returncode == 143, (proc.returncode, err)
    run_dir = single_run_dir(tmp_path)
    assert stderr_lines(err) == [f"interrupted at step 200; resume with: python ddpg.py --resume {run_dir}"]
    assert load(run_dir / "checkpoints" / "latest.pt")["loop"]["step"] == 200
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["eval_returns"] == []


def test_the_resume_command_is_quoted_for_a_runs_folder_with_a_space(tmp_path, spawn):
    runs = tmp_path / "my runs"
    proc = spawn([*EXACT, "--total-steps", "100000", "--runs-dir", runs])
    rc, out, err = interrupt_after_line(proc, "step 400/", signal.SIGINT)
    assert rc == 130, err
    (line,) = [ln for ln in stderr_lines(err) if "resume with" in ln]
    command = line.split("resume with: ", 1)[1]
    assert shlex.split(command)[-1] == str(single_run_dir(runs))


def test_two_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)
    args = ddpg.Args(env_id="Pendulum-v1", runs_dir=str(tmp_path))
    first, second, third = (ddpg.new_run_dir(args) for _ in range(3))
    assert [p.name for p in (first, second, third)] == [
        "Pendulum-v1__ddpg__1__1800000000", "Pendulum-v1__ddpg__1__1800000000-2", "Pendulum-v1__ddpg__1__1800000000-3"]


def test_an_unexpected_exception_is_one_line_with_its_traceback_in_a_file(tmp_path, monkeypatch, capsys):
    """A bug (here: the update raises at its 50th call): exit 1, one error line naming the step and pointing to
    error.log, summary.json 'crashed', the last latest.pt kept (not rewritten from a state that may be torn)."""
    original, calls = ddpg.Learner.update, []

    def update(self, batch):
        calls.append(1)
        if len(calls) == 250:
            raise RuntimeError("a bug in an edited update")
        return original(self, batch)

    monkeypatch.setattr(ddpg.Learner, "update", update)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        code = ddpg.main([*map(str, PENDULUM_TINY), "--runs-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    err = capsys.readouterr().err
    run_dir = single_run_dir(tmp_path)
    step = 100 + 250  # 100 warm-up steps, then one update per step
    line = assert_one_error_line(code, err, 1)
    assert line == (f"error: unexpected RuntimeError at step {step}: a bug in an edited update (traceback in "
                    f"{run_dir / 'error.log'}); last checkpoint: latest.pt at step 200; resume with: python ddpg.py "
                    f"--resume {run_dir}")
    assert "Traceback" in (run_dir / "error.log").read_text() and "a bug in an edited update" in (
        run_dir / "error.log").read_text()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "crashed"
    assert load(run_dir / "checkpoints" / "latest.pt")["loop"]["step"] == 200
