"""Observation processing: fixed shapes, crop, deterministic FPS, images, spec round trip, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from difftori_core.config import ConfigError
from difftori_core.processing import ObservationProcessor, ProcessingError, ProcessingSpec, farthest_point_sample

BOX_MIN, BOX_MAX = (-0.5, 0.2, 0.0), (0.5, 1.0, 0.5)


def raw_obs(n: int = 5000, seed: int = 0, inside_fraction: float = 0.5) -> dict[str, np.ndarray]:
    """A synthetic sensor frame: half the points inside the box, a few NaN rows (no return)."""
    rng = np.random.default_rng(seed)
    n_in = int(n * inside_fraction)
    inside = rng.uniform(BOX_MIN, BOX_MAX, (n_in, 3))
    outside = rng.uniform(BOX_MIN, BOX_MAX, (n - n_in, 3)) + np.array([0.0, 0.0, 1.0])  # above the box
    points = np.concatenate([inside, outside]).astype(np.float32)
    points[rng.choice(n, n // 20, replace=False)] = np.nan
    return {
        "point_cloud": points,
        "point_colors": rng.integers(0, 256, (n, 3), dtype=np.uint8),
        "image": rng.integers(0, 256, (120, 160, 3), dtype=np.uint8),
        "agent_pos": rng.normal(size=9).astype(np.float32),
    }


def spec(**kw) -> ProcessingSpec:
    return ProcessingSpec(**{"crop_min": BOX_MIN, "crop_max": BOX_MAX, "num_points": 256, **kw})


def test_fixed_shapes_and_dtypes() -> None:
    proc = ObservationProcessor(spec(keys=("point_cloud", "image", "agent_pos"), image_size=(84, 96)))
    out = proc.process(raw_obs())
    assert list(out) == ["point_cloud", "image", "agent_pos"]
    assert out["point_cloud"].shape == (256, 3) and out["point_cloud"].dtype == np.float32
    assert out["image"].shape == (3, 84, 96) and out["image"].dtype == np.uint8
    assert out["agent_pos"].shape == (9,) and out["agent_pos"].dtype == np.float32
    assert {k: v.shape for k, v in out.items()} == proc.spec.frame_shapes(9)
    # A crop with fewer points than asked is padded by repeating them.
    small = ObservationProcessor(spec()).process({**raw_obs(n=100), "agent_pos": np.zeros(9)})
    assert small["point_cloud"].shape == (256, 3) and len(np.unique(small["point_cloud"], axis=0)) < 100


def test_crop_and_farthest_point_sampling() -> None:
    raw = raw_obs()
    pc = ObservationProcessor(spec()).process(raw)["point_cloud"]
    assert (pc >= np.float32(BOX_MIN)).all() and (pc <= np.float32(BOX_MAX)).all()
    assert len(np.unique(pc, axis=0)) == 256
    # FPS starts from the first cropped point and covers the crop far better than the first n.
    cropped = raw["point_cloud"][np.isfinite(raw["point_cloud"]).all(1)]
    cropped = cropped[(cropped >= BOX_MIN).all(1) & (cropped <= BOX_MAX).all(1)]
    np.testing.assert_array_equal(pc[0], cropped[0])

    def coverage(sample: np.ndarray) -> float:  # farthest any cropped point is from the sample
        return float(np.sqrt(((cropped[:, None] - sample[None]) ** 2).sum(-1)).min(1).max())

    assert coverage(pc) < 0.6 * coverage(cropped[:256])


def test_unsampled_frames_are_checked_but_not_sampled() -> None:
    proc = ObservationProcessor(spec(keys=("point_cloud", "agent_pos")))
    raw = raw_obs()
    cloud = proc.process(raw, sample=False)["point_cloud"]
    sampled = proc.process(raw)["point_cloud"]
    assert len(cloud) > len(sampled) == 256  # the whole crop, as is
    assert (cloud >= np.float32(BOX_MIN)).all() and (cloud <= np.float32(BOX_MAX)).all()
    with pytest.raises(ProcessingError, match="no finite points"):
        proc.process({**raw, "point_cloud": np.full((10, 3), np.nan, np.float32)}, sample=False)
    with pytest.raises(ProcessingError, match="NaN"):
        proc.process({**raw, "agent_pos": np.full(9, np.nan)}, sample=False)


def test_processing_is_deterministic() -> None:
    proc = ObservationProcessor(spec(keys=("point_cloud", "image", "agent_pos")))
    a, b = proc.process(raw_obs()), ObservationProcessor(proc.spec).process(raw_obs())
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_stride_before_sampling_bounds_the_input() -> None:
    raw = raw_obs(n=20000, inside_fraction=1.0)
    pc = ObservationProcessor(spec(max_fps_input=1024)).process(raw)["point_cloud"]
    assert pc.shape == (256, 3) and np.isfinite(pc).all()


def test_point_colors() -> None:
    raw = raw_obs()
    pc = ObservationProcessor(spec(point_rgb=True)).process(raw)["point_cloud"]
    assert pc.shape == (256, 6) and (pc[:, 3:] >= 0).all() and (pc[:, 3:] <= 1).all()
    # Each sampled point keeps its own colour.
    row = np.flatnonzero((raw["point_cloud"] == pc[0, :3]).all(1))[0]
    np.testing.assert_allclose(pc[0, 3:], raw["point_colors"][row] / 255.0, atol=1e-6)
    with pytest.raises(ProcessingError, match="point_colors"):
        ObservationProcessor(spec(point_rgb=True)).process(
            {"point_cloud": raw["point_cloud"], "agent_pos": np.zeros(9)}
        )


def test_image_resize_keeps_orientation() -> None:
    img = np.zeros((128, 128, 3), dtype=np.uint8)
    img[:64, :64] = (255, 0, 0)  # red top-left quadrant
    out = ObservationProcessor(spec(keys=("image",), image_size=(84, 84))).process({"image": img})["image"]
    assert out.shape == (3, 84, 84)
    assert out[0, :40, :40].min() == 255 and out[0, 44:, 44:].max() == 0 and out[1:].max() == 0


def test_spec_round_trip() -> None:
    original = spec(keys=("image", "point_cloud"), num_points=128, point_rgb=True, image_size=(64, 72))
    restored = ProcessingSpec.from_dict(json.loads(json.dumps(original.to_dict())))
    assert restored == original and isinstance(restored.crop_min, tuple)
    assert ProcessingSpec.from_dict({}) == ProcessingSpec()
    with pytest.raises(ConfigError, match="processing.num_point"):
        ProcessingSpec.from_dict({"num_point": 3})
    for bad in (
        {"crop_min": (0, 0, 0), "crop_max": (1, 1, 0)},
        {"keys": ("depth",)},
        {"keys": ()},
        {"num_points": 0},
        {"image_size": (4, 84)},
        {"max_fps_input": 100},
    ):
        with pytest.raises(ValueError):
            ProcessingSpec(**bad)


def test_clear_errors() -> None:
    proc = ObservationProcessor(spec(keys=("point_cloud", "image", "agent_pos")))
    good = raw_obs()
    cases = [
        ({"point_cloud": np.full((50, 3), np.nan, np.float32)}, "no finite points"),
        ({"point_cloud": np.zeros((0, 3), np.float32)}, "no finite points"),
        ({"point_cloud": good["point_cloud"] + 10}, "none of its .* finite points lies inside the workspace box"),
        ({"point_cloud": np.zeros((50, 2))}, r"point_cloud must be a numeric \(N, 3\)"),
        ({"agent_pos": np.array([0.0, np.nan, 1.0])}, r"agent_pos contains NaN/Inf at index \[1\]"),
        ({"agent_pos": np.zeros((3, 3))}, "agent_pos must be"),
        ({"image": good["image"].astype(np.float32)}, r"image must be \(H, W, 3\) uint8"),
        ({"image": good["image"][..., :1]}, "image must be"),
    ]
    for change, message in cases:
        with pytest.raises(ProcessingError, match=message):
            proc.process({**good, **change})
    with pytest.raises(ProcessingError, match="observation lacks 'image'"):
        proc.process({k: v for k, v in good.items() if k != "image"})
    assert issubclass(ProcessingError, ValueError)
    with pytest.raises(ProcessingError, match="no points"):
        farthest_point_sample(np.zeros((0, 3), np.float32), 8)
