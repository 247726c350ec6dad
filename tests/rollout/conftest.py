"""Fixtures of the rollout tests: one Ray session per module (the SFT checkpoint is tests/conftest.py's)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray cluster for one test module: 3 logical CPUs (2 rollout workers + a reward worker)."""
    import ray

    ray.init(num_cpus=3, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def same_tokens():
    """Whether two trajectories wrote the same segments, token for token (log-probs within 1e-4)."""
    import torch

    def same(a, b) -> bool:
        return [s.name for s in a.segments] == [s.name for s in b.segments] and all(
            torch.equal(x.ids, y.ids) and torch.allclose(x.logprobs, y.logprobs, atol=1e-4)
            for x, y in zip(a.segments, b.segments)
        )

    return same
