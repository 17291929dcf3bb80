"""Behaviour tests: `python ddpg.py ...` in a subprocess on tiny budgets."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import ddpg
from conftest import (REPO, TINY, assert_one_error_line, cli_command, read_events, run_cli, scalar_tags,
                      single_run_dir, wandb_records)

INTERFACE_FLAGS = """
--env-id --seed --total-steps --start-steps --batch-size --buffer-size --gamma --tau --policy-lr --value-lr
--hidden-sizes --updates-per-step --target-update-interval --noise-std --eval-every --eval-episodes --save-every
--exp-name --cuda --no-cuda --torch-deterministic --track --wandb-project --wandb-entity --capture-video
--max-episode-steps --checkpoint --eval-only --runs-dir
--noise-type --ou-theta --ou-dt --param-noise-target-std --param-noise-adapt-interval --param-noise-adapt-coef
--target-noise --target-noise-clip --num-q --q-reduce --q-data-fraction --policy-delay --actor-layer-norm
--critic-layer-norm --weights-init --bias-init
""".split()

PENDULUM_TINY = ["--env-id", "Pendulum-v1", *TINY, "--log-every", "100", "--torch-deterministic"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("pendulum_runs")
    rc, out, err = run_cli([*PENDULUM_TINY, "--runs-dir", runs])
    assert rc == 0, err
    return single_run_dir(runs), out, err


@pytest.fixture(scope="module")
def asym_run(tmp_path_factory):
    """A run on the env with bounds low=[-1, 0], high=[3, 2]: a checkpoint of another environment."""
    runs = tmp_path_factory.mktemp("asym_runs")
    rc, out, err = run_cli(["--env-id", "tests.envs:DDPGTestAsym-v0", *TINY, "--total-steps", "300",
                            "--eval-every", "300", "--save-every", "300",
                            "--runs-dir", runs])
    assert rc == 0, err
    return single_run_dir(runs)


# ---------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------


def test_help_lists_every_flag():
    rc, out, err = run_cli(["--help"])
    assert rc == 0, err
    missing = [f for f in INTERFACE_FLAGS if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", out)]
    assert not missing, f"--help lacks {missing}"
    # every Args field is a flag, and every field has a help line
    for field in dataclasses.fields(ddpg.Args):
        assert f"--{field.name.replace('_', '-')}" in out, field.name


# ---------------------------------------------------------------------------------------------
# End to end on Pendulum-v1
# ---------------------------------------------------------------------------------------------


def test_end_to_end_tensorboard_tags(pendulum_run):
    run_dir, _, _ = pendulum_run
    tags = scalar_tags(run_dir)
    for tag in ["losses/q_loss", "losses/actor_loss", "losses/q_mean", "charts/episodic_return",
                "charts/episodic_length", "eval/return_mean", "charts/sps"]:
        assert tags.get(tag), f"no scalar {tag} in the events; tags: {sorted(tags)}"
        assert all(math.isfinite(v) for _, v in tags[tag]), tag
    assert any(t.startswith("hyperparameters") for t in tags), sorted(tags)
    # Pendulum episodes are 200 steps; evaluation at 200 and 400; losses from step 200 on (every 100)
    assert [s for s, _ in tags["charts/episodic_return"]] == [200, 400]
    assert [v for _, v in tags["charts/episodic_length"]] == [200, 200]
    assert [s for s, _ in tags["eval/return_mean"]] == [200, 400]
    assert [s for s, _ in tags["losses/q_loss"]] == [200, 300, 400]
    assert all(v > 0 for _, v in tags["charts/sps"])
    # the logged evaluation is what the saved policy scores: an independent rollout of final.pt's actor
    # (gymnasium directly, ddpg.py's evaluation seeds: seed + 100000) gives the same return
    final = ddpg.load_checkpoint(run_dir / "checkpoints" / "final.pt")
    state = {k[len("actor."):]: v for k, v in final["learner"]["nets"].items() if k.startswith("actor.")}
    env, total = gym.make("Pendulum-v1"), 0.0
    obs, _ = env.reset(seed=1 + 100_000)
    for _ in range(200):
        h = torch.as_tensor(obs, dtype=torch.float32)
        for i in range(0, 6, 2):  # Linear, ReLU, Linear, ReLU, Linear, tanh, scaled to [-2, 2]
            h = h @ state[f"net.{i}.weight"].T + state[f"net.{i}.bias"]
            h = torch.relu(h) if i < 4 else 2.0 * torch.tanh(h)
        obs, reward, terminated, truncated, _ = env.step(h.double().numpy())
        total += float(reward)
    assert terminated is False and truncated is True
    (step, logged), = [t for t in tags["eval/return_mean"] if t[0] == 400]
    assert logged == pytest.approx(total, rel=1e-4, abs=1e-3)


def test_hyperparameter_table_holds_every_flag_and_value(pendulum_run):
    """The TensorBoard text 'hyperparameters' is a markdown table with one row per flag and its value."""
    run_dir, _, _ = pendulum_run
    texts = [v.tensor.string_val[0].decode() for ev in read_events(run_dir) for v in ev.summary.value
             if v.tag.startswith("hyperparameters")]
    assert len(texts) == 1, texts
    rows = dict(re.findall(r"^\|(\w+)\|(.*)\|$", texts[0], flags=re.M))
    config = json.loads((run_dir / "config.json").read_text())
    assert set(config) <= set(rows), set(config) - set(rows)
    assert rows["env_id"] == "Pendulum-v1" and rows["batch_size"] == "32" and rows["total_steps"] == "400"
    assert rows["noise_type"] == "gaussian" and rows["num_q"] == "1" and rows["hidden_sizes"] == "(32, 32)"


def test_ou_noise_restarts_at_every_episode(tmp_path, monkeypatch):
    """The training loop resets the OU state to mu at each episode start (SB3 once reset it per rollout)."""
    states_at_reset = []
    reset = ddpg.OUNoise.reset

    def recording_reset(self, actor, rng):
        reset(self, actor, rng)
        states_at_reset.append(self.x.copy())

    monkeypatch.setattr(ddpg.OUNoise, "reset", recording_reset)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:  # in-process, to see inside the loop; main() sets torch's global threads and determinism
        rc = ddpg.main(["--env-id", "Pendulum-v1", *TINY, "--noise-type", "ou", "--max-episode-steps", "50",
                        "--runs-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert rc == 0
    summary = json.loads((single_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["episodes"] == 400 // 50
    assert len(states_at_reset) == summary["episodes"] + 1  # the first episode, then one per episode end
    assert all(np.array_equal(x, np.zeros(1)) for x in states_at_reset)


def test_plain_log_lines_when_stdout_is_not_a_terminal(pendulum_run):
    """Captured stdout (CI, nohup): one plain line every --log-every steps with steps/s, returns and ETA."""
    _, out, _ = pendulum_run
    lines = [ln for ln in out.splitlines() if ln.startswith("step ")]
    pattern = (r"step (\d+)/400 \| (-|\d+) steps/s \| last return (-|-?\d+\.\d) \| last eval (-|-?\d+\.\d) \| "
               r"ETA (-|\d\d:\d\d:\d\d)")
    parsed = [re.fullmatch(pattern, ln) for ln in lines]
    assert all(parsed), lines
    assert [int(m[1]) for m in parsed] == [100, 200, 300, 400]
    # steps/s and the ETA are the learning phase's: unknown ('-') until a whole log interval has run in it
    # (steps 1-100 are the random warm-up, which runs many times faster)
    assert parsed[0][2] == "-" and parsed[0][5] == "-"
    assert all(m[2] != "-" and m[5] != "-" for m in parsed[1:])
    parsed = [(m[0], m[1], m[3], m[4]) for m in parsed]
    # no episode has ended at step 100; by step 200 one has, and the evaluation at 200 is shown
    assert parsed[0][2] == "-" and parsed[0][3] == "-" and parsed[1][2] != "-" and parsed[1][3] != "-"
    assert "\r" not in out  # no progress-bar redraws in a file


def test_end_to_end_config_has_all_args(pendulum_run):
    run_dir, _, _ = pendulum_run
    config = json.loads((run_dir / "config.json").read_text())
    assert set(config) == {f.name for f in dataclasses.fields(ddpg.Args)}
    assert config["env_id"] == "Pendulum-v1" and config["total_steps"] == 400 and config["batch_size"] == 32
    assert list(config["hidden_sizes"]) == [32, 32] and config["gamma"] == 0.99


def test_end_to_end_checkpoints_exist_and_load(pendulum_run):
    run_dir, _, _ = pendulum_run
    for name in ["latest.pt", "final.pt"]:
        ckpt = ddpg.load_checkpoint(run_dir / "checkpoints" / name)
        assert ckpt["loop"]["step"] == 400 and ckpt["env_id"] == "Pendulum-v1"
        saved = ckpt["args"]
        args = ddpg.Args(**{**saved, "hidden_sizes": tuple(saved["hidden_sizes"])})
        learner = ddpg.Learner(ckpt["obs_dim"], ckpt["act_dim"], np.array([-2.0]), np.array([2.0]), args)
        learner.load_state_dict(ckpt["learner"])  # strict: every tensor fits
        assert learner.actor(torch.zeros(1, 3)).shape == (1, 1)
    assert not list((run_dir / "checkpoints").glob(".*tmp*")), "temporary checkpoint files left behind"


def test_end_to_end_summary(pendulum_run):
    run_dir, out, _ = pendulum_run
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ["env_id", "seed", "steps", "final_eval_return_mean", "final_eval_return_std", "wall_time_s",
                "learning_sps", "eval_returns"]:
        assert key in summary, key
    assert summary["status"] == "finished"
    assert summary["env_id"] == "Pendulum-v1" and summary["seed"] == 1 and summary["steps"] == 400
    # the final evaluation, recomputed here: final.pt's deterministic policy on Pendulum-v1's episode seed 1 + 100000
    policy, env, ret = ddpg.load_policy(run_dir), gym.make("Pendulum-v1"), 0.0
    obs, _ = env.reset(seed=100_001)
    for t in range(200):
        obs, reward, terminated, truncated, _ = env.step(policy(obs).astype(np.float32))
        ret += float(reward)
        assert not terminated and truncated == (t == 199)
    assert summary["final_eval_return_mean"] == pytest.approx(ret, rel=1e-6, abs=1e-6)
    assert summary["final_eval_return_std"] == 0.0  # one evaluation episode
    assert 0 < summary["wall_time_s"] < 600 and summary["learning_sps"] > 0
    assert [step for step, _ in summary["eval_returns"]] == [200, 400]
    assert summary["eval_returns"][-1][1] == pytest.approx(summary["final_eval_return_mean"])
    assert f"{summary['final_eval_return_mean']:.2f}" in out


def test_eval_only_reproduces_final_evaluation(pendulum_run):
    """Same checkpoint, same evaluation seeds: the printed mean equals the run's final evaluation."""
    run_dir, _, _ = pendulum_run
    summary = json.loads((run_dir / "summary.json").read_text())
    rc, out, err = run_cli(["--env-id", "Pendulum-v1", "--eval-only", "--checkpoint", run_dir / "checkpoints" / "final.pt",
                            "--eval-episodes", "1", "--no-cuda"])
    assert rc == 0, err
    m = re.search(r"mean return (-?[\d.]+) \+- ([\d.]+) over 1 episodes", out)
    assert m, out
    assert float(m.group(1)) == pytest.approx(summary["final_eval_return_mean"], abs=0.01)
    assert float(m.group(2)) == 0.0


def test_determinism_same_seed_same_weights(pendulum_run, tmp_path):
    run_a, _, _ = pendulum_run
    rc, _, err = run_cli([*PENDULUM_TINY, "--runs-dir", tmp_path / "b"])
    assert rc == 0, err
    rc, _, err = run_cli([*PENDULUM_TINY, "--seed", "2", "--runs-dir", tmp_path / "c"])
    assert rc == 0, err
    a, b, c = (load(d / "checkpoints" / "final.pt")
               for d in [run_a, single_run_dir(tmp_path / "b"), single_run_dir(tmp_path / "c")])
    assert a["learner"]["nets"].keys() == b["learner"]["nets"].keys()
    for k in a["learner"]["nets"]:
        assert torch.equal(a["learner"]["nets"][k], b["learner"]["nets"][k]), f"seed 1 twice: {k} differs"
    for opt in ["actor_opt", "critic_opt"]:
        for key, state in a["learner"][opt]["state"].items():
            for name, t in state.items():
                assert torch.equal(t, b["learner"][opt]["state"][key][name]), (opt, key, name)
    weights = [k for k in a["learner"]["nets"] if "weight" in k]
    assert all(not torch.equal(a["learner"]["nets"][k], c["learner"]["nets"][k]) for k in weights), "seed 2 gave equal weights"


# ---------------------------------------------------------------------------------------------
# Eval-only and bad checkpoints
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["other_env", "corrupt", "truncated", "missing"])
def test_eval_only_refuses_bad_checkpoints(kind, asym_run, pendulum_run, tmp_path):
    good = pendulum_run[0] / "checkpoints" / "final.pt"
    if kind == "other_env":
        path = asym_run / "checkpoints" / "final.pt"
    elif kind == "corrupt":
        path = tmp_path / "corrupt.pt"
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        path = tmp_path / "truncated.pt"
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path = tmp_path / "missing.pt"
    rc, out, err = run_cli(["--env-id", "Pendulum-v1", "--eval-only", "--checkpoint", path, "--no-cuda"])
    line = assert_one_error_line(rc, err)
    expected = {"other_env": "DDPGTestAsym-v0", "corrupt": "cannot read checkpoint",
                "truncated": "cannot read checkpoint", "missing": "not found"}[kind]
    assert expected in line, line


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, one line, no traceback, no run folder
# ---------------------------------------------------------------------------------------------

# The table of bad command lines (each one error line, exit 2, no run folder) is test_robustness.py's ROWS:
# one warm interpreter forks a child per row instead of starting a fresh Python for each.


def test_capture_video_without_renderer_is_one_error_line(tmp_path):
    """pygame missing (a module that refuses to import shadows it): one line before any run folder."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "pygame.py").write_text("raise ImportError('pygame is not available here')\n")
    runs = tmp_path / "runs"
    rc, out, err = run_cli(["--env-id", "Pendulum-v1", *TINY, "--capture-video", "--runs-dir", runs],
                           env={"PYTHONPATH": str(fake)})
    line = assert_one_error_line(rc, err)
    assert "--capture-video" in line and "pygame" in line, line
    assert not runs.exists() or not any(runs.iterdir())


# ---------------------------------------------------------------------------------------------
# Logging and video
# ---------------------------------------------------------------------------------------------


def test_track_offline_writes_wandb_folder(tmp_path):
    rc, out, err = run_cli(["--env-id", "Pendulum-v1", *TINY, "--track", "--runs-dir", tmp_path],
                           env={"WANDB_MODE": "offline"})
    assert rc == 0, err
    assert "Weights & Biases disabled" not in err, err
    run_dir = single_run_dir(tmp_path)
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir()) if (run_dir / "wandb").exists() else "no wandb/"
    assert list(offline[0].glob("*.wandb")), "no wandb log file"


def test_track_names_the_wandb_project_and_entity_on_mountaincar(tmp_path):
    """--wandb-project and --wandb-entity reach wandb's run record (offline), here on MountainCarContinuous-v0."""
    rc, out, err = run_cli(["--env-id", "MountainCarContinuous-v0", *TINY, "--max-episode-steps", "100", "--track",
                            "--wandb-project", "ddpg-tests", "--wandb-entity", "our-lab", "--runs-dir", tmp_path],
                           env={"WANDB_MODE": "offline"})
    assert rc == 0, err
    run_dir = single_run_dir(tmp_path)
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    runs = [r.run for r in wandb_records(log) if r.WhichOneof("record_type") == "run"]
    assert runs and runs[0].project == "ddpg-tests" and runs[0].entity == "our-lab", runs[:1]
    assert runs[0].display_name == run_dir.name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["episodes"] == 4  # 400 steps of 100-step episodes


def test_capture_video_writes_mp4(tmp_path):
    rc, out, err = run_cli(["--env-id", "Pendulum-v1", *TINY, "--capture-video", "--runs-dir", tmp_path])
    assert rc == 0, err
    videos = list((single_run_dir(tmp_path) / "videos").rglob("*.mp4"))
    assert videos, "no mp4 under videos/"
    assert all(v.stat().st_size > 1000 for v in videos)
    assert len(videos) == 2  # one per evaluation (steps 200 and 400)


@pytest.mark.skipif(not __import__("ctypes.util").util.find_library("EGL"), reason="no libEGL on this machine")
def test_capture_video_on_mujoco_without_a_display_picks_egl(tmp_path):
    """MuJoCo renders through GLFW, which needs a display: without one (and without MUJOCO_GL) ddpg.py picks EGL,
    so a headless Hopper-v5 run writes its video instead of failing with 'an OpenGL platform library ...'."""
    env = {k: "" for k in ("DISPLAY",)}
    cmd, full_env = cli_command(["--env-id", "Hopper-v5", *TINY, "--total-steps", "200", "--eval-every", "200",
                                 "--save-every", "200", "--max-episode-steps", "30", "--capture-video", "--runs-dir",
                                 tmp_path], env)
    full_env.pop("MUJOCO_GL", None)
    full_env.pop("PYOPENGL_PLATFORM", None)
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    videos = list((single_run_dir(tmp_path) / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000, videos


def test_capture_video_on_pybullet_then_eval_only_video(tmp_path):
    """PyBullet renders headless on the CPU: training evaluations and --eval-only both write mp4s."""
    rc, out, err = run_cli(["--env-id", "HopperBulletEnv-v0", *TINY, "--total-steps", "200", "--eval-every", "200",
                            "--save-every", "200", "--max-episode-steps", "40", "--capture-video", "--runs-dir", tmp_path])
    assert rc == 0, err
    run_dir = single_run_dir(tmp_path)
    trained = list((run_dir / "videos").glob("*.mp4"))
    assert len(trained) == 1 and trained[0].stat().st_size > 1000, trained
    rc, out, err = run_cli(["--env-id", "HopperBulletEnv-v0", "--eval-only", "--checkpoint", run_dir, "--eval-episodes",
                            "2", "--max-episode-steps", "40", "--capture-video", "--no-cuda"])
    assert rc == 0, err
    assert re.search(r"mean return -?\d+\.\d+ \+- \d+\.\d+ over 2 episodes", out), out
    watched = list((run_dir / "videos").glob("eval-only-*/*.mp4"))
    assert len(watched) == 2 and all(v.stat().st_size > 1000 for v in watched), watched


# ---------------------------------------------------------------------------------------------
# Every research option end to end on HopperBulletEnv-v0
# ---------------------------------------------------------------------------------------------

HOPPER_TINY = ["--env-id", "HopperBulletEnv-v0", "--total-steps", "300", "--start-steps", "100", "--batch-size", "32",
               "--hidden-sizes", "32", "32", "--eval-every", "300", "--eval-episodes", "1", "--max-episode-steps", "50",
               "--save-every", "300", "--log-every", "100", "--torch-threads", "1", "--no-cuda"]

OPTIONS = {
    "ou": ["--noise-type", "ou"],
    "param": ["--noise-type", "param", "--param-noise-adapt-interval", "10"],
    "target-noise": ["--target-noise", "0.2", "--target-noise-clip", "0.5"],
    "num-q-3-mean": ["--num-q", "3", "--q-reduce", "mean"],
    "num-q-1-mean": ["--num-q", "1", "--q-reduce", "mean"],
    "q-data-fraction": ["--num-q", "2", "--q-data-fraction", "0.5"],
    "policy-delay": ["--policy-delay", "2"],
    "layer-norms": ["--actor-layer-norm", "--critic-layer-norm"],
    "xavier-zeros": ["--weights-init", "xavier", "--bias-init", "zeros"],
    "uniform-uniform": ["--weights-init", "uniform", "--bias-init", "uniform"],
    "td3": ["--num-q", "2", "--q-reduce", "min", "--target-noise", "0.2", "--target-noise-clip", "0.5",
            "--policy-delay", "2"],
}


# Python as a user's shell starts it: without -u or PYTHONUNBUFFERED (which CI sets), so C's stdout is fully
# buffered and what PyBullet prints from C waits in its buffer (a leak of argv[0]= lines at exit, issue 28)
BUFFERED = {"PYTHONUNBUFFERED": ""}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_research_option_runs_on_hopper(name, tmp_path):
    # PYTHONUNBUFFERED unset, as in a user's shell (CI sets it): C's stdout is then fully buffered
    rc, out, err = run_cli([*HOPPER_TINY, *OPTIONS[name], "--runs-dir", tmp_path], env=BUFFERED)
    assert rc == 0, err
    for chatter in ["pybullet build time", "argv[0]="]:  # PyBullet's C-level prints stay out of the output
        assert chatter not in out + err, (chatter, out, err)
    run_dir = single_run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 300
    assert math.isfinite(summary["final_eval_return_mean"])
    ckpt = load(run_dir / "checkpoints" / "final.pt")
    config = ckpt["args"]
    opts = OPTIONS[name]
    for flag, value in zip(opts, opts[1:] + ["--"]):  # the options reached the run's config
        if flag.startswith("--") and not value.startswith("--"):
            field = flag[2:].replace("-", "_")
            assert str(config[field]) == value or config[field] == type(config[field])(value), (field, config[field])
        elif flag.startswith("--"):
            assert config[flag[2:].replace("-", "_")] is True, flag
    tags = scalar_tags(run_dir)
    assert tags.get("losses/q_loss") and all(math.isfinite(v) for _, v in tags["losses/q_loss"])
    critic = {k: v for k, v in ckpt["learner"]["nets"].items() if k.startswith("critic.")}
    assert critic["critic.weights.0"].shape[0] == config["num_q"]
    if name == "layer-norms":
        assert "critic.ln_weights.0" in critic and "critic.ln_weights.1" in critic
        assert "actor.net.1.weight" in ckpt["learner"]["nets"]  # the LayerNorm after the first Linear
    if name == "param":
        assert tags.get("noise/param_std") and tags.get("noise/param_distance")
        assert ckpt["noise"]["std"] != 0.1  # it adapted


def test_terminal_gets_a_live_progress_bar(tmp_path):
    """On a terminal (a pseudo-terminal here) the run draws a tqdm bar with the step, steps/s,
    the ETA, the last return and the last evaluation instead of plain log lines."""
    import fcntl
    import pty
    import struct
    import termios

    cmd, env = cli_command(["--env-id", "Pendulum-v1", *TINY, "--runs-dir", tmp_path])
    pid, fd = pty.fork()
    if pid == 0:  # the child: a 120-column terminal, then ddpg.py
        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        os.execve(cmd[0], cmd, env)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    frames = [f for f in re.split(r"[\r\n]+", text) if "step/s" in f]
    assert frames, text
    last = frames[-1]
    assert re.search(r"100%\|.*\| 400/400 \[\d\d:\d\d<00:00, +[\d.]+step/s, eval=-?\d+\.\d, ret=-?\d+\.\d\]", last), last
    assert "step 400/400 |" not in text  # no plain log lines on a terminal


def test_readme_flag_tables_match_the_help():
    """Every ddpg.py flag has a row in the README's flag tables, with --help's default, and
    the tables name no flag that does not exist."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Every flag", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(--[a-z0-9-]+)[^`]*` \| `([^`]*)` \|", section, re.MULTILINE))
    fields = {f.name: f for f in dataclasses.fields(ddpg.Args)}
    flags = {"--" + name.replace("_", "-") for name in fields}
    assert set(rows) == flags, f"missing: {sorted(flags - set(rows))}, unknown: {sorted(set(rows) - flags)}"
    for flag, default in rows.items():
        value = fields[flag[2:].replace("-", "_")].default
        shown = default.strip('"').replace("_", "")
        if isinstance(value, bool) or value is None:
            assert shown == str(value), (flag, default, value)
        elif isinstance(value, tuple):
            assert tuple(int(x) for x in re.findall(r"\d+", shown)) == value, (flag, default, value)
        else:
            assert type(value)(shown) == value, (flag, default, value)


# ---------------------------------------------------------------------------------------------
# A trained policy in your own Python code
# ---------------------------------------------------------------------------------------------


def mu_by_hand(learner_state: dict, obs: np.ndarray) -> np.ndarray:
    """mu(s) from the checkpoint's actor weights with numpy alone: ReLU MLP, tanh, scale and bias."""
    x = np.asarray(obs, dtype=np.float64)
    layers = sorted({int(k.split(".")[2]) for k in learner_state if k.startswith("actor.net.") and k.endswith("weight")})
    for i, k in enumerate(layers):
        w, b = (learner_state[f"actor.net.{k}.{n}"].double().numpy() for n in ("weight", "bias"))
        x = x @ w.T + b
        x = np.maximum(x, 0) if i < len(layers) - 1 else np.tanh(x)
    return x * learner_state["actor.action_scale"].double().numpy() + learner_state["actor.action_bias"].double().numpy()


def test_load_policy_acts_like_the_trained_actor(pendulum_run, tmp_path):
    run_dir = pendulum_run[0]
    state = load(run_dir / "checkpoints" / "final.pt")["learner"]["nets"]
    torch.manual_seed(123)
    expected_next_draw = torch.rand(1)
    torch.manual_seed(123)
    policy = ddpg.load_policy(run_dir)  # a run folder: its final.pt
    assert torch.equal(torch.rand(1), expected_next_draw), "loading a policy changed the caller's torch RNG"
    obs = np.array([0.3, -0.9, 4.0], dtype=np.float32)
    action = policy(obs)
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0
    np.testing.assert_allclose(action, np.clip(mu_by_hand(state, obs), -2, 2), rtol=1e-5, atol=1e-5)
    batch = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * 3
    actions = policy(batch)
    assert actions.shape == (64, 1) and np.all(np.abs(actions) <= 2.0)
    np.testing.assert_allclose(actions, np.clip(mu_by_hand(state, batch), -2, 2), rtol=1e-5, atol=1e-5)
    assert policy.env_id == "Pendulum-v1" and policy.step == 400
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        policy(np.zeros(4))
    # a run folder without final.pt (an interrupted run): latest.pt
    only_latest = tmp_path / "interrupted" / "checkpoints"
    only_latest.mkdir(parents=True)
    (only_latest / "latest.pt").write_bytes((run_dir / "checkpoints" / "latest.pt").read_bytes())
    assert ddpg.load_policy(only_latest.parent).path.name == "latest.pt"
    # bad checkpoints: the same one-line errors as --eval-only
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ddpg.UserError, match="cannot read checkpoint"):
        ddpg.load_policy(junk)
    with pytest.raises(ddpg.UserError, match=r"checkpoint not found: .*final\.pt; .* holds latest\.pt"):
        ddpg.load_policy(only_latest / "final.pt")


def test_missing_final_pt_names_what_the_folder_holds(pendulum_run, tmp_path):
    """After Ctrl-C there is no final.pt: the error says which checkpoints exist, and the run folder works."""
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "latest.pt").write_bytes((pendulum_run[0] / "checkpoints" / "latest.pt").read_bytes())
    rc, out, err = run_cli(["--env-id", "Pendulum-v1", "--eval-only", "--checkpoint", folder / "final.pt", "--no-cuda"])
    line = assert_one_error_line(rc, err)
    assert "final.pt" in line and "holds latest.pt" in line and "pass the run folder" in line, line
    rc, out, err = run_cli(["--env-id", "Pendulum-v1", "--eval-only", "--checkpoint", folder.parent, "--no-cuda",
                            "--eval-episodes", "1"])
    assert rc == 0 and "latest.pt" in out, err


def test_mujoco_and_pybullet_c_level_warnings_stay_out_of_the_output():
    """MuJoCo warns about HalfCheetah's XML (`settotalmass is deprecated`) and PyBullet prints its build time
    and argv[0]= from C, on file descriptors 1 and 2; make_env and reset hide both."""
    code = ("import ddpg\n"
            "for env_id in ['HalfCheetah-v5', 'HopperBulletEnv-v0']:\n"
            "    env = ddpg.make_env(env_id); env.reset(seed=0); env.reset(seed=1); env.close()\n"
            "print('made')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **BUFFERED})
    assert proc.returncode == 0 and proc.stdout.strip() == "made", proc.stdout + proc.stderr
    for chatter in ["settotalmass", "pybullet build time", "argv[0]="]:
        assert chatter not in proc.stdout + proc.stderr, (chatter, proc.stderr)
