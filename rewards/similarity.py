"""Image-to-image similarities for the reconstruction reward, by name (`EMBEDDERS`).

Each maps (sources, targets) — two equally long lists of PIL images — to one similarity per pair,
1 for identical images:

- `clip`: cosine of CLIP/SigLIP image embeddings (`rewards.clip.ClipEncoder`, a model by path);
- `policy`: cosine of the policy's own understanding encoder — the Janus vision model's last
  hidden states, mean-pooled over patches (a Janus checkpoint by path);
- `pixels`: 1 - mean absolute difference of RGB values in [0, 1] (targets resized to the source);
- `shapes`: structural similarity of the shapes verifier's parse (`detect`) of both images.
  Objects are paired by the assignment (Hungarian) that maximises the summed pair similarity,
  a pair's similarity being the mean of [same shape], [same colour] and the IoU of their boxes;
  the sum is divided by the larger object count, so a missing or extra object counts 0.
  Identical parses give 1 (two empty scenes too); each object that differs lowers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.optimize import linear_sum_assignment

from coevolve.data.shapes import Detection, detect


class ImageSimilarity:
    """Base of the similarities: `__call__(sources, targets) -> list[float]`, one per pair."""

    needs_model = False

    def __call__(self, sources: Sequence[Image.Image], targets: Sequence[Image.Image]) -> list[float]:
        raise NotImplementedError


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area else 0.0


def object_similarity(a: Detection, b: Detection) -> float:
    """Mean of [same shape], [same colour] and box IoU: 1 for the same object in the same place."""
    return ((a.shape == b.shape) + (a.color == b.color) + _box_iou(a.box, b.box)) / 3.0


def scene_similarity(source: Sequence[Detection], target: Sequence[Detection]) -> float:
    """Best pairing's summed object similarity over the larger object count (1.0 for two empty scenes)."""
    if not source and not target:
        return 1.0
    if not source or not target:
        return 0.0
    pair = np.array([[object_similarity(a, b) for b in target] for a in source])  # (|source|, |target|)
    rows, cols = linear_sum_assignment(pair, maximize=True)
    return float(pair[rows, cols].sum() / max(len(source), len(target)))


class ShapesSimilarity(ImageSimilarity):
    def __call__(self, sources, targets):
        return [scene_similarity(detect(s), detect(t)) for s, t in zip(sources, targets)]


class PixelSimilarity(ImageSimilarity):
    def __call__(self, sources, targets):
        out = []
        for source, target in zip(sources, targets):
            a = np.asarray(source.convert("RGB"), dtype=np.float32) / 255.0
            if target.size != source.size:
                target = target.resize(source.size, Image.BILINEAR)
            b = np.asarray(target.convert("RGB"), dtype=np.float32) / 255.0
            out.append(float(1.0 - np.abs(a - b).mean()))
        return out


class _CosineSimilarity(ImageSimilarity):
    needs_model = True

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:  # (B, D), unit norm
        raise NotImplementedError

    def __call__(self, sources, targets):
        return (self.embed(list(sources)) * self.embed(list(targets))).sum(-1).tolist()


class ClipSimilarity(_CosineSimilarity):
    def __init__(self, model_path: str, device: str = "cpu", batch_size: int = 32):
        from rewards.clip import ClipEncoder

        self.encoder = ClipEncoder(model_path, device=device, batch_size=batch_size)

    def embed(self, images):
        return self.encoder.images(images)


class PolicySimilarity(_CosineSimilarity):
    def __init__(self, model_path: str, device: str = "cpu", batch_size: int = 32):
        from coevolve.model.adapter import JanusAdapter

        path = Path(model_path)
        self.adapter = JanusAdapter.from_pretrained(path, device=device)
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def embed(self, images):
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.adapter.processor.image_processor(
                list(images[start : start + self.batch_size]), return_tensors="pt"
            )
            vision = self.adapter.model.model.vision_model(
                pixels["pixel_values"].to(self.device, self.adapter.model.dtype)
            )
            pooled = vision.last_hidden_state.float().mean(1)  # (B, num_patches, D) -> (B, D)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(out)


EMBEDDERS: dict[str, type[ImageSimilarity]] = {
    "clip": ClipSimilarity,
    "policy": PolicySimilarity,
    "pixels": PixelSimilarity,
    "shapes": ShapesSimilarity,
}
