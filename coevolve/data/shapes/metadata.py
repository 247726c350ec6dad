"""GenEval prompt metadata for the shapes world: builders and the one validator.

The builders write exactly what GenEval's ``prompts/create_prompts.py`` writes to
``evaluation_metadata.jsonl`` (same keys, key order, wording, articles and plurals), with the
shapes world's class names in place of COCO's. Positions are JSON lists ``[relation, 0]``
(GenEval builds a tuple, which ``json.dumps`` writes as a list).

``validate_metadata`` is the single gate for metadata: the sampler and the verifier both call
it, so an unknown tag, class, colour or relation, or a malformed clause, fails the same way
everywhere with a message naming the key and the bad value.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .relations import RELATIONS
from .scene import COLOR_NAMES, SHAPES

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
"""GenEval's six task categories, in GenEval's order."""

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

_INCLUDE_KEYS = ("class", "count", "color", "position")
_EXCLUDE_KEYS = ("class", "count")


def with_article(name: str) -> str:
    """GenEval's article rule: "an" before a vowel letter, else "a"."""
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def make_plural(name: str) -> str:
    """GenEval's plural rule: "es" after a final "s", else "s" (so "crosses", "circles")."""
    return f"{name}es" if name[-1] in "s" else f"{name}s"


# -- builders: one per tag, mirroring create_prompts.py ---------------------------------------


def single_object_metadata(cls: str) -> dict:
    return validate_metadata(
        {"tag": "single_object", "include": [{"class": cls, "count": 1}],
         "prompt": f"a photo of {with_article(cls)}"}
    )


def two_object_metadata(cls_a: str, cls_b: str) -> dict:
    return validate_metadata(
        {"tag": "two_object",
         "include": [{"class": cls_a, "count": 1}, {"class": cls_b, "count": 1}],
         "prompt": f"a photo of {with_article(cls_a)} and {with_article(cls_b)}"}
    )


def counting_metadata(cls: str, count: int) -> dict:
    return validate_metadata(
        {"tag": "counting",
         "include": [{"class": cls, "count": count}],
         "exclude": [{"class": cls, "count": count + 1}],
         "prompt": f"a photo of {NUMBERS[count]} {make_plural(cls)}"}
    )


def colors_metadata(cls: str, color: str) -> dict:
    return validate_metadata(
        {"tag": "colors",
         "include": [{"class": cls, "count": 1, "color": color}],
         "prompt": f"a photo of {with_article(color)} {cls}"}
    )


def position_metadata(cls_a: str, relation: str, cls_b: str) -> dict:
    """"a photo of A <relation> B": B is include[0], A is include[1] positioned relative to it."""
    return validate_metadata(
        {"tag": "position",
         "include": [{"class": cls_b, "count": 1},
                     {"class": cls_a, "count": 1, "position": [relation, 0]}],
         "prompt": f"a photo of {with_article(cls_a)} {relation} {with_article(cls_b)}"}
    )


def color_attr_metadata(cls_a: str, color_a: str, cls_b: str, color_b: str) -> dict:
    return validate_metadata(
        {"tag": "color_attr",
         "include": [{"class": cls_a, "count": 1, "color": color_a},
                     {"class": cls_b, "count": 1, "color": color_b}],
         "prompt": f"a photo of {with_article(color_a)} {cls_a} and "
                   f"{with_article(color_b)} {cls_b}"}
    )


# -- validation ----------------------------------------------------------------------------


def validate_metadata(metadata: dict | str) -> dict:
    """Check GenEval metadata against the shapes world and return a normalised deep copy.

    Accepts a dict or its JSON text (one line of ``evaluation_metadata.jsonl``, or the
    ``metadata`` column of the shapes dataset). Requires ``tag`` (one of ``TAGS``) and a
    non-empty ``include`` list; ``exclude`` and ``prompt`` are optional; other top-level keys
    are kept and ignored. Each include clause needs ``class`` (one of ``SHAPES``) and
    ``count`` (int >= 1), and may have ``color`` (one of ``COLOR_NAMES``) and ``position``
    ``[relation, target]`` where ``target`` indexes an *earlier* include clause (GenEval
    looks it up among the groups matched so far). Exclude clauses have ``class`` and ``count``
    only. Unknown clause keys are rejected: a typo such as ``colour`` would otherwise silently
    drop a condition. Positions come back as lists.

    Raises ``ValueError`` naming the offending key path and value.
    """
    if isinstance(metadata, (str, bytes)):
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError as err:
            raise ValueError(f"metadata is not valid JSON ({err}): {metadata[:80]!r}") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}: {metadata!r}")
    out: dict[str, Any] = copy.deepcopy(metadata)

    if "tag" not in out:
        raise ValueError(f"metadata is missing 'tag': {metadata!r}")
    if out["tag"] not in TAGS:
        raise ValueError(
            f"unknown tag {out['tag']!r} in metadata['tag']; expected one of {', '.join(TAGS)}"
        )
    if "prompt" in out and not isinstance(out["prompt"], str):
        raise ValueError(f"metadata['prompt'] must be a string, got {out['prompt']!r}")
    if "include" not in out:
        raise ValueError(f"metadata is missing 'include': {metadata!r}")
    include = out["include"]
    if not isinstance(include, list) or not include:
        raise ValueError(f"metadata['include'] must be a non-empty list, got {include!r}")
    for i, clause in enumerate(include):
        _check_clause(clause, f"metadata['include'][{i}]", _INCLUDE_KEYS, earlier=i)
    exclude = out.get("exclude", [])
    if not isinstance(exclude, list):
        raise ValueError(f"metadata['exclude'] must be a list, got {exclude!r}")
    for i, clause in enumerate(exclude):
        _check_clause(clause, f"metadata['exclude'][{i}]", _EXCLUDE_KEYS, earlier=0)
    return out


def _check_clause(clause: Any, where: str, allowed: tuple[str, ...], earlier: int) -> None:
    if not isinstance(clause, dict):
        raise ValueError(f"{where} must be a dict, got {clause!r}")
    for key in clause:
        if key not in allowed:
            raise ValueError(f"unknown key {key!r} in {where}; allowed: {', '.join(allowed)}")
    for key in ("class", "count"):
        if key not in clause:
            raise ValueError(f"{where} is missing {key!r}: {clause!r}")
    if clause["class"] not in SHAPES:
        raise ValueError(
            f"unknown class {clause['class']!r} in {where}['class']; "
            f"expected one of {', '.join(SHAPES)}"
        )
    count = clause["count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"{where}['count'] must be a positive int, got {count!r}")
    if "color" in clause and clause["color"] not in COLOR_NAMES:
        raise ValueError(
            f"unknown colour {clause['color']!r} in {where}['color']; "
            f"expected one of {', '.join(COLOR_NAMES)}"
        )
    if "position" in clause:
        position = clause["position"]
        if not isinstance(position, (list, tuple)) or len(position) != 2:
            raise ValueError(f"{where}['position'] must be [relation, target], got {position!r}")
        relation, target = position
        if relation not in RELATIONS:
            raise ValueError(
                f"unknown relation {relation!r} in {where}['position']; "
                f"expected one of {', '.join(RELATIONS)}"
            )
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < earlier:
            raise ValueError(
                f"{where}['position'] target {target!r} is out of range: it must index an "
                f"earlier include clause (0..{earlier - 1})"
                if earlier
                else f"{where}['position'] target {target!r} is out of range: the first include "
                "clause has no earlier clause to be positioned against"
            )
        clause["position"] = [relation, target]
