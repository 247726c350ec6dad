"""The config tree: groups, recipes, overrides, and errors named before any work starts."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from hydra.errors import ConfigCompositionException, MissingConfigException

from coevolve.cli.main import main
from coevolve.config import compose_config, to_typed
from coevolve.config.schema import Config


def test_groups_compose_into_the_typed_schema():
    config = to_typed(compose_config(["engine=deepspeed", "sft/lora=default", "sft.max_steps=7"]))
    assert isinstance(config, Config)
    assert config.engine.name == "deepspeed" and config.engine.zero_stage == 2
    assert config.sft.lora is not None and config.sft.lora.r == 16
    assert config.sft.max_steps == 7
    assert config.model.path == "runs/shapes/checkpoints/tiny"  # interpolated from run_dir


def test_recipe_is_applied_over_the_base():
    base = compose_config([])
    recipe = compose_config(["recipe=shapes"])
    assert base.sft.max_steps != recipe.sft.max_steps
    assert recipe.data.num_examples == 3000
    # The command line still wins over the recipe.
    assert compose_config(["recipe=shapes", "sft.max_steps=3"]).sft.max_steps == 3


def test_the_own_image_recipe_is_the_shapes_recipe_with_a_longer_sft_and_the_enumerated_own_check():
    shapes, own = (to_typed(compose_config([f"recipe={name}"])) for name in ("shapes", "shapes_own"))
    own.rl.check()
    assert list(own.rl.programs) == ["introspective", "reconstruction", "own_check"]
    assert {name: own.rl.programs[name] for name in shapes.rl.programs} == shapes.rl.programs
    check = own.rl.programs["own_check"]
    assert check.rollout.source == "program:introspective" and check.rollout.enumerate_answers
    assert check.rollout.trajectories_per_item == 4 and check.reward.terms["self_consistency"].weight == 10.0
    assert [phase.max_steps for phase in own.sft.phases[:2]] == [1200, 750] and own.sft.max_steps == 1500
    assert own.data.num_examples == 8000 and own.run_dir == "runs/shapes_own"
    assert own.rl.learner == shapes.rl.learner and own.rl.stages == shapes.rl.stages


def test_the_uae_recipe_trains_captions_on_a_frozen_decoder_then_images_on_the_policys_redraws():
    from rewards import CaptionReconstruction, Reconstruction, RewardTerms

    rl = to_typed(compose_config(["recipe=shapes_uae"])).rl
    rl.check()
    captioning, reconstruction = rl.programs["captioning"], rl.programs["reconstruction"]
    assert not captioning.rollout.redraw and reconstruction.rollout.redraw
    trained = {
        name: {term.name: (type(term.scorer), term.segments) for term in RewardTerms.from_config(program.reward).terms}
        for name, program in rl.programs.items()
    }
    assert trained == {
        "captioning": {"caption_reconstruction": (CaptionReconstruction, ("caption",))},
        "reconstruction": {"reconstruction": (Reconstruction, ("image",))},
    }
    assert [(stage.name, stage.programs, stage.segments) for stage in rl.stages] == [
        ("generation_for_understanding", ["captioning"], ["caption"]),
        ("understanding_for_generation", ["reconstruction"], ["image"]),
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rl.stages=[{name: a, steps: 1, programs: [captions]}]",
         r"rl.stages\[0\] \(a\).programs: \['captions'\]; name programs of rl.programs \(\['captioning', 'reconstruction'\]\)"),
        ("rl.stages=[{name: a, steps: 1, programs: [captioning], segments: [image]}]",
         r"rl.stages\[0\] \(a\).segments: no reward term of its programs trains 'image' \(trained: \['caption'\]\)"),
        ("rl.programs.captioning.reward.terms.caption_reconstruction.segments=[caption,image]",
         (r"rl.programs.captioning.reward.terms.caption_reconstruction.segments: the reconstruction program writes "
          r"no segment 'image' \(it writes \['caption'\]\)")),
        ("rl.programs.captioning.rollout.program=introspective_t2i",
         r"rollout.redraw=false applies to the reconstruction program only"),
    ],
)  # fmt: skip
def test_stage_programs_and_a_caption_only_program_are_checked(override, message):
    with pytest.raises(Exception, match=message):
        rl = to_typed(compose_config(["recipe=shapes_uae", override])).rl
        rl.__post_init__()
        rl.check()


def test_misspelt_key_wrong_type_and_unknown_recipe_are_named():
    with pytest.raises(ConfigCompositionException, match="sft.max_stepz"):
        compose_config(["sft.max_stepz=3"])
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["sft.max_steps=many"])
    assert "sft.max_steps" in str(error.value.__cause__)
    with pytest.raises(MissingConfigException, match="recipe/nope"):
        compose_config(["recipe=nope"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([f"sft.tasks.{t}=0" for t in ("t2i", "judge", "regen", "caption", "draw_caption")], "sum to a positive"),
        (["sft.tasks.judge=-1"], "sft.tasks.judge"),
        (["engine.zero_stage=2"], "engine.zero_stage"),
        (["engine=deepspeed", "engine.zero_stage=5"], "engine.zero_stage"),
        (["sft.prompt_dropout=1.5"], "sft.prompt_dropout"),
        (["model.dtype=float8"], "model.dtype"),
    ],
)
def test_bad_values_fail_the_typed_check(overrides, message):
    with pytest.raises(ValueError, match=message):
        to_typed(compose_config(overrides))


def test_cli_reports_bad_config_before_work(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "sft",
                f"run_dir={run_dir}",
                "sft.tasks.t2i=0",
                "sft.tasks.judge=0",
                "sft.tasks.regen=0",
                "sft.tasks.caption=0",
                "sft.tasks.draw_caption=0",
            ]
        )
    assert exit_.value.code == 2
    assert "sum to a positive number" in capsys.readouterr().err
    assert not (run_dir / "sft").exists()  # nothing was started
    with pytest.raises(SystemExit) as exit_:
        main(["sft", f"run_dir={run_dir}", "recipe=nope"])
    assert exit_.value.code != 0


def test_cfg_job_prints_the_resolved_config(tmp_path, capsys):
    main(["sft", "recipe=shapes", f"run_dir={tmp_path}", "--cfg", "job", "--resolve"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["path"] == f"{tmp_path}/checkpoints/tiny"
    assert printed["sft"]["max_steps"] == 600
    assert [phase["name"] for phase in printed["sft"]["phases"]] == ["bind", "read", "mix"]


def test_a_self_check_program_trains_its_description_and_verdict_only():
    from coevolve.rl.config import ProgramConfig, RLConfig, StageConfig
    from coevolve.rollout.config import RolloutConfig
    from rewards.config import RewardConfig, TermConfig

    def rl(segments):
        scorer = {"name": "self_consistency", "self_source": "verdict",
                  "judge": {"name": "shapes_verifier", "segment": "source"}}  # fmt: skip
        program = ProgramConfig(RolloutConfig(program="self_check", max_verdict_tokens=8),
                                RewardConfig(terms={"agree": TermConfig(scorer=scorer, segments=segments)}))  # fmt: skip
        return RLConfig(programs={"judging": program}, stages=[StageConfig(name="a", steps=1)])

    config = rl(["description", "verdict"])
    # It draws no image: no guidance among its settings.
    assert config.programs["judging"].rollout.program_kwargs("") == {
        "num_generations": 4, "sampling": config.programs["judging"].rollout.sampling, "max_verdict_tokens": 8,
        "max_caption_tokens": 32, "answer_only": False, "enumerate_answers": False,
    }  # fmt: skip
    with pytest.raises(ValueError, match=(r"rl.programs.judging.reward.terms.agree.segments: the self_check program "
                                          r"writes no segment 'image' \(it writes \['description', 'verdict'\]\)")):  # fmt: skip
        rl(["image", "verdict"])
    with pytest.raises(ValueError, match=r"rollout.answer_only=true applies to the self_check program only, not "
                                         r"'introspective_t2i'"):  # fmt: skip
        RolloutConfig(answer_only=True)
    with pytest.raises(ValueError, match=r"rollout.enumerate_answers=true needs rollout.answer_only=true"):
        RolloutConfig(program="self_check", enumerate_answers=True)


def test_enumerated_answers_need_the_importance_sampling_correction_unbounded_below_one():
    """`enumerate_answers` weighs each answer by its probability through the learner's IS
    correction: a loss without it, or bounds that move a weight in [0, 1], is refused by key."""
    from coevolve.learner.losses import LossConfig
    from coevolve.rl.config import LearnerConfig, ProgramConfig, RLConfig, StageConfig
    from coevolve.rollout.config import RolloutConfig
    from rewards.config import RewardConfig, TermConfig

    def rl(**loss):
        scorer = {"name": "self_consistency", "self_source": "answer",
                  "judge": {"name": "shapes_verifier", "segment": "source"}}  # fmt: skip
        rollout = RolloutConfig(program="self_check", answer_only=True, enumerate_answers=True)
        program = ProgramConfig(rollout, RewardConfig(terms={"agree": TermConfig(scorer=scorer, segments=["verdict"])}))
        return RLConfig(programs={"judging": program}, stages=[StageConfig(name="a", steps=1)],
                        learner=LearnerConfig(loss=LossConfig(**loss)))  # fmt: skip

    assert rl().programs["judging"].rollout.program_kwargs("")["enumerate_answers"] is True
    where = r"rl.programs.judging.rollout.enumerate_answers=true needs rl.learner.loss.importance_sampling"
    bad = [
        ({"importance_sampling_correction": False}, where + "_correction=true"),
        ({"importance_sampling_clip_min": 0.1}, where + "_clip_min=null: .* 0.1 would raise below it"),
        ({"importance_sampling_clip_min": 0.1, "importance_sampling_mode": "token_mask"}, "0.1 would zero below it"),
        ({"importance_sampling_clip_max": 0.9}, where + r"_clip_max >= 1 \(or null\): .* got 0.9"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            rl(**kwargs)


def test_a_self_check_of_another_programs_images_names_a_program_drawn_before_it_in_every_stage():
    from coevolve.rl.config import ProgramConfig, RLConfig, StageConfig
    from coevolve.rollout.config import RolloutConfig
    from rewards.config import RewardConfig, TermConfig

    def term(segment):
        scorer = {
            "name": "self_consistency",
            "self_source": "answer",
            "judge": {"name": "shapes_verifier", "segment": "source"},
        }
        return RewardConfig(terms={"t": TermConfig(scorer=scorer, segments=[segment])})

    def rl(
        source="program:drawing",
        judging="self_check",
        drawing="introspective_t2i",
        num_prompts=8,
        order=("drawing", "judging"),
        stage_programs=None,
    ):
        segment = {"introspective_t2i": "plan", "reconstruction": "caption", "self_check": "verdict"}
        programs = {
            "drawing": ProgramConfig(
                RolloutConfig(program=drawing, num_prompts=2, num_generations=4), term(segment[drawing])
            ),
            "judging": ProgramConfig(
                RolloutConfig(program=judging, source=source, num_prompts=num_prompts), term(segment[judging])
            ),
        }
        stages = [StageConfig(name="a", steps=1, programs=stage_programs)]
        config = RLConfig(programs={name: programs[name] for name in order}, stages=stages)
        config.check()
        return config

    rl()  # 2 prompts x 4 first images a step: 8 to judge
    source = r"rl.programs.judging.rollout.source \(program:\w+\): "
    listed_before = source + r"name a program listed before 'judging' under rl.programs"
    bad = [
        ({"order": ("judging", "drawing")}, listed_before + r" \(listed: \['judging', 'drawing'\]\)"),
        ({"source": "program:drawn"}, listed_before),
        ({"source": "program:judging"}, listed_before),
        ({"drawing": "reconstruction"}, source + "'drawing' is a reconstruction program; its first images come from"),
        ({"judging": "reconstruction"}, source + "another program's images are judged by the self_check program only"),
        ({"stage_programs": ["judging"]}, r"rl.stages\[0\] \(a\).programs: samples 'judging' but not 'drawing'"),
        ({"num_prompts": 9}, r"judging.rollout.num_prompts=9: 'drawing' draws 8 first images a step \(2 prompts x 4\)"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            rl(**kwargs)


def test_an_sft_phase_may_reweigh_some_segments_and_keeps_the_rest():
    phases = "sft.phases=[{name: a, max_steps: 1}, {name: b, max_steps: 1, loss_weights: {verdict_answer: 20.0}}]"
    config = to_typed(compose_config(["recipe=shapes", phases]))
    (_, a), (_, b) = config.sft.phase_configs()
    assert a.loss_weights == config.sft.loss_weights and config.sft.loss_weights.image == 5.0  # the recipe's
    assert b.loss_weights == dataclasses.replace(config.sft.loss_weights, verdict_answer=20.0)
    with pytest.raises(Exception, match=r"sft.phases\[0\] \(a\): loss_weights: unknown segment weights \['answer'\]"):
        to_typed(compose_config(["recipe=shapes", "sft.phases=[{name: a, loss_weights: {answer: 2.0}}]"]))
