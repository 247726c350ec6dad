"""`reconstruction`: UAE's Unified-GRPO reward — how close the reconstruction is to the original.

The reconstruction program captions a real image (`trajectory.source_image`) and redraws it from
the caption (the `image` segment). The reward is the similarity of the two images under a
pluggable embedder (`rewards/similarity.py`): `clip`, `policy` (both need `model_path`),
`pixels`, `shapes`, or any `ImageSimilarity` object (e.g. `embedder: {_target_: my.Similarity}`).
The same score trains the caption in UAE's "generation for understanding" stage and the image in
"understanding for generation": which one is the reward term's `segments`.

`caption_reconstruction`: the caption redrawn by a *frozen* decoder instead (UAE's first stage,
whose decoder is a fixed generator: the reward is then a function of the caption alone). A
decoder that follows captions pays for every object a caption gets right; the policy's own
generator in the tiny checkpoint does not (it redraws a caption's first object as well as the
whole caption: `benchmarks/redraw_probe.py`), so training captions on its redraws shrinks them
to one object (README, "UAE after the eighth round"). Decoders (`DECODERS`, or any
`CaptionDecoder` object):

- `shapes`: the shapes world's renderer draws what a caption in the world's grammar says, at
  random places keeping its relation (`scene_of_caption`); the world's stand-in for a strong
  frozen text-to-image model, as the verifier stands in for a judge. A caption it cannot draw
  (outside the grammar, more objects than a scene holds) is an error naming the sample, unless
  `unparsed_score` sets its score;
- `{name: janus, model_path: DIR, ...}`: a frozen Janus checkpoint draws the caption in its image
  turn with CFG (e.g. the SFT checkpoint an RL run starts from, or Janus-Pro-7B beside a 1B
  policy): UAE's setting with real checkpoints. It draws every caption.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from coevolve.data.shapes.describe import scene_of_caption
from coevolve.data.shapes.scene import render
from coevolve.trajectory import CAPTION, IMAGE, Trajectory
from rewards.base import ScoreBatch, Scorer, check_segment_name, register_scorer, select_image
from rewards.similarity import EMBEDDERS, ImageSimilarity


def build_similarity(
    embedder: str | ImageSimilarity, model_path: str | None, batch_size: int | None, device: str | None, owner: str
) -> tuple[ImageSimilarity, str]:
    """The image similarity `embedder` names (or the given one) and the device it runs on."""
    model_options = {"model_path": model_path, "batch_size": batch_size, "device": device}
    given = [key for key, value in model_options.items() if value is not None]
    if isinstance(embedder, ImageSimilarity):
        if given:
            raise ValueError(f"{owner}: {given} configure the named embedders; the given one is built")
        return embedder, "cpu"
    if embedder not in EMBEDDERS:
        raise ValueError(f"{owner}: unknown embedder {embedder!r}; expected one of {', '.join(EMBEDDERS)}")
    cls = EMBEDDERS[embedder]
    if not cls.needs_model:
        if given:
            raise ValueError(f"{owner}: embedder {embedder!r} uses no model; remove {given}")
        return cls(), "cpu"
    if model_path is None:
        raise ValueError(f"{owner}: embedder {embedder!r} needs model_path")
    device = device or "cpu"
    return cls(model_path, device=device, batch_size=batch_size or 32), device


@register_scorer("reconstruction")
class Reconstruction(Scorer):
    """Similarity of `trajectory.source_image` and the reconstructed image segment.

    Args:
        embedder: "clip", "policy", "pixels", "shapes", or an `ImageSimilarity`.
        model_path: the checkpoint of "clip" (a CLIP/SigLIP-type model) or "policy" (a Janus
            checkpoint); must be absent for the others.
        segment: the reconstructed image ("image", "regen_image", or "final").
        batch_size, device: of the embedding model ("clip", "policy"; defaults 32 and "cpu").
    """

    def __init__(
        self,
        embedder: str | ImageSimilarity = "shapes",
        model_path: str | None = None,
        segment: str = IMAGE,
        batch_size: int | None = None,
        device: str | None = None,
    ):
        self.segment = check_segment_name(segment, "reconstruction")
        self.similarity, self.device = build_similarity(embedder, model_path, batch_size, device, "reconstruction")

    def score(self, trajectories: Sequence[Trajectory]) -> ScoreBatch:
        missing = [t.id for t in trajectories if t.source_image is None]
        if missing:
            raise ValueError(f"reconstruction: trajectories {missing} have no source_image")
        sources = [t.source_image for t in trajectories]
        return ScoreBatch(self.similarity(sources, [select_image(t, self.segment) for t in trajectories]))


class CaptionDecoder:
    """A frozen caption -> image generator: `__call__(captions, seeds)` gives one image per
    caption (drawn under its seed), or None for a caption it cannot draw."""

    def __call__(self, captions: Sequence[str], seeds: Sequence[int]) -> list[Image.Image | None]:
        raise NotImplementedError


class ShapesCaptionDecoder(CaptionDecoder):
    """The shapes world's renderer of a caption (`scene_of_caption`); see the module docstring."""

    def __call__(self, captions, seeds):
        scenes = [scene_of_caption(text, np.random.default_rng(seed)) for text, seed in zip(captions, seeds)]
        return [None if scene is None else render(scene) for scene in scenes]


class JanusCaptionDecoder(CaptionDecoder):
    """A frozen Janus checkpoint drawing each caption in its image turn (module docstring).

    Args:
        model_path: the checkpoint directory.
        guidance_weight, temperature: its CFG weight and image-token temperature.
        batch_size, device, dtype: of the drawing.
    """

    def __init__(
        self,
        model_path: str,
        guidance_weight: float = 5.0,
        temperature: float = 1.0,
        batch_size: int = 16,
        device: str = "cpu",
        dtype: str = "float32",
    ):
        from coevolve.model.adapter import JanusAdapter
        from coevolve.model.guidance import Guidance
        from coevolve.model.sampling import Sampling
        from coevolve.model.spec import check_janus_checkpoint
        from rewards.judge import DTYPES

        if dtype not in DTYPES:
            raise ValueError(f"caption_reconstruction.decoder: dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"caption_reconstruction.decoder: batch_size must be >= 1, got {batch_size}")
        check_janus_checkpoint(model_path, "caption_reconstruction.decoder.model_path")
        self.adapter = JanusAdapter.from_pretrained(model_path, dtype=DTYPES[dtype], device=device)
        self.guidance = Guidance(weight=guidance_weight)
        self.sampling = Sampling(temperature=temperature)
        self.batch_size, self.device = batch_size, device

    @torch.no_grad()
    def __call__(self, captions, seeds):
        from coevolve.model.sampling import row_generators

        images: list[Image.Image] = []
        for start in range(0, len(captions), self.batch_size):
            texts = [text.strip() for text in captions[start : start + self.batch_size]]
            drawn = self.adapter.sample_images(
                [self.adapter.image_prompt(text) for text in texts],
                guidance=self.guidance,
                sampling=self.sampling,
                generator=row_generators(seeds[start : start + self.batch_size]),
            )
            images += self.adapter.decode(drawn)
        return images


DECODERS: dict[str, type[CaptionDecoder]] = {"shapes": ShapesCaptionDecoder, "janus": JanusCaptionDecoder}


@register_scorer("caption_reconstruction")
class CaptionReconstruction(Scorer):
    """Similarity of `trajectory.source_image` and a frozen decoder's drawing of the caption.

    Args:
        decoder: "shapes", `{name: janus, model_path: ..., **options}`, or a `CaptionDecoder`
            (module docstring).
        embedder, model_path, batch_size, device: the image similarity, as in `reconstruction`.
        segment: the text segment the decoder draws (default "caption").
        unparsed_score: the score of a caption the decoder cannot draw; None (default) makes one
            an error naming the sample.
        draws: drawings per caption, their similarities averaged. A caption says what and how
            many, not where: each drawing's places are random, and their overlap with the source's
            is noise that one drawing passes on to the advantage (two samples of one caption, 0.79
            and 0.67). Drawing j of a caption is seeded with (seed, caption, j): the score is a
            function of the source and the caption, so equal captions of a group score equally.
        seed: see `draws`.
    """

    def __init__(
        self,
        decoder: str | Mapping | CaptionDecoder = "shapes",
        embedder: str | ImageSimilarity = "shapes",
        model_path: str | None = None,
        segment: str = CAPTION,
        unparsed_score: float | None = None,
        draws: int = 1,
        seed: int = 0,
        batch_size: int | None = None,
        device: str | None = None,
    ):
        if not isinstance(draws, int) or draws < 1:
            raise ValueError(f"caption_reconstruction: draws must be an integer >= 1, got {draws!r}")
        if isinstance(decoder, CaptionDecoder):
            self.decoder = decoder
        else:
            options = dict(decoder) if isinstance(decoder, Mapping) else {"name": decoder}
            name = options.pop("name", None)
            if name not in DECODERS:
                raise ValueError(
                    f"caption_reconstruction: unknown decoder {name!r}; expected one of {', '.join(DECODERS)}"
                )
            try:
                self.decoder = DECODERS[name](**options)
            except TypeError as error:  # a missing or unknown option
                raise ValueError(f"caption_reconstruction: decoder {name!r}: {error}") from error
        if unparsed_score is not None and not math.isfinite(unparsed_score):
            raise ValueError(f"caption_reconstruction: unparsed_score must be finite, got {unparsed_score}")
        self.segment = check_segment_name(segment, "caption_reconstruction")
        self.similarity, self.device = build_similarity(
            embedder, model_path, batch_size, device, "caption_reconstruction"
        )
        if torch.device(getattr(self.decoder, "device", "cpu")).type == "cuda":
            self.device = self.decoder.device  # the reward worker reserves the decoder's GPU
        self.unparsed_score, self.draws, self.seed = unparsed_score, draws, seed

    def score(self, trajectories: Sequence[Trajectory]) -> ScoreBatch:
        missing = [t.id for t in trajectories if t.source_image is None]
        if missing:
            raise ValueError(f"caption_reconstruction: trajectories {missing} have no source_image")
        captions = [t.text(self.segment) for t in trajectories]
        # Each distinct caption is drawn once (its drawings depend on its text alone): the captions
        # of a group often repeat.
        distinct = list(dict.fromkeys(captions))
        seeds = [zlib.crc32(f"{self.seed}/{j}/{text}".encode()) for text in distinct for j in range(self.draws)]
        images = self.decoder([text for text in distinct for _ in range(self.draws)], seeds)
        if len(images) != len(seeds):
            raise ValueError(f"decoder {self.decoder!r} returned {len(images)} images for {len(seeds)} drawings")
        drawings = {text: images[k * self.draws : (k + 1) * self.draws] for k, text in enumerate(distinct)}
        drawn = [drawings[text][0] is not None for text in captions]
        undrawable = [t.id for t, ok in zip(trajectories, drawn) if not ok]
        if undrawable and self.unparsed_score is None:
            raise ValueError(
                f"caption_reconstruction: decoder {type(self.decoder).__name__} cannot draw the captions of "
                f"{undrawable} (e.g. {captions[drawn.index(False)]!r}); set unparsed_score to score them"
            )
        kept = [i for i, ok in enumerate(drawn) if ok]
        scores = [self.unparsed_score] * len(trajectories)
        if kept:
            sources = [trajectories[i].source_image for i in kept for _ in range(self.draws)]
            values = self.similarity(sources, [image for i in kept for image in drawings[captions[i]]])
            means = np.asarray(values, dtype=np.float64).reshape(len(kept), self.draws).mean(axis=1)
            for i, mean in zip(kept, means):
                scores[i] = float(mean)
        details = [{"drawn": ok} for ok in drawn]
        return ScoreBatch(scores, details)
