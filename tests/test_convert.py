"""Message <-> numpy conversion: round trips, wire layouts built independently (struct / raw bytes),
and every malformed message raising ConversionError with a message that names the problem."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image, JointState, PointCloud2, PointField

from difftori_ros.convert import (
    IMAGE_ENCODINGS,
    ConversionError,
    action_chunk_to_joint_trajectory,
    action_to_float64_multiarray,
    compressed_image_to_numpy,
    duration_to_ns,
    image_to_numpy,
    joint_state_to_numpy,
    ns_to_stamp,
    numpy_to_compressed_image,
    numpy_to_image,
    numpy_to_joint_state,
    numpy_to_pointcloud2,
    pointcloud2_to_numpy,
    pointcloud2_to_numpy_with_rgb,
    stamp_to_ns,
)

RNG = np.random.default_rng(0)
H, W = 5, 7  # odd sizes so row padding and alignment matter


# ------------------------------------------------------------------------------------------- helpers


def raw_image(wire: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image whose bytes are ``wire`` (already in wire channel order and byte order), rows padded."""
    h, w = wire.shape[:2]
    rows = [wire[r].tobytes() + b"\xee" * pad for r in range(h)]
    row_bytes = len(rows[0]) - pad
    return Image(
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=bigendian,
        step=row_bytes + pad,
        data=b"".join(rows),
    )


_STRUCT = {
    PointField.INT8: "b",
    PointField.UINT8: "B",
    PointField.INT16: "h",
    PointField.UINT16: "H",
    PointField.INT32: "i",
    PointField.UINT32: "I",
    PointField.FLOAT32: "f",
    PointField.FLOAT64: "d",
}


def raw_cloud(
    columns: dict[str, tuple[int, int, np.ndarray]],
    point_step: int,
    height: int,
    width: int,
    row_padding: int = 0,
    bigendian: bool = False,
    declared_order: list[str] | None = None,
) -> PointCloud2:
    """A PointCloud2 written point by point with ``struct`` (independent of the numpy code under test).

    ``columns``: name -> (offset, datatype, values of shape (height*width,)). Unused bytes are 0xEE.
    """
    row_step = width * point_step + row_padding
    buf = bytearray(b"\xee" * (row_step * height))
    order = ">" if bigendian else "<"
    for offset, datatype, values in columns.values():
        fmt = order + _STRUCT[datatype]
        for idx, value in enumerate(values.tolist()):
            r, c = divmod(idx, width)
            struct.pack_into(fmt, buf, r * row_step + c * point_step + offset, value)
    names = declared_order or list(columns)
    fields = [PointField(name=n, offset=columns[n][0], datatype=columns[n][1], count=1) for n in names]
    return PointCloud2(
        height=height,
        width=width,
        fields=fields,
        is_bigendian=bigendian,
        point_step=point_step,
        row_step=row_step,
        data=bytes(buf),
        is_dense=False,
    )


def xyz(n: int, dtype: type = np.float32) -> np.ndarray:
    return RNG.normal(size=(n, 3)).astype(dtype)


def raises(match: str):
    return pytest.raises(ConversionError, match=match)


# -------------------------------------------------------------------------------------------- stamps


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_000_000_000, 1_732_280_000_123_456_789, -1, -1_500_000_000])
def test_stamp_round_trip(ns: int) -> None:
    stamp = ns_to_stamp(ns)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert stamp_to_ns(stamp) == ns


# -------------------------------------------------------------------------------------------- images


def colour(channels: int = 3) -> np.ndarray:
    return RNG.integers(0, 256, (H, W, channels), dtype=np.uint8)


@pytest.mark.parametrize(
    ("encoding", "arr"),
    [
        ("rgb8", colour(3)),
        ("bgr8", colour(3)),
        ("rgba8", colour(4)),
        ("bgra8", colour(4)),
        ("mono8", RNG.integers(0, 256, (H, W), dtype=np.uint8)),
        ("8UC1", RNG.integers(0, 256, (H, W), dtype=np.uint8)),
        ("mono16", RNG.integers(0, 65536, (H, W), dtype=np.uint16)),
        ("16UC1", RNG.integers(0, 65536, (H, W), dtype=np.uint16)),
        ("32FC1", RNG.uniform(0.1, 5.0, (H, W)).astype(np.float32)),
    ],
)
def test_image_round_trip_every_encoding(encoding: str, arr: np.ndarray) -> None:
    msg = numpy_to_image(arr, encoding, stamp=1_234_000_000_567, frame_id="camera")
    assert msg.encoding == encoding and msg.header.frame_id == "camera"
    assert stamp_to_ns(msg.header.stamp) == 1_234_000_000_567
    assert msg.step == W * arr.itemsize * (arr.shape[2] if arr.ndim == 3 else 1)
    back = image_to_numpy(deserialize_message(serialize_message(msg), Image), keep_alpha=True)
    assert back.dtype == arr.dtype and back.flags.c_contiguous
    np.testing.assert_array_equal(back, arr)


def test_colour_comes_back_rgb_whatever_the_wire_order() -> None:
    rgb = colour(3)
    rgba = colour(4)
    np.testing.assert_array_equal(image_to_numpy(raw_image(rgb[..., ::-1], "bgr8")), rgb)
    np.testing.assert_array_equal(image_to_numpy(raw_image(rgba[..., [2, 1, 0, 3]], "bgra8")), rgba[..., :3])
    np.testing.assert_array_equal(image_to_numpy(raw_image(rgba, "rgba8")), rgba[..., :3])
    np.testing.assert_array_equal(image_to_numpy(raw_image(rgba[..., [2, 1, 0, 3]], "bgra8"), keep_alpha=True), rgba)
    # the builder writes BGR bytes for bgr8
    wire = np.frombuffer(numpy_to_image(rgb, "bgr8").data, np.uint8).reshape(H, W, 3)
    np.testing.assert_array_equal(wire, rgb[..., ::-1])


@pytest.mark.parametrize("pad", [1, 3, 8])
@pytest.mark.parametrize(
    ("encoding", "wire", "expected"),
    [
        ("rgb8", (c := colour(3)), c),
        ("bgr8", (c2 := colour(3)), c2[..., ::-1]),
        ("bgra8", (c4 := colour(4)), c4[..., [2, 1, 0]]),
        ("mono8", (m := RNG.integers(0, 256, (H, W, 1), dtype=np.uint8)), m[..., 0]),
        ("16UC1", (d := RNG.integers(0, 65536, (H, W, 1), dtype=np.uint16)), d[..., 0]),
        ("32FC1", (f := RNG.normal(size=(H, W, 1)).astype(np.float32)), f[..., 0]),
    ],
)
def test_padded_rows_are_dropped(encoding: str, wire: np.ndarray, expected: np.ndarray, pad: int) -> None:
    # pad 1 / 3 leaves multi-byte rows unaligned: still read correctly
    msg = raw_image(wire, encoding, pad=pad)
    assert msg.step > W * wire.itemsize * wire.shape[2]
    np.testing.assert_array_equal(image_to_numpy(msg), expected)


@pytest.mark.parametrize(("encoding", "dtype"), [("16UC1", np.uint16), ("mono16", np.uint16), ("32FC1", np.float32)])
def test_big_endian_images(encoding: str, dtype: type) -> None:
    values = (RNG.uniform(0, 60000, (H, W, 1))).astype(dtype)
    msg = raw_image(values.astype(np.dtype(dtype).newbyteorder(">")), encoding, pad=2, bigendian=True)
    out = image_to_numpy(msg)
    assert out.dtype == np.dtype(dtype)  # native order for the caller
    np.testing.assert_array_equal(out, values[..., 0])


def test_depth_in_metres() -> None:
    mm = np.array([[0, 1000, 1500], [250, 0, 65535]], dtype=np.uint16)
    metres = image_to_numpy(numpy_to_image(mm, "16UC1"), depth_in_metres=True)
    assert metres.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(metres), mm == 0)
    np.testing.assert_allclose(metres[mm > 0], mm[mm > 0] / 1000.0, rtol=1e-6)
    f = np.array([[0.5, np.nan], [2.0, 3.25]], dtype=np.float32)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(f, "32FC1"), depth_in_metres=True), f)
    with raises("not a depth encoding"):
        image_to_numpy(numpy_to_image(colour(3), "rgb8"), depth_in_metres=True)


def test_image_result_does_not_alias_the_message() -> None:
    arr = colour(3)
    msg = numpy_to_image(arr, "rgb8")
    out = image_to_numpy(msg)
    out[:] = 0
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda m: setattr(m, "encoding", "yuv422"), r"Image: unsupported encoding 'yuv422'"),
        (lambda m: setattr(m, "step", 10), r"Image: step 10 < width\*bytes_per_pixel 21"),
        (lambda m: setattr(m, "data", bytes(m.data)[:-5]), r"Image: data has 100 bytes but step\*height = 105"),
        (lambda m: setattr(m, "data", bytes(m.data) + b"\0"), r"data has 106 bytes"),
        (lambda m: setattr(m, "height", 0), r"Image: zero size"),
        (lambda m: setattr(m, "width", 8), r"step 21 < width\*bytes_per_pixel 24"),
        (lambda m: setattr(m, "encoding", "32FC1"), r"data has 105 bytes but step\*height = 140"),
    ],
)
def test_malformed_images_raise(mutate, match: str) -> None:
    msg = numpy_to_image(colour(3), "rgb8")
    mutate(msg)
    if msg.encoding == "32FC1":
        msg.step = 4 * W
    with raises(match):
        image_to_numpy(msg)


def test_image_builder_refuses_mismatched_arrays() -> None:
    with raises("needs dtype uint8"):
        numpy_to_image(colour(3).astype(np.float32), "rgb8")
    with raises(r"needs shape \(H, W, 3\)"):
        numpy_to_image(colour(4), "rgb8")
    with raises(r"needs shape \(H, W\)"):
        numpy_to_image(colour(3)[..., 0:1].repeat(2, axis=2), "mono8")
    with raises("unsupported encoding"):
        numpy_to_image(colour(3), "yuv422")


# -------------------------------------------------------------------------------- compressed images


@pytest.mark.parametrize(
    "arr",
    [
        RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8),
        RNG.integers(0, 256, (12, 16), dtype=np.uint8),
        RNG.integers(0, 65536, (12, 16), dtype=np.uint16),
    ],
)
def test_png_round_trip_is_exact(arr: np.ndarray) -> None:
    msg = numpy_to_compressed_image(arr, "png", stamp=5, frame_id="cam")
    assert "png" in msg.format and msg.header.frame_id == "cam"
    back = compressed_image_to_numpy(deserialize_message(serialize_message(msg), CompressedImage))
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)


def test_jpeg_keeps_rgb_order() -> None:
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 220  # red
    img[8:, :, 2] = 200  # bottom half magenta
    back = compressed_image_to_numpy(numpy_to_compressed_image(img, "jpeg", jpeg_quality=95))
    assert back.shape == img.shape
    assert np.abs(back.astype(int) - img).mean() < 6


def test_malformed_compressed_images_raise() -> None:
    with raises("CompressedImage: empty data"):
        compressed_image_to_numpy(CompressedImage(format="jpeg"))
    with raises("CompressedImage: cannot decode 9 bytes"):
        compressed_image_to_numpy(CompressedImage(format="jpeg", data=b"not a jpg"))
    good = numpy_to_compressed_image(colour(3), "png")
    with raises("cannot decode"):
        compressed_image_to_numpy(CompressedImage(format="png", data=bytes(good.data)[:40]))
    with raises("compressedDepth"):
        compressed_image_to_numpy(CompressedImage(format="16UC1; compressedDepth png", data=bytes(good.data)))
    with raises("need format 'png'"):
        numpy_to_compressed_image(np.zeros((4, 4), np.uint16), "jpeg")
    with raises("unsupported format 'bmp'"):
        numpy_to_compressed_image(colour(3), "bmp")


# ------------------------------------------------------------------------------------------ point clouds


def test_pointcloud_round_trip_survives_rclpy_serialization() -> None:
    pts = xyz(4096)
    msg = numpy_to_pointcloud2(pts, stamp=42_000_000_017, frame_id="world")
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 4096, 12, 4096 * 12)
    assert msg.is_dense
    wire = deserialize_message(serialize_message(msg), PointCloud2)
    assert stamp_to_ns(wire.header.stamp) == 42_000_000_017 and wire.header.frame_id == "world"
    out = pointcloud2_to_numpy(wire)
    assert out.dtype == np.float32 and out.shape == (4096, 3)
    np.testing.assert_array_equal(out, pts)


def test_pointcloud_with_rgb_round_trip() -> None:
    pts, rgb = xyz(100), RNG.integers(0, 256, (100, 3), dtype=np.uint8)
    msg = deserialize_message(serialize_message(numpy_to_pointcloud2(pts, rgb=rgb)), PointCloud2)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"] and msg.point_step == 16
    np.testing.assert_array_equal(pointcloud2_to_numpy(msg), pts)
    back_pts, back_rgb = pointcloud2_to_numpy_with_rgb(msg)
    np.testing.assert_array_equal(back_pts, pts)
    np.testing.assert_array_equal(back_rgb, rgb)
    # PCL packing: 0x00RRGGBB in a little-endian word -> bytes B, G, R, 0
    first = np.frombuffer(msg.data, np.uint8)[12:16]
    np.testing.assert_array_equal(first, [rgb[0, 2], rgb[0, 1], rgb[0, 0], 0])


def test_xyz_with_padding_and_extra_fields() -> None:
    # a typical RGB-D driver layout: x, y, z, pad, rgb, intensity, padding to 32 bytes
    n = 24
    pts = xyz(n)
    packed = RNG.integers(0, 1 << 24, n).astype(np.uint32)
    msg = raw_cloud(
        {
            "x": (0, PointField.FLOAT32, pts[:, 0]),
            "y": (4, PointField.FLOAT32, pts[:, 1]),
            "z": (8, PointField.FLOAT32, pts[:, 2]),
            "rgb": (16, PointField.UINT32, packed),
            "intensity": (20, PointField.FLOAT32, np.arange(n, dtype=np.float32)),
        },
        point_step=32,
        height=1,
        width=n,
    )
    np.testing.assert_array_equal(pointcloud2_to_numpy(msg), pts)
    np.testing.assert_array_equal(pointcloud2_to_numpy(msg, ("intensity", "x")), np.c_[np.arange(n), pts[:, 0]])
    _, rgb = pointcloud2_to_numpy_with_rgb(msg)
    np.testing.assert_array_equal(rgb[:, 0], (packed >> 16) & 0xFF)
    np.testing.assert_array_equal(rgb[:, 2], packed & 0xFF)


def test_float64_fields_in_reverse_order_big_endian() -> None:
    n = 10
    pts = xyz(n, np.float64)
    msg = raw_cloud(
        {
            "z": (0, PointField.FLOAT64, pts[:, 2]),
            "y": (8, PointField.FLOAT64, pts[:, 1]),
            "x": (16, PointField.FLOAT64, pts[:, 0]),
        },
        point_step=28,
        height=1,
        width=n,
        bigendian=True,
        declared_order=["y", "x", "z"],
    )
    out = pointcloud2_to_numpy(msg)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, pts.astype(np.float32))


def test_mixed_datatypes_and_unaligned_offsets() -> None:
    n = 9
    xs = RNG.integers(-100, 100, n).astype(np.int16)
    ys = RNG.normal(size=n).astype(np.float32)
    zs = RNG.integers(0, 255, n).astype(np.uint8)
    msg = raw_cloud(
        {"x": (1, PointField.INT16, xs), "y": (3, PointField.FLOAT32, ys), "z": (7, PointField.UINT8, zs)},
        point_step=9,
        height=1,
        width=n,
    )
    np.testing.assert_array_equal(pointcloud2_to_numpy(msg), np.c_[xs, ys, zs].astype(np.float32))


@pytest.mark.parametrize("bigendian", [False, True])
def test_organized_cloud_with_row_padding(bigendian: bool) -> None:
    h, w = 4, 6
    pts = xyz(h * w)
    pts[5] = np.nan
    pts[17, 1] = np.inf
    msg = raw_cloud(
        {
            "x": (0, PointField.FLOAT32, pts[:, 0]),
            "y": (4, PointField.FLOAT32, pts[:, 1]),
            "z": (8, PointField.FLOAT32, pts[:, 2]),
        },
        point_step=16,
        height=h,
        width=w,
        row_padding=12,
        bigendian=bigendian,
    )
    np.testing.assert_array_equal(pointcloud2_to_numpy(msg), pts)  # row-major, NaNs kept
    kept = pointcloud2_to_numpy(msg, skip_nans=True)
    np.testing.assert_array_equal(kept, np.delete(pts, [5, 17], axis=0))


def test_skip_nans_with_rgb_keeps_arrays_aligned() -> None:
    pts, rgb = xyz(20), RNG.integers(0, 256, (20, 3), dtype=np.uint8)
    pts[[0, 7]] = np.nan
    p, c = pointcloud2_to_numpy_with_rgb(numpy_to_pointcloud2(pts, rgb=rgb), skip_nans=True)
    keep = np.ones(20, bool)
    keep[[0, 7]] = False
    np.testing.assert_array_equal(p, pts[keep])
    np.testing.assert_array_equal(c, rgb[keep])


def test_all_nan_cloud_with_skip_nans_raises() -> None:
    msg = numpy_to_pointcloud2(np.full((8, 3), np.nan, np.float32))
    assert not msg.is_dense
    assert np.isnan(pointcloud2_to_numpy(msg)).all()
    with raises("all 8 points are non-finite"):
        pointcloud2_to_numpy(msg, skip_nans=True)


def _cloud(n: int = 512) -> PointCloud2:
    return numpy_to_pointcloud2(xyz(n))


def _with_fields(msg: PointCloud2, fields: list[PointField]) -> PointCloud2:
    msg.fields = fields
    return msg


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: _replace(_cloud(), data=bytes(1000)),
            r"PointCloud2: data has 1000 bytes but width\*height\*point_step = 6144",
        ),
        (
            lambda: _replace(_cloud(), point_step=8, row_step=8 * 512),
            r"point_step 8 too small for field 'z' at offset 8",
        ),
        (lambda: _replace(_cloud(), point_step=16, row_step=16 * 512), r"data has 6144 bytes but .* = 8192"),
        (lambda: _replace(_cloud(), width=0, row_step=0, data=b""), r"PointCloud2: zero points \(width=0, height=1\)"),
        (
            lambda: _with_fields(
                _cloud(), [PointField(name=n, offset=o, datatype=7, count=1) for n, o in (("x", 0), ("y", 4))]
            ),
            r"PointCloud2: missing field 'z'",
        ),
        (lambda: _replace(_cloud(), row_step=100), r"row_step 100 < width\*point_step 6144"),
        (lambda: _replace(_cloud(4), height=2, row_step=48), r"data has 48 bytes but width\*height\*point_step = 96"),
        (
            lambda: _with_fields(
                _cloud(),
                [
                    PointField(name=n, offset=4 * i, datatype=7 if n != "z" else 42, count=1)
                    for i, n in enumerate("xyz")
                ],
            ),
            r"field 'z' has unknown datatype 42",
        ),
        (
            lambda: _with_fields(_cloud(), [PointField(name="x", offset=0, datatype=7, count=3)]),
            r"field 'x' has count 3",
        ),
        (
            lambda: _with_fields(_cloud(), [PointField(name=n, offset=0, datatype=7, count=1) for n in "xyzz"]),
            r"field 'z' appears 2 times",
        ),
    ],
)
def test_malformed_clouds_raise(make, match: str) -> None:
    with raises(match):
        pointcloud2_to_numpy(make())


def _replace(msg: PointCloud2, **changes) -> PointCloud2:
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


def test_cloud_builder_refuses_bad_shapes() -> None:
    with raises(r"shape \(N, 3\)"):
        numpy_to_pointcloud2(np.zeros((10, 2), np.float32))
    with raises(r"rgb must be \(10, 3\) uint8"):
        numpy_to_pointcloud2(np.zeros((10, 3), np.float32), rgb=np.zeros((10, 3), np.float32))


# ---------------------------------------------------------------------------------------- joint states


def test_joint_state_picks_joints_by_name() -> None:
    msg = numpy_to_joint_state(["gripper", "j3", "j1", "j2"], [0.04, 3.0, 1.0, 2.0], velocities=[0, 30, 10, 20])
    np.testing.assert_array_equal(joint_state_to_numpy(msg, ["j1", "j2", "j3"]), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(joint_state_to_numpy(msg, ["j3", "j1"], field="velocity"), [30, 10])
    back = deserialize_message(serialize_message(msg), JointState)
    np.testing.assert_array_equal(joint_state_to_numpy(back, ["j2"]), [2.0])


def test_malformed_joint_states_raise() -> None:
    msg = numpy_to_joint_state(["j1", "j2"], [1.0, 2.0])
    with raises(r"JointState: missing joint\(s\) \['j3'\]"):
        joint_state_to_numpy(msg, ["j1", "j3"])
    with raises("2 names but 0 velocity values"):
        joint_state_to_numpy(msg, ["j1"], field="velocity")
    msg.position = [1.0]
    with raises("2 names but 1 position values"):
        joint_state_to_numpy(msg, ["j1"])
    dup = JointState(name=["j1", "j1", "j2"], position=[1.0, 2.0, 3.0])
    with raises("listed more than once"):
        joint_state_to_numpy(dup, ["j1"])
    np.testing.assert_array_equal(joint_state_to_numpy(dup, ["j2"]), [3.0])
    with raises("2 names but 3 position values"):
        numpy_to_joint_state(["a", "b"], [1.0, 2.0, 3.0])


# ------------------------------------------------------------------------------------------- actions


def test_float64_multiarray_layout() -> None:
    chunk = RNG.normal(size=(16, 4))
    msg = action_to_float64_multiarray(chunk)
    dims = [(d.label, d.size, d.stride) for d in msg.layout.dim]
    assert dims == [("horizon", 16, 64), ("action", 4, 4)]
    np.testing.assert_array_equal(np.asarray(msg.data).reshape(16, 4), chunk)
    single = action_to_float64_multiarray(np.array([0.1, -0.2, 0.3], np.float32))
    assert [(d.label, d.size, d.stride) for d in single.layout.dim] == [("action", 3, 3)]
    with raises("non-finite"):
        action_to_float64_multiarray(np.array([0.0, np.nan]))
    with raises(r"\(A,\) or \(H, A\)"):
        action_to_float64_multiarray(np.zeros((2, 2, 2)))


def test_joint_trajectory_times_are_one_step_ahead() -> None:
    chunk = RNG.normal(size=(4, 3))
    msg = action_chunk_to_joint_trajectory(chunk, ["a", "b", "c"], dt=0.05, stamp=7_000_000_000, frame_id="base")
    assert list(msg.joint_names) == ["a", "b", "c"] and msg.header.frame_id == "base"
    assert stamp_to_ns(msg.header.stamp) == 7_000_000_000
    assert [duration_to_ns(p.time_from_start) for p in msg.points] == [
        50_000_000,
        100_000_000,
        150_000_000,
        200_000_000,
    ]
    for point, row in zip(msg.points, chunk, strict=True):
        np.testing.assert_array_equal(point.positions, row)
    slow = action_chunk_to_joint_trajectory(chunk[:2], ["a", "b", "c"], dt=1.5)
    assert (slow.points[0].time_from_start.sec, slow.points[0].time_from_start.nanosec) == (1, 500_000_000)
    assert (slow.points[1].time_from_start.sec, slow.points[1].time_from_start.nanosec) == (3, 0)


def test_joint_trajectory_refuses_bad_input() -> None:
    with raises(r"chunk must be \(H, 2\)"):
        action_chunk_to_joint_trajectory(np.zeros((4, 3)), ["a", "b"], dt=0.1)
    with raises("dt must be a positive"):
        action_chunk_to_joint_trajectory(np.zeros((4, 2)), ["a", "b"], dt=0.0)
    with raises("non-finite"):
        action_chunk_to_joint_trajectory(np.full((4, 2), np.inf), ["a", "b"], dt=0.1)


# ------------------------------------------------------------------------------ fuzzed message headers


def test_fuzzed_clouds_only_ever_raise_conversion_error() -> None:
    rng = np.random.default_rng(1)
    converted = 0
    for _ in range(400):
        msg = numpy_to_pointcloud2(xyz(6))
        msg.height = int(rng.choice([0, 1, 2, 3, 6]))
        msg.width = int(rng.choice([0, 1, 2, 3, 6, 1 << 30]))
        msg.point_step = int(rng.choice([0, 4, 6, 12, 24]))
        msg.row_step = int(rng.choice([0, 12, 24, 36, 72, 100]))
        msg.is_bigendian = bool(rng.integers(2))
        for field in msg.fields:
            field.offset = int(rng.choice([0, 2, 4, 8, 20]))
            field.datatype = int(rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
            field.count = int(rng.choice([0, 1, 1, 2]))
        msg.data = bytes(int(rng.choice([0, 6, 12, 36, 72, 144])))
        try:
            out = pointcloud2_to_numpy(msg, skip_nans=bool(rng.integers(2)))
        except ConversionError:
            continue
        converted += 1
        assert out.ndim == 2 and out.shape[1] == 3 and out.dtype == np.float32
    assert converted > 0  # the fuzz reaches the success path too


def test_fuzzed_images_only_ever_raise_conversion_error() -> None:
    rng = np.random.default_rng(2)
    encodings = [*IMAGE_ENCODINGS, "yuv422", "", "RGB8", "16uc1"]
    converted = 0
    for _ in range(400):
        msg = Image(
            height=int(rng.choice([0, 1, 2, 3])),
            width=int(rng.choice([0, 1, 2, 3, 1 << 30])),
            step=int(rng.choice([0, 1, 2, 3, 4, 6, 8, 12, 13])),
            encoding=str(rng.choice(encodings)),
            is_bigendian=bool(rng.integers(2)),
            data=bytes(int(rng.choice([0, 1, 6, 9, 12, 24, 36, 39]))),
        )
        try:
            out = image_to_numpy(msg, keep_alpha=bool(rng.integers(2)))
        except ConversionError:
            continue
        converted += 1
        assert out.shape[:2] == (msg.height, msg.width)
    assert converted > 0
