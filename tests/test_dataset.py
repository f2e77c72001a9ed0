"""Dataset format: round trip, training windows, refusal of corrupt or mismatched files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from difftori_core.artifacts import sha256 as _sha256
from difftori_core.data.dataset import DATA, META, Dataset, DatasetError, DatasetWriter
from difftori_core.data.windows import WindowSampler

LENGTHS = (5, 3, 7)


def episode(length: int, offset: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(int(offset))
    t = np.arange(length, dtype=np.float32) + offset
    return {
        # Frame values encode (episode, step) so window tests can read them back.
        "agent_pos": np.stack([t, -t], axis=1),
        "point_cloud": rng.normal(size=(length, 16, 3)).astype(np.float32),
        "image": rng.integers(0, 256, (length, 3, 8, 8), dtype=np.uint8),
        "action": np.repeat(t[:, None], 4, axis=1),
    }


@pytest.fixture
def episodes() -> list[dict[str, np.ndarray]]:
    return [episode(n, 100.0 * (i + 1)) for i, n in enumerate(LENGTHS)]


@pytest.fixture
def written(tmp_path: Path, episodes: list[dict[str, np.ndarray]]) -> Path:
    writer = DatasetWriter(tmp_path / "ds", env={"task": "reach-v3"}, processing={"num_points": 16}, info={"n": 3})
    for ep in episodes:
        writer.add_episode(ep)
    return writer.close()


def test_round_trip(written: Path, episodes: list[dict[str, np.ndarray]]) -> None:
    ds = Dataset.load(written)
    assert ds.num_episodes == 3 and ds.num_frames == sum(LENGTHS)
    np.testing.assert_array_equal(ds.episode_ends, np.cumsum(LENGTHS))
    for i, ep in enumerate(episodes):
        got = ds.episode(i)
        assert set(got) == set(ep)
        for key in ep:
            assert got[key].dtype == ep[key].dtype
            np.testing.assert_array_equal(got[key], ep[key])
    assert ds.frame_shape("image") == (3, 8, 8) and ds.frame_shape("action") == (4,)
    assert ds.meta["env"] == {"task": "reach-v3"} and ds.meta["processing"] == {"num_points": 16}
    assert ds.meta["info"] == {"n": 3} and ds.meta["version"] == 1
    assert sorted(p.name for p in written.parent.iterdir()) == ["ds"]  # no temporary leftovers


def test_windows_pad_at_episode_edges(written: Path) -> None:
    ds = Dataset.load(written)
    sampler = WindowSampler.from_dataset(ds, 3, 4, ["agent_pos", "image"])

    def window(t: int, sampler: WindowSampler = sampler) -> dict:
        return sampler.window(torch.tensor([t]))

    # First frame of episode 2 (global frame 5): observations repeat it, actions run forward.
    w = window(5)
    np.testing.assert_array_equal(w["obs"]["agent_pos"][0, :, 0], [200, 200, 200])
    np.testing.assert_array_equal(w["action"][0, :, 0], [200, 201, 202, 202])  # episode 2 has 3 frames
    assert w["obs"]["image"].shape == (1, 3, 3, 8, 8) and w["action"].shape == (1, 4, 4)
    # Last frame of episode 1 (global 4): history from the episode, last action repeated.
    short = WindowSampler.from_dataset(ds, 2, 3, ["agent_pos"])
    w = window(4, short)
    assert list(w["obs"]) == ["agent_pos"]
    np.testing.assert_array_equal(w["obs"]["agent_pos"][0, :, 0], [103, 104])
    np.testing.assert_array_equal(w["action"][0, :, 0], [104, 104, 104])
    # Never crosses an episode boundary.
    long = WindowSampler.from_dataset(ds, 2, 16, ["agent_pos"])
    every = long.window(torch.arange(ds.num_frames))
    for t in range(ds.num_frames):
        values = torch.cat([every["obs"]["agent_pos"][t, :, 0], every["action"][t, :, 0]])
        assert len({int(v) // 100 for v in values}) == 1


def edit_meta(path: Path, **changes) -> None:
    meta = json.loads((path / META).read_text())
    for key, value in changes.items():
        meta[key] = value(meta) if callable(value) else value
    (path / META).write_text(json.dumps(meta))


def test_refuses_a_truncated_data_file(written: Path) -> None:
    data = (written / DATA).read_bytes()
    (written / DATA).write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"data\.npz: \d+ bytes, meta.json says \d+ \(truncated\)"):
        Dataset.load(written)


def test_refuses_flipped_bytes(written: Path) -> None:
    data = bytearray((written / DATA).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (written / DATA).write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"data\.npz: sha256 checksum mismatch"):
        Dataset.load(written)


def test_refuses_wrong_format_or_version(written: Path) -> None:
    edit_meta(written, version=2)
    with pytest.raises(DatasetError, match=r"meta\.json: version 2 is not supported \(this code reads 1\)"):
        Dataset.load(written)
    edit_meta(written, version=1, format="something-else")
    with pytest.raises(DatasetError, match="format is 'something-else'"):
        Dataset.load(written)
    (written / META).write_text("{not json")
    with pytest.raises(DatasetError, match="meta.json: not valid JSON"):
        Dataset.load(written)
    (written / META).unlink()
    with pytest.raises(DatasetError, match="not a dataset"):
        Dataset.load(written)


def test_refuses_an_edited_schema(written: Path) -> None:
    def shape(meta: dict) -> dict:
        meta["schema"]["point_cloud"]["shape"] = [32, 3]
        return meta["schema"]

    edit_meta(written, schema=shape)
    with pytest.raises(
        DatasetError, match=r"'point_cloud' is float32 \(15, 16, 3\), schema says float32 \(15, 32, 3\)"
    ):
        Dataset.load(written)

    def dtype(meta: dict) -> dict:
        meta["schema"]["point_cloud"] = {"dtype": "float64", "shape": [16, 3]}
        return meta["schema"]

    edit_meta(written, schema=dtype)
    with pytest.raises(DatasetError, match="schema says float64"):
        Dataset.load(written)

    def extra_key(meta: dict) -> dict:
        meta["schema"]["point_cloud"]["dtype"] = "float32"
        meta["schema"]["depth"] = {"dtype": "float32", "shape": [8, 8]}
        return meta["schema"]

    edit_meta(written, schema=extra_key)
    with pytest.raises(DatasetError, match=r"key\(s\) missing \['depth'\]"):
        Dataset.load(written)
    edit_meta(written, schema=lambda m: {k: v for k, v in m["schema"].items() if k not in ("depth", "action")})
    with pytest.raises(DatasetError, match="schema must be a mapping that includes 'action'"):
        Dataset.load(written)


def test_refuses_a_data_file_missing_a_key(written: Path) -> None:
    """A consistently checksummed data file that lacks a schema key is still refused."""
    with np.load(written / DATA) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "image"}
    np.savez_compressed(written / DATA, **arrays)
    edit_meta(written, files={DATA: {"sha256": _sha256(written / DATA), "bytes": (written / DATA).stat().st_size}})
    with pytest.raises(DatasetError, match=r"data\.npz: key\(s\) missing \['image'\]"):
        Dataset.load(written)


@pytest.mark.parametrize(
    "ends",
    [[5, 8, 14], [5, 3, 15], [0, 8, 15], [5, 8, 16], [], "5,8,15", [5.0, 8, 15]],
)
def test_refuses_inconsistent_episode_ends(written: Path, ends: object) -> None:
    edit_meta(written, episode_ends=ends)
    with pytest.raises(DatasetError, match="episode_ends"):
        Dataset.load(written)


def test_refuses_a_num_frames_that_disagrees_with_the_arrays(written: Path) -> None:
    edit_meta(written, num_frames=14, episode_ends=[5, 8, 14])
    with pytest.raises(DatasetError, match=r"'agent_pos' is float32 \(15, 2\), schema says float32 \(14, 2\)"):
        Dataset.load(written)


def test_writer_refuses_bad_episodes(tmp_path: Path, episodes: list[dict[str, np.ndarray]]) -> None:
    writer = DatasetWriter(tmp_path / "ds")
    with pytest.raises(DatasetError, match="needs an 'action'"):
        writer.add_episode({"agent_pos": np.zeros((3, 2))})
    with pytest.raises(DatasetError, match="share a non-zero length"):
        writer.add_episode({**episodes[0], "agent_pos": np.zeros((4, 2), np.float32)})
    bad = {**episodes[0], "agent_pos": episodes[0]["agent_pos"].copy()}
    bad["agent_pos"][1, 1] = np.nan
    with pytest.raises(DatasetError, match="'agent_pos' contains NaN/Inf"):
        writer.add_episode(bad)
    with pytest.raises(DatasetError, match="no episodes to write"):
        writer.close()
    writer.add_episode(episodes[0])
    with pytest.raises(DatasetError, match="differs from the first episode's"):
        writer.add_episode({**episodes[1], "image": episodes[1]["image"][:, :, :4]})
    # An exception inside the block writes nothing.
    with pytest.raises(KeyError), DatasetWriter(tmp_path / "never") as w:
        w.add_episode(episodes[0])
        raise KeyError("boom")
    assert not (tmp_path / "never").exists()


def test_overwrites_a_dataset_but_not_other_directories(tmp_path: Path, written: Path, episodes) -> None:
    with DatasetWriter(written) as writer:
        writer.add_episode(episodes[2])
    assert Dataset.load(written).num_frames == LENGTHS[2]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "important.txt").write_text("keep me")
    writer = DatasetWriter(other)
    writer.add_episode(episodes[0])
    with pytest.raises(DatasetError, match="exists and is not a dataset"):
        writer.close()
    assert (other / "important.txt").read_text() == "keep me"
