"""Expert collection writes a loadable dataset with the processing it used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from difftori_core.collect import main, split_dashed_overrides
from difftori_core.config import ConfigError
from difftori_core.data.collect import CollectError, collect
from difftori_core.data.dataset import Dataset
from difftori_core.envs.metaworld import MetaWorldEnvConfig
from difftori_core.processing import ProcessingSpec


def test_collect_writes_a_loadable_dataset(tmp_path: Path) -> None:
    spec = ProcessingSpec(keys=("point_cloud", "image", "agent_pos"), num_points=128, image_size=(32, 32))
    env = MetaWorldEnvConfig(width=96, height=96, max_episode_steps=120)
    path = collect("reach-v3", 2, tmp_path / "reach", seed=0, env=env, processing=spec, extra_steps=3, progress=False)
    ds = Dataset.load(path)
    assert ds.num_episodes == 2
    assert {k: ds.frame_shape(k) for k in ds.keys} == {**spec.frame_shapes(9), "action": (4,)}
    assert ProcessingSpec.from_dict(ds.meta["processing"]) == spec
    meta_env = ds.meta["env"]
    assert meta_env["task"] == "reach-v3" and meta_env["width"] == 96 and len(meta_env["joint_names"]) == 9
    assert np.array(meta_env["camera_pose"]).shape == (4, 4)
    info = ds.meta["info"]
    assert info["kept_seeds"] == [0, 1] and info["episodes_discarded"] == 0
    assert info["timing"]["env_step_ms"] > 0
    # Episodes stop shortly after success instead of idling to the step limit.
    lengths = np.diff(np.concatenate([[0], ds.episode_ends]))
    assert (lengths < 120).all()
    pc = ds.arrays["point_cloud"]
    assert (pc >= np.float32(spec.crop_min)).all() and (pc <= np.float32(spec.crop_max)).all()
    assert np.abs(ds.arrays["action"]).max() <= 1.0


def test_cli_with_dashed_and_dotted_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["--task", "reach-v3", "--episodes", "1", "--out", str(out), "--seed", "3", "--no-progress"]
    assert main([*argv, "--processing.num_points", "64", "env.width=64", "env.height=64"]) == 0
    ds = Dataset.load(out)
    assert ds.frame_shape("point_cloud") == (64, 3) and ds.meta["env"]["width"] == 64
    assert ds.meta["info"]["kept_seeds"] == [3]
    assert "kept 1 episodes" in capsys.readouterr().out
    assert main([*argv, "processing.num_point=64"]) == 2
    assert "processing.num_point" in capsys.readouterr().err
    assert main([*argv, "--env.max_episode_steps", "900"]) == 2
    assert "max_episode_steps" in capsys.readouterr().err


def test_split_dashed_overrides() -> None:
    assert split_dashed_overrides(["--task", "x", "--env.camera=corner3", "--processing.num_points", "8", "a.b=1"]) == (
        ["--task", "x", "a.b=1"],
        ["env.camera=corner3", "processing.num_points=8"],
    )
    with pytest.raises(ConfigError, match="needs a value"):
        split_dashed_overrides(["--processing.num_points"])


def test_too_few_successes_is_an_error(tmp_path: Path) -> None:
    env = MetaWorldEnvConfig(width=32, height=32, max_episode_steps=2)
    with pytest.raises(CollectError, match=r"only 0 of 1 expert episodes succeeded in 2 attempts"):
        collect("reach-v3", 1, tmp_path / "none", env=env, max_attempts=2, progress=False)
    assert not (tmp_path / "none").exists()
