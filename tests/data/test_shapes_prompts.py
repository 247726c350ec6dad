"""Prompts and GenEval metadata of the shapes world: schema, sampling, validation errors."""

import collections
import json
import re

import pytest

from coevolve.data.shapes.metadata import (TAGS, color_attr_metadata, colors_metadata,
                                           counting_metadata, make_plural, position_metadata,
                                           single_object_metadata, two_object_metadata,
                                           validate_metadata, with_article)
from coevolve.data.shapes.prompts import balanced_examples, derive_seed, sample_example
from coevolve.data.shapes.relations import RELATIONS
from coevolve.data.shapes.scene import COLOR_NAMES, SHAPES

SEEDS = range(60)


def test_tags_are_genevals():
    assert TAGS == ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def test_builders_write_genevals_exact_records():
    # Literal lines as GenEval's create_prompts.py would write them (json.dumps, key order).
    assert json.dumps(single_object_metadata("circle")) == (
        '{"tag": "single_object", "include": [{"class": "circle", "count": 1}], '
        '"prompt": "a photo of a circle"}')
    assert json.dumps(counting_metadata("cross", 3)) == (
        '{"tag": "counting", "include": [{"class": "cross", "count": 3}], '
        '"exclude": [{"class": "cross", "count": 4}], "prompt": "a photo of three crosses"}')
    assert json.dumps(position_metadata("circle", "left of", "square")) == (
        '{"tag": "position", "include": [{"class": "square", "count": 1}, '
        '{"class": "circle", "count": 1, "position": ["left of", 0]}], '
        '"prompt": "a photo of a circle left of a square"}')
    assert two_object_metadata("circle", "square")["prompt"] == "a photo of a circle and a square"
    assert colors_metadata("triangle", "orange") == {
        "tag": "colors", "include": [{"class": "triangle", "count": 1, "color": "orange"}],
        "prompt": "a photo of an orange triangle"}
    assert color_attr_metadata("circle", "red", "square", "blue")["prompt"] == (
        "a photo of a red circle and a blue square")


def test_article_and_plural_rules_are_genevals():
    assert with_article("orange circle") == "an orange circle"
    assert with_article("square") == "a square"
    assert make_plural("cross") == "crosses"
    assert make_plural("circle") == "circles"


_SCHEMA = {
    "single_object": ({"tag", "include", "prompt"}, [{"class", "count"}]),
    "two_object": ({"tag", "include", "prompt"}, [{"class", "count"}] * 2),
    "counting": ({"tag", "include", "exclude", "prompt"}, [{"class", "count"}]),
    "colors": ({"tag", "include", "prompt"}, [{"class", "count", "color"}]),
    "position": ({"tag", "include", "prompt"}, [{"class", "count"},
                                                {"class", "count", "position"}]),
    "color_attr": ({"tag", "include", "prompt"}, [{"class", "count", "color"}] * 2),
}
_NUMBER = {"two": 2, "three": 3, "four": 4}
_PROMPT = {
    "single_object": r"a photo of an? (\w+)",
    "two_object": r"a photo of an? (\w+) and an? (\w+)",
    "counting": r"a photo of (two|three|four) (\w+)",
    "colors": r"a photo of an? (\w+) (\w+)",
    "position": r"a photo of an? (\w+) (left of|right of|above|below) an? (\w+)",
    "color_attr": r"a photo of an? (\w+) (\w+) and an? (\w+) (\w+)",
}


@pytest.mark.parametrize("tag", TAGS)
def test_sampled_metadata_follows_genevals_schema(tag):
    top_keys, clause_keys = _SCHEMA[tag]
    for seed in SEEDS:
        ex = sample_example(seed, tag)
        md = ex.metadata
        assert json.loads(json.dumps(md)) == md  # JSON-serialisable, lists not tuples
        assert set(md) == top_keys and md["tag"] == tag and md["prompt"] == ex.prompt
        assert [set(c) for c in md["include"]] == clause_keys
        for clause in md["include"]:
            assert clause["class"] in SHAPES and type(clause["count"]) is int
            assert clause.get("color", "red") in COLOR_NAMES
        match = re.fullmatch(_PROMPT[tag], ex.prompt)
        assert match, ex.prompt
        inc = md["include"]
        if tag == "counting":
            count = inc[0]["count"]
            assert 2 <= count <= 4 and _NUMBER[match[1]] == count
            assert md["exclude"] == [{"class": inc[0]["class"], "count": count + 1}]
            assert match[2] == inc[0]["class"] + ("es" if inc[0]["class"] == "cross" else "s")
        elif tag == "position":
            assert inc[1]["position"] == [match[2], 0] and inc[1]["position"][0] in RELATIONS
            assert (match[1], match[3]) == (inc[1]["class"], inc[0]["class"])
            assert inc[0]["class"] != inc[1]["class"]
        elif tag in ("two_object", "color_attr"):
            assert inc[0]["class"] != inc[1]["class"]
        if tag == "color_attr":
            assert inc[0]["color"] != inc[1]["color"]
            assert match.groups() == (inc[0]["color"], inc[0]["class"], inc[1]["color"],
                                      inc[1]["class"])


@pytest.mark.parametrize("tag", TAGS)
def test_positive_scenes_hold_only_the_prompted_objects(tag):
    for seed in SEEDS:
        ex = sample_example(seed, tag)
        assert ex.satisfies and ex.violation is None
        wanted = collections.Counter()
        for clause in ex.metadata["include"]:
            wanted[clause["class"]] += clause["count"]
        assert collections.Counter(o.shape for o in ex.scene.objects) == wanted
        for clause in ex.metadata["include"]:
            if "color" in clause:
                assert any(o.shape == clause["class"] and o.color == clause["color"]
                           for o in ex.scene.objects)
        assert ex.plan.startswith("Plan: ") and ex.plan.endswith(".")


_VIOLATION = {
    "single_object": r"there is no (circle|square|triangle|cross)",
    "two_object": r"there is no (circle|square|triangle|cross)",
    "counting": r"there (is 1 \w+|are \d \w+), not \d",
    "colors": r"the \w+ is \w+, not \w+",
    "position": r"the \w+ is (left of|right of|above|below) the \w+, not "
                r"(left of|right of|above|below) it",
    "color_attr": r"the \w+ is \w+, not \w+, and the \w+ is \w+, not \w+",
}


@pytest.mark.parametrize("tag", TAGS)
def test_negatives_share_the_prompt_and_plan_and_say_what_is_wrong(tag):
    for seed in SEEDS:
        pos, neg = sample_example(seed, tag), sample_example(seed, tag, satisfies=False)
        assert (neg.prompt, neg.metadata, neg.plan) == (pos.prompt, pos.metadata, pos.plan)
        assert not neg.satisfies and re.fullmatch(_VIOLATION[tag], neg.violation), neg.violation
        assert neg.scene != pos.scene and neg.caption != pos.caption
        if tag == "counting":
            n, wanted = len(neg.scene.objects), neg.metadata["include"][0]["count"]
            assert abs(n - wanted) == 1 and f"not {wanted}" in neg.violation
        if tag == "colors":
            clause = neg.metadata["include"][0]
            assert neg.scene.objects[0].color != clause["color"]
            assert neg.violation.endswith(f"not {clause['color']}")


def test_counting_negatives_cover_both_directions():
    deltas = {len(sample_example(s, "counting", False).scene.objects)
              - sample_example(s, "counting").metadata["include"][0]["count"] for s in SEEDS}
    assert deltas == {-1, 1}


def test_sampling_is_deterministic_in_seed():
    for tag in TAGS:
        a, b = sample_example(11, tag, False), sample_example(11, tag, False)
        assert a == b and a.render().tobytes() == b.render().tobytes()
    prompts = {sample_example(s, "color_attr").prompt for s in range(30)}
    assert len(prompts) > 20  # different seeds, different draws
    assert derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(0, 2) != derive_seed(1, 1)


def test_balanced_examples_are_balanced_over_tags_and_labels():
    examples = balanced_examples(120, seed=5)
    counts = collections.Counter((e.tag, e.satisfies) for e in examples)
    assert counts == {(tag, sat): 10 for tag in TAGS for sat in (True, False)}
    assert [e.seed for e in examples] == [derive_seed(5, i) for i in range(120)]
    assert balanced_examples(12, seed=5) == examples[:12]


def test_sample_example_rejects_unknown_tag_and_bad_seed():
    with pytest.raises(ValueError, match="unknown tag 'shapes'"):
        sample_example(0, "shapes")
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        sample_example(-1, "colors")
    with pytest.raises(ValueError, match="unknown tag 'colours'"):
        balanced_examples(4, 0, tags=("colours",))


# -- validate_metadata ---------------------------------------------------------------------

_GOOD = {"tag": "position",
         "include": [{"class": "square", "count": 1},
                     {"class": "circle", "count": 1, "position": ["left of", 0]}],
         "prompt": "a photo of a circle left of a square"}


def _bad(path, value):
    md = json.loads(json.dumps(_GOOD))
    target = md
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return md


_DELETE = object()


@pytest.mark.parametrize("metadata, message", [
    (_bad(["tag"], "spatial"), "unknown tag 'spatial' in metadata['tag']"),
    (_bad(["tag"], _DELETE), "metadata is missing 'tag'"),
    (_bad(["include"], _DELETE), "metadata is missing 'include'"),
    (_bad(["include"], []), "metadata['include'] must be a non-empty list, got []"),
    (_bad(["include", 0, "class"], "dog"),
     "unknown class 'dog' in metadata['include'][0]['class']"),
    (_bad(["include", 0, "count"], 0),
     "metadata['include'][0]['count'] must be a positive int, got 0"),
    (_bad(["include", 0, "count"], "2"),
     "metadata['include'][0]['count'] must be a positive int, got '2'"),
    (_bad(["include", 0, "count"], True),
     "metadata['include'][0]['count'] must be a positive int, got True"),
    (_bad(["include", 0, "count"], _DELETE), "metadata['include'][0] is missing 'count'"),
    (_bad(["include", 0, "colour"], "red"), "unknown key 'colour' in metadata['include'][0]"),
    (_bad(["include", 0, "color"], "teal"),
     "unknown colour 'teal' in metadata['include'][0]['color']"),
    (_bad(["include", 1, "position"], ["behind", 0]),
     "unknown relation 'behind' in metadata['include'][1]['position']"),
    (_bad(["include", 1, "position"], ["left of", 1]),
     "metadata['include'][1]['position'] target 1 is out of range"),
    (_bad(["include", 1, "position"], ["left of", -1]),
     "metadata['include'][1]['position'] target -1 is out of range"),
    (_bad(["include", 1, "position"], "left of"),
     "metadata['include'][1]['position'] must be [relation, target], got 'left of'"),
    (_bad(["include", 0, "position"], ["left of", 0]),
     "metadata['include'][0]['position'] target 0 is out of range"),
    (_bad(["exclude"], [{"class": "square", "count": 2, "color": "red"}]),
     "unknown key 'color' in metadata['exclude'][0]"),
    (_bad(["exclude"], [{"class": "square", "count": -3}]),
     "metadata['exclude'][0]['count'] must be a positive int, got -3"),
    (_bad(["prompt"], 3), "metadata['prompt'] must be a string, got 3"),
    ([1, 2], "metadata must be a dict, got list"),
    ('{"tag": "colors", ', "metadata is not valid JSON"),
])
def test_validate_metadata_names_the_culprit(metadata, message):
    with pytest.raises(ValueError) as err:
        validate_metadata(metadata)
    assert message in str(err.value)


def test_validate_metadata_normalises_and_copies():
    md = dict(_GOOD, include=[_GOOD["include"][0], {"class": "circle", "count": 1,
                                                    "position": ("left of", 0)}])
    out = validate_metadata(md)
    assert out == _GOOD and out["include"][1]["position"] == ["left of", 0]
    assert validate_metadata(json.dumps(_GOOD)) == _GOOD
    out["include"].clear()
    assert md["include"]  # a copy, not the caller's dict
