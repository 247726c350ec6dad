"""`introspective_format`: the share of plan, verdict and reflection segments in format."""

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
