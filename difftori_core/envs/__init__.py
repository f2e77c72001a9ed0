"""Simulated environments with real-robot-like sensors (import the submodule: it pulls in MuJoCo)."""
