"""`JanusAdapter`: the one door from the rest of coevolve to a Janus model.

It wraps `transformers.JanusForConditionalGeneration` + `JanusProcessor` loaded from a local
Hugging Face checkpoint (the tiny bootstrap one, or Janus-Pro-1B/7B) and offers:

- building segments: `text`, `chat` (the checkpoint's chat template, images as `SeenImage`),
  `seen_images`;
- `sample_text`, `sample_images` (see `sampler.py`), `decode`; the text may instead be drawn by a
  `text_backend` with the same `sample_text` (`vllm_text.VLLMText`), images never are;
- `judge`: P(yes) that an image matches a prompt, optionally with a sampled reason;
- `logprobs`: teacher-forced log-probs/entropies of scored segments (see `scoring.py`);
- `save_pretrained`: a checkpoint plain transformers loads.

Every public entry validates its sequences against the checkpoint (`segments.validate`), so bad
ids, sizes and lengths fail here with the culprit named, not deep inside the trunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import JanusForConditionalGeneration, JanusProcessor

from coevolve.model.guidance import DEFAULT_GUIDANCE, CFGMode, Guidance
from coevolve.model.images import decode_images, decode_pixels
from coevolve.model.introspection import CAPTION_QUESTION, JUDGE_ANSWERS, JUDGE_QUESTION
from coevolve.model.packing import pack, trunk
from coevolve.model.sampler import ImageSample, TextSample, sample_images, sample_text
from coevolve.model.sampling import DEFAULT_SAMPLING, Generators, Sampling, choose
from coevolve.model.scoring import Scores, score
from coevolve.model.segments import GenImage, SeenImage, Sequence, Text, validate
from coevolve.model.spec import JanusSpec
from coevolve.utils.fs import atomic_output_dir


@dataclass
class Judgement:
    p_yes: torch.Tensor  # (B,) float32: p(Yes) / (p(Yes) + p(No)) for the first answer token
    answers: list[str] | None = None  # the drawn answer per image, when a reason was asked for
    answer_ids: list[list[int]] | None = None  # its token ids (the first one drawn, any others forced)
    answer_logprobs: torch.Tensor | None = None  # (B,) log-prob of the drawn first token, constrained to the pair
    choice_ids: tuple[list[int], list[int]] | None = None  # the token ids of either answer (Yes, No)
    reasons: TextSample | None = None  # the reason sampled after each drawn answer
    descriptions: TextSample | None = None  # with a describing self-check: each image's description


SELF_CHECKS = ("direct", "describe")


def self_check_of(config) -> str:
    """The self-check format a checkpoint was trained in: its `config.json` key `self_check`.

    "direct" (Janus-Pro-R1's, and the meaning of an absent key): the image, then the question.
    "describe": the model first describes the image in a captioning turn, then answers the
    question about the prompt in a second user turn (`introspection.py`). Measured on the shapes
    world: a Yes/No judge trained on images directly stays at chance over all six categories, one
    that reads its description first learns them (README, "Seventh round").
    """
    value = getattr(config, "self_check", "direct")
    if value not in SELF_CHECKS:
        raise ValueError(f"config.json: self_check must be one of {SELF_CHECKS}, got {value!r}")
    return value


class JanusAdapter:
    def __init__(self, model: JanusForConditionalGeneration, processor: JanusProcessor):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.spec = JanusSpec.of(model, processor)
        self.self_check = self_check_of(model.config)
        # None: text is drawn by `sampler.sample_text`; else by this object's `sample_text` (same
        # arguments, validated prompts), e.g. `vllm_text.VLLMText` — `judge`'s reasons included.
        self.text_backend = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> JanusAdapter:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face checkpoint directory (no config.json)")
        model = JanusForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device)
        model.eval()
        return cls(model, JanusProcessor.from_pretrained(path))

    def save_pretrained(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write model, processor and generation config; `path` appears only when complete."""
        with atomic_output_dir(path, overwrite=overwrite) as staging:
            self.model.save_pretrained(staging)
            self.processor.save_pretrained(staging)
        return Path(path)

    # -- building segments -------------------------------------------------------------------

    def text(self, text: str, scored: bool = False, bos: bool = False) -> Text:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if bos:
            ids = [self.spec.bos_id, *ids]
        return Text(torch.tensor(ids), scored=scored)

    def seen_images(self, images: list[Image.Image]) -> list[SeenImage]:
        pixels = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return [SeenImage(p, num_features=self.spec.num_image_tokens) for p in pixels]

    def chat(self, messages: list[dict], add_generation_prompt: bool = True) -> Sequence:
        """Render messages with the checkpoint's chat template into segments.

        Image parts (`{"type": "image", "image": PIL.Image}`) become `SeenImage`s; the ids equal
        what `JanusProcessor` produces for the same conversation.
        """
        images = [
            part["image"]
            for message in messages
            if not isinstance(message["content"], str)
            for part in message["content"]
            if part["type"] == "image"
        ]
        rendered = self.processor.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False
        )
        pieces = rendered.split(self.processor.image_token)
        if len(pieces) - 1 != len(images):
            raise ValueError(f"the chat template wrote {len(pieces) - 1} image placeholders for {len(images)} images")
        seen = self.seen_images(images) if images else []
        segments: list = []
        for index, piece in enumerate(pieces):
            ids = self.tokenizer(piece, add_special_tokens=index == 0)["input_ids"]
            if ids:
                segments.append(Text(torch.tensor(ids)))
            if index < len(seen):
                segments.append(seen[index])
        return tuple(segments)

    def image_prompt(self, prompt: str) -> Sequence:
        """The context Janus generates an image in: a user turn with the prompt, then the assistant tag."""
        return self.chat([{"role": "user", "content": [{"type": "text", "text": prompt}]}])

    def regeneration_context(self, prompt: str, plan_ids, first_codes, verdict_ids) -> Sequence:
        """The image turn continued after a No (`introspection.py`, step 3): prompt, plan, the first
        image's codes (context, never scored), the verdict; the reflection and second image follow."""
        return self.image_prompt(prompt) + (
            Text(plan_ids),
            GenImage(first_codes, scored=False),
            Text(verdict_ids),
        )

    def judge_context(
        self, image: Image.Image, prompt: str, question: str = JUDGE_QUESTION, description: torch.Tensor | Text | None = None
    ) -> Sequence:
        """The self-check context the answer follows. Direct: the image through the understanding
        path, then `question` about `prompt`. Describing (`self_check`): the captioning turn of the
        image, its `description` (token ids, the EOS that closed the turn included), then
        `question` in a second user turn (a `Text` description is placed as given, e.g. scored)."""
        question = question.format(prompt=prompt)
        if self.self_check == "direct":
            if description is not None:
                raise ValueError("this checkpoint's self-check is direct (config self_check): it takes no description")
            return self._image_question(image, question)
        if description is None:
            raise ValueError(
                "this checkpoint's self-check describes the image first (config self_check='describe'): "
                "pass the description's token ids"
            )
        return self._after_description(self.caption_context(image), description, question)

    def _after_description(self, caption_turn: Sequence, description: torch.Tensor | Text, question: str) -> Sequence:
        if not isinstance(description, Text):
            description = Text(torch.as_tensor(description))
        return (*caption_turn, description, self.user_turn(question))

    def user_turn(self, text: str) -> Text:
        """A further user turn in the chat template, ending in the assistant tag the reply follows."""
        messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
        rendered = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.text(rendered)

    def caption_context(self, image: Image.Image, question: str = CAPTION_QUESTION) -> Sequence:
        """The captioning turn: the image through the understanding path, then `question`."""
        return self._image_question(image, question)

    def _image_question(self, image: Image.Image, question: str) -> Sequence:
        return self.chat(
            [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
        )

    def _validated(self, sequences: list[Sequence], what: str) -> list[Sequence]:
        if not sequences:
            raise ValueError(f"no {what} given")
        sequences = [tuple(s) for s in sequences]
        for index, sequence in enumerate(sequences):
            validate(sequence, self.spec, where=f"{what} {index}")
        return sequences

    # -- sampling ----------------------------------------------------------------------------

    def sample_images(
        self,
        prompts: list[Sequence],
        n: int = 1,
        guidance: Guidance = DEFAULT_GUIDANCE,
        sampling: Sampling = DEFAULT_SAMPLING,
        generator: torch.Generator | Generators | None = None,
    ) -> ImageSample:
        return sample_images(
            self.model,
            self.spec,
            self._validated(prompts, "prompt"),
            n,
            guidance,
            sampling,
            generator,
        )

    def sample_text(
        self,
        prompts: list[Sequence],
        max_new_tokens: int,
        n: int = 1,
        sampling: Sampling = DEFAULT_SAMPLING,
        stop_strings: tuple[str, ...] = (),
        stop_ids: tuple[int, ...] = (),
        generator: torch.Generator | Generators | None = None,
    ) -> TextSample:
        prompts = self._validated(prompts, "prompt")
        if self.text_backend is not None:
            return self.text_backend.sample_text(
                prompts, max_new_tokens, n, sampling, tuple(stop_ids), tuple(stop_strings), generator
            )
        return sample_text(
            self.model,
            self.spec,
            self.tokenizer,
            prompts,
            max_new_tokens,
            n,
            sampling,
            tuple(stop_ids),
            tuple(stop_strings),
            generator,
        )

    @torch.no_grad()
    def decode(
        self, images: ImageSample | torch.Tensor | list[GenImage], as_tensor: bool = False
    ) -> list[Image.Image] | torch.Tensor:
        """VQ codes -> PIL images of the checkpoint's size, or with `as_tensor` a (B, 3, H, W)
        float tensor (the VQ decoder's output, nominally in [-1, 1], unclamped)."""
        if isinstance(images, ImageSample):
            codes = images.codes
        elif isinstance(images, torch.Tensor):
            codes = images
        else:
            for index, image in enumerate(images):
                if not isinstance(image, GenImage):
                    raise TypeError(f"decode: item {index} is a {type(image).__name__}, not a GenImage")
            codes = torch.stack([image.codes for image in images])
        if as_tensor:
            return decode_pixels(self.model, codes)
        return decode_images(self.model, self.processor, codes)

    # -- judging -----------------------------------------------------------------------------

    def _answer_ids(self, context: Sequence, answer: str) -> list[int]:
        """Token ids of ' {answer}' right after the assistant tag, checked against joint tokenization."""
        ids = self.tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
        tail = self.tokenizer.decode(context[-1].ids)
        joint = self.tokenizer(tail + " " + answer, add_special_tokens=False)["input_ids"]
        alone = self.tokenizer(tail, add_special_tokens=False)["input_ids"]
        if joint != alone + ids:
            raise ValueError(f"judge answer {answer!r} does not tokenize on its own after the assistant tag")
        return ids

    def _judge_answers(self, context: Sequence, answers: tuple[str, str]) -> tuple[list[int], list[int]]:
        yes_ids, no_ids = (self._answer_ids(context, answer) for answer in answers)
        if yes_ids[0] == no_ids[0]:
            raise ValueError(f"judge answers {answers} share their first token; P(yes) would be undefined")
        return yes_ids, no_ids

    def judge_choices(self, context: Sequence, answers: tuple[str, str] = JUDGE_ANSWERS) -> tuple[int, int]:
        """The LM ids `judge` draws the first answer token among after `context` (a `judge_context`):
        the first tokens of ' Yes' and ' No' — a verdict's `Text.choices` when it is scored."""
        yes_ids, no_ids = self._judge_answers(context, answers)
        return yes_ids[0], no_ids[0]

    @torch.no_grad()
    def judge(
        self,
        images: list[Image.Image],
        prompts: list[str],
        question: str = JUDGE_QUESTION,
        answers: tuple[str, str] = JUDGE_ANSWERS,
        reason: bool = False,
        max_reason_tokens: int = 64,
        sampling: Sampling = DEFAULT_SAMPLING,
        stop_ids: tuple[int, ...] = (),
        generator: torch.Generator | Generators | None = None,
        max_description_tokens: int = 32,
    ) -> Judgement:
        """Ask, per (image, prompt), `question`; the first answer token is constrained to the
        first tokens of `answers`. With `reason`, an answer is drawn from that constrained
        distribution (under `sampling`) and the rest of the reply sampled after it, ending at EOS,
        a `stop_ids` token or `max_reason_tokens` (0: the drawn answer alone). A describing
        checkpoint (`self_check`) first samples each image's description (under `sampling`, at
        most `max_description_tokens`)."""
        if len(images) != len(prompts):
            raise ValueError(f"judge got {len(images)} images for {len(prompts)} prompts")
        descriptions = None
        if self.self_check == "direct":
            contexts = [self.judge_context(image, prompt, question) for image, prompt in zip(images, prompts)]
        else:
            # Each image through the understanding path once: its captioning turn is both the
            # context the description is sampled in and the start of the judge context.
            turns = [self.caption_context(image) for image in images]
            descriptions = self.sample_text(
                turns, max_description_tokens, sampling=sampling, stop_ids=(self.spec.eos_id,), generator=generator
            )
            contexts = [
                self._after_description(turn, description, question.format(prompt=prompt))
                for turn, description, prompt in zip(turns, descriptions.ids, prompts)
            ]
        contexts = self._validated(contexts, "judge context")
        yes_ids, no_ids = self._judge_answers(contexts[0], answers)
        hidden = trunk(self.model, pack(contexts, self.spec, "left")).last_hidden_state[:, -1]
        pair = self.model.lm_head(hidden)[:, [yes_ids[0], no_ids[0]]]  # (B, 2)
        p_yes = pair.float().softmax(-1)[:, 0].cpu()
        if not reason:
            return Judgement(p_yes=p_yes, descriptions=descriptions)
        drawn, drawn_logprobs = choose(pair, sampling, generator)
        replies = [yes_ids if int(d) == 0 else no_ids for d in drawn]
        if max_reason_tokens == 0:  # the answer alone
            rows = len(replies)
            reasons = TextSample(
                [torch.zeros(0, dtype=torch.long)] * rows, [torch.zeros(0)] * rows, ["length"] * rows, [""] * rows, 1
            )
        else:
            reasons = self.sample_text(
                [context + (Text(torch.tensor(reply)),) for context, reply in zip(contexts, replies)],
                max_new_tokens=max_reason_tokens,
                sampling=sampling,
                stop_ids=stop_ids,
                generator=generator,
            )
        return Judgement(
            p_yes=p_yes,
            answers=[answers[int(d)] for d in drawn],
            answer_ids=replies,
            answer_logprobs=drawn_logprobs.float().cpu(),
            choice_ids=(yes_ids, no_ids),
            reasons=reasons,
            descriptions=descriptions,
        )

    # -- teacher-forced log-probs ------------------------------------------------------------

    def logprobs(
        self,
        sequences: list[Sequence],
        mode: CFGMode | str = CFGMode.GUIDED,
        guidance: Guidance = DEFAULT_GUIDANCE,
        sampling: Sampling = DEFAULT_SAMPLING,
        chunk_size: int = 1024,
        share_rows: bool = True,
    ) -> Scores:
        return score(
            self.model,
            self.spec,
            self._validated(sequences, "sequence"),
            CFGMode(mode),
            guidance,
            sampling,
            chunk_size,
            share_rows,
        )
