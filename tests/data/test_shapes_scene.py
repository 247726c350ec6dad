"""Scene vocabulary, rendering, layout, relations, captions and plans of the shapes world."""

import itertools

import numpy as np
import pytest

from coevolve.data.shapes import layout
from coevolve.data.shapes.describe import caption, plan
from coevolve.data.shapes.relations import dominant_relation, holds_clearly, relative_position
from coevolve.data.shapes.scene import (BACKGROUND, BORDER, COLOR_NAMES, COLORS, IMAGE_SIZE,
                                        MAX_OBJECT_SIZE, MIN_OBJECT_SIZE, OBJECT_GAP, SHAPES,
                                        Scene, ShapeObject, render, shape_mask)

GENEVAL_COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black",
                  "white"]


def test_vocabulary_is_genevals_colours_and_four_shapes():
    assert IMAGE_SIZE == 64
    assert SHAPES == ("circle", "square", "triangle", "cross")
    assert list(COLOR_NAMES) == GENEVAL_COLORS
    assert BACKGROUND not in COLORS.values()
    refs = np.array([*COLORS.values(), BACKGROUND], dtype=float)
    dists = [np.linalg.norm(a - b) for a, b in itertools.combinations(refs, 2)]
    assert min(dists) > 60  # well separated, so a blurred pixel stays nearest its colour


@pytest.mark.parametrize("shape", SHAPES)
def test_render_fills_exactly_the_box_in_the_colour(shape):
    box = (10, 20, 27, 37)
    image = render(Scene((ShapeObject(shape, "blue", box),)))
    assert image.mode == "RGB" and image.size == (IMAGE_SIZE, IMAGE_SIZE)
    pixels = np.asarray(image)
    painted = np.all(pixels == COLORS["blue"], axis=-1)
    assert np.all(painted | np.all(pixels == BACKGROUND, axis=-1))
    ys, xs = np.nonzero(painted)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == box  # touches all four sides
    np.testing.assert_array_equal(painted[20:37, 10:27], shape_mask(shape, 17, 17))


def test_shape_masks_are_distinct_and_upright():
    masks = {s: shape_mask(s, 15, 15) for s in SHAPES}
    for a, b in itertools.combinations(SHAPES, 2):
        iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
        assert iou < 0.85, (a, b, iou)
    tri = masks["triangle"]
    assert tri[0].sum() < tri[-1].sum()  # apex up
    cross = masks["cross"]
    assert not cross[0, 0] and cross[7].all() and cross[:, 7].all()
    assert cross[0].sum() == 5  # arm about a third of 15


def test_render_is_deterministic():
    scene = Scene((ShapeObject("cross", "pink", (3, 3, 19, 19)),
                   ShapeObject("triangle", "white", (30, 40, 44, 54))))
    assert render(scene).tobytes() == render(scene).tobytes()


@pytest.mark.parametrize("kwargs, culprit", [
    ({"shape": "hexagon", "color": "red", "box": (0, 0, 12, 12)}, "'hexagon'"),
    ({"shape": "circle", "color": "teal", "box": (0, 0, 12, 12)}, "'teal'"),
    ({"shape": "circle", "color": "red", "box": (60, 0, 72, 12)}, "(60, 0, 72, 12)"),
])
def test_shape_object_rejects_bad_values(kwargs, culprit):
    with pytest.raises(ValueError) as err:
        ShapeObject(**kwargs)
    assert culprit in str(err.value)


@pytest.mark.parametrize("n", range(0, 6))
def test_random_boxes_are_spaced_within_bounds_and_seeded(n):
    for seed in range(40):
        boxes = layout.random_boxes(np.random.default_rng(seed), n)
        assert boxes == layout.random_boxes(np.random.default_rng(seed), n)
        assert len(boxes) == n
        for x0, y0, x1, y1 in boxes:
            assert x1 - x0 == y1 - y0
            assert MIN_OBJECT_SIZE <= x1 - x0 <= MAX_OBJECT_SIZE
            assert min(x0, y0) >= BORDER and max(x1, y1) <= IMAGE_SIZE - BORDER
        for a, b in itertools.combinations(boxes, 2):
            assert layout.boxes_apart(a, b, OBJECT_GAP)


# -- GenEval's relative_position on handmade boxes -----------------------------------------


@pytest.mark.parametrize("box_a, box_b, expected", [
    ((0, 0, 10, 10), (20, 0, 30, 10), {"left of"}),  # dx = -(20 - 2) / 20 = -0.9
    ((20, 0, 30, 10), (0, 0, 10, 10), {"right of"}),
    ((0, 0, 10, 10), (0, 20, 10, 30), {"above"}),  # image y grows downward
    ((0, 20, 10, 30), (0, 0, 10, 10), {"below"}),
    ((0, 0, 10, 10), (30, 30, 40, 40), {"left of", "above"}),  # (-28, -28) / 42.4 = -0.66 each
    ((0, 0, 10, 10), (1, 0, 11, 10), set()),  # offset 1 < threshold 0.1 * 20: no relation
    ((0, 0, 10, 10), (6, 6, 16, 16), set()),  # (-4, -4) / 8.49 = -0.47: above -0.5, none
    ((0, 0, 10, 10), (12, 3, 22, 13), {"left of"}),  # (-10, -1) / 12.4: only x passes
])
def test_relative_position_matches_geneval(box_a, box_b, expected):
    assert relative_position(box_a, box_b) == expected


def test_relative_position_threshold_is_a_parameter():
    a, b = (0, 0, 10, 10), (5, 0, 15, 10)  # offset 5 vs threshold * 20: (5 - 2) / 5 = 0.6
    assert relative_position(a, b, threshold=0.1) == {"left of"}
    assert relative_position(a, b, threshold=0.2) == set()


def test_dominant_relation_and_clear_relations():
    assert dominant_relation((0, 0, 10, 10), (30, 20, 40, 30)) == "left of"
    assert dominant_relation((0, 0, 10, 10), (1, 0, 11, 10)) is None
    assert holds_clearly((0, 0, 10, 10), (30, 2, 40, 12), "left of")
    assert not holds_clearly((0, 0, 10, 10), (30, 30, 40, 40), "left of")  # diagonal
    for relation in ("left of", "right of", "above", "below"):
        a, b = layout.boxes_in_relation(np.random.default_rng(7), relation)
        assert relative_position(a, b) == {relation}


# -- captions and plans --------------------------------------------------------------------


def test_caption_grammar():
    red_circle = ShapeObject("circle", "red", (4, 24, 18, 38))
    blue_square = ShapeObject("square", "blue", (40, 24, 54, 38))
    assert caption(Scene()) == "an empty scene"
    assert caption(Scene((red_circle,))) == "a red circle"
    assert caption(Scene((red_circle, blue_square))) == "a red circle to the left of a blue square"
    assert caption(Scene((blue_square, red_circle))) == "a blue square to the right of a red circle"
    orange_square = ShapeObject("square", "orange", (4, 44, 18, 58))
    assert caption(Scene((red_circle, orange_square))) == "a red circle above an orange square"
    crosses = Scene(tuple(ShapeObject("cross", "green", (x, 4, x + 12, 16)) for x in (2, 20, 38)))
    assert caption(crosses) == "three green crosses"
    mixed = Scene(crosses.objects + (red_circle,))
    assert caption(mixed) == "three green crosses and a red circle"


def test_plan_names_colours_regions_and_relation():
    scene = Scene((ShapeObject("triangle", "blue", (2, 2, 16, 16)),
                   ShapeObject("circle", "red", (46, 40, 60, 54))))
    assert plan(scene) == ("Plan: a blue triangle in the top left and a red circle in the "
                           "bottom right; the triangle is to the left of the circle.")
    centre = Scene((ShapeObject("square", "white", (25, 25, 39, 39)),))
    assert plan(centre) == "Plan: a white square in the centre."
