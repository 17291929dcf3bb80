"""How fast does ddpg.py learn, next to the floor of what one learning step must cost and next to
Stable-Baselines3's DDPG with the same hyperparameters?

For each environment, on this machine, in this one run:
  1. the floor, measured in this process: one environment step, one actor forward on one
     observation (numpy -> torch -> numpy, as ddpg.py acts), one replay sample and one update of
     ddpg.py's Learner (same shapes and flags as the runs);
  2. the update against the plain eager update of benchmarks/eager_ddpg.py (CleanRL style), and
     the cost of --num-q 2 and of TD3 (--num-q 2 --target-noise 0.2 --policy-delay 2), all timed
     interleaved in rounds so that drift hits every variant alike;
  3. --repeats runs of `python ddpg.py` and of SB3's DDPG in subprocesses, interleaved
     (ddpg, sb3, ddpg, sb3, ...), each reporting its learning-phase steps/s (after the random
     warm-up, without evaluation and checkpoint time) and its peak resident memory.

Run from the repository root:   python benchmarks/sps.py          (--help for the flags)
It prints a markdown table and writes it to benchmarks/results.md, the raw numbers beside it
(benchmarks/results.json). See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(Path(__file__).resolve().parent))

DEFAULT_ENVS = ["Pendulum-v1", "HopperBulletEnv-v0", "Hopper-v5"]
SB3_INSTALL = "pip install -r benchmarks/requirements.txt"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--envs", nargs="+", default=DEFAULT_ENVS, help="environment ids (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="runs per environment and trainer; medians are reported")
    p.add_argument("--steps", type=int, default=5000, help="total environment steps of each run (default: %(default)s)")
    p.add_argument("--start-steps", type=int, default=1000,
                   help="random warm-up steps; the learning phase is steps - start-steps (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads, for ddpg.py, SB3 and the floor")
    p.add_argument("--no-sb3", action="store_true", help="skip the Stable-Baselines3 runs")
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
    if args.repeats < 1 or args.threads < 1 or args.floor_rounds < 1 or args.loop_steps < 1:
        p.error("--repeats, --threads, --floor-rounds and --loop-steps must be positive")
    if args.start_steps < 1 or args.steps <= args.start_steps:
        p.error("need 0 < --start-steps < --steps (the learning phase is what is measured)")
    return args


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
            "torch_threads": threads, "python": platform.python_version(), "versions": versions,
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
            bool(torch.isfinite(torch.stack(metrics)).all())  # the divergence guard, Run.diverged
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
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p),
            "WANDB_MODE": "disabled"}


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
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - t0
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    return proc.returncode, wall, tail


def run_ddpg(env_id: str, seed: int, opts: argparse.Namespace, workdir: Path) -> dict:
    peak_file = workdir / "peak_kib"
    cmd = [sys.executable, "-c", PEAK_WRAPPER, str(peak_file), str(ROOT / "ddpg.py"), "--env-id", env_id, "--seed", str(seed),
           "--total-steps", str(opts.steps), "--start-steps", str(opts.start_steps),
           "--eval-every", str(10**9), "--eval-episodes", "1", "--save-every", str(10**9),
           "--torch-threads", str(opts.threads), "--runs-dir", str(workdir / "runs"), "--exp-name", "bench",
           *([] if opts.device == "cuda" else ["--no-cuda"]), *shlex.split(opts.extra_args)]
    rc, wall, tail = run_measured(cmd, workdir, opts.threads, opts.timeout)
    rss = int(peak_file.read_text()) / 1024.0 if peak_file.exists() else None
    summaries = list((workdir / "runs").glob("*/summary.json"))
    summary = json.loads(summaries[0].read_text()) if summaries else {}
    ok = rc == 0 and summary.get("status") == "finished" and summary.get("learning_sps")
    return {"trainer": "ddpg", "seed": seed, "rc": rc, "ok": bool(ok), "sps": summary.get("learning_sps"),
            "peak_rss_mib": rss, "wall_s": wall, "device": summary.get("device"),
            "final_eval_return": summary.get("final_eval_return_mean"), "cmd": shlex.join(["python", *cmd[4:]]),
            **({} if ok else {"output_tail": tail})}


def sb3_config(env_id: str, seed: int, opts: argparse.Namespace, ddpg_args) -> dict:
    a = ddpg_args
    return {"env_id": env_id, "seed": seed, "steps": opts.steps, "start_steps": opts.start_steps,
            "threads": opts.threads, "device": opts.device, "hidden_sizes": list(a.hidden_sizes),
            "batch_size": a.batch_size, "lr": a.value_lr, "buffer_size": a.buffer_size, "tau": a.tau,
            "gamma": a.gamma, "noise_std": a.noise_std, "gradient_steps": a.updates_per_step,
            "max_episode_steps": a.max_episode_steps}


def run_sb3(env_id: str, seed: int, opts: argparse.Namespace, ddpg_args, workdir: Path) -> dict:
    config = sb3_config(env_id, seed, opts, ddpg_args)
    result = workdir / "sb3.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--sb3-worker", json.dumps({**config, "out": str(result)})]
    rc, wall, tail = run_measured(cmd, workdir, opts.threads, opts.timeout)
    out = json.loads(result.read_text()) if result.exists() else {}
    ok = rc == 0 and bool(out.get("sps"))
    return {"trainer": "sb3", "seed": seed, "rc": rc, "ok": ok, "sps": out.get("sps"), "peak_rss_mib": out.get("peak_rss_mib"),
            "wall_s": wall, "config": config, **({} if ok else {"output_tail": tail})}


def sb3_worker(config: dict) -> None:
    """One SB3 DDPG training: warm-up in a first learn() call, then the timed learning phase."""
    import numpy as np
    import torch

    torch.set_num_threads(config["threads"])
    from stable_baselines3 import DDPG
    from stable_baselines3.common.noise import NormalActionNoise

    import ddpg

    env = ddpg.make_env(config["env_id"], config["max_episode_steps"])  # the same env and time limit as ddpg.py
    act_dim = env.action_space.shape[0]
    hidden = config["hidden_sizes"]
    model = DDPG(
        "MlpPolicy", env, learning_rate=config["lr"], buffer_size=config["buffer_size"],
        learning_starts=config["start_steps"], batch_size=config["batch_size"], tau=config["tau"],
        gamma=config["gamma"], train_freq=1, gradient_steps=config["gradient_steps"],
        # SB3 adds the noise to the action rescaled to [-1, 1]: sigma 0.1 there is 0.1 * range/2 here
        action_noise=NormalActionNoise(np.zeros(act_dim), config["noise_std"] * np.ones(act_dim)),
        policy_kwargs={"net_arch": {"pi": hidden, "qf": hidden}}, seed=config["seed"], device=config["device"],
        verbose=0)
    model.learn(total_timesteps=config["start_steps"])  # random warm-up: no update happens up to learning_starts
    assert model.num_timesteps == config["start_steps"]
    learning = config["steps"] - config["start_steps"]
    t0 = time.perf_counter()
    model.learn(total_timesteps=learning, reset_num_timesteps=False)
    elapsed = time.perf_counter() - t0
    assert model.num_timesteps == config["steps"], model.num_timesteps
    Path(config["out"]).write_text(json.dumps({"sps": round(learning / elapsed, 2), "learn_s": elapsed,
                                               "n_updates": int(model._n_updates), "peak_rss_mib": peak_rss_mib()}))


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def fmt(x, spec: str = ".1f", empty: str = "-") -> str:
    return empty if x is None or x != x else format(x, spec)


def spread(values: list[float]) -> str:
    return f"{median(values):.1f} ({min(values):.1f}-{max(values):.1f})" if values else "failed"


def ddpg_command(results: dict) -> str:
    """The first ddpg.py command, its temporary folders shortened."""
    for r in results["envs"].values():
        for x in r["runs"]:
            if x["trainer"] == "ddpg":
                return re.sub(r"/\S*/ddpg-bench-[^/]+/\S+/runs", "TMP/runs", x["cmd"])
    return "-"


def table_head(title: str, columns: list[str]) -> list[str]:
    """A blank line, a '## title' heading, a blank line and a markdown table's header rows."""
    return ["", f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "-|" * len(columns)]


def report(results: dict) -> str:
    m, o = results["machine"], results["options"]
    lines = [
        "# ddpg.py learning-phase steps/s",
        "",
        f"- command: `{results['command']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), torch threads {m['torch_threads']}, "
        f"device {m['device']}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}, load average at start "
        f"{m['load_average_at_start'][0]:.2f}",
        "- versions: python " + m["python"] + ", " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        f"- runs: {o['steps']} steps, the first {o['start_steps']} random (no updates); steps/s counts the "
        f"{o['steps'] - o['start_steps']} learning steps only; median (min-max) of {o['repeats']} runs, "
        f"ddpg.py and SB3 interleaved; extra ddpg.py flags: `{o['extra_args'] or 'none'}`",
        f"- each ddpg.py run: `{ddpg_command(results)}`",
        f"- started {results['started']}, took {results['elapsed_s'] / 60:.1f} min",
    ]
    lines += table_head("Training runs", ["env", "ddpg.py steps/s", "SB3 DDPG steps/s", "ddpg.py / SB3",
                                          "ddpg.py peak RSS MiB", "SB3 peak RSS MiB"])
    for env_id, r in results["envs"].items():
        d = [x["sps"] for x in r["runs"] if x["trainer"] == "ddpg" and x["ok"]]
        s = [x["sps"] for x in r["runs"] if x["trainer"] == "sb3" and x["ok"]]
        d_rss = [x["peak_rss_mib"] for x in r["runs"] if x["trainer"] == "ddpg" and x["ok"] and x["peak_rss_mib"]]
        s_rss = [x["peak_rss_mib"] for x in r["runs"] if x["trainer"] == "sb3" and x["ok"] and x["peak_rss_mib"]]
        sb3_cell = spread(s) if s else ("skipped" if r["sb3_skipped"] else "failed")
        lines.append(f"| {env_id} | {spread(d)} | {sb3_cell} | {fmt(r.get('sb3_ratio'), '.2f')}x | "
                     f"{fmt(median(d_rss), '.0f')} | {fmt(median(s_rss), '.0f')} |")
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
        "cannot avoid, each timed alone, before the runs. In sequence: the same pieces in a loop like ddpg.py's, "
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
    problems = [f"- {env_id} {x['trainer']} seed {x['seed']}: exit {x['rc']}\n```\n{x.get('output_tail', '')}\n```"
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

    import torch

    import ddpg

    torch.set_flush_denormal(True)  # as ddpg.py's main() does, before any parallel op: the floor runs as ddpg.py
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
    if use_sb3 and ddpg_args.policy_lr != ddpg_args.value_lr:
        print("note: SB3 has one learning rate for actor and critic; it uses --value-lr", file=sys.stderr)
    if use_sb3 and (ddpg_args.num_q != 1 or ddpg_args.noise_type != "gaussian" or ddpg_args.update_every != 1):
        print("note: the --extra-args change the algorithm; SB3's DDPG stays plain DDPG", file=sys.stderr)

    command = shlex.join(["python", "benchmarks/sps.py", *(sys.argv[1:] if argv is None else argv)])
    results = {"command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "machine": machine_info(opts.threads, opts.device),
               "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k != "sb3_worker"},
               "json": str(opts.out.with_suffix(".json")), "envs": {}}
    t_start = time.perf_counter()
    n_runs = len(opts.envs) * opts.repeats * (2 if use_sb3 else 1)
    done = 0
    with tempfile.TemporaryDirectory(prefix="ddpg-bench-") as tmp:
        # a fresh inductor cache on disk: the first "compile s" is a cold compile, as a new user's first run sees it
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor-cache")
        for env_id in opts.envs:
            print(f"[{env_id}] floor and update timings ...", file=sys.stderr, flush=True)
            try:
                floor = measure_floor(env_id, ddpg_args, opts.device, opts.floor_rounds, not opts.no_compile,
                                      opts.loop_steps)
            except ddpg.UserError as e:
                print(f"error: {env_id}: {e}", file=sys.stderr)
                return 2
            entry = {"floor": floor, "runs": [], "sb3_skipped": not use_sb3}
            results["envs"][env_id] = entry
            print(f"[{env_id}] floor {floor['floor_ms']:.2f} ms (update {floor['update_ms']:.2f} ms, eager "
                  f"{floor['eager_update_ms']:.2f} ms)", file=sys.stderr, flush=True)
            for rep in range(opts.repeats):
                for trainer in (["ddpg", "sb3"] if use_sb3 else ["ddpg"]):
                    workdir = Path(tmp) / f"{env_id.replace(':', '_').replace('/', '_')}-{trainer}-{rep}"
                    workdir.mkdir()
                    if trainer == "ddpg":
                        run = run_ddpg(env_id, rep + 1, opts, workdir)
                    else:
                        run = run_sb3(env_id, rep + 1, opts, ddpg_args, workdir)
                    entry["runs"].append(run)
                    done += 1
                    status = (f"{run['sps']:.1f} steps/s, peak {fmt(run['peak_rss_mib'], '.0f')} MiB" if run["ok"]
                              else f"FAILED (exit {run['rc']})")
                    elapsed = time.perf_counter() - t_start
                    print(f"[{env_id}] {trainer} run {rep + 1}/{opts.repeats}: {status}, {run['wall_s']:.0f} s "
                          f"({done}/{n_runs} runs, {elapsed / 60:.1f} min so far)", file=sys.stderr, flush=True)
                    if not run["ok"]:
                        print(run.get("output_tail", ""), file=sys.stderr)
            d = [x["sps"] for x in entry["runs"] if x["trainer"] == "ddpg" and x["ok"]]
            s = [x["sps"] for x in entry["runs"] if x["trainer"] == "sb3" and x["ok"]]
            if d:
                entry["ms_per_step"] = 1e3 / median(d)
                entry["efficiency"] = floor["floor_ms"] / entry["ms_per_step"]
            if d and s:
                entry["sb3_ratio"] = median(d) / median(s)
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
