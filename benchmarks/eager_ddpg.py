"""The plain eager DDPG update, written the straightforward CleanRL way: the yardstick for ddpg.py.

Nothing here is optimized on purpose: an nn.Sequential critic on cat(s, a) per critic, separate
deep-copied targets, torch.optim.Adam with torch's default implementation, F.mse_loss, an actor
loss whose backward also computes (and then throws away) the critic's gradients, Polyak averaging
as a Python loop over the parameters, and a replay buffer in numpy arrays that is copied into
tensors at every sample (as SB3's and CleanRL's buffers do).

benchmarks/sps.py times ddpg.py's update against EagerDDPG.update; tests/test_update_equivalence.py
checks that both compute the same losses, gradients and new weights on the same batch.
"""

from __future__ import annotations

import copy

import numpy as np
from collections import namedtuple
import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(sizes: list[int], out_act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if k < len(sizes) - 2:
            layers.append(nn.ReLU())
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)

Batch = namedtuple("Batch", "obs act rew terminated next_obs")  # the same field names as ddpg.Batch


class Actor(nn.Module):
    """mu(s) = scale * tanh(MLP(s)) + bias."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes, low, high):
        super().__init__()
        self.net = mlp([obs_dim, *hidden_sizes, act_dim], nn.Tanh())
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        self.register_buffer("action_scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs) * self.action_scale + self.action_bias


class Critic(nn.Module):
    """Q(s, a) = MLP(cat(s, a)), shape (B,)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes):
        super().__init__()
        self.net = mlp([obs_dim + act_dim, *hidden_sizes, 1])

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], 1)).view(-1)


class EagerDDPG:
    """DDPG (num_q=1) or its TD3-style variants (num_q=2, target noise, policy delay), eager."""

    def __init__(self, obs_dim: int, act_dim: int, low, high, hidden_sizes=(256, 256), num_q: int = 1,
                 q_reduce: str = "min", gamma: float = 0.99, tau: float = 0.005, policy_lr: float = 1e-3,
                 value_lr: float = 1e-3, target_noise: float = 0.0, target_noise_clip: float = 0.5,
                 policy_delay: int = 1, device: str | torch.device = "cpu"):
        self.gamma, self.tau, self.q_reduce = gamma, tau, q_reduce
        self.target_noise, self.target_noise_clip, self.policy_delay = target_noise, target_noise_clip, policy_delay
        self.actor = Actor(obs_dim, act_dim, hidden_sizes, low, high).to(device)
        self.critics = nn.ModuleList([Critic(obs_dim, act_dim, hidden_sizes) for _ in range(num_q)]).to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.critics_target = copy.deepcopy(self.critics)
        self.low = torch.as_tensor(np.asarray(low), dtype=torch.float32, device=device)
        self.high = torch.as_tensor(np.asarray(high), dtype=torch.float32, device=device)
        self.make_optimizers(policy_lr, value_lr)
        self.n_updates = 0
        self.last_actor_loss = torch.zeros((), device=device)

    def make_optimizers(self, policy_lr: float = 1e-3, value_lr: float = 1e-3) -> None:
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=policy_lr)  # torch's default implementation
        self.q_opt = torch.optim.Adam(self.critics.parameters(), lr=value_lr)

    def to_dtype(self, dtype: torch.dtype) -> EagerDDPG:
        """Change the floating point type of every network (rebuilds the optimizers)."""
        for net in (self.actor, self.critics, self.actor_target, self.critics_target):
            net.to(dtype)
        self.low, self.high = self.low.to(dtype), self.high.to(dtype)
        self.make_optimizers(self.actor_opt.param_groups[0]["lr"], self.q_opt.param_groups[0]["lr"])
        return self

    def critic_loss(self, obs, act, rew, term, next_obs):
        with torch.no_grad():
            next_act = self.actor_target(next_obs)
            if self.target_noise > 0:
                noise = (torch.randn_like(next_act) * self.target_noise).clamp(-self.target_noise_clip,
                                                                                self.target_noise_clip)
                next_act = (next_act + noise * self.actor.action_scale).clamp(self.low, self.high)
            next_qs = torch.stack([qt(next_obs, next_act) for qt in self.critics_target])
            next_q = next_qs.min(0).values if self.q_reduce == "min" else next_qs.mean(0)
            y = rew + self.gamma * (1.0 - term) * next_q
        qs = [qf(obs, act) for qf in self.critics]
        loss = sum(F.mse_loss(q, y) for q in qs)
        return loss, torch.stack(qs)

    def actor_loss(self, obs):
        act = self.actor(obs)
        if self.q_reduce == "min":  # TD3: the actor follows the first critic
            q = self.critics[0](obs, act)
        else:
            q = torch.stack([qf(obs, act) for qf in self.critics]).mean(0)
        return -q.mean()

    def update(self, batch) -> torch.Tensor:
        obs, act, rew, term, next_obs = batch.obs, batch.act, batch.rew, batch.terminated, batch.next_obs
        q_loss, qs = self.critic_loss(obs, act, rew, term, next_obs)
        self.q_opt.zero_grad()
        q_loss.backward()
        self.q_opt.step()
        self.n_updates += 1
        if self.n_updates % self.policy_delay == 0:
            actor_loss = self.actor_loss(obs)
            self.actor_opt.zero_grad()
            actor_loss.backward()  # also fills the critics' grads; the next q_opt.zero_grad() drops them
            self.actor_opt.step()
            self.last_actor_loss = actor_loss.detach()
            for net, target in ((self.actor, self.actor_target), (self.critics, self.critics_target)):
                for p, tp in zip(net.parameters(), target.parameters()):
                    tp.data.mul_(1.0 - self.tau).add_(self.tau * p.data)
        return torch.stack([q_loss.detach(), qs.detach().mean(), self.last_actor_loss])


class NumpyReplay:
    """Transitions in numpy arrays (s and s' both stored), copied into tensors at every sample."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: str | torch.device = "cpu"):
        self.capacity, self.device, self.pos, self.size = capacity, device, 0, 0
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, act_dim), dtype=np.float32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)

    def add(self, obs, action, reward: float, terminated: bool, next_obs) -> None:
        i = self.pos
        self.obs[i], self.next_obs[i], self.actions[i] = obs, next_obs, action
        self.rewards[i], self.terminated[i] = reward, terminated
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int):
        idx = np.random.randint(0, self.size, size=batch_size)
        return Batch(*(torch.as_tensor(a[idx], device=self.device)
                       for a in (self.obs, self.actions, self.rewards, self.terminated, self.next_obs)))
