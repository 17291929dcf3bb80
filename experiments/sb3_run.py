"""Train Stable-Baselines3's DDPG or TD3 with ddpg.py's settings and evaluate it by ddpg.py's protocol.

    python experiments/sb3_run.py --algo ddpg --env-id HopperBulletEnv-v0 --seeds 1 2 3 \\
        --total-steps 100000 --runs-dir experiments/results/hopperbullet --exp-name hb_sb3-ddpg

The side-by-side runs of the README's results (docs/RESULTS.md): the same budget, the same
hyperparameters as ddpg.py's defaults (256x256 networks for actor and critic, Adam 1e-3 for both,
batch 256, 1M buffer, tau 0.005, gamma 0.99, one update per step, 5,000 uniformly random steps
first, Gaussian action noise of std 0.1 x the half action range; TD3 adds twin critics with the
min, target noise 0.2 clipped at 0.5 and policy delay 2: ddpg.py's --num-q 2 --q-reduce min
--target-noise 0.2 --policy-delay 2), and the same evaluation: ddpg.py's own make_env and evaluate(),
the deterministic policy on the episode seeds seed + 100000, seed + 100001 ..., every --eval-every
steps and at the end.

Each run gets a folder like ddpg.py's (<runs-dir>/<env>__<exp-name>__<seed>__<time>) with
config.json and summary.json holding ddpg.py's fields (status, eval_returns, final_eval_return_mean,
wall_time_s, learning_sps ...), so experiments/plot.py draws both trainers in one figure. A seed
whose folder already holds a finished summary.json is skipped. SB3 runs cannot be resumed: an
interrupted run is marked "interrupted" and a re-run starts it again. One CPU thread per run
(--threads), like the sweep's trials. Needs stable-baselines3 (benchmarks/requirements.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--algo", choices=["ddpg", "td3"], required=True)
    parser.add_argument("--env-id", default="HopperBulletEnv-v0")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--total-steps", type=int, default=100_000)
    parser.add_argument("--start-steps", type=int, default=5000, help="uniformly random steps first (ddpg.py's)")
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--runs-dir", default="runs/sb3")
    parser.add_argument("--exp-name", default=None, help="default: sb3-<algo>")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    ns = parser.parse_args(argv)
    for name in ("total_steps", "eval_every", "eval_episodes", "threads"):
        if getattr(ns, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if ns.start_steps < 0:
        parser.error("--start-steps must be >= 0")
    ns.exp_name = ns.exp_name or f"sb3-{ns.algo}"
    return ns


def finished_run(runs_dir: Path, env_name: str, exp_name: str, seed: int) -> Path | None:
    for path in sorted(runs_dir.glob(f"{env_name}__{exp_name}__{seed}__*")):
        try:
            if json.loads((path / "summary.json").read_text()).get("status") == "finished":
                return path
        except (OSError, ValueError):
            continue
    return None


class SB3Actor:
    """ddpg.evaluate() calls actor.act(obs): SB3's deterministic prediction."""

    def __init__(self, model):
        self.model = model

    def act(self, obs):
        return self.model.predict(obs, deterministic=True)[0]


def train_one(ns: argparse.Namespace, seed: int) -> int:
    import numpy as np
    import stable_baselines3 as sb3
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    import ddpg

    torch.set_num_threads(ns.threads)
    env_name = ns.env_id.split(":")[-1].replace("/", "-")
    runs_dir = Path(ns.runs_dir)
    done = finished_run(runs_dir, env_name, ns.exp_name, seed)
    if done is not None:
        print(f"# skip, finished: {done}")
        return 0
    env = ddpg.make_env(ns.env_id)
    eval_env = ddpg.make_env(ns.env_id)
    act_dim = env.action_space.shape[0]
    kwargs = dict(learning_rate=1e-3, buffer_size=1_000_000, learning_starts=ns.start_steps, batch_size=256,
                  tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, seed=seed, device="cpu", verbose=0,
                  action_noise=NormalActionNoise(np.zeros(act_dim), 0.1 * np.ones(act_dim)),
                  policy_kwargs=dict(net_arch=[256, 256]))
    if ns.algo == "td3":
        kwargs.update(policy_delay=2, target_policy_noise=0.2, target_noise_clip=0.5)
    # SB3's TD3 class is both algorithms: DDPG is TD3 with one critic, policy delay 1 and no target noise.
    model = (sb3.TD3 if ns.algo == "td3" else sb3.DDPG)("MlpPolicy", env, **kwargs)
    run_dir = runs_dir / f"{env_name}__{ns.exp_name}__{seed}__{int(time.time())}"
    run_dir.mkdir(parents=True, exist_ok=False)
    config = {"trainer": f"stable-baselines3 {sb3.__version__} {ns.algo.upper()}", "env_id": ns.env_id,
              "seed": seed, "exp_name": ns.exp_name, "total_steps": ns.total_steps, "start_steps": ns.start_steps,
              "eval_every": ns.eval_every, "eval_episodes": ns.eval_episodes, "torch_threads": ns.threads,
              **{k: v for k, v in kwargs.items() if k not in ("seed", "device", "verbose", "action_noise")},
              "noise_std": 0.1, "torch": torch.__version__}
    ddpg.write_json(run_dir / "config.json", json.loads(json.dumps(config, default=str)))
    eval_returns: list = []
    last: list = [None]
    t0 = time.time()
    learn_start: list = [None]
    eval_s = [0.0]  # evaluation time of the learning phase, left out of learning_sps as in ddpg.py

    def evaluate(step: int) -> None:
        t = time.time()
        returns = ddpg.evaluate(SB3Actor(model), eval_env, ns.eval_episodes, seed + 100_000)
        eval_returns.append([step, float(returns.mean())])
        last[0] = returns
        print(f"{env_name} {ns.exp_name} seed {seed} step {step}: eval {returns.mean():.2f} "
              f"({time.time() - t0:.0f}s)", flush=True)
        if learn_start[0] is not None:
            eval_s[0] += time.time() - t

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            step = self.num_timesteps
            if step == ns.start_steps:
                learn_start[0] = time.time()
            if step % ns.eval_every == 0 or step == ns.total_steps:
                evaluate(step)
            return True

    status = "interrupted"
    try:
        model.learn(total_timesteps=ns.total_steps, callback=Evaluate())
        if not eval_returns or eval_returns[-1][0] != ns.total_steps:
            evaluate(ns.total_steps)
        status = "finished"
    except KeyboardInterrupt:
        print(f"interrupted: {run_dir}", file=sys.stderr)
    finally:
        wall = time.time() - t0
        final = last[0] if status == "finished" else None
        learn_s = time.time() - learn_start[0] - eval_s[0] if learn_start[0] else None
        ddpg.write_json(run_dir / "summary.json", {
            "status": status, "env_id": ns.env_id, "exp_name": ns.exp_name, "seed": seed,
            "steps": int(model.num_timesteps), "episodes": int(model._episode_num),
            "final_eval_return_mean": float(final.mean()) if final is not None else None,
            "final_eval_return_std": float(final.std()) if final is not None else None,
            "wall_time_s": round(wall, 3),
            # steps/s of the learning phase without its evaluations (ddpg.py's learning_sps leaves out logging,
            # evaluation and saving)
            "learning_sps": round((model.num_timesteps - ns.start_steps) / learn_s, 2) if learn_s else None,
            "eval_returns": eval_returns, "device": "cpu", "run_dir": str(run_dir),
        })
        env.close()
        eval_env.close()
    return 0 if status == "finished" else 130


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(ns.threads))
    code = 0
    for seed in ns.seeds:
        code = train_one(ns, seed)
        if code:
            break
    return code


if __name__ == "__main__":
    sys.exit(main())
