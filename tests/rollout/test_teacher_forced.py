"""Teacher-forced views of trajectories: scored with the program's guidance and sampling, the
rebuilt contexts give back, token for token, the log-probs every drawn token was sampled under."""

from __future__ import annotations

import pytest
import torch

from coevolve.model.guidance import Guidance
from coevolve.model.sampling import Sampling
from coevolve.model.segments import GenImage, Text
from coevolve.rollout.items import shapes_items
from coevolve.rollout.programs import (
    IntrospectiveT2I,
    Reconstruction,
    SelfCheck,
    TeacherForced,
    teacher_forced,
)
from coevolve.trajectory import Segment, Trajectory

SMALL = {"max_plan_tokens": 8, "max_verdict_tokens": 6, "max_reflection_tokens": 6}
SAMPLINGS = [Sampling(), Sampling(temperature=0.7, top_k=20)]


def _recomputed_gap(adapter, program, trajectories) -> float:
    """Max |recomputed - recorded| log-prob over every masked token of every segment; checks that
    every segment is placed once, on a scored model segment holding its ids."""
    views = [(t, view) for t in trajectories for view in program.teacher_forced(t)]
    with torch.no_grad():
        scores = adapter.logprobs(
            [view.sequence for _, view in views], mode="guided", guidance=program.guidance, sampling=program.sampling
        )
    placed, gap = [], 0.0
    for (t, view), logprobs in zip(views, scores.logprobs):
        for name, index in view.segments.items():
            segment, piece = t.segment(name), view.sequence[index]
            assert piece.scored and type(piece) is (Text if segment.kind == "text" else GenImage)
            assert torch.equal(piece.ids if isinstance(piece, Text) else piece.codes, segment.ids)
            lp = logprobs[index]
            assert lp.shape == segment.ids.shape
            gap = max(gap, float((lp[segment.mask] - segment.logprobs[segment.mask]).abs().max()))
            placed.append((t.id, name))
    assert sorted(placed) == sorted((t.id, s.name) for t in trajectories for s in t.segments)
    return gap


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=["t1", "t0.7-k20"])
def test_introspective_views_give_back_every_sampled_logprob(tiny_adapter, sampling):
    program = IntrospectiveT2I(tiny_adapter, seed=4, num_generations=2, guidance=Guidance(3.0), sampling=sampling,
                               regenerate="always", max_rounds=3, **SMALL)  # fmt: skip
    trajectories = program(shapes_items("introspective_t2i", 2, seed=7))
    names = ["plan", "image", "description", "verdict", "reflection", "regen_image", "regen_description",
             "regen_verdict", "reflection_2", "regen_image_2"]  # fmt: skip
    assert all([s.name for s in t.segments] == names for t in trajectories)
    views = program.teacher_forced(trajectories[0])
    assert [sorted(v.segments) for v in views] == [
        sorted(["plan", "image", "reflection", "regen_image", "reflection_2", "regen_image_2"]),
        ["description", "verdict"],
        ["regen_description", "regen_verdict"],
    ]
    # The verdicts' first tokens are scored among the judge's Yes/No, after the description.
    for view in views[1:]:
        description, verdict = sorted(view.segments.values())
        assert len(view.sequence[verdict].choices) == 2 and not view.sequence[description].choices
    gap = _recomputed_gap(tiny_adapter, program, trajectories)
    print(f"max |recomputed - sampled| log-prob ({sampling}): {gap:.2e}")
    assert gap <= 1e-4


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=["t1", "t0.7-k20"])
def test_reconstruction_views_give_back_every_sampled_logprob(tiny_adapter, sampling):
    program = Reconstruction(tiny_adapter, seed=2, num_generations=2, guidance=Guidance(3.0), sampling=sampling,
                             max_caption_tokens=12)  # fmt: skip
    trajectories = program(shapes_items("reconstruction", 2, seed=7))
    gap = _recomputed_gap(tiny_adapter, program, trajectories)
    print(f"max |recomputed - sampled| log-prob ({sampling}): {gap:.2e}")
    assert gap <= 1e-4


def test_a_context_off_by_one_piece_is_visible(tiny_adapter):
    """The check has teeth: dropping the previous verdict from the image turn moves the reflection's log-probs."""
    program = IntrospectiveT2I(tiny_adapter, seed=4, guidance=Guidance(3.0), regenerate="always", max_rounds=2, **SMALL)
    (t,) = program(shapes_items("introspective_t2i", 1, seed=7))
    turn = program.teacher_forced(t)[0]
    reflection = turn.segments["reflection"]
    assert isinstance(turn.sequence[reflection - 1], Text) and not turn.sequence[reflection - 1].scored
    without = TeacherForced(turn.sequence[: reflection - 1] + turn.sequence[reflection:], {})
    with torch.no_grad():
        good, bad = tiny_adapter.logprobs([turn.sequence, without.sequence], guidance=program.guidance).logprobs
    recorded = t.segment("reflection").logprobs
    assert (good[reflection] - recorded).abs().max() <= 1e-4
    assert (bad[reflection - 1] - recorded).abs().max() > 1e-3


def test_the_module_helper_needs_no_program_settings(tiny_adapter):
    program = Reconstruction(tiny_adapter, seed=0, guidance=Guidance(3.0), max_caption_tokens=6)
    (t,) = program(shapes_items("reconstruction", 1, seed=7))
    ours, theirs = program.teacher_forced(t), teacher_forced(tiny_adapter, t)
    assert [v.segments for v in ours] == [v.segments for v in theirs]
    assert [list(v.segments) for v in ours] == [["caption"], ["image"]]
    for a, b in zip(ours, theirs):
        assert [type(x) for x in a.sequence] == [type(y) for y in b.sequence]
    # The image turn is the one the program drew in: the caption's text in `image_prompt`.
    drawing = tiny_adapter.image_prompt(t.text("caption"))
    assert all(torch.equal(x.ids, y.ids) for x, y in zip(ours[1].sequence[:-1], drawing))
    assert ours[1].sequence[-1].codes.equal(t.segment("image").ids)


def _trajectory(program: str, segments, **kw) -> Trajectory:
    return Trajectory(id="p0003/1", group="p0003", prompt="a red circle", program=program, segments=segments, **kw)


def test_bad_trajectories_are_named(tiny_adapter):
    image = tiny_adapter.decode(torch.zeros(1, tiny_adapter.spec.num_image_tokens, dtype=torch.long))[0]
    plan = Segment("plan", "text", text="Plan: x.")
    no_ids = _trajectory("introspective_t2i", [plan, Segment("image", "image", image=image)])
    with pytest.raises(ValueError, match=r"trajectory 'p0003/1': segment 'plan' has no ids"):
        teacher_forced(tiny_adapter, no_ids)
    written = r"trajectory 'p0003/1' was written by program 'introspective_t2i', not 'reconstruction'"
    with pytest.raises(ValueError, match=written):
        Reconstruction.views(tiny_adapter, no_ids)
    with pytest.raises(ValueError, match=r"trajectory 'p0003/1': unknown program 'mine'"):
        teacher_forced(tiny_adapter, _trajectory("mine", []))
    caption = Segment("caption", "text", ids=torch.tensor([5, 6]), text="x")
    # A caption alone is a trajectory of `rollout.redraw: false`: its one view needs the source.
    with pytest.raises(ValueError, match=r"trajectory 'p0003/1' has no source_image: segment 'caption''s context"):
        teacher_forced(tiny_adapter, _trajectory("reconstruction", [caption]))
    (view,) = teacher_forced(tiny_adapter, _trajectory("reconstruction", [caption], source_image=image))
    assert list(view.segments) == ["caption"]
    zeros = torch.zeros(tiny_adapter.spec.num_image_tokens, dtype=torch.long)
    codes = Segment("image", "image", ids=zeros, image=image)
    with pytest.raises(ValueError, match=r"trajectory 'p0003/1' has no source_image"):
        teacher_forced(tiny_adapter, _trajectory("reconstruction", [caption, codes]))
    extra = Segment("mine", "text", ids=torch.tensor([5]), text="x")
    with pytest.raises(ValueError, match=r"segment 'mine' is not one this program writes"):
        teacher_forced(tiny_adapter, _trajectory("reconstruction", [caption, codes, extra], source_image=image))


def test_trajectories_of_different_rounds_score_together(tiny_adapter):
    """One, two and three images per trajectory, scored in one batch (rows shared); the views need
    nothing of the program's settings, so any instance rebuilds any trajectory of its program."""
    trajectories = []
    for max_rounds in (1, 2, 3):
        program = IntrospectiveT2I(tiny_adapter, seed=max_rounds, guidance=Guidance(3.0), regenerate="always",
                                   max_rounds=max_rounds, **SMALL)  # fmt: skip
        trajectories += program(shapes_items("introspective_t2i", 2, seed=7))
    assert [t.info["rounds"] for t in trajectories] == [1, 1, 2, 2, 3, 3]
    assert [s.name for s in trajectories[2].segments] == ["plan", "image", "description", "verdict", "reflection", "regen_image"]
    assert _recomputed_gap(tiny_adapter, program, trajectories) <= 1e-4


def test_reconstruction_without_redraw_writes_the_same_captions_and_only_them(tiny_adapter):
    """redraw=False: the captions (ids and log-probs) of the redrawing program, no image, one view."""
    items_ = shapes_items("reconstruction", 2, seed=7)
    kwargs = {"seed": 2, "num_generations": 2, "guidance": Guidance(3.0), "max_caption_tokens": 12}
    full = Reconstruction(tiny_adapter, **kwargs)(items_)
    captions = Reconstruction(tiny_adapter, redraw=False, **kwargs)
    only = captions(items_)
    assert [[s.name for s in t.segments] for t in only] == [["caption"]] * 4
    for a, b in zip(full, only):
        assert torch.equal(a.segment("caption").ids, b.segment("caption").ids)
        assert torch.equal(a.segment("caption").logprobs, b.segment("caption").logprobs)
    assert set(captions.timings) == {"caption"}
    assert [list(v.segments) for v in captions.teacher_forced(only[0])] == [["caption"]]
    assert _recomputed_gap(tiny_adapter, captions, only) <= 1e-4


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=["t1", "t0.7-k20"])
def test_self_check_views_give_back_every_sampled_logprob(tiny_adapter, sampling):
    program = SelfCheck(tiny_adapter, seed=3, num_generations=2, sampling=sampling, max_verdict_tokens=6,
                        max_caption_tokens=8)  # fmt: skip
    trajectories = program(shapes_items("self_check", 2, seed=7))
    (view,) = program.teacher_forced(trajectories[0])
    description, verdict = view.segments["description"], view.segments["verdict"]
    assert description < verdict and len(view.sequence[verdict].choices) == 2
    gap = _recomputed_gap(tiny_adapter, program, trajectories)
    print(f"max |recomputed - sampled| log-prob ({sampling}): {gap:.2e}")
    assert gap <= 1e-4
    answers = SelfCheck(tiny_adapter, seed=3, num_generations=2, sampling=sampling, max_caption_tokens=8,
                        answer_only=True)(shapes_items("self_check", 2, seed=7))  # fmt: skip
    assert all(len(t.segment("verdict").ids) == 1 for t in answers)
    assert _recomputed_gap(tiny_adapter, program, answers) <= 1e-4
    lost = trajectories[0]
    lost.source_image = None
    with pytest.raises(ValueError, match=r"self_check: trajectory 'p0000/0' has no source_image: the image it judged"):
        teacher_forced(tiny_adapter, lost)


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=["t1", "t0.7-k20"])
def test_enumerated_answers_follow_each_drawn_description_with_probability_one(tiny_adapter, sampling):
    """`enumerate_answers`: after each description the answer-only self-check draws, both answers,
    in two trajectories taken with probability 1 (recorded log-prob 0). The trainer's log-probs of
    each pair are the Yes/No distribution under the sampling: they sum to 1 (at t = 1, P(yes) as
    the rollout records it), which the IS correction then weighs each answer by."""
    sources = shapes_items("self_check", 2, seed=7)
    kwargs = {"seed": 3, "num_generations": 2, "sampling": sampling, "max_caption_tokens": 8, "answer_only": True}
    drawn = SelfCheck(tiny_adapter, **kwargs)(sources)
    program = SelfCheck(tiny_adapter, enumerate_answers=True, **kwargs)
    both = program(sources, policy_version=2)
    assert [t.id for t in both] == [f"{d.id}/{word}" for d in drawn for word in ("yes", "no")]
    yes, no = (tiny_adapter.tokenizer.encode(" " + word, add_special_tokens=False) for word in ("Yes", "No"))
    views = [view for t in both for view in program.teacher_forced(t)]
    with torch.no_grad():
        scores = tiny_adapter.logprobs([v.sequence for v in views], mode="guided", sampling=sampling)
    answer_logprobs = torch.stack([lp[v.segments["verdict"]][0] for v, lp in zip(views, scores.logprobs)])
    for k, d in enumerate(drawn):
        pair = both[2 * k : 2 * k + 2]
        assert [t.segment("verdict").ids.tolist() for t in pair] == [yes, no]
        assert [t.segment("verdict").text for t in pair] == [" Yes", " No"]
        for t in pair:
            verdict = t.segment("verdict")
            assert verdict.mask.tolist() == [True] * 1 + [False] * (len(verdict.ids) - 1)
            assert torch.equal(verdict.logprobs, torch.zeros(len(verdict.ids)))
            assert torch.equal(t.segment("description").ids, d.segment("description").ids)
            assert torch.equal(t.segment("description").logprobs, d.segment("description").logprobs)
            assert t.group == d.group and t.source_image is d.source_image and t.policy_version == 2
            assert t.info["p_yes"] == d.info["p_yes"]
        p_yes, p_no = answer_logprobs[2 * k : 2 * k + 2].exp().tolist()
        assert p_yes + p_no == pytest.approx(1.0, abs=1e-5)
        if sampling == Sampling():
            assert p_yes == pytest.approx(d.info["p_yes"], abs=1e-4)
    with pytest.raises(ValueError, match="self_check: enumerate_answers needs answer_only"):
        SelfCheck(tiny_adapter, enumerate_answers=True)
