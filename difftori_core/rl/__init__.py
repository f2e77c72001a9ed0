"""Model-based RL: TD-MPC's world model (`world_model`), the sampling and DiffTORI planners
(`planners`) and the agent with its losses (`agent`). Trained by `training.rl`."""
