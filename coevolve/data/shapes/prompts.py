"""Seeded examples of the shapes world: a GenEval prompt, its metadata, and a scene.

``sample_example(seed, tag, satisfies)`` first draws a prompt and a scene that satisfies it;
for ``satisfies=False`` it then corrupts that scene in one labelled way per category, drawing
from the same generator, so the positive and the negative of one seed share their prompt:

==============  ================================================  ==========================
tag             negative                                          violation, e.g.
==============  ================================================  ==========================
single_object   the object is another class                       there is no circle
two_object      one of the two is replaced by a third class       there is no square
counting        one object fewer or one more (the exclude         there are 2 crosses, not 3
                clause rejects N+1)
colors          the object has another colour                     the triangle is red, not blue
position        the pair clearly stands in another relation       the square is above the
                                                                  circle, not left of it
color_attr      the two colours are swapped                       the circle is blue, not red,
                                                                  and the square is red, not
                                                                  blue
==============  ================================================  ==========================

Scenes hold only the prompted objects (GenEval ignores others anyway); objects whose colour the
prompt leaves open get a random colour (one shared colour for a counting group, so the caption
reads "three green crosses"). The ``plan`` is always the plan of the *satisfying* scene — what
a model should write before drawing — even for a negative; the ``caption`` always describes the
scene actually drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import layout
from .describe import caption, plan
from .metadata import (TAGS, color_attr_metadata, colors_metadata, counting_metadata,
                       make_plural, position_metadata, single_object_metadata,
                       two_object_metadata, validate_metadata)
from .relations import RELATIONS
from .scene import COLOR_NAMES, SHAPES, Scene, ShapeObject, render


@dataclass(frozen=True)
class Example:
    """One (prompt, scene) pair and everything said about it.

    ``metadata`` is GenEval's dict for ``prompt`` (JSON-serialisable); ``satisfies`` tells
    whether ``scene`` meets it, and ``violation`` says how it does not (None when it does).
    """

    seed: int
    tag: str
    prompt: str
    metadata: dict
    scene: Scene
    satisfies: bool
    violation: str | None
    plan: str
    caption: str

    def render(self) -> Image.Image:
        """The scene as a 64x64 RGB image."""
        return render(self.scene)


def derive_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for item ``index`` of a collection drawn with ``seed``."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def _pick(rng: np.random.Generator, options, k: int | None = None, exclude=()):
    choices = [o for o in options if o not in exclude]
    if k is None:
        return choices[int(rng.integers(len(choices)))]
    return [choices[i] for i in rng.choice(len(choices), size=k, replace=False)]


def _objects(shapes, colors, boxes) -> Scene:
    return Scene(tuple(ShapeObject(s, c, b) for s, c, b in zip(shapes, colors, boxes)))


def _positive(rng: np.random.Generator, tag: str) -> tuple[dict, Scene, dict]:
    """Metadata, a satisfying scene, and the drawn parameters the negative needs."""
    if tag == "single_object":
        cls, color = _pick(rng, SHAPES), _pick(rng, COLOR_NAMES)
        return (single_object_metadata(cls),
                _objects([cls], [color], layout.random_boxes(rng, 1)), {})
    if tag == "two_object":
        classes, colors = _pick(rng, SHAPES, 2), [_pick(rng, COLOR_NAMES) for _ in range(2)]
        return (two_object_metadata(*classes),
                _objects(classes, colors, layout.random_boxes(rng, 2)), {})
    if tag == "counting":
        cls, color = _pick(rng, SHAPES), _pick(rng, COLOR_NAMES)
        count = int(rng.integers(2, 4, endpoint=True))
        return (counting_metadata(cls, count),
                _objects([cls] * count, [color] * count, layout.random_boxes(rng, count)),
                {"color": color})
    if tag == "colors":
        cls, color = _pick(rng, SHAPES), _pick(rng, COLOR_NAMES)
        return (colors_metadata(cls, color),
                _objects([cls], [color], layout.random_boxes(rng, 1)), {})
    if tag == "position":
        cls_a, cls_b = _pick(rng, SHAPES, 2)
        relation = _pick(rng, RELATIONS)
        colors = [_pick(rng, COLOR_NAMES) for _ in range(2)]
        boxes = layout.boxes_in_relation(rng, relation)
        return (position_metadata(cls_a, relation, cls_b),
                _objects([cls_a, cls_b], colors, boxes), {"relation": relation})
    if tag == "color_attr":
        classes, colors = _pick(rng, SHAPES, 2), _pick(rng, COLOR_NAMES, 2)
        return (color_attr_metadata(classes[0], colors[0], classes[1], colors[1]),
                _objects(classes, colors, layout.random_boxes(rng, 2)), {})
    raise ValueError(f"unknown tag {tag!r}; expected one of {', '.join(TAGS)}")


def _negative(rng: np.random.Generator, tag: str, scene: Scene, drawn: dict) -> tuple[Scene, str]:
    """Corrupt the satisfying ``scene`` in this tag's one way; return it and the violation."""
    objs = list(scene.objects)
    if tag in ("single_object", "two_object"):
        i = int(rng.integers(len(objs)))
        missing = objs[i].shape
        new_shape = _pick(rng, SHAPES, exclude={o.shape for o in objs})
        objs[i] = ShapeObject(new_shape, objs[i].color, objs[i].box)
        return Scene(tuple(objs)), f"there is no {missing}"
    if tag == "counting":
        shape, count = objs[0].shape, len(objs)
        wrong = count + (1 if rng.random() < 0.5 else -1)
        boxes = layout.random_boxes(rng, wrong)
        noun = shape if wrong == 1 else make_plural(shape)
        verb = "is" if wrong == 1 else "are"
        return (_objects([shape] * wrong, [drawn["color"]] * wrong, boxes),
                f"there {verb} {wrong} {noun}, not {count}")
    if tag == "colors":
        obj = objs[0]
        color = _pick(rng, COLOR_NAMES, exclude={obj.color})
        return (Scene((ShapeObject(obj.shape, color, obj.box),)),
                f"the {obj.shape} is {color}, not {obj.color}")
    if tag == "position":
        relation = drawn["relation"]
        actual = _pick(rng, RELATIONS, exclude={relation})
        boxes = layout.boxes_in_relation(rng, actual)
        a, b = objs
        return (_objects([a.shape, b.shape], [a.color, b.color], boxes),
                f"the {a.shape} is {actual} the {b.shape}, not {relation} it")
    if tag == "color_attr":
        a, b = objs
        return (Scene((ShapeObject(a.shape, b.color, a.box), ShapeObject(b.shape, a.color, b.box))),
                f"the {a.shape} is {b.color}, not {a.color}, "
                f"and the {b.shape} is {a.color}, not {b.color}")
    raise ValueError(f"unknown tag {tag!r}; expected one of {', '.join(TAGS)}")


def sample_example(seed: int, tag: str, satisfies: bool = True) -> Example:
    """Draw the example for ``(seed, tag)``: satisfying, or its labelled violation.

    Deterministic in ``(seed, tag, satisfies)``; ``seed`` is a non-negative int. Raises
    ``ValueError`` for an unknown tag.
    """
    if tag not in TAGS:
        raise ValueError(f"unknown tag {tag!r}; expected one of {', '.join(TAGS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    # The tag is mixed into the generator so that one seed gives unrelated draws per tag.
    rng = np.random.default_rng([int(seed), TAGS.index(tag)])
    metadata, scene, drawn = _positive(rng, tag)
    intended = plan(scene)
    violation = None
    if not satisfies:
        scene, violation = _negative(rng, tag, scene, drawn)
    return Example(
        seed=int(seed), tag=tag, prompt=metadata["prompt"], metadata=validate_metadata(metadata),
        scene=scene, satisfies=bool(satisfies), violation=violation, plan=intended,
        caption=caption(scene),
    )


def balanced_examples(n: int, seed: int, tags: tuple[str, ...] = TAGS) -> list[Example]:
    """``n`` examples, alternating satisfying / violating, cycling through ``tags`` per pair.

    Item ``i`` has tag ``tags[(i // 2) % len(tags)]``, ``satisfies = (i % 2 == 0)`` and its own
    seed ``derive_seed(seed, i)``; so any prefix of even length is balanced between positives
    and negatives within every tag, and balanced over tags up to one pair.
    """
    for tag in tags:
        if tag not in TAGS:
            raise ValueError(f"unknown tag {tag!r}; expected one of {', '.join(TAGS)}")
    return [
        sample_example(derive_seed(seed, i), tags[(i // 2) % len(tags)], satisfies=i % 2 == 0)
        for i in range(n)
    ]
