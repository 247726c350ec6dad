"""CLIP/SigLIP-type dual encoders through transformers, and `clip_score`.

`ClipEncoder` loads any checkpoint whose `AutoModel` has `get_image_features` and
`get_text_features` (CLIP, SigLIP, SigLIP 2, ...) with its `AutoProcessor`, from a local path,
and returns unit-norm embeddings. `clip_score` is the cosine between an image's and its prompt's
embeddings (CLIPScore, Hessel et al. 2021, without its 2.5 * max(cos, 0) rescaling: reward terms
normalise within their group anyway, and clipping at 0 would flatten the low end).
Text is padded to the model's full context (SigLIP was trained that way; CLIP pools at the
first end-of-text token, so its padding does not matter).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from coevolve.trajectory import IMAGE, Trajectory
from rewards.base import ScoreBatch, Scorer, check_segment_name, register_scorer, select_image


def _pooled(output) -> torch.Tensor:
    # transformers 5 returns a ModelOutput whose pooler_output is the projected embedding.
    return output.pooler_output if hasattr(output, "pooler_output") else output


class ClipEncoder:
    """Unit-norm image and text embeddings of a CLIP/SigLIP-type checkpoint by local path."""

    def __init__(self, model_path: str | Path, device: str = "cpu", batch_size: int = 32):
        from transformers import AutoModel, AutoProcessor

        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{model_path} is not a Hugging Face checkpoint (no config.json)")
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        for method in ("get_image_features", "get_text_features"):
            if not hasattr(self.model, method):
                raise ValueError(f"{model_path} ({type(self.model).__name__}) is not a dual encoder: no {method}")
        self.processor = AutoProcessor.from_pretrained(path)
        self.device, self.batch_size = device, batch_size
        self.max_text_length = self.model.config.text_config.max_position_embeddings

    @torch.no_grad()
    def images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, D) unit-norm image embeddings."""
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.processor(images=list(images[start : start + self.batch_size]), return_tensors="pt")
            features = self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device))
            out.append(torch.nn.functional.normalize(_pooled(features).float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, D) unit-norm text embeddings."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.processor(
                text=list(texts[start : start + self.batch_size]),
                padding="max_length",
                truncation=True,
                max_length=self.max_text_length,
                return_tensors="pt",
            ).to(self.device)
            features = self.model.get_text_features(**tokens)
            out.append(torch.nn.functional.normalize(_pooled(features).float(), dim=-1).cpu())
        return torch.cat(out)


@register_scorer("clip_score")
class ClipScore(Scorer):
    """Cosine similarity, in [-1, 1], between an image and the trajectory's prompt.

    Args:
        model_path: a local CLIP/SigLIP-type checkpoint.
        segment: the image segment to score ("image", "regen_image", or "final").
        batch_size: images (and texts) per forward pass.
        device: where the model runs.
    """

    def __init__(self, model_path: str, segment: str = IMAGE, batch_size: int = 32, device: str = "cpu"):
        if batch_size < 1:
            raise ValueError(f"clip_score: batch_size must be >= 1, got {batch_size}")
        self.segment = check_segment_name(segment, "clip_score")
        self.device = device
        self.encoder = ClipEncoder(model_path, device=device, batch_size=batch_size)

    def score(self, trajectories: Sequence[Trajectory]) -> ScoreBatch:
        images = self.encoder.images([select_image(t, self.segment) for t in trajectories])
        texts = self.encoder.texts([t.prompt for t in trajectories])
        return ScoreBatch((images * texts).sum(-1).tolist())
