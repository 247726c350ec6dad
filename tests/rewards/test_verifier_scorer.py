"""`shapes_verifier` on seeded shapes pairs: binary and graded, the image it reads, missing metadata."""

from __future__ import annotations

import pytest

from coevolve.data.shapes import SHAPES, TAGS, derive_seed, sample_example
from coevolve.data.shapes.metadata import NUMBERS, make_plural
from coevolve.trajectory import DESCRIPTION, IMAGE, REGEN_IMAGE, Segment, Trajectory
from rewards import FINAL, SOURCE, ShapesVerifier
from rewards.check import shapes_pairs
from rewards.shapes_verifier import GENEVAL

PAIRS = shapes_pairs(24, seed=11)
POSITIVES, NEGATIVES = PAIRS[0::2], PAIRS[1::2]


def test_binary_scores_ground_truth_and_violations():
    verifier = ShapesVerifier()
    assert verifier.score(POSITIVES).scores == [1.0] * len(POSITIVES)
    negatives = verifier.score(NEGATIVES)
    assert negatives.scores == [0.0] * len(NEGATIVES)
    assert all(not d["correct"] and d["reasons"] for d in negatives.details)


def test_graded_is_the_fraction_of_clauses_met():
    graded = ShapesVerifier(graded=True).score(NEGATIVES)
    by_tag = {t.metadata["tag"]: s for t, s in zip(NEGATIVES, graded.scores)}
    assert by_tag["two_object"] == 0.5  # one of the two objects is replaced
    assert by_tag["single_object"] == 0.0
    assert all(0.0 <= s < 1.0 for s in graded.scores)
    assert [d["clauses_met"] for d in graded.details] == graded.scores


def test_segment_selects_the_image_read():
    positive, trajectory = shapes_pairs(1, seed=3)  # the negative's first image violates the prompt
    trajectory.segments.append(Segment(REGEN_IMAGE, "image", image=positive.image("image")))
    assert ShapesVerifier().score([trajectory]).scores == [0.0]
    assert ShapesVerifier(segment=REGEN_IMAGE).score([trajectory]).scores == [1.0]
    assert ShapesVerifier(segment=FINAL).score([trajectory]).scores == [1.0]  # the regenerated image when there is one
    # SOURCE: the image the trajectory started from (a self-check's judged image).
    trajectory.source_image = None
    with pytest.raises(ValueError, match=r"trajectory 'pair0/negative' has no source image \(segment 'source'\)"):
        ShapesVerifier(segment=SOURCE).score([trajectory])
    trajectory.source_image = positive.image("image")
    assert ShapesVerifier(segment=SOURCE).score([trajectory]).scores == [1.0]


def test_missing_metadata_names_the_sample():
    trajectory = shapes_pairs(1, seed=3)[0]
    trajectory.metadata.clear()
    with pytest.raises(KeyError, match="pair0/positive"):
        ShapesVerifier().score([trajectory])


def _described(i: int, image, description: str) -> Trajectory:
    segments = [Segment(IMAGE, "image", image=image), Segment(DESCRIPTION, "text", text=description)]
    return Trajectory(id=f"d{i}", group=f"d{i}", prompt="a photo of a thing", program="introspective_t2i",
                      segments=segments)  # fmt: skip


def test_text_checks_what_a_description_claims_about_the_image():
    """With `text`, the claims are those of the description (exactly the objects it names): its own
    scene's caption holds on a render, another scene's does not, and a text outside the caption
    grammar gets `unparsed_score`."""
    examples = [sample_example(derive_seed(5, i), tag) for i, tag in enumerate(TAGS)]
    renders = [example.render() for example in examples]
    own = [_described(i, image, " " + example.caption) for i, (image, example) in enumerate(zip(renders, examples))]
    swapped = [_described(i, image, " " + examples[(i + 1) % len(examples)].caption)
               for i, image in enumerate(renders)]  # fmt: skip
    binary = ShapesVerifier(text=DESCRIPTION, unparsed_score=0.0)
    assert binary.score(own).scores == [1.0] * len(own)
    assert binary.score(swapped).scores == [0.0] * len(swapped)
    graded = ShapesVerifier(text=DESCRIPTION, graded=True, unparsed_score=0.0).score(swapped)
    assert all(0.0 <= s < 1.0 for s in graded.scores) and len(set(graded.scores)) > 1
    off = [_described(0, renders[0], " four pink"), _described(1, renders[1], " a red circle above")]
    result = ShapesVerifier(text=DESCRIPTION, unparsed_score=-0.5).score(off)
    assert result.scores == [-0.5, -0.5] and [d["parsed"] for d in result.details] == [False, False]


def test_text_needs_an_unparsed_score_and_only_text_takes_one():
    with pytest.raises(ValueError, match=r"shapes_verifier: text 'description' needs a finite unparsed_score"):
        ShapesVerifier(text=DESCRIPTION)
    with pytest.raises(ValueError, match=r"shapes_verifier: unparsed_score applies with text or scene_of only"):
        ShapesVerifier(unparsed_score=0.0)


def _prompted(i: int, example, image, description: str) -> Trajectory:
    trajectory = _described(i, image, description)
    trajectory.metadata[GENEVAL] = example.metadata
    return trajectory


def test_scene_of_judges_the_prompt_on_the_scene_a_description_describes():
    """With `scene_of`, the prompt's metadata is checked on the described scene, not on the image:
    per category, the satisfying scene's caption passes and its violation's fails whichever image
    the trajectory holds; a description with more objects than the prompt asks for passes where
    GenEval's clauses allow them; a text outside the grammar gets `unparsed_score`."""
    judge = ShapesVerifier(scene_of=DESCRIPTION, unparsed_score=0.0)
    for i, tag in enumerate(TAGS * 3):
        seed = derive_seed(9, i)
        good, bad = sample_example(seed, tag), sample_example(seed, tag, satisfies=False)
        assert good.prompt == bad.prompt
        # The image is the other example's render: the judge must not read it.
        pair = [_prompted(i, good, bad.render(), " " + good.caption), _prompted(i, bad, good.render(), " " + bad.caption)]
        assert judge.score(pair).scores == [1.0, 0.0], (tag, good.caption, bad.caption)
    two = sample_example(derive_seed(9, 0), "two_object")
    (first, second) = two.scene.objects
    extra = f" a {first.color} {first.shape}, a {second.color} {second.shape} and a {first.color} {_other(two)}"
    counted = sample_example(derive_seed(9, 1), "counting")
    drawn = counted.scene.objects[0]
    over = f" {NUMBERS[len(counted.scene.objects) + 1]} {drawn.color} {make_plural(drawn.shape)}"
    result = judge.score([_prompted(0, two, two.render(), extra), _prompted(1, counted, counted.render(), over),
                          _prompted(2, two, two.render(), " four pink")])  # fmt: skip
    assert result.scores == [1.0, 0.0, 0.0]
    assert result.details[2] == {"correct": False, "parsed": False}


def _other(example) -> str:
    named = {obj.shape for obj in example.scene.objects}
    return next(shape for shape in SHAPES if shape not in named)


def test_scene_of_is_its_own_reading_and_needs_an_unparsed_score():
    with pytest.raises(ValueError, match=r"shapes_verifier: scene_of 'description' needs a finite unparsed_score"):
        ShapesVerifier(scene_of=DESCRIPTION)
    with pytest.raises(ValueError, match=r"give one"):
        ShapesVerifier(text=DESCRIPTION, scene_of=DESCRIPTION, unparsed_score=0.0)
    with pytest.raises(ValueError, match=r"scene_of 'description' judges a text's scene, not segment 'final'"):
        ShapesVerifier(scene_of=DESCRIPTION, segment=FINAL, unparsed_score=0.0)
