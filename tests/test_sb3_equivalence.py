"""ddpg.py's update against Stable-Baselines3's own training step (issue 26): SB3's DDPG and TD3 (`train()` of
stable_baselines3 2.9, their actor and critic networks, Adam, Polyak) start from ddpg.py's weights and see the
same batches (SB3's replay sample is replaced by ours); after every update the critic and actor losses and every
online and target weight agree.

Tolerance: float32 (SB3 casts observations to float32, so float64 cannot be compared), rtol 2e-5 and atol 2e-6 on
every weight after each of six updates: the rounding of two summation orders (ddpg.py's batched critics and fused
Adam, SB3's nn.Linear critics and for-each Adam); a changed formula moves the weights by 1e-4 or more.

Differences by design, pinned here rather than hidden:
  - SB3 computes on actions scaled to [-1, 1] (its replay buffer stores them so); ddpg.py on the environment's
    own bounds, scaling tanh by h = (high - low) / 2. On [-1, 1] bounds (used here) the two are the same maths;
    test_units and test_algorithm check ddpg.py's scaling on asymmetric bounds.
  - SB3 draws TD3's target noise with normal_(0, sigma) on a copy of the batch's actions; ddpg.py with
    randn_like(mu'(s')) * sigma: the same draws from the same seed (checked: equal weights with target noise),
    but SB3 also draws when sigma = 0 (its DDPG), so the two consume torch's RNG differently there.
  - SB3's DDPG is its TD3 class with one critic, no target noise and no policy delay, as ddpg.py's defaults.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn

import ddpg

sb3 = pytest.importorskip("stable_baselines3")
from stable_baselines3.common.logger import configure  # noqa: E402
from stable_baselines3.common.type_aliases import ReplayBufferSamples  # noqa: E402

OBS_DIM, ACT_DIM, BATCH, HIDDEN, STEPS = 5, 2, 32, (24, 16), 6
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6)}
CONFIGS = {  # ddpg.py's flags; SB3's algorithm and its arguments for the same thing
    "ddpg": (dict(), sb3.DDPG, dict()),
    "td3": (dict(num_q=2, q_reduce="min", target_noise=0.2, target_noise_clip=0.5, policy_delay=2), sb3.TD3,
            dict(policy_delay=2, target_policy_noise=0.2, target_noise_clip=0.5)),
}


class Box(gym.Env):
    """Only the spaces: SB3 builds its networks from them; actions in [-1, 1] as SB3 computes."""
    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)


def make_pair(name: str, dtype: torch.dtype):
    flags, algo, kwargs = CONFIGS[name]
    torch.manual_seed(0)
    args = dataclasses.replace(ddpg.Args(), hidden_sizes=HIDDEN, gamma=0.9, tau=0.05, policy_lr=3e-3, value_lr=3e-3,
                               **flags)
    learner = ddpg.Learner(OBS_DIM, ACT_DIM, -np.ones(ACT_DIM), np.ones(ACT_DIM), args).to(dtype)
    model = algo("MlpPolicy", Box(), learning_rate=3e-3, buffer_size=100, learning_starts=0, batch_size=BATCH,
                 tau=0.05, gamma=0.9, policy_kwargs=dict(net_arch=list(HIDDEN)), device="cpu", seed=0, **kwargs)
    model.policy.to(dtype)  # in place: SB3's Adams keep these same parameters
    model.set_logger(configure(None, []))
    pairs = weight_pairs(learner, model)
    with torch.no_grad():
        for mine, theirs in pairs:
            theirs.copy_(mine)
    x, a = torch.randn(7, OBS_DIM, dtype=dtype), torch.rand(7, ACT_DIM, dtype=dtype) * 2 - 1
    torch.testing.assert_close(learner.actor(x), model.actor(x), **TOL[dtype])  # the copy is real
    torch.testing.assert_close(learner.critic(x, a)[0], model.critic.q1_forward(x, a)[:, 0], **TOL[dtype])
    return learner, model, pairs


def linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def weight_pairs(learner, model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(ddpg.py's tensor in nn.Linear's layout, SB3's) for every online and target weight and bias. ddpg.py's
    critics are one ensemble: weights (N, in, out), biases (N, 1, out)."""
    pairs = []
    for mine, theirs in ((learner.actor, model.actor.mu), (learner.actor_target, model.actor_target.mu)):
        pairs += [(t, u) for m, lin in zip(linears(mine), linears(theirs), strict=True)
                  for t, u in ((m.weight, lin.weight), (m.bias, lin.bias))]
    for mine, theirs in ((learner.critic, model.critic), (learner.critic_target, model.critic_target)):
        for i, q in enumerate(theirs.q_networks):
            pairs += [(t, u) for w, b, lin in zip(mine.weights, mine.biases, linears(q), strict=True)
                      for t, u in ((w[i].T, lin.weight), (b[i, 0], lin.bias))]
    return pairs


def batch(dtype: torch.dtype, seed: int) -> ddpg.Batch:
    g = torch.Generator().manual_seed(seed)
    return ddpg.Batch(obs=torch.randn(BATCH, OBS_DIM, generator=g, dtype=dtype),
                      act=torch.rand(BATCH, ACT_DIM, generator=g, dtype=dtype) * 2 - 1,
                      rew=torch.randn(BATCH, generator=g, dtype=dtype),
                      terminated=(torch.rand(BATCH, generator=g) < 0.3).to(dtype),  # some true terminations
                      next_obs=torch.randn(BATCH, OBS_DIM, generator=g, dtype=dtype))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_updates_equal_stable_baselines3s_training_step(name, dtype=torch.float32):
    learner, model, pairs = make_pair(name, dtype)
    start = pairs[-1][0].detach().clone()  # the target critic's last bias: it moves with the first Polyak step
    for step in range(STEPS):
        b = batch(dtype, seed=100 + step)
        model.replay_buffer.sample = lambda batch_size, env=None, b=b: ReplayBufferSamples(
            observations=b.obs, actions=b.act, next_observations=b.next_obs, dones=b.terminated[:, None],
            rewards=b.rew[:, None], discounts=None)
        torch.manual_seed(1000 + step)  # TD3's target noise: the same draws in both
        metrics = learner.update(b)
        torch.manual_seed(1000 + step)
        model.train(gradient_steps=1, batch_size=BATCH)
        logged = model.logger.name_to_value
        assert metrics.q_loss.item() == pytest.approx(logged["train/critic_loss"], rel=TOL[dtype]["rtol"] * 10)
        if "train/actor_loss" in logged and model._n_updates % model.policy_delay == 0:
            assert metrics.actor_loss.item() == pytest.approx(logged["train/actor_loss"], rel=TOL[dtype]["rtol"] * 10)
        for k, (mine, theirs) in enumerate(pairs):
            torch.testing.assert_close(mine, theirs, **TOL[dtype], msg=lambda m: f"update {step}, tensor {k}: {m}")
    assert not torch.equal(pairs[-1][0], start), "the target critic never moved: nothing was compared"
    assert model._n_updates == learner.n_updates == STEPS
    assert learner.n_actor_updates == STEPS // CONFIGS[name][0].get("policy_delay", 1)
