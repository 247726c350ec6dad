"""Shared fixtures: one tiny checkpoint per test session, and one short SFT of it.

Set COEVOLVE_TINY_CHECKPOINT to an existing `coevolve bootstrap tiny` output to reuse it
across sessions while developing; by default it is built once into pytest's temp dir.
Set COEVOLVE_SFT_CHECKPOINT to an SFT output (`coevolve sft recipe=shapes`'s checkpoints/sft) to
use it; by default a 4-step SFT run of the shapes recipe from the tiny checkpoint is made once per
session (the tests that use it check machinery, not what SFT taught).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from coevolve.bootstrap.tiny import MANIFEST, build_tiny_checkpoint

    given = os.environ.get("COEVOLVE_TINY_CHECKPOINT")
    if given:
        path = Path(given)
        if not (path / MANIFEST).is_file():
            raise RuntimeError(f"COEVOLVE_TINY_CHECKPOINT={given} is not a `coevolve bootstrap tiny` output")
        return path
    path = tmp_path_factory.mktemp("checkpoints") / "tiny"
    build_tiny_checkpoint(path, seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from coevolve.model.images import load_janus

    return load_janus(str(tiny_checkpoint))


@pytest.fixture(scope="session")
def tiny_adapter(tiny_checkpoint):
    from coevolve.model.adapter import JanusAdapter

    return JanusAdapter.from_pretrained(tiny_checkpoint)


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
