"""MetaWorld (v3) tasks with the sensors a real robot cell has.

`MetaWorldEnv` returns raw observations as an RGB-D camera and the arm's joint encoders would give
them; `difftori_core.processing` turns them into policy inputs (the same code the ROS node applies
to real sensor messages). Raw observation keys:

==============  ================  =========================================================================
key             dtype, shape      meaning
==============  ================  =========================================================================
`image`         uint8 (H, W, 3)   RGB, upright (world up is image up); absent with `render_image=False`
`depth`         float32 (H, W)    metric depth along the optical axis (metres), NaN where there is no
                                  return within `max_depth` (REP 118 convention for float depth images)
`point_cloud`   float32 (H*W, 3)  every depth pixel back-projected into the robot base frame, row-major
                                  ("organized", like depth_image_proc's output); NaN rows where depth is NaN
`point_colors`  uint8 (H*W, 3)    the RGB of each point (only with the image)
`agent_pos`     float32 (9,)      joint positions named by `JOINT_NAMES` (7 arm joints in rad, 2 finger
                                  slides in m): what a sensor_msgs/JointState carries
`intrinsics`    float32 (3, 3)    pinhole K of the (upright) image
`camera_pose`   float32 (4, 4)    T_base_optical: the camera's optical frame (x right, y down, z forward,
                                  as ROS `*_optical_frame`) in the base frame
`state`         float32 (39,)     MetaWorld's privileged state (object and goal poses): for the scripted
                                  expert only, never a policy input
==============  ================  =========================================================================

Robot base frame: the Sawyer's `base` body frame of the MuJoCo model (the pedestal's top, under the
first arm joint): x to the robot's right, y forward towards the table, z up, metres. In MetaWorld it
coincides with the world frame and the table top is the plane z = 0; the transform is nevertheless
read from the model, never assumed.

Actions are MetaWorld's own: a 4-D vector in [-1, 1]: end-effector position delta (x, y, z, scaled by
1 cm per unit per step) and gripper effort (+1 closes).

Seeding: `reset(seed)` reseeds MetaWorld's generator and samples a fresh object/goal configuration
from it (the "goal observable" variant DP3 uses), so a seed always gives the same episode. The
gymnasium `Meta-World/MT1` wrapper stack does not: it picks one of 50 fixed configurations with a
generator that `reset(seed=...)` never touches, so the episode depends on the reset history.

Rendering is headless (MUJOCO_GL=egl, or osmesa) with one GL context kept for the env's lifetime,
one pass per step that reads RGB and depth together, and shadows, reflections, fog, skybox and
multisampling off: several times cheaper than the default scene and nothing a policy needs.
"""

from __future__ import annotations

import atexit
import os
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

# Must be set before mujoco is first imported anywhere; a caller's choice (e.g. osmesa) wins.
os.environ.setdefault("MUJOCO_GL", "egl")

JOINT_NAMES = ("right_j0", "right_j1", "right_j2", "right_j3", "right_j4", "right_j5", "right_j6", "r_close", "l_close")
ACTION_NAMES = ("ee_dx", "ee_dy", "ee_dz", "gripper")
BASE_BODY = "base"
# MetaWorld's SawyerXYZEnv raises once an episode passes this many steps.
METAWORLD_MAX_STEPS = 500


@dataclass
class MetaWorldEnvConfig:
    """Attributes:
    task: MetaWorld v3 task name, e.g. "reach-v3", "door-open-v3".
    camera: MuJoCo camera for image and depth. "corner2" (DP3's choice) sees the table, the
        gripper and the objects of every task from the front-right, above the table.
    width, height: raw render size in pixels (the processor resizes and samples from it).
    max_episode_steps: episode limit (at most MetaWorld's own 500).
    max_depth: depth-sensor range in metres; farther pixels (and pixels that see nothing) are NaN.
    fast_render: shadows, reflections, fog, skybox and multisampling off (same geometry, ~5x faster).
    """

    task: str = "door-open-v3"
    camera: str = "corner2"
    width: int = 128
    height: int = 128
    max_episode_steps: int = 300
    max_depth: float = 5.0
    fast_render: bool = True

    def __post_init__(self) -> None:
        if not (8 <= self.width <= 4096 and 8 <= self.height <= 4096):
            raise ValueError(f"render size must be 8..4096 pixels, got {self.width}x{self.height}")
        if not 1 <= self.max_episode_steps <= METAWORLD_MAX_STEPS:
            raise ValueError(f"max_episode_steps must be 1..{METAWORLD_MAX_STEPS}, got {self.max_episode_steps}")
        if not self.max_depth > 0:
            raise ValueError(f"max_depth must be positive, got {self.max_depth}")


@dataclass
class CameraModel:
    """Pinhole intrinsics (pixels, pixel centres at integer coordinates) of the upright image and
    the optical frame's pose in the base frame (optical frame: x right, y down, z forward)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    rotation: np.ndarray  # (3, 3): the optical frame's axes in the base frame (columns)
    translation: np.ndarray  # (3,): the optical centre in the base frame

    @property
    def K(self) -> np.ndarray:  # noqa: N802 (the standard name)
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def pose(self) -> np.ndarray:
        """T_base_optical (4, 4)."""
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.rotation, self.translation
        return T

    def pixel_rays(self) -> np.ndarray:
        """(H*W, 3) base-frame vectors r with point = translation + depth * r (row-major pixels)."""
        v, u = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
        rays = np.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy, np.ones_like(u)], axis=-1).reshape(-1, 3)
        return rays @ self.rotation.T

    def backproject(self, depth: np.ndarray) -> np.ndarray:
        """(H, W) metric depth -> (H*W, 3) float32 base-frame points (NaN depth gives NaN points)."""
        if depth.shape != (self.height, self.width):
            raise ValueError(f"depth is {depth.shape}, the camera is {self.height}x{self.width}")
        return (self.pixel_rays() * depth.reshape(-1, 1) + self.translation).astype(np.float32)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) base-frame points -> (N, 2) pixel coordinates (u, v) and (N,) depths."""
        cam = (np.asarray(points, dtype=np.float64) - self.translation) @ self.rotation
        uv = np.stack([cam[:, 0] / cam[:, 2] * self.fx + self.cx, cam[:, 1] / cam[:, 2] * self.fy + self.cy], -1)
        return uv, cam[:, 2]


def expert_policy_class(task: str) -> type:
    """MetaWorld's scripted policy for `task` ("door-open-v3" -> SawyerDoorOpenV3Policy)."""
    from metaworld.policies import ENV_POLICY_MAP

    if task not in ENV_POLICY_MAP:
        raise ValueError(f"no scripted expert for task {task!r}; MetaWorld has experts for {sorted(ENV_POLICY_MAP)}")
    return ENV_POLICY_MAP[task]


# Renderers their owner did not close are freed at exit while EGL still works: freeing them in
# __del__ during interpreter teardown, after mujoco's own exit hook terminated EGL, prints errors.
_LIVE_RENDERERS: weakref.WeakSet[_RGBDRenderer] = weakref.WeakSet()


def _close_live_renderers() -> None:
    for renderer in list(_LIVE_RENDERERS):
        renderer.close()


class _RGBDRenderer:
    """One offscreen GL context + MuJoCo render context, reused for every frame; each `render`
    is a single pass whose colour and depth buffers are both read back.

    (mujoco.Renderer renders twice for RGB + depth and forces segmentation rendering for depth.)
    """

    def __init__(self, model: Any, camera_id: int, width: int, height: int, fast: bool) -> None:
        import mujoco

        self._mj = mujoco
        self.model, self.width, self.height = model, width, height
        # The offscreen framebuffer is sized from the model when the render context is made.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        if fast:
            model.vis.quality.offsamples = 0  # no multisample anti-aliasing buffer
        try:
            self._gl = mujoco.GLContext(width, height)
            self._gl.make_current()
            self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        except Exception as err:  # the GL backends raise assorted types
            raise RuntimeError(
                f"headless rendering failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} ({err}); it must be set "
                "before mujoco is first imported: egl (with libEGL) or osmesa (with libosmesa6)"
            ) from err
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        # Read depth as mujoco.Renderer does (1 at the near plane, 0 at the far one), so its
        # conversion to metres below applies unchanged (checked against ray casting in the tests).
        self._con.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(model, maxgeom=2000)
        if fast:
            for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX", "mjRND_FOG"):
                self._scene.flags[getattr(mujoco.mjtRndFlag, flag)] = False
        self._option = mujoco.MjvOption()
        self._perturb = mujoco.MjvPerturb()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = camera_id
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._rgb = np.empty((height, width, 3), dtype=np.uint8)
        self._z = np.empty((height, width), dtype=np.float32)
        # The z-buffer -> metric depth map of mujoco.Renderer (OpenGL frustum in float32, reversed Z).
        extent = model.stat.extent
        znear = np.float32(model.vis.map.znear * extent)
        zfar = np.float32(model.vis.map.zfar * extent)
        c = -(zfar + znear) / (zfar - znear)
        d = -(np.float32(2) * zfar * znear) / (zfar - znear)
        self._c, self._d = float(np.float32(-0.5) * c - np.float32(0.5)), float(np.float32(-0.5) * d)
        self.zfar = float(zfar)
        if not _LIVE_RENDERERS:
            # Registered after mujoco's GL backend registered its own hook, so it runs before it.
            atexit.unregister(_close_live_renderers)
            atexit.register(_close_live_renderers)
        _LIVE_RENDERERS.add(self)

    def render(self, data: Any, rgb: bool = True, depth: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(RGB (H, W, 3) uint8, depth (H, W) float64 metres), both bottom row first (OpenGL order)."""
        mj = self._mj
        self._gl.make_current()  # another env's context may be current in this thread
        mj.mjv_updateScene(
            self.model, data, self._option, self._perturb, self._camera, mj.mjtCatBit.mjCAT_ALL, self._scene
        )
        mj.mjr_render(self._rect, self._scene, self._con)
        mj.mjr_readPixels(self._rgb if rgb else None, self._z if depth else None, self._rect, self._con)
        metric = self._d / (self._z.astype(np.float64) + self._c) if depth else None
        return (self._rgb.copy() if rgb else None), metric

    def close(self) -> None:
        if self._con is not None:
            self._gl.make_current()
            self._con.free()
            self._con = None
            self._gl.free()


class MetaWorldEnv:
    """One MetaWorld task observed through an RGB-D camera and joint encoders (module docstring)."""

    def __init__(self, config: MetaWorldEnvConfig | None = None, render_image: bool = True) -> None:
        """`render_image=False` skips reading the colour buffer when nothing consumes the image;
        observations then carry no `image` / `point_colors`."""
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        self.config = config or MetaWorldEnvConfig()
        cfg = self.config
        key = f"{cfg.task}-goal-observable"
        if key not in ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE:
            known = sorted(k.removesuffix("-goal-observable") for k in ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE)
            raise ValueError(f"unknown MetaWorld task {cfg.task!r}; known: {known}")
        self._expert_cls = expert_policy_class(cfg.task)
        self._mw = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[key](seed=0)
        self._mw.max_path_length = METAWORLD_MAX_STEPS
        self.model, self.data = self._mw.model, self._mw.data
        cam_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, cfg.camera)
        if cam_id < 0:
            names = [self.model.camera(i).name for i in range(self.model.ncam)]
            raise ValueError(f"unknown camera {cfg.camera!r}; this scene has {names}")
        self._cam_id = cam_id
        self._base_id = self.model.body(BASE_BODY).id
        self._qpos_index = np.array([self.model.jnt_qposadr[self.model.joint(n).id] for n in JOINT_NAMES])
        self._renderer: _RGBDRenderer | None = _RGBDRenderer(self.model, cam_id, cfg.width, cfg.height, cfg.fast_render)
        self._max_depth = min(cfg.max_depth, 0.99 * self._renderer.zfar)
        self.render_image = render_image
        self.action_space = self._mw.action_space
        self.action_low = self.action_space.low.astype(np.float32)
        self.action_high = self.action_space.high.astype(np.float32)
        self.joint_names, self.action_names = JOINT_NAMES, ACTION_NAMES
        self.step_seconds = float(self._mw.dt)  # simulated seconds per step (frame_skip x timestep)
        self.steps = 0
        self._expert: Any = None
        self._state: np.ndarray | None = None
        self._camera: CameraModel | None = None
        self._rays: np.ndarray | None = None

    # -- geometry --------------------------------------------------------------------------

    def _to_base(self, world_points: np.ndarray) -> np.ndarray:
        R = self.data.xmat[self._base_id].reshape(3, 3)
        return (np.asarray(world_points, dtype=np.float64) - self.data.xpos[self._base_id]) @ R

    def _upside_down(self) -> bool:
        # The MuJoCo camera's image-up axis (its local y) points below the horizon: MetaWorld's
        # corner cameras are mounted rolled by ~180 degrees, so their raw images are upside down.
        return bool(self.data.cam_xmat[self._cam_id].reshape(3, 3)[2, 1] < 0)

    def _camera_model(self) -> CameraModel:
        h, w = self.config.height, self.config.width
        # MuJoCo's fovy is the vertical field of view of the full image; pixels are square.
        f = 0.5 * h / np.tan(np.deg2rad(self.model.cam_fovy[self._cam_id]) / 2)
        # MuJoCo camera frame: x right, y up, looking along -z. Optical: x right, y down, z forward.
        R = self.data.cam_xmat[self._cam_id].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
        if self._upside_down():
            R = R @ np.diag([-1.0, -1.0, 1.0])  # the image is rotated 180 degrees to be upright
        R_base = self.data.xmat[self._base_id].reshape(3, 3)
        t = self._to_base(self.data.cam_xpos[self._cam_id][None])[0]
        return CameraModel(f, f, (w - 1) / 2.0, (h - 1) / 2.0, w, h, R_base.T @ R, t)

    @property
    def camera(self) -> CameraModel:
        """The camera model of the current (fixed) camera pose; valid after `reset`."""
        if self._camera is None:
            raise RuntimeError("call reset() first")
        return self._camera

    def site_position(self, name: str) -> np.ndarray:
        """A MuJoCo site's position in the base frame (for tests and calibration checks)."""
        return self._to_base(self.data.site(name).xpos[None])[0]

    def body_position(self, name: str) -> np.ndarray:
        """A MuJoCo body's origin in the base frame."""
        return self._to_base(self.data.body(name).xpos[None])[0]

    # -- sensors -----------------------------------------------------------------------------

    def _render(self, rgb: bool, depth: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self._renderer is None:
            raise RuntimeError("the environment is closed")
        image, metric = self._renderer.render(self.data, rgb=rgb, depth=depth)
        # OpenGL reads the bottom row first; an upside-down camera additionally needs a 180
        # degree rotation, and the two together are a left-right mirror.
        flip = (slice(None), slice(None, None, -1)) if self._upside_down() else (slice(None, None, -1),)
        return (
            None if image is None else np.ascontiguousarray(image[flip]),
            None if metric is None else np.ascontiguousarray(metric[flip]),
        )

    def render_rgb(self) -> np.ndarray:
        """The camera's current RGB image, upright, (H, W, 3) uint8 (for videos)."""
        image, _ = self._render(rgb=True, depth=False)
        assert image is not None
        return image

    def observe(self) -> dict[str, np.ndarray]:
        """The raw sensor observation of the current state (keys in the module docstring)."""
        if self._state is None or self._camera is None or self._rays is None:
            raise RuntimeError("call reset() first")
        image, metric = self._render(rgb=self.render_image, depth=True)
        assert metric is not None
        # No return (the far plane) or beyond the sensor's range: NaN, as a depth camera reports.
        metric[metric >= self._max_depth] = np.nan
        points = (self._rays * metric.reshape(-1, 1) + self._camera.translation).astype(np.float32)
        obs: dict[str, np.ndarray] = {}
        if image is not None:
            obs["image"] = image
            obs["point_colors"] = image.reshape(-1, 3)
        obs.update(
            depth=metric.astype(np.float32),
            point_cloud=points,
            agent_pos=self.data.qpos[self._qpos_index].astype(np.float32),
            intrinsics=self._camera.K.astype(np.float32),
            camera_pose=self._camera.pose.astype(np.float32),
            state=self._state.astype(np.float32),
        )
        return obs

    # -- episode -------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Start an episode; `seed` fixes the object/goal configuration (None: continue the
        current random stream)."""
        if seed is not None:
            self._mw.seed(int(seed))
        # Sample the configuration from the env's (seeded) generator instead of a frozen task.
        self._mw._freeze_rand_vec = False
        self._mw.seeded_rand_vec = True
        state, _ = self._mw.reset()
        self._state = np.asarray(state)
        self.steps = 0
        self._expert = None
        self._camera = self._camera_model()
        self._rays = self._camera.pixel_rays()
        return self.observe()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply one action (clipped to the bounds). `terminated` is always False (MetaWorld
        tasks have no terminal states; `info["success"]` says when the task is solved) and
        `truncated` is True at `max_episode_steps`."""
        if self._state is None:
            raise RuntimeError("call reset() first")
        if self.steps >= self.config.max_episode_steps:
            raise RuntimeError(f"episode over ({self.steps} steps); call reset()")
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != self.action_low.shape or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be {self.action_low.shape[0]} finite values, got {action}")
        state, reward, _, _, info = self._mw.step(np.clip(action, self.action_low, self.action_high))
        self._state = np.asarray(state)
        self.steps += 1
        info = {**info, "success": bool(float(info.get("success", 0.0)) > 0.5)}
        truncated = self.steps >= self.config.max_episode_steps
        return self.observe(), float(reward), False, truncated, info

    def expert_action(self, obs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """MetaWorld's scripted expert's action for `obs` (its privileged `state`; default: the
        current state), clipped to the action bounds as the robot would execute it."""
        if obs is not None:
            state = obs.get("state")
        else:  # the float32 state observe() reports, so both ways give the same action
            state = None if self._state is None else self._state.astype(np.float32)
        if state is None:
            raise ValueError("the expert needs the privileged 'state' (call reset() first)")
        if self._expert is None:
            self._expert = self._expert_cls()
        with warnings.catch_warnings():
            # The experts warn on every call that their gains may exceed the action bounds.
            warnings.simplefilter("ignore", UserWarning)
            action = self._expert.get_action(np.asarray(state, dtype=np.float64))
        return np.clip(np.asarray(action, dtype=np.float32), self.action_low, self.action_high)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._mw.close()

    def __enter__(self) -> MetaWorldEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
