"""Window sampler: padding at episode edges, batch content, reproducible sampling state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difftori_core.data.windows import WindowSampler, window_indices


def test_windows_pad_by_repeating_episode_edges() -> None:
    obs, act = window_indices(np.array([3, 7]), n_obs_steps=2, horizon=3)
    assert obs.tolist()[:4] == [[0, 0], [0, 1], [1, 2], [3, 3]]  # episode 2 starts at frame 3
    assert act.tolist()[:4] == [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 5]]
    assert act.tolist()[6] == [6, 6, 6]


@pytest.mark.parametrize("ends", [[], [3, 3], [0, 2], [[1, 2]]])
def test_bad_episode_ends_are_refused(ends: list) -> None:
    with pytest.raises(ValueError, match="episode_ends"):
        window_indices(np.array(ends), 2, 4)


def test_sampler_batches_and_state_round_trip() -> None:
    n = 10
    arrays = {"agent_pos": np.arange(n, dtype=np.float32)[:, None], "action": np.arange(n, dtype=np.float32)[:, None]}
    sampler = WindowSampler(arrays, np.array([4, 10]), 2, 3, ["agent_pos"], seed=3)
    state = sampler.state()
    a = sampler.sample(5)
    assert a["obs"]["agent_pos"].shape == (5, 2, 1) and a["action"].shape == (5, 3, 1)
    # Every window's observation frames end where its actions start.
    torch.testing.assert_close(a["obs"]["agent_pos"][:, -1], a["action"][:, 0])
    sampler.set_state(state)
    b = sampler.sample(5)
    torch.testing.assert_close(a["action"], b["action"])
    with pytest.raises(ValueError, match="image"):
        WindowSampler(arrays, np.array([10]), 2, 3, ["image"])
