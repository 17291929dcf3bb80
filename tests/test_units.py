"""Unit tests on the numbers: import ddpg and call its parts."""

from __future__ import annotations

import copy
import dataclasses
import errno
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn

import ddpg

CPU = torch.device("cpu")
ASYM_LOW = np.array([-1.0, 0.0])
ASYM_HIGH = np.array([3.0, 2.0])


def make_learner(obs_dim=3, act_dim=2, low=ASYM_LOW, high=ASYM_HIGH, **overrides) -> ddpg.Learner:
    args = dataclasses.replace(ddpg.Args(), hidden_sizes=(16, 16), **overrides)
    return ddpg.Learner(obs_dim, act_dim, low, high, args)


def random_batch(n=32, obs_dim=3, act_dim=2, seed=0) -> ddpg.Batch:
    g = torch.Generator().manual_seed(seed)
    return ddpg.Batch(obs=torch.randn(n, obs_dim, generator=g), act=torch.rand(n, act_dim, generator=g) * 2 - 0.5,
                      rew=torch.randn(n, generator=g), terminated=(torch.rand(n, generator=g) < 0.2).float(),
                      next_obs=torch.randn(n, obs_dim, generator=g))


def obs_source(obs: torch.Tensor, asked: list | None = None):
    """A stand-in for the replay buffer that ParamNoise.adapt draws its observations from: sample(n).obs is obs."""
    def sample(n):
        if asked is not None:
            asked.append(n)
        return types.SimpleNamespace(obs=obs)
    return types.SimpleNamespace(sample=sample)


def final_linear(actor: ddpg.Actor) -> nn.Linear:
    return [m for m in actor.net if isinstance(m, nn.Linear)][-1]


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


# ---------------------------------------------------------------------------------------------
# Bellman target: bootstrap through truncation, not through termination
# ---------------------------------------------------------------------------------------------


def test_bellman_target_numbers():
    r = torch.tensor([1.0, 2.0, -0.5])
    term = torch.tensor([0.0, 1.0, 0.0])
    next_q = torch.tensor([10.0, 10.0, -4.0])
    y = ddpg.bellman_target(r, term, next_q, gamma=0.9)
    torch.testing.assert_close(y, torch.tensor([1.0 + 9.0, 2.0, -0.5 - 3.6]))


def fill_buffer_two_episodes(buffer: ddpg.ReplayBuffer):
    """Episode A: 3 steps, ends by truncation (time limit). Episode B: 2 steps, ends by termination.
    Observation k is [k, k]; reward of a transition = 1 + its start observation's id."""
    # A: s0 -> s1 -> s2 -> s3 (truncated)
    for k in range(3):
        truncated = k == 2
        buffer.add([k, k], [0.0], 1.0 + k, False, [k + 1, k + 1], episode_end=truncated)
    # B: s10 -> s11 -> s12 (terminated)
    for k in (10, 11):
        terminated = k == 11
        buffer.add([k, k], [0.0], 1.0 + k, terminated, [k + 1, k + 1], episode_end=terminated)


def test_bellman_target_through_buffer_and_critic_loss(monkeypatch):
    """Through the real path: ReplayBuffer -> Learner.critic_loss, with a target critic whose
    value is a known constant Q' = 5: y = r + gamma * 5 except after the true termination."""
    buffer = ddpg.ReplayBuffer(32, 2, 1, CPU)
    fill_buffer_two_episodes(buffer)
    learner = make_learner(obs_dim=2, act_dim=1, low=np.array([-1.0]), high=np.array([1.0]), gamma=0.9)
    with torch.no_grad():
        for w, b in zip(learner.critic_target.weights, learner.critic_target.biases):
            w.zero_()
            b.zero_()
        learner.critic_target.biases[-1].fill_(5.0)  # Q'(s', a') = 5 everywhere
    captured = []
    real = ddpg.bellman_target
    monkeypatch.setattr(ddpg, "bellman_target", lambda *a: captured.append(real(*a)) or captured[-1])

    torch.manual_seed(0)
    batch = buffer.sample(400)
    obs, act, rew, term, next_obs = batch.obs, batch.act, batch.rew, batch.terminated, batch.next_obs
    learner.critic_loss(batch)
    y = captured[-1]
    start = obs[:, 0].long()
    expected = {0: 1 + 0.9 * 5, 1: 2 + 0.9 * 5, 2: 3 + 0.9 * 5,  # truncation at s3 still bootstraps
                10: 11 + 0.9 * 5, 11: 12.0}  # the terminal transition does not
    assert set(start.tolist()) == set(expected)
    for k, value in expected.items():
        torch.testing.assert_close(y[start == k], torch.full_like(y[start == k], value))
    # what was stored: terminated only for the true termination
    assert term[start == 2].eq(0).all() and term[start == 11].eq(1).all() and term[start < 11].eq(0).all()


# ---------------------------------------------------------------------------------------------
# Replay buffer
# ---------------------------------------------------------------------------------------------


def sampled_pairs(buffer: ddpg.ReplayBuffer, n=4000) -> set[tuple[float, float]]:
    torch.manual_seed(1)
    batch = buffer.sample(n)
    obs, next_obs = batch.obs, batch.next_obs
    return set(zip(obs[:, 0].tolist(), next_obs[:, 0].tolist()))


def test_buffer_next_obs_is_real_successor_and_final_slots_never_sampled():
    buffer = ddpg.ReplayBuffer(32, 2, 1, CPU)
    fill_buffer_two_episodes(buffer)
    # 5 transitions; s3 and s12 only exist as final observations
    assert buffer.added == 5
    assert sampled_pairs(buffer) == {(0, 1), (1, 2), (2, 3), (10, 11), (11, 12)}
    assert int(buffer.valid.sum()) == 5


def test_buffer_sampling_is_uniform_over_transitions():
    buffer = ddpg.ReplayBuffer(64, 1, 1, CPU)
    ids = []
    for ep, length in enumerate([3, 1, 4, 2]):  # 10 transitions, 4 final-only slots in between
        for t in range(length):
            k = 100 * ep + t
            ids.append(k)
            buffer.add([k], [0.0], 0.0, False, [k + 1], episode_end=t == length - 1)
    torch.manual_seed(2)
    n = 200_000
    obs = buffer.sample(n).obs[:, 0]
    counts = {k: int((obs == k).sum()) for k in ids}
    assert sum(counts.values()) == n  # nothing else (no final-only slot, no empty slot) is drawn
    for k, c in counts.items():  # expected 20000 each; binomial sd ~ 134
        assert abs(c - n / len(ids)) < 1000, counts


def test_buffer_wrap_around_keeps_only_consistent_recent_transitions():
    cap = 7
    buffer = ddpg.ReplayBuffer(cap, 1, 1, CPU)
    pairs = []  # (s, s') of every transition added, in order
    k = 0
    for ep in range(6):
        length = [2, 3, 1, 4, 2, 3][ep]
        for t in range(length):
            s, s2 = 1000 * ep + t, 1000 * ep + t + 1
            buffer.add([s], [float(k)], float(k), False, [s2], episode_end=t == length - 1)
            pairs.append((s, s2))
            k += 1
        # invariants after each episode: every sampled (s, s') was really added; each slot pair consistent
        got = sampled_pairs(buffer, 2000)
        assert got <= set(pairs), (ep, got - set(pairs))
    assert buffer.high == cap
    # 15 transitions + 6 final slots = 3 laps of 7 slots: exactly the last two episodes survive
    got = sampled_pairs(buffer, 4000)
    assert got == {(4000, 4001), (4001, 4002), (5000, 5001), (5001, 5002), (5002, 5003)}
    assert int(buffer.valid.sum()) == 5


def test_buffer_storage_lives_on_the_device_it_is_given():
    """All five arrays are allocated on the training device (here torch's data-less "meta" device, the one other
    device every machine has), so that sampling never copies between devices; floats are float32."""
    buffer = ddpg.ReplayBuffer(8, 3, 2, torch.device("meta"))
    arrays = [buffer.obs, buffer.actions, buffer.rewards, buffer.terminated, buffer.valid]
    assert all(t.device.type == "meta" for t in arrays)
    assert [tuple(t.shape) for t in arrays] == [(8, 3), (8, 2), (8,), (8,), (8,)]
    assert [t.dtype for t in arrays] == [torch.float32] * 4 + [torch.bool]


def test_every_stored_transition_stays_sampleable_around_the_ring():
    """After every add, on a ring of 6 slots with episodes of 1 to 3 steps (each leaves its last s' in a slot of
    its own, so transitions land in the last slot after a skip, and the ring wraps): the transitions sampled are
    exactly those whose start slot is marked valid, each with its real s', and the written region never shrinks."""
    cap = 6
    buffer = ddpg.ReplayBuffer(cap, 1, 1, CPU)
    added, high = {}, 0
    for ep, length in enumerate([2, 1, 1, 3, 1, 2, 1, 1, 3, 2]):
        for t in range(length):
            s = 100 * ep + t
            buffer.add([s], [0.0], 0.0, False, [s + 1], episode_end=t == length - 1)
            added[s] = s + 1
            assert buffer.high >= high and buffer.high <= cap
            high = buffer.high
            stored = {float(buffer.obs[i, 0]) for i in range(cap) if buffer.valid[i]}
            got = sampled_pairs(buffer, 3000)
            assert {x for x, _ in got} == stored, (ep, t)
            assert all(added[int(x)] == x2 for x, x2 in got), (ep, t)
    assert high == cap


def test_buffer_new_episode_after_wrap_does_not_resurrect_stale_slots():
    """new_episode() (resume without the env state) skips a slot: the skipped slot must not
    remain a sampleable transition from an older lap whose s' is then overwritten."""
    cap = 6
    buffer = ddpg.ReplayBuffer(cap, 1, 1, CPU)
    for t in range(5):  # one long episode fills the ring: slots 0..4 valid, 5 holds s'
        buffer.add([t], [0.0], 0.0, False, [t + 1], episode_end=False)
    buffer.add([5], [0.0], 0.0, False, [6], episode_end=True)  # slot 5 valid, s'=6 in slot 0; pos -> 1
    buffer.new_episode()  # interrupted right at an episode start: pos -> 2, slot 1 skipped
    buffer.add([100], [0.0], 0.0, False, [101], episode_end=False)  # slot 2, s' in slot 3
    got = sampled_pairs(buffer, 4000)
    added = {(t, t + 1) for t in range(6)} | {(100, 101)}
    assert got <= added, got - added


# ---------------------------------------------------------------------------------------------
# Action scaling for asymmetric bounds
# ---------------------------------------------------------------------------------------------


def test_actor_outputs_within_asymmetric_bounds():
    torch.manual_seed(0)
    actor = ddpg.Actor(3, 2, (32, 32), ASYM_LOW, ASYM_HIGH)
    a = actor(torch.randn(5000, 3) * 100).detach()  # large inputs saturate the tanh
    low, high = torch.tensor(ASYM_LOW, dtype=torch.float32), torch.tensor(ASYM_HIGH, dtype=torch.float32)
    assert (a >= low).all() and (a <= high).all()
    # saturated outputs reach both ends of both dimensions: the whole range is used, no more
    torch.testing.assert_close(a.min(0).values, low, rtol=0, atol=1e-3)
    torch.testing.assert_close(a.max(0).values, high, rtol=0, atol=1e-3)


@pytest.mark.parametrize("pre_tanh, expected", [(50.0, ASYM_HIGH), (-50.0, ASYM_LOW), (0.0, (ASYM_LOW + ASYM_HIGH) / 2)])
def test_actor_tanh_extremes_and_centre_map_to_bounds_exactly(pre_tanh, expected):
    actor = ddpg.Actor(3, 2, (8,), ASYM_LOW, ASYM_HIGH)
    last = final_linear(actor)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(pre_tanh)
    a = actor(torch.randn(4, 3)).detach()
    assert torch.equal(a, torch.tensor(expected, dtype=torch.float32).expand(4, 2))


# ---------------------------------------------------------------------------------------------
# Target networks, Polyak averaging, update schedule
# ---------------------------------------------------------------------------------------------


def test_targets_start_equal_to_online_networks_and_are_separate_copies():
    learner = make_learner(num_q=2)
    for online, target in [(learner.actor, learner.actor_target), (learner.critic, learner.critic_target)]:
        on, tg = online.state_dict(), target.state_dict()
        assert on.keys() == tg.keys()
        for k in on:
            assert torch.equal(on[k], tg[k]), k
            assert on[k].data_ptr() != tg[k].data_ptr(), k


def test_polyak_update_numbers():
    g = torch.Generator().manual_seed(0)
    online = [torch.randn(5, 4, generator=g), torch.randn(3, generator=g)]
    target = [torch.randn(5, 4, generator=g), torch.randn(3, generator=g)]
    expected = [0.3 * o + 0.7 * t for o, t in zip(online, target)]
    ddpg.polyak_update(online, target, 0.3)
    for t, e in zip(target, expected):
        torch.testing.assert_close(t, e, rtol=1e-6, atol=1e-6)
    ddpg.polyak_update(online, target, 1.0)  # tau = 1 copies
    for t, o in zip(target, online):
        torch.testing.assert_close(t, o, rtol=0, atol=1e-6)


def test_learner_update_applies_polyak_to_all_four_networks():
    learner = make_learner(num_q=2, tau=0.25)
    batch = random_batch()
    before_target = [p.clone() for p in learner.target]
    learner.update(batch)
    online_after = [p.detach() for p in learner.online]
    for t0, on, t1 in zip(before_target, online_after, learner.target):
        torch.testing.assert_close(t1, 0.25 * on + 0.75 * t0, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy_delay, interval", [(1, 3), (2, 2)])
def test_targets_move_only_every_k_actor_updates(policy_delay, interval):
    learner = make_learner(policy_delay=policy_delay, target_update_interval=interval)
    batch = random_batch()
    moved = []
    for n in range(1, 13):
        before = snapshot(learner.actor_target) + snapshot(learner.critic_target)
        learner.update(batch)
        after = snapshot(learner.actor_target) + snapshot(learner.critic_target)
        moved.append(any(not torch.equal(b, a) for b, a in zip(before, after)))
    period = policy_delay * interval
    assert moved == [n % period == 0 for n in range(1, 13)]


def test_policy_delay_actor_every_d_critic_every_update():
    learner = make_learner(policy_delay=3)
    batch = random_batch()
    actor_moved, critic_moved = [], []
    for _ in range(9):
        a, c = snapshot(learner.actor), snapshot(learner.critic)
        learner.update(batch)
        actor_moved.append(changed(a, learner.actor))
        critic_moved.append(changed(c, learner.critic))
    assert critic_moved == [True] * 9
    assert actor_moved == [False, False, True] * 3
    assert learner.n_updates == 9 and learner.n_actor_updates == 3


# ---------------------------------------------------------------------------------------------
# Exploration noise
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("theta, dt", [(0.15, 1e-2), (0.5, 1.0)])
def test_ou_stationary_std_and_mean(theta, dt):
    sigma, size, mu = 0.3, 64, 0.0
    noise = ddpg.OUNoise(np.ones(size), sigma, theta, dt, mu)
    rng = np.random.default_rng(0)
    burn_in = int(5 / (theta * dt))  # five correlation times
    xs = np.stack([noise.sample(rng).copy() for _ in range(burn_in + 60_000)])[burn_in:]
    expected_std = sigma / math.sqrt(2 * theta - theta**2 * dt)
    assert xs.std() == pytest.approx(expected_std, rel=0.05)
    assert abs(xs.mean() - mu) < 0.1 * expected_std
    if theta * dt > 0.1:  # here the discrete-time correction matters: sigma/sqrt(2 theta) is 15% off
        assert abs(xs.std() - sigma / math.sqrt(2 * theta)) > 0.1 * expected_std


def test_ou_reverts_to_mu_and_reset_returns_to_mu():
    theta, dt, mu = 0.5, 0.1, 2.0
    noise = ddpg.OUNoise(np.ones(3), 0.0, theta, dt, mu)  # sigma 0: the deterministic mean path
    noise.x = np.array([10.0, -4.0, 2.0])
    rng = np.random.default_rng(0)
    for _ in range(50):
        x = noise.sample(rng)
    np.testing.assert_allclose(x, mu + (np.array([10.0, -4.0, 2.0]) - mu) * (1 - theta * dt) ** 50, rtol=1e-12)
    # with noise, the long-run mean is mu
    noisy = ddpg.OUNoise(np.ones(16), 0.5, theta, dt, mu)
    noisy.x = np.full(16, -20.0)
    xs = np.stack([noisy.sample(rng).copy() for _ in range(20_000)])[1000:]
    assert abs(xs.mean() - mu) < 0.05
    noisy.reset(None, None)
    np.testing.assert_array_equal(noisy.x, np.full(16, mu))


def test_gaussian_noise_std():
    noise = ddpg.GaussianNoise(np.ones(4), 0.2)
    xs = np.stack([noise.sample(np.random.default_rng(k)) for k in range(20_000)])
    assert xs.std() == pytest.approx(0.2, rel=0.03)


@pytest.mark.parametrize("target_std, grows", [(10.0, True), (1e-6, False)])
def test_param_noise_std_adapts_towards_target(target_std, grows):
    torch.manual_seed(0)
    actor = ddpg.Actor(3, 2, (32, 32), ASYM_LOW, ASYM_HIGH)
    noise = ddpg.ParamNoise(actor, init_std=0.1, target_std=target_std, coef=1.05, interval=1, batch_size=64)
    asked = []
    noise.adapt(1, actor, obs_source(torch.randn(64, 3), asked))
    assert asked == [64]  # it drew batch_size observations
    d = noise.distance
    assert 0 < d < 10.0 and d > 1e-6  # forces the case: distance below 10, above 1e-6
    assert noise.std == pytest.approx(0.1 * 1.05 if grows else 0.1 / 1.05)


def test_param_noise_adapts_only_on_multiples_of_its_interval():
    """The loop calls adapt after every round of updates; only steps divisible by the interval adapt."""
    torch.manual_seed(0)
    actor = ddpg.Actor(3, 2, (16,), ASYM_LOW, ASYM_HIGH)
    noise = ddpg.ParamNoise(actor, init_std=0.1, target_std=1e-6, coef=2.0, interval=50, batch_size=8)
    asked = []
    for step in [1, 49, 51, 99]:
        noise.adapt(step, actor, obs_source(torch.randn(8, 3), asked))
    assert asked == [] and noise.std == 0.1 and np.isnan(noise.distance)
    noise.adapt(100, actor, obs_source(torch.randn(8, 3), asked))
    assert asked == [8] and noise.std == 0.05 and noise.distance > 0


def test_param_noise_distance_is_in_units_of_half_range():
    torch.manual_seed(0)
    actor = ddpg.Actor(3, 2, (32,), ASYM_LOW, ASYM_HIGH)
    noise = ddpg.ParamNoise(actor, init_std=0.2, target_std=0.2, coef=1.01, interval=1, batch_size=256)
    obs = torch.randn(256, 3)
    torch.manual_seed(7)
    noise.adapt(1, actor, obs_source(obs))
    d = noise.distance
    diff = (noise.probe(obs) - actor(obs)).detach() / torch.tensor((ASYM_HIGH - ASYM_LOW) / 2, dtype=torch.float32)
    assert d == pytest.approx(diff.pow(2).mean().sqrt().item(), rel=1e-6)


def test_param_noise_perturbs_linear_weights_not_layer_norm():
    torch.manual_seed(0)
    actor = ddpg.Actor(3, 2, (64, 64), ASYM_LOW, ASYM_HIGH, layer_norm=True)
    with torch.no_grad():  # non-default LayerNorm parameters, so copying them is visible
        for m in actor.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    noise = ddpg.ParamNoise(actor, init_std=0.1, target_std=0.2, coef=1.01, interval=1, batch_size=16)
    noise.reset(actor, None)
    obs = torch.randn(16, 3)
    assert not torch.allclose(noise.perturbed(obs), actor(obs))
    n_linear = n_ln = 0
    for src, dst in zip(actor.modules(), noise.perturbed.modules()):
        if isinstance(src, nn.Linear):
            n_linear += 1
            diff = (dst.weight - src.weight).flatten()
            assert diff.std().item() == pytest.approx(0.1, rel=0.2) and abs(diff.mean().item()) < 0.03
            assert not torch.equal(dst.bias, src.bias)
        elif isinstance(src, nn.LayerNorm):
            n_ln += 1
            assert torch.equal(dst.weight, src.weight) and torch.equal(dst.bias, src.bias)
    assert (n_linear, n_ln) == (3, 2)
    assert torch.equal(noise.perturbed.action_scale, actor.action_scale)
    assert torch.equal(noise.perturbed.action_bias, actor.action_bias)
    # the clean actor is untouched, and a new episode draws a new perturbation
    first = [p.clone() for p in noise.perturbed.parameters()]
    noise.reset(actor, None)
    assert any(not torch.equal(a, b) for a, b in zip(first, noise.perturbed.parameters()))
    # theta~ = theta + std * eps exactly, eps ~ N(0, I) drawn from torch's generator, weight then bias, layer by layer
    torch.manual_seed(5)
    noise.reset(actor, None)
    torch.manual_seed(5)
    for src, dst in zip(actor.modules(), noise.perturbed.modules()):
        if isinstance(src, nn.Linear):
            assert torch.equal(dst.weight, src.weight + 0.1 * torch.randn(src.weight.shape))
            assert torch.equal(dst.bias, src.bias + 0.1 * torch.randn(src.bias.shape))


def test_noise_state_survives_a_checkpoint_and_param_noise_reports_its_metrics():
    """state_dict -> a fresh process's noise -> load_state_dict: both go on identically (OU's x; parameter noise's
    std, measured distance and perturbed actor). Parameter noise logs its std and distance under noise/."""
    rng = np.random.default_rng(0)
    ou = ddpg.OUNoise(np.ones(2), 0.3, 0.15, 0.01)
    for _ in range(20):
        ou.sample(rng)
    state = copy.deepcopy(ou.state_dict())
    x_saved = ou.x.copy()
    ou.sample(rng)  # the saved state is a copy, not a view of the live process
    fresh = ddpg.OUNoise(np.ones(2), 0.3, 0.15, 0.01)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.x, x_saved)
    assert fresh.x.dtype == np.float64
    eps = np.random.default_rng(1).standard_normal(2)  # it goes on from the saved x
    np.testing.assert_allclose(fresh.sample(np.random.default_rng(1)), x_saved - 0.15 * x_saved * 0.01 + 0.03 * eps,
                               rtol=1e-12)
    assert ddpg.GaussianNoise(np.ones(2), 0.1).state_dict() == {} and ddpg.GaussianNoise(np.ones(2), 0.1).metrics() == {}

    torch.manual_seed(0)
    actor = ddpg.Actor(3, 2, (16,), ASYM_LOW, ASYM_HIGH)
    noise = ddpg.ParamNoise(actor, init_std=0.1, target_std=0.01, coef=1.5, interval=1, batch_size=8)
    noise.reset(actor, None)
    noise.adapt(1, actor, obs_source(torch.randn(8, 3)))
    assert noise.metrics() == {"noise/param_std": noise.std, "noise/param_distance": noise.distance}
    assert noise.std == pytest.approx(0.1 / 1.5) and noise.distance > 0.01
    state = copy.deepcopy(noise.state_dict())
    fresh = ddpg.ParamNoise(ddpg.Actor(3, 2, (16,), ASYM_LOW, ASYM_HIGH), init_std=0.1, target_std=0.01, coef=1.5,
                            interval=1, batch_size=8)
    fresh.load_state_dict(state)
    assert (fresh.std, fresh.distance) == (noise.std, noise.distance)
    obs = np.random.default_rng(2).normal(size=3)
    np.testing.assert_array_equal(fresh.explore(actor, obs, None), noise.explore(actor, obs, None))
    assert not np.allclose(fresh.explore(actor, obs, None), actor.act(obs))


# ---------------------------------------------------------------------------------------------
# Target policy smoothing, several critics
# ---------------------------------------------------------------------------------------------


def record_target_actions(learner: ddpg.Learner) -> list[torch.Tensor]:
    """Record the actions the real critic_loss feeds to the target critic."""
    seen = []
    forward = learner.critic_target.forward

    def spy(obs, act, *rest, **kw):
        seen.append(act.clone())
        return forward(obs, act, *rest, **kw)

    learner.critic_target.forward = spy
    return seen


@pytest.mark.parametrize("pre_tanh", [0.0, 50.0, -50.0])
def test_target_smoothing_noise_is_clipped_and_actions_stay_in_bounds(pre_tanh):
    """mu'(s') at the centre: a' - mu'(s') is the (clipped) noise. At the upper or lower bound: the
    smoothed action is clamped back into [low, high]."""
    learner = make_learner(target_noise=0.5, target_noise_clip=0.3)
    with torch.no_grad():
        last = final_linear(learner.actor_target)
        last.weight.zero_()
        last.bias.fill_(pre_tanh)
    seen = record_target_actions(learner)
    torch.manual_seed(0)
    learner.critic_loss(random_batch(n=4000))
    a = seen[-1]
    scale = torch.tensor((ASYM_HIGH - ASYM_LOW) / 2, dtype=torch.float32)
    low, high = torch.tensor(ASYM_LOW, dtype=torch.float32), torch.tensor(ASYM_HIGH, dtype=torch.float32)
    assert (a >= low).all() and (a <= high).all()
    mu = learner.actor_target(torch.zeros(1, 3)).detach()
    eps = (a - mu) / scale
    assert eps.abs().max() <= 0.3 + 1e-5
    if pre_tanh == 0.0:
        # std 0.5 > clip 0.3: a good share of the noise sits exactly at the clip
        at_clip = (eps.abs() - 0.3).abs() < 1e-5
        assert 0.4 < at_clip.float().mean() < 0.7  # P(|N(0, 0.5)| > 0.3) = 0.55
        assert (eps > 0).float().mean().item() == pytest.approx(0.5, abs=0.05)
    else:
        # mu' at a bound: half the noise pushes beyond it and is clamped onto it
        bound = high if pre_tanh > 0 else low
        assert torch.equal(mu[0], bound)
        assert (a == bound).float().mean().item() == pytest.approx(0.5, abs=0.05)


def test_no_target_noise_means_exact_target_policy():
    """Without smoothing the target action is mu'(s') exactly, and no noise is drawn: plain DDPG's random stream
    is not spent on a switched-off option."""
    learner = make_learner()
    seen = record_target_actions(learner)
    batch = random_batch()
    rng_state = torch.random.get_rng_state()
    learner.critic_loss(batch)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert torch.equal(seen[-1], learner.actor_target(batch.next_obs))


def test_min_target_is_below_mean_target_and_uses_target_critics(monkeypatch):
    torch.manual_seed(0)
    learner_min = make_learner(num_q=3, q_reduce="min", gamma=0.9)
    learner_mean = make_learner(num_q=3, q_reduce="mean", gamma=0.9)
    learner_mean.load_state_dict(learner_min.state_dict())
    captured = []
    real = ddpg.bellman_target
    monkeypatch.setattr(ddpg, "bellman_target", lambda *a: captured.append(real(*a)) or captured[-1])
    batch = random_batch(n=256)
    obs, act, rew, term, next_obs = batch.obs, batch.act, batch.rew, batch.terminated, batch.next_obs
    learner_min.critic_loss(batch)
    learner_mean.critic_loss(batch)
    y_min, y_mean = captured
    q_next = learner_min.critic_target(next_obs, learner_min.actor_target(next_obs)).detach()  # (3, B)
    assert q_next.shape == (3, 256)
    torch.testing.assert_close(y_min, rew + 0.9 * (1 - term) * q_next.min(0).values)
    torch.testing.assert_close(y_mean, rew + 0.9 * (1 - term) * q_next.mean(0))
    alive = term == 0
    assert (y_min <= y_mean + 1e-6).all() and (y_min[alive] < y_mean[alive]).all()


def test_each_critic_has_its_own_gradient_optimizer_state_and_target():
    torch.manual_seed(0)
    learner = make_learner(num_q=3, tau=0.1, gamma=0.9)
    batch = random_batch()
    obs, act, rew, term, next_obs = batch.obs, batch.act, batch.rew, batch.terminated, batch.next_obs
    loss, _ = learner.critic_loss(batch)
    loss.backward()
    ensemble_grads = [w.grad.clone() for w in learner.critic.weights]
    # slice i of the ensemble's gradient = the gradient of critic i alone on the same target
    with torch.no_grad():
        next_q = learner.critic_target(next_obs, learner.actor_target(next_obs)).min(0).values
        y = ddpg.bellman_target(rew, term, next_q, 0.9)
    for i in range(3):
        solo = ddpg.QNetwork(3, 2, (16, 16), num_q=1)
        with torch.no_grad():
            for src, dst in zip(learner.critic.parameters(), solo.parameters()):
                dst.copy_(src[i:i + 1])
        (solo(obs, act)[0] - y).pow(2).mean().backward()
        for g_ens, w in zip(ensemble_grads, solo.weights):
            torch.testing.assert_close(g_ens[i:i + 1], w.grad, rtol=1e-5, atol=1e-7)
    # one update: Adam's first moment after one step is (1 - beta1) * grad, slice by slice
    target_before = [w.clone() for w in learner.critic_target.weights]
    learner.update(batch)
    for w, g in zip(learner.critic.weights, ensemble_grads):
        m = learner.critic_opt.state[w]["exp_avg"]
        assert m.shape[0] == 3
        torch.testing.assert_close(m, 0.1 * g, rtol=1e-5, atol=1e-8)
        assert not torch.allclose(m[0], m[1]) and not torch.allclose(m[1], m[2])
    # each critic has its own target: target slice i follows online critic i
    for t0, w, t1 in zip(target_before, learner.critic.weights, learner.critic_target.weights):
        assert not torch.allclose(t1[0], t1[1])
        for i in range(3):
            torch.testing.assert_close(t1[i], 0.1 * w[i].detach() + 0.9 * t0[i], rtol=1e-5, atol=1e-7)


def subset_seen_by_critic(learner: ddpg.Learner, critic: int, batch, seed: int) -> set[int]:
    """The batch indices whose observation gets a gradient through critic `critic` alone: the
    other critics are made blind to the observation, so obs.grad != 0 exactly on its subset."""
    blind = copy.deepcopy(learner)
    obs_dim = batch[0].shape[1]
    with torch.no_grad():
        for j in range(blind.critic.num_q):
            if j != critic:
                blind.critic.weights[0][j, :obs_dim].zero_()
    obs = batch[0].clone().requires_grad_(True)
    torch.manual_seed(seed)  # the same subset draw for every call with this seed
    loss, _ = blind.critic_loss(batch._replace(obs=obs))
    loss.backward()
    return set(torch.nonzero(obs.grad.abs().sum(1) > 0).flatten().tolist())


def test_q_data_fraction_gives_each_critic_its_own_subset():
    torch.manual_seed(0)
    learner = make_learner(num_q=2, q_data_fraction=0.5)
    batch = random_batch(n=8)
    equal, inclusion = 0, np.zeros(8)
    for seed in range(40):
        s0 = subset_seen_by_critic(learner, 0, batch, seed)
        s1 = subset_seen_by_critic(learner, 1, batch, seed)
        assert len(s0) == len(s1) == 4
        equal += s0 == s1
        for b in s0:
            inclusion[b] += 1
    assert equal <= 5  # identical subsets have probability 1/70 per draw
    assert (inclusion > 0).all() and (inclusion < 40).all()
    # critic 0's gradient depends only on its subset: change the rewards outside it
    s0 = subset_seen_by_critic(learner, 0, batch, seed=123)
    outside = torch.tensor(sorted(set(range(8)) - s0))

    def critic_grads(rewards):
        learner.critic_opt.zero_grad(set_to_none=True)
        torch.manual_seed(123)
        loss, _ = learner.critic_loss(batch._replace(rew=rewards))
        loss.backward()
        return [w.grad.clone() for w in learner.critic.weights]

    g = critic_grads(batch[2])
    r = batch[2].clone()
    r[outside] += 10.0
    g2 = critic_grads(r)
    for a, b in zip(g, g2):
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)  # critic 0: unchanged
    assert any(not torch.allclose(a[1], b[1]) for a, b in zip(g, g2))  # critic 1 saw some of them


def test_q_data_fraction_one_uses_whole_batch():
    learner = make_learner(num_q=2)
    batch = random_batch(n=8)
    assert subset_seen_by_critic(learner, 0, batch, 0) == set(range(8))
    assert subset_seen_by_critic(learner, 1, batch, 0) == set(range(8))
    rng_state = torch.random.get_rng_state()
    learner.critic_loss(batch)
    assert torch.equal(torch.random.get_rng_state(), rng_state), "the whole batch needs no random subset"


# ---------------------------------------------------------------------------------------------
# Initialisation schemes
# ---------------------------------------------------------------------------------------------


def uniform_ok(t: torch.Tensor, bound: float) -> None:
    """t looks like U(-bound, bound): inside the bound, reaching near it, std = bound / sqrt(3)."""
    t = t.detach().flatten()
    assert t.abs().max().item() <= bound * (1 + 1e-6)
    assert t.abs().max().item() > 0.95 * bound
    assert t.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    assert abs(t.mean().item()) < 0.1 * bound


def actor_and_critic_layers(weights_init, bias_init, num_q=4):
    torch.manual_seed(0)
    hidden = (400, 300)
    actor = ddpg.Actor(17, 6, hidden, -np.ones(6), np.ones(6), weights_init=weights_init, bias_init=bias_init)
    critic = ddpg.QNetwork(17, 6, hidden, num_q=num_q, weights_init=weights_init, bias_init=bias_init)
    layers = []  # (weight, bias, fan_in, fan_out, final)
    linears = [m for m in actor.net if isinstance(m, nn.Linear)]
    for i, m in enumerate(linears):
        layers.append((m.weight, m.bias, m.in_features, m.out_features, i == len(linears) - 1))
    for k, (w, b) in enumerate(zip(critic.weights, critic.biases)):
        layers.append((w, b, w.shape[1], w.shape[2], k == len(critic.weights) - 1))
    return layers


@pytest.mark.parametrize("weights_init", ["torch", "xavier", "uniform"])
def test_weight_init_schemes(weights_init):
    for w, _, fan_in, fan_out, final in actor_and_critic_layers(weights_init, "torch"):
        if weights_init == "xavier":
            bound = math.sqrt(6 / (fan_in + fan_out))
        elif weights_init == "uniform" and final:
            bound = 3e-3
        else:
            bound = 1 / math.sqrt(fan_in)
        uniform_ok(w, bound)


@pytest.mark.parametrize("bias_init", ["torch", "zeros", "uniform"])
def test_bias_init_schemes(bias_init):
    for _, b, fan_in, _, final in actor_and_critic_layers("torch", bias_init):
        if bias_init == "zeros":
            assert torch.count_nonzero(b) == 0
        elif b.numel() >= 200:  # statistics only where there are enough numbers
            uniform_ok(b, 3e-3 if (bias_init == "uniform" and final) else 1 / math.sqrt(fan_in))
        else:
            bound = 3e-3 if (bias_init == "uniform" and final) else 1 / math.sqrt(fan_in)
            assert b.abs().max().item() <= bound * (1 + 1e-6) and b.abs().max().item() > 0


@pytest.mark.parametrize("weights_init, bias_init", [("uniform", "uniform"), ("xavier", "zeros")])
def test_the_learner_builds_its_networks_with_the_init_and_layer_norm_flags(weights_init, bias_init):
    """The flags reach all four networks: final layers within +-3e-3 (uniform) or xavier's bound, zero biases,
    LayerNorm in the actor or the critic only where asked. A single critic is QNetwork's default: plain DDPG."""
    torch.manual_seed(0)
    for actor_ln, critic_ln in [(True, False), (False, True)]:
        learner = make_learner(obs_dim=17, act_dim=6, low=-np.ones(6), high=np.ones(6), weights_init=weights_init,
                               bias_init=bias_init, actor_layer_norm=actor_ln, critic_layer_norm=critic_ln)
        for actor in (learner.actor, learner.actor_target):
            assert any(isinstance(m, nn.LayerNorm) for m in actor.modules()) == actor_ln
            last = final_linear(actor)
            if weights_init == "uniform":
                assert last.weight.abs().max() <= 3e-3 and last.bias.abs().max() <= 3e-3
            else:
                assert last.weight.abs().max() > 1 / math.sqrt(16)  # xavier's bound sqrt(6 / 22) is wider
                assert torch.count_nonzero(last.bias) == 0
        for critic in (learner.critic, learner.critic_target):
            assert critic.layer_norm == critic_ln
            if weights_init == "uniform":
                assert critic.weights[-1].abs().max() <= 3e-3 and critic.biases[-1].abs().max() <= 3e-3
            else:
                assert all(torch.count_nonzero(b) == 0 for b in critic.biases)
        assert "last_actor_loss" not in learner.state_dict()["nets"]  # checkpoints keep the networks, not a log value
    assert ddpg.QNetwork(3, 2, (16,)).num_q == 1


def test_uniform_init_final_layer_gives_near_zero_actions_and_q():
    torch.manual_seed(0)
    actor = ddpg.Actor(17, 6, (400, 300), ASYM_LOW.repeat(3), ASYM_HIGH.repeat(3),
                       weights_init="uniform", bias_init="uniform")
    a = actor(torch.randn(100, 17)).detach()
    centre = torch.tensor((ASYM_LOW.repeat(3) + ASYM_HIGH.repeat(3)) / 2, dtype=torch.float32)
    assert (a - centre).abs().max() < 0.1


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def test_atomic_save_keeps_old_file_when_write_fails_midway(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    ddpg.atomic_save({"step": 1, "w": torch.arange(10)}, path)
    real_open = open

    class FullDisk:
        """A file object that writes half of the data, then fails like a full disk."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    opened = []

    def failing_open(file, mode="r", *a, **kw):
        opened.append(str(file))
        return FullDisk(real_open(file, mode, *a, **kw))

    monkeypatch.setattr(ddpg, "open", failing_open, raising=False)
    with pytest.raises(OSError) as info:
        ddpg.atomic_save({"step": 2, "w": torch.arange(10_000)}, path)
    assert info.value.errno == errno.ENOSPC
    assert opened and opened[0] != str(path)  # it wrote to a temporary file, not the checkpoint
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temp file left behind
    old = torch.load(path, weights_only=False)
    assert old["step"] == 1 and torch.equal(old["w"], torch.arange(10))
    # and a successful save replaces it
    ddpg.atomic_save({"step": 3}, path)
    assert torch.load(path, weights_only=False)["step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage" * 10, b"PK\x03\x04truncated"])
def test_load_checkpoint_refuses_bad_files_with_user_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ddpg.UserError, match="cannot read checkpoint|not a ddpg.py checkpoint"):
        ddpg.load_checkpoint(path)
    with pytest.raises(ddpg.UserError, match="not found"):
        ddpg.load_checkpoint(tmp_path / "missing.pt")


def test_main_flushes_denormals_to_zero_on_every_worker_thread_and_puts_the_process_back():
    """ddpg.main turns on flush-to-zero first, so torch's worker threads, started later, have it too: a product
    that lands in the denormal range comes out exactly zero on every element. When main returns, the caller's
    process is as it was (a notebook): denormals again, and the caller's threads and random state."""
    code = """
import random, torch, ddpg
torch.set_num_threads(2)
torch.manual_seed(7)
def inside(argv):  # stands in for the flag parsing, the first thing main does after turning flush-to-zero on
    global x
    x = torch.full((1 << 20,), 1e-30)  # a normal float32; x * 1e-9 would be a denormal
    y = x * 1e-9  # a parallel op: both worker threads (started now) compute half of it
    print(int((y == 0).sum()), y.numel())
    torch.set_num_threads(1), torch.manual_seed(0), random.seed(0)  # what a run changes
    raise ddpg.UserError("stop here")
ddpg.parse_args = inside
rng = torch.get_rng_state()
assert ddpg.main([]) == 2
small = x[:100] * 1e-9  # too small to split: the caller's own thread computes it
print(int((small == 0).sum()), torch.get_num_threads(), torch.equal(torch.get_rng_state(), rng))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(ddpg.__file__).parent, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    inside, after = proc.stdout.splitlines()[-2:]
    zeros, n = map(int, inside.split())
    assert zeros == n  # without flush-to-zero every element is about 1e-39, none zero
    assert after.split() == ["0", "2", "True"]  # after main: denormals on the caller's thread (torch's workers
    # keep flush-to-zero: torch cannot reset it on them), 2 threads, the caller's RNG state


@pytest.mark.parametrize("others, threads", [(0.0, 2), (0.4, 2), (0.6, 1), (1.0, 1), (1.9, 1)])
def test_free_cores_gives_torch_every_core_only_while_no_other_process_is_busy(tmp_path, monkeypatch, others,
                                                                                threads):
    """--torch-threads 0: every 2 s, all threads if CPUs - ceil(others - 0.5) >= all, else one, where others =
    the CPUs' busy seconds per second (/proc/stat: user nice system irq softirq steal) less this process's."""
    ticks = 100
    monkeypatch.setattr(ddpg.os, "sysconf", lambda name: ticks)
    monkeypatch.setattr(ddpg.os, "sched_getaffinity", lambda pid: {0, 1})
    clock, own = [1000.0], [5.0]
    monkeypatch.setattr(ddpg.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(ddpg.os, "times", lambda: types.SimpleNamespace(user=own[0], system=1.0))
    stat = tmp_path / "stat"

    def write_stat(busy_seconds: float):  # split over the fields that count, idle and iowait not
        b = round(busy_seconds * ticks)
        stat.write_text(f"cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 {b - 30} 5 10 999 77 5 5 5 0 0\ncpu1 0 0 0 999 0 0 0 0 0 0\n"
                        f"cpu2 500 500 500 0 0 0 0 0 0 0\nintr 12345\n")  # cpu2: not ours, ignored

    monkeypatch.setattr(ddpg.FreeCores, "stat_file", str(stat))
    threads_before = torch.get_num_threads()
    try:
        write_stat(50.0)
        cores = ddpg.FreeCores(8)  # more than our 2 CPUs
        assert cores.cpus == {"cpu0", "cpu1"} and cores.most == 2 and torch.get_num_threads() == 1
        clock[0] += 1.0  # not 2 s yet: no measurement
        write_stat(60.0)
        cores.follow()
        assert torch.get_num_threads() == 1 and cores.last[0] == 1000.0
        clock[0] += 3.0  # 4 s after the first sample: we used 2 CPU-seconds per second, others `others`
        own[0] += 8.0
        write_stat(50.0 + 8.0 + 4 * others)
        cores.follow()
        assert torch.get_num_threads() == threads
        assert cores.last == (1004.0, pytest.approx(58.0 + 4 * others), 14.0)
        stat.unlink()  # no /proc/stat: it stops measuring, the threads stay
        clock[0] += 10.0
        cores.follow()
        assert cores.last is None and torch.get_num_threads() == threads
        assert ddpg.FreeCores(1).last is None  # one thread at most: nothing to measure
    finally:
        torch.set_num_threads(threads_before)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_threads_switch_only_where_the_thread_count_changes_no_number(layer_norm):
    """The check behind FreeCores: tiny shapes (no op splits among threads) give the same bits on 1 and 2
    threads; nn.LayerNorm's backward sums per thread, so with layer norm at batch 256 they differ and the run
    keeps one thread. The check leaves torch's random state and every weight of the learner as they were."""
    threads_before = torch.get_num_threads()
    try:
        args = dataclasses.replace(ddpg.Args(), actor_layer_norm=layer_norm, critic_layer_norm=layer_norm,
                                   hidden_sizes=(256, 256) if layer_norm else (4, 4))
        args = dataclasses.replace(args, batch_size=256 if layer_norm else 8)
        obs_dim, act_dim = (17, 6) if layer_norm else (3, 1)
        env = types.SimpleNamespace(observation_space=gym.spaces.Box(-1, 1, (obs_dim,)), spec=None,
                                    action_space=gym.spaces.Box(-1, 1, (act_dim,)))  # all make_parts reads
        learner = ddpg.Learner(obs_dim, act_dim, -np.ones(act_dim), np.ones(act_dim), args)
        weights = {k: v.clone() for k, v in learner.state_dict()["nets"].items()}
        torch.manual_seed(5)
        rng = torch.get_rng_state()
        scratch = ddpg.scratch_buffer(args, env, torch.device("cpu"))
        assert torch.equal(torch.get_rng_state(), rng)
        same = ddpg.same_numbers_on_any_thread_count(learner, scratch, 2)
        assert same is (not layer_norm)
        assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == 1
        assert all(torch.equal(v, weights[k]) for k, v in learner.state_dict()["nets"].items())
        assert ddpg.FreeCores.for_run(learner, scratch).most == (
            1 if layer_norm else min(len(os.sched_getaffinity(0)), ddpg.TORCH_THREADS))
    finally:
        torch.set_num_threads(threads_before)
