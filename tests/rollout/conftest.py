"""Fixtures of the rollout tests: an SFT checkpoint of the shapes recipe, one Ray session per module.

Set COEVOLVE_SFT_CHECKPOINT to an SFT output (`coevolve sft recipe=shapes`'s checkpoints/sft) to
use it; by default a 4-step SFT run of the shapes recipe from the tiny checkpoint is made once per
session (the tests check sampling machinery, not what SFT taught).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHORT_SFT = [
    "recipe=shapes",
    "sft.max_steps=4",
    "sft.save_steps=4",
    "sft.per_device_batch_size=4",
    "sft.warmup_steps=1",
    "data.num_examples=12",
    "logging.progress_bar=false",
    "logging.tensorboard=false",
]


@pytest.fixture(scope="session")
def sft_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    given = os.environ.get("COEVOLVE_SFT_CHECKPOINT")
    if given:
        path = Path(given)
        if not (path / "config.json").is_file():
            raise RuntimeError(f"COEVOLVE_SFT_CHECKPOINT={given} is not a checkpoint directory")
        return path
    from coevolve.config import compose_config, to_typed
    from coevolve.sft.run import FINAL, run_sft

    run_dir = tmp_path_factory.mktemp("sft_for_rollout")
    config = to_typed(compose_config([*SHORT_SFT, f"run_dir={run_dir}", f"model.path={tiny_checkpoint}"]))
    run_sft(config, run_dir)
    return run_dir / FINAL


@pytest.fixture(scope="session")
def sft_adapter(sft_checkpoint):
    from coevolve.model.adapter import JanusAdapter

    return JanusAdapter.from_pretrained(sft_checkpoint)


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
