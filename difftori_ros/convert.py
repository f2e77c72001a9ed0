"""ROS 2 message <-> numpy conversion (the project's own replacement for cv_bridge / sensor_msgs_py).

Neither cv_bridge nor sensor_msgs_py is published for ROS 2 as a pip-installable package, so this
module does the conversions the nodes need, with vectorised numpy (no per-pixel / per-point Python
loops; loops run over fields and joint names only).

Contract with the caller: every malformed *message* raises :class:`ConversionError` (a ``ValueError``)
whose text names the message type and what is wrong, and nothing else escapes (no IndexError from a
short buffer, no numpy reshape error). The controller node counts these and publishes a safe action.
The output builders also raise :class:`ConversionError` for arrays that would make a bad message,
including non-finite commands: a NaN must never reach a robot.

Conventions:
* Colour images come back in RGB order (``HxWx3 uint8``) whatever the wire encoding; builders take RGB
  and swap on the wire for ``bgr8`` / ``bgra8``, so ``numpy_to_image`` / ``image_to_numpy`` round-trip.
* Depth: ``16UC1`` is millimetres, ``32FC1`` metres (REP 118). With ``depth_in_metres=True`` both come
  back as float32 metres and "no measurement" (0 in ``16UC1``) becomes NaN, the ``32FC1`` convention.
* Stamps are ``builtin_interfaces/Time``; builders also accept integer nanoseconds or ``None`` (zero).
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence

import cv2
import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import CompressedImage, Image, JointState, PointCloud2, PointField
from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

__all__ = [
    "ConversionError",
    "IMAGE_ENCODINGS",
    "stamp_to_ns",
    "ns_to_stamp",
    "ns_to_duration",
    "duration_to_ns",
    "image_to_numpy",
    "numpy_to_image",
    "compressed_image_to_numpy",
    "numpy_to_compressed_image",
    "pointcloud2_to_numpy",
    "pointcloud2_to_numpy_with_rgb",
    "numpy_to_pointcloud2",
    "joint_state_to_numpy",
    "numpy_to_joint_state",
    "action_to_float64_multiarray",
    "action_chunk_to_joint_trajectory",
]

_NS_PER_S = 1_000_000_000
_NATIVE_BIGENDIAN = sys.byteorder == "big"


class ConversionError(ValueError):
    """A message (or an array meant to become one) that cannot be converted; the text says why."""


# --------------------------------------------------------------------------------------------- stamps


def stamp_to_ns(stamp: Time) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds (exact; floats would lose ns at epoch scale)."""
    return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> ``builtin_interfaces/Time`` (floor division keeps nanosec in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), _NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def ns_to_duration(ns: int) -> Duration:
    """Integer nanoseconds -> ``builtin_interfaces/Duration``."""
    sec, nanosec = divmod(int(ns), _NS_PER_S)
    return Duration(sec=sec, nanosec=nanosec)


def duration_to_ns(duration: Duration) -> int:
    """``builtin_interfaces/Duration`` -> integer nanoseconds."""
    return int(duration.sec) * _NS_PER_S + int(duration.nanosec)


def _header(stamp: Time | int | None, frame_id: str) -> Header:
    if stamp is None:
        stamp = Time()
    elif not isinstance(stamp, Time):
        stamp = ns_to_stamp(stamp)
    return Header(stamp=stamp, frame_id=frame_id)


def _bytes_view(data: object, kind: str) -> np.ndarray:
    """A uint8 view of a message's ``data`` (array.array from rclpy, or bytes), without copying."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        pass
    try:  # a plain list of ints (hand-built messages in some rclpy versions)
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConversionError(f"{kind}: data is not a byte buffer ({type(data).__name__})") from exc


def _byte_array(values: np.ndarray) -> array.array:
    """The bytes of ``values`` as the ``array.array('B')`` that message ``uint8[]`` fields store.

    The setter memcpy's an array.array (or bytes) once more; an ndarray or list it converts element by
    element (~50 ms per image). An array.array also keeps the fast path with ROS_PYTHON_CHECK_FIELDS=1,
    where the setter stores it as-is but would check ``bytes`` element by element.
    """
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(values).reshape(-1).view(np.uint8))
    return out


def _float64_array(values: np.ndarray) -> array.array:
    # Message float64[] fields store array.array('d'); filling one from bytes avoids a per-element
    # Python conversion (the same reason images are assigned arr.tobytes()).
    out = array.array("d")
    out.frombytes(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return out


# --------------------------------------------------------------------------------------------- images

# encoding -> (element dtype, channels). Keys are matched case-insensitively.
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
_ENCODING_BY_LOWER = {name.lower(): name for name in IMAGE_ENCODINGS}
_DEPTH_MM_ENCODINGS = ("16UC1", "mono16")
# (wire encoding, keep_alpha) -> OpenCV conversion to RGB(A); absent: already in the wanted order.
_TO_RGB = {
    ("bgr8", False): cv2.COLOR_BGR2RGB,
    ("bgr8", True): cv2.COLOR_BGR2RGB,
    ("bgra8", False): cv2.COLOR_BGRA2RGB,
    ("bgra8", True): cv2.COLOR_BGRA2RGBA,
    ("rgba8", False): cv2.COLOR_RGBA2RGB,
}


def _canonical_encoding(encoding: str, kind: str = "Image") -> str:
    canonical = _ENCODING_BY_LOWER.get(str(encoding).strip().lower())
    if canonical is None:
        raise ConversionError(f"{kind}: unsupported encoding {encoding!r} (supported: {', '.join(IMAGE_ENCODINGS)})")
    return canonical


def image_to_numpy(msg: Image, *, keep_alpha: bool = False, depth_in_metres: bool = False) -> np.ndarray:
    """``sensor_msgs/Image`` -> a new, C-contiguous, native-byte-order array the caller owns.

    Colour -> ``(H, W, 3) uint8`` RGB (``(H, W, 4)`` RGBA with ``keep_alpha``); mono8 -> ``(H, W) uint8``;
    mono16 / 16UC1 -> ``(H, W) uint16``; 32FC1 -> ``(H, W) float32``. With ``depth_in_metres`` the depth
    encodings (16UC1 and mono16 as millimetres, 32FC1) give ``float32`` metres, 0 mm -> NaN.
    Row padding (``step`` > width * bytes per pixel) and big-endian data are handled.
    """
    encoding = _canonical_encoding(msg.encoding)
    dtype, channels = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"Image: zero size (height={height}, width={width})")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ConversionError(f"Image: step {step} < width*bytes_per_pixel {row_bytes}")
    buf = _bytes_view(msg.data, "Image")
    if buf.size != step * height:
        raise ConversionError(f"Image: data has {buf.size} bytes but step*height = {step * height}")
    if depth_in_metres and encoding not in (*_DEPTH_MM_ENCODINGS, "32FC1"):
        raise ConversionError(f"Image: depth in metres requested but encoding {encoding!r} is not a depth encoding")

    rows = buf.reshape(height, step)[:, :row_bytes]  # drops the padding; a view
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    # The last axis of `rows` is contiguous, so a dtype view works even on padded rows.
    pixels = rows.view(wire).reshape(height, width, channels)

    if channels == 1:
        plane = pixels[..., 0]
        if depth_in_metres and encoding in _DEPTH_MM_ENCODINGS:
            metres = plane.astype(np.float32) * np.float32(0.001)
            metres[plane == 0] = np.nan
            return metres
        return np.array(plane, dtype=dtype.newbyteorder("="), order="C")
    # cv2.cvtColor copies and reorders uint8 channels ~100x faster than numpy fancy indexing.
    conversion = _TO_RGB.get((encoding, keep_alpha))
    if conversion is not None:
        return cv2.cvtColor(pixels, conversion)
    return np.array(pixels, order="C")


def numpy_to_image(arr: np.ndarray, encoding: str, stamp: Time | int | None = None, frame_id: str = "") -> Image:
    """An array -> ``sensor_msgs/Image`` (unpadded rows, native byte order).

    ``arr`` is in the layout :func:`image_to_numpy` returns: colour in RGB(A) channel order even for
    ``bgr8`` / ``bgra8`` (swapped on the wire), mono/depth as ``(H, W)`` or ``(H, W, 1)``. The dtype
    must match the encoding exactly (uint8, uint16 for mono16/16UC1, float32 for 32FC1).
    """
    encoding = _canonical_encoding(encoding)
    dtype, channels = IMAGE_ENCODINGS[encoding]
    arr = np.asarray(arr)
    if arr.dtype.newbyteorder("=") != dtype:
        raise ConversionError(f"Image: encoding {encoding!r} needs dtype {dtype}, got {arr.dtype}")
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    expected_ndim = 2 if channels == 1 else 3
    if arr.ndim != expected_ndim or (channels > 1 and arr.shape[2] != channels):
        want = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ConversionError(f"Image: encoding {encoding!r} needs shape {want}, got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConversionError(f"Image: zero size {arr.shape}")
    if encoding == "bgr8":
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR)
    elif encoding == "bgra8":
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGBA2BGRA)
    arr = arr.astype(dtype.newbyteorder("="), copy=False)

    msg = Image()
    msg.header = _header(stamp, frame_id)
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = _NATIVE_BIGENDIAN
    msg.step = int(arr.shape[1]) * channels * dtype.itemsize
    msg.data = _byte_array(arr)  # never the ndarray itself: the setter's per-element path costs ~50 ms
    return msg


def compressed_image_to_numpy(msg: CompressedImage, *, keep_alpha: bool = False) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG) -> array, colour in RGB order.

    Colour -> ``(H, W, 3) uint8`` RGB (RGBA with ``keep_alpha`` for 4-channel PNG); greyscale -> ``(H, W)``
    uint8 or uint16 (16-bit PNG). The container is recognised from its magic bytes. The
    ``compressedDepth`` transport (a private header before the PNG) is not supported.
    """
    if "compresseddepth" in msg.format.lower():
        raise ConversionError(f"CompressedImage: unsupported format {msg.format!r} (compressedDepth)")
    buf = _bytes_view(msg.data, "CompressedImage")
    if buf.size == 0:
        raise ConversionError("CompressedImage: empty data")
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        img = None
        detail = f": {exc}"
    else:
        detail = ""
    if img is None:
        raise ConversionError(
            f"CompressedImage: cannot decode {buf.size} bytes (format {msg.format!r}) as JPEG/PNG{detail}"
        )
    if img.ndim == 2:
        return img
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if keep_alpha else cv2.COLOR_BGRA2RGB)
    raise ConversionError(f"CompressedImage: decoded image has unsupported shape {img.shape}")


def numpy_to_compressed_image(
    arr: np.ndarray,
    format: str = "jpeg",
    stamp: Time | int | None = None,
    frame_id: str = "",
    *,
    jpeg_quality: int = 90,
    png_compression: int = 1,
) -> CompressedImage:
    """An RGB ``(H, W, 3) uint8`` or greyscale ``(H, W)`` uint8/uint16 array -> ``sensor_msgs/CompressedImage``.

    ``format`` is ``"jpeg"`` or ``"png"`` (uint16 needs PNG). The message's ``format`` string follows
    image_transport's ``"<encoding>; <codec> compressed <wire encoding>"`` convention. PNG level 1 by
    default: a sensor stream wants speed over the last few percent of size.
    """
    codec = format.strip().lower()
    if codec == "jpg":
        codec = "jpeg"
    if codec not in ("jpeg", "png"):
        raise ConversionError(f"CompressedImage: unsupported format {format!r} (use 'jpeg' or 'png')")
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
        encoding, wire, to_encode = "rgb8", "bgr8", cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR)
    elif arr.ndim == 2 and arr.dtype == np.uint8:
        encoding, wire, to_encode = "mono8", "mono8", arr
    elif arr.ndim == 2 and arr.dtype == np.uint16:
        if codec != "png":
            raise ConversionError("CompressedImage: uint16 images need format 'png' (JPEG is 8-bit)")
        encoding, wire, to_encode = "mono16", "mono16", arr
    else:
        raise ConversionError(
            f"CompressedImage: need (H, W, 3) uint8 RGB or (H, W) uint8/uint16, got {arr.shape} {arr.dtype}"
        )
    if to_encode.size == 0:
        raise ConversionError(f"CompressedImage: zero size {arr.shape}")
    if codec == "jpeg":
        ok, encoded = cv2.imencode(".jpg", to_encode, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        ok, encoded = cv2.imencode(".png", to_encode, [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)])
    if not ok:
        raise ConversionError(f"CompressedImage: OpenCV failed to encode {arr.shape} {arr.dtype} as {codec}")
    msg = CompressedImage()
    msg.header = _header(stamp, frame_id)
    msg.format = f"{encoding}; {codec} compressed {wire}"
    msg.data = _byte_array(encoded)
    return msg


# ---------------------------------------------------------------------------------------- point clouds

_POINTFIELD_CODES: dict[int, str] = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}


def _cloud_view(msg: PointCloud2, fields: Sequence[str], as_uint32: Sequence[str] = ()) -> np.ndarray:
    """Validate ``msg`` and return a zero-copy ``(height, width)`` structured view of the named fields.

    The structured dtype holds only the requested fields at their offsets, with ``itemsize`` =
    ``point_step`` and row stride ``row_step``, so any layout (extra fields, padding, organized clouds,
    either byte order) is read by numpy directly. Fields in ``as_uint32`` are read as raw 4-byte
    words (packed RGB is declared FLOAT32 by PCL, but its bits are colour, not a number).
    """
    fields = tuple(fields)
    if not fields or len(set(fields)) != len(fields):
        raise ConversionError(f"PointCloud2: requested fields {fields} must be non-empty and distinct")
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if height * width <= 0:
        raise ConversionError(f"PointCloud2: zero points (width={width}, height={height})")

    present: dict[str, list[PointField]] = {}
    for field in msg.fields:
        present.setdefault(field.name, []).append(field)
    order = ">" if msg.is_bigendian else "<"
    formats, offsets = [], []
    for name in fields:
        found = present.get(name)
        if not found:
            raise ConversionError(f"PointCloud2: missing field {name!r} (fields present: {list(present)})")
        if len(found) > 1:
            raise ConversionError(f"PointCloud2: field {name!r} appears {len(found)} times")
        field = found[0]
        code = _POINTFIELD_CODES.get(int(field.datatype))
        if code is None:
            raise ConversionError(f"PointCloud2: field {name!r} has unknown datatype {field.datatype}")
        # count 0 is what some publishers write for a scalar; >1 (an array per point) is not a coordinate.
        if int(field.count) > 1:
            raise ConversionError(f"PointCloud2: field {name!r} has count {field.count}; only scalars are supported")
        if name in as_uint32:
            if code[1] != "4":
                raise ConversionError(f"PointCloud2: field {name!r} is {code}, expected a 4-byte packed colour")
            code = "u4"
        size = int(code[1])
        offset = int(field.offset)
        if offset < 0 or offset + size > point_step:
            raise ConversionError(
                f"PointCloud2: point_step {point_step} too small for field {name!r} at offset {offset} ({size} bytes)"
            )
        formats.append(order + code)
        offsets.append(offset)
    if row_step < width * point_step:
        raise ConversionError(f"PointCloud2: row_step {row_step} < width*point_step {width * point_step}")
    buf = _bytes_view(msg.data, "PointCloud2")
    expected = row_step * height
    if buf.size != expected:
        what = "width*height*point_step" if row_step == width * point_step else "row_step*height"
        raise ConversionError(f"PointCloud2: data has {buf.size} bytes but {what} = {expected}")
    dtype = np.dtype({"names": list(fields), "formats": formats, "offsets": offsets, "itemsize": point_step})
    return np.ndarray((height, width), dtype=dtype, buffer=buf, strides=(row_step, point_step))


def _finite_rows(points: np.ndarray) -> np.ndarray | None:
    """Row mask of all-finite points, or None when every point is finite (the common, dense case)."""
    # Column by column: np.isfinite(points).all(axis=1) reduces along a short axis, ~15x slower.
    keep = np.isfinite(points[:, 0])
    for i in range(1, points.shape[1]):
        keep &= np.isfinite(points[:, i])
    if keep.all():
        return None
    if not keep.any():
        raise ConversionError(f"PointCloud2: all {points.shape[0]} points are non-finite")
    return keep


def pointcloud2_to_numpy(
    msg: PointCloud2, fields: Sequence[str] = ("x", "y", "z"), *, skip_nans: bool = False
) -> np.ndarray:
    """``sensor_msgs/PointCloud2`` -> ``(N, len(fields)) float32``, N = width*height in row-major order.

    Works for any layout that contains the fields (any offsets and order, INT8..FLOAT64 datatypes,
    extra fields, padded ``point_step`` / ``row_step``, organized clouds, big-endian). ``skip_nans``
    drops points with any non-finite requested value; if that leaves none, ConversionError (a cloud
    with nothing in it is as unusable to a policy as a malformed one).
    """
    view = _cloud_view(msg, fields)
    height, width = view.shape
    out = np.empty((height, width, len(view.dtype.names)), dtype=np.float32)
    for i, name in enumerate(view.dtype.names):
        out[..., i] = view[name]  # casts (and byte-swaps) straight from the strided message buffer
    out = out.reshape(height * width, -1)
    if skip_nans and (keep := _finite_rows(out)) is not None:
        out = out[keep]
    return out


def pointcloud2_to_numpy_with_rgb(
    msg: PointCloud2, *, rgb_field: str | None = None, skip_nans: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """XYZ ``(N, 3) float32`` and colour ``(N, 3) uint8`` from a cloud with a PCL-packed colour field.

    The colour field (``rgb`` or ``rgba`` unless named) holds ``0x00RRGGBB`` in a 4-byte word, as PCL,
    rviz and :func:`numpy_to_pointcloud2` write it. ``skip_nans`` filters both arrays with one mask.
    """
    if rgb_field is None:
        names = {f.name for f in msg.fields}
        rgb_field = "rgb" if "rgb" in names else "rgba" if "rgba" in names else "rgb"
    view = _cloud_view(msg, ("x", "y", "z", rgb_field), as_uint32=(rgb_field,))
    height, width = view.shape
    xyz = np.empty((height, width, 3), dtype=np.float32)
    for i, name in enumerate("xyz"):
        xyz[..., i] = view[name]
    packed = view[rgb_field].astype(np.uint32).reshape(-1)
    rgb = np.stack([(packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF], axis=1).astype(np.uint8)
    xyz = xyz.reshape(-1, 3)
    if skip_nans and (keep := _finite_rows(xyz)) is not None:
        xyz, rgb = xyz[keep], rgb[keep]
    return xyz, rgb


def numpy_to_pointcloud2(
    points: np.ndarray,
    stamp: Time | int | None = None,
    frame_id: str = "",
    rgb: np.ndarray | None = None,
) -> PointCloud2:
    """``(N, 3)`` points -> an unorganized (height 1) ``sensor_msgs/PointCloud2`` of FLOAT32 x, y, z.

    With ``rgb`` (``(N, 3) uint8``) a FLOAT32 ``rgb`` field packed as ``0x00RRGGBB`` is added at offset 12
    (PCL / rviz convention), point_step 16; otherwise point_step is 12. ``is_dense`` says whether every
    point is finite.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ConversionError(f"PointCloud2: points must have shape (N, 3), got {pts.shape}")
    if not np.issubdtype(pts.dtype, np.number):
        raise ConversionError(f"PointCloud2: points must be numeric, got {pts.dtype}")
    n = pts.shape[0]
    names, offsets = ["x", "y", "z"], [0, 4, 8]
    if rgb is not None:
        colours = np.asarray(rgb)
        if colours.shape != (n, 3) or colours.dtype != np.uint8:
            raise ConversionError(f"PointCloud2: rgb must be ({n}, 3) uint8, got {colours.shape} {colours.dtype}")
        record = np.empty((n, 4), dtype=np.float32)
        record[:, :3] = pts
        c = colours.astype(np.uint32)
        record[:, 3].view(np.uint32)[:] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
        names.append("rgb")
        offsets.append(12)
    else:
        record = np.ascontiguousarray(pts, dtype=np.float32)
    point_step = 4 * len(names)

    msg = PointCloud2()
    msg.header = _header(stamp, frame_id)
    msg.height, msg.width = 1, n
    msg.fields = [
        PointField(name=nm, offset=o, datatype=PointField.FLOAT32, count=1)
        for nm, o in zip(names, offsets, strict=True)
    ]
    msg.is_bigendian = _NATIVE_BIGENDIAN
    msg.point_step = point_step
    msg.row_step = point_step * n
    msg.is_dense = bool(np.isfinite(record[:, :3]).all())
    msg.data = _byte_array(record)
    return msg


# ---------------------------------------------------------------------------------------- joint states

_JOINT_FIELDS = ("position", "velocity", "effort")


def joint_state_to_numpy(msg: JointState, names: Sequence[str], field: str = "position") -> np.ndarray:
    """The ``field`` values of the joints ``names``, in that order, as ``float64`` (``len(names),``).

    Messages may list joints in any order and carry joints the caller does not use (a gripper, a
    mobile base); a requested joint that is missing or ambiguous is a ConversionError.
    """
    if field not in _JOINT_FIELDS:
        raise ValueError(f"field must be one of {_JOINT_FIELDS}, got {field!r}")
    msg_names = list(msg.name)
    values = getattr(msg, field)
    if len(values) != len(msg_names):
        raise ConversionError(f"JointState: {len(msg_names)} names but {len(values)} {field} values")
    index: dict[str, int] = {}
    duplicated: set[str] = set()
    for i, name in enumerate(msg_names):
        if name in index:
            duplicated.add(name)
        else:
            index[name] = i
    missing = [n for n in names if n not in index]
    if missing:
        raise ConversionError(f"JointState: missing joint(s) {missing} (message has {msg_names})")
    ambiguous = [n for n in names if n in duplicated]
    if ambiguous:
        raise ConversionError(f"JointState: joint(s) {ambiguous} listed more than once")
    all_values = np.asarray(values, dtype=np.float64)
    return all_values[[index[n] for n in names]]


def numpy_to_joint_state(
    names: Sequence[str],
    positions: np.ndarray,
    velocities: np.ndarray | None = None,
    stamp: Time | int | None = None,
    efforts: np.ndarray | None = None,
) -> JointState:
    """Joint names and per-joint arrays -> ``sensor_msgs/JointState`` (velocity/effort empty if not given)."""
    names = [str(n) for n in names]
    msg = JointState()
    msg.header = _header(stamp, "")
    msg.name = names
    for field, values in (("position", positions), ("velocity", velocities), ("effort", efforts)):
        if values is None:
            continue
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.size != len(names):
            raise ConversionError(f"JointState: {len(names)} names but {arr.size} {field} values")
        setattr(msg, field, _float64_array(arr))
    return msg


# ------------------------------------------------------------------------------------- action outputs


def _finite_action(values: np.ndarray, kind: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ConversionError(f"{kind}: empty action {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConversionError(f"{kind}: action contains {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


def action_to_float64_multiarray(action: np.ndarray, labels: Sequence[str] | None = None) -> Float64MultiArray:
    """An action ``(A,)`` or chunk ``(H, A)`` -> ``std_msgs/Float64MultiArray`` with a labelled layout.

    Labels default to ``("action",)`` / ``("horizon", "action")``; strides follow the std_msgs
    convention (``dim[i].stride`` = product of the sizes of dims i..end), row-major data.
    """
    arr = _finite_action(action, "Float64MultiArray")
    if arr.ndim not in (1, 2):
        raise ConversionError(f"Float64MultiArray: action must be (A,) or (H, A), got {arr.shape}")
    labels = tuple(labels) if labels is not None else (("action",) if arr.ndim == 1 else ("horizon", "action"))
    if len(labels) != arr.ndim:
        raise ConversionError(f"Float64MultiArray: {len(labels)} labels for a {arr.ndim}-d action")
    msg = Float64MultiArray()
    strides = np.cumprod(arr.shape[::-1])[::-1]
    msg.layout.dim = [
        MultiArrayDimension(label=str(label), size=int(size), stride=int(stride))
        for label, size, stride in zip(labels, arr.shape, strides, strict=True)
    ]
    msg.layout.data_offset = 0
    msg.data = _float64_array(arr.reshape(-1))
    return msg


def action_chunk_to_joint_trajectory(
    chunk: np.ndarray,
    joint_names: Sequence[str],
    dt: float,
    stamp: Time | int | None = None,
    frame_id: str = "",
) -> JointTrajectory:
    """An action chunk ``(H, A)`` of joint positions -> ``trajectory_msgs/JointTrajectory``.

    Point i has ``time_from_start = (i + 1) * dt``: the chunk's first action is the target for the end
    of the *next* control period, not for the instant of publication; a point at 0 s would ask the
    controller to be there already (ros2_control's joint_trajectory_controller then jumps to it).
    ``stamp`` is the trajectory start; ``None`` leaves it zero, which trajectory controllers read as
    "start on receipt".
    """
    arr = _finite_action(chunk, "JointTrajectory")
    names = [str(n) for n in joint_names]
    if arr.ndim != 2 or arr.shape[1] != len(names):
        raise ConversionError(f"JointTrajectory: chunk must be (H, {len(names)}) for the joint names, got {arr.shape}")
    if not np.isfinite(dt) or dt <= 0:
        raise ConversionError(f"JointTrajectory: dt must be a positive number of seconds, got {dt}")
    dt_ns = float(dt) * _NS_PER_S
    msg = JointTrajectory()
    msg.header = _header(stamp, frame_id)
    msg.joint_names = names
    msg.points = [
        JointTrajectoryPoint(positions=_float64_array(row), time_from_start=ns_to_duration(round((i + 1) * dt_ns)))
        for i, row in enumerate(arr)
    ]
    return msg
