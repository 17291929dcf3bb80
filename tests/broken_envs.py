"""Broken environments, registered on import, for the hostile-input tables (tests/test_robustness.py).

`python ddpg.py --env-id tests.broken_envs:Broken<Name>-v0` (run from the repo root). Each one is a small,
well-behaved environment (a point x in R^3 pushed by a 1-D action, reward -|x|^2, 50 steps per episode)
with exactly one defect. Defects named ...At150 appear at the 150th step() of an instance's life (the
training environment's step 150: the start-up check steps the evaluation environment once), and only
while the variable BROKEN_ENV_FAULT is set, so that a resume without it continues the run.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

FAULT_STEP = 150
TIME_LIMIT = 50


class Good(gym.Env):
    """The healthy base."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.x = np.zeros(3, dtype=np.float32)
        self.steps = 0

    def fault_now(self) -> bool:
        return self.steps == FAULT_STEP and bool(os.environ.get("BROKEN_ENV_FAULT"))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, size=3).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action):
        self.steps += 1
        self.x = np.clip(self.x + 0.1 * float(np.asarray(action).reshape(-1)[0]), -5, 5).astype(np.float32)
        return self.x.copy(), -float(np.sum(self.x**2)), False, False, {}


# --- spaces DDPG cannot use: refused before the run folder exists ---

class ScalarAction(Good):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Box(-1.0, 1.0, (), np.float32)


class MatrixAction(Good):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)


class ZeroSizeAction(Good):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Box(-1.0, 1.0, (0,), np.float32)


class ZeroSizeObs(Good):
    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (0,), np.float32)


class ImageObs(Good):
    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)


class DictObs(Good):
    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-1.0, 1.0, (3,), np.float32)})


class UnboundedAction(Good):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)


class EqualBounds(Good):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Box(np.array([-1.0, 0.5]), np.array([1.0, 0.5]), dtype=np.float32)


# --- wrong API or garbage from the first reset or step: refused by the start-up check ---

class ResetObsOnly(Good):
    def reset(self, *, seed=None, options=None):
        return super().reset(seed=seed)[0]


class ResetInfoNotDict(Good):
    def reset(self, *, seed=None, options=None):
        return super().reset(seed=seed)[0], None


class OldStepApi(Good):
    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated or truncated, info


class RewardNone(Good):
    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, None, terminated, truncated, info


class RewardPair(Good):
    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, np.array([reward, reward]), terminated, truncated, info


class RewardString(Good):
    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, "1.0", terminated, truncated, info


class ObsWrongShape(Good):
    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return np.append(obs, 0.0).astype(np.float32), info


class ObsNaN(Good):
    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        obs[1] = np.nan
        return obs, info


class ObsNone(Good):
    def step(self, action):
        _, reward, terminated, truncated, info = super().step(action)
        return None, reward, terminated, truncated, info


class TerminatedNone(Good):
    def step(self, action):
        obs, reward, _, truncated, info = super().step(action)
        return obs, reward, None, truncated, info


class ResetRaises(Good):
    def reset(self, *, seed=None, options=None):
        raise RuntimeError("cannot connect to the simulator")


class InitRaises(Good):
    def __init__(self):
        raise RuntimeError("license file not found")


class InitExits(Good):
    def __init__(self):
        sys.exit("this environment needs a display")


class StepExitsAtOnce(Good):
    def step(self, action):
        sys.exit(3)


# --- faults in the middle of a run (while BROKEN_ENV_FAULT is set) ---

class StepRaisesAt150(Good):
    def step(self, action):
        result = super().step(action)
        if self.fault_now():
            raise RuntimeError("the simulator exploded")
        return result


class RewardNoneAt150(Good):
    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, None if self.fault_now() else reward, terminated, truncated, info


class ObsShapeChangesAt150(Good):
    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return (obs[:2] if self.fault_now() else obs), reward, terminated, truncated, info


class StepExitsAt150(Good):
    def step(self, action):
        result = super().step(action)
        if self.fault_now():
            sys.exit("fatal: out of licenses")
        return result


class ResetRaisesAtEpisode3(Good):
    """reset() fails when the training environment starts its 4th episode (after 3 x 50 steps, at step 150)."""

    resets = 0

    def reset(self, *, seed=None, options=None):
        self.resets += 1
        if self.resets == 4 and os.environ.get("BROKEN_ENV_FAULT"):
            raise RuntimeError("the scene failed to load")
        return super().reset(seed=seed)


class EvalRaises(Good):
    """Fails in the evaluation: ddpg.py seeds evaluation episodes from seed + 100000."""

    def reset(self, *, seed=None, options=None):
        if seed is not None and seed >= 100_000 and os.environ.get("BROKEN_ENV_FAULT"):
            raise RuntimeError("evaluation scene missing")
        return super().reset(seed=seed)


# --- awkward but valid ---

class Unpicklable(Good):
    """Holds a lock (a socket or a simulator handle would do the same): pickle.dumps fails."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()


class SlowInit(Good):
    """Takes 60 s to construct, after touching the file named by BROKEN_ENV_MARKER: a signal arrives at start-up."""

    def __init__(self):
        super().__init__()
        marker = os.environ.get("BROKEN_ENV_MARKER")
        if marker:
            Path(marker).touch()
            time.sleep(60)


for _name, _cls in list(globals().items()):
    if isinstance(_cls, type) and issubclass(_cls, Good):
        _id = f"Broken{_name}-v0"
        if _id not in gym.registry:
            gym.register(_id, entry_point=_cls, max_episode_steps=TIME_LIMIT)
