"""DeepMind Control Suite tasks, from states or from pixels, with TD-MPC's action repeat.

`DMCEnv(DMCEnvConfig(task="cartpole-swingup"))` wraps `dm_control.suite`:

* observations: `state` float32 (D,), the task's observation dict flattened in key order, or
  with `observation: joints` the features `joint_features` computes from joint positions and
  velocities alone -- what a robot's encoders (a JointState message) give, so an agent trained
  on them can run from ROS topics; or, with `from_pixels`, `pixels` uint8 (3 * frame_stack,
  size, size), the newest `frame_stack` renders of the task's tracking camera stacked on the
  channel axis (DrQ / TD-MPC style). The raw joint positions and velocities are always in
  `qpos` / `qvel`;
* actions in [-1, 1]^A (every DMC task's bounds), each repeated `action_repeat` simulator steps;
  the step's reward is the sum over the repeats;
* `reset(seed)` reseeds the task, so episode k of an evaluation with seed s sees the same
  initial state every time. Episodes last 1000 simulator steps (1000 / action_repeat env steps).

Headless rendering needs `MUJOCO_GL=egl` (or `osmesa`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

# TD-MPC's action repeat per task (the paper's per-task table); 2 for tasks not listed.
ACTION_REPEAT = {
    "cartpole-swingup-sparse": 8,
    "cartpole-swingup": 8,
    "cartpole-balance": 8,
    "cheetah-run": 2,
    "cup-catch": 2,
    "finger-spin": 2,
    "finger-turn-easy": 2,
    "finger-turn-hard": 2,
    "hopper-stand": 4,
    "hopper-hop": 4,
    "pendulum-swingup": 2,
    "quadruped-run": 4,
    "quadruped-walk": 4,
    "reacher-easy": 4,
    "reacher-hard": 4,
    "walker-run": 2,
    "walker-stand": 2,
    "walker-walk": 2,
}
EPISODE_SIM_STEPS = 1000


class DMCError(ValueError):
    """An unknown task or an invalid setting."""


def joint_features(qpos: np.ndarray, qvel: np.ndarray, wrap: list[bool], drop: list[bool]) -> np.ndarray:
    """Observation from joint states: per joint its position, or (cos, sin) for an unlimited
    hinge (`wrap`: its angle grows without bound as it spins), positions of `drop` joints left
    out (a floating base's x: DMC's own observations omit it), then every velocity."""
    q = np.asarray(qpos, np.float64)
    parts = [
        np.array([np.cos(v), np.sin(v)]) if w else np.array([v]) for v, w, d in zip(q, wrap, drop, strict=True) if not d
    ]
    return np.concatenate([*parts, np.asarray(qvel, np.float64)]).astype(np.float32)


@dataclass
class DMCEnvConfig:
    """Attributes:
    task: "<domain>-<task>", e.g. "cartpole-swingup", "walker-walk", "cup-catch".
    from_pixels: observe `frame_stack` stacked size x size renders instead of the state.
    action_repeat: simulator steps per action; 0 picks TD-MPC's value for the task.
    camera: render camera id; -1 picks DMC's convention (2 for quadruped, else 0).
    """

    task: str = "cartpole-swingup"
    observation: str = "task"  # task | joints (see joint_features)
    from_pixels: bool = False
    image_size: int = 84
    frame_stack: int = 3
    action_repeat: int = 0
    camera: int = -1

    def __post_init__(self) -> None:
        if self.task.count("-") < 1:
            raise DMCError(f"task must look like <domain>-<task>, got {self.task!r}")
        if self.observation not in ("task", "joints"):
            raise DMCError(f"observation must be task or joints, got {self.observation!r}")
        if self.image_size < 16 or self.frame_stack < 1 or self.action_repeat < 0:
            raise DMCError("image_size >= 16, frame_stack >= 1 and action_repeat >= 0 are required")

    @property
    def domain_task(self) -> tuple[str, str]:
        domain, _, task = self.task.partition("-")
        if domain == "cup":
            domain = "ball_in_cup"
        return domain, task.replace("-", "_")

    @property
    def repeat(self) -> int:
        return self.action_repeat or ACTION_REPEAT.get(self.task, 2)

    @property
    def episode_steps(self) -> int:
        return EPISODE_SIM_STEPS // self.repeat


class DMCEnv:
    def __init__(self, config: DMCEnvConfig, seed: int = 0) -> None:
        from dm_control import suite

        self.config = config
        domain, task = config.domain_task
        if (domain, task) not in suite.ALL_TASKS:
            raise DMCError(f"unknown DeepMind Control task {config.task!r}")
        self._suite = suite
        self._env = suite.load(domain, task, task_kwargs={"random": seed})
        spec = self._env.action_spec()
        self.action_dim = int(spec.shape[0])
        self.action_low, self.action_high = spec.minimum.astype(np.float32), spec.maximum.astype(np.float32)
        self._keys = list(self._env.observation_spec())
        self.state_dim = int(sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values()))
        self.camera = config.camera if config.camera >= 0 else (2 if domain == "quadruped" else 0)
        self._frames: deque[np.ndarray] = deque(maxlen=config.frame_stack)
        physics = self._env.physics
        self.joint_names = [physics.model.id2name(i, "joint") for i in range(physics.model.njnt)]
        self.actuator_names = [physics.model.id2name(i, "actuator") for i in range(physics.model.nu)]
        hinge = 3
        types, limited = physics.model.jnt_type, physics.model.jnt_limited
        self.joint_wrap = [bool(t == hinge and not lim) for t, lim in zip(types, limited, strict=True)]
        self.joint_drop = [name == "rootx" for name in self.joint_names]
        if config.observation == "joints":
            self.state_dim = len(joint_features(physics.data.qpos, physics.data.qvel, self.joint_wrap, self.joint_drop))

    @property
    def obs_shape(self) -> tuple[int, ...]:
        c = self.config
        return (3 * c.frame_stack, c.image_size, c.image_size) if c.from_pixels else (self.state_dim,)

    def _state(self, time_step: Any) -> np.ndarray:
        if self.config.observation == "joints":
            physics = self._env.physics
            return joint_features(physics.data.qpos, physics.data.qvel, self.joint_wrap, self.joint_drop)
        return np.concatenate([np.asarray(time_step.observation[k], np.float32).ravel() for k in self._keys])

    def render(self, size: int | None = None) -> np.ndarray:
        size = size or self.config.image_size
        return self._env.physics.render(size, size, camera_id=self.camera)

    def _observe(self, time_step: Any) -> dict[str, np.ndarray]:
        physics = self._env.physics
        obs = {"state": self._state(time_step), "qpos": physics.data.qpos.copy(), "qvel": physics.data.qvel.copy()}
        if self.config.from_pixels:
            frame = self.render().transpose(2, 0, 1).copy()
            if not self._frames:
                self._frames.extend([frame] * self.config.frame_stack)
            else:
                self._frames.append(frame)
            obs["pixels"] = np.concatenate(list(self._frames), axis=0)
        return obs

    def observation(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The agent's observation: pixels or state."""
        return obs["pixels"] if self.config.from_pixels else obs["state"]

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        self._env.task.random.seed(seed)
        self._frames.clear()
        return self._observe(self._env.reset())

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool]:
        """(observation, reward summed over the repeats, episode over)."""
        action = np.clip(np.asarray(action, np.float64), self.action_low, self.action_high)
        reward, time_step = 0.0, None
        for _ in range(self.config.repeat):
            time_step = self._env.step(action)
            reward += float(time_step.reward or 0.0)
            if time_step.last():
                break
        assert time_step is not None
        return self._observe(time_step), reward, bool(time_step.last())

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> DMCEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
