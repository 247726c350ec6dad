"""The shapes world's vocabulary, scene description and renderer.

A scene is a handful of flat-coloured shapes on a mid-grey background, drawn into a small
square RGB image. The shape names play the role of GenEval's COCO class names and the colour
names are exactly GenEval's, in GenEval's order, so prompts and metadata built on them are
GenEval's own (see ``metadata.py``).

Boxes are ``(x0, y0, x1, y1)`` in pixels with an exclusive end, as a detector reports them: the
shape covers columns ``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1`` and touches all four sides of its
box. The verifier measures boxes the same way, so a clean render is read back with exactly the
boxes it was drawn with.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
"""Width and height of every image in the shapes world, in pixels."""

SHAPES = ("circle", "square", "triangle", "cross")
"""Object classes. The triangle points up; the cross is a plus sign with arms 1/3 of its box."""

COLORS: dict[str, tuple[int, int, int]] = {
    # GenEval's colour names in GenEval's order; RGB values far apart from each other (the
    # closest pair, orange/yellow, is ~86 apart) and from the background, so that a blurred or
    # re-quantised pixel still lands nearest its own colour.
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 220, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "purple": (130, 40, 170),
    "pink": (250, 130, 190),
    "brown": (120, 70, 20),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
}
COLOR_NAMES = tuple(COLORS)

BACKGROUND = (128, 128, 128)
"""Flat mid grey: none of the colours, so the background never reads as an object."""

CELL = 8
"""Side of one image-token cell in pixels; object boxes are aligned to this grid (layout.py)."""
MIN_OBJECT_SIZE = 12
MAX_OBJECT_SIZE = 20
OBJECT_GAP = 4
"""Minimum empty pixels between two boxes, so objects stay apart after a lossy encode/decode."""
BORDER = 2
"""Minimum empty pixels between a box and the image border."""
MAX_OBJECTS = 5


@dataclass(frozen=True)
class ShapeObject:
    """One shape: its class name, colour name and box ``(x0, y0, x1, y1)`` (exclusive end)."""

    shape: str
    color: str
    box: tuple[int, int, int, int]

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {', '.join(SHAPES)}")
        if self.color not in COLORS:
            raise ValueError(
                f"unknown colour {self.color!r}; expected one of {', '.join(COLOR_NAMES)}"
            )
        box = tuple(int(v) for v in self.box)
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= IMAGE_SIZE and 0 <= y0 < y1 <= IMAGE_SIZE):
            raise ValueError(f"box {self.box!r} is empty or outside the {IMAGE_SIZE}px image")
        object.__setattr__(self, "box", box)

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass(frozen=True)
class Scene:
    """An ordered tuple of shapes. Order matters only for captions and plans."""

    objects: tuple[ShapeObject, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        if len(self.objects) > MAX_OBJECTS:
            raise ValueError(
                f"a scene holds at most {MAX_OBJECTS} objects, got {len(self.objects)}"
            )


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    """Draw ``shape`` filling ``box`` (exclusive end) with ``fill`` on a PIL drawing context.

    The renderer and the verifier's ideal masks both go through here, so the verifier compares a
    detection against exactly the geometry the renderer produces.
    """
    x0, y0, x1, y1 = box
    xl, yl = x1 - 1, y1 - 1  # PIL coordinates are inclusive
    if shape == "circle":
        draw.ellipse((x0, y0, xl, yl), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, xl, yl), fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + xl) / 2, y0), (xl, yl), (x0, yl)], fill=fill)
    elif shape == "cross":
        w, h = x1 - x0, y1 - y0
        aw, ah = _arm(w), _arm(h)
        ax, ay = x0 + (w - aw) // 2, y0 + (h - ah) // 2
        draw.rectangle((ax, y0, ax + aw - 1, yl), fill=fill)
        draw.rectangle((x0, ay, xl, ay + ah - 1), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def _arm(extent: int) -> int:
    # The width nearest a third of the box that leaves the same margin on both sides, so the
    # arm sits exactly centred.
    return min(
        (k for k in range(1, extent + 1) if (extent - k) % 2 == 0),
        key=lambda k: abs(k - extent / 3),
    )


@functools.lru_cache(maxsize=4096)
def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """The ideal ``(height, width)`` bool mask of ``shape`` filling a box of that size.

    Cached: the verifier asks for the same few sizes over and over. Treat the result as
    read-only.
    """
    canvas = Image.new("L", (width, height), 0)
    draw_shape(ImageDraw.Draw(canvas), shape, (0, 0, width, height), 255)
    mask = np.asarray(canvas) > 127
    mask.flags.writeable = False
    return mask


def render(scene: Scene) -> Image.Image:
    """Draw ``scene`` as an ``IMAGE_SIZE`` x ``IMAGE_SIZE`` RGB PIL image on the grey background."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        draw_shape(draw, obj.shape, obj.box, COLORS[obj.color])
    return image
