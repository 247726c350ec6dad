"""`introspective_format`: the share of plan, verdict and reflection segments in format;
`shapes_caption_format`: a caption in the shapes world's grammar."""

from __future__ import annotations

import pytest
from PIL import Image

from coevolve.model.introspection import REFLECTION, YES_VERDICT, verdict_text
from coevolve.trajectory import Segment, Trajectory
from rewards import build_scorer

IMAGE = Image.new("RGB", (8, 8))


def trajectory(**texts: str) -> Trajectory:
    segments = []
    for name, text in texts.items():
        segments.append(Segment(name, "text", text=text))
        if name in ("plan", "reflection"):
            segments.append(Segment("image" if name == "plan" else "regen_image", "image", image=IMAGE))
    return Trajectory(id="p/0", group="p", prompt="a red circle", program="introspective_t2i", segments=segments)


def test_every_segment_in_format_scores_one_and_each_broken_one_costs_its_share():
    scorer = build_scorer({"name": "introspective_format"}, "test")
    good = trajectory(
        plan=" Plan: a red circle in the centre.",
        verdict=verdict_text(False, "the circle is blue, not red"),
        reflection=REFLECTION.format(reason="the circle is blue, not red"),
    )
    broken_reflection = trajectory(
        plan=" Plan: a red circle in the centre.",
        verdict=verdict_text(False, "the circle is blue, not red"),
        reflection=" Draw the is purple, correcting the cross",
    )
    accepted = trajectory(plan=" Plan: a red circle.", verdict=YES_VERDICT)
    garbled = trajectory(plan="  left; the cross is wrong", verdict=" No, the image")
    batch = scorer.score([good, broken_reflection, accepted, garbled])
    assert batch.scores == pytest.approx([1.0, 2 / 3, 1.0, 0.0])
    assert batch.details[1]["in_format"] == {"plan": True, "verdict": True, "reflection": False}


def test_a_trajectory_without_introspective_text_is_an_error_naming_it():
    scorer = build_scorer({"name": "introspective_format"}, "test")
    caption_only = Trajectory(id="r/1", group="r", prompt="", program="reconstruction",
                              segments=[Segment("caption", "text", text="a red circle")])  # fmt: skip
    with pytest.raises(ValueError, match=r"'r/1' has no plan, verdict or reflection"):
        scorer.score([caption_only])


def _reconstruction(caption: str, i: int = 0) -> Trajectory:
    return Trajectory(id=f"r/{i}", group="r", prompt="", program="reconstruction",
                      segments=[Segment("caption", "text", text=caption), Segment("image", "image", image=IMAGE)])  # fmt: skip


def test_shapes_caption_format_accepts_the_grammar_only():
    scorer = build_scorer({"name": "shapes_caption_format"}, "test")
    captions = [" a red circle", " two green crosses and a blue square.", " a red circle above a red circle",
                " Plan: circle above to the right of the mistake.", " ,,,, and a red"]  # fmt: skip
    batch = scorer.score([_reconstruction(c, i) for i, c in enumerate(captions)])
    # The third repeats one kind of object where the grammar groups it ("two red circles").
    assert batch.scores == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert batch.details[0] == {"parsed": True} and batch.details[3] == {"parsed": False}


def test_shapes_caption_format_names_a_trajectory_without_a_caption():
    scorer = build_scorer({"name": "shapes_caption_format"}, "test")
    with pytest.raises(ValueError, match=r"'p/0' has 0 caption segments"):
        scorer.score([trajectory(plan=" Plan: a red circle.", verdict=YES_VERDICT)])
