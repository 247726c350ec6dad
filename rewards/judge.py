"""`yes_no_judge`: a vision-language model asked whether an image matches its prompt.

The score is P(yes) from the first answer token, as Janus-Pro-R1 and T2I-R1 read their judges:
the next-token distribution right after the assistant tag, restricted to the answer tokens,
P(yes) = p(yes tokens) / (p(yes tokens) + p(no tokens)). No text is sampled.

Two kinds of checkpoint, both loaded from a local path:
- a Janus checkpoint (`model_type == "janus"`: the tiny bootstrap one, an SFT/RL result used as a
  frozen judge, Janus-Pro-1B/7B) through `JanusAdapter.judge`, in the introspective format's own
  self-check turn (`JUDGE_QUESTION`, answers " Yes"/" No");
- any other Hugging Face vision-language model through `AutoProcessor` +
  `AutoModelForImageTextToText` and the checkpoint's chat template. Its tokenizer decides how
  "Yes" is split, so the first tokens of the variants "Yes", " Yes", "yes", " yes" (and the same
  for "No") are pooled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from coevolve.model.introspection import JUDGE_QUESTION
from coevolve.model.sampling import GREEDY
from coevolve.trajectory import IMAGE, Trajectory
from rewards.base import ScoreBatch, Scorer, check_segment_name, register_scorer, select_image

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _variants(word: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((word, " " + word, word.lower(), " " + word.lower())))


class _JanusJudge:
    def __init__(self, path: Path, dtype: torch.dtype, device: str, question: str, answers: tuple[str, str]):
        from coevolve.model.adapter import JanusAdapter

        self.adapter = JanusAdapter.from_pretrained(path, dtype=dtype, device=device)
        self.question, self.answers = question, answers

    def p_yes(self, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        # A describing checkpoint (`JanusAdapter.self_check`) describes greedily: a reward is a
        # function of the image, not of a sampled description.
        return self.adapter.judge(images, prompts, question=self.question, answers=self.answers, sampling=GREEDY).p_yes


class _VLMJudge:
    """A generic HF image-text-to-text model, prompted through its own chat template."""

    def __init__(self, path: Path, dtype: torch.dtype, device: str, question: str, answers: tuple[str, str]):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(path)
        self.processor.tokenizer.padding_side = "left"  # every row's next token in the last column
        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).to(device).eval()
        self.question, self.device = question, device
        yes, no = (self._first_tokens(answer) for answer in answers)
        if yes & no:
            raise ValueError(f"yes_no_judge: answers {answers} share first tokens {sorted(yes & no)} in {path}")
        self.yes_ids, self.no_ids = sorted(yes), sorted(no)

    def _first_tokens(self, answer: str) -> set[int]:
        tokenizer = self.processor.tokenizer
        first = set()
        for variant in _variants(answer):
            ids = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if ids and ids[0] != tokenizer.unk_token_id:
                first.add(ids[0])
        if not first:
            raise ValueError(f"yes_no_judge: the tokenizer has no token for any of {_variants(answer)}")
        return first

    @torch.no_grad()
    def p_yes(self, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        texts = [
            self.processor.apply_chat_template(
                [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": self.question.format(prompt=prompt)}],
                    }
                ],
                add_generation_prompt=True,
                tokenize=False,
            )
            for prompt in prompts
        ]
        inputs = self.processor(images=images, text=texts, padding=True, return_tensors="pt").to(self.device)
        logits = self.model(**inputs).logits[:, -1].float()  # (B, V): the first answer token
        probs = logits.softmax(-1)
        yes, no = probs[:, self.yes_ids].sum(-1), probs[:, self.no_ids].sum(-1)  # (B,)
        return (yes / (yes + no)).cpu()


@register_scorer("yes_no_judge")
class YesNoJudge(Scorer):
    """P(yes) that an image matches the trajectory's prompt, from a VLM by local path.

    Args:
        model_path: a local Hugging Face checkpoint (Janus, or any image-text-to-text model).
        segment: the image segment to judge ("image", "regen_image", or "final").
        question: the user turn after the image; `{prompt}` is replaced by the trajectory's prompt.
        answers: the affirmative and the negative answer word.
        batch_size: images per forward pass.
        device, dtype: where and in what precision the judge runs.
    """

    def __init__(
        self,
        model_path: str,
        segment: str = IMAGE,
        question: str = JUDGE_QUESTION,
        answers: Sequence[str] = ("Yes", "No"),
        batch_size: int = 16,
        device: str = "cpu",
        dtype: str = "float32",
    ):
        from transformers import AutoConfig

        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"yes_no_judge: {model_path} is not a Hugging Face checkpoint (no config.json)")
        if dtype not in DTYPES:
            raise ValueError(f"yes_no_judge: dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
        if "{prompt}" not in question:
            raise ValueError(f"yes_no_judge: question must contain {{prompt}}, got {question!r}")
        if len(answers) != 2:
            raise ValueError(f"yes_no_judge: answers must be (yes, no), got {answers!r}")
        if batch_size < 1:
            raise ValueError(f"yes_no_judge: batch_size must be >= 1, got {batch_size}")
        self.segment = check_segment_name(segment, "yes_no_judge")
        self.batch_size, self.device = batch_size, device
        backend = _JanusJudge if AutoConfig.from_pretrained(path).model_type == "janus" else _VLMJudge
        self.backend = backend(path, DTYPES[dtype], device, question, tuple(answers))

    def score(self, trajectories: Sequence[Trajectory]) -> ScoreBatch:
        scores: list[float] = []
        for start in range(0, len(trajectories), self.batch_size):
            part = trajectories[start : start + self.batch_size]
            images = [select_image(t, self.segment) for t in part]
            scores.extend(self.backend.p_yes(images, [t.prompt for t in part]).tolist())
        return ScoreBatch(scores)
