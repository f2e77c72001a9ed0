"""QoS profiles shared by the nodes and their clients (a publisher and its subscribers must agree)."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

#: Episode results on `sim/episode`: reliable and latched (transient local), so a harness whose
#: subscription matches after an episode ended (discovery takes a while on a loaded machine)
#: still receives every result, as a late `ros2 topic echo` does.
EPISODE_RESULTS = QoSProfile(
    depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
