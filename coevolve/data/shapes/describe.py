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

``parse_caption`` is the inverse of ``caption``: it turns a caption back into GenEval metadata
that the verifier checks the caption's every claim against (see its docstring);
``scene_of_caption`` draws a caption back into a scene, at random places that keep its relation.

Plan: ``"Plan: a blue triangle in the top left and a red circle in the bottom right."`` — every
object with its colour and the ninth of the image its centre falls in; when the scene is two
objects of different classes in a relation, the relation follows:
``"...; the triangle is above the circle."``
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from .layout import boxes_in_relation, random_boxes
from .metadata import NUMBERS, make_plural, validate_metadata, with_article
from .relations import dominant_relation
from .scene import COLOR_NAMES, IMAGE_SIZE, MAX_OBJECTS, SHAPES, Scene, ShapeObject, render
from .verifier import Verdict, verify

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


def _group_phrase(color: str, shape: str, n: int) -> str:
    """ "a red circle" for one object of a group, "three green crosses" for three identical ones."""
    return with_article(f"{color} {shape}") if n == 1 else f"{NUMBERS[n]} {color} {make_plural(shape)}"


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
    phrases = [_group_phrase(color, shape, n) for (color, shape), n in groups.items()]
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


# -- parsing a caption back ----------------------------------------------------------------

_COLOR = "|".join(COLOR_NAMES)
_GROUP = re.compile(
    rf"(?:an?|(?P<number>{'|'.join(NUMBERS[2:])})) (?P<color>{_COLOR}) "
    rf"(?P<noun>{'|'.join(SHAPES)}|{'|'.join(make_plural(shape) for shape in SHAPES)})"
)
_RELATION_CAPTION = re.compile(
    rf"(?P<a>{_GROUP.pattern.replace('?P<', '?P<a_')}) (?P<phrase>{'|'.join(_PHRASE.values())}) "
    rf"(?P<b>{_GROUP.pattern.replace('?P<', '?P<b_')})"
)
_RELATION_OF_PHRASE = {phrase: relation for relation, phrase in _PHRASE.items()}
_SINGULAR = {make_plural(shape): shape for shape in SHAPES} | {shape: shape for shape in SHAPES}


def _parse_group(phrase: str) -> tuple[str, str, int] | None:
    """A group phrase, e.g. "three green crosses" -> ("green", "cross", 3); None unless written
    exactly as `caption` writes it."""
    found = _GROUP.fullmatch(phrase)
    if found is None:
        return None
    color, shape = found["color"], _SINGULAR[found["noun"]]
    n = NUMBERS.index(found["number"]) if found["number"] else 1
    # The regeneration check rejects "an red circle", "a red circles" and "two red circle".
    return (color, shape, n) if _group_phrase(color, shape, n) == phrase else None


def parse_caption(text: str) -> dict | None:
    """GenEval metadata for everything a caption claims, or None when ``text`` is not a caption.

    ``text`` is one caption in the grammar of the module docstring; surrounding whitespace and
    one final ``"."`` are ignored (a model writes its answer after ``"Assistant:"``). The
    metadata (``prompt`` = the caption) makes ``verify`` check that the image shows exactly the
    captioned objects: each group as an include clause with its class, count and colour; an
    exclude clause of count + 1 per class (GenEval's counting rule, so "three green crosses"
    fails on four crosses) and of count 1 for every class the caption does not name; a
    relation as ``position_metadata`` writes it (B is include[0], A is positioned against it).

    Two limits of GenEval's clause language: a colour is checked on the ``count`` most
    confident objects of its class, so when one class appears in two colours ("a red circle
    and a blue circle") only the class count is checked, and a relation between two objects
    of one class is not checked. Neither occurs in the world's examples. ``"an empty scene"``
    returns None: GenEval metadata needs at least one include clause.
    """
    parsed = _parse_groups(text)
    if parsed is None:
        return None
    text, groups, relation = parsed
    return validate_metadata(_caption_metadata(text, groups, relation))


def caption_objects(text: str) -> Counter | None:
    """The objects a caption names, as counts of `(colour, shape)`; None when ``text`` is not a
    caption (as in `parse_caption`). "two red circles and a blue square" ->
    ``{("red", "circle"): 2, ("blue", "square"): 1}``."""
    parsed = _parse_groups(text)
    if parsed is None:
        return None
    return Counter({(color, shape): n for color, shape, n in parsed[1]})


def scene_of_caption(text: str, rng: np.random.Generator) -> Scene | None:
    """A scene that ``text`` describes, its boxes drawn from ``rng`` (a relation caption's two
    objects stand clearly in that relation); None when ``text`` is not a caption (as in
    `parse_caption`) or names more than ``MAX_OBJECTS`` objects. ``"an empty scene"`` is the
    empty scene."""
    if text.strip().removesuffix(".") == "an empty scene":
        return Scene()
    parsed = _parse_groups(text)
    if parsed is None:
        return None
    _, groups, relation = parsed
    kinds = [(color, shape) for color, shape, n in groups for _ in range(n)]
    if len(kinds) > MAX_OBJECTS:
        return None
    boxes = list(boxes_in_relation(rng, relation)) if relation is not None else random_boxes(rng, len(kinds))
    return Scene(tuple(ShapeObject(shape, color, box) for (color, shape), box in zip(kinds, boxes)))


def verify_described(text: str, metadata: dict | str) -> Verdict | None:
    """``metadata`` (a prompt's) checked on the scene ``text`` describes, drawn by the renderer:
    what a judge that takes the text at its word would say of the prompt; None when ``text``
    describes no scene (`scene_of_caption`). The boxes come from a fixed seed, so the answer is
    deterministic; a relation caption places its two objects clearly in that relation, a caption
    without one at random (the grammar writes a relation whenever two objects of different
    classes stand in one, so such a caption passes a position prompt only by chance)."""
    scene = scene_of_caption(text, np.random.default_rng(0))
    return None if scene is None else verify(render(scene), metadata)


def scene_objects(scene: Scene) -> Counter:
    """The objects of a scene as counts of `(colour, shape)`, comparable with `caption_objects`."""
    return Counter((obj.color, obj.shape) for obj in scene.objects)


def _parse_groups(text: str) -> tuple[str, list[tuple[str, str, int]], str | None] | None:
    """(the caption without its final ".", its groups, its relation or None), or None when
    ``text`` is not in the grammar."""
    text = text.strip()
    text = text.removesuffix(".")
    relation = None
    paired = _RELATION_CAPTION.fullmatch(text)
    if paired is not None:
        phrases = [paired["a"], paired["b"]]
        relation = _RELATION_OF_PHRASE[paired["phrase"]]
    else:
        head, _, last = text.rpartition(" and ")
        phrases = [*head.split(", "), last] if head else [text]
    groups = [_parse_group(phrase) for phrase in phrases]
    if any(group is None for group in groups) or len({(c, s) for c, s, _ in groups}) != len(groups):
        return None  # not in the grammar, or identical objects not grouped as `caption` groups them
    if relation is not None and any(n != 1 for _, _, n in groups):
        return None  # the grammar relates exactly two single objects
    return text, groups, relation


def _caption_metadata(text: str, groups: list[tuple[str, str, int]], relation: str | None) -> dict:
    totals: dict[str, int] = {}
    colors: dict[str, set[str]] = {}
    for color, shape, n in groups:
        totals[shape] = totals.get(shape, 0) + n
        colors.setdefault(shape, set()).add(color)
    exclude = [{"class": shape, "count": total + 1} for shape, total in totals.items()]
    exclude += [{"class": shape, "count": 1} for shape in SHAPES if shape not in totals]
    (color_a, shape_a, _), *rest = groups
    if relation is not None and shape_a != rest[0][1]:
        color_b, shape_b, _ = rest[0]
        include = [
            {"class": shape_b, "count": 1, "color": color_b},
            {"class": shape_a, "count": 1, "color": color_a, "position": [relation, 0]},
        ]
        return {"tag": "position", "include": include, "exclude": exclude, "prompt": text}
    include = [
        {"class": shape, "count": total, **({"color": next(iter(colors[shape]))} if len(colors[shape]) == 1 else {})}
        for shape, total in totals.items()
    ]
    # The tag only labels the metadata; the verifier reads the clauses.
    many = any(n > 1 for _, _, n in groups)
    tag = "position" if relation else "counting" if many else "colors" if len(groups) == 1 else "color_attr"
    return {"tag": tag, "include": include, "exclude": exclude, "prompt": text}
