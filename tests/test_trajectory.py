"""The one trajectory type: accessors, the final image, and named validation errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from coevolve.trajectory import IMAGE, PLAN, REGEN_IMAGE, VERDICT, Segment, Trajectory


def _image(color=(200, 0, 0)) -> Image.Image:
    return Image.new("RGB", (8, 8), color)


def _trajectory(**kwargs) -> Trajectory:
    segments = kwargs.pop(
        "segments",
        [
            Segment(
                PLAN,
                "text",
                ids=torch.tensor([5, 6, 7]),
                logprobs=torch.zeros(3),
                mask=torch.ones(3, dtype=torch.bool),
                text=" Plan: x.",
            ),
            Segment(IMAGE, "image", ids=torch.arange(4), image=_image()),
            Segment(VERDICT, "text", text=" Yes, the image matches the prompt."),
        ],
    )
    return Trajectory(
        id="t0", group="g0", prompt="a photo of a circle", program="introspective", segments=segments, **kwargs
    )


def test_accessors_and_final_image():
    trajectory = _trajectory(info={"p_yes": 0.7}, policy_version=3)
    assert trajectory.has(PLAN) and not trajectory.has(REGEN_IMAGE)
    assert trajectory.text(PLAN) == " Plan: x."
    assert trajectory.segment(PLAN).ids.tolist() == [5, 6, 7]
    assert trajectory.final_image is trajectory.image(IMAGE)
    regen = _image((0, 0, 200))
    trajectory.segments.append(Segment(REGEN_IMAGE, "image", image=regen))
    assert trajectory.final_image is regen
    assert trajectory.info["p_yes"] == 0.7 and trajectory.policy_version == 3


def test_wrong_kind_access_and_missing_segment_are_named():
    trajectory = _trajectory()
    with pytest.raises(ValueError, match="segment 'plan' is text, not an image"):
        trajectory.image(PLAN)
    with pytest.raises(ValueError, match="segment 'image' is an image, not text"):
        trajectory.text(IMAGE)
    with pytest.raises(KeyError, match="no segment 'caption'"):
        trajectory.segment("caption")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Segment(PLAN, "audio", text="x"), "unknown kind 'audio'"),
        (lambda: Segment(PLAN, "text"), "text segment needs its decoded `text`"),
        (lambda: Segment(IMAGE, "image"), "image segment needs its decoded PIL `image`"),
        (lambda: Segment(IMAGE, "image", image=_image(), text="x"), "cannot hold text"),
        (lambda: Segment(PLAN, "text", text="x", logprobs=torch.zeros(2)), "`logprobs` and `mask` describe `ids`"),
        (lambda: Segment(PLAN, "text", text="x", ids=torch.arange(3), mask=torch.ones(2)), "mask has shape"),
        (lambda: Segment(PLAN, "text", text="x", ids=torch.zeros(3)), "1-D integer tensor"),
    ],
)
def test_bad_segments_fail_with_the_segment_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_duplicate_segment_names_and_bad_ids_fail():
    with pytest.raises(ValueError, match="segment 'plan' appears twice"):
        _trajectory(segments=[Segment(PLAN, "text", text="a"), Segment(PLAN, "text", text="b")])
    with pytest.raises(ValueError, match="non-empty string group"):
        Trajectory(id="t", group="", prompt="p", program="x")
    with pytest.raises(TypeError, match="segments must be Segment"):
        _trajectory(segments=[{"name": PLAN}])
