"""What flushing denormals to zero buys: ddpg.py's learning loop with and without it.

ddpg.py's main() calls torch.set_flush_denormal(True). Adam's moments of a weight whose gradient stays
zero (a dead ReLU unit) decay by beta each update and, after several hundred updates, sit in the
denormal range (below 1.2e-38), where x86 arithmetic takes a slow path. This script runs the same
learning loop (the env, act with Gaussian noise, store, sample, ddpg.Learner.update) in two fresh
processes per repeat, one with flush-to-zero and one without, alternating, and reports for each the
share of denormal values in Adam's state and the ms per learning step over the last --measure steps.

Run from the repository root:   python benchmarks/denormals.py      (--help for the flags)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ddpg_argv(cfg: dict) -> list[str]:
    """The ddpg.py flags of a worker's learning loop (the rest are ddpg.py's defaults)."""
    return ["--env-id", cfg["env_id"], "--seed", str(cfg["seed"]), "--start-steps", str(cfg["start_steps"])]


def worker(cfg: dict) -> dict:
    import torch

    if cfg["ftz"]:
        torch.set_flush_denormal(True)  # first, as in ddpg.py: the worker threads inherit it
    torch.set_num_threads(cfg["threads"])
    import numpy as np

    sys.path.insert(0, str(ROOT))
    import ddpg

    args, _ = ddpg.parse_args(ddpg_argv(cfg))
    ddpg.seed_everything(args.seed, False)
    env = ddpg.make_env(args.env_id, args.max_episode_steps)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    device = torch.device("cpu")
    learner = ddpg.Learner(obs_dim, act_dim, low, high, args, device)  # its Adam optimizers built, as in setup()
    buffer = ddpg.ReplayBuffer(args.buffer_size, obs_dim, act_dim, device)
    noise = ddpg.GaussianNoise((high - low) / 2.0, args.noise_std)
    rng = np.random.default_rng(args.seed)
    obs, _ = env.reset(seed=args.seed)
    noise.reset(learner.actor, rng)
    n_learn = cfg["learn"] + cfg["measure"]
    t_measure = None
    # ddpg.train()'s calls in its order (its logging, evaluation and checkpoints aside); step counts from 1 there
    for step in range(1, args.start_steps + n_learn + 1):
        if step == args.start_steps + cfg["learn"] + 1:
            t_measure = time.perf_counter()
        if step <= args.start_steps:
            action = rng.uniform(low, high)
        else:
            action = np.clip(noise.explore(learner.actor, obs, rng), low, high)
        next_obs, reward, terminated, truncated, _ = env.step(action.astype(env.action_space.dtype))
        buffer.add(obs, action, reward, terminated, next_obs, episode_end=terminated or truncated)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
            noise.reset(learner.actor, rng)
        if step > args.start_steps:
            metrics = learner.update(buffer.sample(args.batch_size))
            all(math.isfinite(v) for v in ddpg.scalars(metrics).values())  # the divergence guard, Run.diverged
            noise.adapt(step, learner.actor, buffer)
    ms = (time.perf_counter() - t_measure) / cfg["measure"] * 1e3
    tiny, denormal, total = torch.finfo(torch.float32).tiny, 0, 0
    for opt in (learner.critic_opt, learner.actor_opt):
        for state in opt.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                x = state[key]
                denormal += int(((x != 0) & (x.abs() < tiny)).sum())
                total += x.numel()
    return {"ftz": cfg["ftz"], "ms_per_step": ms, "denormal_share": denormal / total}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env-id", default="HopperBulletEnv-v0")
    p.add_argument("--start-steps", type=int, default=1000, help="random steps first, no updates (%(default)s)")
    p.add_argument("--learn", type=int, default=1500, help="learning steps before the measured ones (%(default)s)")
    p.add_argument("--measure", type=int, default=1000, help="learning steps measured (%(default)s)")
    p.add_argument("--repeats", type=int, default=2, help="process pairs (with, without), alternating")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.worker:
        print(json.dumps(worker(json.loads(opts.worker))))
        return 0
    if opts.learn < 0 or min(opts.measure, opts.repeats, opts.threads, opts.start_steps) < 1:
        p.error("need --learn >= 0 and --measure, --repeats, --threads, --start-steps >= 1")
    sys.path.insert(0, str(ROOT))
    import ddpg

    try:  # the values ddpg.py refuses (e.g. --start-steps below its --batch-size) stop here, not in a worker
        ddpg.parse_args(ddpg_argv({"env_id": opts.env_id, "seed": 1, "start_steps": opts.start_steps}))
    except ddpg.UserError as e:
        p.error(str(e))
    env = {**os.environ, "OMP_NUM_THREADS": str(opts.threads), "MKL_NUM_THREADS": str(opts.threads)}
    results = {True: [], False: []}
    for rep in range(opts.repeats):
        for ftz in ([True, False] if rep % 2 == 0 else [False, True]):
            cfg = {"env_id": opts.env_id, "seed": 1, "start_steps": opts.start_steps, "learn": opts.learn,
                   "measure": opts.measure, "threads": opts.threads, "ftz": ftz}
            proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], env=env, cwd=ROOT,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                return 1
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[ftz].append(r)
            print(f"flush-to-zero {'on ' if ftz else 'off'}: {r['ms_per_step']:.2f} ms/step, "
                  f"{r['denormal_share']:.1%} of Adam's state denormal", file=sys.stderr, flush=True)
    on = statistics.median(r["ms_per_step"] for r in results[True])
    off = statistics.median(r["ms_per_step"] for r in results[False])
    share = statistics.median(r["denormal_share"] for r in results[False])
    print(f"{opts.env_id}, learning steps {opts.learn + 1}-{opts.learn + opts.measure}, {opts.threads} threads, "
          f"medians of {opts.repeats}: flush-to-zero on {on:.2f} ms/step, off {off:.2f} ms/step "
          f"({off / on:.2f}x); without it {share:.1%} of Adam's moments are denormal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
