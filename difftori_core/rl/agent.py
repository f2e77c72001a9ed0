"""The TD-MPC agent with two planners, and DiffTORI's policy-gradient loss through the optimizer.

Losses of one update (TD-MPC), over an H-step replayed subsequence with PER weights:
    consistency  sum_t rho^t ||d(z_t, a_t) - h_target(o_{t+1})||^2
    reward       sum_t rho^t (R(z_t, a_t) - r_t)^2
    value        sum_t rho^t sum_i (Q_i(z_t, a_t) - (r_t + gamma min_j Q_target_j(z'_{t+1}, pi(z'_{t+1}))))^2
    policy       -sum_t rho^t min_i Q_i(sg(z_t), pi(sg(z_t)))        (only pi; Q frozen)
With `planner="difftori"` two more:
    raw critic   TD loss of a twin critic on the raw observation, Q_s(o, a)   (only Q_s)
    DiffTORI     -min_i Q_s,i(o_0, a*_0(theta)) / S, a* the optimizer's first action from h(o_0):
                 back-propagated through the optimizer into h, d, R and Q -- not into pi or Q_s.
                 S is a running mean of |Q_s| (as TD-MPC2 scales its policy loss), so the loss
                 stays O(1) while returns grow to O(100); unscaled, it swamped the model losses
                 (consistency loss x20 on the validation task).
The model loss and the DiffTORI loss share one optimizer step (clip-norm `grad_clip`).

Deviation from the reference, on purpose: the reference solves with gradients at every
environment step and accumulates over an episode; here the DiffTORI loss is a replayed
minibatch of `pg_batch` start states per update, the usual off-policy estimate of the same
gradient, which batches the differentiable solve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from difftori_core.nn.mlp import MLP
from difftori_core.rl.planners import (
    DiffTORIPlanner,
    DiffTORIPlannerConfig,
    Plan,
    SamplingConfig,
    SamplingPlanner,
    rollout_prior,
)
from difftori_core.rl.world_model import WorldModel, WorldModelConfig, make_encoder

PLANNERS = ("difftori", "sampling")


@dataclass
class AgentConfig:
    """TD-MPC's hyperparameters (paper values unless noted) and DiffTORI's additions."""

    planner: str = "difftori"
    horizon: int = 5
    discount: float = 0.99
    lr: float = 1e-3
    batch_size: int = 256
    rho: float = 0.5
    consistency_coef: float = 2.0
    reward_coef: float = 0.5
    value_coef: float = 0.1
    tau: float = 0.01
    target_every: int = 2
    grad_clip: float = 10.0
    difftori_coef: float = 0.1
    pg_batch: int = 32
    explore_std: float = 0.3  # DiffTORI planner's exploration noise (chosen on cartpole-swingup: RESULTS.md)
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    difftori: DiffTORIPlannerConfig = field(default_factory=DiffTORIPlannerConfig)

    def __post_init__(self) -> None:
        if self.planner not in PLANNERS:
            raise ValueError(f"planner must be one of {PLANNERS}, got {self.planner!r}")
        if self.horizon < 1 or not 0 < self.discount <= 1 or self.batch_size < 1 or self.pg_batch < 1:
            raise ValueError("horizon >= 1, 0 < discount <= 1, batch_size >= 1 and pg_batch >= 1 are required")


class RawCritic(nn.Module):
    """Twin Q on the raw observation (DiffTORI's Q_s), with its own encoder and EMA target."""

    def __init__(self, obs_shape: tuple[int, ...], action_dim: int, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.encoder = make_encoder(obs_shape, cfg.latent_dim, cfg)
        self.q1 = MLP(cfg.latent_dim + action_dim, (cfg.mlp_dim, cfg.mlp_dim), 1, act="elu", layer_norm=True)
        self.q2 = MLP(cfg.latent_dim + action_dim, (cfg.mlp_dim, cfg.mlp_dim), 1, act="elu", layer_norm=True)

    def forward(self, obs: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([self.encoder(obs), a], dim=-1)
        return self.q1(x), self.q2(x)


class Agent(nn.Module):
    def __init__(self, obs_shape: tuple[int, ...], action_dim: int, cfg: AgentConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg, self.obs_shape, self.action_dim = cfg, tuple(obs_shape), action_dim
        self.model = WorldModel(self.obs_shape, action_dim, cfg.model)
        self.model_optim = torch.optim.Adam(self.model.model_parameters(), lr=cfg.lr)
        self.pi_optim = torch.optim.Adam(self.model.pi.parameters(), lr=cfg.lr)
        # Both planners always exist (they hold no parameters), so any trained agent can plan
        # either way; the raw critic exists only where DiffTORI's loss trains the model.
        self.sampling = SamplingPlanner(self.model, cfg.horizon, cfg.discount, cfg.sampling, seed)
        self.difftori = DiffTORIPlanner(self.model, cfg.horizon, cfg.discount, cfg.difftori, seed + 1, cfg.explore_std)
        self.critic: RawCritic | None = None
        if cfg.planner == "difftori":
            self.critic = RawCritic(self.obs_shape, action_dim, cfg.model)
            self.target_critic = RawCritic(self.obs_shape, action_dim, cfg.model).requires_grad_(False)
            self.target_critic.load_state_dict(self.critic.state_dict())
            self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
            self.register_buffer("q_scale", torch.ones(()))
        self.generator = torch.Generator().manual_seed(seed + 2)
        self.updates = 0

    @property
    def device(self) -> torch.device:
        return self.model.reward.linears[0].weight.device

    # -- acting --------------------------------------------------------------------------

    def reset(self) -> None:
        self.sampling.reset()
        self.difftori.reset()

    @torch.no_grad()
    def act(self, obs: Tensor, explore: bool = True, planner: str | None = None) -> Plan:
        """One environment step: encode once, plan on the latent. `planner` overrides the
        configured one (the sampling planner acts during DiffTORI's warm-up)."""
        z = self.model.encode(obs.unsqueeze(0).to(self.device))
        name = planner or self.cfg.planner
        return (self.difftori if name == "difftori" else self.sampling).plan(z, explore)

    # -- learning ------------------------------------------------------------------------

    def _encode(self, obs: Tensor, target: bool = False) -> Tensor:
        return (self.model.target_encoder if target else self.model.encoder)(obs)

    def update(self, batch: dict[str, Tensor], difftori_weight: float = 1.0) -> tuple[dict[str, float], Tensor]:
        """One gradient step on a replayed batch (TD-MPC's time-major layout). Returns the
        logged losses and the new PER priorities (B,). `difftori_weight` scales DiffTORI's loss
        (`difftori_coef` x weight; the trainer's schedule, 0 during warm-up: not computed)."""
        cfg, m = self.cfg, self.model
        obs, action, reward, weight = batch["obs"], batch["action"], batch["reward"], batch["weight"]
        H = action.shape[0]
        z = self._encode(obs[0])
        zs = [z.detach()]
        consistency = reward_loss = value_loss = priority = 0.0
        with torch.no_grad():
            next_z = self._encode(obs[1:].flatten(0, 1), target=True).unflatten(0, (H, -1))
            td_z = self._encode(obs[1:].flatten(0, 1)).unflatten(0, (H, -1))
            tq1, tq2 = m.q(td_z, m.policy(td_z, m.cfg.min_std, self.generator), target=True)
            td_target = reward.unsqueeze(-1) + cfg.discount * torch.minimum(tq1, tq2)
        for t in range(H):
            q1, q2 = m.q(z, action[t])
            z, r_hat = m.next(z, action[t])
            zs.append(z.detach())
            rho = cfg.rho**t
            consistency = consistency + rho * (z - next_z[t]).square().mean(-1)
            reward_loss = reward_loss + rho * (r_hat.squeeze(-1) - reward[t]).square()
            value_loss = value_loss + rho * ((q1 - td_target[t]).square() + (q2 - td_target[t]).square()).squeeze(-1)
            priority = priority + rho * ((q1 - td_target[t]).abs() + (q2 - td_target[t]).abs()).squeeze(-1)
        total = cfg.consistency_coef * consistency.clamp(max=1e4) + cfg.reward_coef * reward_loss
        total = total + cfg.value_coef * value_loss.clamp(max=1e4)
        model_loss = (total * weight).mean() / H
        info: dict[str, float] = {
            "consistency_loss": float(consistency.detach().mean()),
            "reward_loss": float(reward_loss.detach().mean()),
            "value_loss": float(value_loss.detach().mean()),
        }
        loss = model_loss
        if self.critic is not None and difftori_weight > 0:
            pg, pg_info = self.difftori_loss(obs[0][: cfg.pg_batch])
            loss = loss + cfg.difftori_coef * difftori_weight * pg
            info.update(pg_info, difftori_weight=difftori_weight)
        self.model_optim.zero_grad(set_to_none=True)
        params = m.model_parameters()
        loss.backward(inputs=params)
        info["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        self.model_optim.step()

        # Policy prior: maximize min Q on the (detached) latents, Q frozen.
        pi_loss = 0.0
        for t, zt in enumerate(zs):
            q1, q2 = m.q(zt, m.pi(zt))
            pi_loss = pi_loss - cfg.rho**t * torch.minimum(q1, q2).mean()
        self.pi_optim.zero_grad(set_to_none=True)
        (pi_loss / len(zs)).backward(inputs=list(m.pi.parameters()))
        torch.nn.utils.clip_grad_norm_(m.pi.parameters(), cfg.grad_clip)
        self.pi_optim.step()
        info["pi_loss"] = float(pi_loss.detach()) / len(zs)

        if self.critic is not None:
            info["critic_loss"] = self._critic_step(obs, action, reward)
        self.updates += 1
        if self.updates % cfg.target_every == 0:
            m.update_targets(cfg.tau)
            if self.critic is not None:
                with torch.no_grad():
                    for p, tp in zip(self.critic.parameters(), self.target_critic.parameters(), strict=True):
                        tp.lerp_(p, cfg.tau)
        info["loss"] = float(model_loss.detach())
        return info, (priority / H).detach()

    def difftori_loss(self, obs: Tensor) -> tuple[Tensor, dict[str, float]]:
        """-min Q_s(o, a*_0): a* from the optimizer started at the prior's rollout of h(o),
        differentiable w.r.t. h, d, R, Q through the solve."""
        assert self.critic is not None, "DiffTORI's loss needs the raw critic (planner=difftori)"
        z = self.model.encode(obs)
        with torch.no_grad():
            init = rollout_prior(self.model, z, self.cfg.horizon)
        sequence, failed, _ = self.difftori.solve(z, init)
        a0 = sequence[:, 0]
        q1, q2 = self.critic(obs, a0)
        ok = ~failed
        q = torch.minimum(q1, q2).squeeze(-1)
        with torch.no_grad():
            self.q_scale.lerp_(q.abs().mean().clamp_min(1.0), self.cfg.tau)
        loss = -(q * ok).sum() / ok.sum().clamp_min(1) / self.q_scale
        return loss, {"difftori_loss": float(loss.detach()), "solver_failed": float(failed.sum())}

    def _critic_step(self, obs: Tensor, action: Tensor, reward: Tensor) -> float:
        assert self.critic is not None
        m = self.model
        with torch.no_grad():
            a1 = m.policy(m.encode(obs[1]), m.cfg.min_std, self.generator)
            tq1, tq2 = self.target_critic(obs[1], a1)
            target = reward[0].unsqueeze(-1) + self.cfg.discount * torch.minimum(tq1, tq2)
        q1, q2 = self.critic(obs[0], action[0])
        loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_optim.zero_grad(set_to_none=True)
        loss.backward(inputs=list(self.critic.parameters()))
        torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.cfg.grad_clip)
        self.critic_optim.step()
        return float(loss.detach())

    # -- state ---------------------------------------------------------------------------

    def optimizer_state(self) -> dict[str, Any]:
        out = {"model": self.model_optim.state_dict(), "pi": self.pi_optim.state_dict()}
        if self.critic is not None:
            out["critic"] = self.critic_optim.state_dict()
        return out

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        self.model_optim.load_state_dict(state["model"])
        self.pi_optim.load_state_dict(state["pi"])
        if self.critic is not None:
            self.critic_optim.load_state_dict(state["critic"])

    def generator_states(self) -> dict[str, Tensor]:
        return {
            "agent": self.generator.get_state(),
            "sampling": self.sampling.generator.get_state(),
            "difftori": self.difftori.generator.get_state(),
        }

    def load_generator_states(self, states: dict[str, Tensor]) -> None:
        self.generator.set_state(states["agent"])
        self.sampling.generator.set_state(states["sampling"])
        self.difftori.generator.set_state(states["difftori"])
