"""DDPG: Deep Deterministic Policy Gradient (Lillicrap et al. 2015, arXiv:1509.02971), in one file.

DDPG learns a deterministic policy mu(s) for continuous actions. A critic Q(s, a) regresses on the one-step
Bellman target made with slowly moving *target* copies of both networks; the actor climbs the critic's gradient
dQ/da (the deterministic policy gradient, Silver et al. 2014). Learning is off-policy, from a replay buffer;
exploration adds noise to the actions or to the actor's weights. TD3 (Fujimoto et al. 2018) is a few flags away.

Run: python ddpg.py --env-id HopperBulletEnv-v0   (--help lists every flag)   Eval: --eval-only --checkpoint RUN
Logs: runs/<env>__<exp-name>__<seed>__<time>/ (tensorboard --logdir runs)
Map: Args, then THE ALGORITHM (networks, replay buffer, noise, Bellman target, Polyak, Learner, and the loop
train()), then THE PLUMBING (validation, environments, checkpoints, logging, signals, setup, eval-only, main).
"""

from __future__ import annotations

import argparse, contextlib, copy, ctypes, dataclasses, difflib, hashlib, hmac, importlib, io, json, math, os  # stdlib
import pickle, random, re, shlex, shutil, signal, sys, tempfile, threading, time, traceback, typing, warnings
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal, NamedTuple

if __name__ == "__main__":  # Ctrl-C while torch and gymnasium load (seconds): leave quietly, nothing to save yet
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(128 + signum))
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro


@dataclass
class Args:  # every flag: `--help` shows the comment beside it; the type says what values are allowed
    # --- experiment ---
    exp_name: str = "ddpg"  # name of the experiment, part of the run folder's name
    seed: Seed = 1  # seed of python, numpy, torch and the environment
    torch_deterministic: bool = True  # deterministic torch algorithms (same seed, same device -> same weights)
    cuda: bool = True  # train on CUDA when it is available
    torch_threads: NonNegInt = 0  # CPU threads for torch; 0 = as many as the cores other processes leave free
    runs_dir: str = "runs"  # folder that holds one sub-folder per run
    # --- environment ---
    env_id: str = "HopperBulletEnv-v0"  # gymnasium id with a continuous (Box) action space; 'module:Id' imports module
    max_episode_steps: PosInt | None = None  # override the environment's time limit (truncation, not termination)
    # --- algorithm ---
    total_steps: PosInt = 1_000_000  # environment steps to train for
    start_steps: NonNegInt = 5000  # steps of uniformly random actions before the actor acts and updates begin
    buffer_size: PosInt = 1_000_000  # replay buffer capacity in transitions
    batch_size: PosInt = 256  # transitions per gradient update
    gamma: Discount = 0.99  # discount factor, in [0, 1)
    tau: Fraction = 0.005  # Polyak averaging rate of the target networks
    policy_lr: PosFloat = 1e-3  # learning rate of the actor (Adam)
    value_lr: PosFloat = 1e-3  # learning rate of the critic(s) (Adam)
    hidden_sizes: Sizes = (256, 256)  # hidden layer sizes of the actor and the critic
    updates_per_step: PosInt = 1  # gradient updates per environment step
    update_every: PosInt = 1  # run the updates in bursts: every N env steps do N * updates-per-step updates
    target_update_interval: PosInt = 1  # Polyak-update the targets every N actor updates
    # --- exploration ---
    noise_type: str = "gaussian"  # gaussian | ou (Ornstein-Uhlenbeck) | param (adaptive parameter noise): NOISES
    noise_std: NonNegFloat = 0.1  # std of the action noise, fraction of the action range/2 (param: initial std)
    ou_theta: PosFloat = 0.15  # OU mean-reversion rate theta
    ou_dt: PosFloat = 1e-2  # OU time step dt
    param_noise_target_std: PosFloat = 0.2  # param noise: target distance of perturbed actions (fraction of range/2)
    param_noise_adapt_interval: PosInt = 50  # param noise: adapt its std on learning steps divisible by N
    param_noise_adapt_coef: AboveOne = 1.01  # param noise: multiply or divide its std by this factor
    # --- research options (all off by default: plain DDPG) ---
    target_noise: NonNegFloat = 0.0  # target policy smoothing std (TD3), fraction of range/2; 0 = off
    target_noise_clip: NonNegFloat = 0.5  # clip of the target smoothing noise, fraction of range/2
    num_q: PosInt = 1  # number of critics (1 = DDPG, 2 = TD3's twin critics)
    q_reduce: Literal["min", "mean"] = "min"  # min (TD3: target takes the min, actor critic 0) or mean (both)
    q_data_fraction: Fraction = 1.0  # each critic trains on its own random fraction of every batch
    policy_delay: PosInt = 1  # update the actor and the targets every N critic updates (TD3: 2)
    actor_layer_norm: bool = False  # LayerNorm after each hidden linear layer of the actor
    critic_layer_norm: bool = False  # LayerNorm after each hidden linear layer of the critic(s)
    weights_init: Literal["torch", "xavier", "uniform"] = "torch"  # uniform: DDPG paper's fan-in, last layer 3e-3
    bias_init: Literal["torch", "zeros", "uniform"] = "torch"  # uniform: DDPG paper's fan-in, last layer 3e-3
    # --- evaluation and checkpoints ---
    eval_every: PosInt = 10_000  # evaluate the deterministic policy every N steps (and at the end)
    eval_episodes: PosInt = 10  # episodes per evaluation
    save_every: PosInt = 50_000  # write checkpoints/latest.pt every N steps
    save_buffer: bool = False  # also store the replay buffer in latest.pt, for exact resume (large: see README)
    resume: str | None = None  # continue a run: its folder or a checkpoint inside it
    checkpoint: str | None = None  # checkpoint (or run folder) to evaluate with --eval-only
    eval_only: bool = False  # only evaluate --checkpoint for --eval-episodes episodes and print mean and std
    capture_video: bool = False  # record evaluation episodes to runs/<run>/videos/
    # --- logging ---
    log_every: PosInt = 1000  # log losses, Q values and steps/s every N steps (plain lines when not on a terminal)
    track: bool = False  # mirror the run to Weights & Biases
    wandb_project: str = "ddpg"  # Weights & Biases project
    wandb_entity: str | None = None  # Weights & Biases entity (team or user)

    def __post_init__(self):
        validate(self)  # the rules in the types above, and the few that tie two flags together


# ==== THE ALGORITHM: networks, replay buffer, exploration noise, Bellman target, Polyak, the update and ====
# ==== the training loop. Whatever else a run needs (checkpoints, logs, signals ...) is below train(). ====


def init_(weight, bias, fan_in: int, fan_out: int, final: bool, weights_init: str, bias_init: str) -> None:
    """torch: U(+-1/sqrt(fan_in)) (nn.Linear's default); xavier: U(+-sqrt(6 / (fan_in + fan_out)));
    uniform: the DDPG paper's U(+-1/sqrt(fan_in)), U(+-3e-3) on the final layer (Q and mu start near 0)."""
    fan_in_bound, xavier_bound = 1.0 / math.sqrt(fan_in), math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        w = xavier_bound if weights_init == "xavier" else 3e-3 if weights_init == "uniform" and final else fan_in_bound
        weight.uniform_(-w, w)
        b = 3e-3 if bias_init == "uniform" and final else fan_in_bound
        bias.zero_() if bias_init == "zeros" else bias.uniform_(-b, b)


class Actor(nn.Module):
    """mu(s): the deterministic policy, squashed by tanh and scaled to the action bounds."""

    def __init__(self, obs_dim, act_dim, hidden_sizes, low, high, layer_norm=False, weights_init="torch",
                 bias_init="torch"):
        super().__init__()
        layers, sizes = [], [obs_dim, *hidden_sizes]
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), *([nn.LayerNorm(n_out)] if layer_norm else []), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], act_dim), nn.Tanh())
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for i, m in enumerate(linears):
            init_(m.weight, m.bias, m.in_features, m.out_features, i == len(linears) - 1, weights_init, bias_init)
        # a = h * tanh(.) + c, h = (high - low) / 2, c = (high + low) / 2: [-1, 1] onto [low, high], asymmetric too
        self.register_buffer("action_scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs) * self.action_scale + self.action_bias

    def act(self, obs: np.ndarray) -> np.ndarray:
        """mu(s) for one observation, numpy in and out (float64, like the bounds it is clipped to)."""
        with torch.no_grad():
            obs = torch.as_tensor(obs, dtype=torch.float32, device=self.action_scale.device)
            return self(obs).cpu().numpy().astype(np.float64)


class QNetwork(nn.Module):
    """N critics Q_i(s, a) as one batched ensemble (N = 1 is DDPG's critic): layer k of all N critics is one
    weight tensor (N, in, out), so a forward pass is a few batched matmuls. Returns Q values of shape (N, B)."""

    def __init__(self, obs_dim, act_dim, hidden_sizes, num_q=1, layer_norm=False, weights_init="torch",
                 bias_init="torch"):
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
        d = (lambda t: t.detach()) if detach_params else (lambda t: t)  # grads reach the action only
        x = torch.cat([obs, act], dim=-1).unsqueeze(0).expand(self.num_q, -1, -1)  # (N, B, obs+act): N critics
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(d(b), x, d(w))  # x @ W + b for every critic at once
            if k < len(self.weights) - 1:
                if self.layer_norm:
                    x = F.layer_norm(x, x.shape[-1:]) * d(self.ln_weights[k]) + d(self.ln_biases[k])
                x = F.relu(x, inplace=True)  # the matmul's output is not needed for its backward
        return x.squeeze(-1)


# Transitions (s, a, r, terminated, s'), batch first; terminated is 0 after a time-limit truncation. A new
# field is a name here and its value in ReplayBuffer.sample: nothing else builds or unpacks a Batch.
Batch = namedtuple("Batch", "obs act rew terminated next_obs")


class ReplayBuffer:
    """Transitions in preallocated tensors on the training device. The layout, in slots:
    - a transition starting in slot i holds s, a, r, terminated in slot i, and its s' is the obs of slot
      i+1 (mod capacity): each observation is stored once. valid[i] marks the slots that start one.
    - within an episode, transitions fill consecutive slots, so the continuation of the transition in
      slot i is the one in slot i+1, when valid[i+1] (successor()). The last s' of an episode keeps a
      slot of its own (valid False) and the next episode starts after it; new_episode() also skips a
      slot when an episode is cut short without its last s' (a resume that cannot restore it).
    - writing wraps around at capacity, overwriting the oldest slots; high is how many slots hold data."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device):
        self.capacity, self.device = capacity, device
        self.obs = torch.zeros(capacity, obs_dim, dtype=torch.float32, device=device)
        self.actions = torch.zeros(capacity, act_dim, dtype=torch.float32, device=device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.terminated = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.valid = torch.zeros(capacity, dtype=torch.bool, device=device)  # slot starts a transition
        self.pos, self.high, self.added = 0, 0, 0  # next slot to write; slots [0, high) written; transitions

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

    def new_episode(self) -> None:  # the previous episode was cut short: start the next one in a fresh slot
        if self.added:  # the skipped slot may start an older lap's transition whose s' is about to be overwritten
            self.valid[self.pos] = False
            self.pos = (self.pos + 1) % self.capacity

    def successor(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots idx -> the slot of s' (where the episode's next transition starts) and whether it goes on there."""
        next_idx = (idx + 1) % self.capacity
        return next_idx, self.valid[next_idx]

    def sample(self, batch_size: int) -> Batch:
        """Uniform over stored transitions (rejection of the slots that only hold a last s')."""
        idx = torch.randint(self.high, (batch_size,), device=self.device)
        bad = ~self.valid[idx]
        while bad.any():
            idx[bad] = torch.randint(self.high, (int(bad.sum()),), device=self.device)
            bad = ~self.valid[idx]
        next_idx, _ = self.successor(idx)
        return Batch(obs=self.obs[idx], act=self.actions[idx], rew=self.rewards[idx], terminated=self.terminated[idx],
                     next_obs=self.obs[next_idx])

    def state_dict(self) -> dict:  # every array's written slots (copies: a slice would save all its storage)
        arrays = {name: t[: self.high].to("cpu", copy=True) for name, t in vars(self).items() if torch.is_tensor(t)}
        return {**arrays, "pos": self.pos, "high": self.high, "added": self.added, "capacity": self.capacity}

    def load_state_dict(self, state: dict) -> None:
        n = state["high"]
        if not (0 <= state["pos"] < self.capacity and 0 <= n <= self.capacity == state["capacity"]):
            raise ValueError(f"positions do not fit: pos {state['pos']}, high {n}, capacity {state['capacity']}, "
                             f"--buffer-size {self.capacity}")
        for name, t in vars(self).items():
            if torch.is_tensor(t) and len(state[name]):  # empty: an array this run's file lacked keeps its zeros
                t[:n] = state[name].to(self.device)
        self.pos, self.high, self.added = state["pos"], n, state["added"]


class Noise:
    """Exploration, one interface for every process: explore() picks the action to take, reset() runs at
    every episode start, adapt() after every round of updates. Action noises add h * eps to mu(s)."""

    def __init__(self, scale: np.ndarray):
        self.scale = scale  # h = (high - low) / 2: noise is in units of the action's half-range

    def explore(self, actor: Actor, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return actor.act(obs) + self.sample(rng) * self.scale  # a = mu(s) + h * eps (the loop clips it)

    def reset(self, actor: Actor, rng: np.random.Generator) -> None: ...  # at every episode start
    def adapt(self, step: int, actor: Actor, buffer: ReplayBuffer) -> None: ...  # after every round of updates
    def metrics(self) -> dict: return {}  # values to log
    def state_dict(self) -> dict: return {}  # what a checkpoint keeps
    def load_state_dict(self, state: dict) -> None: ...


class GaussianNoise(Noise):
    """eps ~ N(0, sigma^2), independent every step (as in TD3)."""

    def __init__(self, scale: np.ndarray, sigma: float):
        super().__init__(scale)
        self.sigma = sigma

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(0.0, self.sigma, len(self.scale))


class OUNoise(Noise):
    """Ornstein-Uhlenbeck process, the DDPG paper's temporally correlated exploration. Stationary std
    sigma / sqrt(2 theta - theta^2 dt) ~ sigma / sqrt(2 theta); back to mu at every episode start."""

    def __init__(self, scale: np.ndarray, sigma: float, theta: float, dt: float, mu: float = 0.0):
        super().__init__(scale)
        self.sigma, self.theta, self.dt, self.mu = sigma, theta, dt, mu
        self.x = np.full(len(scale), mu)

    def reset(self, actor: Actor, rng: np.random.Generator) -> None:
        self.x = np.full(len(self.scale), self.mu)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        # x <- x + theta * (mu - x) * dt + sigma * sqrt(dt) * N(0, 1): correlated in time, like inertia
        eps = rng.standard_normal(len(self.x))
        self.x = self.x + (self.theta * (self.mu - self.x) * self.dt + self.sigma * math.sqrt(self.dt) * eps)
        return self.x

    def state_dict(self) -> dict: return {"x": self.x.copy()}
    def load_state_dict(self, state: dict) -> None: self.x = np.asarray(state["x"], dtype=np.float64).copy()


class ParamNoise(Noise):
    """Adaptive parameter-space noise (Plappert et al. 2017): a copy of the actor with Gaussian noise on its weights
    (re-drawn at every episode start; LayerNorm stays clean) acts. On learning steps divisible by `interval` that
    run updates, d = sqrt(mean(((mu~(s) - mu(s)) / h)^2)) steers it: std <- std / coef if d > target_std else * coef."""

    def __init__(self, actor: Actor, init_std: float, target_std: float, coef: float, interval: int, batch_size: int):
        self.std, self.target_std, self.coef = init_std, target_std, coef
        self.interval, self.batch_size = interval, batch_size
        self.perturbed = copy.deepcopy(actor).requires_grad_(False)  # acts in the environment
        self.probe = copy.deepcopy(actor).requires_grad_(False)  # measures the distance
        self.distance = float("nan")

    def perturb(self, actor: Actor, into: Actor) -> None:
        with torch.no_grad():
            for src, dst in zip(actor.modules(), into.modules()):
                if isinstance(src, nn.Linear):  # theta~ = theta + std * N(0, I); LayerNorm and the scaling stay clean
                    dst.weight.copy_(src.weight + self.std * torch.randn_like(src.weight))
                    dst.bias.copy_(src.bias + self.std * torch.randn_like(src.bias))
                elif isinstance(src, nn.LayerNorm):
                    dst.load_state_dict(src.state_dict())

    def explore(self, actor: Actor, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.perturbed.act(obs)  # a = mu~(s)

    def reset(self, actor: Actor, rng: np.random.Generator) -> None:
        self.perturb(actor, self.perturbed)  # one perturbation for the whole episode

    def adapt(self, step: int, actor: Actor, buffer: ReplayBuffer) -> None:
        with torch.no_grad():
            if step % self.interval == 0:  # the same weight noise moves the actions more or less as the actor trains
                obs = buffer.sample(self.batch_size).obs
                self.perturb(actor, self.probe)
                self.distance = ((self.probe(obs) - actor(obs)) / actor.action_scale).pow(2).mean().sqrt().item()
                self.std = self.std / self.coef if self.distance > self.target_std else self.std * self.coef

    def metrics(self) -> dict: return {"noise/param_std": self.std, "noise/param_distance": self.distance}
    def state_dict(self) -> dict:
        return {"std": self.std, "distance": self.distance, "perturbed": self.perturbed.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.std, self.distance = state["std"], state["distance"]
        self.perturbed.load_state_dict(state["perturbed"])


def half_range(space: gym.spaces.Box) -> np.ndarray:
    return (space.high.astype(np.float64) - space.low.astype(np.float64)) / 2.0  # h: noise is in units of it


NOISES = {  # --noise-type -> its process, from the flags, the actor, the action space and the episode length
    # (the time limit, None without one): a new process is one class above and one line here
    "gaussian": lambda args, actor, space, ep_len: GaussianNoise(half_range(space), args.noise_std),
    "ou": lambda args, actor, space, ep_len: OUNoise(half_range(space), args.noise_std, args.ou_theta, args.ou_dt),
    "param": lambda args, actor, space, ep_len: ParamNoise(actor, args.noise_std, args.param_noise_target_std,
                                                           args.param_noise_adapt_coef,
                                                           args.param_noise_adapt_interval, args.batch_size),
}


def bellman_target(rew: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    # y = r + gamma * (1 - terminated) * Q'(s', mu'(s')); a truncated s' still has a future
    return rew + gamma * (1.0 - terminated) * next_q


def polyak_update(online: list[torch.Tensor], target: list[torch.Tensor], tau: float) -> None:
    # theta' <- tau * theta + (1 - tau) * theta': targets trail the online nets, so y moves slowly
    with torch.no_grad():
        torch._foreach_lerp_(target, online, tau)


# One update's numbers, as tensors (reading them waits for the device); actor_loss is the last actor update's.
# Logged as losses/<name> (a non-scalar one as a histogram); a non-finite scalar stops the run (Run.diverged).
Metrics = namedtuple("Metrics", "q_loss q_mean actor_loss")


class Learner(nn.Module):
    """The four networks of DDPG, their Adam optimizers, and one gradient update."""

    def __init__(self, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray, args: Args,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.args, kw = args, dict(weights_init=args.weights_init, bias_init=args.bias_init)
        self.actor = Actor(obs_dim, act_dim, args.hidden_sizes, low, high, args.actor_layer_norm, **kw)
        self.critic = QNetwork(obs_dim, act_dim, args.hidden_sizes, args.num_q, args.critic_layer_norm, **kw)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)  # targets start as exact copies
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))
        self.to(device)
        fused = dict(fused=True) if torch.device(device).type in ("cpu", "cuda") else {}  # one kernel per network
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=args.policy_lr, **fused)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=args.value_lr, **fused)
        self.online = list(self.actor.parameters()) + list(self.critic.parameters())
        self.target = list(self.actor_target.parameters()) + list(self.critic_target.parameters())
        self.n_updates, self.n_actor_updates = 0, 0  # critic updates, actor updates
        self.register_buffer("last_actor_loss", torch.zeros((), device=device), persistent=False)  # not saved

    def state_dict(self) -> dict:  # what a checkpoint keeps: the networks, both optimizers, the update counters
        return {"nets": super().state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict(), "n_updates": self.n_updates,
                "n_actor_updates": self.n_actor_updates}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state["nets"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.n_updates, self.n_actor_updates = state["n_updates"], state["n_actor_updates"]

    def critic_loss(self, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.args
        with torch.no_grad():  # y is a fixed regression label: no gradient through the targets
            next_act = self.actor_target(b.next_obs)  # mu'(s')
            if a.target_noise > 0:  # TD3 smoothing: a' = clip(mu'(s') + h * clip(eps, -c, c), low, high)
                eps = (torch.randn_like(next_act) * a.target_noise).clamp(-a.target_noise_clip, a.target_noise_clip)
                next_act = (next_act + eps * self.actor.action_scale).clamp(self.low, self.high)
            next_q = self.critic_target(b.next_obs, next_act)  # Q'_i(s', a'), shape (N, B)
            # min_i Q'_i (TD3's clipped double Q, against overestimation) or mean_i Q'_i; N = 1: Q'
            next_q = next_q.min(0).values if a.q_reduce == "min" else next_q.mean(0)
            y = bellman_target(b.rew, b.terminated, next_q, a.gamma)
        q = self.critic(b.obs, b.act)  # (N, B)
        td_error2 = (q - y).pow(2)
        if a.q_data_fraction < 1.0:  # each critic fits its own random k of the batch, to keep their errors apart
            k = round(a.q_data_fraction * b.obs.shape[0])
            td_error2 = td_error2.gather(1, torch.rand(q.shape, device=q.device).argsort(dim=1)[:, :k])
        return td_error2.mean(1).sum(), q  # L = sum_i mean_b (Q_i(s, a) - y)^2

    def actor_loss(self, obs: torch.Tensor) -> torch.Tensor:
        # DPG: grad J = E[grad_theta mu(s) * grad_a Q(s, a) at a = mu(s)], the autograd of -Q(s, mu(s))
        q = self.critic(obs, self.actor(obs), detach_params=True)  # grads reach mu(s), not the critic
        q = q[0] if self.args.q_reduce == "min" else q.mean(0)  # TD3 trains the actor on critic 0
        return -q.mean()  # L = -mean_b Q(s, mu(s))

    def update(self, batch: Batch) -> Metrics:
        """A critic update; every policy_delay-th, an actor update; every target_update_interval-th of those, Polyak."""
        q_loss, q = self.critic_loss(batch)
        self.critic_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.critic_opt.step()
        self.n_updates += 1
        if self.n_updates % self.args.policy_delay == 0:  # policy delay (TD3): let the critic settle first
            actor_loss = self.actor_loss(batch.obs)
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            self.n_actor_updates += 1
            self.last_actor_loss = actor_loss.detach()
            if self.n_actor_updates % self.args.target_update_interval == 0:
                polyak_update(self.online, self.target, self.args.tau)
        return Metrics(q_loss.detach(), q.detach().mean(), self.last_actor_loss)


def make_parts(args: Args, env: gym.Env, device: torch.device | str = "cpu") -> tuple[Learner, ReplayBuffer, Noise]:
    """The algorithm's parts for env, built from the flags, ready to use (setup() makes a run's with it)."""
    obs_dim, space = env.observation_space.shape[0], env.action_space
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    learner = Learner(obs_dim, space.shape[0], low, high, args, device)
    buffer = ReplayBuffer(args.buffer_size, obs_dim, space.shape[0], device)
    noise = NOISES[args.noise_type](args, learner.actor, space, env.spec.max_episode_steps if env.spec else None)
    return learner, buffer, noise


@dataclass
class LoopState:  # where the loop is; a checkpoint saves and restores it (a new field needs nothing more)
    step: int = 0
    episode: int = 0
    obs: np.ndarray | None = None
    ep_return: float = 0.0
    ep_length: int = 0

    def state_dict(self) -> dict: return dataclasses.asdict(self)
    def load_state_dict(self, state: dict) -> None: self.__dict__.update(state)


def train(args: Args, run: Run) -> None:
    """DDPG's loop: act, step, store, learn. `run`, made (or resumed) by setup() below, logs, evaluates and saves."""
    env, learner, buffer, noise, rng = run.env, run.learner, run.buffer, run.noise, run.rng
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    s = run.state  # step, episode, obs, episode return and length: what a checkpoint restores
    metrics = None
    while s.step < args.total_steps:
        s.step += 1
        learning = s.step > args.start_steps and buffer.added >= run.refill_until
        t_step = time.time()

        # 1. act: uniform random in the warm-up (broad data for the first critic), then clip(mu(s) + noise)
        if s.step <= args.start_steps:
            action = rng.uniform(low, high)
        else:
            action = np.clip(noise.explore(learner.actor, s.obs, rng), low, high)

        # 2. step and store: only `terminated` zeroes the bootstrap; a time-limit truncation just ends it
        next_obs, reward, terminated, truncated, _ = env.step(action.astype(env.action_space.dtype))
        buffer.add(s.obs, action, reward, terminated, next_obs, episode_end=terminated or truncated)
        s.obs, s.ep_return, s.ep_length = next_obs, s.ep_return + float(reward), s.ep_length + 1
        if terminated or truncated:
            run.end_episode()  # logs its return and length
            s.obs, _ = env.reset()
            noise.reset(learner.actor, rng)  # OU back to mu; parameter noise draws a new perturbation

        # 3. learn: every update_every steps, update_every * updates_per_step gradient updates
        if learning and s.step % args.update_every == 0:
            for _ in range(args.update_every * args.updates_per_step):
                metrics = learner.update(buffer.sample(args.batch_size))
            if run.diverged(metrics):  # a non-finite loss: stop before a checkpoint saves bad weights
                return
            noise.adapt(s.step, learner.actor, buffer)  # parameter noise steers its std; others do nothing
        if learning:
            run.count_learning_step(time.time() - t_step)

        # 4. log, evaluate, save, stop
        run.log(metrics)  # every --log-every steps
        run.maybe_evaluate()  # every --eval-every steps and at the last one
        run.maybe_save()  # every --save-every steps
        if run.stop_requested():  # Ctrl-C or SIGTERM: stop between two steps, the run saves on its way out
            return


# ==== THE PLUMBING: flag validation, environments, evaluation, checkpoints, logging, signals, setting ====
# ==== up and finishing a run, eval-only, main. Nothing below this line changes what DDPG computes.    ====


class Rule(NamedTuple):  # a flag's constraint, carried by its type; validate() checks every flag's rules
    ok: Callable[[object], bool]
    text: str  # what the error line says after the flag's name; {} is the value


PosInt = Annotated[int, Rule(lambda v: v > 0, "must be positive, got {}")]
NonNegInt = Annotated[int, Rule(lambda v: v >= 0, "must be >= 0, got {}")]
PosFloat = Annotated[float, Rule(lambda v: v > 0, "must be positive, got {}")]
NonNegFloat = Annotated[float, Rule(lambda v: v >= 0, "must be >= 0, got {}")]
Fraction = Annotated[float, Rule(lambda v: 0 < v <= 1, "must be in (0, 1], got {}")]
Sizes = Annotated[tuple[int, ...], Rule(lambda v: len(v) > 0 and min(v) > 0, "must be positive integers, got {}")]
Seed = Annotated[int, Rule(lambda v: 0 <= v < 2**32, "must be in [0, 2**32), got {}")]  # numpy's seed range
Discount = Annotated[float, Rule(lambda v: 0 <= v < 1, "must be in [0, 1), got {}")]
AboveOne = Annotated[float, Rule(lambda v: v > 1, "must be > 1, got {}")]


class UserError(Exception):
    """Bad input: main() prints it as one 'error:' line and exits with code 2."""


class WriteFault(Exception):
    """A write of the running run failed (a full disk, a removed folder): Run.fail() says so in one line."""


def validate(args: Args) -> None:
    """Every flag against the rules in its type (finite floats first), then the rules that tie flags."""
    hints = typing.get_type_hints(Args, include_extras=True)
    for field in dataclasses.fields(args):
        value, flag = getattr(args, field.name), "--" + field.name.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag} must be a finite number, got {value}")
        if any(isinstance(v, int) and abs(v) >= 2**62 for v in (value if isinstance(value, tuple) else (value,))):
            raise UserError(f"{flag} is too large for torch and numpy, got {value}")  # int64, with room to count
        hint = hints[field.name]  # Rule-annotated, or Optional[Rule-annotated]
        for rule in [m for t in (hint, *typing.get_args(hint)) for m in getattr(t, "__metadata__", ())]:
            if value is not None and not rule.ok(value):
                raise UserError(f"{flag} {rule.text.format(value)}")
    if args.noise_type not in NOISES:
        raise UserError(f"--noise-type must be one of {', '.join(NOISES)}, got {args.noise_type!r}")
    if round(args.q_data_fraction * args.batch_size) < 1:
        raise UserError("--q-data-fraction * --batch-size must leave each critic at least one sample")
    if args.ou_theta * args.ou_dt >= 1.0:
        raise UserError("--ou-theta * --ou-dt must be < 1 for the OU process to be stable")
    if args.buffer_size < 2:  # a transition's s' has a slot of its own (ReplayBuffer)
        raise UserError(f"--buffer-size must be at least 2 (a transition and its s'), got {args.buffer_size}")
    if args.batch_size > args.buffer_size:
        raise UserError(f"--batch-size ({args.batch_size}) is larger than --buffer-size ({args.buffer_size})")
    if args.start_steps < args.batch_size and not (args.eval_only or args.resume):
        raise UserError(f"--start-steps ({args.start_steps}) is below --batch-size ({args.batch_size}): "
                        "the first updates would sample from too few transitions")
    if not args.env_id.strip():
        raise UserError("--env-id is empty")
    if not re.fullmatch(r"[\w.+-]+", args.exp_name):
        raise UserError(f"--exp-name must be letters, digits, '.', '+', '-' or '_', got {args.exp_name!r}")
    if args.eval_only and not args.checkpoint:
        raise UserError("--eval-only needs --checkpoint PATH")


class FlagParser(argparse.ArgumentParser):
    """Args's flags in plain argparse, only to say in one line why tyro rejected a command line
    (tyro draws a box of several lines). error() is argparse's documented hook."""

    def __init__(self):
        super().__init__(prog="ddpg.py", add_help=False, allow_abbrev=False)
        hints = typing.get_type_hints(Args)
        for field in dataclasses.fields(Args):
            t, flag = hints[field.name], "--" + field.name.replace("_", "-")
            if t is bool:
                self.add_argument(flag, action=argparse.BooleanOptionalAction)
            elif typing.get_origin(t) is Literal:
                self.add_argument(flag, choices=typing.get_args(t))
            elif typing.get_origin(t) is tuple:
                self.add_argument(flag, type=int, nargs="*")
            else:
                self.add_argument(flag, type=next(c for c in (int, float, str) if c is t or c in typing.get_args(t)))

    def error(self, message: str):
        raise UserError(message)


def parse_args(argv: list[str] | None = None) -> tuple[Args, set[str]]:
    """The Args of a command line (tyro; --help is its), and the names of the flags given explicitly
    (they must agree with a checkpoint's)."""
    argv = peer_forms(sys.argv[1:] if argv is None else list(argv))
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # tyro's error box: FlagParser says it in one line
            args = tyro.cli(Args, args=argv)
    except OSError:  # --help into a closed pipe (| head -1): the reader has what it wanted
        say("")
        raise SystemExit(0) from None
    except SystemExit as e:
        if e.code in (0, None):  # --help
            raise
        FlagParser().parse_args(argv)
        raise UserError(f"invalid arguments: {' '.join(argv)} (python ddpg.py --help lists the flags)") from None
    given = {re.sub(r"^no-", "", a[2:].split("=")[0]).replace("-", "_") for a in argv if a.startswith("--")}
    return args, given


def peer_forms(argv: list[str]) -> list[str]:
    """The flag forms users of other RL libraries type, as ours: --cuda True/False, --device cpu|cuda,
    --hidden-sizes 64,64; the ones with no equivalent are refused with the form to use."""
    out, i = [], 0
    while i < len(argv):
        a, nxt = argv[i], argv[i + 1] if i + 1 < len(argv) else None
        if a in ("--cuda", "--torch-deterministic", "--track", "--capture-video", "--save-buffer") and nxt in (
                "True", "False", "true", "false"):
            out.append(a if nxt.lower() == "true" else "--no-" + a[2:])
            i += 2
            continue
        if a == "--device" or a.startswith("--device="):
            device = a.split("=", 1)[1] if "=" in a else nxt
            if device not in ("cpu", "cuda"):
                raise UserError(f"--device {device}: ddpg.py trains on the CPU (--no-cuda) or the default CUDA device "
                                "(--cuda); pick a GPU with CUDA_VISIBLE_DEVICES=N")
            out.append("--cuda" if device == "cuda" else "--no-cuda")
            i += 1 if "=" in a else 2
            continue
        if a == "--seed" and nxt is not None and i + 2 < len(argv) and re.fullmatch(r"\d+", argv[i + 2]):
            raise UserError("--seed takes one seed; several seeds are a sweep: python experiments/sweep.py --seeds "
                            f"{nxt} {argv[i + 2]} ... -- FLAGS")
        out.append(a)
        if a == "--hidden-sizes" and nxt is not None and "," in nxt:
            out += [n for n in nxt.split(",") if n]
            i += 1
        i += 1
    return out


# --- environments ---

def resolve_env_id(env_id: str) -> None:
    """Make sure env_id is registered (PyBullet ids register on import), else suggest close ids."""
    if ":" in env_id:  # gymnasium's 'module:EnvId' form: the module registers the id
        module, env_id = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except (Exception, SystemExit) as e:  # missing, empty or relative name, or the module fails or exits
            raise UserError(f"cannot import module {module!r} for --env-id: {type(e).__name__}: "
                            f"{one_line(e)}") from None
    if env_id not in gym.registry:
        with contextlib.suppress(ImportError), quiet_c_output():
            import pybullet_envs_gymnasium  # noqa: F401  registers the *BulletEnv-v0 ids
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown environment id {env_id!r}{hint}")


def make_env(env_id: str, max_episode_steps: int | None = None, render_mode: str | None = None) -> gym.Env:
    """One environment with a continuous action space, wrapped in GuardedEnv. gym.make adds the TimeLimit
    wrapper that *truncates* episodes; truncation is not termination (see the Bellman target)."""
    resolve_env_id(env_id)
    env_id = env_id.split(":", 1)[-1]
    try:
        mode = {"render_mode": render_mode} if render_mode else {}  # envs without a render_mode argument work too
        with quiet_c_output():
            env = GuardedEnv(gym.make(env_id, max_episode_steps=max_episode_steps, **mode))
    except (Exception, SystemExit) as e:  # missing simulator dependencies, bad kwargs, an env calling sys.exit ...
        raise UserError(f"cannot create environment {env_id!r}: {type(e).__name__}: {one_line(e)}") from None
    problem = space_problem(env)
    if problem:
        with contextlib.suppress(Exception):
            env.close()
        raise UserError(f"{env_id} {problem}")
    if render_mode is not None:  # fail now with one line, not with a traceback at the first evaluation
        try:
            env.reset(seed=0)
            env.render()
        except Exception as e:  # e.g. pygame missing for the classic-control envs
            env.close()
            gl = " (MuJoCo without a display: install libEGL, e.g. Debian's libegl1, or set MUJOCO_GL)" if (
                "OpenGL" in str(e) or "GLFW" in str(e)) else ""
            raise UserError(f"cannot render {env_id} for --capture-video: {type(e).__name__}: "
                            f"{one_line(e)}{gl}") from None
    return env


def one_line(e: BaseException) -> str:
    """An exception's message, first line, at most 300 characters."""
    text = str(e).strip()
    return (text.splitlines()[0][:300] if text else "") or type(e).__name__


def space_problem(env: gym.Env) -> str | None:
    """What DDPG needs of the spaces: flat Box observations and actions, at least one dimension each, finite
    action bounds with low < high (the actor scales tanh to them). None when all is well."""
    act, obs = env.action_space, env.observation_space
    if not isinstance(act, gym.spaces.Box):
        return f"has a {type(act).__name__} action space; DDPG needs a continuous (Box) one"
    if len(act.shape) != 1 or act.shape[0] < 1:
        return f"has actions of shape {act.shape}; DDPG needs a flat Box of at least one dimension"
    if not (np.all(np.isfinite(act.low)) and np.all(np.isfinite(act.high))):
        return "has unbounded actions; DDPG needs finite action bounds"
    if not np.all(act.low < act.high):
        return f"has action bounds with low >= high ({act.low} .. {act.high}); DDPG needs low < high"
    if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1 or obs.shape[0] < 1:
        return f"needs a flat Box observation space of at least one dimension, got {obs}"
    return None


class EnvFault(Exception):
    """The environment raised, or returned what DDPG cannot use (GuardedEnv): in its call ("step" or "reset")."""

    def __init__(self, message: str, call: str, env: gym.Env):
        super().__init__(message)
        self.call, self.env = call, env


class GuardedEnv(gym.Wrapper):
    """The outermost wrapper of every environment: reset() without the C libraries' chatter (PyBullet connects
    to its physics server at the first one), and every reset() and step() result checked, so that a broken
    environment stops a run with one line naming the cause instead of a traceback deep in the loop or, worse,
    garbage in the replay buffer. Checks only: it passes every value through unchanged."""

    def reset(self, **kwargs):
        try:
            with quiet_c_output():
                result = self.env.reset(**kwargs)
        except (Exception, SystemExit) as e:
            raise EnvFault(f"reset() raised {type(e).__name__}: {one_line(e)}", "reset", self) from None
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
            got = f"an info of {type(result[1]).__name__}" if isinstance(result, tuple) and len(result) == 2 else kind(result)
            raise EnvFault(f"reset() returned {got}; gymnasium environments return (observation, info dict)",
                           "reset", self)
        self.check_obs(result[0], "reset")
        return result

    def step(self, action):
        try:
            result = self.env.step(action)
        except (Exception, SystemExit) as e:
            raise EnvFault(f"step() raised {type(e).__name__}: {one_line(e)}", "step", self) from None
        if not (isinstance(result, tuple) and len(result) == 5):
            raise EnvFault(f"step() returned {kind(result)}; gymnasium environments return (observation, reward, "
                           "terminated, truncated, info)", "step", self)
        obs, reward, terminated, truncated, info = result
        self.check_obs(obs, "step")
        if not (isinstance(reward, (int, float, np.integer, np.floating)) and not isinstance(reward, bool)
                or isinstance(reward, np.ndarray) and reward.shape == () and np.issubdtype(reward.dtype, np.number)):
            raise EnvFault(f"step() returned a reward of {type(reward).__name__} {summary(reward)}; DDPG needs a "
                           "number", "step", self)
        for name, flag in (("terminated", terminated), ("truncated", truncated)):
            if not isinstance(flag, (bool, np.bool_)):
                raise EnvFault(f"step() returned {name}={summary(flag)} ({type(flag).__name__}); it must be a bool",
                               "step", self)
        return result

    def check_obs(self, obs, call: str) -> None:
        shape = self.observation_space.shape
        try:
            a = np.asarray(obs)
            ok = a.shape == shape and np.issubdtype(a.dtype, np.number) and bool(np.all(np.isfinite(a)))
        except Exception:
            a, ok = None, False
        if not ok:
            got = f"shape {a.shape}, dtype {a.dtype}" if a is not None else type(obs).__name__
            raise EnvFault(f"{call}() returned an observation of {got} {summary(obs)}; the observation space is "
                           f"finite numbers of shape {shape}", call, self)


def summary(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def kind(result) -> str:
    return f"a tuple of {len(result)}" if isinstance(result, tuple) else f"a {type(result).__name__} {summary(result)}"


def check_env(env: gym.Env, env_id: str) -> None:
    """Once, before the run folder exists: one reset and one random step of the bare environment through
    gymnasium's own passive checker (what gym.make applies to the first reset and step) and GuardedEnv's
    checks, then the same through the wrappers the loop uses. A violation is one UserError line. Run on the
    evaluation environment: evaluations reseed it at every episode, and the training environment stays
    untouched (same seed, same numbers)."""
    bare = GuardedEnv(GymnasiumChecks(env.unwrapped))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gymnasium's advice (bounds, dtypes ...) is not an error
            for e in (bare, env):
                e.reset(seed=0)
                e.step(env.action_space.sample())
    except EnvFault as e:
        raise UserError(f"{env_id}: {e}") from None


class GymnasiumChecks(gym.Wrapper):
    """gymnasium's passive environment checker on every reset() and step() (check_env)."""

    def reset(self, **kwargs):
        from gymnasium.utils.passive_env_checker import env_reset_passive_checker
        return env_reset_passive_checker(self.env, **kwargs)

    def step(self, action):
        from gymnasium.utils.passive_env_checker import env_step_passive_checker
        return env_step_passive_checker(self.env, action)


def flush_all() -> None:
    """Flush Python's streams and C's stdio buffers: C's stdout is fully buffered when it is not a terminal (and
    Python runs without -u), so PyBullet's lines printed in quiet_c_output would otherwise leave at exit."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def quiet_c_output():
    """Hide what C libraries print on file descriptors 1 and 2 (PyBullet's build banner and argv[0]= lines,
    MuJoCo's warnings) during the block; if the block fails, what was hidden goes to stderr after all."""
    flush_all()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # a closed stdout or stderr: nothing to hide
        yield
        return
    failed = True
    with tempfile.TemporaryFile() as hidden:
        os.dup2(hidden.fileno(), 1)
        os.dup2(hidden.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            flush_all()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if failed:
                hidden.seek(0)
                sys.stderr.write(hidden.read().decode(errors="replace"))


def env_state_picklable(env: gym.Env) -> bool:
    """Does pickling the env save the episode in progress? Not where the physics lives outside
    Python: gymnasium rebuilds EzPickle envs (MuJoCo) from their constructor arguments, and a
    PyBullet env holds a connection to its physics server that a pickle cannot carry."""
    u = env.unwrapped
    return not isinstance(u, gym.utils.EzPickle) and not type(u).__module__.startswith("pybullet")


def evaluate(actor: Actor, env: gym.Env, episodes: int, seed: int) -> np.ndarray:
    """Returns of the deterministic policy mu(s), no noise, on fixed seeds (seed, seed+1, ...)."""
    returns = []  # not preallocated: any --eval-episodes fits
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, ret = False, np.float64(0.0)
        while not done:
            obs, reward, terminated, truncated, _ = env.step(actor.act(obs).astype(env.action_space.dtype))
            ret += reward
            done = terminated or truncated
        returns.append(ret)
    return np.array(returns)


# --- checkpoints ---
# A checkpoint is the settings and one entry per stateful part, each its part's own state_dict() (Run.parts). It is
# checked against the same parts freshly built from those settings, never against a list of what they hold, so a
# new buffer array, noise state or loop field is saved, checked and restored with no line here.

CHECKPOINT_FORMAT = 2  # 2: one entry per part; 1 (flat, before 2026-12) is still read, through from_format_1
SHAPE_FLAGS = ("env_id", "hidden_sizes", "num_q", "actor_layer_norm", "critic_layer_norm")  # fix the networks
SOURCE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]  # this file: a checkpoint says who wrote it
_np_core = getattr(np, "_core", None) or np.core
SAFE_TYPES = [_np_core.multiarray._reconstruct, np.ndarray, np.dtype, _np_core.multiarray.scalar,
              (_np_core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),  # numpy 1's name
              *[v for k, v in vars(np.dtypes).items() if k.endswith("DType")]]
# what torch.load(weights_only=True) may build besides tensors and plain values: numpy arrays, their dtypes, scalars


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a new temporary file beside `path` (never through a link planted there), fsync, then rename:
    a crash at any moment leaves either the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as f:
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


def local_key(create: bool) -> bytes | None:
    """This user's secret on this machine (~/.config/ddpg/key, else in the temporary folder): it signs the
    episode state a checkpoint pickles, so that a resume unpickles only what this user wrote here."""
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "ddpg"
    for path in (home / "key", Path(tempfile.gettempdir()) / f"ddpg-{os.getuid()}" / "key"):
        with contextlib.suppress(OSError):
            if create and not path.exists():
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                    f.write(os.urandom(32))
            if path.stat().st_uid == os.getuid():
                return path.read_bytes()
    return None


def signature(data: bytes, create: bool = False) -> str | None:
    key = local_key(create)
    return hmac.new(key, data, "sha256").hexdigest() if key else None


def load_checkpoint(path: str | Path, prefer: str = "latest.pt") -> dict:
    """Read a checkpoint (a file, or a run folder: its checkpoints/<prefer>, else latest.pt) as data only, in
    today's layout, its settings complete and checked; or raise UserError saying why not."""
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        path = folder / prefer if (folder / prefer).is_file() else folder / "latest.pt"
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob("*.pt")) if path.parent.is_dir() else []
        hint = f"; {path.parent} holds {', '.join(found)} (or pass the run folder)" if found else ""
        raise UserError(f"checkpoint not found: {path}{hint}")
    try:
        with torch.serialization.safe_globals(SAFE_TYPES):  # data only: a pickled object that runs code is refused
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        code = re.search(r"GLOBAL (\S+)", str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if code:  # weights_only refused to build an object: loading it could have run code
            raise UserError(f"cannot read checkpoint {path}: it holds Python objects ({code[1]}), not only data; "
                            "ddpg.py loads data only") from None
        raise UserError(f"cannot read checkpoint {path}: corrupt or not a checkpoint ({type(e).__name__})") from None
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("format_version"), int)
            and isinstance(ckpt.get("args"), dict)):
        raise UserError(f"{path} is not a ddpg.py checkpoint")
    if ckpt["format_version"] > CHECKPOINT_FORMAT:
        raise UserError(f"{path} has checkpoint format {ckpt['format_version']}, newer than this ddpg.py "
                        f"(format {CHECKPOINT_FORMAT}); update ddpg.py")
    ckpt = from_format_1(ckpt) if ckpt["format_version"] == 1 else ckpt
    ckpt["path"], ckpt["args"] = path, saved_settings(ckpt["args"], path)
    obs_dim, act_dim = ckpt.get("obs_dim"), ckpt.get("act_dim")
    if not (is_count(obs_dim) and is_count(act_dim) and obs_dim > 0 and act_dim > 0):
        raise UserError(f"checkpoint {path} is malformed: obs_dim/act_dim must be positive integers, got "
                        f"{summary(obs_dim)}/{summary(act_dim)}")
    return ckpt


def from_format_1(c: dict) -> dict:
    """A format-1 checkpoint (one flat dict, until 2026-12) in today's layout: one entry per part."""
    parts = {"learner": {"nets": "learner", "actor_opt": "actor_opt", "critic_opt": "critic_opt",
                         "n_updates": "n_updates", "n_actor_updates": "n_actor_updates"},
             "loop": {"step": "global_step", "episode": "episode", "obs": "obs", "ep_return": "ep_return",
                      "ep_length": "ep_length"},
             "rng": {"exploration": "exploration_rng",
                     **{k: ("rng", k) for k in ("python", "numpy", "torch", "cuda")}},
             "stats": {k: k for k in ("wall_time", "learn_time", "learn_steps", "eval_returns", "wandb_id")}}
    c = {**c, "rng": {"cuda": [], **c["rng"]} if isinstance(c.get("rng"), dict) else c.get("rng")}  # CPU-only runs
    def holds(key) -> bool:  # a top-level key, or (dict, key) inside one
        return key in c if isinstance(key, str) else isinstance(c.get(key[0]), dict) and key[1] in c[key[0]]
    get = lambda key: c[key] if isinstance(key, str) else c[key[0]][key[1]]  # noqa: E731
    out = {k: c[k] for k in ("env_id", "obs_dim", "act_dim", "args", "env_pickle", "noise", "buffer") if k in c}
    out.update({part: {k: get(old) for k, old in keys.items() if holds(old)} for part, keys in parts.items()})
    return {**out, "format_version": 1, "source": None}


def saved_settings(saved: dict, path: Path) -> dict:
    """The saved settings, complete: a flag this file has and the run lacks takes its default (a warning names
    each), except the shape flags; a setting this file does not know is refused; then the flags' own checks."""
    fields = {f.name: f for f in dataclasses.fields(Args)}
    unknown = sorted(set(saved) - set(fields))
    if unknown:  # written by a newer ddpg.py with flags this one lacks
        raise UserError(f"{path} has settings this ddpg.py does not know ({', '.join(unknown)}); update ddpg.py")
    lacking = [name for name in fields if name not in saved]
    if any(name in SHAPE_FLAGS for name in lacking):
        raise UserError(f"checkpoint {path} is malformed: its settings lack "
                        f"{', '.join(n for n in lacking if n in SHAPE_FLAGS)}")
    defaults = {n: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for n, f in fields.items()}
    if lacking:
        print(f"warning: {path.name} was written before ddpg.py had " + ", ".join(
            f"--{n.replace('_', '-')} (takes its default {defaults[n]!r})" for n in lacking), file=sys.stderr)
    hints = typing.get_type_hints(Args)
    for name, value in saved.items():
        t = hints[name]
        union = typing.get_origin(t) is typing.Union or type(t).__name__ == "UnionType"  # X | None
        if not any(fits(value, o) for o in (typing.get_args(t) if union else (t,))):
            raise UserError(f"checkpoint {path} is malformed: its setting {name}={summary(value)} is not a {t}")
    settings = {**{n: defaults[n] for n in lacking}, **saved, "hidden_sizes": tuple(saved["hidden_sizes"])}
    try:
        Args(**settings)
    except UserError as e:
        raise UserError(f"checkpoint {path} is malformed: its settings fail the flags' checks: {e}") from None
    return settings


def check_compatible(ckpt: dict, args: Args, given: set[str]) -> None:
    """Explicit flags that fix the network's shape must match the checkpoint's."""
    for name in SHAPE_FLAGS:
        mine, theirs = getattr(args, name), ckpt["args"][name]
        if name in given and mine != theirs:
            raise UserError(f"checkpoint {ckpt['path']} has {name.replace('_', '-')}={theirs}, "
                            f"but --{name.replace('_', '-')} is {mine}")


def is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def fits(value, t) -> bool:
    if t is type(None):
        return value is None
    if typing.get_origin(t) is Literal:
        return value in typing.get_args(t)
    if t is bool or t is str:
        return isinstance(value, t)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(t) is tuple:  # tuple[int, ...], saved as a list or a tuple
        return isinstance(value, (list, tuple)) and all(fits(v, int) for v in value)
    return False


def state_problem(saved, fresh, path: str, missing: list) -> str | None:
    """A part's saved state against the state_dict() of the same part freshly built: the same keys, the same
    kinds of values, tensors and arrays of the same dtype and shape (any length where the fresh one has none:
    the buffer's arrays grow), counts >= 0. Keys the file lacks go to `missing`. None when it fits."""
    wrong = f"{path} is not what this ddpg.py wrote: {summary(saved)}"
    if isinstance(fresh, dict):
        if not isinstance(saved, dict):
            return wrong
        unknown = [k for k in saved if k not in fresh]
        if unknown and fresh:  # an empty fresh dict (an optimizer before its first step) has no fixed keys
            return f"{path} holds {', '.join(map(repr, unknown))}, which this ddpg.py does not have; update ddpg.py"
        missing += [f"{path}[{k!r}]" for k in fresh if k not in saved]
        items = [(saved[k], v, f"{path}[{k!r}]") for k, v in fresh.items() if k in saved]
    elif isinstance(fresh, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or fresh and len(saved) != len(fresh):
            return wrong
        items = [(s, f, f"{path}[{i}]") for i, (s, f) in enumerate(zip(saved, fresh))]
    elif isinstance(fresh, (torch.Tensor, np.ndarray)):
        same_kind = type(saved) is type(fresh) and saved.ndim == fresh.ndim and (
            saved.dtype == fresh.dtype if torch.is_tensor(fresh) else saved.dtype.kind == fresh.dtype.kind)
        shape = tuple(fresh.shape) if len(fresh.shape) == 0 or fresh.shape[0] else (len(saved), *fresh.shape[1:])
        if not (same_kind and tuple(saved.shape) == shape):
            got = f"{tuple(saved.shape)} {saved.dtype}" if hasattr(saved, "shape") else summary(saved)
            return f"{path} should be {shape} {fresh.dtype}, got {got}"
        return None
    else:
        ok = (saved is None or isinstance(saved, (str, int, float, bytes)) if fresh is None  # None: not set yet
              else is_count(saved) if isinstance(fresh, int) and not isinstance(fresh, bool)
              else fits(saved, float) if isinstance(fresh, float) else type(saved) is type(fresh))
        return None if ok else wrong
    return next((p for p in (state_problem(s, f, sub, missing) for s, f, sub in items) if p), None)


def filled(saved, fresh):
    """saved, with what it lacks taken from the fresh part's state (a file from before that state existed)."""
    if isinstance(saved, dict) and isinstance(fresh, dict):
        return {**fresh, **{k: filled(v, fresh.get(k)) for k, v in saved.items()}} if fresh else saved
    return saved


def restore(ckpt: dict, parts: dict) -> None:
    """Load every part of `parts` from the checkpoint, after checking each against its fresh state. A file this
    very ddpg.py wrote must hold everything; one from another version may lack state, which then keeps its
    initial value (a warning names it)."""
    path, missing, states = ckpt["path"], [], {}
    for name, part in parts.items():
        fresh = part.state_dict()
        if name not in ckpt:
            missing.append(repr(name))
            continue
        problem = state_problem(ckpt[name], fresh, name, missing)
        if problem:
            raise UserError(f"checkpoint {path} is malformed: {problem}")
        states[name] = filled(ckpt[name], fresh)
    if missing and ckpt.get("source") == SOURCE:
        raise UserError(f"checkpoint {path} is malformed: {missing[0]} is missing")
    if missing:
        print(f"warning: {path.name} was written by another ddpg.py and lacks {', '.join(missing)}; "
              "initial values are used for those", file=sys.stderr)
    for name, state in states.items():
        try:
            parts[name].load_state_dict(state)
        except Exception as e:  # what the shapes do not show: an optimizer of other parameters, bad positions ...
            raise UserError(f"checkpoint {path} does not fit: '{name}' "
                            f"{(str(e).strip().splitlines() or [type(e).__name__])[-1].strip()}") from None


class Rngs:
    """Every random number generator a run draws from: the exploration's (actions and action noise) and the
    global ones of python, numpy and torch (initial weights, sampling, parameter noise)."""

    def __init__(self, exploration: np.random.Generator):
        self.exploration = exploration

    def state_dict(self) -> dict:
        return {"exploration": self.exploration.bit_generator.state, "python": random.getstate(),
                "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def load_state_dict(self, state: dict) -> None:
        self.exploration.bit_generator.state = state["exploration"]
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Stats:  # what a run adds up over its sessions; a checkpoint keeps it
    wall_time: float = 0.0  # of earlier sessions of this run
    learn_time: float = 0.0  # seconds spent in learning-phase steps (not logging, evaluation, saving)
    learn_steps: int = 0
    eval_returns: list = dataclasses.field(default_factory=list)  # [step, mean return] of every evaluation
    wandb_id: str | None = None

    def state_dict(self) -> dict: return dataclasses.asdict(self)
    def load_state_dict(self, state: dict) -> None: self.__dict__.update(state)


# --- logging and progress ---

class Logger:
    """TensorBoard always; Weights & Biases with --track. Neither ever stops training: a failing wandb, or
    TensorBoard's writer thread failing on a full disk, is one warning line and that logger is dropped."""

    def __init__(self, run_dir: Path, args: Args, run_name: str, wandb_id: str | None):
        from tensorboardX import SummaryWriter

        try:  # a large queue: puts never block, even after the writer thread has died
            self.writer = SummaryWriter(str(run_dir), max_queue=1000)
        except OSError as e:
            raise UserError(f"cannot write TensorBoard events in {run_dir}: {e.strerror or e}") from None
        self.tb_error = None
        default_hook = threading.excepthook

        def thread_failed(hook_args):  # the writer thread's exception: a warning at the next log, not a traceback
            if hook_args.thread is self.tb_thread():
                self.tb_error = hook_args.exc_value
            else:
                default_hook(hook_args)

        threading.excepthook = thread_failed
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

    def tb_thread(self):
        return getattr(getattr(getattr(self.writer, "file_writer", None), "event_writer", None), "_worker", None)

    def tb_check(self) -> None:
        """Raise what stopped TensorBoard's writer thread, if anything did."""
        thread = self.tb_thread()
        if self.tb_error is not None or (thread is not None and not thread.is_alive()):
            raise self.tb_error or OSError("its writer thread stopped")

    def _wandb_failed(self, e: Exception) -> None:
        print(f"warning: Weights & Biases disabled ({type(e).__name__}: {one_line(e)}); "
              "logging to TensorBoard only", file=sys.stderr)
        self.wandb = None

    def tensorboard(self, write: Callable) -> None:
        if self.writer is None:
            return
        try:
            self.tb_check()
            write(self.writer)
        except Exception as e:
            print(f"warning: TensorBoard logging stopped ({type(e).__name__}: {one_line(e)}); training goes on, "
                  "checkpoints and summary.json still record the run", file=sys.stderr)
            self.writer = None

    def text(self, tag: str, text: str) -> None:
        self.tensorboard(lambda w: w.add_text(tag, text))

    def histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        self.tensorboard(lambda w: w.add_histogram(tag, values.detach().float().cpu().numpy(), step))

    def scalars(self, values: dict, step: int) -> None:
        self.tensorboard(lambda w: [w.add_scalar(k, v, step) for k, v in values.items()])
        if self.wandb is not None:
            try:
                self.wandb.log(values, step=step)
            except Exception as e:
                self._wandb_failed(e)

    def close(self, quiet: bool = False) -> None:
        """Flush and close; with quiet (the run already failed with its own error line), failures say nothing."""
        if self.writer is not None:
            try:
                self.tb_check()
                self.writer.close()
            except Exception as e:
                if not quiet:
                    print(f"warning: TensorBoard could not flush its last events ({type(e).__name__}: "
                          f"{one_line(e)})", file=sys.stderr)
        if self.wandb is not None:
            try:
                self.wandb.finish()
            except Exception as e:
                if not quiet:
                    self._wandb_failed(e)


class Progress:
    """A tqdm bar on a terminal; a plain line every --log-every steps otherwise (CI, nohup)."""

    def __init__(self, total: int, start: int, log_every: int):
        self.total, self.log_every, self.bar = total, log_every, None
        self.info = {"ep_return": float("nan"), "eval": float("nan"), "sps": None}  # sps: learning phase only
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
            ret, ev, sps = *self.returns(), self.info["sps"]
            eta = "-" if not sps else duration((self.total - step) / sps)
            say(f"step {step}/{self.total} | {'-' if not sps else f'{sps:.0f}'} steps/s | last return {ret} | "
                f"last eval {ev} | ETA {eta}")

    def returns(self) -> tuple[str, str]:
        """The last episode's return and the last evaluation, '-' until there is one."""
        return tuple(f"{x:.1f}" if math.isfinite(x) else "-" for x in (self.info["ep_return"], self.info["eval"]))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def say(line: str) -> bool:
    """Print a progress line. Output is never worth a run: when stdout fails (a full disk, a closed pipe, `| head`),
    it goes to /dev/null from then on, silently, and training goes on. False when the line was lost."""
    try:
        print(line, flush=True)
        return True
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush at exit fails no more
            os.close(devnull)
        return False


def duration(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    return (f"{days}d " if days else "") + time.strftime("%H:%M:%S", time.gmtime(rest))


def scalars(metrics: Metrics) -> dict[str, float]:
    """An update's scalar metrics by name, read from the device in one wait (the others are not scalars)."""
    named = {k: torch.as_tensor(v) for k, v in metrics._asdict().items() if not torch.is_tensor(v) or v.numel() == 1}
    if not named:
        return {}
    device = next(iter(named.values())).device
    values = torch.stack([v.detach().reshape(()).to(device, torch.float64) for v in named.values()]).tolist()
    return dict(zip(named, values))


def markdown_table(args: Args) -> str:
    rows = "\n".join(f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items())
    return f"|param|value|\n|-|-|\n{rows}"


class Stop(BaseException):
    """Raised by a signal that must stop at once (Interrupted). A BaseException, like KeyboardInterrupt:
    an environment's `except Exception` cannot swallow it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Interrupted:
    """Ctrl-C and SIGTERM, from the first line of main() on. Inside the training loop the first signal is a
    flag that the loop checks between two steps (the run then saves); a second one, or any signal at start-up,
    during an evaluation (an episode may never end) or in --eval-only, stops at once by raising Stop."""

    def __init__(self):
        self.signum, self.count, self.at_once, self.previous = None, 0, True, {}
        with contextlib.suppress(ValueError):  # main() called outside the main thread: no handlers
            self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(self, signum, frame) -> None:
        self.signum, self.count = signum, self.count + 1
        if self.at_once or self.count > 1:
            raise Stop(signum)

    @contextlib.contextmanager
    def stop_at_once(self, at_once: bool = True):
        previous, self.at_once = self.at_once, at_once
        try:
            yield
        finally:
            self.at_once = previous

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


# --- a run: set up (new or resumed), the loop's named calls, finished ---

TORCH_THREADS = torch.get_num_threads()  # torch's default (one per physical core, or OMP_NUM_THREADS), at import


class FreeCores:
    """--torch-threads 0, the default: torch computes on every core while no other process is busy, and on one
    thread while one is (re-measured every 2 s: the busy time of our CPUs in /proc/stat less our own CPU time).
    torch's threads spin-wait for each other at every op: with one core taken two threads ran 3.5x slower than
    one (benchmarks/threads.md); idle, two were 1.3x faster. It only switches where that cannot change a number:
    see same_numbers_on_any_thread_count; else, and without /proc/stat (macOS, Windows), it keeps one thread."""

    interval = 2.0  # seconds between two measurements
    stat_file = "/proc/stat"

    def __init__(self, most: int):
        self.cpus = {f"cpu{i}" for i in (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ())}
        self.most = max(1, min(most, len(self.cpus)))  # the threads when the machine is ours
        torch.set_num_threads(1)
        self.last = self.sample() if self.most > 1 else None

    @classmethod
    def for_run(cls, learner: Learner, scratch: ReplayBuffer) -> FreeCores:
        same = TORCH_THREADS > 1 and same_numbers_on_any_thread_count(learner, scratch, TORCH_THREADS)
        return cls(TORCH_THREADS if same else 1)

    def sample(self) -> tuple[float, float, float] | None:
        """(now, busy CPU seconds of our CPUs, this process's CPU seconds); None without /proc/stat."""
        try:
            with open(self.stat_file) as f:  # cpuN user nice system idle iowait irq softirq steal ... (ticks)
                rows = [line.split() for line in f if line.split(maxsplit=1)[0] in self.cpus]
            busy = sum(int(r[1]) + int(r[2]) + int(r[3]) + int(r[6]) + int(r[7]) + int(r[8]) for r in rows)
        except (OSError, ValueError, IndexError):
            return None
        own = os.times()
        return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system

    def follow(self) -> None:
        """Called every learning step; acts every `interval` seconds."""
        if self.last is None or time.monotonic() - self.last[0] < self.interval:
            return
        now = self.sample()
        if now is not None:
            others = (now[1] - self.last[1] - (now[2] - self.last[2])) / (now[0] - self.last[0])  # in cores
            threads = self.most if len(self.cpus) - math.ceil(others - 0.5) >= self.most else 1
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
        self.last = now


def scratch_buffer(args: Args, env: gym.Env, device: torch.device) -> ReplayBuffer:
    """A small buffer of the run's kind, every array random (valid flags true): real batches, whatever fields
    they carry, for the thread check. The RNG is untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        buffer = make_parts(dataclasses.replace(args, buffer_size=2 * args.batch_size), env, device)[1]
        for t in vars(buffer).values():
            if torch.is_tensor(t):
                t.copy_(torch.rand(t.shape) if t.is_floating_point() else torch.ones(t.shape, dtype=t.dtype))
    buffer.high = buffer.added = buffer.capacity
    return buffer


def same_numbers_on_any_thread_count(learner: Learner, scratch: ReplayBuffer, threads: int) -> bool:
    """Do four updates of a copy of the learner on random data, and its actor's outputs, give the same bits on
    one thread and on `threads`? Where they do, the thread count cannot change a number of this run (how torch
    splits an op among threads depends on the shapes, not the data). Where they don't (nn.LayerNorm's backward
    sums per thread; some shapes split a matrix product's sum, e.g. 17 inputs and 6 actions), the run keeps
    one thread, so that the same seed gives the same weights whatever the load. The random state is kept."""
    device, batch_size = learner.low.device, learner.args.batch_size
    results = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for n in (1, threads):
            torch.set_num_threads(n)
            torch.manual_seed(0)
            twin = copy.deepcopy(learner)
            for _ in range(4):
                metrics = twin.update(scratch.sample(batch_size))
            obs = scratch.sample(batch_size).obs
            results.append([*flat_tensors(twin.state_dict()), *flat_tensors(metrics._asdict()), twin.actor(obs),
                            twin.actor(obs[:1])])
    torch.set_num_threads(1)
    return all(torch.equal(x, y) for x, y in zip(*results))


def flat_tensors(state) -> list:
    """Every tensor in a nested state (dicts, lists, tuples), in order."""
    if isinstance(state, dict):
        return [t for v in state.values() for t in flat_tensors(v)]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in flat_tensors(v)]
    return [state] if torch.is_tensor(state) else []


@dataclass
class Run:
    """What the loop works with, and the calls it makes for logs, evaluation, checkpoints and signals."""
    args: Args
    env: gym.Env
    eval_env: gym.Env
    learner: Learner
    buffer: ReplayBuffer
    noise: Noise
    rng: np.random.Generator  # all exploration randomness: random actions and action noise
    state: LoopState
    run_dir: Path
    device: torch.device
    logger: Logger | None = None
    refill_until: int = 0  # resumed without a buffer: collect this many transitions before updating again
    stats: Stats = dataclasses.field(default_factory=Stats)
    last_eval: np.ndarray | None = None
    status: str = "finished"  # or interrupted, diverged, env-error, write-error, crashed: see STATUSES
    exit_code: int = 0
    interrupted: Interrupted | None = None
    saved_step: int | None = None  # the step of the last latest.pt this session wrote
    cores: FreeCores | None = None  # --torch-threads 0: torch's threads follow the free cores

    def start(self) -> None:
        self.progress = Progress(self.args.total_steps, self.state.step, self.args.log_every)
        self.t_start, self.wall_before = time.time(), self.stats.wall_time
        self.t_log, self.step_log = time.time(), self.state.step

    def end_episode(self) -> None:
        s = self.state
        s.episode += 1
        self.progress.info["ep_return"] = s.ep_return
        self.logger.scalars({"charts/episodic_return": s.ep_return, "charts/episodic_length": s.ep_length}, s.step)
        s.ep_return, s.ep_length = 0.0, 0

    def count_learning_step(self, seconds: float) -> None:
        self.stats.learn_time += seconds
        self.stats.learn_steps += 1
        if self.cores is not None:
            self.cores.follow()

    def diverged(self, metrics: Metrics) -> bool:
        """The divergence guard: a non-finite scalar metric stops the run, keeping the last checkpoint."""
        with contextlib.suppress(RuntimeError, TypeError):  # all scalar tensors: one op and one wait, as a rule
            if bool(torch.stack(tuple(metrics)).isfinite().all()):
                return False
        values = scalars(metrics)  # else (or to name the culprit) each scalar metric by name
        bad = [name for name, v in values.items() if not math.isfinite(v)]
        if not bad:
            return False
        kept = self.run_dir / "checkpoints" / "latest.pt"
        self.status, self.exit_code = "diverged", 3
        print(f"error: training diverged at step {self.state.step}: {bad[0]} is {values[bad[0]]}; "
              f"last good checkpoint: {kept if kept.exists() else 'none yet'}", file=sys.stderr)
        return True

    def log(self, metrics: Metrics | None) -> None:
        step = self.state.step
        if step % self.args.log_every:
            return
        now = time.time()
        sps = (step - self.step_log) / (now - self.t_log)
        # the ETA's rate: wall-clock steps/s over a whole interval of the learning phase (the random warm-up
        # runs many times faster and would promise an ETA hours too early); none yet before that
        self.progress.info["sps"] = sps if self.step_log >= self.args.start_steps else None
        self.t_log, self.step_log = now, step
        values = {"charts/sps": sps, "charts/torch_threads": torch.get_num_threads()}
        if self.stats.learn_time > 0:
            values["charts/learning_sps"] = self.stats.learn_steps / self.stats.learn_time
        if metrics is not None:
            values.update({f"losses/{k}": v for k, v in scalars(metrics).items() if math.isfinite(v)})
            for name, t in metrics._asdict().items():
                if torch.is_tensor(t) and t.numel() > 1:
                    self.logger.histogram(f"losses/{name}", t, step)
        values.update(self.noise.metrics())
        self.logger.scalars(values, step)

    def maybe_evaluate(self) -> None:
        step = self.state.step
        if step % self.args.eval_every == 0 or step == self.args.total_steps:
            try:  # an episode may never end: a signal stops the evaluation at once, the loop then saves
                with self.interrupted.stop_at_once():
                    returns = evaluate(self.learner.actor, self.eval_env, self.args.eval_episodes,
                                       self.args.seed + 100_000)
            except Stop:
                return
            self.last_eval, self.progress.info["eval"] = returns, float(returns.mean())
            self.stats.eval_returns.append([step, float(returns.mean())])
            self.logger.scalars({"eval/return_mean": returns.mean(), "eval/return_std": returns.std()}, step)

    def maybe_save(self) -> None:
        if self.state.step % self.args.save_every == 0:
            self.save("latest.pt", self.args.save_buffer)

    def stop_requested(self) -> bool:
        self.progress.update(self.state.step)
        if self.interrupted.signum is not None:
            self.status, self.exit_code = "interrupted", 128 + self.interrupted.signum
        return self.interrupted.signum is not None

    def env_pickle(self) -> bytes | None:
        """The environment's state, without GuardedEnv (any caller can unpickle it); None where it cannot be
        pickled faithfully or at all (a lock, a socket): a resume then starts a new episode."""
        if not env_state_picklable(self.env):
            return None
        try:
            return pickle.dumps(self.env.env)
        except Exception as e:
            if not getattr(self, "warned_pickle", False):
                print(f"warning: the environment's state cannot be pickled ({type(e).__name__}: {one_line(e)}); "
                      "checkpoints keep everything else, and a resume starts a new episode", file=sys.stderr)
                self.warned_pickle = True
            return None

    def parts(self, with_buffer: bool) -> dict:
        """Every stateful part of the run, by name: what a checkpoint saves and a resume restores."""
        return {"learner": self.learner, "noise": self.noise, "loop": self.state, "rng": Rngs(self.rng),
                "stats": self.stats, **({"buffer": self.buffer} if with_buffer else {})}

    def checkpoint(self, with_buffer: bool, keep_episode: bool = True) -> dict:
        self.stats.wall_time = self.wall_before + time.time() - self.t_start
        self.stats.wandb_id = self.logger.wandb_id
        episode = self.env_pickle() if keep_episode else None
        return {"format_version": CHECKPOINT_FORMAT, "source": SOURCE, "env_id": self.args.env_id,
                "obs_dim": self.env.observation_space.shape[0], "act_dim": self.env.action_space.shape[0],
                "args": dataclasses.asdict(self.args), "env_pickle": episode,
                "env_signature": episode and signature(episode, create=True),
                **{name: part.state_dict() for name, part in self.parts(with_buffer).items()}}

    def save(self, name: str, with_buffer: bool, keep_episode: bool = True) -> None:
        path = self.run_dir / "checkpoints" / name
        try:
            atomic_save(self.checkpoint(with_buffer, keep_episode), path)
        except OSError as e:  # disk full, quota, folder removed: the previous file is intact
            raise WriteFault(f"cannot write checkpoint {path}: {e.strerror or e}; the previous checkpoint "
                             f"({self.kept()}) is kept") from None
        if name == "latest.pt":
            self.saved_step = self.state.step

    def kept(self) -> str:
        """Which latest.pt a resume would continue from, in words."""
        path = self.run_dir / "checkpoints" / "latest.pt"
        if self.saved_step is not None:
            return f"latest.pt at step {self.saved_step}"
        return "latest.pt of an earlier session" if path.exists() else "none written yet"

    def fail(self, e: BaseException) -> None:
        """A fault in the middle of the run: one error line naming the step and the cause. An environment fault
        leaves the learner and buffer consistent: latest.pt is written from there (the episode in progress is
        dropped: the environment's own state is suspect); otherwise the last latest.pt written is kept."""
        s, where = self.state, f"at step {self.state.step}"
        if isinstance(e, Stop):  # a second signal: stopped wherever the loop was, nothing more is written
            self.status, self.exit_code = "interrupted", 128 + e.signum
            print(f"interrupted again: stopped at once; last checkpoint: {self.kept()}", file=sys.stderr)
            return
        if isinstance(e, EnvFault):
            self.status, self.exit_code = "env-error", 4
            if e.call == "step" and e.env is self.env:  # nothing of this step was stored: back to the one before
                s.step -= 1
            try:
                self.save("latest.pt", self.args.save_buffer, keep_episode=False)
                saved = f"latest.pt saved at step {s.step}"
            except WriteFault as w:
                saved = str(w)
            evaluating = " (evaluation)" if e.env is not self.env else ""
            message = f"the environment failed {where}{evaluating}: {e}; {saved}"
        elif isinstance(e, WriteFault):
            self.status, self.exit_code = "write-error", 5
            message = f"{where}: {e}"
        else:  # a bug (in an edited ddpg.py, say): the traceback goes to a file, the terminal gets one line
            self.status, self.exit_code = "crashed", 1
            log = self.run_dir / "error.log"
            with contextlib.suppress(OSError):
                log.write_text("".join(traceback.format_exception(e)))
            message = (f"unexpected {type(e).__name__} {where}: {one_line(e)} (traceback in {log}); "
                       f"last checkpoint: {self.kept()}")
        resume = "; resume with: " + self.resume_command() if self.kept() != "none written yet" else ""
        print(f"error: {message}{resume}", file=sys.stderr)

    def resume_command(self) -> str:  # as started: the installed `ddpg` command, or python ddpg.py
        script = "ddpg" if Path(sys.argv[0]).name == "ddpg" else "python ddpg.py"
        return f"{script} --resume {shlex.quote(str(self.run_dir))}"

    def execute(self) -> int:
        """train() with the run around it: signals, faults, the last checkpoints and summary.json. The exit code."""
        self.start()
        try:
            try:
                with self.interrupted.stop_at_once(False):  # in the loop a first signal is a flag (stop_requested)
                    train(self.args, self)
                self.save_last()
            except (Exception, Stop) as e:  # the environment, a write, a second signal, a bug
                self.fail(e)
            try:
                self.summarize()
            except (WriteFault, Stop) as e:
                self.fail(e)
        finally:
            self.close()
        return self.report()

    def save_last(self) -> None:
        if self.status == "finished":
            self.save("final.pt", False)
        if self.status in ("finished", "interrupted"):
            self.save("latest.pt", self.args.save_buffer)

    def summarize(self) -> None:
        final, st = self.last_eval if self.status == "finished" else None, self.stats
        self.write_summary({
            "status": self.status, "env_id": self.args.env_id, "exp_name": self.args.exp_name, "seed": self.args.seed,
            "steps": self.state.step, "episodes": self.state.episode,
            "final_eval_return_mean": float(final.mean()) if final is not None else None,
            "final_eval_return_std": float(final.std()) if final is not None else None,
            "wall_time_s": round(self.wall_before + time.time() - self.t_start, 3),
            "learning_sps": round(st.learn_steps / st.learn_time, 2) if st.learn_time > 0 else None,
            "eval_returns": st.eval_returns, "device": str(self.device), "run_dir": str(self.run_dir),
        })

    def write_summary(self, summary: dict) -> None:
        try:
            write_json(self.run_dir / "summary.json", summary)
        except OSError as e:
            if self.exit_code == 0:  # after a fault its own line has said what went wrong (a full disk, often)
                raise WriteFault(f"cannot write {self.run_dir / 'summary.json'}: {e.strerror or e}; "
                                 f"the checkpoints are written") from None

    def close(self) -> None:
        if hasattr(self, "progress"):
            self.progress.close()
        if self.logger is not None:
            self.logger.close(quiet=self.exit_code not in (0, 130, 143))
        for e in (self.env, self.eval_env):
            with contextlib.suppress(Exception):  # a simulator that fails to close must not hide the real error
                e.close()

    def report(self) -> int:
        if self.status == "interrupted" and self.interrupted.count < 2:
            print(f"interrupted at step {self.state.step}; resume with: {self.resume_command()}", file=sys.stderr)
        elif self.status == "finished":
            say(f"done: {self.args.env_id} {self.state.step} steps in {time.time() - self.t_start:.0f}s (this "
                  f"session), final eval return {self.last_eval.mean():.2f} +- {self.last_eval.std():.2f}; "
                  f"run folder {self.run_dir}")
        return self.exit_code


def pick_gl_backend(args: Args) -> None:
    """MuJoCo renders through GLFW, which needs a display: with --capture-video and none, pick EGL (or OSMesa) where
    its library is installed, before mujoco is imported. MUJOCO_GL, when set, is the user's choice."""
    if args.capture_video and not os.environ.get("DISPLAY") and "MUJOCO_GL" not in os.environ:
        import ctypes.util
        libraries = (("egl", "EGL"), ("osmesa", "OSMesa"))
        backend = next((gl for gl, lib in libraries if ctypes.util.find_library(lib)), None)
        if backend and "mujoco" not in sys.modules:
            os.environ["MUJOCO_GL"] = os.environ["PYOPENGL_PLATFORM"] = backend


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


def resume_args(args: Args, given: set[str]) -> tuple[Args, dict]:
    """A resume keeps the run's settings (only --total-steps may grow); returns them and the checkpoint."""
    ckpt = load_checkpoint(args.resume)
    if ckpt["path"].parent.name != "checkpoints":
        raise UserError(f"--resume needs a run folder or a checkpoint inside its checkpoints/, got {ckpt['path']}")
    check_compatible(ckpt, args, given)
    saved = dict(ckpt["args"], hidden_sizes=tuple(ckpt["args"]["hidden_sizes"]))
    if "total_steps" in given:  # the one setting a resume may change: train longer
        saved["total_steps"] = args.total_steps
    ignored = sorted(f"--{n.replace('_', '-')}" for n in given - {"resume", "total_steps"}
                     if n in saved and getattr(args, n) != saved[n] and n not in SHAPE_FLAGS)
    if ignored:
        print(f"warning: a resume keeps the run's settings; ignoring {' '.join(ignored)} "
              "(start a new run to change them)", file=sys.stderr)
    return Args(**saved), ckpt


def setup(args: Args, given: set[str], interrupted: Interrupted) -> Run:
    """Everything train() needs, new or restored from --resume: environments, learner, buffer, noise,
    the run folder, the logger, and the episode in progress."""
    ckpt = None
    if args.resume:
        args, ckpt = resume_args(args, given)
    if args.torch_threads:  # else the threads follow the free cores: FreeCores
        if args.torch_threads > (os.cpu_count() or 1):  # thousands of threads crash torch (segfault)
            raise UserError(f"--torch-threads {args.torch_threads} is more than this machine's {os.cpu_count()} CPUs")
        torch.set_num_threads(args.torch_threads)
    seed_everything(args.seed, args.torch_deterministic)
    device = pick_device(args)
    pick_gl_backend(args)
    env = make_env(args.env_id, args.max_episode_steps)
    eval_env = make_env(args.env_id, args.max_episode_steps, render_mode="rgb_array" if args.capture_video else None)
    check_env(eval_env, args.env_id)
    try:
        learner, buffer, noise = make_parts(args, env, device)
    except (RuntimeError, MemoryError) as e:  # --buffer-size or --hidden-sizes too large for memory
        raise UserError(f"cannot allocate the networks and a buffer of {args.buffer_size} transitions on {device}: "
                        f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None
    space = env.observation_space
    run = Run(args, env, eval_env, learner, buffer, noise, np.random.default_rng(args.seed),
              LoopState(obs=np.zeros(space.shape, space.dtype)), Path(), device, interrupted=interrupted,
              cores=None if args.torch_threads else FreeCores.for_run(learner, scratch_buffer(args, env, device)))
    if ckpt is not None:
        run.run_dir = ckpt["path"].parent.parent
        restore(ckpt, run.parts(with_buffer="buffer" in ckpt))
        if run.state.step >= args.total_steps:
            raise UserError(f"run already at step {run.state.step} of {args.total_steps}; "
                            "pass --total-steps N (larger) to train longer")
        if "buffer" not in ckpt:
            print(f"warning: {ckpt['path'].name} holds no replay buffer (train with --save-buffer for that); it "
                  f"starts empty and refills for {max(args.start_steps, args.batch_size)} steps before updates resume",
                  file=sys.stderr)
        if buffer.added == 0:  # resumed without a buffer: collect with the current policy before updating again
            run.refill_until = max(args.start_steps, args.batch_size)
    else:
        run.run_dir = new_run_dir(args)
        if args.total_steps <= max(args.start_steps, args.batch_size):
            print(f"warning: --total-steps {args.total_steps} ends within --start-steps {args.start_steps} of random "
                  "actions: this run makes no update and learns nothing", file=sys.stderr)
    threads = args.torch_threads or f"0 = the free cores (up to {run.cores.most})"
    say(f"{'resuming' if ckpt else 'training'} {args.env_id} in {run.run_dir} on {device}"
        f"{' (--cuda: no CUDA device here)' if args.cuda and device.type == 'cpu' else ''}, torch threads {threads}")
    try:
        start_run_dir(run, ckpt)
    except BaseException:  # a failed or interrupted start leaves no new, empty run folder behind
        run.close()
        if ckpt is None and not any((run.run_dir / "checkpoints").iterdir()):
            shutil.rmtree(run.run_dir, ignore_errors=True)
        raise
    return run


def new_run_dir(args: Args) -> Path:
    """runs/<env>__<exp-name>__<seed>__<time>; a second run started in the same second gets a suffix -2, -3 ..."""
    name = f"{args.env_id.split(':')[-1].replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    for n in range(1, 1000):
        path = Path(args.runs_dir) / (name if n == 1 else f"{name}-{n}")
        try:
            (path / "checkpoints").mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise UserError(f"cannot create run folder {path}: {e.strerror or e}") from None
    raise UserError(f"cannot create run folder {path}: 999 runs named {name} exist")


def start_run_dir(run: Run, ckpt: dict | None) -> None:
    """config.json, the logger, the video recorder, and the episode in progress."""
    args, env, buffer = run.args, run.env, run.buffer
    try:
        write_json(run.run_dir / "config.json", dataclasses.asdict(args))
    except OSError as e:
        raise UserError(f"cannot write {run.run_dir / 'config.json'}: {e.strerror or e}") from None
    run.logger = Logger(run.run_dir, args, run.run_dir.name, run.stats.wandb_id)
    run.logger.text("hyperparameters", markdown_table(args))
    if args.capture_video:  # record the first episode of every evaluation
        run.eval_env = gym.wrappers.RecordVideo(run.eval_env, str(run.run_dir / "videos"), disable_logger=True,
                                                episode_trigger=lambda ep: ep % args.eval_episodes == 0)

    # the episode in progress: restored exactly where the env can be pickled faithfully and the file is ours
    if ckpt is not None and not restore_episode(run, ckpt):
        buffer.new_episode()
    if ckpt is None or run.env is env:
        try:
            run.state.obs, _ = run.env.reset(seed=args.seed + run.state.step)
        except EnvFault as e:
            raise UserError(f"{args.env_id}: {e}") from None
        run.state.ep_return, run.state.ep_length = 0.0, 0
        run.noise.reset(run.learner.actor, run.rng)


def restore_episode(run: Run, ckpt: dict) -> bool:
    """Unpickle the environment of the episode in progress, only where it was saved faithfully and this user
    wrote the file on this machine (its signature under the local key; a format-1 file: owned by this user),
    since unpickling can run code. False, with a warning, where the episode is dropped."""
    data = ckpt.get("env_pickle")
    if data is None or not env_state_picklable(run.env):
        print("warning: this environment's state cannot be saved; the episode in progress at the "
              "interruption is dropped and a new one starts", file=sys.stderr)
        return False
    if ckpt["format_version"] == 1:
        ours = ckpt["path"].stat().st_uid == os.getuid()
    else:
        ours = isinstance(ckpt.get("env_signature"), str) and hmac.compare_digest(signature(data) or "",
                                                                                   ckpt["env_signature"])
    try:
        if not ours:
            raise ValueError("not signed by this user on this machine, so not unpickled")
        restored = pickle.loads(data)  # saved without the wrapper: any caller can unpickle
    except Exception as e:  # junk, a class that no longer exists, a file from elsewhere
        print(f"warning: cannot restore the environment from the checkpoint ({type(e).__name__}: {one_line(e)}); "
              "the episode in progress at the interruption is dropped and a new one starts", file=sys.stderr)
        return False
    run.env.close()
    run.env = GuardedEnv(restored)
    return True


class Policy:
    """A trained actor for your own code: policy(obs) -> the deterministic action mu(s), clipped to the
    action bounds, for one observation (shape (obs_dim,)) or a batch (shape (B, obs_dim)). Made by load_policy."""

    def __init__(self, actor: Actor, low: np.ndarray, high: np.ndarray, ckpt: dict):
        self.actor, self.low, self.high = actor, low, high
        self.obs_dim, self.act_dim = ckpt["obs_dim"], ckpt["act_dim"]
        self.env_id, self.step, self.path = ckpt["args"]["env_id"], checkpoint_step(ckpt), ckpt["path"]
        self.device = actor.action_scale.device

    @torch.no_grad()
    def __call__(self, obs) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim not in (1, 2) or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"expected an observation of shape ({self.obs_dim},) or a batch (B, {self.obs_dim}), "
                             f"got shape {obs.shape}")
        action = self.actor(torch.as_tensor(obs, device=self.device)).cpu().numpy()
        return np.clip(action, self.low, self.high)

    def __repr__(self) -> str:
        return f"Policy({self.env_id}, step {self.step}, obs {self.obs_dim} -> action {self.act_dim}, from {self.path})"


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> Policy:
    """The trained policy of a run folder (its final.pt, else latest.pt) or of a checkpoint file, ready to call:
    policy(obs) -> action. A bad checkpoint raises UserError with the same one line as --eval-only."""
    return checkpoint_policy(load_checkpoint(path, prefer="final.pt"), device)


def checkpoint_policy(ckpt: dict, device: str | torch.device = "cpu") -> Policy:
    """The actor of a loaded checkpoint, alone (no critics, no optimizers), as a Policy. The learner is checked
    against a fresh one of the saved settings first (RNG untouched: building draws initial weights)."""
    args = Args(**ckpt["args"])
    with torch.random.fork_rng(devices=[]):
        fresh = Learner(ckpt["obs_dim"], ckpt["act_dim"], np.zeros(ckpt["act_dim"]), np.ones(ckpt["act_dim"]), args)
    restore(ckpt, {"learner": fresh})
    nets = fresh.state_dict()["nets"]
    low, high = nets["low"].double().numpy(), nets["high"].double().numpy()
    return Policy(fresh.actor.to(device).eval(), low, high, ckpt)


def checkpoint_step(ckpt: dict) -> int | None:
    return ckpt["loop"].get("step") if isinstance(ckpt.get("loop"), dict) else None


def eval_only(args: Args, given: set[str]) -> int:
    ckpt = load_checkpoint(args.checkpoint, prefer="final.pt")
    saved = ckpt["args"]
    if saved["env_id"] != args.env_id:
        raise UserError(f"checkpoint {ckpt['path']} was trained on {saved['env_id']}, not on {args.env_id}")
    check_compatible(ckpt, args, given)
    device = pick_device(args)
    pick_gl_backend(args)
    env = make_env(args.env_id, args.max_episode_steps, render_mode="rgb_array" if args.capture_video else None)
    check_env(env, args.env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    if (obs_dim, act_dim) != (ckpt["obs_dim"], ckpt["act_dim"]):
        raise UserError(f"checkpoint expects obs/action sizes {ckpt['obs_dim']}/{ckpt['act_dim']}, "
                        f"{args.env_id} has {obs_dim}/{act_dim}")
    actor = checkpoint_policy(ckpt, device).actor
    if args.capture_video:
        folder = ckpt["path"].parent  # the run folder when the checkpoint sits in its checkpoints/
        run_dir = folder.parent if folder.name == "checkpoints" else folder
        video_dir = run_dir / "videos" / f"eval-only-{int(time.time())}"
        env = gym.wrappers.RecordVideo(env, str(video_dir), episode_trigger=lambda ep: True, disable_logger=True)
    try:
        returns = evaluate(actor, env, args.eval_episodes, args.seed + 100_000)
    except EnvFault as e:
        raise UserError(f"{args.env_id} failed during the evaluation: {e}") from None
    finally:
        with contextlib.suppress(Exception):
            env.close()
    if not say(f"{args.env_id}: mean return {returns.mean():.2f} +- {returns.std():.2f} over {len(returns)} "
               f"episodes (checkpoint {ckpt['path']}, step {checkpoint_step(ckpt)})"):
        raise UserError("cannot write the result: stdout failed")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line: python ddpg.py FLAGS (or the `ddpg` command). Returns the exit code."""
    return run_main(argv)[0]


def learn(**flags) -> tuple[Path, dict]:
    """Train from Python (a notebook, a script) with the command line's flags as keywords, e.g.
    ddpg.learn(env_id="Pendulum-v1", total_steps=20_000, hidden_sizes=(64, 64)). Returns the run folder and its
    summary.json; raises RuntimeError when no run started (the error line says why). The process is left as it
    was: torch's threads and modes, the global random states, the signal handlers (torch's worker threads keep
    flushing denormals to zero: torch can set that only on the calling thread)."""
    argv = []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            argv += [flag, *map(str, value if isinstance(value, (list, tuple)) else [value])]
    code, run = run_main(argv)
    if run is None or not (run.run_dir / "summary.json").exists():
        raise RuntimeError(f"ddpg.py exited with {code} before a run started; its error line says why")
    return run.run_dir, json.loads((run.run_dir / "summary.json").read_text())


@contextlib.contextmanager
def process_kept():
    """What a run changes in its process, put back afterwards: torch's threads, denormal and determinism modes,
    and the global random states (a notebook goes on as before)."""
    threads, deterministic, cudnn = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), \
        torch.backends.cudnn.deterministic
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)  # torch's default; it has no getter
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.deterministic = cudnn
        random.setstate(states[0]), np.random.set_state(states[1]), torch.set_rng_state(states[2])


def run_main(argv: list[str] | None) -> tuple[int, Run | None]:
    run = None
    with process_kept():
        # Flush denormal floats (below 1.2e-38) to zero on CPU. Adam's moments of a weight whose gradient
        # stays zero (a dead ReLU unit) decay into that range, about one value in six after 1,500 updates
        # on HopperBulletEnv-v0, and x86 computes on denormals many times slower; as zeros they change nothing
        # that matters. First thing: torch's worker threads, started later, inherit the setting.
        torch.set_flush_denormal(True)
        interrupted, stage = Interrupted(), "start-up"  # Ctrl-C and SIGTERM from here on: see Interrupted
        try:
            args, given = parse_args(argv)
            if args.eval_only:
                stage = "the evaluation"
                return eval_only(args, given), None
            run = setup(args, given, interrupted)
            stage = "the run"
            return run.execute(), run  # the run handles its own faults and signals
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2, run
        except Exception as e:  # a bug at start-up or in --eval-only (an edited Learner, say): one line, as in the loop
            log = Path(tempfile.mkstemp(prefix="ddpg-error-", suffix=".log")[1])
            log.write_text("".join(traceback.format_exception(e)))
            print(f"error: unexpected {type(e).__name__} during {stage}: {one_line(e)} (traceback in {log})",
                  file=sys.stderr)
            return 1, run
        except Stop as e:
            if stage == "the run":  # a further signal while the run was closing: its files are whole (atomic writes)
                print("interrupted again: stopped at once", file=sys.stderr)
            else:
                print(f"interrupted ({signal.Signals(e.signum).name}) during {stage}; nothing was saved",
                      file=sys.stderr)
            return 128 + e.signum, run
        finally:
            interrupted.restore()


def cli() -> None:
    """The `ddpg` command of `pip install .` (pyproject.toml), and python ddpg.py."""
    warnings.filterwarnings("ignore", category=UserWarning, module="gymnasium")
    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run is over: a late Ctrl-C must not break the exit
    sys.exit(code)


if __name__ == "__main__":
    cli()
