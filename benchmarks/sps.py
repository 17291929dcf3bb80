"""How fast does ddpg.py learn, next to the floor of what one learning step must cost and next to
Stable-Baselines3's and CleanRL's DDPG (and TD3) with the same hyperparameters, idle and under load?

For each environment, on this machine, in this one run:
  1. the floor, measured in this process: one environment step, one actor forward on one
     observation (numpy -> torch -> numpy, as ddpg.py acts), one replay sample and one update of
     ddpg.py's Learner (same shapes and flags as the runs);
  2. the update against the plain eager update of benchmarks/eager_ddpg.py (CleanRL style), and
     the cost of --num-q 2 and of TD3 (--num-q 2 --target-noise 0.2 --policy-delay 2), all timed
     interleaved in rounds so that drift hits every variant alike;
  3. --repeats runs of `python ddpg.py` and of SB3's DDPG in subprocesses (with --cleanrl also
     CleanRL's DDPG with policy frequency 1 and 2; with --td3 also ddpg.py's TD3 flags, SB3's TD3
     and CleanRL's TD3), interleaved (every trainer once per repetition), each reporting its
     learning-phase steps/s (after the random warm-up, without evaluation and checkpoint time) and
     its peak resident memory; with --load N every repetition runs once more with N busy
     pure-Python processes competing for the cores.

Run from the repository root:   python benchmarks/sps.py          (--help for the flags)
It prints a markdown table and writes it to benchmarks/results.md, the raw numbers beside it
(benchmarks/results.json). See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(Path(__file__).resolve().parent))

DEFAULT_ENVS = ["Pendulum-v1", "HopperBulletEnv-v0", "Hopper-v5"]
SB3_INSTALL = "pip install -r benchmarks/requirements.txt"
CLEANRL_HOWTO = ("pass --cleanrl DIR, a folder with CleanRL's ddpg_continuous_action.py and td3_continuous_action.py, "
                 "and a venv with its gymnasium (--cleanrl-python, default .venv-cleanrl/bin/python): "
                 "see benchmarks/README.md, 'CleanRL'")
CLEANRL_SCRIPTS = {"cleanrl-pf1": "ddpg_continuous_action.py", "cleanrl-pf2": "ddpg_continuous_action.py",
                   "cleanrl-td3": "td3_continuous_action.py"}
TD3_FLAGS = "--num-q 2 --target-noise 0.2 --policy-delay 2"  # ddpg.py's TD3
LABELS = {"ddpg": "ddpg.py", "sb3": "SB3 DDPG", "cleanrl-pf1": "CleanRL DDPG pf=1", "cleanrl-pf2": "CleanRL DDPG pf=2",
          "ddpg-td3": "ddpg.py TD3", "sb3-td3": "SB3 TD3", "cleanrl-td3": "CleanRL TD3"}
# The environment this script was started with, before `import ddpg` sets OMP_WAIT_POLICY: the trainers' children
# get this one, so SB3 and CleanRL run with their own defaults (ddpg.py sets its own again)
ORIG_ENV = dict(os.environ)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--envs", nargs="+", default=DEFAULT_ENVS, help="environment ids (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="runs per environment and trainer; medians are reported")
    p.add_argument("--steps", type=int, default=5000, help="total environment steps of each run (default: %(default)s)")
    p.add_argument("--start-steps", type=int, default=1000,
                   help="random warm-up steps; the learning phase is steps - start-steps (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads of every trainer and of the floor (also OMP_NUM_THREADS); 0 (default): each\n"
                        "trainer's own default (ddpg.py without --torch-threads, torch's default for SB3 and CleanRL)")
    p.add_argument("--load", type=int, default=0, metavar="N",
                   help="also measure every run with N busy processes (pure-Python loops) competing for the cores")
    p.add_argument("--no-sb3", action="store_true", help="skip the Stable-Baselines3 runs")
    p.add_argument("--cleanrl", type=Path, metavar="DIR",
                   help="folder with CleanRL's ddpg_continuous_action.py and td3_continuous_action.py: adds\n"
                        "CleanRL's DDPG (policy frequency 1 and 2) and, with --td3, its TD3")
    p.add_argument("--cleanrl-python", type=Path, metavar="PATH",
                   help="python of CleanRL's venv (gymnasium 0.29; default .venv-cleanrl/bin/python)")
    p.add_argument("--td3", action="store_true",
                   help=f"also TD3, matched: ddpg.py with {TD3_FLAGS},\nSB3's TD3 and CleanRL's")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--extra-args", default="",
                   help="more ddpg.py flags, one string (e.g. '--num-q 2'); they also shape the floor's Learner")
    p.add_argument("--no-compile", action="store_true",
                   help="skip timing the update with torch.compile (compiling takes 15-40 s per environment)")
    p.add_argument("--loop-steps", type=int, default=600,
                   help="learning steps of the in-process loop that times each piece in sequence (default: %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.md",
                   help="markdown report; the raw numbers go to the same name with .json")
    p.add_argument("--floor-rounds", type=int, default=7, help="interleaved rounds of the update timings")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed to one training run")
    p.add_argument("--sb3-worker", help=argparse.SUPPRESS)  # internal: run one SB3 training (JSON config)
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(argv[:-1]):  # '--extra-args --num-q 2': argparse would take '--num-q' for a flag
        if a == "--extra-args":
            argv[i:i + 2] = [f"--extra-args={argv[i + 1]}"]
            break
    args = p.parse_args(argv)
    if args.repeats < 1 or args.floor_rounds < 1 or args.loop_steps < 1:
        p.error("--repeats, --floor-rounds and --loop-steps must be positive")
    if args.threads < 0 or args.load < 0:
        p.error("--threads and --load must be 0 or more")
    if args.start_steps < 1 or args.steps <= args.start_steps:
        p.error("need 0 < --start-steps < --steps (the learning phase is what is measured)")
    if args.cleanrl is not None and cleanrl_sps_lines(args.steps, args.start_steps) < 2:
        p.error("CleanRL prints its steps/s every 100 steps of the learning phase and two such lines are needed: "
                f"give --steps {(args.start_steps // 100 + 2) * 100 + 1} or more")
    return args


def cleanrl_sps_lines(steps: int, start_steps: int) -> int:
    """How many 'SPS:' lines a CleanRL run prints: at each global_step (0-based) divisible by 100 above
    learning_starts, up to steps - 1."""
    return max(0, (steps - 1) // 100 - start_steps // 100)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------


def machine_info(threads: int, device: str) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ["torch", "numpy", "gymnasium", "pybullet", "mujoco", "stable-baselines3"]:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    info = {"cpu": cpu, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "torch_threads": threads, "torch_default_threads": torch.get_num_threads() if not threads else None,
            "omp_wait_policy": ORIG_ENV.get("OMP_WAIT_POLICY"), "python": platform.python_version(), "versions": versions,
            "device": device, "load_average_at_start": os.getloadavg()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---------------------------------------------------------------------------------------------
# The floor and the update comparison, in this process
# ---------------------------------------------------------------------------------------------


def measure_floor(env_id: str, ddpg_args, device: str, rounds: int, with_compile: bool = True,
                  loop_steps: int = 600) -> dict:
    """Median cost of the pieces of one learning step alone, their mean cost in sequence (a loop like
    ddpg.py's), and the update against its eager twin and its torch.compile'd twin."""
    import numpy as np
    import torch

    import ddpg
    import eager_ddpg

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    ddpg.seed_everything(ddpg_args.seed, ddpg_args.torch_deterministic)  # as ddpg.py's setup() does
    env = ddpg.make_env(env_id, ddpg_args.max_episode_steps)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    rng = np.random.default_rng(0)

    # env step: median over many steps with uniformly random actions (resets not counted)
    n_env = 3000
    buffer = ddpg.ReplayBuffer(ddpg_args.buffer_size, obs_dim, act_dim, dev)
    plain_buffer = eager_ddpg.NumpyReplay(ddpg_args.buffer_size, obs_dim, act_dim, dev)
    observations, step_times = [], []
    obs, _ = env.reset(seed=0)
    dtype = env.action_space.dtype
    for _ in range(n_env):
        action = rng.uniform(low, high)
        t0 = time.perf_counter()
        next_obs, reward, terminated, truncated, _ = env.step(action.astype(dtype))
        step_times.append(time.perf_counter() - t0)
        buffer.add(obs, action, reward, terminated, next_obs, terminated or truncated)
        plain_buffer.add(obs, action, reward, terminated, next_obs)
        observations.append(obs)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()

    def make_learner(**changes) -> ddpg.Learner:  # on dev, its Adam optimizers built: as setup() makes it
        return ddpg.Learner(obs_dim, act_dim, low, high, dataclasses.replace(ddpg_args, **changes), dev)

    variants = [("default", {}), ("num_q=2", {"num_q": 2}), ("td3", {"num_q": 2, "target_noise": 0.2, "policy_delay": 2})]
    learners = {name: make_learner(**changes) for name, changes in variants}
    a = ddpg_args

    def make_plain() -> eager_ddpg.EagerDDPG:
        return eager_ddpg.EagerDDPG(obs_dim, act_dim, low, high, a.hidden_sizes, num_q=a.num_q, q_reduce=a.q_reduce,
                                    gamma=a.gamma, tau=a.tau, policy_lr=a.policy_lr, value_lr=a.value_lr,
                                    target_noise=a.target_noise, target_noise_clip=a.target_noise_clip,
                                    policy_delay=a.policy_delay, device=dev)

    plain, plain_1 = make_plain(), make_plain()  # plain_1 and learner_1: the fixed cost, on batches of one
    learner_1 = make_learner()
    actor = learners["default"].actor
    compile_s = compile_error = None
    if with_compile:  # the losses' forward and backward compiled by inductor; Adam and Polyak stay as they are
        compiled = make_learner()
        compiled.critic_loss = torch.compile(compiled.critic_loss)
        compiled.actor_loss = torch.compile(compiled.actor_loss)
        try:
            sync()
            t0 = time.perf_counter()
            for _ in range(max(2, ddpg_args.policy_delay)):  # the first calls compile every graph
                compiled.update(buffer.sample(ddpg_args.batch_size))
            sync()
            compile_s = time.perf_counter() - t0
            learners["compiled"] = compiled
        except Exception as e:  # e.g. no C++ compiler on the machine: report it, time the rest
            compile_error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"

    # actor forward on one observation, exactly as ddpg.py acts (no noise, no clip)
    act_times = []
    for o in observations[:2000]:
        t0 = time.perf_counter()
        actor.act(o)
        act_times.append(time.perf_counter() - t0)

    # replay samples
    batch = ddpg_args.batch_size

    def time_calls(fn, n: int) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        return (time.perf_counter() - t0) / n

    sample_rounds = {"ddpg": [], "eager": []}
    for r in range(rounds):
        for name in (["ddpg", "eager"] if r % 2 == 0 else ["eager", "ddpg"]):
            source = buffer if name == "ddpg" else plain_buffer
            sample_rounds[name].append(time_calls(lambda s=source: s.sample(batch), 200))

    # updates, interleaved in rounds (the order rotates every round); batches sampled outside the clock
    updaters = {name: (lrn.update, buffer, batch) for name, lrn in learners.items()}
    updaters["eager"] = (plain.update, plain_buffer, batch)
    # batch 1: next to no arithmetic, so what is left is each update's fixed cost (Python, dispatch,
    # autograd, optimizer calls), the part that does not shrink with faster matmuls
    updaters["default@1"] = (learner_1.update, buffer, 1)
    updaters["eager@1"] = (plain_1.update, plain_buffer, 1)
    n_updates = 30  # even: TD3's policy delay of 2 averages in
    for fn, source, size in updaters.values():  # warm-up: allocator, lazy init, fused Adam state
        for _ in range(20):
            fn(source.sample(size))
    sync()
    # the same pieces in sequence, as ddpg.py's train() runs them, the same calls in the same order (act:
    # noise.explore, clip; step; store; on an episode's end env.reset and noise.reset; sample; update, the
    # divergence guard's finiteness check, noise.adapt), in chunks between the update rounds so that drift in
    # the machine's speed hits both alike: means per step, resets included in the env step
    learner = learners["default"]
    noise = ddpg.GaussianNoise((high - low) / 2.0, ddpg_args.noise_std)
    pieces = dict.fromkeys(["act", "env_step", "store", "sample", "update"], 0.0)
    loop_state = {"obs": env.reset(seed=1)[0], "steps": 0, "time": 0.0}
    noise.reset(actor, rng)  # as setup() does after the first reset

    def loop_chunk(n: int) -> None:
        obs, step = loop_state["obs"], loop_state["steps"]
        t_chunk = time.perf_counter()
        for _ in range(n):
            step += 1
            t0 = time.perf_counter()
            action = np.clip(noise.explore(actor, obs, rng), low, high)
            t1 = time.perf_counter()
            next_obs, reward, terminated, truncated, _ = env.step(action.astype(dtype))
            t2 = time.perf_counter()
            buffer.add(obs, action, reward, terminated, next_obs, episode_end=terminated or truncated)
            obs = next_obs
            t3 = time.perf_counter()
            if terminated or truncated:  # timed with the env step
                obs, _ = env.reset()
                noise.reset(actor, rng)
            t4 = time.perf_counter()
            b = buffer.sample(batch)
            t5 = time.perf_counter()
            metrics = learner.update(b)
            all(math.isfinite(v) for v in ddpg.scalars(metrics).values())  # the divergence guard, Run.diverged
            noise.adapt(step, actor, buffer)
            sync()
            t6 = time.perf_counter()
            for k, dt in zip(pieces, [t1 - t0, (t2 - t1) + (t4 - t3), t3 - t2, t5 - t4, t6 - t5]):
                pieces[k] += dt
        loop_state["time"] += time.perf_counter() - t_chunk
        loop_state["obs"], loop_state["steps"] = obs, step

    update_rounds = {name: [] for name in updaters}
    names = list(updaters)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, source, size = updaters[name]
            batches = [source.sample(size) for _ in range(n_updates)]
            sync()
            t0 = time.perf_counter()
            for b in batches:
                fn(b)
            sync()
            update_rounds[name].append((time.perf_counter() - t0) / n_updates)
        loop_chunk(-(-loop_steps // rounds))
    steps_done = loop_state["steps"]
    loop_ms = loop_state["time"] / steps_done * 1e3

    env.close()

    ms = 1e3
    res = {
        "obs_dim": obs_dim, "act_dim": act_dim,
        "env_step_ms": median(step_times) * ms, "actor_forward_ms": median(act_times) * ms,
        "sample_ms": median(sample_rounds["ddpg"]) * ms, "eager_sample_ms": median(sample_rounds["eager"]) * ms,
        "update_ms": median(update_rounds["default"]) * ms, "eager_update_ms": median(update_rounds["eager"]) * ms,
        "update_num_q2_ms": median(update_rounds["num_q=2"]) * ms, "update_td3_ms": median(update_rounds["td3"]) * ms,
        "update_batch1_ms": median(update_rounds["default@1"]) * ms,
        "eager_update_batch1_ms": median(update_rounds["eager@1"]) * ms,
        "compiled_update_ms": median(update_rounds["compiled"]) * ms if "compiled" in update_rounds else None,
        "compile_s": compile_s, "compile_error": compile_error,
        "in_sequence_ms": {k: v / steps_done * ms for k, v in pieces.items()}, "in_sequence_loop_ms": loop_ms,
        "loop_steps": steps_done,
        "rounds": {"sample_ms": {k: [x * ms for x in v] for k, v in sample_rounds.items()},
                   "update_ms": {k: [x * ms for x in v] for k, v in update_rounds.items()}},
    }
    res["floor_ms"] = res["env_step_ms"] + res["actor_forward_ms"] + res["sample_ms"] + res["update_ms"]
    res["in_sequence_efficiency"] = res["floor_ms"] / loop_ms
    res["update_speedup"] = res["eager_update_ms"] / res["update_ms"]
    res["update_speedup_with_sample"] = ((res["eager_update_ms"] + res["eager_sample_ms"])
                                         / (res["update_ms"] + res["sample_ms"]))
    res["num_q2_cost"] = res["update_num_q2_ms"] / res["update_ms"]
    res["td3_cost"] = res["update_td3_ms"] / res["update_ms"]
    res["compiled_speedup"] = res["update_ms"] / res["compiled_update_ms"] if res["compiled_update_ms"] else None
    return res


# ---------------------------------------------------------------------------------------------
# Training runs in subprocesses
# ---------------------------------------------------------------------------------------------


def child_env(threads: int) -> dict:
    """The trainers' environment: this script's own as it started, threads pinned only when --threads asks."""
    env = {**ORIG_ENV, "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), ORIG_ENV.get("PYTHONPATH", "")] if p),
           "WANDB_MODE": "disabled"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


# Runs a script as __main__ and, at exit, writes its peak resident memory (VmHWM, KiB) to a file.
# (The child's ru_maxrss is no use here: it inherits this large process's peak across fork + exec.)
PEAK_WRAPPER = """import atexit, runpy, sys
out = sys.argv.pop(1)
def peak():
    with open('/proc/self/status') as f:
        kib = next(line.split()[1] for line in f if line.startswith('VmHWM'))
    with open(out, 'w') as f:
        f.write(kib)
atexit.register(peak)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM) in MiB."""
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmHWM"))) / 1024.0


def run_measured(cmd: list[str], workdir: Path, threads: int, timeout: float) -> tuple[int, float, str]:
    """Run cmd; return (exit code, wall seconds, tail of its output)."""
    log = workdir / "output.log"
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=child_env(threads), stdout=out, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=timeout)
        except BaseException:  # the timeout, or this script interrupted: the run does not outlive it
            proc.kill()
            proc.wait()
            if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
                raise
    wall = time.perf_counter() - t0
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    return proc.returncode, wall, tail


def run_ddpg(env_id: str, seed: int, opts: argparse.Namespace, workdir: Path, td3: bool = False) -> dict:
    peak_file = workdir / "peak_kib"
    cmd = [sys.executable, "-c", PEAK_WRAPPER, str(peak_file), str(ROOT / "ddpg.py"), "--env-id", env_id, "--seed", str(seed),
           "--total-steps", str(opts.steps), "--start-steps", str(opts.start_steps),
           "--eval-every", str(10**9), "--eval-episodes", "1", "--save-every", str(10**9),
           *(["--torch-threads", str(opts.threads)] if opts.threads else []),
           "--runs-dir", str(workdir / "runs"), "--exp-name", "bench",
           *([] if opts.device == "cuda" else ["--no-cuda"]), *shlex.split(opts.extra_args),
           *(shlex.split(TD3_FLAGS) if td3 else [])]
    rc, wall, tail = run_measured(cmd, workdir, opts.threads, opts.timeout)
    rss = int(peak_file.read_text()) / 1024.0 if peak_file.exists() else None
    summaries = list((workdir / "runs").glob("*/summary.json"))
    summary = json.loads(summaries[0].read_text()) if summaries else {}
    ok = rc == 0 and summary.get("status") == "finished" and summary.get("learning_sps")
    return {"trainer": "ddpg-td3" if td3 else "ddpg", "seed": seed, "rc": rc, "ok": bool(ok),
            "sps": summary.get("learning_sps"), "peak_rss_mib": rss, "wall_s": wall, "device": summary.get("device"),
            "final_eval_return": summary.get("final_eval_return_mean"), "cmd": shlex.join(["python", *cmd[4:]]),
            **({} if ok else {"output_tail": tail})}


def sb3_config(env_id: str, seed: int, opts: argparse.Namespace, ddpg_args, td3: bool = False) -> dict:
    a = ddpg_args
    return {"env_id": env_id, "seed": seed, "steps": opts.steps, "start_steps": opts.start_steps,
            "threads": opts.threads, "device": opts.device, "hidden_sizes": list(a.hidden_sizes),
            "batch_size": a.batch_size, "lr": a.value_lr, "buffer_size": a.buffer_size, "tau": a.tau,
            "gamma": a.gamma, "noise_std": a.noise_std, "gradient_steps": a.updates_per_step,
            "max_episode_steps": a.max_episode_steps,
            **({"algo": "td3", "policy_delay": 2, "target_noise": 0.2, "target_noise_clip": a.target_noise_clip}
               if td3 else {"algo": "ddpg"})}


def run_sb3(env_id: str, seed: int, opts: argparse.Namespace, ddpg_args, workdir: Path, td3: bool = False) -> dict:
    config = sb3_config(env_id, seed, opts, ddpg_args, td3)
    result = workdir / "sb3.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--sb3-worker", json.dumps({**config, "out": str(result)})]
    rc, wall, tail = run_measured(cmd, workdir, opts.threads, opts.timeout)
    out = json.loads(result.read_text()) if result.exists() else {}
    ok = rc == 0 and bool(out.get("sps"))
    return {"trainer": "sb3-td3" if td3 else "sb3", "seed": seed, "rc": rc, "ok": ok, "sps": out.get("sps"),
            "peak_rss_mib": out.get("peak_rss_mib"), "wall_s": wall, "config": config,
            **({} if ok else {"output_tail": tail})}


def sb3_worker(config: dict) -> None:
    """One SB3 DDPG or TD3 training: warm-up in a first learn() call, then the timed learning phase."""
    import numpy as np
    import torch

    if config["threads"]:  # 0: torch's default, as a user of SB3 gets it
        torch.set_num_threads(config["threads"])
    from stable_baselines3 import DDPG, TD3
    from stable_baselines3.common.noise import NormalActionNoise

    import ddpg

    env = ddpg.make_env(config["env_id"], config["max_episode_steps"])  # the same env and time limit as ddpg.py
    act_dim = env.action_space.shape[0]
    hidden = config["hidden_sizes"]
    # SB3's DDPG is its TD3 with one critic, policy_delay 1 and no target noise; TD3's noises are in the
    # action space rescaled to [-1, 1] too, so 0.2 and 0.5 there are ddpg.py's fractions of range/2
    algo = (TD3, {"policy_delay": config["policy_delay"], "target_policy_noise": config["target_noise"],
                  "target_noise_clip": config["target_noise_clip"]}) if config.get("algo") == "td3" else (DDPG, {})
    model = algo[0](
        "MlpPolicy", env, learning_rate=config["lr"], buffer_size=config["buffer_size"],
        learning_starts=config["start_steps"], batch_size=config["batch_size"], tau=config["tau"],
        gamma=config["gamma"], train_freq=1, gradient_steps=config["gradient_steps"],
        # SB3 adds the noise to the action rescaled to [-1, 1]: sigma 0.1 there is 0.1 * range/2 here
        action_noise=NormalActionNoise(np.zeros(act_dim), config["noise_std"] * np.ones(act_dim)),
        policy_kwargs={"net_arch": {"pi": hidden, "qf": hidden}}, seed=config["seed"], device=config["device"],
        verbose=0, **algo[1])
    model.learn(total_timesteps=config["start_steps"])  # random warm-up: no update happens up to learning_starts
    assert model.num_timesteps == config["start_steps"]
    learning = config["steps"] - config["start_steps"]
    t0 = time.perf_counter()
    model.learn(total_timesteps=learning, reset_num_timesteps=False)
    elapsed = time.perf_counter() - t0
    assert model.num_timesteps == config["steps"], model.num_timesteps
    Path(config["out"]).write_text(json.dumps({"sps": round(learning / elapsed, 2), "learn_s": elapsed,
                                               "n_updates": int(model._n_updates), "peak_rss_mib": peak_rss_mib()}))


# CleanRL's scripts do `from cleanrl_utils.buffers import ReplayBuffer`, CleanRL's adapted copy of SB3's
# ReplayBuffer with the same interface: this one-line package of ours, made at run time in the temporary
# folder and put on the scripts' PYTHONPATH, gives them SB3's own (nothing of CleanRL's is in this repository)
CLEANRL_SHIM = "from stable_baselines3.common.buffers import ReplayBuffer\n"

# Run in CleanRL's python: its package versions, and for each environment id the id its scripts can make
# (PyBullet's ids register on importing pybullet_envs_gymnasium, which the scripts do not do: they get
# gymnasium's 'module:Id' form, as ddpg.py resolves them), or why none. Writes JSON to argv[1].
CLEANRL_PROBE = """import contextlib, importlib, importlib.metadata as md, json, sys
out = {"python": sys.version.split()[0], "versions": {}, "envs": {}}
for p in ["gymnasium", "torch", "numpy", "stable-baselines3", "tyro", "pybullet", "pybullet_envs_gymnasium"]:
    try:
        out["versions"][p] = md.version(p)
    except md.PackageNotFoundError:
        out["versions"][p] = None
try:
    import gymnasium as gym
except Exception as e:
    out["error"] = f"cannot import gymnasium: {type(e).__name__}: {e}"
else:
    plain = set(gym.registry)  # what a script that imports nothing else can make
    for env_id in sys.argv[2:]:
        name, module = env_id.split(":", 1)[-1], env_id.split(":", 1)[0] if ":" in env_id else None
        try:
            if module:
                importlib.import_module(module)
            elif name not in plain:
                with contextlib.suppress(ImportError):
                    import pybullet_envs_gymnasium
                    module = "pybullet_envs_gymnasium" if name in gym.registry else None
            out["envs"][env_id] = ({"id": f"{module}:{name}" if module else name} if name in gym.registry else
                                   {"note": f"no {name} in its gymnasium {gym.__version__}"})
        except Exception as e:
            out["envs"][env_id] = {"note": f"{type(e).__name__}: {e}"}
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""


def probe_cleanrl(python: Path, env_ids: list[str], workdir: Path) -> dict:
    """CleanRL's python: its versions and the ids its scripts get; {'error': ...} if it does not run."""
    out = workdir / "cleanrl-probe.json"
    try:
        proc = subprocess.run([str(python), "-c", CLEANRL_PROBE, str(out), *env_ids], cwd=workdir,
                              env={**ORIG_ENV, "PYTHONPATH": ""}, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"{python}: {type(e).__name__}: {e}"}
    if proc.returncode != 0 or not out.exists():
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": f"{python} exited {proc.returncode}: {lines[-1] if lines else ''}"}
    return json.loads(out.read_text())


def run_cleanrl(trainer: str, env_id: str, seed: int, opts: argparse.Namespace, ddpg_args, workdir: Path,
                shim: Path) -> dict:
    """One run of CleanRL's script, unchanged, with the matched flags. It prints 'SPS: <int>' (cumulative
    steps / time since its start) every 100 learning steps: this process notes when each such line arrives,
    and the learning-phase steps/s is the steps between the first and the last line over the time between."""
    a = ddpg_args
    script = opts.cleanrl / CLEANRL_SCRIPTS[trainer]
    flags = ["--env-id", env_id, "--seed", str(seed), "--total-timesteps", str(opts.steps),
             "--learning-starts", str(opts.start_steps), "--learning-rate", str(a.value_lr),
             "--batch-size", str(a.batch_size), "--buffer-size", str(a.buffer_size), "--tau", str(a.tau),
             "--gamma", str(a.gamma), "--exploration-noise", str(a.noise_std),
             "--policy-frequency", "1" if trainer == "cleanrl-pf1" else "2",
             *(["--policy-noise", "0.2", "--noise-clip", str(a.target_noise_clip)] if trainer == "cleanrl-td3" else []),
             *([] if opts.device == "cuda" else ["--no-cuda"])]
    peak_file = workdir / "peak_kib"
    cmd = [str(opts.cleanrl_python), "-c", PEAK_WRAPPER, str(peak_file), str(script), *flags]
    # CleanRL's own venv: none of this repository's or this venv's paths, only the shim
    env = {**child_env(opts.threads), "PYTHONPATH": str(shim), "PYTHONUNBUFFERED": "1"}
    log = workdir / "output.log"
    arrivals: list[float] = []
    printed: list[int] = []
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        timer = threading.Timer(opts.timeout, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                t = time.perf_counter()
                out.write(line)
                if line.startswith(b"SPS:"):
                    arrivals.append(t)
                    printed.append(int(line.split()[1]))
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # this script interrupted: the run does not outlive it
                proc.kill()
                proc.wait()
    wall = time.perf_counter() - t0
    measured = 100 * (len(arrivals) - 1)
    sps = round(measured / (arrivals[-1] - arrivals[0]), 2) if len(arrivals) >= 2 and arrivals[-1] > arrivals[0] else None
    ok = proc.returncode == 0 and sps is not None
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    rss = int(peak_file.read_text()) / 1024.0 if peak_file.exists() else None
    first = (opts.start_steps // 100 + 1) * 100
    return {"trainer": trainer, "seed": seed, "rc": proc.returncode, "ok": ok, "sps": sps, "peak_rss_mib": rss,
            "wall_s": wall, "sps_lines": len(arrivals), "measured_steps": f"{first}-{first + measured}",
            "printed_sps_last": printed[-1] if printed else None,
            "cmd": shlex.join(["python", script.name, *flags]), **({} if ok else {"output_tail": tail})}


# A busy neighbour: a pure-Python loop, like `while True: pass`, that also ends by itself if this script dies
# without killing it (its parent changes)
BUSY = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    for _ in range(1000000):\n        pass\n"


@contextlib.contextmanager
def busy_load(n: int, record: list):
    """n busy processes for the duration of the block, killed after it whatever happens. Appends to record
    each one's pid and the share of one core it got (its CPU time / its wall time)."""
    procs: list[tuple[subprocess.Popen, float]] = []
    try:
        for _ in range(n):
            procs.append((subprocess.Popen([sys.executable, "-c", BUSY], env=ORIG_ENV, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), time.perf_counter()))
        yield
    finally:
        for proc, started in procs:
            share = None
            with contextlib.suppress(OSError, IndexError, ValueError):  # utime + stime, in clock ticks
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                share = cpu / max(time.perf_counter() - started, 1e-9)
            proc.kill()
            record.append({"pid": proc.pid, "cpu_share": share})
        for proc, _ in procs:
            proc.wait()


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def fmt(x, spec: str = ".1f", empty: str = "-") -> str:
    return empty if x is None or x != x else format(x, spec)


def spread(values: list[float]) -> str:
    return f"{median(values):.1f} ({min(values):.1f}-{max(values):.1f})" if values else "failed"


def short_tmp(cmd: str) -> str:
    """A command with this benchmark's temporary folders shortened."""
    return re.sub(r"/\S*/ddpg-bench-[^/]+/\S+/runs", "TMP/runs", cmd)


def first_command(results: dict, trainer: str) -> str:
    """The first command of a trainer, its temporary folders shortened."""
    for r in results["envs"].values():
        for x in r["runs"]:
            if x["trainer"] == trainer and x.get("cmd"):
                return short_tmp(x["cmd"])
    return "-"


def ddpg_command(results: dict) -> str:
    return first_command(results, "ddpg")


def table_head(title: str, columns: list[str]) -> list[str]:
    """A blank line, a '## title' heading, a blank line and a markdown table's header rows."""
    return ["", f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "-|" * len(columns)]


def phases(results: dict) -> list[tuple[str, int]]:
    """(phase, load): idle, and loaded with --load N."""
    n = results["options"]["load"]
    return [("idle", 0)] + ([("loaded", n)] if n else [])


def sps_of(entry: dict, trainer: str, load: int) -> list[float]:
    return [x["sps"] for x in entry["runs"] if x["trainer"] == trainer and x.get("load", 0) == load and x["ok"]]


# (numerator, denominator) of the ratios reported: ddpg.py against each peer of the same algorithm
RATIOS = [("ddpg", "sb3"), ("ddpg", "cleanrl-pf1"), ("ddpg", "cleanrl-pf2"), ("ddpg-td3", "sb3-td3"),
          ("ddpg-td3", "cleanrl-td3")]


def report(results: dict) -> str:
    m, o = results["machine"], results["options"]
    trainers = results["trainers"]
    cleanrl = results.get("cleanrl")
    threads = (f"torch threads {m['torch_threads']}" if m["torch_threads"] else
               f"torch threads: each trainer's default (ddpg.py its free cores: all while no other process is "
               f"busy, one otherwise; SB3 and CleanRL torch's, {m.get('torch_default_threads')} here)")
    peers = ", ".join(LABELS[t] for t in trainers)
    wait = m.get("omp_wait_policy")
    threads += (f", OMP_WAIT_POLICY={wait} for all" if wait else
                ", OpenMP wait policy: libgomp's default for all")
    lines = [
        "# ddpg.py learning-phase steps/s",
        "",
        f"- command: `{results['command']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {threads}, "
        f"device {m['device']}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}, load average at start "
        f"{m['load_average_at_start'][0]:.2f}",
        "- versions: python " + m["python"] + ", " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        f"- runs: {o['steps']} steps, the first {o['start_steps']} random (no updates); steps/s counts the "
        f"learning steps only; median (min-max) of {o['repeats']} runs, every trainer once per repetition "
        f"({peers}); extra ddpg.py flags: `{o['extra_args'] or 'none'}`",
    ]
    if o["load"]:
        shares = [p["cpu_share"] for p in results["load_procs"] if p["cpu_share"] is not None]
        lines.append(f"- load: every repetition runs idle, then again with {o['load']} busy "
                     f"process{'es' if o['load'] > 1 else ''} (pure-Python loops, `while True: pass`) competing for the {m['cores_usable']} usable cores, started before "
                     f"and killed after the loaded runs; each got {fmt(median(shares), '.0%')} of a core on average")
    else:
        lines.append("- load: none, idle runs only (`--load N` adds runs with N busy processes)")
    lines.append(f"- each ddpg.py run: `{ddpg_command(results)}`"
                 + (f"; its TD3 adds `{TD3_FLAGS}`" if "ddpg-td3" in trainers else ""))
    if cleanrl:
        v = cleanrl["probe"]["versions"]
        lines.append(f"- CleanRL: `{cleanrl['dir']}` ("
                     + ", ".join(f"{name} sha256 {h[:12]}" for name, h in cleanrl["sha256"].items())
                     + f"), in its own venv `{cleanrl['python']}` (python {cleanrl['probe']['python']}, "
                     + ", ".join(f"{k} {x}" for k, x in v.items() if x and k != "pybullet_envs_gymnasium")
                     + "); `cleanrl_utils.buffers` is a one-line shim to SB3's ReplayBuffer. Each run: "
                     + f"`{first_command(results, 'cleanrl-pf1')}`"
                     + (f"; TD3: `{first_command(results, 'cleanrl-td3')}`" if "cleanrl-td3" in trainers else ""))
    lines.append(f"- started {results['started']}, took {results['elapsed_s'] / 60:.1f} min")

    def cell(entry: dict, trainer: str, load: int) -> str:
        if trainer.startswith("sb3") and entry["sb3_skipped"]:
            return "skipped"
        if trainer.startswith("cleanrl") and entry.get("cleanrl_note"):
            return "n/a"  # CleanRL's gymnasium lacks the environment: the note below the table says why
        return spread(sps_of(entry, trainer, load))

    for algo, names in [("DDPG", ["ddpg", "sb3", "cleanrl-pf1", "cleanrl-pf2"]),
                        ("TD3", ["ddpg-td3", "sb3-td3", "cleanrl-td3"])]:
        if names[0] not in trainers:
            continue
        cols = [t for t in names if t in trainers or t.startswith("sb3")]  # the SB3 column even if skipped
        ratios = [(a, b) for a, b in RATIOS if a == names[0] and b in cols]
        lines += table_head(f"Training runs, {algo}: learning-phase steps/s",
                            ["env", "load", *[LABELS[t] for t in cols],
                             *[f"{LABELS[a]} / {LABELS[b].removesuffix(' ' + algo).replace(f' {algo} ', ' ')}"
                               for a, b in ratios]])
        for env_id, r in results["envs"].items():
            for phase, load in phases(results):
                lines.append(f"| {env_id} | {'idle' if not load else f'{load} busy'} | "
                             + " | ".join(cell(r, t, load) for t in cols) + " | "
                             + " | ".join(fmt(r["ratios"][phase].get(f"{a} / {b}"), ".2f") + "x"
                                          * (f"{a} / {b}" in r["ratios"][phase]) for a, b in ratios)
                             + " |")
    lines += ["", "ddpg.py / X: the ratio of the medians in the same phase (idle or loaded)."
              + (" CleanRL DDPG pf=1 is the matched one (actor and targets updated every step, as ddpg.py's and "
                 "SB3's DDPG); pf=2 is CleanRL's default (actor and targets every other step). CleanRL's steps/s: "
                 "its script prints `SPS:` every 100 learning steps; this benchmark notes when each line arrives: "
                 "the steps between the first and the last line / the time between them." if cleanrl else "")]
    for env_id, r in results["envs"].items():
        if cleanrl and r.get("cleanrl_note"):
            lines += ["", f"CleanRL not run on {env_id}: {r['cleanrl_note']}."]
    if not cleanrl:
        lines += ["", f"CleanRL columns skipped: to add them, {CLEANRL_HOWTO}."]

    lines += table_head("Peak resident memory (MiB, medians)", ["env", *[LABELS[t] for t in trainers]])
    for env_id, r in results["envs"].items():
        lines.append(f"| {env_id} | " + " | ".join(
            fmt(median([x["peak_rss_mib"] for x in r["runs"] if x["trainer"] == t and x["ok"] and x["peak_rss_mib"]]),
                ".0f") for t in trainers) + " |")

    lines += table_head("The floor: what one learning step must cost (ms, medians)",
                        ["env", "obs/act", "env step", "actor forward", "sample", "update", "floor", "ddpg.py ms/step",
                         "efficiency"])
    for env_id, r in results["envs"].items():
        f = r["floor"]
        lines.append(f"| {env_id} | {f['obs_dim']}/{f['act_dim']} | {f['env_step_ms']:.3f} | "
                     f"{f['actor_forward_ms']:.3f} | {f['sample_ms']:.3f} | {f['update_ms']:.2f} | {f['floor_ms']:.2f} | "
                     f"{fmt(r.get('ms_per_step'), '.2f')} | {fmt(r.get('efficiency'), '.0%')} |")
    lines += table_head("The same pieces in sequence, in a loop like ddpg.py's (ms per learning step, means)",
                        ["env", "act", "env step (+ resets)", "store", "sample", "update", "loop", "floor / loop",
                         "ddpg.py ms/step"])
    for env_id, r in results["envs"].items():
        f = r["floor"]
        q = f["in_sequence_ms"]
        lines.append(f"| {env_id} | {q['act']:.3f} | {q['env_step']:.3f} | {q['store']:.3f} | {q['sample']:.3f} | "
                     f"{q['update']:.2f} | {f['in_sequence_loop_ms']:.2f} | {f['in_sequence_efficiency']:.0%} | "
                     f"{fmt(r.get('ms_per_step'), '.2f')} |")
    lines += table_head("The update (ms, medians of interleaved rounds)",
                        ["env", "ddpg.py update", "plain eager update", "speedup", "speedup incl. sample",
                         "fixed cost: ddpg.py, eager", "num_q=2 / default", "TD3 / default", "torch.compile'd update",
                         "its speedup", "compile s"])
    for env_id, r in results["envs"].items():
        f = r["floor"]
        compiled = (f"{f['compiled_update_ms']:.2f} | {f['compiled_speedup']:.2f}x | {f['compile_s']:.0f}"
                    if f.get("compiled_update_ms") else f"{f.get('compile_error') or 'skipped'} | - | -")
        lines.append(f"| {env_id} | {f['update_ms']:.2f} | {f['eager_update_ms']:.2f} | {f['update_speedup']:.2f}x | "
                     f"{f['update_speedup_with_sample']:.2f}x | {f['update_batch1_ms']:.2f}, "
                     f"{f['eager_update_batch1_ms']:.2f} | {f['num_q2_cost']:.2f}x | {f['td3_cost']:.2f}x | "
                     f"{compiled} |")
    lines += [
        "",
        "efficiency = floor / (1 / ddpg.py steps/s): the share of a learning step spent in the four things it "
        "cannot avoid, each timed alone, before the runs (the floor and ddpg.py ms/step: idle, without the "
        "load). In sequence: the same pieces in a loop like ddpg.py's, "
        "run in chunks between the update rounds (so floor / loop is free of drift between the floor and the "
        "runs). Plain eager update: benchmarks/eager_ddpg.py (CleanRL style). TD3 = --num-q 2 "
        "--target-noise 0.2 --policy-delay 2 (the actor and targets every other update). Fixed cost: the same "
        "updates on batches of one observation, next to no arithmetic: what is left is Python, dispatch, "
        "autograd and the optimizer calls. torch.compile'd: "
        "the same Learner with critic_loss and actor_loss wrapped in torch.compile (inductor, default mode), "
        "its speedup against ddpg.py's update; compile s = the wall time of its first updates (the first "
        "environment's includes torch.compile's one-off start-up; later ones reuse kernels of the same shapes). "
        f"Raw numbers: `{results['json']}`.",
    ]
    problems = [f"- {env_id} {LABELS[x['trainer']]} seed {x['seed']}{' under load' if x.get('load') else ''}: "
                f"exit {x['rc']}{'' if x['rc'] else ', no learning-phase steps/s'}\n```\n{x.get('output_tail', '')}\n```"
                for env_id, r in results["envs"].items() for x in r["runs"] if not x["ok"]]
    if problems:
        lines += ["", "## Failed runs", "", *problems]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    if opts.sb3_worker:
        sb3_worker(json.loads(opts.sb3_worker))
        return 0
    # a kill (SIGTERM) unwinds like Ctrl-C: the training run in progress and the busy processes are killed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    import ddpg
    import torch

    torch.set_flush_denormal(True)  # as ddpg.py's main() does, before any parallel op: the floor runs as ddpg.py
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if opts.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    try:  # the same flags ddpg.py gets: they shape the floor's Learner and SB3's matched hyperparameters
        # Args validates itself: nonsense values stop here, before any timing or file is written
        ddpg_args, _ = ddpg.parse_args(shlex.split(opts.extra_args))
    except ddpg.UserError as e:
        print(f"error: --extra-args: {e}", file=sys.stderr)
        return 2
    use_sb3 = not opts.no_sb3
    if use_sb3 and importlib.util.find_spec("stable_baselines3") is None:
        print(f"note: stable-baselines3 is not installed, so its column is skipped; to compare: {SB3_INSTALL}",
              file=sys.stderr)
        use_sb3 = False
    use_cleanrl = opts.cleanrl is not None
    if not use_cleanrl:
        print(f"note: no CleanRL columns; to add them, {CLEANRL_HOWTO}", file=sys.stderr)
    else:
        if opts.cleanrl_python is None:
            opts.cleanrl_python = ROOT / ".venv-cleanrl" / "bin" / "python"
            if not opts.cleanrl_python.exists():
                print(f"error: --cleanrl needs CleanRL's own venv: {opts.cleanrl_python} does not exist; make it "
                      "(benchmarks/README.md, 'CleanRL') or pass --cleanrl-python", file=sys.stderr)
                return 2
        opts.cleanrl_python = Path(os.path.abspath(opts.cleanrl_python))  # not resolve(): a venv's python is a link
        opts.cleanrl = opts.cleanrl.resolve()
        needed = sorted({CLEANRL_SCRIPTS["cleanrl-pf1"], *([CLEANRL_SCRIPTS["cleanrl-td3"]] if opts.td3 else [])})
        missing = [name for name in needed if not (opts.cleanrl / name).is_file()]
        if missing:
            print(f"error: --cleanrl {opts.cleanrl} has no {' or '.join(missing)} (where to get them: "
                  "benchmarks/README.md, 'CleanRL')", file=sys.stderr)
            return 2
    peers = [name for name, used in [("SB3", use_sb3), ("CleanRL", use_cleanrl)] if used]
    if peers and ddpg_args.policy_lr != ddpg_args.value_lr:
        print(f"note: {' and '.join(peers)} have one learning rate for actor and critic; they use --value-lr",
              file=sys.stderr)
    if peers and (ddpg_args.num_q != 1 or ddpg_args.noise_type != "gaussian" or ddpg_args.update_every != 1
                  or ddpg_args.policy_delay != 1 or ddpg_args.target_noise):
        print(f"note: the --extra-args change the algorithm; {' and '.join(peers)}'s DDPG stays plain DDPG",
              file=sys.stderr)
    if use_cleanrl and (tuple(ddpg_args.hidden_sizes) != (256, 256) or ddpg_args.updates_per_step != 1
                        or ddpg_args.max_episode_steps is not None):
        print("note: CleanRL's scripts have 256x256 networks, one update per step and the environment's own time "
              "limit, whatever the --extra-args say", file=sys.stderr)

    trainers = ["ddpg", *(["sb3"] if use_sb3 else []), *(["cleanrl-pf1", "cleanrl-pf2"] if use_cleanrl else [])]
    if opts.td3:
        trainers += ["ddpg-td3", *(["sb3-td3"] if use_sb3 else []), *(["cleanrl-td3"] if use_cleanrl else [])]
    loads = [0] + ([opts.load] if opts.load else [])
    command = shlex.join(["python", "benchmarks/sps.py", *(sys.argv[1:] if argv is None else argv)])
    results = {"command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "machine": machine_info(opts.threads, opts.device),
               "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k != "sb3_worker"},
               "json": str(opts.out.with_suffix(".json")), "trainers": trainers, "load_procs": [], "envs": {}}
    t_start = time.perf_counter()
    done = 0
    with tempfile.TemporaryDirectory(prefix="ddpg-bench-") as tmp:
        # a fresh inductor cache on disk: the first "compile s" is a cold compile, as a new user's first run sees it
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor-cache")
        shim = Path(tmp) / "cleanrl-shim"
        cleanrl_ids: dict[str, dict] = {}
        if use_cleanrl:
            (shim / "cleanrl_utils").mkdir(parents=True)
            (shim / "cleanrl_utils" / "__init__.py").write_text("")
            (shim / "cleanrl_utils" / "buffers.py").write_text(CLEANRL_SHIM)
            probe = probe_cleanrl(opts.cleanrl_python, opts.envs, Path(tmp))
            if "error" in probe:
                print(f"error: --cleanrl-python: {probe['error']}", file=sys.stderr)
                return 2
            cleanrl_ids = probe["envs"]
            results["cleanrl"] = {"dir": str(opts.cleanrl), "python": str(opts.cleanrl_python), "probe": probe,
                                  "sha256": {name: hashlib.sha256((opts.cleanrl / name).read_bytes()).hexdigest()
                                             for name in sorted(set(CLEANRL_SCRIPTS.values()))
                                             if (opts.cleanrl / name).is_file()}}
        n_runs = sum(len([t for t in trainers if not t.startswith("cleanrl") or "id" in cleanrl_ids.get(e, {})])
                     for e in opts.envs) * opts.repeats * len(loads)
        for env_id in opts.envs:
            print(f"[{env_id}] floor and update timings ...", file=sys.stderr, flush=True)
            try:
                floor = measure_floor(env_id, ddpg_args, opts.device, opts.floor_rounds, not opts.no_compile,
                                      opts.loop_steps)
            except ddpg.UserError as e:
                print(f"error: {env_id}: {e}", file=sys.stderr)
                return 2
            entry = {"floor": floor, "runs": [], "sb3_skipped": not use_sb3}
            env_trainers = trainers
            if use_cleanrl:
                entry["cleanrl_env_id"] = cleanrl_ids[env_id].get("id")
                if entry["cleanrl_env_id"] is None:
                    entry["cleanrl_note"] = cleanrl_ids[env_id]["note"]
                    env_trainers = [t for t in trainers if not t.startswith("cleanrl")]
                    print(f"note: [{env_id}] CleanRL skipped: {entry['cleanrl_note']}", file=sys.stderr)
            results["envs"][env_id] = entry
            print(f"[{env_id}] floor {floor['floor_ms']:.2f} ms (update {floor['update_ms']:.2f} ms, eager "
                  f"{floor['eager_update_ms']:.2f} ms)", file=sys.stderr, flush=True)
            for rep in range(opts.repeats):
                order = env_trainers[rep % len(env_trainers):] + env_trainers[:rep % len(env_trainers)]
                for load in loads:
                    with busy_load(load, results["load_procs"]):
                        for trainer in order:
                            workdir = Path(tmp) / f"{env_id.replace(':', '_').replace('/', '_')}-{trainer}-{rep}-{load}"
                            workdir.mkdir()
                            if trainer.startswith("ddpg"):
                                run = run_ddpg(env_id, rep + 1, opts, workdir, td3=trainer == "ddpg-td3")
                            elif trainer.startswith("sb3"):
                                run = run_sb3(env_id, rep + 1, opts, ddpg_args, workdir, td3=trainer == "sb3-td3")
                            else:
                                run = run_cleanrl(trainer, entry["cleanrl_env_id"], rep + 1, opts, ddpg_args,
                                                  workdir, shim)
                            run["load"] = load
                            entry["runs"].append(run)
                            done += 1
                            status = (f"{run['sps']:.1f} steps/s, peak {fmt(run['peak_rss_mib'], '.0f')} MiB"
                                      if run["ok"] else f"FAILED (exit {run['rc']})")
                            elapsed = time.perf_counter() - t_start
                            print(f"[{env_id}] {LABELS[trainer]} run {rep + 1}/{opts.repeats}"
                                  f"{f' with {load} busy' if load else ''}: {status}, {run['wall_s']:.0f} s "
                                  f"({done}/{n_runs} runs, {elapsed / 60:.1f} min so far)", file=sys.stderr, flush=True)
                            if not run["ok"]:
                                print(run.get("output_tail", ""), file=sys.stderr)
            entry["medians"] = {phase: {t: median(sps_of(entry, t, load)) if sps_of(entry, t, load) else None
                                        for t in env_trainers} for phase, load in phases(results)}
            entry["ratios"] = {phase: {f"{a} / {b}": med[a] / med[b] for a, b in RATIOS if med.get(a) and med.get(b)}
                               for phase, med in entry["medians"].items()}
            if entry["medians"]["idle"]["ddpg"]:
                entry["ms_per_step"] = 1e3 / entry["medians"]["idle"]["ddpg"]
                entry["efficiency"] = floor["floor_ms"] / entry["ms_per_step"]
            if "ddpg / sb3" in entry["ratios"]["idle"]:
                entry["sb3_ratio"] = entry["ratios"]["idle"]["ddpg / sb3"]
    results["elapsed_s"] = time.perf_counter() - t_start
    text = report(results)
    print(text)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(text)
    opts.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {opts.out} and {opts.out.with_suffix('.json')}", file=sys.stderr)
    failed = sum(not x["ok"] for r in results["envs"].values() for x in r["runs"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
