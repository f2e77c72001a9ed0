"""One ament_python package: `colcon build` and `pip install .` both install it.

Both the pure library (difftori_core) and the ROS 2 layer (difftori_ros) are installed; the
ament index marker, package.xml, launch files, configs and the shipped models go to
share/difftori_ros so that `ros2 launch difftori_ros ...` and `model:=<name>` find them after
either install route.
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "difftori_ros"


def model_files() -> list[tuple[str, list[str]]]:
    """share/difftori_ros/models/<name>/... for every file of every shipped model."""
    folders: dict[str, list[str]] = {}
    for f in sorted(Path("models").rglob("*")):
        if f.is_file():
            folders.setdefault(f"share/{PACKAGE}/{f.parent.as_posix()}", []).append(f.as_posix())
    return list(folders.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    description="DiffTORI: differentiable trajectory optimization policies and a ROS 2 controller",
    packages=find_packages(include=["difftori_core", "difftori_core.*", "difftori_ros", "difftori_ros.*"]),
    python_requires=">=3.10",
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        *model_files(),
        # ROS 2 executables live in lib/<package>/ (ros2 run and launch_ros look there); as data
        # files they land there for pip installs as well as colcon builds.
        (f"lib/{PACKAGE}", ["ros_bin/controller_node", "ros_bin/sim_robot_node", "ros_bin/dmc_robot_node"]),
    ],
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "difftori-controller = difftori_ros.controller_node:main",
            "difftori-sim-robot = difftori_ros.sim_robot_node:main",
            "difftori-dmc-robot = difftori_ros.dmc_robot_node:main",
        ]
    },
)
