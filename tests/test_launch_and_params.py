"""The launch file and the params YAML, checked against the installed executables and the node's
parameters (ROS 2 `launch` itself is not installable here, so the file is read, not run)."""

from __future__ import annotations

import ast
import dataclasses
import os
from pathlib import Path

import yaml

from difftori_ros.controller_node import ControllerParams

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "controller.launch.py"


def keyword_values(tree: ast.AST, name: str) -> list[str]:
    return [
        kw.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == name and isinstance(kw.value, ast.Constant)
    ]


def test_launch_file_starts_installed_executables_with_known_parameters() -> None:
    tree = ast.parse(LAUNCH.read_text())
    # The controller is named in the file; the simulated robot comes from the model (sim_selection).
    assert set(keyword_values(tree, "executable")) == {"controller_node"}
    assert "simulated_robot(model" in LAUNCH.read_text()
    executables = {"controller_node", "sim_robot_node", "dmc_robot_node"}
    setup = (ROOT / "setup.py").read_text()
    for exe in executables:
        script = ROOT / "ros_bin" / exe
        assert script.is_file() and script.stat().st_mode & 0o111, f"{script} must exist and be executable"
        assert f"ros_bin/{exe}" in setup  # installed to lib/difftori_ros by the data_files entry
    assert 'f"lib/{PACKAGE}"' in setup
    arguments = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument"
    }
    assert {"model", "params_file", "device", "backend", "use_sim"} <= arguments
    # Parameters the launch file passes to the controller are real ControllerParams fields.
    fields = {f.name for f in dataclasses.fields(ControllerParams)}
    (controller,) = [
        n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "LifecycleNode"
    ]
    passed = {
        key.value
        for kw in controller.keywords
        if kw.arg == "parameters"
        for node in ast.walk(kw.value)
        if isinstance(node, ast.Dict)
        for key in node.keys
        if isinstance(key, ast.Constant)
    }
    assert passed == {"model", "device", "backend", "autostart", "command_interface"} and passed <= fields


def test_the_model_decides_which_simulated_robot_the_launch_starts(tmp_path: Path) -> None:
    from difftori_core.checkpoint import save_checkpoint
    from difftori_core.config import to_dict
    from difftori_core.policies import PolicyConfig, PolicySpec
    from difftori_core.policies.tdmpc import TDMPCPolicy, TDMPCPolicyConfig
    from difftori_core.processing import ProcessingSpec
    from difftori_core.rl.agent import AgentConfig
    from difftori_core.rl.world_model import WorldModelConfig
    from difftori_ros.sim_selection import simulated_robot

    il = simulated_robot(str(ROOT / "models" / "door-open-v3-difftori"))
    assert il.executable == "sim_robot_node" and il.robot_parameters["task"] == "door-open-v3"
    # The MetaWorld cell: simulation time, the cloud in the camera's optical frame and its extrinsic.
    assert il.controller_parameters["use_sim_time"] and il.controller_parameters["points_frame"]
    assert set(il.controller_parameters) - {"use_sim_time"} <= {f.name for f in dataclasses.fields(ControllerParams)}
    twist = simulated_robot("door-open-v3-difftori", command_interface="twist")  # by name, too
    assert twist.robot_parameters["command_interface"] == twist.controller_parameters["command_interface"] == "twist"

    spec = PolicySpec({"agent_pos": [2], "joint_velocity": [2]}, 1, [-1.0], [1.0], ["slide"])
    section = TDMPCPolicyConfig(AgentConfig(model=WorldModelConfig(16, 16, 16)), [False, True], [False, False])
    cfg = PolicyConfig(type="tdmpc", horizon=5, n_obs_steps=1, n_action_steps=1)
    cfg.sections["tdmpc"] = section
    env = {"kind": "dmc", "task": "cartpole-swingup", "joint_names": ["slider", "hinge_1"], "action_repeat": 8}
    extra = {"task": "cartpole-swingup", "processing": to_dict(ProcessingSpec(keys=("agent_pos", "joint_velocity"))),
             "env": env}
    model = save_checkpoint(tmp_path / "m", TDMPCPolicy(spec, section), {"policy": to_dict(cfg)}, extra)
    dmc = simulated_robot(str(model))
    assert dmc.executable == "dmc_robot_node"
    assert dmc.robot_parameters == {"task": "cartpole-swingup", "action_repeat": 8, "use_sim_time": True}
    assert dmc.controller_parameters == {"action_topic": "effort_controller/commands", "use_sim_time": True}
    assert set(dmc.controller_parameters) - {"use_sim_time"} <= {f.name for f in dataclasses.fields(ControllerParams)}


def test_params_yaml_lists_exactly_the_node_parameters_with_valid_values() -> None:
    data = yaml.safe_load((ROOT / "config" / "controller.yaml").read_text())
    params = data["difftori_controller"]["ros__parameters"]
    fields = {f.name for f in dataclasses.fields(ControllerParams)}
    assert set(params) == fields
    ControllerParams.from_values(params).validate()  # the shipped defaults are valid
    defaults = {f.name: f.default for f in dataclasses.fields(ControllerParams)}
    assert ControllerParams.from_values(params) == ControllerParams(**defaults)  # the file shows the defaults


def test_package_is_registered_for_the_ament_index() -> None:
    assert (ROOT / "resource" / "difftori_ros").is_file()
    setup = (ROOT / "setup.py").read_text()
    assert "share/ament_index/resource_index/packages" in setup and "package.xml" in setup
    assert "<name>difftori_ros</name>" in (ROOT / "package.xml").read_text()


def test_pip_install_puts_executables_and_ament_index_where_ros2_looks(tmp_path: Path) -> None:
    import subprocess
    import sys

    prefix = tmp_path / "prefix"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--ignore-installed",  # else pip uninstalls the venv's editable install of this package
            "--prefix",
            str(prefix),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for exe in ("controller_node", "sim_robot_node", "dmc_robot_node"):
        path = prefix / "lib" / "difftori_ros" / exe
        assert path.is_file() and path.stat().st_mode & 0o111, path
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "difftori_ros").is_file()
    share = prefix / "share" / "difftori_ros"
    for rel in ("package.xml", "launch/controller.launch.py", "config/controller.yaml"):
        assert (share / rel).is_file(), rel
    # The shipped models, found by name through the prefix (AMENT_PREFIX_PATH), from any directory.
    assert (share / "models" / "door-open-v3-difftori" / "model.safetensors").is_file()
    code = "from difftori_ros.models import resolve_model; print(resolve_model('push-v3-difftori'))"
    env = {**os.environ, "AMENT_PREFIX_PATH": str(prefix)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.strip() == str(share / "models" / "push-v3-difftori"), out.stderr
    # An installed executable runs with its prefix's interpreter (as in a venv), not PATH's python3;
    # with autostart, a controller that cannot configure says why and exits 1.
    (prefix / "bin").mkdir(exist_ok=True)
    (prefix / "bin" / "python3").symlink_to(sys.executable)
    out = subprocess.run(
        [str(prefix / "lib" / "difftori_ros" / "controller_node"), "--ros-args", "-p", "model:=/nonexistent",
         "-p", "autostart:=true"],
        env={**os.environ, "PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(sys.path)},
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "configure failed" in out.stdout + out.stderr and "'/nonexistent'" in out.stdout + out.stderr
