"""Every heavy dependency imports beside the others in ONE process and does real work.

This is the test that catches a broken install (a CUDA torch pulled in by accident, opencv and
opencv-headless fighting, onnxruntime and onnxruntime-gpu both present, metaworld vs mujoco pins).
"""

from __future__ import annotations

import os

import numpy as np
import pytest


def test_all_heavy_dependencies_work_in_one_process(tmp_path) -> None:
    import cv2
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World environments)
    import mujoco
    import onnxruntime as ort
    import open3d as o3d
    import rclpy
    import theseus as th
    import torch
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Float64MultiArray

    # torch: autograd on the CPU build we pinned
    assert torch.__version__.startswith("2.13.0")
    x = torch.randn(4, 3, requires_grad=True)
    (x @ x.T).trace().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach())

    # theseus: a one-variable least squares, x* = target
    target = torch.tensor([[1.5, -2.0]])
    var = th.Vector(2, name="x")
    objective = th.Objective()
    objective.add(th.Difference(var, th.Vector(tensor=target, name="t"), th.ScaleCostWeight(1.0)))
    layer = th.TheseusLayer(th.GaussNewton(objective, max_iterations=3))
    sol, _ = layer.forward({"x": torch.zeros(1, 2)})
    torch.testing.assert_close(sol["x"], target)

    # open3d: farthest point sampling keeps exactly k distinct points of the cloud
    pts = np.random.default_rng(0).uniform(-1, 1, size=(2000, 3))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    sampled = np.asarray(pcd.farthest_point_down_sample(64).points)
    assert sampled.shape == (64, 3)
    assert np.unique(sampled, axis=0).shape[0] == 64

    # opencv: PNG round trip is lossless
    img = np.random.default_rng(1).integers(0, 255, size=(32, 48, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok and np.array_equal(cv2.imdecode(buf, cv2.IMREAD_COLOR), img)

    # onnxruntime: a torch-exported MLP gives torch's numbers, on an available provider
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 5),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}},
        dynamo=False,
    )
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    session = ort.InferenceSession(str(path), providers=providers)
    inp = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    (out,) = session.run(None, {"x": inp})
    np.testing.assert_allclose(out, model(torch.from_numpy(inp)).detach().numpy(), atol=1e-5)

    # mujoco: a falling sphere falls
    m = mujoco.MjModel.from_xml_string(
        "<mujoco><worldbody><body pos='0 0 1'><freejoint/><geom size='0.1'/></body></worldbody></mujoco>"
    )
    d = mujoco.MjData(m)
    for _ in range(50):
        mujoco.mj_step(m, d)
    assert d.qpos[2] < 1.0

    # metaworld: a task steps under the scripted expert's action space
    env = gym.make("Meta-World/MT1", env_name="reach-v3", seed=0)
    obs, _ = env.reset(seed=0)
    obs2, reward, *_ = env.step(env.action_space.sample())
    assert obs.shape == obs2.shape and np.isfinite(reward)
    env.close()

    # rclpy: a message crosses real DDS between two nodes (loopback, this run's domain id)
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    received: list[list[float]] = []
    with rclpy.init():
        talker, listener = rclpy.create_node("stack_talker"), rclpy.create_node("stack_listener")
        pub = talker.create_publisher(Float64MultiArray, "stack_check", 10)
        listener.create_subscription(Float64MultiArray, "stack_check", lambda msg: received.append(list(msg.data)), 10)
        executor = SingleThreadedExecutor()
        executor.add_node(talker)
        executor.add_node(listener)
        msg = Float64MultiArray(data=[1.0, 2.0, 3.0])
        # Publish until the subscription has matched and delivered (bounded: 10 s).
        deadline = talker.get_clock().now().nanoseconds + 10_000_000_000
        while not received and talker.get_clock().now().nanoseconds < deadline:
            pub.publish(msg)
            executor.spin_once(timeout_sec=0.05)
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
    if not received:
        pytest.fail("no message crossed DDS within 10 s")
    assert received[0] == [1.0, 2.0, 3.0]
