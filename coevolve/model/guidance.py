"""Classifier-free guidance as an explicit policy: weight, unconditional prompt, training mode.

The published systems differ on all three, silently (DESIGN.md section 3):

- `weight`: logits are `u + w * (c - u)` (transformers' `ClassifierFreeGuidanceLogitsProcessor`,
  the Janus reference); `w = 1` means no guidance and no unconditional branch is run.
- `unconditional`: how the unconditional context of an image is built from its conditional
  context (a name in `UNCONDITIONAL_PROMPTS`):
    - `"pad"` (default; transformers and the Janus reference): the same positions, every token
      replaced by the pad token except `<｜begin▁of▁sentence｜>` and `<begin_of_image>`;
    - `"bos"`: the bare `<｜begin▁of▁sentence｜>` (a null condition, LlamaGen-style).
- `CFGMode`, for teacher-forced log-probs of image codes: `conditional` (conditional logits
  only), `guided` (the guided logits used at sampling; gradient through both branches),
  `guided_detach` (guided, unconditional branch detached).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch

from coevolve.model.packing import text_space_ids
from coevolve.model.segments import Sequence, Text
from coevolve.model.spec import JanusSpec


class CFGMode(str, Enum):
    CONDITIONAL = "conditional"
    GUIDED = "guided"
    GUIDED_DETACH = "guided_detach"


def _pad_prompt(prefix: Sequence, spec: JanusSpec) -> Sequence:
    ids = torch.cat([text_space_ids(segment, spec) for segment in prefix])
    keep = (ids == spec.bos_id) | (ids == spec.boi_id)
    return (Text(torch.where(keep, ids, torch.full_like(ids, spec.pad_id))),)


def _bos_prompt(prefix: Sequence, spec: JanusSpec) -> Sequence:
    return (Text(torch.tensor([spec.bos_id])),)


UNCONDITIONAL_PROMPTS: dict[str, Callable[[Sequence, JanusSpec], Sequence]] = {
    "pad": _pad_prompt,
    "bos": _bos_prompt,
}


@dataclass(frozen=True)
class Guidance:
    weight: float = 5.0
    unconditional: str = "pad"

    def __post_init__(self) -> None:
        if not self.weight >= 1:
            raise ValueError(f"guidance weight must be >= 1 (1 = no guidance), got {self.weight}")
        if self.unconditional not in UNCONDITIONAL_PROMPTS:
            raise ValueError(
                f"unknown unconditional prompt {self.unconditional!r}; known: {sorted(UNCONDITIONAL_PROMPTS)}"
            )

    @property
    def active(self) -> bool:
        return self.weight > 1

    def unconditional_prefix(self, prefix: Sequence, spec: JanusSpec) -> Sequence:
        """The unconditional context for an image whose conditional context is `prefix`."""
        return UNCONDITIONAL_PROMPTS[self.unconditional](prefix, spec)


DEFAULT_GUIDANCE = Guidance()


def guide(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    # The same expression, in the same order, as transformers' processor: greedy decoding must
    # pick the same argmax bit for bit.
    return uncond + (cond - uncond) * weight
