"""`coevolve rl` end to end on Ray actors (tiny sizes): what a run writes, exact resume, and the
bad inputs refused before any rollout."""

from __future__ import annotations

import json
import shutil

import pytest
import ray
import torch
from safetensors.torch import load_file

from coevolve.config import compose_config, to_typed
from coevolve.rl.run import run_rl
from coevolve.traces.store import TraceStore

INTRO = "rl.programs.introspective.rollout"


@pytest.fixture(scope="module")
def config(rl_overrides):
    def make(run_dir, checkpoint, extra=()):
        return to_typed(compose_config([*rl_overrides(run_dir, checkpoint), *extra]))

    return make


def weights(path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(f).items()}


def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(short_rl_run):
    return short_rl_run


def test_a_run_trains_both_programs_and_writes_metrics_traces_checkpoints(finished, sft_checkpoint):
    run_dir, summary = finished
    metrics = rows(run_dir)
    assert [row["step"] for row in metrics] == [1, 2, 3]
    first = metrics[0]
    for key in (
        "introspective/reward/image_alignment/mean",
        "introspective/reward/self_consistency/mean",
        "reconstruction/reward/reconstruction/mean",
        "introspective/advantage/plan/std",
        "learner/loss",
        "learner/clip_ratio/region_mean",
        "learner/entropy/text",
        "learner/entropy/image",
        "learner/sampling/importance_sampling_ratio/mean",
        "policy/version_lag/max",
        "timing/learner_s",
        "timing/introspective/rollout_s",
    ):
        assert key in first, key
    assert first["policy/version_lag/max"] == 0  # synchronous: every step samples the newest weights
    assert first["learner/sampling/importance_sampling_ratio/mean"] == pytest.approx(1.0, abs=1e-3)
    assert "eval/image_accuracy" in metrics[-1]  # the stage's end is evaluated
    traces = TraceStore.open(run_dir)
    assert traces.root == run_dir / "rl" / "traces" and traces.steps() == [1, 2, 3]
    step_rows = traces.table([2]).to_pylist()
    assert len(step_rows) == 2 * 2 + 1 * 2
    trace = step_rows[0]
    assert trace["policy_version"] == 1 and trace["advantage/plan"] is not None and trace["trained_segments"]
    assert sorted(p.name for p in (run_dir / "rl").glob("checkpoint-*")) == [f"checkpoint-{i}" for i in (1, 2, 3)]
    final = run_dir / "checkpoints" / "rl" / "coevolve"
    assert summary["checkpoints"]["coevolve"] == str(final)
    trained, start = weights(final), weights(sft_checkpoint)
    assert trained.keys() == start.keys()
    assert any(not torch.equal(trained[k], start[k]) for k in trained)
    from transformers import JanusForConditionalGeneration

    JanusForConditionalGeneration.from_pretrained(final)  # plain transformers loads it


def test_a_run_stopped_after_step_2_resumes_to_the_same_weights_and_metrics(finished, sft_checkpoint, tmp_path, config):
    run_dir, _ = finished
    stopped = tmp_path / "run"
    shutil.copytree(run_dir, stopped)
    # What a run killed during step 3 leaves: checkpoint-2, the metrics row of step 3, no final policy.
    shutil.rmtree(stopped / "rl" / "checkpoint-3")
    shutil.rmtree(stopped / "checkpoints" / "rl")
    (stopped / "rl" / "summary.json").unlink()
    summary = run_rl(config(stopped, sft_checkpoint), stopped)
    assert summary["resumed_from"] == 2
    again, first = rows(stopped), rows(run_dir)
    assert [row["step"] for row in again] == [1, 2, 3]

    def untimed(row):
        return {k: v for k, v in row.items() if not k.startswith("timing/")}

    assert untimed(again[2]) == untimed(first[2])
    resumed, straight = weights(stopped / "checkpoints" / "rl" / "coevolve"), weights(run_dir / "checkpoints" / "rl" / "coevolve")
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    # The shard of step 3 the stopped run left is replaced, not added to: the same trajectories.
    traces = TraceStore.open(stopped)
    assert traces.steps() == [1, 2, 3] and traces.manifest["steps"]["3"]["rows"] == 6

    def same(row):
        return {k: v for k, v in row.items() if k != "run" and not k.startswith("seconds/")}

    straight_rows = TraceStore.open(run_dir).table([3]).to_pylist()
    assert [same(row) for row in traces.table([3]).to_pylist()] == [same(row) for row in straight_rows]


def test_a_self_check_program_judges_the_first_images_the_introspective_program_drew_that_step(
    tmp_path, sft_checkpoint, config
):
    from PIL import Image, ImageChops

    from coevolve.rl.config import ProgramConfig
    from coevolve.rollout.config import RolloutConfig
    from rewards.config import RewardConfig, TermConfig

    run_dir = tmp_path / "run"
    one_program = ["rl.stages=[{name: coevolve, steps: 2}]", "~rl.programs.reconstruction"]
    typed = config(run_dir, sft_checkpoint, extra=one_program)
    scorer = {"name": "self_consistency", "self_source": "answer", "balance_classes": "group",
              "judge": {"name": "shapes_verifier", "segment": "source"}}  # fmt: skip
    typed.rl.programs["own_check"] = ProgramConfig(
        RolloutConfig(program="self_check", source="program:introspective", answer_only=True, num_prompts=4,
                      num_generations=2, num_workers=1, max_caption_tokens=6),
        RewardConfig(terms={"agree": TermConfig(scorer=scorer, segments=["verdict"], scale_rewards="none")}),
    )  # fmt: skip
    run_rl(typed, run_dir)
    traces = TraceStore.open(run_dir / "rl" / "traces")
    for step in (1, 2):
        rows_of = {}
        for row in traces.table([step]).to_pylist():
            rows_of.setdefault(row["program"], []).append(row)
        drawn, checks = rows_of["introspective_t2i"], rows_of["self_check"]
        # 2 prompts x 2 first images, each judged twice; one group per prompt, as the images'
        assert len(drawn) == 4 and len(checks) == 8
        assert [row["group"] for row in checks] == [row["group"] for row in drawn for _ in range(2)]
        for i, row in enumerate(checks):
            assert row["id"] == f"own_check-{step - 1}-{i // 2}/{i % 2}" and row["verdict"] in (" Yes", " No")
            judged = Image.open(traces.root / row["source_image_path"]).convert("RGB")
            drew = Image.open(traces.root / drawn[i // 2]["image_path"]).convert("RGB")
            assert ImageChops.difference(judged, drew).getbbox() is None  # the same pixels
            assert row["trained_segments"] == ["verdict"] and row["prompt"] == drawn[i // 2]["prompt"]
    assert all("own_check/reward/agree/mean" in row for row in rows(run_dir))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([f"{INTRO}.num_generations=1"], r"rl.programs.introspective.rollout.num_generations must be >= 2"),
        (["rl.programs.introspective.reward.terms.image_alignment.segments=[plan,caption]"],
         r"image_alignment.segments: the introspective_t2i program writes no segment 'caption'"),
        (["rl.programs.introspective.reward.terms.image_alignment.segments=[plan,sketch]"], r"unknown segment 'sketch'"),
    ],
)  # fmt: skip
def test_bad_config_fails_at_composition(tmp_path, sft_checkpoint, extra, message, config):
    with pytest.raises(Exception, match=message):
        config(tmp_path, sft_checkpoint, extra=extra)


def test_an_unknown_scorer_or_a_checkpoint_that_is_not_janus_fails_before_ray_starts(tmp_path, sft_checkpoint, config):
    bad_scorer = config(tmp_path, sft_checkpoint, extra=["rl.programs.introspective.reward.terms.image_alignment.scorer={name: shapes_verifyer}"])
    with pytest.raises(ValueError, match=r"rl.programs.introspective.reward.terms.image_alignment.scorer.*shapes_verifyer"):
        run_rl(bad_scorer, tmp_path)
    assert not ray.is_initialized()
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match=r"rl.checkpoint: .*llama is a 'llama' checkpoint, not a Janus one"):
        run_rl(config(tmp_path, llama), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"rl.checkpoint: .*empty is not a Hugging Face checkpoint"):
        run_rl(config(tmp_path, tmp_path / "empty"), tmp_path)
    assert not ray.is_initialized() and not (tmp_path / "rl").exists()


def test_the_cli_names_the_culprit(tmp_path, sft_checkpoint, capsys, rl_overrides):
    from coevolve.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["rl", *rl_overrides(tmp_path, tmp_path / "nowhere"), "hydra.output_subdir=null"])
    assert exit_info.value.code == 2
    assert "rl.checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_a_bfloat16_run_with_collective_weight_sync_broadcasts_every_update(tmp_path, tiny_checkpoint, config):
    run_dir = tmp_path / "run"
    extra = ["rl.stages=[{name: coevolve, steps: 2}]", "rl.weight_sync=collective", "model.dtype=bfloat16"]
    typed = config(run_dir, tiny_checkpoint, extra=extra)
    assert typed.rl.weight_sync_backend() == "gloo"
    summary = run_rl(typed, run_dir)
    sync = summary["weight_sync"]
    assert sync["path"] == "collective" and sync["groups_formed"] == 1 and sync["broadcasts"] == 2
    assert sync["object_store_fallbacks"] == 0 and sync["bytes_per_broadcast"] > 0
    metrics = rows(run_dir)
    assert [row["step"] for row in metrics] == [1, 2] and all(row["timing/weight_sync_s"] > 0 for row in metrics)
    assert all(row["learner/sampling/importance_sampling_ratio/mean"] == pytest.approx(1.0, abs=1e-2) for row in metrics)
    # Step 2 was sampled by every rollout worker (both programs) under the weights broadcast after step 1.
    assert {row["policy_version"] for row in TraceStore.open(run_dir).table([2]).to_pylist()} == {1}
    policy = weights(run_dir / "checkpoints" / "rl" / "coevolve")
    assert {value.dtype for value in policy.values() if value.is_floating_point()} == {torch.bfloat16}
