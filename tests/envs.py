"""Tiny environments for the tests, registered on import.

Use them from the CLI with gymnasium's 'module:EnvId' form, e.g.
`python ddpg.py --env-id tests.envs:DDPGTestAsym-v0` (run from the repo root)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

ASYM_LOW = np.array([-1.0, 0.0], dtype=np.float32)
ASYM_HIGH = np.array([3.0, 2.0], dtype=np.float32)
ASYM_TIME_LIMIT = 20


class AsymEnv(gym.Env):
    """Asymmetric action bounds low=[-1, 0], high=[3, 2]. Refuses any action outside them, so a
    training run that forgets to clip after adding noise crashes. Reward: -||a - (2, 0.5)||^2."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = gym.spaces.Box(ASYM_LOW, ASYM_HIGH, dtype=np.float32)
        self.target = np.array([2.0, 0.5])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.normal(size=3).astype(np.float32), {}

    def step(self, action):
        action = np.asarray(action)
        if not (action.shape == (2,) and np.all(action >= ASYM_LOW) and np.all(action <= ASYM_HIGH)):
            raise ValueError(f"action {action!r} outside the bounds {ASYM_LOW} .. {ASYM_HIGH}")
        reward = -float(np.sum((action - self.target) ** 2))
        return self.np_random.normal(size=3).astype(np.float32), reward, False, False, {}

    def render(self):
        return np.zeros((16, 16, 3), dtype=np.uint8)


COUNTER_TIME_LIMIT = 10
COUNTER_TERMINAL_STEP = 7


class CounterEnv(gym.Env):
    """Observation (episode index, step within the episode). Odd episodes *terminate* after
    COUNTER_TERMINAL_STEP steps; even episodes run into the TimeLimit of COUNTER_TIME_LIMIT steps
    and are *truncated*. Reward = the step number. Lets a test check, from the stored buffer, that
    the training loop stores terminated (not truncated) and the real next observation."""

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.episode, self.t = -1, 0

    def obs(self):
        return np.array([self.episode, self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self.obs(), {}

    def step(self, action):
        self.t += 1
        terminated = self.episode % 2 == 1 and self.t == COUNTER_TERMINAL_STEP
        return self.obs(), float(self.t), terminated, False, {}


NAN_REWARD_AFTER = 300
NAN_TIME_LIMIT = 50


class NaNRewardEnv(gym.Env):
    """A point x that should move to 0 (x <- clip(x + a)): reward -x^2, finite for the first NAN_REWARD_AFTER
    steps of the instance's life and NaN from then on. A training run on it must diverge, at a
    step that depends only on when the NaN transition is first sampled."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.steps, self.x = 0, np.zeros(1, dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, size=1).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action):
        self.steps += 1
        self.x = np.clip(self.x + np.asarray(action, dtype=np.float32), -2, 2)
        reward = float(-(self.x[0] ** 2)) if self.steps <= NAN_REWARD_AFTER else float("nan")
        return self.x.copy(), reward, False, False, {}


class OneStepEnv(gym.Env):
    """Every episode is one step that *terminates* with reward 1, from a random observation: the true value of
    every (s, a) is Q = 1. A learner that bootstraps through the termination drifts to 1 / (1 - gamma)."""

    def __init__(self, render_mode=None):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.normal(size=3).astype(np.float32), {}

    def step(self, action):
        return self.np_random.normal(size=3).astype(np.float32), 1.0, True, False, {}


class ForeverEnv(OneStepEnv):
    """Reward 1 at every step, never terminating: the time limit only *truncates*, so the true value of every
    (s, a) is 1 / (1 - gamma), reached by bootstrapping through the truncations."""

    def step(self, action):
        return self.np_random.normal(size=3).astype(np.float32), 1.0, False, False, {}


def _register(env_id: str, entry_point, max_episode_steps: int) -> None:
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=entry_point, max_episode_steps=max_episode_steps)


_register("DDPGTestAsym-v0", AsymEnv, ASYM_TIME_LIMIT)
_register("DDPGTestCounter-v0", CounterEnv, COUNTER_TIME_LIMIT)
_register("DDPGTestNaNReward-v0", NaNRewardEnv, NAN_TIME_LIMIT)
_register("DDPGTestOneStep-v0", OneStepEnv, 10)
_register("DDPGTestForever-v0", ForeverEnv, 10)
