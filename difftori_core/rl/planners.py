"""Two planners behind one interface: `plan(latent, explore) -> Plan`.

* `SamplingPlanner`: TD-MPC's MPPI. Gaussian action sequences (plus a few policy-prior
  rollouts) are scored by the model's predicted return, the elites refit the Gaussian, and the
  executed action is drawn from the elites by their softmax weights. The mean is warm-started
  from the previous step's, shifted by one.
* `DiffTORIPlanner`: the differentiable trajectory optimizer on the same objective
  (`RolloutResidual`: discounted predicted rewards plus the terminal twin-Q value, monotone in
  every score), starting from the better of the policy prior rolled through the model and the
  previous step's plan shifted by one. `solve(latent, grad=True)` is the differentiable version
  the policy-gradient loss back-propagates through.

Both read only the latent: the encoder runs once per environment step, never inside an
objective evaluation. A failed solve (non-finite cost, Jacobian or factorization) falls back to
the policy prior's action and is reported in `Plan.failed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from difftori_core.rl.world_model import WorldModel
from difftori_core.trajopt import (
    BoxResidual,
    ProximityResidual,
    RolloutResidual,
    SolverConfig,
    StackedResidual,
    TrajOptLayer,
)


@dataclass
class SamplingConfig:
    """TD-MPC's MPPI settings (paper: 6 iterations, 512 samples, 64 elites, 5% prior rollouts)."""

    iterations: int = 6
    num_samples: int = 256
    num_elites: int = 32
    mixture_coef: float = 0.05
    temperature: float = 0.5
    momentum: float = 0.1
    max_std: float = 2.0


def _default_solver() -> SolverConfig:
    return SolverConfig(
        backend="fast", method="lm", max_iterations=5, step_size=1.0, damping=0.1,
        backward_mode="truncated", backward_iterations=3,
    )


@dataclass
class DiffTORIPlannerConfig:
    """objective: "per_step" (monotone, one residual per score) or "scalar" (the reference's
    single residual, for which the reference's per-task step/damping apply). temperature: the
    reward terms' scale (the value term's is temperature / (1 - discount)). The rollout
    objective is stacked with a proximity term (0 disables it) and the action-box penalty.

    Defaults (temperature 0.01, 8 starts, 5 LM iterations) were chosen on cartpole-swingup, a
    task outside the reported comparison, by planning with a world model trained by the sampling
    planner (2 evaluation episodes each; one start from the prior: 294, 8 starts at temperature
    1 / 0.1 / 0.03 / 0.01: 511 / 742 / 777 / 816, MPPI 832)."""

    objective: str = "per_step"
    temperature: float = 0.01
    margin: float = 2.0
    proximity: float = 0.1  # weight of ||a - a_init||^2: a trust region around the initial plan
    box: float = 100.0  # weight of the penalty outside the action bounds [-1, 1]
    starts: int = 8  # acting: solve from this many initial plans at once, keep the best
    start_std: float = 0.3  # noise of the extra starts (prior rollouts with this action noise)
    offset: float = 1000.0  # scalar objective only
    warm_start: bool = True
    solver: SolverConfig = field(default_factory=_default_solver)
    # The reference's per-task LM settings, for its scalar objective (gradient-like small steps).
    scalar_solver: SolverConfig = field(default_factory=lambda: SolverConfig(max_iterations=100, step_size=1e-4,
                                                                              damping=1e-2, backward_iterations=5))

    def __post_init__(self) -> None:
        if self.objective not in ("per_step", "scalar"):
            raise ValueError(f"objective must be per_step or scalar, got {self.objective!r}")

    @property
    def active_solver(self) -> SolverConfig:
        return self.scalar_solver if self.objective == "scalar" else self.solver


@dataclass
class Plan:
    action: Tensor  # (A,) or (B, A): the action to execute
    sequence: Tensor  # (B, H, A): the whole plan (warm start of the next step)
    failed: bool = False
    iterations: int = 0


def rollout_prior(model: WorldModel, z: Tensor, horizon: int, std: float = 0.0, generator=None) -> Tensor:
    """The policy prior rolled through the model: (B, H, A)."""
    actions = []
    for _ in range(horizon):
        a = model.policy(z, std, generator)
        actions.append(a)
        z, _ = model.next(z, a)
    return torch.stack(actions, dim=1)


def predicted_return(model: WorldModel, z: Tensor, actions: Tensor, discount: float) -> Tensor:
    """sum_t gamma^t R(z_t, a_t) + gamma^H min Q(z_H, pi(z_H)) for actions (B, H, A) -> (B,)."""
    g, w = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype), 1.0
    for t in range(actions.shape[1]):
        z, r = model.next(z, actions[:, t])
        g = g + w * r.squeeze(-1)
        w *= discount
    q1, q2 = model.q(z, model.policy(z))
    return g + w * torch.minimum(q1, q2).squeeze(-1)


class SamplingPlanner:
    def __init__(self, model: WorldModel, horizon: int, discount: float, cfg: SamplingConfig, seed: int = 0) -> None:
        self.model, self.horizon, self.discount, self.cfg = model, horizon, discount, cfg
        self.generator = torch.Generator().manual_seed(seed)
        self._prev_mean: Tensor | None = None

    def reset(self) -> None:
        self._prev_mean = None

    @torch.no_grad()
    def plan(self, z: Tensor, explore: bool = True) -> Plan:
        """z: (1, Z). TD-MPC's MPPI with the elites' softmax weights."""
        cfg, H, A = self.cfg, self.horizon, self.model.action_dim
        g = self.generator
        n_pi = int(cfg.mixture_coef * cfg.num_samples)
        pi_actions = None
        if n_pi > 0:
            pi_actions = rollout_prior(self.model, z.expand(n_pi, -1), H, self.model.cfg.min_std, g)
        # Noise comes from the planner's CPU generator (reproducible on any device), then moves.
        mean = torch.zeros(H, A, dtype=z.dtype, device=z.device)
        if self._prev_mean is not None:
            mean[:-1] = self._prev_mean[1:]
        std = torch.full((H, A), cfg.max_std, dtype=z.dtype, device=z.device)
        zs = z.expand(cfg.num_samples + n_pi, -1)
        elite_actions = score = None
        for _ in range(cfg.iterations):
            noise = torch.randn(cfg.num_samples, H, A, generator=g, dtype=z.dtype).to(z.device)
            actions = (mean + std * noise).clamp(-1.0, 1.0)
            if pi_actions is not None:
                actions = torch.cat([actions, pi_actions])
            value = predicted_return(self.model, zs, actions, self.discount).nan_to_num(nan=-1e9)
            elite = value.topk(cfg.num_elites).indices
            elite_value, elite_actions = value[elite], actions[elite]
            score = torch.exp(cfg.temperature * (elite_value - elite_value.max()))
            score = score / score.sum()
            new_mean = (score[:, None, None] * elite_actions).sum(0)
            new_std = (score[:, None, None] * (elite_actions - new_mean).square()).sum(0).sqrt()
            mean = cfg.momentum * mean + (1 - cfg.momentum) * new_mean
            std = new_std.clamp(self.model.cfg.min_std, cfg.max_std)
        assert elite_actions is not None and score is not None
        choice = torch.multinomial(score.cpu(), 1, generator=g).item()
        sequence = elite_actions[choice]
        self._prev_mean = mean
        action = sequence[0]
        if explore:
            noise = torch.randn(A, generator=g, dtype=z.dtype).to(z.device)
            action = (action + std[0] * noise).clamp(-1.0, 1.0)
        return Plan(action, sequence.unsqueeze(0))


class DiffTORIPlanner:
    def __init__(
        self, model: WorldModel, horizon: int, discount: float, cfg: DiffTORIPlannerConfig, seed: int = 0,
        explore_std: float = 0.1,
    ) -> None:
        self.model, self.horizon, self.discount, self.cfg = model, horizon, discount, cfg
        self.explore_std = explore_std
        self.rollout = RolloutResidual(
            model.dynamics, model.reward, horizon, model.action_dim, value=[model.q1, model.q2], policy=model.pi,
            discount=discount, mode=cfg.objective, offset=cfg.offset, temperature=cfg.temperature,
            margin=cfg.margin,
        )
        terms = [self.rollout, BoxResidual(horizon, model.action_dim, cfg.box)]
        if cfg.proximity > 0:
            terms.append(ProximityResidual(horizon, model.action_dim, cfg.proximity))
        self.layer = TrajOptLayer(StackedResidual(*terms), cfg.active_solver)
        self.generator = torch.Generator().manual_seed(seed)
        self._prev: Tensor | None = None

    def reset(self) -> None:
        self._prev = None

    def _context(self, z: Tensor, init: Tensor) -> dict[str, Tensor]:
        ctx = {"latent": z, "init": init.detach()}
        if self.rollout.mode == "per_step":
            ctx["anchor"] = self.rollout.anchors(z.detach(), init.detach())
        return ctx

    def initial(self, z: Tensor) -> Tensor:
        """The prior rolled through the model; with warm start, the previous plan shifted by one
        step instead where it predicts a higher return."""
        with torch.no_grad():
            init = rollout_prior(self.model, z, self.horizon)
            if self.cfg.warm_start and self._prev is not None and self._prev.shape[0] == z.shape[0]:
                shifted = torch.cat([self._prev[:, 1:], init[:, -1:]], dim=1)
                better = predicted_return(self.model, z, shifted, self.discount) > predicted_return(
                    self.model, z, init, self.discount
                )
                init = torch.where(better[:, None, None], shifted, init)
        return init

    def solve(self, z: Tensor, init: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The optimizer's action sequences (B, H, A), differentiable w.r.t. the model where
        autograd is on, plus per-sample failure flags and iterations."""
        init = self.initial(z) if init is None else init
        sol, info = self.layer(init, self._context(z, init))
        # The box penalty keeps the solution at the bounds up to ~1/box; the clamp only trims that.
        return sol.clamp(-1.0, 1.0), info.failed, info.iterations

    @torch.no_grad()
    def plan(self, z: Tensor, explore: bool = True) -> Plan:
        """z (1, Z). With `starts` > 1 the prior / warm start and `starts - 1` noisy prior
        rollouts are solved as one batch and the best predicted return wins (local optimization
        alone cannot leave the basin its start is in)."""
        init = self.initial(z)
        inits = init
        if self.cfg.starts > 1:
            zs = z.expand(self.cfg.starts - 1, -1)
            noisy = rollout_prior(self.model, zs, self.horizon, self.cfg.start_std, self.generator)
            inits = torch.cat([init, noisy])
        z_all = z.expand(inits.shape[0], -1)
        solutions, failed, iterations = self.solve(z_all, inits)
        value = predicted_return(self.model, z_all, solutions, self.discount)
        value = value.masked_fill(failed | ~torch.isfinite(value), float("-inf"))
        best = int(value.argmax())
        sequence = solutions[best : best + 1]
        if bool(failed.all()):
            sequence = init[:1]  # the prior's plan: a failed solve never reaches the robot
        self._prev = sequence
        action = sequence[0, 0]
        if explore and self.explore_std > 0:
            noise = torch.randn(action.shape, generator=self.generator, dtype=action.dtype).to(action.device)
            action = (action + self.explore_std * noise).clamp(-1.0, 1.0)
        return Plan(action, sequence, bool(failed.all()), int(iterations.max()))
