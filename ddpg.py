"""DDPG: Deep Deterministic Policy Gradient (Lillicrap et al. 2015, arXiv:1509.02971), one file.

DDPG learns a deterministic policy mu(s) for continuous actions. A critic Q(s, a) regresses on
the one-step Bellman target computed with slowly moving *target* copies of both networks; the
actor follows the critic's gradient dQ/da (the deterministic policy gradient, Silver et al.
2014). Learning is off-policy from a replay buffer; exploration adds noise to the actions (or to
the actor's weights). TD3 (Fujimoto et al. 2018) is a few flags away: see the research options.

Layout, top to bottom: Args (every flag) -> environment helpers -> networks (Actor, QNetwork)
-> ReplayBuffer -> noise processes -> the update step -> evaluation, checkpoints and logging ->
train() -> main().

Run:   python ddpg.py --env-id HopperBulletEnv-v0      (python ddpg.py --help lists every flag)
Logs:  runs/<env>__<exp-name>__<seed>__<time>/  (tensorboard --logdir runs)
Eval:  python ddpg.py --env-id X --eval-only --checkpoint runs/<run>/checkpoints/final.pt
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import importlib
import io
import json
import math
import os
import pickle
import random
import re
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

CHECKPOINT_FORMAT = 1  # bump when the checkpoint layout changes; newer files are refused


@dataclass
class Args:
    # --- experiment ---
    exp_name: str = "ddpg"
    """name of the experiment, part of the run folder's name"""
    seed: int = 1
    """seed of python, numpy, torch and the environment"""
    torch_deterministic: bool = True
    """use deterministic torch algorithms (same seed, same device -> same weights)"""
    cuda: bool = True
    """train on CUDA when it is available"""
    torch_threads: int = 0
    """CPU threads for torch (0 = torch's default); use 1 when running several trainings at once"""
    runs_dir: str = "runs"
    """folder that holds one sub-folder per run"""

    # --- environment ---
    env_id: str = "HopperBulletEnv-v0"
    """gymnasium id with a continuous (Box) action space; 'module:Id' imports module first"""
    max_episode_steps: int | None = None
    """override the environment's time limit (truncation, not termination)"""

    # --- algorithm ---
    total_steps: int = 1_000_000
    """environment steps to train for"""
    start_steps: int = 5000
    """steps of uniformly random actions before the actor acts and updates begin"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions"""
    batch_size: int = 256
    """transitions per gradient update"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """Polyak averaging rate of the target networks"""
    policy_lr: float = 1e-3
    """learning rate of the actor (Adam)"""
    value_lr: float = 1e-3
    """learning rate of the critic(s) (Adam)"""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """hidden layer sizes of the actor and the critic"""
    updates_per_step: int = 1
    """gradient updates per environment step"""
    update_every: int = 1
    """run the updates in bursts: every N env steps do N * updates-per-step updates"""
    target_update_interval: int = 1
    """Polyak-update the targets every N actor updates"""

    # --- exploration ---
    noise_type: Literal["gaussian", "ou", "param"] = "gaussian"
    """exploration noise: gaussian on actions, Ornstein-Uhlenbeck on actions, or adaptive parameter noise"""
    noise_std: float = 0.1
    """std of the action noise, as a fraction of the action range/2 (param: initial weight-noise std)"""
    ou_theta: float = 0.15
    """OU mean-reversion rate theta"""
    ou_dt: float = 1e-2
    """OU time step dt"""
    param_noise_target_std: float = 0.2
    """param noise: target distance between perturbed and clean actions (fraction of range/2)"""
    param_noise_adapt_interval: int = 50
    """param noise: adapt the weight-noise std every N steps"""
    param_noise_adapt_coef: float = 1.01
    """param noise: multiply or divide the weight-noise std by this factor when adapting"""

    # --- research options (all off by default: plain DDPG) ---
    target_noise: float = 0.0
    """target policy smoothing std (TD3), fraction of range/2; 0 = off"""
    target_noise_clip: float = 0.5
    """clip of the target smoothing noise, fraction of range/2"""
    num_q: int = 1
    """number of critics (1 = DDPG, 2 = TD3's twin critics)"""
    q_reduce: Literal["min", "mean"] = "min"
    """combine the critics: min (TD3: target uses the min, actor uses critic 0) or mean (both use the mean)"""
    q_data_fraction: float = 1.0
    """each critic trains on its own random fraction of every batch (1.0 = whole batch)"""
    policy_delay: int = 1
    """update the actor and the targets every N critic updates (TD3: 2)"""
    actor_layer_norm: bool = False
    """LayerNorm after each hidden linear layer of the actor"""
    critic_layer_norm: bool = False
    """LayerNorm after each hidden linear layer of the critic(s)"""
    weights_init: Literal["torch", "xavier", "uniform"] = "torch"
    """weight init: torch default, xavier uniform, or DDPG paper fan-in uniform (final layer +-3e-3)"""
    bias_init: Literal["torch", "zeros", "uniform"] = "torch"
    """bias init: torch default, zeros, or DDPG paper fan-in uniform (final layer +-3e-3)"""

    # --- evaluation and checkpoints ---
    eval_every: int = 10_000
    """evaluate the deterministic policy every N steps (and at the end)"""
    eval_episodes: int = 10
    """episodes per evaluation"""
    save_every: int = 50_000
    """write checkpoints/latest.pt every N steps"""
    save_buffer: bool = False
    """also store the replay buffer in latest.pt, for exact resume (large: see README)"""
    resume: str | None = None
    """continue a run: its folder or a checkpoint inside it"""
    checkpoint: str | None = None
    """checkpoint to evaluate with --eval-only"""
    eval_only: bool = False
    """only evaluate --checkpoint for --eval-episodes episodes and print mean and std"""
    capture_video: bool = False
    """record evaluation episodes to runs/<run>/videos/"""

    # --- logging ---
    log_every: int = 1000
    """log losses, Q values and steps/s every N steps (plain log lines when not on a terminal)"""
    track: bool = False
    """mirror the run to Weights & Biases"""
    wandb_project: str = "ddpg"
    """Weights & Biases project"""
    wandb_entity: str | None = None
    """Weights & Biases entity (team or user)"""


class UserError(Exception):
    """Bad input: main() prints it as one 'error:' line and exits with code 2."""


# Flags that fix a network's shape: a checkpoint must agree with them.
ARCHITECTURE_FLAGS = ("env_id", "hidden_sizes", "num_q", "actor_layer_norm", "critic_layer_norm")


def check_args(args: Args) -> None:
    """Refuse nonsense hyperparameters before anything is created."""
    positive_ints = ["total_steps", "buffer_size", "batch_size", "updates_per_step", "update_every",
                     "target_update_interval", "eval_every", "eval_episodes", "save_every", "log_every",
                     "num_q", "policy_delay", "param_noise_adapt_interval"]
    for name in positive_ints:
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    floats = ["gamma", "tau", "policy_lr", "value_lr", "noise_std", "ou_theta", "ou_dt", "param_noise_target_std",
              "param_noise_adapt_coef", "target_noise", "target_noise_clip", "q_data_fraction"]
    for name in floats:
        if not math.isfinite(getattr(args, name)):
            raise UserError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(args, name)}")
    for name in ["policy_lr", "value_lr", "ou_theta", "ou_dt", "param_noise_target_std"]:
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ["noise_std", "target_noise", "target_noise_clip"]:
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not 0.0 <= args.gamma < 1.0 or not 0.0 < args.tau <= 1.0:
        raise UserError(f"need 0 <= --gamma < 1 and 0 < --tau <= 1, got gamma={args.gamma}, tau={args.tau}")
    if not 0.0 < args.q_data_fraction <= 1.0:
        raise UserError(f"--q-data-fraction must be in (0, 1], got {args.q_data_fraction}")
    if round(args.q_data_fraction * args.batch_size) < 1:
        raise UserError("--q-data-fraction * --batch-size must leave each critic at least one sample")
    if args.param_noise_adapt_coef <= 1.0:
        raise UserError(f"--param-noise-adapt-coef must be > 1, got {args.param_noise_adapt_coef}")
    if args.ou_theta * args.ou_dt >= 1.0:
        raise UserError("--ou-theta * --ou-dt must be < 1 for the OU process to be stable")
    if not args.hidden_sizes or min(args.hidden_sizes) <= 0:
        raise UserError(f"--hidden-sizes must be positive integers, got {args.hidden_sizes}")
    if args.start_steps < 0 or args.torch_threads < 0:
        raise UserError("--start-steps and --torch-threads must be >= 0")
    if args.torch_threads > (os.cpu_count() or 1):  # thousands of threads crash torch (segfault)
        raise UserError(f"--torch-threads {args.torch_threads} is more than this machine's {os.cpu_count()} CPUs")
    if not 0 <= args.seed < 2**32:  # numpy's global seed range
        raise UserError(f"--seed must be in [0, 2**32), got {args.seed}")
    if args.max_episode_steps is not None and args.max_episode_steps <= 0:
        raise UserError(f"--max-episode-steps must be positive, got {args.max_episode_steps}")
    if args.batch_size > args.buffer_size:
        raise UserError(f"--batch-size ({args.batch_size}) is larger than --buffer-size ({args.buffer_size})")
    if args.start_steps < args.batch_size and not (args.eval_only or args.resume):
        raise UserError(f"--start-steps ({args.start_steps}) is below --batch-size ({args.batch_size}): "
                        "the first updates would sample from too few transitions")
    if not args.env_id.strip():
        raise UserError("--env-id is empty")
    if not args.exp_name or not re.fullmatch(r"[\w.+-]+", args.exp_name):
        raise UserError(f"--exp-name must be letters, digits, '.', '+', '-' or '_', got {args.exp_name!r}")
    if args.eval_only and not args.checkpoint:
        raise UserError("--eval-only needs --checkpoint PATH")


def parse_args(argv: list[str] | None = None) -> tuple[Args, set[str]]:
    """tyro parses the flags; its boxed errors become one 'error:' line. Returns the args and the
    names of the flags given explicitly (they must agree with a checkpoint's)."""
    argv = sys.argv[1:] if argv is None else argv
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            args = tyro.cli(Args, args=argv)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        lines = [ln.strip(" │╭╮╰╯─\n") for ln in captured.getvalue().splitlines()]
        message = []
        for ln in lines[1:]:  # lines[0] is the box's title line
            if not ln or "For full helptext" in ln:
                break
            message.append(ln)
        title = lines[0] if lines else "invalid arguments"
        text = " ".join(message)
        raise UserError(text if text.startswith(title) else f"{title}: {text}" if text else title) from None
    given = {re.sub(r"^no-", "", a[2:].split("=")[0]).replace("-", "_") for a in argv if a.startswith("--")}
    return args, given


# ---------------------------------------------------------------------------------------------
# Environment helpers
# ---------------------------------------------------------------------------------------------


def resolve_env_id(env_id: str) -> None:
    """Make sure env_id is registered (PyBullet ids register on import), else suggest close ids."""
    if ":" in env_id:  # gymnasium's 'module:EnvId' form: the module registers the id
        module, env_id = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except Exception as e:  # missing, empty or relative name, or the module itself fails
            raise UserError(f"cannot import module {module!r} for --env-id: {type(e).__name__}: {e}") from None
    if env_id not in gym.registry:
        with contextlib.suppress(ImportError):
            import pybullet_envs_gymnasium  # noqa: F401  registers the *BulletEnv-v0 ids
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown environment id {env_id!r}{hint}")


def make_env(env_id: str, max_episode_steps: int | None = None, render_mode: str | None = None) -> gym.Env:
    """One environment with a continuous action space. gym.make adds the TimeLimit wrapper that
    *truncates* episodes; truncation is not termination (see the Bellman target)."""
    resolve_env_id(env_id)
    env_id = env_id.split(":", 1)[-1]
    try:
        mode = {"render_mode": render_mode} if render_mode else {}  # envs without a render_mode argument work too
        env = gym.make(env_id, max_episode_steps=max_episode_steps, **mode)
    except Exception as e:  # missing simulator dependencies, bad kwargs ...
        raise UserError(f"cannot create environment {env_id!r}: {type(e).__name__}: {e}") from None
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        env.close()
        raise UserError(f"{env_id} has a {type(space).__name__} action space; DDPG needs a continuous (Box) one")
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        env.close()
        raise UserError(f"{env_id} has unbounded actions; DDPG needs finite action bounds")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        env.close()
        raise UserError(f"{env_id} needs a flat Box observation space, got {env.observation_space}")
    if render_mode is not None:  # fail now with one line, not with a traceback at the first evaluation
        try:
            env.reset(seed=0)
            env.render()
        except Exception as e:  # e.g. pygame missing for the classic-control envs
            env.close()
            raise UserError(f"cannot render {env_id} for --capture-video: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from None
    return env


def env_state_picklable(env: gym.Env) -> bool:
    """Does pickling the env save the episode in progress? Not where the physics lives outside
    Python: gymnasium rebuilds EzPickle envs (MuJoCo) from their constructor arguments, and a
    PyBullet env holds a connection to its physics server that a pickle cannot carry."""
    u = env.unwrapped
    return not isinstance(u, gym.utils.EzPickle) and not type(u).__module__.startswith("pybullet")


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


def init_(weight: torch.Tensor, bias: torch.Tensor, fan_in: int, fan_out: int, final: bool,
          weights_init: str, bias_init: str) -> None:
    """Initialise one layer in place.
    torch:   U(+-1/sqrt(fan_in)) for weights and biases (what nn.Linear's default amounts to)
    xavier:  U(+-sqrt(6 / (fan_in + fan_out))) (Glorot & Bengio 2010)
    uniform: the DDPG paper's U(+-1/sqrt(fan_in)), and U(+-3e-3) for the final layer so that
             the initial actions and Q values are near zero (Lillicrap et al. 2015, sec. 7)."""
    fan_in_bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        if weights_init == "xavier":
            weight.uniform_(-math.sqrt(6.0 / (fan_in + fan_out)), math.sqrt(6.0 / (fan_in + fan_out)))
        else:
            bound = 3e-3 if (weights_init == "uniform" and final) else fan_in_bound
            weight.uniform_(-bound, bound)
        if bias_init == "zeros":
            bias.zero_()
        else:
            bound = 3e-3 if (bias_init == "uniform" and final) else fan_in_bound
            bias.uniform_(-bound, bound)


class Actor(nn.Module):
    """mu(s): the deterministic policy, squashed by tanh and scaled to the action bounds."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes, low, high, layer_norm=False,
                 weights_init="torch", bias_init="torch"):
        super().__init__()
        layers, sizes = [], [obs_dim, *hidden_sizes]
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers.append(nn.Linear(n_in, n_out))
            if layer_norm:
                layers.append(nn.LayerNorm(n_out))
            layers.append(nn.ReLU(inplace=True))  # in place: one activation buffer fewer per layer
        layers += [nn.Linear(sizes[-1], act_dim), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for i, m in enumerate(linears):
            init_(m.weight, m.bias, m.in_features, m.out_features, i == len(linears) - 1, weights_init, bias_init)
        # a = scale * tanh(.) + bias maps [-1, 1] onto [low, high], asymmetric bounds included
        self.register_buffer("action_scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs) * self.action_scale + self.action_bias


class QNetwork(nn.Module):
    """N critics Q_i(s, a), evaluated as one batched ensemble (N = 1 is DDPG's single critic).

    Layer k of all N critics is one weight tensor of shape (N, in, out), so a forward pass is a
    few batched matmuls instead of a Python loop over critics. Returns Q values of shape (N, B)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes, num_q=1, layer_norm=False,
                 weights_init="torch", bias_init="torch"):
        super().__init__()
        sizes = [obs_dim + act_dim, *hidden_sizes, 1]
        self.num_q, self.layer_norm = num_q, layer_norm
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(num_q, i, o)) for i, o in zip(sizes[:-1], sizes[1:])])
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(num_q, 1, o)) for o in sizes[1:]])
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            init_(w, b, w.shape[1], w.shape[2], k == len(self.weights) - 1, weights_init, bias_init)
        if layer_norm:  # per-critic LayerNorm gain and shift, one pair per hidden layer
            self.ln_weights = nn.ParameterList([nn.Parameter(torch.ones(num_q, 1, h)) for h in hidden_sizes])
            self.ln_biases = nn.ParameterList([nn.Parameter(torch.zeros(num_q, 1, h)) for h in hidden_sizes])

    def forward(self, obs: torch.Tensor, act: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        # detach_params: gradients flow to the action only (the actor's loss needs no critic grads)
        d = (lambda t: t.detach()) if detach_params else (lambda t: t)
        x = torch.cat([obs, act], dim=-1).unsqueeze(0)  # (1, B, obs+act), broadcast to N critics
        if self.num_q > 1:
            x = x.expand(self.num_q, -1, -1)
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(d(b), x, d(w))  # x @ W + b for every critic at once
            if k < last:
                if self.layer_norm:
                    x = F.layer_norm(x, x.shape[-1:]) * d(self.ln_weights[k]) + d(self.ln_biases[k])
                x = F.relu(x, inplace=True)  # the matmul's output is not needed for its backward
        return x.squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Replay buffer
# ---------------------------------------------------------------------------------------------


class ReplayBuffer:
    """Transitions (s, a, r, terminated, s') in preallocated tensors on the training device.

    Each observation is stored once: the next observation of the transition that starts in slot
    i is the observation in slot i+1. When an episode ends, its last observation keeps a slot of
    its own, marked not to be sampled as a start, and the next episode begins after it."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device):
        self.capacity, self.device = capacity, device
        self.obs = torch.zeros(capacity, obs_dim, dtype=torch.float32, device=device)
        self.actions = torch.zeros(capacity, act_dim, dtype=torch.float32, device=device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.terminated = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.valid = torch.zeros(capacity, dtype=torch.bool, device=device)  # slot starts a transition
        self.pos = 0  # slot of the next transition's observation
        self.high = 0  # slots [0, high) have been written
        self.added = 0  # transitions added since creation (or since a resume)

    def add(self, obs, action, reward: float, terminated: bool, next_obs, episode_end: bool) -> None:
        i, j = self.pos, (self.pos + 1) % self.capacity
        self.obs[i] = torch.as_tensor(obs, device=self.device)
        self.actions[i] = torch.as_tensor(action, device=self.device)
        self.rewards[i] = float(reward)
        self.terminated[i] = float(terminated)  # only true terminations, never time-limit truncations
        self.valid[i] = True
        self.obs[j] = torch.as_tensor(next_obs, device=self.device)
        self.valid[j] = False  # holds s' only, until the next transition starts there
        self.pos = (j + 1) % self.capacity if episode_end else j  # an episode's last s' keeps slot j
        self.high = max(self.high, j + 1, i + 1)
        self.added += 1

    def new_episode(self) -> None:
        """Start the next transition in a fresh slot (the previous episode was cut short)."""
        if self.added:
            # the skipped slot may hold an older lap's transition whose s' is about to be overwritten
            self.valid[self.pos] = False
            self.pos = (self.pos + 1) % self.capacity

    def sample(self, batch_size: int):
        """Uniform over stored transitions (rejection of the slots that only hold a last s')."""
        idx = torch.randint(self.high, (batch_size,), device=self.device)
        bad = ~self.valid[idx]
        while bad.any():
            idx[bad] = torch.randint(self.high, (int(bad.sum()),), device=self.device)
            bad = ~self.valid[idx]
        next_idx = (idx + 1) % self.capacity  # s' is stored once: the next slot's observation
        return self.obs[idx], self.actions[idx], self.rewards[idx], self.terminated[idx], self.obs[next_idx]

    def state_dict(self) -> dict:
        n = self.high
        # copy=True: torch.save of a slice would write the whole preallocated storage (all capacity slots)
        cut = lambda t: t[:n].to("cpu", copy=True)  # noqa: E731
        return {"obs": cut(self.obs), "actions": cut(self.actions), "rewards": cut(self.rewards),
                "terminated": cut(self.terminated), "valid": cut(self.valid),
                "pos": self.pos, "high": self.high, "added": self.added, "capacity": self.capacity}

    def load_state_dict(self, state: dict) -> None:
        n = state["high"]
        if state["capacity"] != self.capacity:
            raise UserError(f"saved buffer has capacity {state['capacity']}, --buffer-size is {self.capacity}")
        for name in ["obs", "actions", "rewards", "terminated", "valid"]:
            getattr(self, name)[:n] = state[name].to(self.device)
        self.pos, self.high, self.added = state["pos"], state["high"], state["added"]


# ---------------------------------------------------------------------------------------------
# Exploration noise
# ---------------------------------------------------------------------------------------------


class GaussianNoise:
    """Independent N(0, sigma^2) per step: DDPG's simplest exploration (as used by TD3)."""

    def __init__(self, size: int, sigma: float):
        self.size, self.sigma = size, sigma

    def reset(self) -> None:
        pass

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(0.0, self.sigma, self.size)  # eps ~ N(0, sigma^2), independent every step

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class OUNoise:
    """Ornstein-Uhlenbeck process, the DDPG paper's temporally correlated exploration:
    x <- x + theta * (mu - x) * dt + sigma * sqrt(dt) * N(0, 1).
    Its stationary std is sigma / sqrt(2 * theta - theta^2 * dt) ~ sigma / sqrt(2 * theta).
    The state returns to mu at the start of every episode."""

    def __init__(self, size: int, sigma: float, theta: float, dt: float, mu: float = 0.0):
        self.size, self.sigma, self.theta, self.dt, self.mu = size, sigma, theta, dt, mu
        self.x = np.full(size, mu)

    def reset(self) -> None:
        self.x = np.full(self.size, self.mu)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        # x <- x + theta * (mu - x) * dt + sigma * sqrt(dt) * N(0, 1): correlated in time, like inertia
        dx = self.theta * (self.mu - self.x) * self.dt + self.sigma * math.sqrt(self.dt) * rng.standard_normal(self.size)
        self.x = self.x + dx
        return self.x

    def state_dict(self) -> dict:
        return {"x": self.x.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.x = np.asarray(state["x"], dtype=np.float64).copy()


class ParamNoise:
    """Adaptive parameter-space noise (Plappert et al. 2017, arXiv:1706.01905).

    A copy of the actor with Gaussian noise on its weights acts in the environment; the copy is
    re-drawn at every episode start. Every few steps the noise std adapts so that the distance
    d = sqrt(mean((mu_perturbed(s) - mu(s))^2)), in units of range/2, tracks a target:
    std <- std / coef if d > target else std * coef. LayerNorm parameters are never perturbed."""

    def __init__(self, actor: Actor, init_std: float, target_std: float, coef: float):
        self.std, self.target_std, self.coef = init_std, target_std, coef
        self.perturbed = copy.deepcopy(actor).requires_grad_(False)  # acts in the environment
        self.probe = copy.deepcopy(actor).requires_grad_(False)  # measures the distance
        self.distance = float("nan")

    @torch.no_grad()
    def perturb(self, actor: Actor, into: Actor) -> None:
        for src, dst in zip(actor.modules(), into.modules()):
            if isinstance(src, nn.Linear):  # LayerNorm and the action scaling stay clean
                dst.weight.copy_(src.weight + self.std * torch.randn_like(src.weight))
                dst.bias.copy_(src.bias + self.std * torch.randn_like(src.bias))
            elif isinstance(src, nn.LayerNorm):
                dst.load_state_dict(src.state_dict())

    def reset(self, actor: Actor) -> None:
        self.perturb(actor, self.perturbed)  # theta~ = theta + std * N(0, I), fixed for the whole episode

    @torch.no_grad()
    def adapt(self, actor: Actor, obs: torch.Tensor) -> float:
        self.perturb(actor, self.probe)
        diff = (self.probe(obs) - actor(obs)) / actor.action_scale
        self.distance = diff.pow(2).mean().sqrt().item()  # d = sqrt(mean(((mu~(s) - mu(s)) / h)^2))
        # weight noise means more or less in action space as the actor trains: steer d to the target
        self.std = self.std / self.coef if self.distance > self.target_std else self.std * self.coef
        return self.distance

    def state_dict(self) -> dict:
        return {"std": self.std, "distance": self.distance, "perturbed": self.perturbed.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.std, self.distance = state["std"], state["distance"]
        self.perturbed.load_state_dict(state["perturbed"])


# ---------------------------------------------------------------------------------------------
# The update step
# ---------------------------------------------------------------------------------------------


def bellman_target(reward: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    # y = r + gamma * (1 - terminated) * Q'(s', mu'(s')); a truncated s' still has a future
    return reward + gamma * (1.0 - terminated) * next_q


@torch.no_grad()
def polyak_update(online: list[torch.Tensor], target: list[torch.Tensor], tau: float) -> None:
    # theta' <- tau * theta + (1 - tau) * theta': targets trail the online nets, so y moves slowly
    torch._foreach_lerp_(target, online, tau)


class Learner(nn.Module):
    """The four networks of DDPG, their optimizers, and one gradient update."""

    def __init__(self, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray, args: Args):
        super().__init__()
        self.args = args
        common = dict(weights_init=args.weights_init, bias_init=args.bias_init)
        self.actor = Actor(obs_dim, act_dim, args.hidden_sizes, low, high, args.actor_layer_norm, **common)
        self.critic = QNetwork(obs_dim, act_dim, args.hidden_sizes, args.num_q, args.critic_layer_norm, **common)
        # the targets start as exact copies of the online networks
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))
        self.n_updates = 0  # critic updates so far
        self.n_actor_updates = 0
        self.last_actor_loss = torch.zeros(())  # reported between delayed actor updates

    def make_optimizers(self) -> None:
        """Adam on each network; the fused kernel updates all of a network's tensors at once."""
        fused = dict(fused=True) if self.low.device.type in ("cpu", "cuda") else {}
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.args.policy_lr, **fused)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.args.value_lr, **fused)
        self.online = list(self.actor.parameters()) + list(self.critic.parameters())
        self.target = list(self.actor_target.parameters()) + list(self.critic_target.parameters())

    def critic_loss(self, obs, act, rew, term, next_obs):
        a = self.args
        with torch.no_grad():  # y is a fixed regression label: no gradient through the targets
            next_act = self.actor_target(next_obs)
            if a.target_noise > 0:
                # TD3 smoothing: a' = clip(mu'(s') + h * clip(eps, -c, c), low, high); no sharp Q peaks
                eps = (torch.randn_like(next_act) * a.target_noise).clamp(-a.target_noise_clip, a.target_noise_clip)
                next_act = (next_act + eps * self.actor.action_scale).clamp(self.low, self.high)
            next_q = self.critic_target(next_obs, next_act)  # (N, B)
            # y from min_i Q'_i (TD3's clipped double Q, against overestimation) or mean_i Q'_i
            next_q = next_q.min(0).values if a.q_reduce == "min" else next_q.mean(0)
            y = bellman_target(rew, term, next_q, a.gamma)
        q = self.critic(obs, act)  # (N, B)
        td_error2 = (q - y).pow(2)
        if a.q_data_fraction < 1.0:
            # each critic fits its own random k of the batch, to keep the critics' errors apart
            k = round(a.q_data_fraction * obs.shape[0])
            subset = torch.rand(q.shape, device=q.device).argsort(dim=1)[:, :k]
            td_error2 = td_error2.gather(1, subset)
        # L = sum_i mean_b (Q_i(s, a) - y)^2: each critic regresses on the same target
        return td_error2.mean(1).sum(), q

    def actor_loss(self, obs):
        # DPG: grad_theta J = E[grad_theta mu(s) * grad_a Q(s, a) at a = mu(s)], autograd of -Q(s, mu(s))
        q = self.critic(obs, self.actor(obs), detach_params=True)  # grads reach mu(s), not the critic
        q = q[0] if self.args.q_reduce == "min" else q.mean(0)  # TD3 trains the actor on critic 0
        return -q.mean()  # L = -mean_b Q(s, mu(s))

    def update(self, batch) -> torch.Tensor:
        """One critic update, and every policy_delay-th time an actor and target update.
        Returns the metrics [q_loss, q_mean, last actor_loss] as one tensor (no host sync here)."""
        obs, act, rew, term, next_obs = batch
        q_loss, q = self.critic_loss(obs, act, rew, term, next_obs)
        self.critic_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.critic_opt.step()
        self.n_updates += 1
        if self.n_updates % self.args.policy_delay == 0:  # policy delay (TD3): let the critic settle first
            actor_loss = self.actor_loss(obs)
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            self.n_actor_updates += 1
            self.last_actor_loss = actor_loss.detach()
            if self.n_actor_updates % self.args.target_update_interval == 0:
                polyak_update(self.online, self.target, self.args.tau)
        return torch.stack([q_loss.detach(), q.detach().mean(), self.last_actor_loss.to(q.device)])


# ---------------------------------------------------------------------------------------------
# Evaluation, checkpoints, logging
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(actor: Actor, env: gym.Env, episodes: int, seed: int, device: torch.device) -> np.ndarray:
    """Returns of the deterministic policy mu(s), no noise, on fixed seeds (seed, seed+1, ...)."""
    returns = np.zeros(episodes)
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            obs, reward, terminated, truncated, _ = env.step(action)
            returns[ep] += reward
            done = terminated or truncated
    return returns


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: a crash at any moment leaves
    either the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(obj, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def load_checkpoint(path: str | Path, prefer: str = "latest.pt") -> dict:
    """Load a checkpoint written by this script (a file, or a run folder: its checkpoints/<prefer>,
    else latest.pt), or raise UserError saying why not."""
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        path = folder / prefer if (folder / prefer).is_file() else folder / "latest.pt"
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own pickled state
    except Exception as e:
        raise UserError(f"cannot read checkpoint {path}: corrupt or not a checkpoint ({type(e).__name__})") from None
    if (not isinstance(ckpt, dict) or not isinstance(ckpt.get("format_version"), int) or "learner" not in ckpt
            or not isinstance(ckpt.get("args"), dict)):
        raise UserError(f"{path} is not a ddpg.py checkpoint")
    if ckpt["format_version"] > CHECKPOINT_FORMAT:
        raise UserError(f"{path} has checkpoint format {ckpt['format_version']}, newer than this ddpg.py "
                        f"(format {CHECKPOINT_FORMAT}); update ddpg.py")
    unknown = sorted(set(ckpt["args"]) - {f.name for f in dataclasses.fields(Args)})
    if unknown:  # written by a newer ddpg.py with flags this one lacks
        raise UserError(f"{path} has settings this ddpg.py does not know ({', '.join(unknown)}); update ddpg.py")
    ckpt["path"] = path
    return ckpt


def check_compatible(ckpt: dict, args: Args, given: set[str]) -> None:
    """Explicit flags that fix the network's shape must match the checkpoint's."""
    saved = ckpt["args"]
    for name in ARCHITECTURE_FLAGS:
        mine, theirs = getattr(args, name), saved[name]
        if name == "hidden_sizes":
            mine, theirs = tuple(mine), tuple(theirs)
        if name in given and mine != theirs:
            raise UserError(f"checkpoint {ckpt['path']} has {name.replace('_', '-')}={theirs}, "
                            f"but --{name.replace('_', '-')} is {mine}")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Logger:
    """TensorBoard always; Weights & Biases with --track. A failing wandb warns once and is
    dropped: it never stops training."""

    def __init__(self, run_dir: Path, args: Args, run_name: str, wandb_id: str | None):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(run_dir))
        self.wandb = None
        self.wandb_id = wandb_id
        if args.track:
            try:
                import wandb

                os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")  # unreachable: give up in 30 s, not wandb's 90+
                self.wandb = wandb.init(project=args.wandb_project, entity=args.wandb_entity, name=run_name,
                                        config=dataclasses.asdict(args), dir=str(run_dir), id=wandb_id,
                                        resume="allow" if wandb_id else None)
                self.wandb_id = self.wandb.id
            except Exception as e:  # offline, unreachable, not logged in, not installed ...
                self._wandb_failed(e)

    def _wandb_failed(self, e: Exception) -> None:
        print(f"warning: Weights & Biases disabled ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              "logging to TensorBoard only", file=sys.stderr)
        self.wandb = None

    def text(self, tag: str, text: str) -> None:
        self.writer.add_text(tag, text)

    def scalars(self, values: dict, step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)
        if self.wandb is not None:
            try:
                self.wandb.log(values, step=step)
            except Exception as e:
                self._wandb_failed(e)

    def close(self) -> None:
        self.writer.close()
        if self.wandb is not None:
            try:
                self.wandb.finish()
            except Exception as e:
                self._wandb_failed(e)


class Progress:
    """A tqdm bar on a terminal; a plain line every --log-every steps otherwise (CI, nohup)."""

    def __init__(self, total: int, start: int, log_every: int):
        self.total, self.log_every, self.bar = total, log_every, None
        self.info = {"ep_return": float("nan"), "eval": float("nan"), "sps": 0.0}
        if sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, smoothing=0.05)

    def update(self, step: int, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if step % 100 == 0:
                ret, ev = self.returns()
                self.bar.set_postfix(ret=ret, eval=ev, refresh=False)
        elif step % self.log_every == 0:
            ret, ev = self.returns()
            eta = (self.total - step) / max(self.info["sps"], 1e-9)
            print(f"step {step}/{self.total} | {self.info['sps']:.0f} steps/s | last return {ret} | last eval {ev}"
                  f" | ETA {time.strftime('%H:%M:%S', time.gmtime(min(eta, 86399)))}", flush=True)

    def returns(self) -> tuple[str, str]:
        """The last episode's return and the last evaluation, '-' until there is one."""
        return tuple(f"{x:.1f}" if math.isfinite(x) else "-" for x in (self.info["ep_return"], self.info["eval"]))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def markdown_table(args: Args) -> str:
    rows = "\n".join(f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items())
    return f"|param|value|\n|-|-|\n{rows}"


def pick_device(args: Args) -> torch.device:
    return torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True


# ---------------------------------------------------------------------------------------------
# Eval-only
# ---------------------------------------------------------------------------------------------


def eval_only(args: Args, given: set[str]) -> int:
    ckpt = load_checkpoint(args.checkpoint, prefer="final.pt")
    saved = ckpt["args"]
    if saved["env_id"] != args.env_id:
        raise UserError(f"checkpoint {ckpt['path']} was trained on {saved['env_id']}, not on {args.env_id}")
    check_compatible(ckpt, args, given)
    device = pick_device(args)
    env = make_env(args.env_id, args.max_episode_steps, render_mode="rgb_array" if args.capture_video else None)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    if (obs_dim, act_dim) != (ckpt["obs_dim"], ckpt["act_dim"]):
        raise UserError(f"checkpoint expects obs/action sizes {ckpt['obs_dim']}/{ckpt['act_dim']}, "
                        f"{args.env_id} has {obs_dim}/{act_dim}")
    a = Args(**{**saved, "hidden_sizes": tuple(saved["hidden_sizes"])})
    learner = Learner(obs_dim, act_dim, env.action_space.low, env.action_space.high, a)
    try:
        learner.load_state_dict(ckpt["learner"])
    except RuntimeError as e:
        raise UserError(f"checkpoint {ckpt['path']} does not fit the network: "
                            f"{(str(e).strip().splitlines() or [type(e).__name__])[-1].strip()}") from None
    learner.to(device).eval()
    if args.capture_video:
        folder = ckpt["path"].parent  # the run folder when the checkpoint sits in its checkpoints/
        run_dir = folder.parent if folder.name == "checkpoints" else folder
        video_dir = run_dir / "videos" / f"eval-only-{int(time.time())}"
        env = gym.wrappers.RecordVideo(env, str(video_dir), episode_trigger=lambda ep: True, disable_logger=True)
    returns = evaluate(learner.actor, env, args.eval_episodes, args.seed + 100_000, device)
    env.close()
    print(f"{args.env_id}: mean return {returns.mean():.2f} +- {returns.std():.2f} over {len(returns)} episodes "
          f"(checkpoint {ckpt['path']}, step {ckpt['global_step']})")
    return 0


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


class Interrupted:
    """Turns the first Ctrl-C / SIGTERM into a flag the loop checks at a safe point; a second
    one falls back to the default action (the checkpoint files stay intact: writes are atomic)."""

    def __init__(self):
        self.signum = None
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(self, signum, frame) -> None:
        self.signum = signum
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def train(args: Args, given: set[str]) -> int:
    ckpt = None
    if args.resume:
        ckpt = load_checkpoint(args.resume)
        if ckpt["path"].parent.name != "checkpoints":
            raise UserError(f"--resume needs a run folder or a checkpoint inside its checkpoints/, got {ckpt['path']}")
        check_compatible(ckpt, args, given)
        saved = dict(ckpt["args"], hidden_sizes=tuple(ckpt["args"]["hidden_sizes"]))
        if "total_steps" in given:  # the one setting a resume may change: train longer
            saved["total_steps"] = args.total_steps
        ignored = sorted(f"--{n.replace('_', '-')}" for n in given - {"resume", "total_steps"}
                         if n in saved and getattr(args, n) != saved[n] and n not in ARCHITECTURE_FLAGS)
        if ignored:
            print(f"warning: a resume keeps the run's settings; ignoring {' '.join(ignored)} "
                  "(start a new run to change them)", file=sys.stderr)
        args = Args(**saved)
        if ckpt["global_step"] >= args.total_steps:
            raise UserError(f"run already at step {ckpt['global_step']} of {args.total_steps}; "
                            "pass --total-steps N (larger) to train longer")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    seed_everything(args.seed, args.torch_deterministic)
    device = pick_device(args)

    env = make_env(args.env_id, args.max_episode_steps)
    eval_env = make_env(args.env_id, args.max_episode_steps, render_mode="rgb_array" if args.capture_video else None)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    scale = (high - low) / 2.0
    rng = np.random.default_rng(args.seed)  # all exploration randomness: random actions and noise

    try:
        learner = Learner(obs_dim, act_dim, low, high, args).to(device)
        learner.make_optimizers()
        buffer = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device)
    except (RuntimeError, MemoryError) as e:  # --buffer-size or --hidden-sizes too large for memory
        raise UserError(f"cannot allocate the networks and a buffer of {args.buffer_size} transitions on {device}: "
                        f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None
    if args.noise_type == "gaussian":
        noise = GaussianNoise(act_dim, args.noise_std)
    elif args.noise_type == "ou":
        noise = OUNoise(act_dim, args.noise_std, args.ou_theta, args.ou_dt)
    else:
        noise = ParamNoise(learner.actor, args.noise_std, args.param_noise_target_std, args.param_noise_adapt_coef)

    # --- the run folder: new, or the resumed one ---
    global_step, episode, wall_time, learn_time, learn_steps = 0, 0, 0.0, 0.0, 0
    eval_returns: list[list[float]] = []
    wandb_id = None
    if ckpt is not None:
        run_dir = ckpt["path"].parent.parent
        try:
            learner.load_state_dict(ckpt["learner"])
            learner.actor_opt.load_state_dict(ckpt["actor_opt"])
            learner.critic_opt.load_state_dict(ckpt["critic_opt"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"checkpoint {ckpt['path']} does not fit the network: "
                            f"{(str(e).strip().splitlines() or [type(e).__name__])[-1].strip()}") from None
        learner.n_updates, learner.n_actor_updates = ckpt["n_updates"], ckpt["n_actor_updates"]
        noise.load_state_dict(ckpt["noise"])
        rng.bit_generator.state = ckpt["exploration_rng"]
        global_step, episode = ckpt["global_step"], ckpt["episode"]
        wall_time, learn_time, learn_steps = ckpt["wall_time"], ckpt["learn_time"], ckpt["learn_steps"]
        eval_returns, wandb_id = ckpt["eval_returns"], ckpt.get("wandb_id")
        if "buffer" in ckpt:
            buffer.load_state_dict(ckpt["buffer"])
        else:
            print(f"warning: {ckpt['path'].name} holds no replay buffer (train with --save-buffer for that); "
                  f"it starts empty and refills for {max(args.start_steps, args.batch_size)} steps before updates resume",
                  file=sys.stderr)
        set_rng_state(ckpt["rng"])
    else:
        run_name = f"{args.env_id.split(':')[-1].replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
        run_dir = Path(args.runs_dir) / run_name
        try:
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=False)
        except OSError as e:
            raise UserError(f"cannot create run folder {run_dir}: {e.strerror or e}") from None
    write_json(run_dir / "config.json", dataclasses.asdict(args))
    ckpt_dir = run_dir / "checkpoints"

    logger = Logger(run_dir, args, run_dir.name, wandb_id)
    logger.text("hyperparameters", markdown_table(args))
    if args.capture_video:
        # record the first episode of every evaluation
        eval_env = gym.wrappers.RecordVideo(eval_env, str(run_dir / "videos"), disable_logger=True,
                                            episode_trigger=lambda ep: ep % args.eval_episodes == 0)

    # --- the episode in progress: restored exactly where the env can be pickled faithfully ---
    obs, ep_return, ep_length = None, 0.0, 0
    if ckpt is not None and ckpt.get("env_pickle") is not None and env_state_picklable(env):
        env.close()
        env = pickle.loads(ckpt["env_pickle"])
        obs, ep_return, ep_length = ckpt["obs"], ckpt["ep_return"], ckpt["ep_length"]
    elif ckpt is not None:
        print("warning: this environment's state cannot be saved; the episode in progress at the "
              "interruption is dropped and a new one starts", file=sys.stderr)
        buffer.new_episode()
    if obs is None:
        obs, _ = env.reset(seed=args.seed + global_step)
        noise.reset() if not isinstance(noise, ParamNoise) else noise.reset(learner.actor)
    # resumed without its buffer: collect with the current policy before updating again
    refill_until = max(args.start_steps, args.batch_size) if ckpt is not None and buffer.added == 0 else 0

    def state(with_buffer: bool) -> dict:
        picklable = env_state_picklable(env)
        return {
            "format_version": CHECKPOINT_FORMAT, "env_id": args.env_id, "obs_dim": obs_dim, "act_dim": act_dim,
            "args": dataclasses.asdict(args), "global_step": global_step, "episode": episode,
            "learner": learner.state_dict(), "actor_opt": learner.actor_opt.state_dict(),
            "critic_opt": learner.critic_opt.state_dict(), "n_updates": learner.n_updates,
            "n_actor_updates": learner.n_actor_updates, "noise": noise.state_dict(),
            "exploration_rng": rng.bit_generator.state, "rng": rng_state(),
            "env_pickle": pickle.dumps(env) if picklable else None, "obs": obs, "ep_return": ep_return,
            "ep_length": ep_length, "wall_time": wall_time + time.time() - t_start, "learn_time": learn_time,
            "learn_steps": learn_steps, "eval_returns": eval_returns, "wandb_id": logger.wandb_id,
            **({"buffer": buffer.state_dict()} if with_buffer else {}),
        }

    def save(obj: dict, name: str) -> None:
        try:
            atomic_save(obj, ckpt_dir / name)
        except OSError as e:  # disk full, quota, folder removed: the previous file is intact
            raise UserError(f"cannot write checkpoint {ckpt_dir / name}: {e.strerror or e}; "
                            "the previous checkpoint is kept") from None

    def write_summary(status: str, final_eval: np.ndarray | None) -> None:
        summary = {
            "status": status, "env_id": args.env_id, "exp_name": args.exp_name, "seed": args.seed,
            "total_steps": global_step, "episodes": episode,
            "final_eval_return_mean": float(final_eval.mean()) if final_eval is not None else None,
            "final_eval_return_std": float(final_eval.std()) if final_eval is not None else None,
            "wall_time_s": round(wall_time + time.time() - t_start, 3),
            "learning_sps": round(learn_steps / learn_time, 2) if learn_time > 0 else None,
            "eval_returns": eval_returns, "device": str(device), "run_dir": str(run_dir),
        }
        write_json(run_dir / "summary.json", summary)

    # --- the loop ---
    interrupted = Interrupted()
    progress = Progress(args.total_steps, global_step, args.log_every)
    t_start = time.time()
    t_log, step_log = time.time(), global_step
    metrics = None
    status, exit_code, last_eval = "finished", 0, None
    try:
        while global_step < args.total_steps:
            global_step += 1
            learning = global_step > args.start_steps and buffer.added >= refill_until
            t_step = time.time()

            # 1. act: uniform random in warm-up (broad data for the first critic), then clip(mu(s) + h * eps)
            if global_step <= args.start_steps:
                action = rng.uniform(low, high)
            else:
                with torch.no_grad():
                    obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
                    if isinstance(noise, ParamNoise):
                        action = noise.perturbed(obs_t).cpu().numpy().astype(np.float64)
                    else:
                        action = learner.actor(obs_t).cpu().numpy().astype(np.float64) + noise.sample(rng) * scale
                action = np.clip(action, low, high)

            # 2. step and store: only `terminated` zeroes the bootstrap; a time-limit truncation just ends it
            next_obs, reward, terminated, truncated, _ = env.step(action.astype(env.action_space.dtype))
            buffer.add(obs, action, reward, terminated, next_obs, terminated or truncated)
            obs = next_obs
            ep_return += float(reward)
            ep_length += 1
            if terminated or truncated:
                episode += 1
                progress.info["ep_return"] = ep_return
                logger.scalars({"charts/episodic_return": ep_return, "charts/episodic_length": ep_length}, global_step)
                obs, _ = env.reset()
                ep_return, ep_length = 0.0, 0
                noise.reset() if not isinstance(noise, ParamNoise) else noise.reset(learner.actor)

            # 3. learn
            if learning and global_step % args.update_every == 0:
                for _ in range(args.update_every * args.updates_per_step):
                    metrics = learner.update(buffer.sample(args.batch_size))
                if not torch.isfinite(metrics).all():  # divergence guard: stop before saving bad weights
                    bad = int((~torch.isfinite(metrics)).nonzero()[0])
                    name, value = ["q_loss", "q_mean", "actor_loss"][bad], metrics[bad].item()
                    kept = ckpt_dir / "latest.pt"
                    status, exit_code = "diverged", 3
                    print(f"error: training diverged at step {global_step}: {name} is {value}; last good checkpoint: "
                          f"{kept if kept.exists() else 'none yet'}", file=sys.stderr)
                    break
                if isinstance(noise, ParamNoise) and global_step % args.param_noise_adapt_interval == 0:
                    noise.adapt(learner.actor, buffer.sample(args.batch_size)[0])
            if learning:
                learn_time += time.time() - t_step
                learn_steps += 1

            # 4. log, evaluate, save
            if global_step % args.log_every == 0:
                now = time.time()
                sps = (global_step - step_log) / (now - t_log)
                t_log, step_log = now, global_step
                progress.info["sps"] = sps
                values = {"charts/sps": sps}
                if learn_time > 0:
                    values["charts/learning_sps"] = learn_steps / learn_time
                if metrics is not None:
                    q_loss, q_mean, actor_loss = metrics.tolist()
                    values.update({"losses/q_loss": q_loss, "losses/q_mean": q_mean})
                    if math.isfinite(actor_loss):
                        values["losses/actor_loss"] = actor_loss
                if isinstance(noise, ParamNoise):
                    values.update({"noise/param_std": noise.std, "noise/param_distance": noise.distance})
                logger.scalars(values, global_step)
            if global_step % args.eval_every == 0 or global_step == args.total_steps:
                last_eval = evaluate(learner.actor, eval_env, args.eval_episodes, args.seed + 100_000, device)
                eval_returns.append([global_step, float(last_eval.mean())])
                progress.info["eval"] = float(last_eval.mean())
                logger.scalars({"eval/return_mean": last_eval.mean(), "eval/return_std": last_eval.std()}, global_step)
            if global_step % args.save_every == 0:
                save(state(args.save_buffer), "latest.pt")
            progress.update(global_step)

            if interrupted.signum is not None:
                status, exit_code = "interrupted", 128 + interrupted.signum
                break
        if status == "finished":
            save(state(False), "final.pt")
            save(state(args.save_buffer), "latest.pt")
        elif status == "interrupted":
            save(state(args.save_buffer), "latest.pt")
        write_summary(status, last_eval if status == "finished" else None)
    finally:
        interrupted.restore()
        progress.close()
        logger.close()
        for e in (env, eval_env):
            with contextlib.suppress(Exception):  # a simulator that fails to close must not hide the real error
                e.close()
    if status == "interrupted":
        print(f"interrupted at step {global_step}; resume with: python ddpg.py --resume {run_dir}", file=sys.stderr)
    elif status == "finished":
        done = time.time() - t_start
        print(f"done: {args.env_id} {global_step} steps in {done:.0f}s (this session), final eval return "
              f"{last_eval.mean():.2f} +- {last_eval.std():.2f}; run folder {run_dir}")
    return exit_code


def main(argv: list[str] | None = None) -> int:
    # Flush denormal floats (below 1.2e-38) to zero on CPU. Adam's moments of a weight whose gradient
    # stays zero (a dead ReLU unit) decay into that range, about one value in six after 1,500 updates
    # on HopperBulletEnv-v0, and x86 computes on denormals many times slower; as zeros they change nothing
    # that matters. First thing: torch's worker threads, started later, inherit the setting.
    torch.set_flush_denormal(True)
    try:
        args, given = parse_args(argv)
        check_args(args)
        return eval_only(args, given) if args.eval_only else train(args, given)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once; files on disk are whole (atomic writes)
        print("interrupted again: stopped at once; the last checkpoint written is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    warnings.filterwarnings("ignore", category=UserWarning, module="gymnasium")
    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run is over: a late Ctrl-C must not break the exit
    sys.exit(code)
