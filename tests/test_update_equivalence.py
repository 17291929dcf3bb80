"""ddpg.py's fast update against the plain eager update of benchmarks/eager_ddpg.py (CleanRL style:
nn.Linear critics on cat(s, a), F.mse_loss, default Adam, a Python Polyak loop).

Both start from the same weights and see the same batch; the losses, every parameter's gradient
and the weights after whole update() steps (Adam + Polyak, TD3's delay and target noise included)
must agree. In float64 the two differ only by rounding, so the tolerance is tight enough to catch
any change of the mathematics (a missing (1 - terminated), a transposed weight, a wrong reduction
over critics, a gradient leaking into the critic from the actor loss)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import ddpg

_spec = importlib.util.spec_from_file_location(
    "eager_ddpg", Path(__file__).resolve().parents[1] / "benchmarks" / "eager_ddpg.py")
eager_ddpg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eager_ddpg)

OBS_DIM, ACT_DIM, BATCH, HIDDEN = 5, 2, 32, (24, 16)  # unequal sizes: a transposed weight cannot pass
LOW, HIGH = np.array([-1.0, -2.0]), np.array([2.0, 0.5])  # asymmetric bounds
# float64: only rounding separates the two; float32: reduction order adds a little more
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}

CONFIGS = {
    "ddpg": dict(),
    "twin-min": dict(num_q=2, q_reduce="min"),
    "twin-mean": dict(num_q=2, q_reduce="mean"),
    "td3": dict(num_q=2, q_reduce="min", target_noise=0.2, target_noise_clip=0.5, policy_delay=2),
}


def make_pair(config: dict, dtype: torch.dtype, seed: int = 0):
    """A ddpg.Learner and an EagerDDPG holding the very same weights (online and target)."""
    torch.manual_seed(seed)
    args = dataclasses.replace(ddpg.Args(), hidden_sizes=HIDDEN, gamma=0.9, tau=0.05, policy_lr=3e-3,
                               value_lr=2e-3, **config)
    learner = ddpg.Learner(OBS_DIM, ACT_DIM, LOW, HIGH, args).to(dtype)  # its Adams hold these same tensors
    ref = eager_ddpg.EagerDDPG(OBS_DIM, ACT_DIM, LOW, HIGH, HIDDEN, num_q=args.num_q, q_reduce=args.q_reduce,
                               gamma=args.gamma, tau=args.tau, policy_lr=args.policy_lr, value_lr=args.value_lr,
                               target_noise=args.target_noise, target_noise_clip=args.target_noise_clip,
                               policy_delay=args.policy_delay)
    ref.to_dtype(dtype)
    with torch.no_grad():
        for src, dst in ((learner.actor, ref.actor), (learner.actor_target, ref.actor_target)):
            for (w, b), lin in zip(actor_layers(src), linears(dst.net), strict=True):
                lin.weight.copy_(w)
                lin.bias.copy_(b)
        for src, dst in ((learner.critic, ref.critics), (learner.critic_target, ref.critics_target)):
            for i, critic in enumerate(dst):
                for (w, b), lin in zip(critic_layers(src, i), linears(critic.net), strict=True):
                    lin.weight.copy_(w)
                    lin.bias.copy_(b)
    # make sure the copy is real: the two actors and critics agree on a forward pass
    obs, act = torch.randn(7, OBS_DIM, dtype=dtype), torch.randn(7, ACT_DIM, dtype=dtype)
    torch.testing.assert_close(learner.actor(obs), ref.actor(obs), **TOL[dtype])
    torch.testing.assert_close(learner.critic(obs, act), torch.stack([q(obs, act) for q in ref.critics]), **TOL[dtype])
    return learner, ref


def linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def actor_layers(actor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight (out, in), bias (out,)) of each layer of ddpg's actor, in nn.Linear's layout."""
    return [(m.weight, m.bias) for m in linears(actor)]


def critic_layers(critic, i: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Critic i of ddpg's ensemble in nn.Linear's layout: its weights are (N, in, out), biases (N, 1, out)."""
    return [(w[i].T, b[i, 0]) for w, b in zip(critic.weights, critic.biases, strict=True)]


def actor_grads(actor) -> list[torch.Tensor]:
    return [t for m in linears(actor) for t in (m.weight.grad, m.bias.grad)]


def critic_grads_ddpg(critic, i: int) -> list[torch.Tensor]:
    return [t for w, b in zip(critic.weights, critic.biases) for t in (w.grad[i].T, b.grad[i, 0])]


def critic_grads_ref(critic) -> list[torch.Tensor]:
    return [t for m in linears(critic) for t in (m.weight.grad, m.bias.grad)]


def all_weights(learner, ref, num_q: int):
    """Every online and target weight of both, paired, in nn.Linear's layout."""
    mine = [t for net in (learner.actor, learner.actor_target) for pair in actor_layers(net) for t in pair]
    theirs = [t for net in (ref.actor, ref.actor_target) for m in linears(net.net) for t in (m.weight, m.bias)]
    for net, ref_nets in ((learner.critic, ref.critics), (learner.critic_target, ref.critics_target)):
        for i in range(num_q):
            mine += [t for pair in critic_layers(net, i) for t in pair]
            theirs += [t for m in linears(ref_nets[i].net) for t in (m.weight, m.bias)]
    return mine, theirs


def make_batch(dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    low, high = torch.as_tensor(LOW, dtype=dtype), torch.as_tensor(HIGH, dtype=dtype)
    obs = torch.randn(BATCH, OBS_DIM, generator=g, dtype=dtype)
    act = low + (high - low) * torch.rand(BATCH, ACT_DIM, generator=g, dtype=dtype)
    rew = torch.randn(BATCH, generator=g, dtype=dtype)
    term = (torch.rand(BATCH, generator=g) < 0.3).to(dtype)  # some true terminations in every batch
    next_obs = torch.randn(BATCH, OBS_DIM, generator=g, dtype=dtype)
    assert 0 < term.sum() < BATCH
    return ddpg.Batch(obs=obs, act=act, rew=rew, terminated=term, next_obs=next_obs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_losses_and_gradients_match_plain_update(name, dtype):
    config = CONFIGS[name]
    learner, ref = make_pair(config, dtype)
    num_q = config.get("num_q", 1)
    batch = make_batch(dtype, seed=1)
    obs, act, rew, term, next_obs = batch.obs, batch.act, batch.rew, batch.terminated, batch.next_obs

    # critic loss and the gradient of every critic parameter (target noise: same random draw)
    torch.manual_seed(123)
    loss, q = learner.critic_loss(batch)
    torch.manual_seed(123)
    ref_loss, ref_q = ref.critic_loss(obs, act, rew, term, next_obs)
    torch.testing.assert_close(loss, ref_loss, **TOL[dtype])
    torch.testing.assert_close(q, ref_q, **TOL[dtype])
    learner.zero_grad(set_to_none=True)
    loss.backward()
    ref.q_opt.zero_grad()
    ref_loss.backward()
    for i in range(num_q):
        for mine, theirs in zip(critic_grads_ddpg(learner.critic, i), critic_grads_ref(ref.critics[i].net), strict=True):
            assert theirs.abs().max() > 0
            torch.testing.assert_close(mine, theirs, **TOL[dtype])
    assert all(p.grad is None for p in learner.actor.parameters()), "the critic loss must not reach the actor"

    # actor loss and the gradient of every actor parameter
    learner.zero_grad(set_to_none=True)
    actor_loss = learner.actor_loss(obs)
    ref.actor_opt.zero_grad()
    ref_actor_loss = ref.actor_loss(obs)
    torch.testing.assert_close(actor_loss, ref_actor_loss, **TOL[dtype])
    actor_loss.backward()
    ref_actor_loss.backward()
    for mine, theirs in zip(actor_grads(learner.actor), actor_grads(ref.actor.net), strict=True):
        assert theirs.abs().max() > 0
        torch.testing.assert_close(mine, theirs, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_update_steps_match_plain_update(name, dtype):
    """Four whole update() calls (critic Adam step, actor Adam step, Polyak) on four batches: the
    metrics and every online and target weight agree after each one. With policy_delay=2 the actor
    and the targets move on calls 2 and 4 only, in both."""
    config = CONFIGS[name]
    learner, ref = make_pair(config, dtype)
    num_q = config.get("num_q", 1)
    start = [t.detach().clone() for t in all_weights(learner, ref, num_q)[0]]
    for step in range(4):
        batch = make_batch(dtype, seed=10 + step)
        torch.manual_seed(1000 + step)
        m = learner.update(batch)
        metrics = torch.stack([m.q_loss, m.q_mean, m.actor_loss])  # by name: an idea may add a metric
        torch.manual_seed(1000 + step)
        ref_metrics = ref.update(batch)
        if step == 0 and config.get("policy_delay", 1) > 1:  # no actor update yet: nothing to compare
            metrics, ref_metrics = metrics[:2], ref_metrics[:2]
        torch.testing.assert_close(metrics.to(dtype), ref_metrics, **TOL[dtype], msg=lambda m: f"step {step}: {m}")
        mine, theirs = all_weights(learner, ref, num_q)
        for k, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m: f"step {step}, tensor {k}: {m}")
    # the updates did move every tensor (actor, critics and both targets), so the comparison meant something
    moved = [not torch.equal(a, b) for a, b in zip(start, all_weights(learner, ref, num_q)[0])]
    assert all(moved), f"tensors that never changed: {[k for k, m in enumerate(moved) if not m]}"
