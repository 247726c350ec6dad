"""How often the verifier agrees with the ground truth, on clean or transformed renders.

``verifier_accuracy`` renders balanced seeded examples (half satisfying, half violating,
balanced over the six tags), optionally passes the images through a ``transform`` in batches
(e.g. a VQ encode -> decode), and compares the verifier's verdict with the label. With
``positives_only=True`` it measures *fidelity*: the fraction of ground-truth renders still
accepted after the transform.

``degrade`` is a cheap stand-in for a lossy image tokenizer (blur, noise, JPEG) for checking
robustness without a model.
"""

from __future__ import annotations

import functools
import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .metadata import TAGS
from .prompts import balanced_examples, derive_seed, sample_example
from .scene import BACKGROUND, COLORS, SHAPES, draw_shape
from .verifier import verify

ImageTransform = Callable[[list[Image.Image]], list[Image.Image]]


def degrade(images: list[Image.Image], seed: int = 0, blur: float = 0.8, noise: float = 8.0,
            jpeg_quality: int = 75, chroma_subsampling: bool = False) -> list[Image.Image]:
    """Blur (Gaussian, ``blur`` px radius), add Gaussian noise (``noise`` std in 0..255 units),
    then round-trip through JPEG at ``jpeg_quality``. The noise is drawn from ``seed`` and the
    image's bytes, so an image is degraded the same way whatever batch it comes in.

    JPEG keeps full colour resolution (4:4:4) unless ``chroma_subsampling``: the 4:2:0 that
    PIL uses by default halves colour resolution, and green, orange and purple differ from the
    grey background almost only in colour, so a 12px shape of theirs loses its outline —
    harsher than anything an image tokenizer trained on these renders is expected to do.
    """
    out = []
    for image in images:
        image = image.convert("RGB")
        rng = np.random.default_rng([seed, zlib.crc32(image.tobytes())])
        blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(blur)), float)
        noisy = np.clip(blurred + rng.normal(0.0, noise, blurred.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, format="JPEG", quality=jpeg_quality,
                                   subsampling=2 if chroma_subsampling else 0)
        buffer.seek(0)
        out.append(Image.open(buffer).convert("RGB"))
    return out


DEBRIS_SIDES = (3, 8)
"""Visible extent (inclusive) of a debris fragment: under the verifier's ``MIN_SIDE`` of 9."""
DEBRIS_BACKGROUND_TOLERANCE = 24


def add_debris(image: Image.Image, rng: np.random.Generator, count: int) -> Image.Image:
    """``image`` with ``count`` fragments of the world's shapes in its colours, each 2 pixels clear
    of anything drawn: what the tiny generator leaves beside its shapes. Half are whole shapes
    3 to 8 pixels wide, half are shapes of object size cut by the image's border so that 3 to 8
    pixels of them show. Every fragment is narrower than the verifier's ``MIN_SIDE``, so the
    verifier reads the same objects (and a caption of the image stays true); a reader has to
    learn to pass over them rather than count them (an SFT checkpoint names more objects than the
    verifier finds on 36% of its own images: README, "Twelfth round")."""
    out = image.convert("RGB").copy()
    pixels = np.asarray(out)
    # Near the background grey: a VQ-decoded image's background is not exactly it.
    free = (np.abs(pixels.astype(int) - np.array(BACKGROUND)) <= DEBRIS_BACKGROUND_TOLERANCE).all(-1)
    size = free.shape[0]
    draw = ImageDraw.Draw(out)
    colors = list(COLORS.values())
    low, high = DEBRIS_SIDES
    for _ in range(count):
        for _ in range(50):  # a fragment that finds no clear spot in 50 draws is left out
            shown = int(rng.integers(low, high + 1))
            if rng.random() < 0.5:  # a small whole shape
                x, y = (int(v) for v in rng.integers(0, size - shown + 1, size=2))
                box, visible = (x, y, x + shown, y + shown), (x, y, x + shown, y + shown)
            else:  # an object-sized shape, `shown` pixels of it inside one border
                side, along = int(rng.integers(12, 21)), int(rng.integers(0, size - 20))
                edge = int(rng.integers(4))
                box = (size - shown, along, size - shown + side, along + side) if edge == 0 else \
                      (shown - side, along, shown, along + side) if edge == 1 else \
                      (along, size - shown, along + side, size - shown + side) if edge == 2 else \
                      (along, shown - side, along + side, shown)  # fmt: skip
                visible = (max(0, box[0]), max(0, box[1]), min(size, box[2]), min(size, box[3]))
            x0, y0, x1, y1 = visible
            if free[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2].all():
                shape = SHAPES[int(rng.integers(len(SHAPES)))]
                draw_shape(draw, shape, box, colors[int(rng.integers(len(colors)))])
                free[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = False
                break
    return out


def verifier_accuracy(n: int = 1000, seed: int = 0, transform: ImageTransform | None = None,
                      positives_only: bool = False, batch_size: int = 64) -> dict:
    """Agreement of the verifier with the labels on ``n`` seeded examples.

    Examples are ``balanced_examples(n, seed)``, or with ``positives_only`` the satisfying
    example of each of those seeds. ``transform`` maps a batch (list, at most ``batch_size``)
    of rendered 64x64 RGB images to as many images of the same size.

    Returns ``{"n", "correct", "accuracy", "positives": {...}, "negatives": {...},
    "per_tag": {tag: {...}}}`` where each ``{...}`` is ``{"n", "correct", "accuracy"}``
    (accuracy is None for an empty group). Accuracy on positives is the acceptance rate
    (fidelity), on negatives the rejection rate.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if positives_only:
        examples = [sample_example(derive_seed(seed, i), TAGS[(i // 2) % len(TAGS)])
                    for i in range(n)]
    else:
        examples = balanced_examples(n, seed)

    agree: list[bool] = []
    for start in range(0, n, batch_size):
        batch = examples[start:start + batch_size]
        images = [example.render() for example in batch]
        if transform is not None:
            images = list(transform(images))
            if len(images) != len(batch):
                raise ValueError(f"transform returned {len(images)} images for a batch of "
                                 f"{len(batch)}")
        for example, image in zip(batch, images):
            agree.append(verify(image, example.metadata).correct == example.satisfies)

    def summary(keep) -> dict:
        picked = [ok for ex, ok in zip(examples, agree) if keep(ex)]
        return {"n": len(picked), "correct": sum(picked),
                "accuracy": sum(picked) / len(picked) if picked else None}

    result = summary(lambda ex: True)
    result["positives"] = summary(lambda ex: ex.satisfies)
    result["negatives"] = summary(lambda ex: not ex.satisfies)
    result["per_tag"] = {tag: summary(lambda ex, tag=tag: ex.tag == tag) for tag in TAGS}
    return result


def robustness_report(n: int = 1000, seed: int = 0) -> dict:
    """The verifier's figures on ``n`` examples drawn with ``seed``: ``clean`` (balanced
    accuracy on renders), ``degraded_positives`` (fidelity after ``degrade``) and
    ``degraded_positives_jpeg420`` (the same with JPEG's 4:2:0 chroma subsampling), each a
    ``verifier_accuracy`` dict."""
    degraded = functools.partial(degrade, seed=seed)
    return {
        "clean": verifier_accuracy(n, seed),
        "degraded_positives": verifier_accuracy(n, seed, degraded, positives_only=True),
        "degraded_positives_jpeg420": verifier_accuracy(
            n, seed, functools.partial(degraded, chroma_subsampling=True), positives_only=True),
    }
