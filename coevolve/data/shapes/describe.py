"""Text about a scene: a caption of what is drawn, and a plan written before drawing.

Both are deterministic functions of the scene, in a small fixed grammar so they can be parsed
back (the image->text side is scored against them).

Caption grammar (object phrases in order of first appearance):

- no objects: ``"an empty scene"``
- identical objects are grouped: ``"a red circle"``, ``"three green crosses"``
- exactly two single objects of different kinds, standing in a relation:
  ``"a red circle to the left of a blue square"`` (``above`` / ``below`` /
  ``to the right of``; the stronger axis wins for a diagonal); in no relation:
  ``"a red circle and a blue square"``
- otherwise groups joined by ``", "`` and a final ``" and "``.

Plan: ``"Plan: a blue triangle in the top left and a red circle in the bottom right."`` — every
object with its colour and the ninth of the image its centre falls in; when the scene is two
objects of different classes in a relation, the relation follows:
``"...; the triangle is above the circle."``
"""

from __future__ import annotations

from .metadata import NUMBERS, make_plural, with_article
from .relations import dominant_relation
from .scene import IMAGE_SIZE, Scene, ShapeObject

_PHRASE = {"left of": "to the left of", "right of": "to the right of", "above": "above",
           "below": "below"}
_REGION = {
    ("top", "left"): "in the top left", ("top", "middle"): "at the top",
    ("top", "right"): "in the top right", ("middle", "left"): "on the left",
    ("middle", "middle"): "in the centre", ("middle", "right"): "on the right",
    ("bottom", "left"): "in the bottom left", ("bottom", "middle"): "at the bottom",
    ("bottom", "right"): "in the bottom right",
}


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _noun(obj: ShapeObject) -> str:
    return with_article(f"{obj.color} {obj.shape}")


def region(obj: ShapeObject) -> str:
    """Where the object's centre lies, in thirds of the image: e.g. "in the top left"."""
    x, y = obj.center
    third = IMAGE_SIZE / 3
    row = "top" if y < third else "bottom" if y >= 2 * third else "middle"
    col = "left" if x < third else "right" if x >= 2 * third else "middle"
    return _REGION[row, col]


def _pair_relation(scene: Scene) -> str | None:
    # The relation of the first object to the second, when the scene is exactly two objects of
    # different classes (the position / two-object / colour-attribution layouts).
    if len(scene.objects) != 2:
        return None
    a, b = scene.objects
    if a.shape == b.shape:
        return None
    return dominant_relation(a.box, b.box)


def caption(scene: Scene) -> str:
    """One sentence describing what ``scene`` shows (grammar in the module docstring)."""
    if not scene.objects:
        return "an empty scene"
    groups: dict[tuple[str, str], int] = {}
    for obj in scene.objects:
        groups[obj.color, obj.shape] = groups.get((obj.color, obj.shape), 0) + 1
    phrases = [
        with_article(f"{color} {shape}") if n == 1
        else f"{NUMBERS[n]} {color} {make_plural(shape)}"
        for (color, shape), n in groups.items()
    ]
    if len(scene.objects) == 2 and len(phrases) == 2:
        relation = dominant_relation(scene.objects[0].box, scene.objects[1].box)
        if relation is not None:
            return f"{phrases[0]} {_PHRASE[relation]} {phrases[1]}"
    return _join(phrases)


def plan(scene: Scene) -> str:
    """The short plan a model would write before drawing ``scene`` (see module docstring)."""
    if not scene.objects:
        return "Plan: leave the picture empty."
    text = "Plan: " + _join([f"{_noun(obj)} {region(obj)}" for obj in scene.objects])
    relation = _pair_relation(scene)
    if relation is not None:
        a, b = scene.objects
        text += f"; the {a.shape} is {_PHRASE[relation]} the {b.shape}"
    return text + "."
