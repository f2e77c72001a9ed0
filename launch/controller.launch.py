"""Start the DiffTORI controller, and the simulated robot when use_sim:=true.

    ros2 launch difftori_ros controller.launch.py [model:=...] [params_file:=...] [device:=auto|cpu|cuda]
        [backend:=auto|torch|onnxruntime] [use_sim:=true] [task:=door-open-v3]

The controller is a lifecycle node; `autostart` configures and activates it at startup (set it to
false to drive the transitions from a lifecycle manager instead).
"""

from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution


def generate_launch_description() -> LaunchDescription:
    params_file = LaunchConfiguration("params_file")
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
            DeclareLaunchArgument("task", default_value="door-open-v3", description="simulated MetaWorld task"),
            DeclareLaunchArgument("autostart", default_value="true", description="configure + activate at startup"),
            LifecycleNode(
                package="difftori_ros",
                executable="controller_node",
                name="difftori_controller",
                namespace="",
                output="screen",
                parameters=[
                    params_file,
                    {
                        "model": LaunchConfiguration("model"),
                        "device": LaunchConfiguration("device"),
                        "backend": LaunchConfiguration("backend"),
                        "autostart": LaunchConfiguration("autostart"),
                    },
                ],
            ),
            Node(
                package="difftori_ros",
                executable="sim_robot_node",
                name="difftori_sim_robot",
                output="screen",
                parameters=[{"task": LaunchConfiguration("task")}],
                condition=IfCondition(LaunchConfiguration("use_sim")),
            ),
        ]
    )
