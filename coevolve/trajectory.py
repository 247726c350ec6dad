"""One trajectory type for the whole project (DESIGN.md section 2).

Rollout programs produce `Trajectory`s; scorers (`rewards/`), advantages and traces consume them.
A trajectory is the prompt it answers plus its `Segment`s in the order they were written:

    plan → image → verdict → (on a No) reflection → regen_image      introspective T2I
    caption → image                                                  reconstruction (UAE)

A segment is text (`kind="text"`, with its decoded `text`) or an image (`kind="image"`, with its
decoded PIL `image`). `ids` are the tokens the model wrote: LM-vocabulary ids for text, VQ codes
for an image; `logprobs` the log-probs they were sampled under, and `mask` which of them the loss
trains. `ids` may be None for a segment built outside a model (a test, `coevolve rewards`'s
ground-truth renders): such a segment can be scored but not trained, and `logprobs`/`mask` need
ids. Rewards are assigned to segments by name (the constants below), in config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

PLAN = "plan"
IMAGE = "image"
VERDICT = "verdict"
REFLECTION = "reflection"
REGEN_IMAGE = "regen_image"
CAPTION = "caption"
DESCRIPTION = "description"  # a describing self-check's description of the image it judges
SEGMENT_NAMES = (PLAN, IMAGE, VERDICT, REFLECTION, REGEN_IMAGE, CAPTION, DESCRIPTION)
"""The segment names the built-in programs write. Other names are allowed: a user's program may
write its own segments and a user's reward term may train them."""

KINDS = ("text", "image")


@dataclass(eq=False)
class Segment:
    """One piece a trajectory's model wrote: a text or an image."""

    name: str
    kind: str  # "text" | "image"
    ids: torch.Tensor | None = None  # (T,) int64: text ids, or an image's VQ codes
    logprobs: torch.Tensor | None = None  # (T,) float: log-probs the ids were sampled under
    mask: torch.Tensor | None = None  # (T,) bool: True where the loss trains the token
    text: str | None = None  # decoded text (text segments)
    image: Image.Image | None = None  # decoded image (image segments)

    def __post_init__(self) -> None:
        where = f"segment {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a segment needs a non-empty string name, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"{where}: unknown kind {self.kind!r}; expected one of {KINDS}")
        if self.kind == "text":
            if not isinstance(self.text, str):
                raise ValueError(f"{where}: a text segment needs its decoded `text`")
            if self.image is not None:
                raise ValueError(f"{where}: a text segment cannot hold an image")
        else:
            if not isinstance(self.image, Image.Image):
                raise ValueError(f"{where}: an image segment needs its decoded PIL `image`")
            if self.text is not None:
                raise ValueError(f"{where}: an image segment cannot hold text")
        if self.ids is None:
            if self.logprobs is not None or self.mask is not None:
                raise ValueError(f"{where}: `logprobs` and `mask` describe `ids`, which are missing")
            return
        self.ids = torch.as_tensor(self.ids)
        if self.ids.dim() != 1 or self.ids.dtype.is_floating_point:
            raise ValueError(f"{where}: ids must be a 1-D integer tensor, got {self.ids.dtype} {tuple(self.ids.shape)}")
        for key in ("logprobs", "mask"):
            value = getattr(self, key)
            if value is not None and tuple(value.shape) != tuple(self.ids.shape):
                raise ValueError(f"{where}: {key} has shape {tuple(value.shape)}, ids {tuple(self.ids.shape)}")


@dataclass(eq=False)
class Trajectory:
    """One sample: a prompt, what the model wrote for it, and what was recorded on the way.

    `group` is the prompt group rewards are normalised within (GRPO's group of generations).
    `metadata` holds what the prompt came with (e.g. "geneval": its GenEval metadata);
    `source_image` the real image a reconstruction program started from; `info` values recorded
    while sampling (e.g. "p_yes": P(Yes) of the self-check's first answer token);
    `policy_version` the weights version that sampled it.
    """

    id: str
    group: str
    prompt: str
    program: str
    segments: list[Segment] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    source_image: Image.Image | None = None
    info: dict[str, Any] = field(default_factory=dict)
    policy_version: int | None = None

    def __post_init__(self) -> None:
        for key in ("id", "group"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"a trajectory needs a non-empty string {key}, got {getattr(self, key)!r}")
        self.segments = list(self.segments)
        seen: set[str] = set()
        for segment in self.segments:
            if not isinstance(segment, Segment):
                raise TypeError(f"trajectory {self.id!r}: segments must be Segment, got {type(segment).__name__}")
            if segment.name in seen:
                raise ValueError(f"trajectory {self.id!r}: segment {segment.name!r} appears twice")
            seen.add(segment.name)
        if self.source_image is not None and not isinstance(self.source_image, Image.Image):
            raise ValueError(f"trajectory {self.id!r}: source_image must be a PIL image or None")

    def has(self, name: str) -> bool:
        return any(segment.name == name for segment in self.segments)

    def segment(self, name: str) -> Segment:
        for segment in self.segments:
            if segment.name == name:
                return segment
        names = [segment.name for segment in self.segments]
        raise KeyError(f"trajectory {self.id!r} has no segment {name!r} (it has {names})")

    def text(self, name: str) -> str:
        segment = self.segment(name)
        if segment.kind != "text":
            raise ValueError(f"trajectory {self.id!r}: segment {name!r} is an image, not text")
        return segment.text

    def image(self, name: str) -> Image.Image:
        segment = self.segment(name)
        if segment.kind != "image":
            raise ValueError(f"trajectory {self.id!r}: segment {name!r} is text, not an image")
        return segment.image

    @property
    def final_image_name(self) -> str:
        """The segment of the final image: `info["final_image"]` when the program recorded it (the
        introspective program: the last image its self-check accepted, else the last drawn),
        otherwise the regenerated image when there is one, else the first image."""
        if "final_image" in self.info:
            return self.info["final_image"]
        return REGEN_IMAGE if self.has(REGEN_IMAGE) else IMAGE

    @property
    def final_image(self) -> Image.Image:
        return self.image(self.final_image_name)
