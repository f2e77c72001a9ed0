"""Start the DiffTORI controller, and the simulated robot the model needs when use_sim:=true.

    ros2 launch difftori_ros controller.launch.py [model:=...] [params_file:=...] [device:=auto|cpu|cuda]
        [backend:=auto|torch|onnxruntime] [use_sim:=true] [task:=<override the model's task>]

The controller is a lifecycle node; `autostart` configures and activates it at startup (set it to
false to drive the transitions from a lifecycle manager instead). With use_sim:=true the model
decides the robot (`difftori_ros.sim_selection`): the MetaWorld cell for an imitation policy, the
DeepMind Control robot (efforts, simulation time) for a model-based agent.
"""

from typing import Any

from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution


def nodes(context: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """The nodes to start, decided once the arguments are known (launch's OpaqueFunction)."""
    from difftori_ros.sim_selection import simulated_robot

    model = LaunchConfiguration("model").perform(context)
    use_sim = LaunchConfiguration("use_sim").perform(context).lower() in ("true", "1")
    robot = simulated_robot(model, LaunchConfiguration("task").perform(context)) if use_sim else None
    controller = LifecycleNode(
        package="difftori_ros",
        executable="controller_node",
        name="difftori_controller",
        namespace="",
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "model": model,
                "device": LaunchConfiguration("device"),
                "backend": LaunchConfiguration("backend"),
                "autostart": LaunchConfiguration("autostart"),
            },
            robot.controller_parameters if robot else {},
        ],
    )
    if robot is None:
        return [controller]
    return [controller, Node(package="difftori_ros", executable=robot.executable, output="screen",
                             parameters=[robot.robot_parameters])]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([FindPackageShare("difftori_ros"), "config", "controller.yaml"]),
                description="controller parameters (YAML)",
            ),
            DeclareLaunchArgument(
                "model",
                default_value="models/door-open-v3-difftori",
                description="model folder, checkpoint or run directory",
            ),
            DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda[:N]"),
            DeclareLaunchArgument(
                "backend", default_value="auto", description="auto | torch | onnxruntime (inference backend)"
            ),
            DeclareLaunchArgument("use_sim", default_value="false", description="also start the simulated robot"),
            DeclareLaunchArgument("task", default_value="", description="override the model's task in simulation"),
            DeclareLaunchArgument("autostart", default_value="true", description="configure + activate at startup"),
            OpaqueFunction(function=nodes),
        ]
    )
