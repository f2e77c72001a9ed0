"""A trained model-based agent as a policy: every call plans through the learned world model.

Registered as policy type "tdmpc" so the runner, evaluation and the ROS controller load and run
it like any other model. Observations are joint states (`agent_pos` positions, `joint_velocity`
velocities: what a JointState message carries), turned into the agent's input by the same
`envs.dmc.joint_features` the agent was trained on. Each call encodes the newest observation
once and plans (`variant`: "difftori", the trajectory optimizer, warm-started from the previous
call's plan shifted by one step; or "sampling", MPPI); the chunk is the plan, of which the
runner executes the first action (n_action_steps = 1). A failed solve returns the policy
prior's plan and is flagged in the chunk. `reset()` forgets the warm start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from difftori_core.policies.base import Batch, Chunk, Network, Policy, PolicySpec
from difftori_core.policies.registry import register_policy
from difftori_core.rl.agent import Agent, AgentConfig


@dataclass
class TDMPCPolicyConfig:
    """agent: the trained agent's configuration. joint_wrap / joint_drop: per joint, whether
    its angle enters as (cos, sin) and whether its position is left out (`joint_features`)."""

    agent: AgentConfig = field(default_factory=AgentConfig)
    joint_wrap: list[bool] = field(default_factory=list)
    joint_drop: list[bool] = field(default_factory=list)
    agent_seed: int = 0  # the planners' generators restart from it at every reset


@register_policy("tdmpc", TDMPCPolicyConfig, variants=("difftori", "sampling"))
class TDMPCPolicy(Policy):
    def __init__(self, spec: PolicySpec, config: TDMPCPolicyConfig) -> None:
        super().__init__(spec, config.agent.horizon, 1, 1)
        n = spec.obs_shapes["agent_pos"][0]
        if len(config.joint_wrap) != n or len(config.joint_drop) != n:
            raise ValueError(f"joint_wrap and joint_drop need one entry per joint ({n})")
        self.config = config
        self.register_buffer("_wrap", torch.tensor(config.joint_wrap), persistent=False)
        self.register_buffer("_keep", ~torch.tensor(config.joint_drop), persistent=False)
        obs_dim = int(self._keep.sum() + self._wrap[self._keep].sum()) + spec.obs_shapes["joint_velocity"][0]
        self.agent = Agent((obs_dim,), spec.action_dim, config.agent)

    @classmethod
    def from_config(cls, config, spec: PolicySpec) -> TDMPCPolicy:  # type: ignore[no-untyped-def]
        return cls(spec, config.section("tdmpc"))

    def features(self, qpos: Tensor, qvel: Tensor) -> Tensor:
        """`envs.dmc.joint_features` in torch, for (B, D) joint states."""
        parts = []
        for j in range(qpos.shape[-1]):
            if not bool(self._keep[j]):
                continue
            q = qpos[:, j : j + 1]
            parts += [torch.cos(q), torch.sin(q)] if bool(self._wrap[j]) else [q]
        return torch.cat([*parts, qvel], dim=-1).float()

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError("a tdmpc policy is trained by the RL trainer (python -m difftori_core.train algo=rl)")

    def predict_chunk(self, obs: Mapping[str, Tensor], variant: str | None = None) -> Chunk:
        variant = self.check_variant(variant)
        x = self.features(obs["agent_pos"][:, -1].double(), obs["joint_velocity"][:, -1].float())
        plans = [self.agent.act(row, explore=False, planner=variant) for row in x]
        return Chunk(
            torch.cat([p.sequence for p in plans]),
            torch.tensor([p.failed for p in plans]),
            torch.tensor([p.iterations for p in plans]),
        )

    def networks(self) -> list[Network]:
        return []  # planning stays in torch; there is nothing to hand to an execution provider

    def reset(self) -> None:
        """Forget the warm start and reseed the planners: every episode plans the same way
        whatever ran before it (evaluation, warm-up, an earlier episode)."""
        self.agent.reset()
        seed = self.config.agent_seed
        self.agent.sampling.generator.manual_seed(seed)
        self.agent.difftori.generator.manual_seed(seed + 1)
