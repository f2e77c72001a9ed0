"""Imitation learning from demonstrations, with periodic evaluation and exact resume
(CLI: `python -m difftori_core.train`).

With the default config it collects demonstrations for the default task if they are missing, trains
the base policy, then the DiffTORI cost on top of it (base frozen), and evaluates both. A run
directory holds `checkpoints/` (atomic, `latest` pointer), `tb/` (TensorBoard), `metrics.jsonl`,
`learning_curve.png` and `final_eval.json`. Re-running the same command resumes from the latest
checkpoint and continues bit-for-bit as if never stopped (weights, optimizer, RNG and sampler
states are all saved).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from difftori_core import checkpoint as ckpt
from difftori_core.artifacts import DATASET_META, LATEST
from difftori_core.config import ConfigError, from_dict, to_dict
from difftori_core.data.dataset import Dataset, DatasetError
from difftori_core.data.windows import WindowSampler
from difftori_core.deploy.runner import PolicyRunner
from difftori_core.envs.metaworld import MetaWorldEnvConfig
from difftori_core.policies import Policy, PolicyConfig, PolicySpec, TrainingPhase, make_policy
from difftori_core.processing import ProcessingSpec
from difftori_core.training.distributed import Distributed
from difftori_core.training.evaluation import EvalResult, run_episodes
from difftori_core.training.validation import ValidationSet


@dataclass
class TrainConfig:
    """Attributes (all settable from YAML and as `key=value` overrides):
    task: MetaWorld task; the environment for evaluation and the expert for demonstrations.
    dataset: demonstration dataset directory (default `data/<task>`; collected if missing).
    demos: expert episodes to collect when the dataset is missing.
    output_dir: run directory (default `runs/<task>-<policy.type>`).
    base_steps: optimizer steps for the base policy (for mlp_bc/diffusion: all steps).
    cost_steps: DiffTORI only: steps for the learned cost on top of the frozen base.
    val_demos: held-out expert episodes (seeds from `val_seed`, disjoint from the training
        seeds) on which every variant's imitation MSE is measured at inference settings at every
        evaluation; 0 disables validation.
    val_dataset: their directory (default `<dataset>-val`; collected if missing).
    """

    task: str = "door-open-v3"
    dataset: str = ""
    demos: int = 10
    val_demos: int = 5
    val_seed: int = 500
    val_dataset: str = ""
    output_dir: str = ""
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # 0 keeps torch's default
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-6
    grad_clip: float = 1.0
    base_steps: int = 2000
    cost_steps: int = 1000
    log_every: int = 25
    eval_every: int = 1000
    eval_episodes: int = 10
    final_eval_episodes: int = 50
    eval_seed: int = 1000
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    env: MetaWorldEnvConfig = field(default_factory=MetaWorldEnvConfig)
    processing: ProcessingSpec = field(default_factory=ProcessingSpec)

    def __post_init__(self) -> None:
        self.env.task = self.task
        positive = {k: getattr(self, k) for k in ("batch_size", "log_every", "eval_every", "checkpoint_every")}
        bad = [k for k, v in positive.items() if v <= 0]
        if bad or self.lr <= 0 or self.base_steps < 0 or self.cost_steps < 0 or self.val_demos < 0:
            raise ValueError(f"invalid training settings {bad or ['lr/steps']}")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.task}-{self.policy.type}")

    @property
    def dataset_dir(self) -> Path:
        return Path(self.dataset or f"data/{self.task}")

    @property
    def val_dataset_dir(self) -> Path:
        return Path(self.val_dataset or f"{self.dataset_dir}-val")


def _plain(data: Any) -> Any:
    """Tuples as lists, as they come back from YAML."""
    return json.loads(json.dumps(data))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def ensure_dataset(cfg: TrainConfig, validation: bool = False) -> Dataset:
    """Load the training (or validation) demonstrations, collecting them first if missing, and
    check that they were recorded for this task with this config's observation processing."""
    path, demos, seed = (
        (cfg.val_dataset_dir, cfg.val_demos, cfg.val_seed) if validation else (cfg.dataset_dir, cfg.demos, cfg.seed)
    )
    if not path.exists():
        from difftori_core.data.collect import collect

        what = "validation" if validation else "expert"
        tqdm.write(f"[train] no dataset at {path}: collecting {demos} {what} demonstrations (seeds from {seed})")
        collect(cfg.task, demos, path, seed=seed, env=cfg.env, processing=cfg.processing)
    dataset = Dataset.load(path)
    try:
        recorded = from_dict(ProcessingSpec, dataset.meta["processing"], prefix="processing.")
    except ConfigError as err:
        raise DatasetError(f"{path / DATASET_META}: field 'processing': {err}") from err
    if recorded != cfg.processing:
        raise ConfigError(
            f"{path} was processed with {recorded}, but the config asks for {cfg.processing}; "
            "collect a new dataset (or set processing.* to match)"
        )
    if dataset.meta["env"].get("task") != cfg.task:
        raise ConfigError(f"{path} holds task {dataset.meta['env'].get('task')!r}, not {cfg.task!r}")
    return dataset


def expert_seeds(dataset: Dataset) -> set[int]:
    """Every expert seed a collected dataset tried (kept or discarded); empty if not recorded."""
    info = dataset.meta.get("info", {}) or {}
    return {int(s) for s in [*info.get("kept_seeds", []), *info.get("discarded_seeds", [])]}


def ensure_validation_set(cfg: TrainConfig, train: Dataset) -> Dataset:
    """The validation demonstrations, refused if they share an initial state with training."""
    val = ensure_dataset(cfg, validation=True)
    shared = expert_seeds(train) & expert_seeds(val)
    if shared:
        raise ConfigError(
            f"{cfg.val_dataset_dir} shares expert seeds {sorted(shared)[:5]} with {cfg.dataset_dir}: a validation "
            "set must hold unseen initial states (set val_seed beyond the training seeds)"
        )
    return val


def policy_spec(dataset: Dataset, cfg: TrainConfig) -> PolicySpec:
    keys = [k for k in ("point_cloud", "image", "agent_pos") if k in dataset.keys and cfg.processing.uses(k)]
    env_meta = dataset.meta.get("env", {})
    return PolicySpec(
        obs_shapes={k: list(dataset.frame_shape(k)) for k in keys},
        action_dim=dataset.frame_shape("action")[0],
        action_low=list(env_meta.get("action_low", [-1.0] * dataset.frame_shape("action")[0])),
        action_high=list(env_meta.get("action_high", [1.0] * dataset.frame_shape("action")[0])),
        action_names=list(env_meta.get("action_names", [])),
    )


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    """TensorBoard scalars of one metrics row: `<phase>/<metric>`, `eval/success_rate`, or
    `val/mse_<variant>`."""
    if "eval_success" in row:
        return {"eval/success_rate": row["eval_success"]}
    if "val_mse" in row:
        return {f"val/mse_{variant}": v for variant, v in row["val_mse"].items()}
    return {f"{row['phase']}/{k}": v for k, v in row.items() if k not in ("step", "phase", "elapsed_s")}


class Trainer:
    """Trains a policy phase by phase (`Policy.training_phases`: "base" for `base_steps`, then
    "cost" for `cost_steps` where the policy has one), with periodic evaluation of every variant
    and atomic checkpoints; single process or data-parallel under torchrun."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.dist, self.device = Distributed.from_environment(pick_device(cfg.device))
        if self.dist.is_main:
            self.dataset = ensure_dataset(cfg)
            val = ensure_validation_set(cfg, self.dataset) if cfg.val_demos else None
        self.dist.barrier()  # rank 0 may have collected the datasets
        if not self.dist.is_main:
            self.dataset, val = ensure_dataset(cfg), None
        self.spec = policy_spec(self.dataset, cfg)
        self.policy: Policy = make_policy(cfg.policy, self.spec).to(self.device)
        stats = {"action": self.dataset.arrays["action"]}
        if "agent_pos" in self.spec.obs_shapes:
            stats["agent_pos"] = self.dataset.arrays["agent_pos"]
        self.policy.normalizer.fit(stats)
        self.sampler = WindowSampler(
            self.dataset.arrays,
            self.dataset.episode_ends,
            cfg.policy.n_obs_steps,
            cfg.policy.horizon,
            list(self.spec.obs_shapes),
            seed=cfg.seed,
        )
        steps = {"base": cfg.base_steps, "cost": cfg.cost_steps}
        self.phases = [(phase, steps[phase.name]) for phase in self.policy.training_phases()]
        self.optimizers = {phase.name: self._adamw(phase.parameters) for phase, _ in self.phases}
        self.total_steps = sum(n for _, n in self.phases)
        self._wrapped: dict[str, torch.nn.Module] = {}
        self.step = 0
        self.run_dir = cfg.run_dir
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.history: list[dict[str, Any]] = []
        self.runner = PolicyRunner(self.policy, cfg.processing)
        self.validation = (
            ValidationSet(val, cfg.policy.n_obs_steps, cfg.policy.horizon, list(self.spec.obs_shapes))
            if val is not None
            else None
        )

    def _adamw(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def phase_at(self, step: int) -> TrainingPhase:
        """The phase that trains step `step` (0-based); the last phase past the end."""
        for phase, n in self.phases:
            if step < n:
                return phase
            step -= n
        return self.phases[-1][0]

    def phase_ends(self) -> set[int]:
        ends, total = set(), 0
        for _, n in self.phases[:-1]:
            total += n
            ends.add(total)
        return ends

    # -- checkpoints ---------------------------------------------------------------------

    def spec_extra(self) -> dict[str, Any]:
        return {
            "task": self.cfg.task,
            "processing": to_dict(self.cfg.processing),
            "env": self.dataset.meta.get("env", {}),  # joint and action names, camera, bounds
            "step": self.step,
            "dataset": str(self.cfg.dataset_dir),
        }

    def save(self) -> Path:
        state = {
            "step": self.step,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "rng": ckpt.rng_state(),
            "sampler": self.sampler.state(),
            "history": json.dumps(self.history),
        }
        name = f"step_{self.step:07d}"
        path = ckpt.save_checkpoint(self.ckpt_dir / name, self.policy, to_dict(self.cfg), self.spec_extra(), state)
        ckpt.mark_latest(self.ckpt_dir, name, keep=self.cfg.keep_checkpoints)
        return path

    def try_resume(self) -> bool:
        if not (self.ckpt_dir / LATEST).is_file():
            return False
        info = ckpt.read_model(self.ckpt_dir)
        if _plain(info.config.get("policy")) != _plain(to_dict(self.cfg.policy)):
            raise ckpt.CheckpointError(
                f"{info.path}: the run's policy config differs from the requested one; use a new output_dir "
                "(or delete the run) instead of resuming"
            )
        ckpt.load_weights(self.policy, info.path, info.spec.get("weights_sha256"))
        state = ckpt.load_training_state(info.path)
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        ckpt.set_rng_state(state["rng"])
        self.sampler.set_state(state["sampler"])
        self.step = int(state["step"])
        self.history = json.loads(state["history"])
        if self.dist.is_main:
            tqdm.write(f"[train] resumed from {info.path} at step {self.step}")
        return True

    # -- loop ----------------------------------------------------------------------------

    def _module(self, phase: TrainingPhase) -> torch.nn.Module:
        """The phase's module, trainable parameters marked, wrapped for DDP when distributed."""
        if phase.name not in self._wrapped:
            trainable = {id(p) for p in phase.parameters}
            for p in phase.module.parameters():
                p.requires_grad_(id(p) in trainable)
            self._wrapped[phase.name] = self.dist.wrap(phase.module)
        return self._wrapped[phase.name]

    def train_step(self) -> dict[str, float]:
        phase = self.phase_at(self.step)
        module = self._module(phase)
        phase.module.train()
        batch = self.dist.shard(self.sampler.sample(self.cfg.batch_size, self.device), self.cfg.batch_size)
        loss, info = module(batch)
        opt = self.optimizers[phase.name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        info["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(phase.parameters, self.cfg.grad_clip))
        opt.step()
        return self.dist.mean(info)

    def evaluate(self, episodes: int, variant: str | None = None) -> EvalResult:
        return run_episodes(self.runner.with_variant(variant), self.cfg.env, episodes, self.cfg.eval_seed)

    def _open_logs(self) -> tuple[Any, Any]:
        """metrics.jsonl and TensorBoard holding each step once: both are rewritten from the
        checkpoint's `history`, so rows a killed run logged after its last checkpoint vanish.
        (TensorBoard's purge_step is not enough: readers order event files by name, and a
        resumed run's file can sort first.)"""
        from torch.utils.tensorboard import SummaryWriter

        with open(self.run_dir / "metrics.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in self.history)
        shutil.rmtree(self.run_dir / "tb", ignore_errors=True)
        writer = SummaryWriter(str(self.run_dir / "tb"))
        for row in self.history:
            for k, v in _scalars(row).items():
                writer.add_scalar(k, v, row["step"])
        return (self.run_dir / "metrics.jsonl").open("a"), writer

    def run(self) -> dict[str, Any]:
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.dist.barrier()
        self.try_resume()
        main = self.dist.is_main
        metrics_file, writer = self._open_logs() if main else (None, None)
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {self.cfg.task}", disable=not main)
        t0 = time.time()
        phase_ends = self.phase_ends()
        while self.step < self.total_steps:
            phase = self.phase_at(self.step).name
            info = self.train_step()
            self.step += 1
            bar.update(1)
            if not main:
                continue
            if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
                row = {"step": self.step, "phase": phase, **info, "elapsed_s": round(time.time() - t0, 1)}
                self._log(row, metrics_file, writer)
                bar.set_postfix(phase=phase, loss=f"{info['loss']:.4f}")
            phase_end = self.step in phase_ends
            if self.validation is not None and (self.step % self.cfg.eval_every == 0 or phase_end):
                row = {"step": self.step, "phase": phase, "val_mse": self.validation.evaluate(self.policy)}
                self._log(row, metrics_file, writer)
                shown = ", ".join(f"{k} {v:.4f}" for k, v in row["val_mse"].items())
                tqdm.write(f"[train] step {self.step}: validation MSE {shown} ({len(self.validation)} windows)")
            if self.cfg.eval_episodes > 0 and (self.step % self.cfg.eval_every == 0 or phase_end):
                # At a phase end the next phase's policy is untrained: evaluate what was trained.
                variant = "base" if phase_end and "base" in self.policy.variants else None
                ev = self.evaluate(self.cfg.eval_episodes, variant)
                row = {"step": self.step, "phase": phase, "eval_success": ev.success_rate}
                self._log(row, metrics_file, writer)
                tqdm.write(f"[train] step {self.step}: eval success {ev.success_rate:.2f} ({phase})")
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.total_steps or phase_end:
                self.save()
        bar.close()
        self.dist.barrier()
        if not main:
            self.dist.close()
            return {}
        metrics_file.close()
        writer.close()
        final = self.final_evaluation()
        self.plot()
        self.dist.close()
        tqdm.write(f"[train] done: {self.run_dir} (learning_curve.png, final_eval.json, tb/)")
        return final

    def _log(self, row: dict[str, Any], metrics_file: Any, writer: Any) -> None:
        self.history.append(row)
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()
        for k, v in _scalars(row).items():
            writer.add_scalar(k, v, row["step"])

    def final_validation(self) -> dict[str, float]:
        """Validation MSE of the final weights: the last logged row when it was taken at this
        step (a run ending on an evaluation step), else measured now."""
        if self.validation is None:
            return {}
        last = next((r for r in reversed(self.history) if "val_mse" in r), None)
        if last is not None and last["step"] == self.step:
            return last["val_mse"]
        return self.validation.evaluate(self.policy)

    def final_evaluation(self) -> dict[str, Any]:
        """Every variant of the policy on the same seeded episodes; per-episode outcomes kept."""
        n = self.cfg.final_eval_episodes
        result: dict[str, Any] = {
            "task": self.cfg.task,
            "policy": self.cfg.policy.type,
            "base": getattr(getattr(self.policy, "base", None), "type_name", None),  # a wrapper's base type
            "train_seed": self.cfg.seed,
            "episodes": n,
            "eval_seed": self.cfg.eval_seed,
            "variants": {},
            "per_episode": {},
            "validation_mse": self.final_validation(),
        }
        if n > 0:
            for variant in self.policy.variants:
                ev = self.evaluate(n, variant)
                result["variants"][variant] = ev.summary()
                result["per_episode"][variant] = ev.per_episode
        (self.run_dir / "final_eval.json").write_text(json.dumps(result, indent=2))
        tqdm.write(f"[train] final evaluation: {json.dumps(result['variants'])}")
        return result

    def plot(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 3, figsize=(15, 3.5))
        for phase, _ in self.phases:
            rows = [r for r in self.history if r.get("phase") == phase.name and "loss" in r]
            if rows:
                ax[0].plot([r["step"] for r in rows], [r["loss"] for r in rows], label=f"{phase.name} loss")
        ax[0].set_yscale("log")
        ax[0].set_xlabel("step")
        ax[0].legend()
        evals = [r for r in self.history if "eval_success" in r]
        ax[1].plot([r["step"] for r in evals], [r["eval_success"] for r in evals], "o-")
        ax[1].set_ylim(-0.05, 1.05)
        ax[1].set_xlabel("step")
        ax[1].set_ylabel(f"success ({self.cfg.eval_episodes} episodes)")
        vals = [r for r in self.history if "val_mse" in r]
        for variant in self.policy.variants:
            points = [(r["step"], r["val_mse"][variant]) for r in vals if variant in r["val_mse"]]
            if points:
                ax[2].plot(*zip(*points, strict=True), "o-", label=variant)
        for end in sorted(self.phase_ends()):
            ax[2].axvline(end, color="grey", lw=0.8, ls=":")
        ax[2].set_xlabel("step")
        ax[2].set_ylabel("validation MSE (inference settings)")
        if vals:
            ax[2].set_yscale("log")
            ax[2].legend()
        fig.suptitle(f"{self.cfg.task} / {self.cfg.policy.type}")
        fig.tight_layout()
        path = self.run_dir / "learning_curve.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
