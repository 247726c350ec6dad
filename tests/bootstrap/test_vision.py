"""The understanding encoder's pre-training: exact patch labels, and features that name the patch."""

from __future__ import annotations

import json

import numpy as np

from coevolve.bootstrap.tiny import MANIFEST
from coevolve.bootstrap.vision import patch_labels
from coevolve.data.shapes.layout import cell_box
from coevolve.data.shapes.scene import COLOR_NAMES, SHAPES, Scene, ShapeObject, render


def test_patch_labels_mark_the_cells_an_object_is_drawn_in():
    scene = Scene((
        ShapeObject("square", "blue", cell_box(1, 2, 2)),
        ShapeObject("cross", "red", cell_box(5, 5, 3)),
    ))
    colors, shapes = (labels.reshape(8, 8) for labels in patch_labels(scene, np.asarray(render(scene))))
    blue, square = 1 + COLOR_NAMES.index("blue"), 1 + SHAPES.index("square")
    assert (colors[2:4, 1:3] == blue).all() and (shapes[2:4, 1:3] == square).all()
    # A cross leaves the four corner cells of its 3x3 block empty: they show background.
    red, cross = 1 + COLOR_NAMES.index("red"), 1 + SHAPES.index("cross")
    block = colors[5:8, 5:8]
    assert block[1, :].eq(red).all() and block[:, 1].eq(red).all()
    assert block[0, 0] == block[0, 2] == block[2, 0] == block[2, 2] == 0
    assert (shapes[5:8, 5:8] == cross * (block > 0)).all()
    assert (colors > 0).sum() == 4 + 5  # everything else is background


def test_tiny_encoder_features_name_colour_and_shape_of_heldout_patches(tiny_checkpoint):
    report = json.loads((tiny_checkpoint / MANIFEST).read_text())["vision_training"]
    # Read out linearly on renders of another seed than the training pool's.
    assert report["heldout_object_patch_color_accuracy"] >= 0.95, report
    assert report["heldout_object_patch_shape_accuracy"] >= 0.9, report
