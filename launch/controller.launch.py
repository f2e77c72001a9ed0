"""Start the DiffTORI controller, and the simulated robot the model needs when use_sim:=true.

    ros2 launch difftori_ros controller.launch.py [model:=<installed name or path>] [params_file:=...]
        [device:=auto|cpu|cuda] [backend:=auto|torch|onnxruntime] [use_sim:=true]
        [task:=<override the model's task>] [command_interface:=float64_array|twist]

The controller is a lifecycle node; `autostart` configures and activates it at startup (set it to
false to drive the transitions from a lifecycle manager instead). With autostart, a controller
that cannot configure logs why and exits, and the launch shuts down with it (never a silent,
unconfigured node). With use_sim:=true the model
decides the robot (`difftori_ros.sim_selection`): the MetaWorld cell for an imitation policy, the
DeepMind Control robot (efforts, simulation time) for a model-based agent.
"""

from typing import Any

from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution


def nodes(context: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """The nodes to start, decided once the arguments are known (launch's OpaqueFunction)."""
    from difftori_ros.sim_selection import simulated_robot

    model = LaunchConfiguration("model").perform(context)
    use_sim = LaunchConfiguration("use_sim").perform(context).lower() in ("true", "1")
    interface = LaunchConfiguration("command_interface").perform(context)
    robot = simulated_robot(model, LaunchConfiguration("task").perform(context), interface) if use_sim else None
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
                "command_interface": interface,
            },
            robot.controller_parameters if robot else {},
        ],
        on_exit=Shutdown(reason="the controller exited (if at startup: it could not configure, see its log)"),
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
                default_value="door-open-v3-difftori",
                description="an installed model's name, or a model folder, checkpoint or run directory",
            ),
            DeclareLaunchArgument(
                "command_interface",
                default_value="float64_array",
                description="float64_array | twist | joint_trajectory",
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
