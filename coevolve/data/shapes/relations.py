"""Spatial relations between two boxes, exactly as GenEval judges them.

``relative_position`` is GenEval's function (djghosh13/geneval,
``evaluation/evaluate_images.py``) taking boxes instead of ``(box, mask)`` detections: the offset
between box centres is shrunk on each axis by ``threshold`` times the sum of the two boxes'
extents on that axis, then divided by the length of the unshrunk offset; a component below
-0.5 means "left of" / "above", above 0.5 means "right of" / "below" (image y grows downward).
Objects too close for any component to survive the shrinking stand in no relation at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RELATIONS = ("left of", "right of", "above", "below")
"""GenEval's position relations, in GenEval's order."""

POSITION_THRESHOLD = 0.1
"""GenEval's default ``position_threshold``."""

Box = Sequence[float]


def _normalised_offset(box_a: Box, box_b: Box, threshold: float) -> tuple[float, float] | None:
    boxes = np.asarray([box_a[:4], box_b[:4]], dtype=np.float64).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - threshold * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return None
    dx, dy = revised / np.linalg.norm(offset)
    return float(dx), float(dy)


def relative_position(box_a: Box, box_b: Box, threshold: float = POSITION_THRESHOLD) -> set[str]:
    """The set of relations in which box A stands to box B (each box ``(x0, y0, x1, y1)``).

    GenEval's semantics; ``threshold`` is its ``POSITION_THRESHOLD``. Returns an empty set
    when the boxes are too close on both axes, and may hold two relations for a diagonal
    placement (e.g. ``{"left of", "above"}``).
    """
    d = _normalised_offset(box_a, box_b, threshold)
    if d is None:
        return set()
    dx, dy = d
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def dominant_relation(box_a: Box, box_b: Box, threshold: float = POSITION_THRESHOLD) -> str | None:
    """The one relation of A to B with the largest normalised component, or None if none holds.

    Used to word captions and plans; a diagonal placement is named by its stronger axis.
    """
    d = _normalised_offset(box_a, box_b, threshold)
    relations = relative_position(box_a, box_b, threshold)
    if d is None or not relations:
        return None
    dx, dy = d
    strength = {"left of": -dx, "right of": dx, "above": -dy, "below": dy}
    return max(sorted(relations), key=lambda rel: strength[rel])


def holds_clearly(box_a: Box, box_b: Box, relation: str) -> bool:
    """True when A is ``relation`` of B with a margin that survives a slightly blurred read-back.

    Stricter than GenEval: the relation must be the *only* one by direction alone (threshold
    0, i.e. the centre offset lies within 30 degrees of the relation's axis) and must still
    hold at twice GenEval's threshold. The sampler draws positions with this, so a box that
    grows or shrinks by a pixel after decoding cannot flip the verdict.
    """
    return relative_position(box_a, box_b, 0.0) == {relation} and relation in relative_position(
        box_a, box_b, 2 * POSITION_THRESHOLD
    )
