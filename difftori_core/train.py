"""Train a policy from demonstrations, with periodic evaluation and exact resume.

    python -m difftori_core.train                       # embedded default: door-open-v3, DiffTORI
    python -m difftori_core.train --config config/train/metaworld.yaml task=door-open-v3 policy.type=mlp_bc

With no arguments it collects demonstrations for the default task if they are missing, trains
the base policy, then the DiffTORI cost on top of it (base frozen), and evaluates both. A run
directory holds `checkpoints/` (atomic, `latest` pointer), `tb/` (TensorBoard), `metrics.jsonl`,
`learning_curve.png` and `final_eval.json`. Re-running the same command resumes from the latest
checkpoint and continues bit-for-bit as if never stopped (weights, optimizer, RNG and sampler
states are all saved).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from difftori_core import checkpoint as ckpt
from difftori_core.config import ConfigError, from_dict, load_config, to_dict
from difftori_core.data.dataset import Dataset, DatasetError
from difftori_core.envs.metaworld_env import MetaWorldEnvConfig
from difftori_core.eval import run_episodes
from difftori_core.policies import DiffTORIPolicy, Policy, PolicyConfig, PolicySpec, make_policy
from difftori_core.processing import ProcessingSpec
from difftori_core.training_data import WindowSampler


@dataclass
class TrainConfig:
    """Attributes (all settable from YAML and as `key=value` overrides):
    task: MetaWorld task; the environment for evaluation and the expert for demonstrations.
    dataset: demonstration dataset directory (default `data/<task>`; collected if missing).
    demos: expert episodes to collect when the dataset is missing.
    output_dir: run directory (default `runs/<task>-<policy.type>`).
    base_steps: optimizer steps for the base policy (for mlp_bc/diffusion: all steps).
    cost_steps: DiffTORI only: steps for the learned cost on top of the frozen base.
    """

    task: str = "door-open-v3"
    dataset: str = ""
    demos: int = 10
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
        if bad or self.lr <= 0 or self.base_steps < 0 or self.cost_steps < 0:
            raise ValueError(f"invalid training settings {bad or ['lr/steps']}")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.task}-{self.policy.type}")

    @property
    def dataset_dir(self) -> Path:
        return Path(self.dataset or f"data/{self.task}")


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


def ensure_dataset(cfg: TrainConfig) -> Dataset:
    """Load the demonstrations (collecting them first if missing) and check that they were
    recorded for this task with this config's observation processing."""
    if not cfg.dataset_dir.exists():
        from difftori_core.collect import collect

        tqdm.write(f"[train] no dataset at {cfg.dataset_dir}: collecting {cfg.demos} expert demonstrations")
        collect(cfg.task, cfg.demos, cfg.dataset_dir, seed=cfg.seed, env=cfg.env, processing=cfg.processing)
    dataset = Dataset.load(cfg.dataset_dir)
    recorded = from_dict(ProcessingSpec, dataset.meta.get("processing", {}), prefix="dataset processing.")
    if recorded != cfg.processing:
        raise ConfigError(
            f"{cfg.dataset_dir} was processed with {recorded}, but the config asks for {cfg.processing}; "
            "collect a new dataset (or set processing.* to match)"
        )
    if dataset.meta.get("env", {}).get("task") != cfg.task:
        raise ConfigError(f"{cfg.dataset_dir} holds task {dataset.meta.get('env', {}).get('task')!r}, not {cfg.task!r}")
    return dataset


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


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.device = pick_device(cfg.device)
        self.dataset = ensure_dataset(cfg)
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
        self.is_difftori = isinstance(self.policy, DiffTORIPolicy)
        base_params = self.policy.base_parameters() if self.is_difftori else list(self.policy.parameters())
        self.optimizers = {"base": self._adamw(base_params)}
        if self.is_difftori:
            self.optimizers["cost"] = self._adamw(self.policy.cost_parameters())
        self.total_steps = cfg.base_steps + (cfg.cost_steps if self.is_difftori else 0)
        self.step = 0
        self.run_dir = cfg.run_dir
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.history: list[dict[str, Any]] = []

    def _adamw(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def phase(self, step: int) -> str:
        return "base" if step < self.cfg.base_steps else "cost"

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
        ckpt.mark_latest(self.ckpt_dir, name)
        old = sorted(p for p in self.ckpt_dir.glob("step_*") if p.name != name)
        for p in old[: max(0, len(old) - (self.cfg.keep_checkpoints - 1))]:
            import shutil

            shutil.rmtree(p, ignore_errors=True)
        return path

    def try_resume(self) -> bool:
        if not (self.ckpt_dir / ckpt.LATEST).is_file():
            return False
        path = ckpt.resolve(self.ckpt_dir)
        saved_cfg = ckpt.read_config(path)
        if _plain(saved_cfg.get("policy")) != _plain(to_dict(self.cfg.policy)):
            raise ckpt.CheckpointError(
                f"{path}: the run's policy config differs from the requested one; use a new output_dir "
                "(or delete the run) instead of resuming"
            )
        ckpt.load_weights(self.policy, path)
        state = ckpt.load_training_state(path)
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        ckpt.set_rng_state(state["rng"])
        self.sampler.set_state(state["sampler"])
        self.step = int(state["step"])
        self.history = json.loads(state["history"])
        tqdm.write(f"[train] resumed from {path} at step {self.step}")
        return True

    # -- loop ----------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        phase = self.phase(self.step)
        module = self.policy.base if (self.is_difftori and phase == "base") else self.policy
        module.train()
        batch = self.sampler.sample(self.cfg.batch_size, self.device)
        loss, info = module(batch)
        opt = self.optimizers[phase]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        info["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        opt.step()
        return info

    def evaluate(self, episodes: int, refine: bool = True) -> dict[str, Any]:
        if self.is_difftori:
            self.policy.config.refine = refine
        result = run_episodes(self.policy, self.cfg.env, self.cfg.processing, episodes, self.cfg.eval_seed)
        if self.is_difftori:
            self.policy.config.refine = True
        return result.summary()

    def run(self) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.try_resume()
        writer = SummaryWriter(str(self.run_dir / "tb"))
        metrics_file = (self.run_dir / "metrics.jsonl").open("a")
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {self.cfg.task}", dynamic_ncols=True)
        t0 = time.time()
        while self.step < self.total_steps:
            info = self.train_step()
            self.step += 1
            bar.update(1)
            phase = self.phase(self.step - 1)
            if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
                row = {"step": self.step, "phase": phase, **info, "elapsed_s": round(time.time() - t0, 1)}
                self.history.append(row)
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
                for k, v in info.items():
                    writer.add_scalar(f"{phase}/{k}", v, self.step)
                bar.set_postfix(phase=phase, loss=f"{info['loss']:.4f}")
            phase_end = self.is_difftori and self.step == self.cfg.base_steps
            if self.cfg.eval_episodes > 0 and (self.step % self.cfg.eval_every == 0 or phase_end):
                ev = self.evaluate(self.cfg.eval_episodes, refine=not phase_end and phase == "cost")
                row = {"step": self.step, "phase": phase, "eval_success": ev["success_rate"]}
                self.history.append(row)
                metrics_file.write(json.dumps(row) + "\n")
                writer.add_scalar("eval/success_rate", ev["success_rate"], self.step)
                tqdm.write(f"[train] step {self.step}: eval success {ev['success_rate']:.2f} ({phase})")
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.total_steps or phase_end:
                self.save()
        bar.close()
        metrics_file.close()
        writer.close()
        final = self.final_evaluation()
        self.plot()
        tqdm.write(f"[train] done: {self.run_dir} (learning_curve.png, final_eval.json, tb/)")
        return final

    def final_evaluation(self) -> dict[str, Any]:
        out_file = self.run_dir / "final_eval.json"
        n = self.cfg.final_eval_episodes
        result: dict[str, Any] = {"task": self.cfg.task, "policy": self.cfg.policy.type, "episodes": n}
        if n > 0:
            if self.is_difftori:
                result["base"] = self.evaluate(n, refine=False)
            result["policy_eval"] = self.evaluate(n, refine=True)
        out_file.write_text(json.dumps(result, indent=2))
        tqdm.write(f"[train] final evaluation: {json.dumps(result)}")
        return result

    def plot(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        for phase in ("base", "cost"):
            rows = [r for r in self.history if r.get("phase") == phase and "loss" in r]
            if rows:
                ax[0].plot([r["step"] for r in rows], [r["loss"] for r in rows], label=f"{phase} loss")
        ax[0].set_yscale("log")
        ax[0].set_xlabel("step")
        ax[0].legend()
        evals = [r for r in self.history if "eval_success" in r]
        ax[1].plot([r["step"] for r in evals], [r["eval_success"] for r in evals], "o-")
        ax[1].set_ylim(-0.05, 1.05)
        ax[1].set_xlabel("step")
        ax[1].set_ylabel(f"success ({self.cfg.eval_episodes} episodes)")
        fig.suptitle(f"{self.cfg.task} / {self.cfg.policy.type}")
        fig.tight_layout()
        path = self.run_dir / "learning_curve.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="YAML file (default: embedded defaults)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. policy.type=mlp_bc base_steps=500")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        result = Trainer(cfg).run()
    except (ConfigError, ckpt.CheckpointError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
