"""The published recipes (recipes/janus_pro_r1.yaml, t2i_r1.yaml, uae.yaml) on tiny random models in
the real formats: without their paths they fail naming every one; given the paths, and at tiny
sizes on CPU, each runs through the real entry points — janus_pro_r1's SFT, then one RL step per
stage of each recipe — and writes a metrics row with every reward term and a policy that loads.

The models: the session's tiny Janus checkpoint (random trunk; the policy, and the judge VLM) and
the tiny random CLIP (clip_score, UAE's reconstruction embedder), both from tests/conftest.py; the
data: shapes renders as a records file (every field set) and their prompts as a .txt file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from coevolve.cli.main import main
from coevolve.config import compose_config, to_typed
from coevolve.data.records import shapes_records, write_records
from coevolve.traces.store import TraceStore

MANDATORY = {
    "janus_pro_r1": ["model.path", "data.source", "paths.judge", "paths.prompts"],
    "t2i_r1": ["model.path", "paths.prompts", "paths.clip", "paths.judge"],
    "uae": ["model.path", "paths.images", "paths.clip"],
}
TERMS = {  # program -> reward terms each recipe is published with
    "janus_pro_r1": {"introspective": ["image_alignment", "final_alignment", "self_consistency", "format"]},
    "t2i_r1": {"introspective": ["clip_score", "judge"]},
    "uae": {"reconstruction": ["reconstruction"]},
}
TINY_ROLLOUT = {
    "num_prompts": 2,
    "num_generations": 2,
    "num_workers": 1,
    "worker.num_cpus": 1,
    "worker.num_gpus": 0,
    "max_plan_tokens": 6,
    "max_reflection_tokens": 4,
    "max_caption_tokens": 6,
}
TINY = [
    "model.dtype=float32",
    "rl.learner.num_gpus=0",
    "rl.learner.num_cpus=1",
    "eval.num_prompts_per_category=1",
    "eval.num_heldout_renders=4",
    "eval.num_caption_images=2",
    "eval.max_plan_tokens=6",
    "eval.max_verdict_tokens=4",
    "eval.max_reflection_tokens=4",
    "eval.max_caption_tokens=6",
    "logging.tensorboard=false",
    "logging.progress_bar=false",
]
SHORT_SFT = ["sft.max_steps=2", "sft.save_steps=2", "sft.per_device_batch_size=4", "sft.warmup_steps=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A records file of shapes renders (every field set) and its prompts as a .txt file."""
    root = tmp_path_factory.mktemp("published_data")
    records = shapes_records(6, seed=11)
    prompts = root / "prompts.txt"
    prompts.write_text("".join(f"{record.prompt}\n" for record in records))
    return {"records": write_records(records, root / "records"), "prompts": prompts}


@pytest.fixture(scope="module")
def paths(data, tiny_checkpoint, tiny_clip_dir) -> dict[str, list[str]]:
    """Each recipe's mandatory keys set to the tiny models and files."""
    return {
        "janus_pro_r1": [
            f"model.path={tiny_checkpoint}",
            f"data.source={data['records']}",
            f"paths.judge={tiny_checkpoint}",
            f"paths.prompts={data['records']}",
        ],
        "t2i_r1": [
            f"model.path={tiny_checkpoint}",
            f"paths.prompts={data['prompts']}",
            f"paths.clip={tiny_clip_dir}",
            f"paths.judge={tiny_checkpoint}",
        ],
        "uae": [f"model.path={tiny_checkpoint}", f"paths.images={data['records']}", f"paths.clip={tiny_clip_dir}"],
    }


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray cluster for the module's RL runs (each run joins it instead of starting its own):
    3 logical CPUs, a learner, a rollout worker and a reward worker."""
    import ray

    ray.init(num_cpus=3, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray
    ray.shutdown()


def _scorer_overrides(key: str, spec: dict) -> list[str]:
    """CPU and float32 for every scorer (and nested scorer spec) that names a device or dtype."""
    out = [f"{key}.device=cpu"] if "device" in spec else []
    out += [f"{key}.dtype=float32"] if "dtype" in spec else []
    for name, value in spec.items():
        if isinstance(value, dict):
            out += _scorer_overrides(f"{key}.{name}", value)
    return out


def tiny_overrides(recipe: str, given: list[str]) -> list[str]:
    """The recipe at tiny sizes on CPU: one step per stage, small rollouts, every model on CPU in float32."""
    rl = OmegaConf.to_container(compose_config([f"recipe={recipe}", *given]).rl, resolve=False)
    out = [f"rl.stages.{index}.steps=1" for index in range(len(rl["stages"]))]
    for name, program in rl["programs"].items():
        out += [f"rl.programs.{name}.rollout.{key}={value}" for key, value in TINY_ROLLOUT.items()]
        verdict = min(program["rollout"].get("max_verdict_tokens", 4), 4)
        out.append(f"rl.programs.{name}.rollout.max_verdict_tokens={verdict}")
        for term, spec in program["reward"]["terms"].items():
            out += _scorer_overrides(f"rl.programs.{name}.reward.terms.{term}.scorer", spec["scorer"])
    return [*TINY, *out]


def config(recipe: str, run_dir: Path, given: list[str], *extra: str):
    return to_typed(
        compose_config([f"recipe={recipe}", f"run_dir={run_dir}", *given, *tiny_overrides(recipe, given), *extra])
    )


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]


def check_run(recipe: str, run_dir: Path, summary: dict) -> list[dict]:
    """The run wrote one metrics row per stage with every reward term, and each stage's policy loads."""
    from transformers import JanusForConditionalGeneration

    rows = metrics(run_dir)
    stages = summary["stages"]
    assert [row["step"] for row in rows] == list(range(1, len(stages) + 1))
    assert [row["stage"] for row in rows] == stages
    for row in rows:
        for program, terms in TERMS[recipe].items():
            for term in terms:
                assert f"{program}/reward/{term}/mean" in row, (program, term)
        assert "learner/loss" in row
    for stage in stages:
        JanusForConditionalGeneration.from_pretrained(summary["checkpoints"][stage])
    return rows


@pytest.mark.parametrize("recipe", sorted(MANDATORY))
def test_a_recipe_without_its_paths_names_every_missing_key(recipe):
    with pytest.raises(MissingMandatoryValue) as error:
        to_typed(compose_config([f"recipe={recipe}"]))
    assert str(error.value).startswith(f"no value given for {', '.join(MANDATORY[recipe])} ")


def test_the_cli_names_the_missing_keys_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["rl", "recipe=uae", f"run_dir={tmp_path}", "model.path=/models/Janus-Pro-7B"])
    assert exit_info.value.code == 2
    assert "coevolve rl: error: no value given for paths.images, paths.clip" in capsys.readouterr().err
    assert not (tmp_path / "rl").exists()


@pytest.mark.parametrize("recipe", sorted(MANDATORY))
def test_the_recipes_pin_their_published_choices(recipe, paths):
    typed = to_typed(compose_config([f"recipe={recipe}", *paths[recipe]]))
    assert {name: list(program.reward.terms) for name, program in typed.rl.programs.items()} == TERMS[recipe]
    assert all(program.rollout.num_generations == 8 for program in typed.rl.programs.values())
    assert typed.model.dtype == "bfloat16" and typed.rl.learner.image_logprob_mode == "guided"
    loss, optimizer = typed.rl.learner.loss, typed.rl.learner.optimizer
    published = {"janus_pro_r1": (0.04, 0.2, 3e-7), "t2i_r1": (0.01, 0.2, 1e-6), "uae": (0.0, 0.2, 1e-6)}
    assert (loss.beta, loss.epsilon, optimizer.learning_rate) == published[recipe]


@pytest.mark.slow
def test_janus_pro_r1_sft_then_one_rl_step(tmp_path, paths, ray_session):
    from coevolve.rl.run import run_rl
    from coevolve.sft.run import FINAL, run_sft

    run_dir = tmp_path / "run"
    sft = run_sft(config("janus_pro_r1", run_dir, paths["janus_pro_r1"], *SHORT_SFT), run_dir)
    assert sft["global_step"] == 2
    assert (run_dir / FINAL / "config.json").is_file()
    summary = run_rl(config("janus_pro_r1", run_dir, paths["janus_pro_r1"]), run_dir)
    check_run("janus_pro_r1", run_dir, summary)
    trained = {s for row in TraceStore.open(run_dir).table([1]).to_pylist() for s in row["trained_segments"]}
    assert {"plan", "image", "verdict"} <= trained


@pytest.mark.slow
def test_t2i_r1_one_rl_step_sums_clip_score_and_judge_on_plan_and_image(tmp_path, paths, ray_session):
    from coevolve.rl.run import run_rl

    run_dir = tmp_path / "run"
    check_run("t2i_r1", run_dir, run_rl(config("t2i_r1", run_dir, paths["t2i_r1"]), run_dir))
    rows = TraceStore.open(run_dir).table([1]).to_pylist()
    assert all(sorted(row["trained_segments"]) == ["image", "plan"] for row in rows)
    # sum_then_normalize: plan and image, trained by the same terms, share one advantage.
    assert all(row["advantage/plan"] == row["advantage/image"] for row in rows)


@pytest.mark.slow
def test_uae_trains_the_caption_then_the_image_one_step_each(tmp_path, paths, ray_session):
    from coevolve.rl.run import run_rl

    run_dir = tmp_path / "run"
    check_run("uae", run_dir, run_rl(config("uae", run_dir, paths["uae"]), run_dir))
    traces = TraceStore.open(run_dir)
    assert {tuple(row["trained_segments"]) for row in traces.table([1]).to_pylist()} == {("caption",)}
    assert {tuple(row["trained_segments"]) for row in traces.table([2]).to_pylist()} == {("image",)}
