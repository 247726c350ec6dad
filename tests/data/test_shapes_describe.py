"""Captions parsed back into GenEval metadata: the verifier checks every claim a caption makes."""

import numpy as np
import pytest

from coevolve.data.shapes.describe import (
    caption,
    caption_objects,
    parse_caption,
    scene_objects,
    scene_of_caption,
    verify_described,
)
from coevolve.data.shapes.metadata import TAGS, validate_metadata
from coevolve.data.shapes.prompts import balanced_examples
from coevolve.data.shapes.scene import Scene, ShapeObject, render
from coevolve.data.shapes.verifier import verify


@pytest.fixture(scope="module")
def examples():
    return balanced_examples(504, seed=2024)  # 84 per tag, half of them violating their prompt


def test_round_trip_every_caption_is_verified_on_its_own_render(examples):
    for example in examples:
        metadata = parse_caption(example.caption)
        assert metadata is not None, example.caption
        assert validate_metadata(metadata) == metadata and metadata["prompt"] == example.caption
        verdict = verify(render(example.scene), metadata)
        assert verdict.correct, (example.caption, verdict.reasons)


def test_a_caption_is_usually_wrong_for_another_scene(examples):
    renders = [render(example.scene) for example in examples]
    wrong = [
        not verify(renders[(i + 7) % len(examples)], parse_caption(example.caption)).correct
        for i, example in enumerate(examples)
    ]
    assert sum(wrong) / len(wrong) >= 0.95
    # Per tag as well: a pair of scenes of one kind is the hardest case for a loose metadata.
    for tag in TAGS:
        same = [e for e in examples if e.tag == tag]
        pairs = [(a, b) for a, b in zip(same, same[2:]) if a.caption != b.caption]
        wrong = [not verify(render(b.scene), parse_caption(a.caption)).correct for a, b in pairs]
        assert sum(wrong) / len(wrong) >= 0.9, tag


def test_counts_colours_relation_and_extra_objects_are_all_checked():
    crosses = [ShapeObject("cross", "green", (x, 4, x + 12, 16)) for x in (2, 20, 38)]
    metadata = parse_caption("three green crosses")
    assert verify(render(Scene(tuple(crosses))), metadata).correct
    assert not verify(render(Scene(tuple(crosses[:2]))), metadata).correct  # too few
    fourth = ShapeObject("cross", "green", (2, 40, 14, 52))
    assert not verify(render(Scene((*crosses, fourth))), metadata).correct  # too many
    blue = ShapeObject("cross", "blue", (38, 4, 50, 16))
    assert not verify(render(Scene((*crosses[:2], blue))), metadata).correct  # a wrong colour
    circle = ShapeObject("circle", "red", (40, 40, 54, 54))
    assert not verify(render(Scene((*crosses, circle))), metadata).correct  # an object not captioned

    red_circle = ShapeObject("circle", "red", (4, 24, 18, 38))
    blue_square = ShapeObject("square", "blue", (40, 24, 54, 38))
    left = parse_caption(caption(Scene((red_circle, blue_square))))
    assert left["include"][1]["position"] == ["left of", 0]
    assert verify(render(Scene((red_circle, blue_square))), left).correct
    swapped = Scene((ShapeObject("circle", "red", blue_square.box), ShapeObject("square", "blue", red_circle.box)))
    assert not verify(render(swapped), left).correct


@pytest.mark.parametrize(
    "text",
    [
        "",
        "foo",
        "an empty scene",  # in the grammar, but GenEval metadata needs an include clause
        "an red circle",
        "a red circles",
        "one red circle",
        "two red circle",
        "a crimson circle",
        "a red hexagon",
        "A red circle",
        "a red circle and a red circle",  # identical objects are grouped
        "a red circle, a blue square",
        "a red circle and a blue square and a green cross",
        "a red circle to the left of two blue squares",
        "a red circle to the left of a blue square and a green cross",
        "a red circle next to a blue square",
        "Plan: a red circle in the centre.",
    ],
)
def test_text_outside_the_grammar_is_none(text):
    assert parse_caption(text) is None


def test_whitespace_and_a_final_full_stop_are_ignored():
    assert parse_caption(" a red circle.\n") == parse_caption("a red circle")


def test_caption_objects_are_the_scene_objects_for_every_caption(examples):
    for example in examples:
        assert caption_objects(caption(example.scene)) == scene_objects(example.scene), example.caption


def test_caption_objects_groups_counts_and_rejects_what_parse_caption_rejects():
    assert caption_objects("two red circles and a blue square.") == {("red", "circle"): 2, ("blue", "square"): 1}
    assert caption_objects("a red circle to the left of a blue square") == {("red", "circle"): 1, ("blue", "square"): 1}
    assert caption_objects("a red circle and a red circle") is None
    assert caption_objects("Plan: a red circle in the centre.") is None


def test_scene_of_caption_draws_exactly_what_every_caption_says(examples):
    rng = np.random.default_rng(0)
    for example in examples:
        scene = scene_of_caption(example.caption, rng)
        assert scene_objects(scene) == scene_objects(example.scene), example.caption
        verdict = verify(render(scene), parse_caption(example.caption))  # the relation too
        assert verdict.correct, (example.caption, verdict.reasons)


def test_scene_of_caption_places_at_random_and_refuses_what_it_cannot_draw():
    first = scene_of_caption("three green crosses and a red circle", np.random.default_rng(1))
    again = scene_of_caption("three green crosses and a red circle", np.random.default_rng(1))
    other = scene_of_caption("three green crosses and a red circle", np.random.default_rng(2))
    assert first == again and first != other
    assert scene_of_caption("an empty scene.", np.random.default_rng(0)) == Scene()
    assert scene_of_caption("a red circle and", np.random.default_rng(0)) is None
    assert scene_of_caption("five red circles and a blue square", np.random.default_rng(0)) is None  # six objects


def test_verify_described_takes_a_caption_at_its_word(examples):
    """The prompt checked on the scene a caption describes agrees with the verifier on the render
    the caption was written of, for satisfying and violating examples of every tag; same text,
    same answer; a text outside the grammar describes nothing."""
    for example in examples:
        verdict = verify_described(example.caption, example.metadata)
        assert verdict.correct == example.satisfies, (example.tag, example.prompt, example.caption, verdict.reasons)
    one = examples[1]
    assert verify_described(one.caption, one.metadata).reasons == verify_described(one.caption, one.metadata).reasons
    assert verify_described("a red circle and", examples[0].metadata) is None
