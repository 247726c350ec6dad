"""Random placement of object boxes: sizes, spacing, and spatial relations.

All randomness comes from the ``numpy.random.Generator`` passed in, so a layout is a pure
function of the generator's state. Boxes are square (a circle is round), between
``MIN_OBJECT_SIZE`` and ``MAX_OBJECT_SIZE`` pixels, at least ``BORDER`` pixels from the image
edge and ``OBJECT_GAP`` pixels apart, so they stay separable after a lossy encode/decode.

Boxes sit on the image-token grid: an object fills a block of k x k cells of ``CELL`` pixels
(the tiny checkpoint's VQ patch), inset by ``BORDER`` pixels. So every token holds a fixed
part of at most one object: the VQ tokenizer reproduces scenes almost losslessly and a
small model can learn to draw them on a CPU, while sizes, places, counts and relations still
vary freely over the grid.
"""

from __future__ import annotations

import numpy as np

from .relations import RELATIONS, holds_clearly
from .scene import BORDER, CELL, IMAGE_SIZE, MAX_OBJECT_SIZE, MAX_OBJECTS, MIN_OBJECT_SIZE, OBJECT_GAP

Box = tuple[int, int, int, int]

# Five boxes of up to 20px rarely pack by random sequential placement into 60x60 usable
# pixels; crowded scenes use smaller objects instead of retrying for long.
_CROWDED = 4
_CROWDED_MAX_SIZE = 16
_TRIES_PER_BOX = 200
_RESTARTS = 50


def boxes_apart(a: Box, b: Box, gap: int = OBJECT_GAP) -> bool:
    """True when boxes ``a`` and ``b`` (exclusive ends) have at least ``gap`` empty pixels between
    them along x or along y."""
    gap_x = max(a[0] - b[2], b[0] - a[2])
    gap_y = max(a[1] - b[3], b[1] - a[3])
    return max(gap_x, gap_y) >= gap


def cells_spanned(size: int) -> int:
    """How many grid cells a side of an object of at most ``size`` pixels spans."""
    return (size + 2 * BORDER) // CELL


def cell_box(cx: int, cy: int, cells: int) -> Box:
    """The box of an object filling ``cells`` x ``cells`` grid cells from cell (cx, cy)."""
    x0, y0 = cx * CELL + BORDER, cy * CELL + BORDER
    size = cells * CELL - 2 * BORDER
    return (x0, y0, x0 + size, y0 + size)


def _random_box(rng: np.random.Generator, max_size: int) -> Box:
    cells = int(rng.integers(cells_spanned(MIN_OBJECT_SIZE), cells_spanned(max_size), endpoint=True))
    cx = int(rng.integers(0, IMAGE_SIZE // CELL - cells, endpoint=True))
    cy = int(rng.integers(0, IMAGE_SIZE // CELL - cells, endpoint=True))
    return cell_box(cx, cy, cells)


def random_boxes(rng: np.random.Generator, n: int) -> list[Box]:
    """``n`` (0..MAX_OBJECTS) non-overlapping, well-spaced square boxes at random places."""
    if not 0 <= n <= MAX_OBJECTS:
        raise ValueError(f"number of boxes must be in 0..{MAX_OBJECTS}, got {n}")
    max_size = MAX_OBJECT_SIZE if n < _CROWDED else _CROWDED_MAX_SIZE
    for _ in range(_RESTARTS):
        boxes: list[Box] = []
        for _ in range(n):
            for _ in range(_TRIES_PER_BOX):
                box = _random_box(rng, max_size)
                if all(boxes_apart(box, other) for other in boxes):
                    boxes.append(box)
                    break
            else:
                break  # this box found no room: start the scene over
        if len(boxes) == n:
            return boxes
    raise RuntimeError(f"could not place {n} boxes")  # pragma: no cover - not seen in practice


def boxes_in_relation(rng: np.random.Generator, relation: str) -> tuple[Box, Box]:
    """Boxes ``(a, b)`` with A clearly ``relation`` of B (see ``relations.holds_clearly``)."""
    if relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; expected one of {', '.join(RELATIONS)}")
    # Rejection sampling: about one random pair in ten qualifies, and each try is microseconds.
    for _ in range(10_000):
        a, b = random_boxes(rng, 2)
        if holds_clearly(a, b, relation):
            return a, b
    raise RuntimeError(f"could not place two boxes in relation {relation!r}")  # pragma: no cover
