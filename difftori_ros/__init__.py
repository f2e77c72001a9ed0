"""ROS 2 layer of DiffTORI: message conversion, sensor synchronization, diagnostics and the nodes.

This package stays thin: messages in, ``policy.select_action(obs)`` (or a chunk), messages out. The
modules here import numpy and ROS message types only; policy code lives in ``difftori_core``.
"""
