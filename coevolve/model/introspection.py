"""The introspective format: what the model writes around its images, defined once.

One trajectory (DESIGN.md section 1), as SFT teaches it and rollouts sample it:

1. image turn: `<|User|>: {prompt}` → `<|Assistant|>: {plan}` + image (VQ codes);
2. self-check, through the understanding path, in its own turn:
   `<|User|>: <image> {JUDGE_QUESTION}` → `<|Assistant|>: {verdict}<eos>`, where the verdict is
   `YES_VERDICT` or `NO_VERDICT` with a reason naming what is wrong. A checkpoint whose config
   says `self_check: describe` (the tiny one) first describes the image, then answers:
   `<|User|>: <image> {CAPTION_QUESTION}` → `<|Assistant|>: {description}<eos>`
   `<|User|>: {JUDGE_QUESTION}` → `<|Assistant|>: {verdict}<eos>` — the comparison with the
   prompt is then made against its own words (`JanusAdapter.judge_context`);
3. on a No, the image turn continues: after the first image's codes come the verdict and a
   `REFLECTION`, then a second image.

Every text piece starts with a space because it follows `<|Assistant|>:` (or an image) and the
judge's first answer token is `" Yes"` / `" No"`. The plan is one sentence ending in `"."`, the
reflection ends in `REFLECTION_STOP`: samplers stop there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

JUDGE_QUESTION = 'Does this image match the prompt "{prompt}"? Answer Yes or No.'
JUDGE_ANSWERS = ("Yes", "No")
YES_VERDICT = " Yes, the image matches the prompt."
NO_VERDICT = " No, the image does not match the prompt because {reason}."
REFLECTION = " Reflection: the image is wrong because {reason}. Draw the image again, correcting the mistake."
REFLECTION_STOP = "mistake."
PLAN_STOP = "."
CAPTION_QUESTION = "Describe this image."

_VERDICT = re.compile(
    r"^\s*(?:Yes, the image matches the prompt\.|No, the image does not match the prompt because (?P<reason>.+)\.)\s*$"
)
_REFLECTION = re.compile(
    r"^\s*Reflection: the image is wrong because (?P<reason>.+)\. Draw the image again, correcting the mistake\.\s*$"
)
_PLAN = re.compile(r"^\s*Plan: (?P<body>[^.]+)\.\s*$")


def verdict_text(matches: bool, reason: str | None = None) -> str:
    """The self-check answer: `YES_VERDICT`, or `NO_VERDICT` with `reason` (required for a No)."""
    if matches:
        return YES_VERDICT
    if not reason:
        raise ValueError("a No verdict needs a reason naming what is wrong")
    return NO_VERDICT.format(reason=reason.rstrip("."))


def reflection_text(reason: str) -> str:
    if not reason:
        raise ValueError("a reflection needs the reason the image is wrong")
    return REFLECTION.format(reason=reason.rstrip("."))


@dataclass(frozen=True)
class ParsedVerdict:
    matches: bool
    reason: str | None  # what is wrong, for a No


def parse_verdict(text: str) -> ParsedVerdict | None:
    """The verdict written in `text`, or None when it does not follow the format."""
    found = _VERDICT.match(text)
    if found is None:
        return None
    reason = found.group("reason")
    return ParsedVerdict(matches=reason is None, reason=reason)


def parse_reflection(text: str) -> str | None:
    """The reason a reflection gives, or None when `text` is not a reflection in the format."""
    found = _REFLECTION.match(text)
    return None if found is None else found.group("reason")


def is_plan(text: str) -> bool:
    """True when `text` is one plan sentence (`"Plan: ... ."`)."""
    return _PLAN.match(text) is not None
