"""Shared fixtures: one tiny checkpoint per test session.

Set COEVOLVE_TINY_CHECKPOINT to an existing `coevolve bootstrap tiny` output to reuse it
across sessions while developing; by default it is built once into pytest's temp dir.
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
