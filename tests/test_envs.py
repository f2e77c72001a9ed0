"""MetaWorld environment: sensor geometry against ray casting, orientation, determinism, expert."""

from __future__ import annotations

import numpy as np
import pytest

from difftori_core.envs.metaworld import (
    JOINT_NAMES,
    MetaWorldEnv,
    MetaWorldEnvConfig,
    expert_policy_class,
)

SIZE = 128


@pytest.fixture(scope="module")
def env():
    with MetaWorldEnv(MetaWorldEnvConfig(task="reach-v3", width=SIZE, height=SIZE, max_episode_steps=150)) as e:
        yield e


def test_observation_keys_shapes_and_dtypes(env: MetaWorldEnv) -> None:
    obs = env.reset(seed=0)
    expected = {
        "image": (np.uint8, (SIZE, SIZE, 3)),
        "point_colors": (np.uint8, (SIZE * SIZE, 3)),
        "depth": (np.float32, (SIZE, SIZE)),
        "point_cloud": (np.float32, (SIZE * SIZE, 3)),
        "agent_pos": (np.float32, (len(JOINT_NAMES),)),
        "intrinsics": (np.float32, (3, 3)),
        "camera_pose": (np.float32, (4, 4)),
        "state": (np.float32, (39,)),
    }
    assert {k: (v.dtype, v.shape) for k, v in obs.items()} == {k: (np.dtype(d), s) for k, (d, s) in expected.items()}
    assert np.isfinite(obs["agent_pos"]).all()
    # The camera sees the workspace: most pixels have a return; none is closer than 0.3 m.
    assert 0.4 < np.isfinite(obs["depth"]).mean() < 1.0 and np.nanmin(obs["depth"]) > 0.3
    K = obs["intrinsics"]
    fovy = np.deg2rad(env.model.cam_fovy[env.model.camera("corner2").id])
    assert K[1, 1] == pytest.approx(SIZE / 2 / np.tan(fovy / 2), rel=1e-5) and K[0, 2] == pytest.approx((SIZE - 1) / 2)
    R = obs["camera_pose"][:3, :3].astype(np.float64)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-5)


def test_depth_matches_ray_casting(env: MetaWorldEnv) -> None:
    """Every sampled pixel's metric depth equals the distance MuJoCo's own ray caster finds along
    that pixel's ray: this checks the z-buffer conversion, the intrinsics, the camera pose and the
    image orientation at once (a mirrored or flipped image would put the wrong depth at the pixel)."""
    import mujoco

    obs = env.reset(seed=0)
    cam = env.camera
    rays = cam.pixel_rays()
    visible_groups = np.array([1, 1, 1, 0, 0, 0], dtype=np.uint8)  # the groups the renderer draws
    geom = np.zeros(1, dtype=np.int32)
    checked = 0
    for i in np.random.default_rng(0).choice(SIZE * SIZE, 150, replace=False):
        norm = np.linalg.norm(rays[i])
        hit = mujoco.mj_ray(env.model, env.data, cam.translation, rays[i] / norm, visible_groups, 1, -1, geom)
        depth = obs["depth"].reshape(-1)[i]
        if hit < 0 or hit / norm > env.config.max_depth:
            assert np.isnan(depth), (i, hit, depth)
        else:
            assert abs(depth - hit / norm) < 1e-3, (i, depth, hit / norm)
            checked += 1
    assert checked > 60


def test_point_cloud_is_metric_and_in_the_base_frame(env: MetaWorldEnv) -> None:
    obs = env.reset(seed=0)
    pc = obs["point_cloud"]
    np.testing.assert_array_equal(np.isnan(pc).any(1), np.isnan(obs["depth"]).reshape(-1))
    # The gripper's visible surface lies within 2 cm of its end-effector site.
    assert np.nanmin(np.linalg.norm(pc - env.site_position("rightEndEffector"), axis=1)) < 0.02
    # The points near the puck (a cylinder, radius 2 cm, half-height 2 cm) lie on its surface.
    radius, half_height = env.model.geom("objGeom").size[:2]
    centre = env.body_position("obj")
    near = pc[np.linalg.norm(pc - centre, axis=1) < 0.03]
    surface_distance = np.maximum(
        np.linalg.norm(near[:, :2] - centre[:2], axis=1) - radius, np.abs(near[:, 2] - centre[2]) - half_height
    )
    assert len(near) >= 3 and np.abs(surface_distance).max() < 0.003, surface_distance
    # The table top is the plane z = 0 of the base frame: the most common height over it is ~0.
    table = pc[(np.abs(pc[:, 0]) < 0.3) & (pc[:, 1] > 0.45) & (pc[:, 1] < 0.85)]
    counts, edges = np.histogram(table[:, 2], bins=np.arange(-0.0525, 0.3, 0.005))
    assert abs(edges[counts.argmax()] + 0.0025) < 0.005
    # Back-projection and projection are inverses.
    uv, z = env.camera.project(env.site_position("rightEndEffector")[None])
    u, v = np.round(uv[0]).astype(int)
    assert 0 <= u < SIZE and 0 <= v < SIZE and abs(obs["depth"][v, u] - z[0]) < 0.05


def test_image_is_upright_and_aligned_with_depth(env: MetaWorldEnv) -> None:
    obs = env.reset(seed=0)
    # World up is image up: a point above the table projects to a smaller row than the table.
    (_, v_table), (_, v_above) = env.camera.project(np.array([[0.0, 0.6, 0.0], [0.0, 0.6, 0.3]]))[0]
    assert v_above < v_table - 5
    # Content, independent of the camera model: the view is over the table from above, so the
    # top of the upright image is empty space (no depth return) and its bottom is floor/robot.
    nan = np.isnan(obs["depth"])
    assert nan[: SIZE // 4].mean() > 0.9 and nan[-SIZE // 4 :].mean() < 0.1
    # RGB and depth come from one render pass with one flip: empty-space pixels are black.
    black = (obs["image"] == 0).all(-1)
    assert black.sum() > 1000 and (black & ~nan).sum() < 0.005 * black.sum()
    np.testing.assert_array_equal(env.render_rgb(), obs["image"])


def test_reset_is_deterministic_under_a_seed(env: MetaWorldEnv) -> None:
    a = env.reset(seed=3)
    env.reset(seed=5)  # a different history must not change what seed 3 gives
    b, c = env.reset(seed=3), env.reset(seed=4)
    for key in ("state", "point_cloud", "image", "agent_pos"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.allclose(a["state"], c["state"])


def test_expert_succeeds_on_reach(env: MetaWorldEnv) -> None:
    obs = env.reset(seed=0)
    np.testing.assert_array_equal(env.expert_action(obs), env.expert_action())
    for _ in range(150):
        action = env.expert_action(obs)
        assert action.shape == (4,) and action.dtype == np.float32 and np.abs(action).max() <= 1
        obs, reward, terminated, truncated, info = env.step(action)
        assert isinstance(info["success"], bool) and not terminated
        if info["success"] or truncated:
            break
    assert info["success"], f"expert failed within {env.steps} steps"


def test_actions_are_validated_and_episodes_truncate(env: MetaWorldEnv) -> None:
    env.reset(seed=0)
    assert (env.action_low == -1).all() and (env.action_high == 1).all()
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match="4 finite values"):
        env.step(np.zeros(3))
    limit = env.config.max_episode_steps
    env.config.max_episode_steps = 3
    try:
        truncated = [env.step(np.zeros(4))[3] for _ in range(3)]
        assert truncated == [False, False, True]
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(4))
    finally:
        env.config.max_episode_steps = limit


def test_bad_configs_are_named() -> None:
    with pytest.raises(ValueError, match="no scripted expert for task 'fly-to-moon-v3'"):
        expert_policy_class("fly-to-moon-v3")
    with pytest.raises(ValueError, match="unknown MetaWorld task 'fly-to-moon-v3'"):
        MetaWorldEnv(MetaWorldEnvConfig(task="fly-to-moon-v3"))
    with pytest.raises(ValueError, match="unknown camera 'nope'"):
        MetaWorldEnv(MetaWorldEnvConfig(task="reach-v3", camera="nope"))
    with pytest.raises(ValueError, match="max_episode_steps"):
        MetaWorldEnvConfig(max_episode_steps=501)
