"""`reconstruction`: UAE's Unified-GRPO reward — how close the reconstruction is to the original.

The reconstruction program captions a real image (`trajectory.source_image`) and redraws it from
the caption (the `image` segment). The reward is the similarity of the two images under a
pluggable embedder (`rewards/similarity.py`): `clip`, `policy` (both need `model_path`),
`pixels`, `shapes`, or any `ImageSimilarity` object (e.g. `embedder: {_target_: my.Similarity}`).
The same score trains the caption in UAE's "generation for understanding" stage and the image in
"understanding for generation": which one is the reward term's `segments`.
"""

from __future__ import annotations

from collections.abc import Sequence

from coevolve.trajectory import IMAGE, Trajectory
from rewards.base import ScoreBatch, Scorer, check_segment_name, register_scorer, select_image
from rewards.similarity import EMBEDDERS, ImageSimilarity


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
        model_options = {"model_path": model_path, "batch_size": batch_size, "device": device}
        given = [key for key, value in model_options.items() if value is not None]
        if isinstance(embedder, ImageSimilarity):
            if given:
                raise ValueError(f"reconstruction: {given} configure the named embedders; the given one is built")
            self.similarity = embedder
        elif embedder in EMBEDDERS:
            cls = EMBEDDERS[embedder]
            if cls.needs_model:
                if model_path is None:
                    raise ValueError(f"reconstruction: embedder {embedder!r} needs model_path")
                self.device = device or "cpu"
                self.similarity = cls(model_path, device=self.device, batch_size=batch_size or 32)
            elif given:
                raise ValueError(f"reconstruction: embedder {embedder!r} uses no model; remove {given}")
            else:
                self.similarity = cls()
        else:
            raise ValueError(f"reconstruction: unknown embedder {embedder!r}; expected one of {', '.join(EMBEDDERS)}")

    def score(self, trajectories: Sequence[Trajectory]) -> ScoreBatch:
        missing = [t.id for t in trajectories if t.source_image is None]
        if missing:
            raise ValueError(f"reconstruction: trajectories {missing} have no source_image")
        sources = [t.source_image for t in trajectories]
        return ScoreBatch(self.similarity(sources, [select_image(t, self.segment) for t in trajectories]))
