"""Training: a real short run lowers the loss; a killed run resumes bit-for-bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from difftori_core import checkpoint as ckpt
from difftori_core.artifacts import MODEL_FILE
from difftori_core.config import load_config
from difftori_core.data.collect import collect
from difftori_core.envs.metaworld import MetaWorldEnvConfig
from difftori_core.processing import ProcessingSpec
from difftori_core.training.il import TrainConfig, Trainer

SMALL = [
    "task=door-open-v3",
    "env.width=64",
    "env.height=64",
    "processing.num_points=64",
    "policy.horizon=8",
    "policy.n_action_steps=4",
    "policy.encoder.point_widths=[16,32]",
    "policy.encoder.point_out=16",
    "policy.encoder.state_hidden=16",
    "policy.encoder.state_out=16",
    "policy.mlp_bc.hidden=[64]",
    "policy.difftori.cost_hidden=[32]",
    "policy.difftori.cvae_hidden=[32]",
    "policy.difftori.latent_dim=8",
    "policy.difftori.residual_dim=8",
    "batch_size=16",
    "threads=1",
    "eval_episodes=0",
    "final_eval_episodes=0",
    "val_demos=1",
    "log_every=5",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "door"
    env = MetaWorldEnvConfig(task="door-open-v3", width=64, height=64, max_episode_steps=150)
    return collect("door-open-v3", 2, out, seed=0, env=env, processing=ProcessingSpec(num_points=64), progress=False)


def config(dataset: Path, run: Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, None, [*SMALL, f"dataset={dataset}", f"output_dir={run}", *extra])


def test_short_training_run_lowers_the_loss_and_writes_its_outputs(dataset: Path, tmp_path: Path) -> None:
    cfg = config(dataset, tmp_path / "run", "base_steps=60", "cost_steps=30", "checkpoint_every=45")
    Trainer(cfg).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    base = [r["loss"] for r in rows if r.get("phase") == "base" and "loss" in r]
    assert base[-1] < 0.5 * base[0], base
    cost = [r for r in rows if r.get("phase") == "cost" and "loss" in r]
    assert cost and all(r["solver_failed"] == 0 for r in cost)
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000
    info = ckpt.read_model(tmp_path / "run")
    assert info.spec["step"] == 90 and info.processing.num_points == 64
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "latest",
        "step_0000060",
        "step_0000090",
    ]


def test_validation_mse_is_measured_at_inference_settings_on_unseen_seeds(dataset: Path, tmp_path: Path) -> None:
    from difftori_core.config import ConfigError
    from difftori_core.data.dataset import Dataset
    from difftori_core.deploy.runner import load_runner
    from difftori_core.training.validation import ValidationSet

    cfg = config(dataset, tmp_path / "run", "base_steps=20", "cost_steps=10", "eval_every=10")
    Trainer(cfg).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in rows if "val_mse" in r]
    assert [r["step"] for r in vals] == [10, 20, 30]
    assert all(set(r["val_mse"]) == {"difftori", "base"} for r in vals)
    final = json.loads((tmp_path / "run" / "final_eval.json").read_text())["validation_mse"]
    assert final == vals[-1]["val_mse"]  # the final weights, evaluated the same way

    # Recomputed by hand from the saved model: the executed actions predict_chunk gives (z at its
    # run-time value), against the held-out demonstrations, in normalized action units.
    val = Dataset.load(cfg.val_dataset_dir)
    assert val.meta["info"]["kept_seeds"][0] >= cfg.val_seed
    policy = load_runner(tmp_path / "run").policy
    windows = ValidationSet(val, cfg.policy.n_obs_steps, cfg.policy.horizon, list(policy.spec.obs_shapes))
    n = cfg.policy.n_action_steps
    for variant in ("difftori", "base"):
        actions = policy.predict_chunk(windows.obs, variant).actions[:, :n]
        norm = policy.normalizer.normalize
        expected = (norm("action", actions) - norm("action", windows.action[:, :n])).square().mean()
        assert final[variant] == pytest.approx(float(expected), rel=1e-5)
    policy.train()
    windows.imitation_mse(policy)
    assert policy.training  # the measurement leaves the module's mode as it found it

    with pytest.raises(ConfigError, match="shares expert seeds"):
        Trainer(config(dataset, tmp_path / "bad", "val_seed=0", f"val_dataset={tmp_path / 'val0'}"))


def test_killed_run_resumes_exactly(dataset: Path, tmp_path: Path) -> None:
    steps = ["base_steps=40", "cost_steps=20", "checkpoint_every=5"]
    straight = Trainer(config(dataset, tmp_path / "straight", *steps))
    straight.run()

    run = tmp_path / "killed"
    args = [*SMALL, f"dataset={dataset}", f"output_dir={run}", *steps]
    proc = subprocess.Popen(
        [sys.executable, "-m", "difftori_core.train", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if list((run / "checkpoints").glob("step_000002*")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = ckpt.read_spec(ckpt.resolve(run))["step"]
    assert 0 < killed_at < 60, "the run should have been killed mid-training"

    Trainer(config(dataset, run, *steps)).run()  # resumes from the latest checkpoint
    # Logs hold every step once: the rows the killed run wrote after its checkpoint are gone.
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in rows if "loss" in r]
    assert logged == list(range(5, 61, 5)), logged
    straight_rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows if "loss" in r] == [r["loss"] for r in straight_rows if "loss" in r]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tb_steps = [e.step for e in events.Scalars("base/loss")] + [e.step for e in events.Scalars("cost/loss")]
    assert sorted(tb_steps) == logged, tb_steps  # each step once (files are read in any order)
    a = load_file(ckpt.resolve(tmp_path / "straight") / MODEL_FILE)
    b = load_file(ckpt.resolve(run) / MODEL_FILE)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_resuming_with_another_policy_config_is_refused(dataset: Path, tmp_path: Path) -> None:
    Trainer(config(dataset, tmp_path / "r", "base_steps=5", "cost_steps=0", "checkpoint_every=5")).run()
    with pytest.raises(ckpt.CheckpointError, match="policy config differs"):
        Trainer(config(dataset, tmp_path / "r", "base_steps=5", "cost_steps=0", "policy.mlp_bc.hidden=[8]")).run()


def test_eval_cli_reports_success_writes_a_gif_and_refuses_a_corrupt_model(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from difftori_core.eval import main as eval_main

    run = tmp_path / "run"
    Trainer(config(dataset, run, "base_steps=10", "cost_steps=5", "checkpoint_every=15")).run()
    out = tmp_path / "eval.json"
    gif = tmp_path / "episode.gif"
    args = [str(run), "--episodes", "2", "--gif", str(gif), "--json", str(out), "max_episode_steps=20"]
    assert eval_main(args) == 0
    result = json.loads(out.read_text())
    assert result["episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0
    assert [e["seed"] for e in result["per_episode"]] == [1000, 1001]
    assert all(e["steps"] <= 20 for e in result["per_episode"])
    assert gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a")

    from difftori_core.export import main as export_main

    assert export_main([str(run)]) == 0
    onnx_out = tmp_path / "eval_onnx.json"
    assert eval_main([*args[:3], "--json", str(onnx_out), "max_episode_steps=20", "--backend", "onnxruntime"]) == 0
    onnx_result = json.loads(onnx_out.read_text())
    assert onnx_result["backend"] == "onnxruntime" and onnx_result["per_episode"] == result["per_episode"]
    assert result["variant"] == "difftori"
    base_out = tmp_path / "eval_base.json"
    assert eval_main([*args[:3], "--json", str(base_out), "max_episode_steps=20", "--variant", "base"]) == 0
    assert json.loads(base_out.read_text())["variant"] == "base"

    model = ckpt.resolve(run) / MODEL_FILE
    model.write_bytes(model.read_bytes()[:100])
    assert eval_main([str(run), "--episodes", "1"]) == 2
    assert "corrupt" in capsys.readouterr().err
