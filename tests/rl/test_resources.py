"""GPU placement in config (no GPU needed): fractional `num_gpus` for the learner, rollout and reward
workers, colocation on one GPU, the weight-sync choice and its backend, and the impossible values
refused before any actor starts."""

from __future__ import annotations

import pytest

from coevolve.config import compose_config, to_typed
from coevolve.rl.config import WEIGHT_SYNCS
from coevolve.rl.run import run_demand
from coevolve.rl.weight_sync import WEIGHT_SYNC
from coevolve.rollout import cluster
from coevolve.rollout.cluster import Demand, check_resources
from coevolve.rollout.workers import reward_resources
from rewards.config import RewardConfig, TermConfig

INTRO = "rl.programs.introspective"
ONE_PROGRAM = ["recipe=shapes", "~rl.programs.reconstruction", f"{INTRO}.rollout.num_workers=1"]
COLOCATED = [
    *ONE_PROGRAM,
    "rl.learner.num_gpus=0.5",
    f"{INTRO}.rollout.worker.num_gpus=0.25",
    f"{INTRO}.reward.num_gpus=0.25",
]


def typed(overrides):
    return to_typed(compose_config(overrides))


def test_learner_rollout_and_reward_share_one_gpu_in_fractions(monkeypatch):
    rl = typed(COLOCATED).rl
    assert (rl.learner.num_gpus, rl.programs["introspective"].rollout.worker.num_gpus) == (0.5, 0.25)
    assert reward_resources(rl.programs["introspective"].reward)[1] == 0.25
    need = run_demand(rl)
    assert need.num_gpus == 1.0
    monkeypatch.setattr(cluster.ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    check_resources(need)  # fits one GPU
    with pytest.raises(ValueError, match=r"the actors reserve 1.25 GPUs but the Ray cluster has 1"):
        check_resources(Demand(need.num_cpus, need.num_gpus + 0.25))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rl.learner.num_gpus=2"], r"rl.learner.num_gpus must be at most 1"),
        (["rl.learner.num_gpus=-0.5"], r"rl.learner needs num_cpus > 0 and num_gpus >= 0"),
        ([f"{INTRO}.rollout.worker.num_gpus=1.5"], r"rollout.worker.num_gpus must be at most 1"),
        ([f"{INTRO}.reward.num_gpus=2"], r"reward.num_gpus must be in \[0, 1\]"),
        (["rl.weight_sync=nccl"], r"rl.weight_sync must be one of \('object_store', 'collective'\)"),
        (["rl.weight_sync_bucket_mb=0"], r"rl.weight_sync_bucket_mb must be > 0"),
    ],
)
def test_impossible_values_are_refused_at_composition(overrides, message):
    with pytest.raises(ValueError, match=message):
        typed([*ONE_PROGRAM, *overrides])


def test_a_cuda_scorer_with_no_gpu_share_is_refused():
    term = TermConfig(scorer={"name": "clip_score", "model_path": "/clip", "device": "cuda"}, segments=["image"])
    assert reward_resources(RewardConfig(terms={"clip": term}))[1] == 1.0
    assert reward_resources(RewardConfig(terms={"clip": term}, num_gpus=0.25))[1] == 0.25
    with pytest.raises(ValueError, match=r"reward.num_gpus is 0 but the scorers of \['clip'\] run on cuda"):
        reward_resources(RewardConfig(terms={"clip": term}, num_gpus=0))


def test_the_collective_backend_follows_the_actors_devices():
    assert set(WEIGHT_SYNC) == set(WEIGHT_SYNCS)
    assert typed([*ONE_PROGRAM, "rl.weight_sync=collective"]).rl.weight_sync_backend() == "gloo"
    assert typed([*COLOCATED, "rl.weight_sync=collective"]).rl.weight_sync_backend() == "nccl"
    mixed = typed([*ONE_PROGRAM, "rl.weight_sync=collective", "rl.learner.num_gpus=1"]).rl
    with pytest.raises(
        ValueError, match=r"rl.weight_sync=collective needs the learner and every rollout worker on GPUs"
    ):
        mixed.check()
    both = typed(["recipe=shapes", "rl.weight_sync=collective", "rl.learner.num_gpus=1",
                  f"{INTRO}.rollout.worker.num_gpus=1"]).rl  # fmt: skip
    with pytest.raises(ValueError, match=r"\['rl.programs.reconstruction.rollout.worker.num_gpus'\] = 0"):
        both.check()
