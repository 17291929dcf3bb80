"""The algorithm checked against independent computations: each test here fails on a plausible one-line bug
that the rest of the suite let through (acting with the target actor, parameter noise acting with the clean
actor or never redrawing, action noise not scaled by the half-range, critic layer norm skipped or its gain
ignored, --update-every ignored, a target computed with the online networks, the actor's loss leaking
gradients into the critic). Inside the training loop, a recording wrapper sees every action the loop takes."""

from __future__ import annotations

import copy
import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ddpg
from conftest import TINY, scalar_tags, single_run_dir
from tests import envs

ASYM_LOW, ASYM_HIGH = np.array([-1.0, 0.0]), np.array([3.0, 2.0])


def make_learner(**overrides) -> ddpg.Learner:
    args = dataclasses.replace(ddpg.Args(), hidden_sizes=(16, 16), **overrides)
    return ddpg.Learner(3, 2, ASYM_LOW, ASYM_HIGH, args)


def random_batch(n=64, seed=0) -> ddpg.Batch:
    g = torch.Generator().manual_seed(seed)
    return ddpg.Batch(obs=torch.randn(n, 3, generator=g), act=torch.rand(n, 2, generator=g) * 2 - 0.5,
                      rew=torch.randn(n, generator=g), terminated=(torch.rand(n, generator=g) < 0.3).float(),
                      next_obs=torch.randn(n, 3, generator=g))


def mlp_by_hand(weights, biases, x, ln=None):
    """An MLP in numpy: ReLU hidden layers (LayerNorm with gain and shift first when ln is given), linear output."""
    for k, (w, b) in enumerate(zip(weights, biases)):
        x = x @ w + b
        if k < len(weights) - 1:
            if ln is not None:
                gain, shift = ln[k]
                x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * gain + shift
            x = np.maximum(x, 0.0)
    return x


def q_by_hand(critic: ddpg.QNetwork, obs, act) -> np.ndarray:
    """Q_i(s, a) of every critic, from the parameters alone: shape (N, B)."""
    x = np.concatenate([obs.double().numpy(), act.double().numpy()], axis=-1)
    out = []
    for i in range(critic.num_q):
        ws = [w[i].detach().double().numpy() for w in critic.weights]
        bs = [b[i, 0].detach().double().numpy() for b in critic.biases]
        ln = ([(g[i, 0].detach().double().numpy(), s[i, 0].detach().double().numpy())
               for g, s in zip(critic.ln_weights, critic.ln_biases)] if critic.layer_norm else None)
        out.append(mlp_by_hand(ws, bs, x, ln)[:, 0])
    return np.stack(out)


def mu_by_hand(actor: ddpg.Actor, obs) -> np.ndarray:
    linears = [m for m in actor.net if isinstance(m, torch.nn.Linear)]
    x = mlp_by_hand([m.weight.detach().double().numpy().T for m in linears],
                    [m.bias.detach().double().numpy() for m in linears], np.asarray(obs, dtype=np.float64))
    return np.tanh(x) * actor.action_scale.double().numpy() + actor.action_bias.double().numpy()


def scramble(module: torch.nn.Module, seed: int) -> None:
    """New random values for every parameter: a target network that no longer equals its online network."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


# ---------------------------------------------------------------------------------------------
# The critic's and the actor's losses, against hand computations with targets that differ from the online nets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_q, q_reduce", [(1, "min"), (2, "min"), (3, "mean")])
def test_critic_loss_uses_the_target_networks_for_y_and_the_online_critic_for_q(num_q, q_reduce):
    torch.manual_seed(0)
    learner = make_learner(num_q=num_q, q_reduce=q_reduce, gamma=0.9)
    scramble(learner.actor_target, 1)
    scramble(learner.critic_target, 2)
    b = random_batch()
    next_act = mu_by_hand(learner.actor_target, b.next_obs.numpy())
    next_q = q_by_hand(learner.critic_target, b.next_obs, torch.as_tensor(next_act))
    next_q = next_q.min(0) if q_reduce == "min" else next_q.mean(0)
    y = b.rew.double().numpy() + 0.9 * (1 - b.terminated.double().numpy()) * next_q
    q = q_by_hand(learner.critic, b.obs, b.act)
    expected = ((q - y) ** 2).mean(1).sum()
    loss, q_code = learner.critic_loss(b)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    np.testing.assert_allclose(q_code.detach().double().numpy(), q, rtol=1e-4, atol=1e-5)


def test_critic_layer_norm_applies_its_gain_and_shift():
    torch.manual_seed(0)
    critic = ddpg.QNetwork(3, 2, (16, 16), num_q=2, layer_norm=True)
    with torch.no_grad():  # gains and shifts away from LayerNorm's identity start
        for p in [*critic.ln_weights, *critic.ln_biases]:
            p.copy_(torch.randn(p.shape) * 0.7 + 0.5)
    b = random_batch()
    np.testing.assert_allclose(critic(b.obs, b.act).detach().double().numpy(), q_by_hand(critic, b.obs, b.act),
                               rtol=1e-4, atol=1e-5)


def test_actor_loss_is_minus_mean_q_of_critic_0_and_leaks_no_gradient_into_the_critic():
    torch.manual_seed(0)
    learner = make_learner(num_q=2, q_reduce="min")
    b = random_batch()
    loss = learner.actor_loss(b.obs)
    mu = mu_by_hand(learner.actor, b.obs.numpy())
    expected = -q_by_hand(learner.critic, b.obs, torch.as_tensor(mu))[0].mean()
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    learner.critic.zero_grad(set_to_none=True)
    loss.backward()
    assert all(p.grad is None for p in learner.critic.parameters()), "the actor's loss sent gradients to the critic"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.actor.parameters())


# ---------------------------------------------------------------------------------------------
# Exploration: each noise's action against the formula, with the half-range of asymmetric bounds
# ---------------------------------------------------------------------------------------------


def test_action_noise_is_scaled_by_the_half_range_of_each_dimension():
    torch.manual_seed(0)
    actor = ddpg.Actor(3, 2, (16,), ASYM_LOW, ASYM_HIGH)
    obs = np.array([0.1, -0.4, 0.9])
    scale = (ASYM_HIGH - ASYM_LOW) / 2  # 2 and 1: the two dimensions' noise differs
    mu = mu_by_hand(actor, obs)
    gaussian = ddpg.GaussianNoise(scale, 0.3)
    a = gaussian.explore(actor, obs, np.random.default_rng(5))
    np.testing.assert_allclose(a, mu + np.random.default_rng(5).normal(0.0, 0.3, 2) * scale, rtol=1e-6)
    ou = ddpg.OUNoise(scale, 0.3, 0.15, 0.5)
    a = ou.explore(actor, obs, np.random.default_rng(6))
    x = 0.3 * np.sqrt(0.5) * np.random.default_rng(6).standard_normal(2)  # one OU step from x = mu = 0
    np.testing.assert_allclose(a, mu + x * scale, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The training loop, watched from inside the environment
# ---------------------------------------------------------------------------------------------


class Watch(gym.Wrapper):
    """Records, at every step, the action the loop took and what the actors would have done."""

    def __init__(self, env, run_box):
        super().__init__(env)
        self.run_box, self.obs, self.log, self.perturbations = run_box, None, [], []

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.obs = obs
        return obs, info

    def step(self, action):
        run = self.run_box[0]
        learner, noise = run.learner, run.noise
        self.log.append({"step": run.state.step, "action": np.array(action, dtype=np.float64), "dtype": action.dtype,
                         "actor": learner.actor.act(self.obs), "target": learner.actor_target.act(self.obs),
                         "perturbed": noise.perturbed.act(self.obs) if hasattr(noise, "perturbed") else None,
                         "n_updates": learner.n_updates})
        obs, *rest = self.env.step(action)
        self.obs = obs
        return (obs, *rest)


def train_here(argv, prepare=lambda run: None) -> ddpg.Run:
    """setup() and train() in this process (so that mutation testing sees which tests reach which code);
    prepare(run) may wrap the environment or the noise after setup, before train."""
    args, given = ddpg.parse_args(["--torch-threads", "1", "--no-cuda", *argv])
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    interrupted = ddpg.Interrupted()
    try:
        run = ddpg.setup(args, given, interrupted)
        prepare(run)
        code = run.execute()  # train() with the run around it: the last checkpoints, summary.json
    finally:
        interrupted.restore()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert code == 0, f"the run ended with exit code {code}"
    return run


def watched_run(tmp_path, *flags):
    """A short Pendulum run with the training env wrapped by Watch and the noise's resets recorded."""
    box, resets = [], []

    def prepare(run):
        box.append(run)
        run.env = Watch(run.env, box)
        run.env.obs = run.state.obs
        original_reset = run.noise.reset

        def reset(actor, rng):  # the noise's per-episode reset, recording what it leaves behind
            original_reset(actor, rng)
            if hasattr(run.noise, "perturbed"):
                resets.append([p.clone() for p in run.noise.perturbed.parameters()])
        run.noise.reset = reset
    run = train_here(["--env-id", "Pendulum-v1", "--start-steps", "64", "--batch-size", "32", "--hidden-sizes", "16",
                      "16", "--max-episode-steps", "50", "--eval-every", "100000", "--save-every", "100000",
                      "--log-every", "100000", "--runs-dir", str(tmp_path), *flags], prepare)
    return run, run.env.log, resets


def test_the_loop_acts_with_the_online_actor_not_the_target(tmp_path):
    """With noise 0, every learning-phase action is clip(mu(s)) of the online actor; the target actor is made to
    disagree strongly, so acting with it would show."""
    run, log, _ = watched_run(tmp_path, "--total-steps", "150", "--noise-std", "0", "--tau", "0.001")
    learning = [r for r in log if r["step"] > 64]
    assert len(learning) == 150 - 64
    assert all(np.allclose(r["action"], np.clip(r["actor"], -2, 2), atol=1e-6) for r in learning)
    warm_up = [r for r in log if r["step"] <= 64]  # steps 1..start_steps are uniformly random, step 64 too
    assert len(warm_up) == 64 and not any(np.allclose(r["action"], r["actor"], atol=1e-3) for r in warm_up)
    assert all(r["dtype"] == np.float32 for r in log), "actions reach the env in its action space's dtype"
    assert sum(not np.allclose(r["target"], r["actor"], atol=1e-3) for r in learning) > 40, "the actors never differed"


def test_parameter_noise_acts_with_its_perturbed_actor_and_redraws_it_every_episode(tmp_path):
    run, log, resets = watched_run(tmp_path, "--total-steps", "250", "--noise-type", "param", "--noise-std", "0.5")
    learning = [r for r in log if r["step"] > 64]
    assert all(np.allclose(r["action"], np.clip(r["perturbed"], -2, 2), atol=1e-6) for r in learning)
    assert sum(not np.allclose(r["perturbed"], r["actor"], atol=1e-3) for r in learning) > 100
    assert len(resets) == 250 // 50  # one per episode end (the first episode's draw happened in setup)
    assert all(any(not torch.equal(a, b) for a, b in zip(x, y)) for x, y in zip(resets, resets[1:])), \
        "the perturbation was not redrawn at an episode start"


@pytest.mark.parametrize("update_every, updates_per_step", [(1, 1), (4, 1), (3, 2)])
def test_update_every_runs_the_updates_in_bursts(tmp_path, update_every, updates_per_step):
    run, log, _ = watched_run(tmp_path, "--total-steps", "120", "--update-every", str(update_every),
                              "--updates-per-step", str(updates_per_step))
    # n_updates seen by the env at step t = updates made in steps before t
    for r in log:
        burst_steps = sum(1 for t in range(65, r["step"]) if t % update_every == 0)
        assert r["n_updates"] == burst_steps * update_every * updates_per_step, r
    final_bursts = sum(1 for t in range(65, 121) if t % update_every == 0)
    assert run.learner.n_updates == final_bursts * update_every * updates_per_step


def polyak_predicted_q(updates: int, tau: float, gamma: float, reward: float = 1.0) -> float:
    """Q after `updates` updates of a critic that fits its target exactly, on a task whose every step pays `reward`
    and never ends: Q = r + gamma * Q', and the target trails it, Q' <- (1 - tau) Q' + tau Q, from Q' = 0."""
    target = 0.0
    for _ in range(updates):
        target += tau * (reward + gamma * target - target)
    return reward + gamma * target


@pytest.mark.parametrize("env, tau, expected, tolerance", [
    ("OneStep", 0.005, 1.0, 0.1),  # every step terminates: Q = r exactly; bootstrapping through it gives 5 to 10
    ("Forever", 1.0, 10.0, 1.0),  # only truncations: Q = r / (1 - gamma) = 10; truncation as termination gives 5
    ("Forever", 0.005, polyak_predicted_q(1400, 0.005, 0.9), 1.0),  # 5.5: targets trail at tau; none gives 10
], ids=["termination-ends-the-bootstrap", "truncation-bootstraps", "targets-trail-at-rate-tau"])
def test_q_values_see_termination_truncation_and_target_networks(env, tau, expected, tolerance, tmp_path):
    """The critic's mean Q after 1,400 updates (gamma 0.9, reward 1 per step) against what the Bellman target and
    Polyak averaging predict. Planted bugs checked against it: no (1 - terminated) gives 5.0 / 10.2 on OneStep;
    truncation stored as termination 5.2 with tau 1; targets = online networks 10.1 with tau 0.005."""
    train_here(["--env-id", f"tests.envs:DDPGTest{env}-v0", "--total-steps", "1500", "--start-steps", "100",
                "--batch-size", "32", "--hidden-sizes", "32", "32", "--gamma", "0.9", "--tau", str(tau),
                "--eval-every", "1500", "--eval-episodes", "1", "--log-every", "250", "--runs-dir", str(tmp_path)])
    (step, q_mean), = [t for t in scalar_tags(single_run_dir(tmp_path))["losses/q_mean"] if t[0] == 1500]
    assert abs(q_mean - expected) <= tolerance, (q_mean, expected)


# ---------------------------------------------------------------------------------------------
# The training loop, checked through what it stored and logged
# ---------------------------------------------------------------------------------------------


def test_exploration_actions_are_clipped_to_asymmetric_bounds(tmp_path):
    """Bounds low=[-1, 0], high=[3, 2]; the env raises on any action outside them. Random warm-up actions cover
    the asymmetric box, and noisy actions (std 1.5 x range/2) that left it were clipped onto its faces."""
    run = train_here(["--env-id", "tests.envs:DDPGTestAsym-v0", *TINY, "--total-steps", "300", "--eval-every", "300",
                      "--save-every", "300", "--noise-std", "1.5", "--runs-dir", str(tmp_path)])
    buf = run.buffer
    actions = buf.actions[buf.valid].double().numpy()  # slots in time order: no wrap-around here
    assert actions.shape == (300, 2)
    low, high = envs.ASYM_LOW.astype(np.float64), envs.ASYM_HIGH.astype(np.float64)
    assert (actions >= low).all() and (actions <= high).all()
    warm, noisy = actions[:100], actions[100:]
    assert ((warm > low) & (warm < high)).all()  # uniform: never exactly on a face
    np.testing.assert_allclose(warm.mean(0), (low + high) / 2, atol=0.35)  # centre (1, 1), not (0, 0)
    assert (warm[:, 0] > 2).any() and (warm[:, 1] < 0.5).any()
    for d in range(2):  # about a quarter of the noisy actions leave on each side
        assert (noisy[:, d] == low[d]).sum() >= 10, d
        assert (noisy[:, d] == high[d]).sum() >= 10, d


def counter_run(tmp_path, *flags) -> ddpg.Run:
    return train_here(["--env-id", "tests.envs:DDPGTestCounter-v0", *TINY, "--total-steps", "120", "--start-steps",
                       "40", "--eval-every", "120", "--save-every", "120", "--log-every", "10", "--runs-dir",
                       str(tmp_path), *flags])


def test_buffer_stores_terminated_not_truncated_and_real_next_obs(tmp_path):
    """Counter env: odd episodes terminate after 7 steps, even ones are truncated at 10. In the buffer: every
    transition's s' is its real successor, terminated is set exactly on the true terminations, never on the
    time-limit truncations, and final observations are never starts. (Logging every 10 steps, from the warm-up
    on, where no update has run yet.)"""
    buf = counter_run(tmp_path).buffer
    obs, valid, term, rew = buf.obs, buf.valid, buf.terminated, buf.rewards
    starts = torch.nonzero(valid).flatten()
    assert len(starts) == 120
    # 120 steps = 7 x (10 + 7) + 1: 14 finished episodes, each leaves its final observation in a slot
    assert buf.high == 120 + 14 + 1
    seen = set()
    for i in starts.tolist():
        ep, t = obs[i].tolist()
        ep_next, t_next = obs[i + 1].tolist()
        assert (ep_next, t_next) == (ep, t + 1), f"slot {i}: s={obs[i].tolist()} s'={obs[i + 1].tolist()}"
        assert rew[i] == t + 1
        length = envs.COUNTER_TERMINAL_STEP if ep % 2 == 1 else envs.COUNTER_TIME_LIMIT
        assert t + 1 <= length
        assert term[i] == float(ep % 2 == 1 and t + 1 == envs.COUNTER_TERMINAL_STEP), (ep, t)
        seen.add((ep, t))
    assert len(seen) == 120
    truncations = [(ep, 9) for ep in range(0, 14, 2)]
    assert all(s in seen for s in truncations)  # the truncated last steps are stored, with terminated = 0
    finals = [i for i in range(buf.high) if not valid[i]]
    assert len(finals) == 15
    assert [obs[i, 1].item() for i in finals[:-1]] == [10.0, 7.0] * 7  # each episode's last s'
    assert obs[finals[-1]].tolist() == [14.0, 1.0]  # s' of the episode in progress


def test_episode_returns_lengths_and_learning_speed_are_logged_as_they_happened(tmp_path):
    """Counter env (reward = step number): truncated episodes return 1 + ... + 10 = 55 in 10 steps, terminated
    ones 1 + ... + 7 = 28 in 7. The learning phase's steps/s can never be below steps / wall time."""
    run = counter_run(tmp_path)
    tags = scalar_tags(single_run_dir(tmp_path))
    assert [v for _, v in tags["charts/episodic_return"]] == [55.0, 28.0] * 7
    assert [v for _, v in tags["charts/episodic_length"]] == [10.0, 7.0] * 7
    assert [step for step, _ in tags["charts/episodic_return"]] == [17 * k + d for k in range(7) for d in (10, 17)]
    assert [step for step, _ in tags["losses/q_loss"]] == list(range(50, 121, 10))  # from the first update on
    summary = json.loads((single_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["learning_sps"] >= (120 - 40) / summary["wall_time_s"]
    assert run.learner.n_updates == 120 - 40


def test_a_resume_without_the_buffer_refills_it_before_updating(tmp_path):
    """Resumed without a saved buffer, the run collects max(start_steps, batch_size) = 40 transitions with the
    policy before its first update: steps 121-160, then one update per step from step 161 to 200."""
    first = counter_run(tmp_path)
    assert first.learner.n_updates == 80
    resumed = train_here(["--resume", str(single_run_dir(tmp_path)), "--total-steps", "200"])
    assert resumed.buffer.added == 80 and resumed.learner.n_updates == 80 + 40
