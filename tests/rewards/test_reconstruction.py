"""`reconstruction`: each embedder scores a render against itself 1 and a different scene lower;
the verifier-parse similarity falls with the number of objects that differ."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from coevolve.data.shapes import COLOR_NAMES, SHAPES, Scene, ShapeObject, render
from coevolve.data.shapes.layout import random_boxes
from coevolve.data.shapes.prompts import balanced_examples
from coevolve.trajectory import CAPTION, IMAGE, Segment, Trajectory
from rewards import ImageSimilarity, Reconstruction, build_scorer
from rewards.check import shapes_pairs

PAIRS = shapes_pairs(18, seed=9)
SELF, OTHER = PAIRS[0::2], PAIRS[1::2]  # source vs itself; source vs the violating render


def _scores(scorer, trajectories) -> np.ndarray:
    return np.array(scorer.score(trajectories).scores)


def test_shapes_itself_is_one_a_different_scene_clearly_lower():
    scorer = Reconstruction(embedder="shapes")
    assert (_scores(scorer, SELF) == 1.0).all()
    other = _scores(scorer, OTHER)
    print(f"shapes similarity, render vs its violation: mean {other.mean():.3f}, max {other.max():.3f}")
    assert (other < 1.0).all() and other.mean() < 0.8
    # A render of an unrelated scene (another pair's source) scores lower still.
    unrelated = [
        Trajectory(
            id=f"u{i}",
            group="u",
            prompt="p",
            program="t",
            segments=[Segment(IMAGE, "image", image=b.source_image)],
            source_image=a.source_image,
        )
        for i, (a, b) in enumerate(itertools.pairwise(SELF))
    ]
    assert _scores(scorer, unrelated).mean() < 0.5


def _varied(rng: np.random.Generator, scene: Scene, k: int) -> Scene:
    """`scene` with `k` of its objects (chosen at random) redrawn in the same box with another shape and colour."""
    objects = list(scene.objects)
    for index in rng.choice(len(objects), size=k, replace=False):
        old = objects[index]
        shape = str(rng.choice([s for s in SHAPES if s != old.shape]))
        color = str(rng.choice([c for c in COLOR_NAMES if c != old.color]))
        objects[index] = ShapeObject(shape, color, old.box)
    return Scene(tuple(objects))


def differing_objects_figures(num_scenes: int = 30, num_objects: int = 4, seed: int = 0) -> list[float]:
    """Mean shapes similarity of a render to the same scene with k = 0..num_objects objects changed."""
    similarity = Reconstruction(embedder="shapes").similarity
    means = []
    for k in range(num_objects + 1):
        values = []
        for s in range(num_scenes):
            rng = np.random.default_rng([seed, s])
            boxes = random_boxes(rng, num_objects)
            scene = Scene(tuple(ShapeObject(str(rng.choice(SHAPES)), str(rng.choice(COLOR_NAMES)), b) for b in boxes))
            values.extend(similarity([render(scene)], [render(_varied(rng, scene, k))]))
        means.append(float(np.mean(values)))
    return means


def test_shapes_similarity_falls_with_each_differing_object():
    means = differing_objects_figures()
    print("shapes similarity by number of differing objects (of 4), 30 scenes each:", [round(m, 3) for m in means])
    assert means[0] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(means))  # non-increasing
    assert all(a > b for a, b in itertools.pairwise(means))  # in fact strictly, at every step
    assert means[-1] < 0.5


def test_pixels():
    scorer = Reconstruction(embedder="pixels")
    assert (_scores(scorer, SELF) == 1.0).all()
    assert (_scores(scorer, OTHER) < 1.0).all()


@pytest.mark.parametrize("model", ["tiny_clip_dir", "tiny_siglip_dir"])
def test_clip_embedder_by_path(model, request):
    from transformers import AutoModel, AutoProcessor

    path = request.getfixturevalue(model)
    scorer = Reconstruction(embedder="clip", model_path=str(path), batch_size=5)
    np.testing.assert_allclose(_scores(scorer, SELF), 1.0, atol=1e-5)
    other = _scores(scorer, OTHER)
    assert (other < 1.0 - 1e-6).all()
    # The cosine of the model's own image features, computed here by hand.
    model_, processor = AutoModel.from_pretrained(path), AutoProcessor.from_pretrained(path)
    with torch.no_grad():
        a = model_.get_image_features(
            **processor(images=[t.source_image for t in OTHER], return_tensors="pt")
        ).pooler_output
        b = model_.get_image_features(
            **processor(images=[t.image("image") for t in OTHER], return_tensors="pt")
        ).pooler_output
    np.testing.assert_allclose(other, torch.nn.functional.cosine_similarity(a, b).numpy(), rtol=1e-4)


def test_policy_embedder_is_the_janus_vision_encoder(tiny_checkpoint, tiny_adapter):
    scorer = Reconstruction(embedder="policy", model_path=str(tiny_checkpoint))
    np.testing.assert_allclose(_scores(scorer, SELF), 1.0, atol=1e-5)
    other = _scores(scorer, OTHER)
    assert (other < 1.0 - 1e-6).all()
    pixels = tiny_adapter.processor.image_processor(
        [t.source_image for t in OTHER[:2]] + [t.image("image") for t in OTHER[:2]], return_tensors="pt"
    )
    with torch.no_grad():
        pooled = tiny_adapter.model.model.vision_model(pixels["pixel_values"]).last_hidden_state.mean(1)
    np.testing.assert_allclose(
        other[:2], torch.nn.functional.cosine_similarity(pooled[:2], pooled[2:]).numpy(), rtol=1e-4
    )


class HalfPixels(ImageSimilarity):
    """A user's similarity, plugged in by `_target_`."""

    def __call__(self, sources, targets):
        return [0.5 for _ in sources]


def test_user_similarity_by_target_and_bad_options():
    scorer = build_scorer({"name": "reconstruction", "embedder": {"_target_": f"{__name__}.HalfPixels"}})
    assert scorer.score(SELF[:3]).scores == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="uses no model; remove"):
        Reconstruction(embedder="shapes", model_path="/somewhere")
    with pytest.raises(ValueError, match="'clip' needs model_path"):
        Reconstruction(embedder="clip")
    with pytest.raises(ValueError, match="unknown embedder 'dino'"):
        Reconstruction(embedder="dino")
    orphan = Trajectory(
        id="lonely", group="g", prompt="p", program="t", segments=[Segment(IMAGE, "image", image=SELF[0].source_image)]
    )
    with pytest.raises(ValueError, match=r"\['lonely'\] have no source_image"):
        Reconstruction().score([orphan])


def _captioned(source, text: str, index: int) -> Trajectory:
    return Trajectory(
        id=f"c{index}", group="g", prompt="p", program="reconstruction",
        segments=[Segment(CAPTION, "text", text=text)], source_image=source,
    )


def test_a_frozen_shapes_decoder_pays_for_every_object_a_caption_gets_right():
    """Two-object scenes: the true caption, its first object alone, a wrong caption of the same shape."""
    from coevolve.data.shapes.describe import caption, caption_objects

    scorer = build_scorer({"name": "caption_reconstruction", "decoder": "shapes"})
    scenes = [e.scene for e in balanced_examples(120, seed=5) if e.satisfies and len(e.scene.objects) == 2]
    assert len(scenes) >= 20
    full, first, wrong = [], [], []
    for i, scene in enumerate(scenes):
        source = render(scene)
        a = scene.objects[0]
        swapped = Scene(tuple(ShapeObject(o.shape, next(c for c in COLOR_NAMES if c != o.color), o.box) for o in scene.objects))
        captions = (caption(scene), caption(Scene((a,))), caption(swapped))
        assert caption_objects(captions[2]) != caption_objects(captions[0])
        scores = _scores(scorer, [_captioned(source, text, i) for text in captions])
        for out, value in zip((full, first, wrong), scores):
            out.append(value)
    full, first, wrong = map(np.array, (full, first, wrong))
    print(f"caption_reconstruction (shapes decoder), {len(scenes)} two-object scenes: full {full.mean():.3f}, "
          f"first object {first.mean():.3f}, every colour wrong {wrong.mean():.3f}")
    # Each right object earns shape + colour (2/3) over the larger count, plus its box overlap.
    assert (full >= 2 / 3).all() and (full > first).all() and (full > wrong).all()
    assert (first >= 1 / 3).all() and (first < 2 / 3).all()


def test_caption_reconstruction_is_a_function_of_the_trajectory_and_names_what_it_cannot_draw():
    source = render(Scene((ShapeObject("circle", "red", (8, 8, 28, 28)),)))
    scorer = build_scorer({"name": "caption_reconstruction"})
    # equal captions score equally (the drawing is seeded by the caption, not the sample) ...
    sample = [_captioned(source, "a red circle", i) for i in range(3)] + [_captioned(source, "a red circle.", 3)]
    one = _scores(scorer, sample)
    assert len(set(one[:3].tolist())) == 1 and one[3] != one[0] and one.tolist() == _scores(scorer, sample).tolist()
    # ... and more drawings average the places out: towards shape + colour right (2/3) + the mean overlap
    many = _scores(build_scorer({"name": "caption_reconstruction", "draws": 64}), sample[:1])[0]
    assert 2 / 3 <= many < 0.8 and many == _scores(build_scorer({"name": "caption_reconstruction", "draws": 64}), sample[:1])[0]
    with pytest.raises(ValueError, match="draws must be an integer >= 1, got 0"):
        build_scorer({"name": "caption_reconstruction", "draws": 0})
    salad = [_captioned(source, "a red circle", 0), _captioned(source, "circle above to the right of", 1)]
    with pytest.raises(ValueError, match=r"cannot draw the captions of \['c1'\] \(e.g. 'circle above"):
        scorer.score(salad)
    scored = build_scorer({"name": "caption_reconstruction", "unparsed_score": 0.0, "draws": 3}).score(salad)
    assert scored.scores[1] == 0.0 and scored.scores[0] >= 2 / 3  # the right shape and colour, anywhere
    assert [d["drawn"] for d in scored.details] == [True, False]
    with pytest.raises(ValueError, match="unknown decoder 'sd3'"):
        build_scorer({"name": "caption_reconstruction", "decoder": "sd3"})
    with pytest.raises(ValueError, match="caption_reconstruction: embedder 'shapes' uses no model"):
        build_scorer({"name": "caption_reconstruction", "model_path": "/somewhere"})


def test_a_frozen_janus_checkpoint_as_the_decoder(tiny_checkpoint, tmp_path):
    """The tiny checkpoint draws each caption under its trajectory's seed: the same trajectory gets
    the same drawing (and score), another seed another drawing."""
    from rewards.reconstruction import JanusCaptionDecoder

    decoder = JanusCaptionDecoder(model_path=str(tiny_checkpoint), guidance_weight=3.0, batch_size=2)
    captions = ["a red circle", "two blue squares", "a red circle"]
    first, again, other = decoder(captions, [1, 2, 3]), decoder(captions, [1, 2, 3]), decoder(captions, [9, 9, 9])
    as_array = lambda images: [np.asarray(image) for image in images]
    assert all((a == b).all() for a, b in zip(as_array(first), as_array(again)))
    assert any((a != b).any() for a, b in zip(as_array(first), as_array(other)))
    assert first[0].size == SELF[0].source_image.size
    scorer = build_scorer(
        {"name": "caption_reconstruction", "decoder": {"name": "janus", "model_path": str(tiny_checkpoint), "guidance_weight": 3.0}}
    )
    sample = [_captioned(SELF[i].source_image, text, i) for i, text in enumerate(captions)]
    scores = _scores(scorer, sample)
    assert ((0 <= scores) & (scores <= 1)).all() and scores.tolist() == _scores(scorer, sample).tolist()
    (tmp_path / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(ValueError, match=r"caption_reconstruction.decoder.model_path: .* is a 'clip' checkpoint"):
        build_scorer({"name": "caption_reconstruction", "decoder": {"name": "janus", "model_path": str(tmp_path)}})
    with pytest.raises(ValueError, match=r"decoder 'janus': .*unexpected keyword argument 'cfg'"):
        build_scorer({"name": "caption_reconstruction", "decoder": {"name": "janus", "model_path": str(tiny_checkpoint), "cfg": 2}})
