"""Shared fixtures: one tiny checkpoint per test session, and one short SFT of it.

Set COEVOLVE_TINY_CHECKPOINT to an existing `coevolve bootstrap tiny` output to reuse it
across sessions while developing; by default it is built once into pytest's temp dir.
Set COEVOLVE_SFT_CHECKPOINT to an SFT output (`coevolve sft recipe=shapes`'s checkpoints/sft) to
use it; by default a 4-step SFT run of the shapes recipe from the tiny checkpoint is made once per
session (the tests that use it check machinery, not what SFT taught). `short_rl_run` is a 3-step
`coevolve rl recipe=shapes` from that checkpoint at tiny sizes (`short_rl_overrides`), made once
per session for the tests that read what a run writes.
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
    "sft.phases=[]",  # one short phase, not the recipe's two
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


INTRO = "rl.programs.introspective.rollout"
RECON = "rl.programs.reconstruction.rollout"


def short_rl_overrides(run_dir, checkpoint, steps: int = 3) -> list[str]:
    """A `coevolve rl recipe=shapes` of `steps` steps at tiny sizes (a checkpoint every step)."""
    return [
        "recipe=shapes",
        f"run_dir={run_dir}",
        f"rl.checkpoint={checkpoint}",
        f"{INTRO}.num_prompts=2",
        f"{INTRO}.num_generations=2",
        f"{INTRO}.num_workers=1",
        f"{INTRO}.max_plan_tokens=6",
        f"{INTRO}.max_verdict_tokens=4",
        f"{INTRO}.max_reflection_tokens=4",
        f"{RECON}.num_prompts=1",
        f"{RECON}.num_generations=2",
        f"{RECON}.num_workers=1",
        f"{RECON}.max_caption_tokens=6",
        f"rl.stages=[{{name: coevolve, steps: {steps}}}]",
        "rl.save_steps=1",
        "rl.save_total_limit=null",
        "rl.eval_steps=0",
        "rl.learner.num_cpus=1",
        "rl.learner.micro_batch_size=4",
        "rl.learner.optimizer.learning_rate=1e-3",
        "eval.num_prompts_per_category=1",
        "eval.num_heldout_renders=4",
        "eval.num_caption_images=2",
        "logging.tensorboard=false",
    ]


@pytest.fixture(scope="session")
def rl_overrides():
    """`short_rl_overrides`, for tests that vary the short run."""
    return short_rl_overrides


@pytest.fixture(scope="session")
def short_rl_run(sft_checkpoint, tmp_path_factory) -> tuple[Path, dict]:
    """(run directory, summary) of one short RL run; tests copy it before changing anything in it."""
    from coevolve.config import compose_config, to_typed
    from coevolve.rl.run import run_rl

    run_dir = tmp_path_factory.mktemp("rl") / "run"
    summary = run_rl(to_typed(compose_config([*short_rl_overrides(run_dir, sft_checkpoint)])), run_dir)
    return run_dir, summary
