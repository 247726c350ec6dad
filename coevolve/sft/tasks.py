"""The SFT tasks: one record -> one training sequence of segments, with a loss weight per token.

The tasks follow Janus-Pro-R1's SFT mixture, plus UAE's two directions; the text around images
is the introspective format of `coevolve/model/introspection.py`:

- `t2i`: `<|User|>: prompt` → `<|Assistant|>: plan` + image — plan and image tokens trained;
- `judge`: `<|User|>: <image> question(prompt)` → verdict + EOS — "Yes, …" for the matching
  image, "No, … because {reason}." for the negative (the caller balances the two). For a
  describing checkpoint (`JanusAdapter.self_check`) the image's captioning turn comes first, its
  caption trained as the `caption` task trains it, then the question in a second user turn;
- `regen`: prompt → plan, the wrong image, its No verdict (context) → reflection + correct
  image (trained);
- `caption`: `<|User|>: <image> Describe this image.` → caption + EOS;
- the image a `judge` example sees is the render, or with `decoded` its VQ round trip (the
  image decoded from its codes), which is what the model's own images look like;
- `draw_caption`: `<|User|>: caption` → image (UAE's decoder side).

With prompt dropout an image-drawing example keeps only its image, after the unconditional
context of its conditional context (`Guidance.unconditional_prefix`): the branch CFG subtracts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from coevolve.config.schema import LossWeights
from coevolve.data.shapes import add_debris
from coevolve.model import JanusAdapter
from coevolve.model.guidance import Guidance
from coevolve.model.introspection import reflection_text, verdict_text
from coevolve.model.segments import GenImage, Sequence, Text


@dataclass(frozen=True)
class PreparedRecord:
    """A record with its images through the model's two image paths, ready for any task.

    `image_codes` / `negative_codes`: (num_image_tokens,) VQ ids; `image` / `negative_image`: the
    PIL images (the understanding path's pixels are made per use, they are large)."""

    where: str
    prompt: str
    image: object
    image_codes: torch.Tensor
    plan: str | None
    caption: str | None
    negative_image: object | None
    negative_codes: torch.Tensor | None
    negative_reason: str | None
    negative_caption: str | None = None


@dataclass(frozen=True)
class TrainingExample:
    """`weights[j]`: (len,) loss weight of each token of segment j when it is scored, else None."""

    task: str
    sequence: Sequence
    weights: tuple[torch.Tensor | None, ...]


class TaskBuilder:
    """Builds the training sequence of a task from a prepared record."""

    def __init__(self, adapter: JanusAdapter, loss_weights: LossWeights, unconditional: str):
        self.adapter = adapter
        self.loss_weights = loss_weights
        # Only the unconditional context is used here; the weight is the sampler's business.
        self.guidance = Guidance(weight=1.0, unconditional=unconditional)
        self.eos = adapter.spec.eos_id

    def _reply(self, text: str, weight: float, first_weight: float | None = None) -> tuple[Text, torch.Tensor]:
        ids = self.adapter.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.eos]
        weights = torch.full((len(ids),), weight)
        if first_weight is not None:
            weights[0] = first_weight
        return Text(torch.tensor(ids), scored=True), weights

    def _said(self, text: str, scored: bool = False) -> Text:
        return Text(torch.tensor(self.adapter.tokenizer(text, add_special_tokens=False)["input_ids"]), scored=scored)

    def _image(self, task: str, context: Sequence, codes: torch.Tensor, drop: bool) -> TrainingExample:
        """Context (all unscored) + a trained image; with `drop`, the unconditional context instead."""
        if drop:
            context = self.guidance.unconditional_prefix(context, self.adapter.spec)
        weight = torch.full((codes.numel(),), self.loss_weights.image)
        return TrainingExample(task, (*context, GenImage(codes)), (None,) * len(context) + (weight,))

    def t2i(self, record: PreparedRecord, drop: bool) -> TrainingExample:
        prompt = self.adapter.image_prompt(record.prompt)
        plan = self._said(" " + record.plan, scored=not drop)
        if drop:
            return self._image("t2i", (*prompt, Text(plan.ids)), record.image_codes, drop=True)
        image_weight = torch.full((record.image_codes.numel(),), self.loss_weights.image)
        plan_weight = torch.full((len(plan),), self.loss_weights.plan)
        sequence = (*prompt, plan, GenImage(record.image_codes))
        return TrainingExample("t2i", sequence, (None,) * len(prompt) + (plan_weight, image_weight))

    def draw_caption(self, record: PreparedRecord, drop: bool) -> TrainingExample:
        return self._image("draw_caption", self.adapter.image_prompt(record.caption), record.image_codes, drop)

    @torch.no_grad()
    def decoded(self, codes: list[torch.Tensor]) -> list:
        """The images the VQ decoder makes of `codes` (one decoder pass for all): what generated
        images look like."""
        return self.adapter.decode(torch.stack(codes)) if codes else []

    @staticmethod
    def judged_codes(record: PreparedRecord, negative: bool) -> torch.Tensor:
        return record.negative_codes if negative else record.image_codes

    @staticmethod
    def _with_debris(image, debris: tuple[int, np.random.Generator] | None):
        """`image` with `debris` = (count, rng) fragments on it (`add_debris`), or as it is."""
        return image if debris is None else add_debris(image, debris[1], debris[0])

    def judge(
        self, record: PreparedRecord, negative: bool, decoded=None, debris: tuple | None = None
    ) -> TrainingExample:
        """The self-check of the record's image (`negative`: its wrong image), the render itself or,
        given as `decoded`, its VQ round trip (`decoded(judged_codes(record, negative))`)."""
        if decoded is not None:
            image = decoded
        else:
            image = record.negative_image if negative else record.image
        image = self._with_debris(image, debris)
        weights_before = None
        if self.adapter.self_check == "direct":
            context = self.adapter.judge_context(image, record.prompt)
        else:
            caption = record.negative_caption if negative else record.caption
            if caption is None:
                field = "negative_caption" if negative else "caption"
                raise ValueError(f"{record.where}: a describing checkpoint's judge example needs the record's {field}")
            description, description_weights = self._reply(" " + caption, self.loss_weights.caption)
            context = self.adapter.judge_context(image, record.prompt, description=description)
            at = next(i for i, piece in enumerate(context) if piece is description)
            weights_before = (None,) * at + (description_weights,) + (None,) * (len(context) - at - 1)
        reply, weights = self._reply(
            verdict_text(not negative, record.negative_reason if negative else None),
            self.loss_weights.verdict,
            first_weight=self.loss_weights.verdict_answer,
        )
        before = weights_before if weights_before is not None else (None,) * len(context)
        return TrainingExample("judge", (*context, reply), before + (weights,))

    def regen(self, record: PreparedRecord, drop: bool) -> TrainingExample:
        context = self.adapter.regeneration_context(
            record.prompt,
            self._said(" " + record.plan).ids,
            record.negative_codes,
            self._said(verdict_text(False, record.negative_reason)).ids,
        )
        reflection = self._said(reflection_text(record.negative_reason), scored=not drop)
        if drop:
            return self._image("regen", (*context, Text(reflection.ids)), record.image_codes, drop=True)
        weights = (
            torch.full((len(reflection),), self.loss_weights.reflection),
            torch.full((record.image_codes.numel(),), self.loss_weights.image),
        )
        return TrainingExample(
            "regen", (*context, reflection, GenImage(record.image_codes)), (None,) * len(context) + weights
        )

    def caption(self, record: PreparedRecord, debris: tuple | None = None) -> TrainingExample:
        context = self.adapter.caption_context(self._with_debris(record.image, debris))
        reply, weights = self._reply(" " + record.caption, self.loss_weights.caption)
        return TrainingExample("caption", (*context, reply), (None,) * len(context) + (weights,))
