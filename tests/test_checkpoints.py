"""Checkpoints as parts (issue 24): each part saves itself, a checkpoint is checked against the same parts freshly
built, old checkpoints keep working after an edit of ddpg.py, and loading a checkpoint never runs code from it."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ddpg
from conftest import REPO, TINY, assert_one_error_line, cli_command, run_cli, single_run_dir

PENDULUM_TINY = ["--env-id", "Pendulum-v1", *TINY]
FORMAT1 = REPO / "tests" / "data" / "format1-run"  # written by ddpg.py at 30de86e: see tests/data/README.md


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    rc, _, err = run_cli([*PENDULUM_TINY, "--save-buffer", "--runs-dir", runs])
    assert rc == 0, err
    return single_run_dir(runs)


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def same(a, b) -> bool:
    """Two nested states equal to the bit (tensors and arrays exactly)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


class Payload:
    """A pickle that runs code when loaded: it creates the file at `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


# ---------------------------------------------------------------------------------------------
# each part saves and restores itself
# ---------------------------------------------------------------------------------------------

def test_every_part_round_trips_through_its_own_state_dict():
    args = ddpg.Args(hidden_sizes=(8, 8), buffer_size=50, batch_size=4, start_steps=4, noise_type="ou")
    env = ddpg.make_env("Pendulum-v1")
    learner, buffer, noise = ddpg.make_parts(args, env)
    rng = np.random.default_rng(3)
    obs, _ = env.reset(seed=0)
    for t in range(20):
        act = rng.uniform(-2, 2, 1)
        next_obs, rew, term, trunc, _ = env.step(act.astype(np.float32))
        buffer.add(obs, act, rew, term, next_obs, episode_end=t == 9)
        obs = next_obs
        noise.sample(rng)
    learner.update(buffer.sample(4))
    twin_learner, twin_buffer, twin_noise = ddpg.make_parts(args, env)
    for part, twin in [(learner, twin_learner), (buffer, twin_buffer), (noise, twin_noise)]:
        state = part.state_dict()
        assert ddpg.state_problem(state, twin.state_dict(), "part", []) is None
        twin.load_state_dict(state)
        assert same(twin.state_dict(), state)
    assert (twin_buffer.pos, twin_buffer.high, twin_buffer.added) == (buffer.pos, buffer.high, buffer.added) == (21, 22, 20)
    assert np.array_equal(twin_noise.x, noise.x) and twin_learner.n_updates == 1
    env.close()


def test_a_new_buffer_array_is_saved_checked_and_restored_with_no_other_edit():
    """What an idea such as prioritized replay adds: one more array. The buffer's own state_dict carries it,
    the checker compares it against a fresh buffer, an older state without it loads and keeps its zeros."""
    buf = ddpg.ReplayBuffer(10, 3, 1, torch.device("cpu"))
    for i in range(4):
        buf.add(np.full(3, i, np.float32), np.zeros(1), 1.0, False, np.full(3, i + 1, np.float32), episode_end=False)
    old_state = buf.state_dict()  # before the idea
    buf.priorities = torch.arange(10, dtype=torch.float32)
    state = buf.state_dict()
    assert state["priorities"].tolist() == [0, 1, 2, 3, 4]  # the written slots, like every array
    fresh = ddpg.ReplayBuffer(10, 3, 1, torch.device("cpu"))
    fresh.priorities = torch.zeros(10)
    missing = []
    assert ddpg.state_problem(state, fresh.state_dict(), "buffer", missing) is None and missing == []
    assert ddpg.state_problem(old_state, fresh.state_dict(), "buffer", missing) is None
    assert missing == ["buffer['priorities']"]
    fresh.load_state_dict(ddpg.filled(old_state, fresh.state_dict()))
    assert fresh.high == 5 and fresh.priorities.sum() == 0 and torch.equal(fresh.obs, buf.obs)
    wide = {**state, "priorities": torch.zeros(5, 2)}
    assert ddpg.state_problem(wide, fresh.state_dict(), "buffer", []) == (
        "buffer['priorities'] should be (5,) torch.float32, got (5, 2) torch.float32")


# ---------------------------------------------------------------------------------------------
# old runs after an edit: missing flags take their defaults; a file from another ddpg.py may lack state
# ---------------------------------------------------------------------------------------------

def test_a_checkpoint_without_a_flag_of_this_file_resumes_and_evaluates_with_its_default(pendulum, tmp_path):
    run_dir = copy_run(pendulum, tmp_path)
    for name in ("latest.pt", "final.pt"):
        path = run_dir / "checkpoints" / name
        ckpt = load(path)
        del ckpt["args"]["q_data_fraction"], ckpt["args"]["ou_dt"]  # as if written before these flags existed
        torch.save(ckpt, path)
    rc, out, err = run_cli(["--resume", run_dir, "--total-steps", "600"])
    assert rc == 0, err
    warning = [ln for ln in err.splitlines() if "was written before ddpg.py had" in ln]
    assert len(warning) == 1 and "--q-data-fraction (takes its default 1.0)" in warning[0] and "--ou-dt" in warning[0]
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 600
    rc, out, err = run_cli(["--env-id", "Pendulum-v1", "--eval-only", "--checkpoint", run_dir, "--eval-episodes", "1"])
    assert rc == 0 and "mean return" in out, err
    assert repr(ddpg.load_policy(run_dir)).startswith("Policy(Pendulum-v1, step 600")


def test_a_missing_shape_flag_or_an_unknown_flag_is_still_refused(pendulum, tmp_path):
    for edit, expected in [(lambda a: a.pop("num_q"), "its settings lack num_q"),
                           (lambda a: a.update(shiny=1), "has settings this ddpg.py does not know (shiny)")]:
        run_dir = copy_run(pendulum, tmp_path / expected[:8].replace(" ", "_"))
        path = run_dir / "checkpoints" / "latest.pt"
        ckpt = load(path)
        edit(ckpt["args"])
        torch.save(ckpt, path)
        line = assert_one_error_line(*run_cli(["--resume", run_dir, "--total-steps", "600"])[::2])
        assert expected in line, line


def test_state_a_file_from_another_ddpg_py_lacks_keeps_its_initial_value(pendulum, tmp_path):
    """Written by this very file, a missing entry is a malformed checkpoint (the hostile table); written by
    another version of ddpg.py (its `source` differs), it is state that version did not have: a warning."""
    run_dir = copy_run(pendulum, tmp_path)
    path = run_dir / "checkpoints" / "latest.pt"
    ckpt = load(path)
    del ckpt["loop"]["ep_length"], ckpt["buffer"]["terminated"]
    torch.save({**ckpt, "source": "0123456789abcdef"}, path)
    rc, _, err = run_cli(["--resume", run_dir, "--total-steps", "600"])
    assert rc == 0, err
    assert "lacks loop['ep_length'], buffer['terminated']; initial values are used for those" in err, err
    torch.save(ckpt, path)  # the same file, as this ddpg.py's own
    line = assert_one_error_line(*run_cli(["--resume", run_dir, "--total-steps", "800"])[::2])
    assert "is malformed: loop['ep_length'] is missing" in line, line


def test_a_format_1_checkpoint_resumes_evaluates_and_loads(tmp_path):
    run_dir = copy_run(FORMAT1, tmp_path)
    policy = ddpg.load_policy(run_dir)
    assert policy.step == 600 and policy(np.zeros(3)).shape == (1,)
    rc, out, err = run_cli(["--env-id", "Pendulum-v1", "--eval-only", "--checkpoint", run_dir, "--eval-episodes", "2"])
    assert rc == 0 and "over 2 episodes" in out, err
    rc, out, err = run_cli(["--resume", run_dir, "--total-steps", "900"])
    assert rc == 0, err
    assert "warning" not in err, err  # a complete format-1 checkpoint lacks nothing
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 900
    latest = load(run_dir / "checkpoints" / "latest.pt")
    assert latest["format_version"] == ddpg.CHECKPOINT_FORMAT and latest["loop"]["step"] == 900
    assert latest["learner"]["n_updates"] == 900 - 200  # the buffer came back: no refill


# ---------------------------------------------------------------------------------------------
# loading runs no code from the file
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["eval-only", "load_policy", "resume"])
def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(how, pendulum, tmp_path):
    run_dir = copy_run(pendulum, tmp_path)
    marker = tmp_path / "payload-ran"
    for name in ("latest.pt", "final.pt"):
        ckpt = load(run_dir / "checkpoints" / name)
        ckpt["noise"] = Payload(marker)
        torch.save(ckpt, run_dir / "checkpoints" / name)
    if how == "load_policy":
        with pytest.raises(ddpg.UserError, match=r"holds Python objects \(\S+\), not only data; ddpg\.py loads"):
            ddpg.load_policy(run_dir)
    else:
        argv = (["--env-id", "Pendulum-v1", "--eval-only", "--checkpoint", run_dir] if how == "eval-only"
                else ["--resume", run_dir, "--total-steps", "600"])
        line = assert_one_error_line(*run_cli(argv)[::2])
        assert "holds Python objects" in line and "loads data only" in line, line
    assert not marker.exists(), "the payload ran"


def test_an_environment_pickle_this_user_did_not_sign_is_never_unpickled(pendulum, tmp_path):
    """The one unpickling of a resume, the episode in progress: only what this user signed on this machine."""
    run_dir = copy_run(pendulum, tmp_path)
    marker = tmp_path / "payload-ran"
    path = run_dir / "checkpoints" / "latest.pt"
    ckpt = load(path)
    ckpt["env_pickle"] = pickle.dumps(Payload(marker))  # with the signature of the real one: it does not match
    torch.save(ckpt, path)
    rc, _, err = run_cli(["--resume", run_dir, "--total-steps", "600"])
    assert rc == 0, err
    assert "not signed by this user on this machine, so not unpickled" in err and not marker.exists()
    assert "the episode in progress at the interruption is dropped" in err


def test_a_signed_environment_pickle_restores_the_episode_and_another_key_refuses_it(pendulum, tmp_path):
    run_dir = copy_run(pendulum, tmp_path)
    rc, _, err = run_cli(["--resume", run_dir, "--total-steps", "600"])
    assert rc == 0 and "dropped" not in err, err  # signed here: the episode goes on
    run_dir = copy_run(pendulum, tmp_path / "elsewhere")
    rc, _, err = run_cli(["--resume", run_dir, "--total-steps", "600"], env={"XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert rc == 0 and "not signed by this user on this machine" in err, err  # another machine's key


# ---------------------------------------------------------------------------------------------
# a fault during set-up
# ---------------------------------------------------------------------------------------------

def test_a_fault_in_an_edited_learner_at_start_up_is_one_error_line_with_the_traceback_in_a_file(tmp_path):
    code = ("import sys, ddpg\n"
            "def broken(self, *a, **k): raise ValueError('an edited Learner.__init__ fails')\n"
            "ddpg.Learner.__init__ = broken\n"
            "sys.exit(ddpg.main(sys.argv[1:]))\n")
    cmd, env = cli_command([*PENDULUM_TINY, "--runs-dir", tmp_path / "runs"])
    proc = subprocess.run([sys.executable, "-c", code, *cmd[2:]], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    line = assert_one_error_line(proc.returncode, proc.stderr, code=1)
    assert line.startswith("error: unexpected ValueError during start-up: an edited Learner.__init__ fails "
                           "(traceback in "), line
    log = Path(line.split("(traceback in ")[1].rstrip(")"))
    assert "in broken" in log.read_text() and "in setup" in log.read_text()
    os.unlink(log)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
