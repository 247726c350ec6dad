"""Rollout programs: the recipe of one trajectory, sampled batched over every row of a batch.

A program turns `RolloutItem`s (a prompt, or a source image) into `num_generations`
`coevolve.trajectory.Trajectory`s each — trajectory id `"{item.id}/{k}"`, group `item.id` — in
item order. Every segment keeps the ids the model wrote, the log-probs they were sampled under and
a mask (True: a token the policy drew and a loss may train).

`IntrospectiveT2I` (Janus-Pro-R1), in the format of `coevolve.model.introspection`:

    plan → image → verdict → [reflection → regen_image → (regen_verdict)] × (max_rounds − 1)

1. the plan in the image turn (stops at `PLAN_STOP`), the prompt prefilled once per group;
2. the image after it, with CFG (`guidance`);
3. the verdict in its own self-check turn: the first answer token drawn from the distribution
   restricted to " Yes"/" No" (its log-prob is that restricted distribution's), the reason sampled
   after it up to EOS; `info["p_yes"]` = P(Yes) against P(No) of that first token at temperature 1.
   With a describing checkpoint (`JanusAdapter.self_check`) the self-check first samples the
   image's `description` (its captioning turn, up to EOS) and the question follows it; the segment
   precedes its verdict (`regen_description` for `regen_verdict`, and so on);
4. another round — when `regenerate` is `always`, or `on_no` and the verdict parses as a No, and
   fewer than `max_rounds` images were drawn — continues the image turn: the previous image's
   codes (context, never trained), the verdict without its EOS, a reflection (stops at
   `REFLECTION_STOP`) and a new image. A regenerated image is judged only when a further round
   may follow. Segment names of round r ≥ 2: `reflection`, `regen_image`, `regen_verdict` for
   r = 2; with `_{r-1}` appended after that (`reflection_2`, `regen_image_2`, ... for r = 3).

The final image (`info["final_image"]`, read by `Trajectory.final_image`) is the last image whose
verdict parses as a Yes, else the last image drawn.

`Reconstruction` (UAE): the source image through the understanding path → `caption` (stops at
EOS) → `image` drawn in `adapter.image_prompt(caption text)` with CFG. The `reconstruction`
scorer compares it with `trajectory.source_image`. With `redraw=False` the trajectory ends at the
caption (UAE's first stage, whose decoder is frozen: `caption_reconstruction` draws the caption
outside the policy, so the policy's redraw would cost most of the step and train nothing).

`SelfCheck`: the introspective program's self-check turn alone, on an image given with the item
(`item.image`, kept as `trajectory.source_image`) and its prompt — (`description` →) `verdict`,
sampled as in step 3 above, `info["p_yes"]` alike. No image is drawn, so a step can hold hundreds
of verdicts on images whose truth is known (the shapes world's renders, half violating their
prompt); a judge reads the same image with `segment: source`. With `answer_only` the verdict is the
drawn " Yes"/" No" alone (no reason sampled): a term on it trains the decision and nothing else.
With `enumerate_answers` as well, each description is followed by both answers, two trajectories
(ids `.../yes`, `.../no`) instead of one drawn answer. Each answer is then taken with probability 1,
so its recorded sampling log-prob is 0, and the learner's importance-sampling correction weighs it
by exp(trainer log-prob - 0) = pi(answer): the policy gradient over the pair is
sum_a pi(a) A(a) grad log pi(a), the exact expectation over the answer that drawing it estimates
(`rl.config` requires that correction, unclipped below 1). A group of drawn answers that all agree
gives no gradient at all, and in `benchmarks/own_judge_probe.py` the drawn answer's gradient
collapsed P(yes) to 0 or 1 where the exact one kept learning (README, "Seventeenth round").

Teacher-forced views (`teacher_forced`): the learner recomputes, with gradient, the log-prob of
every token a program drew, in the context it was drawn in. A program rebuilds those contexts from
a trajectory as `TeacherForced` model sequences (the drawn pieces scored), without its sampling
settings: `IntrospectiveT2I` gives the image turn (plan, image and every later round's context,
reflection and image) and one self-check turn per verdict (its first token scored among
" Yes"/" No", `Text.choices`); `Reconstruction` the captioning turn and the image turn of the
caption; `SelfCheck` the self-check turn of its image.
Scored with the program's guidance and sampling (`adapter.logprobs`), they give back the recorded
`Segment.logprobs` where `Segment.mask` is True.

Randomness: each row draws from its own generators, seeded with
`row_seed(seed, step, item.id, k, stage)` for every stage (plan, image, verdict, ...), so a
trajectory depends on its seed alone, not on the batch or worker it is sampled in (`sampling.py`).
`timings` holds the last call's seconds per phase; each trajectory's `info["seconds"]` its share.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from PIL import Image

from coevolve.model.adapter import JanusAdapter, Judgement
from coevolve.model.guidance import DEFAULT_GUIDANCE, Guidance
from coevolve.model.introspection import PLAN_STOP, REFLECTION_STOP, parse_verdict
from coevolve.model.sampling import DEFAULT_SAMPLING, Sampling, row_generators, row_seed
from coevolve.model.segments import GenImage, Text, sequence_length
from coevolve.model.segments import Sequence as ModelSequence
from coevolve.trajectory import (
    CAPTION, DESCRIPTION, IMAGE, PLAN, REFLECTION, REGEN_IMAGE, VERDICT, Segment, Trajectory,
)

REGENERATE = ("always", "never", "on_no")
REGEN_VERDICT = "regen_verdict"


@dataclass
class RolloutItem:
    """One prompt (T2I) or source image (reconstruction) of a batch. `id` must be unique in a batch
    and stable across runs: it seeds the rows and names their group, unless `group` names it (a
    self-check of the images one prompt drew: one group per prompt, so its advantages compare
    answers on images of the same prompt)."""

    id: str
    prompt: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    image: Image.Image | None = None
    group: str | None = None


def description_name(verdict_name: str) -> str:
    """The describing self-check's description segment read by verdict `verdict_name`."""
    return verdict_name.replace(VERDICT, DESCRIPTION)


def round_names(round_: int) -> tuple[str, str, str]:
    """(reflection, image, verdict) segment names of round `round_` (1 = plan, image, verdict)."""
    if round_ == 1:
        return "", IMAGE, VERDICT
    suffix = "" if round_ == 2 else f"_{round_ - 1}"
    return REFLECTION + suffix, REGEN_IMAGE + suffix, REGEN_VERDICT + suffix


def _without_eos(verdict_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """A verdict as the image turn reads it: without the EOS that closed its self-check turn."""
    if len(verdict_ids) > 1 and int(verdict_ids[-1]) == eos_id:
        return verdict_ids[:-1]
    return verdict_ids


def continued_context(context: ModelSequence, codes: torch.Tensor, verdict_ids: torch.Tensor, eos_id: int):
    """The image turn continued after a verdict: `context` (the image's own context), the image's
    codes (context, never scored), the verdict without the EOS that closed its self-check turn.
    After round 1 this is `adapter.regeneration_context`, the sequence SFT's regen task trains."""
    return (*context, GenImage(codes, scored=False), Text(_without_eos(verdict_ids, eos_id)))


@dataclass(frozen=True)
class TeacherForced:
    """One context a program sampled in, rebuilt for teacher forcing (see the module docstring).

    `sequence`: model segments, the pieces the program drew scored; `segments`: trajectory segment
    name -> index in `sequence` of the scored model segment holding that segment's ids."""

    sequence: ModelSequence
    segments: dict[str, int]


def _drawn(trajectory: Trajectory, name: str, kind: str, program: str) -> Segment:
    """The segment `name` of `trajectory`, checked to be a `kind` segment with the ids it was drawn with."""
    where = f"{program}: trajectory {trajectory.id!r}"
    if not trajectory.has(name):
        names = [segment.name for segment in trajectory.segments]
        raise ValueError(f"{where} has no segment {name!r} (it has {names}); its contexts cannot be rebuilt")
    segment = trajectory.segment(name)
    if segment.kind != kind:
        raise ValueError(f"{where}: segment {name!r} is {segment.kind}, expected {kind}")
    if segment.ids is None:
        raise ValueError(f"{where}: segment {name!r} has no ids (not written by a model): it cannot be teacher-forced")
    return segment


def teacher_forced(adapter: JanusAdapter, trajectory: Trajectory) -> list[TeacherForced]:
    """The teacher-forced views of `trajectory`, by the program that wrote it (`PROGRAMS`)."""
    program = PROGRAMS.get(trajectory.program)
    if program is None:
        raise ValueError(
            f"trajectory {trajectory.id!r}: unknown program {trajectory.program!r}; known: {sorted(PROGRAMS)}"
        )
    return program.views(adapter, trajectory)


def _text_segment(name: str, ids: torch.Tensor, logprobs: torch.Tensor, text: str, mask=None) -> Segment:
    mask = torch.ones(len(ids), dtype=torch.bool) if mask is None else mask
    return Segment(name, "text", ids=ids.cpu(), logprobs=logprobs.float().cpu(), mask=mask, text=text)


def _image_segment(name: str, codes: torch.Tensor, logprobs: torch.Tensor, image: Image.Image) -> Segment:
    return Segment(
        name,
        "image",
        ids=codes.cpu(),
        logprobs=logprobs.float().cpu(),
        mask=torch.ones(len(codes), dtype=torch.bool),
        image=image,
    )


def _check_budgets(**budgets: int) -> None:
    """Every token budget a program takes is at least one token."""
    for key, value in budgets.items():
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")


def sample_self_checks(
    adapter: JanusAdapter,
    images: list[Image.Image],
    prompts: list[str],
    generators,
    sampling: Sampling,
    max_reason_tokens: int,
    max_description_tokens: int,
) -> tuple[Judgement, list[tuple]]:
    """The self-check turn of each (image, prompt): the Judgement (with a describing checkpoint, its
    descriptions) and (ids, logprobs, mask, text) of each verdict (`max_reason_tokens` 0: the drawn
    answer alone)."""
    judgement = adapter.judge(
        images,
        prompts,
        reason=True,
        max_reason_tokens=max_reason_tokens,
        sampling=sampling,
        stop_ids=(adapter.spec.eos_id,),
        generator=generators,
        max_description_tokens=max_description_tokens,
    )
    verdicts = []
    for i, answer in enumerate(judgement.answer_ids):
        reason_ids, reason_logprobs = judgement.reasons.ids[i], judgement.reasons.logprobs[i]
        # The first answer token was drawn (restricted to Yes/No); further answer tokens are forced.
        forced = len(answer) - 1
        ids = torch.cat([torch.tensor(answer), reason_ids])
        logprobs = torch.cat([judgement.answer_logprobs[i : i + 1], torch.zeros(forced), reason_logprobs])
        mask = torch.cat(
            [torch.tensor([True]), torch.zeros(forced, dtype=torch.bool), torch.ones(len(reason_ids), dtype=torch.bool)]
        )
        text = adapter.tokenizer.decode(ids, skip_special_tokens=True)
        verdicts.append((ids, logprobs, mask, text))
    return judgement, verdicts


def enumerated_verdicts(adapter: JanusAdapter, judgement: Judgement) -> tuple[tuple, tuple]:
    """The answers " Yes" and " No" as verdicts (ids, logprobs, mask, text) of `sample_self_checks`,
    each taken with probability 1 (log-prob 0; `SelfCheck`'s `enumerate_answers`): the first token
    trained, any further answer tokens forced."""
    out = []
    for ids in judgement.choice_ids:
        forced = len(ids) - 1
        mask = torch.cat([torch.tensor([True]), torch.zeros(forced, dtype=torch.bool)])
        out.append((torch.tensor(ids), torch.zeros(len(ids)), mask, adapter.tokenizer.decode(ids, skip_special_tokens=True)))
    return tuple(out)


def self_check_segments(judgement: Judgement, verdict: tuple, i: int, verdict_name: str) -> list[Segment]:
    """Row `i`'s self-check as trajectory segments: its description (describing checkpoints), then
    `verdict` (ids, logprobs, mask, text)."""
    segments = []
    if (described := judgement.descriptions) is not None:
        segments.append(
            _text_segment(description_name(verdict_name), described.ids[i], described.logprobs[i], described.texts[i])
        )
    ids, logprobs, mask, text = verdict
    return [*segments, _text_segment(verdict_name, ids, logprobs, text, mask)]


def self_check_view(
    adapter: JanusAdapter, trajectory: Trajectory, image: Image.Image, verdict_name: str, program: str
) -> TeacherForced:
    """The self-check turn of `image`: `judge_context` (with a describing checkpoint, its description
    scored), then the verdict, its first token scored among the judge's " Yes"/" No"."""
    verdict = _drawn(trajectory, verdict_name, "text", program)
    scored: dict[str, int] = {}
    if adapter.self_check == "describe":
        name = description_name(verdict_name)
        description = Text(_drawn(trajectory, name, "text", program).ids, scored=True)
        context = adapter.judge_context(image, trajectory.prompt, description=description)
        scored[name] = next(i for i, piece in enumerate(context) if piece is description)
    else:
        context = adapter.judge_context(image, trajectory.prompt)
    choices = adapter.judge_choices(context)
    if int(verdict.ids[0]) not in choices:
        raise ValueError(
            f"{program}: trajectory {trajectory.id!r}: segment {verdict_name!r} starts with id "
            f"{int(verdict.ids[0])}, not one of the judge's first answer tokens {choices}"
        )
    verdict_text = Text(verdict.ids, scored=True, choices=choices)
    return TeacherForced((*context, verdict_text), {**scored, verdict_name: len(context)})


class Program:
    """Base of the rollout programs: rows, seeds, timings, input checks."""

    name: ClassVar[str]
    phases: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        adapter: JanusAdapter,
        seed: int = 0,
        num_generations: int = 1,
        guidance: Guidance = DEFAULT_GUIDANCE,
        sampling: Sampling = DEFAULT_SAMPLING,
    ):
        if num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {num_generations}")
        self.adapter, self.seed, self.num_generations = adapter, seed, num_generations
        self.guidance, self.sampling = guidance, sampling
        self.timings: dict[str, float] = {}

    def _generators(self, items: Sequence[RolloutItem], step: int, stage: str, rows: list[int] | None = None):
        """One generator per row (all rows, or the row indices `rows`) for `stage`."""
        n = self.num_generations
        rows = range(len(items) * n) if rows is None else rows
        return row_generators([row_seed(self.seed, step, items[r // n].id, r % n, stage) for r in rows])

    @contextmanager
    def _timed(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - start

    def _check_ids(self, items: Sequence[RolloutItem]) -> None:
        if not items:
            raise ValueError(f"{self.name}: no items given")
        ids = [item.id for item in items]
        for item in items:
            if not isinstance(item.id, str) or not item.id:
                raise ValueError(f"{self.name}: an item needs a non-empty string id, got {item.id!r}")
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"{self.name}: item ids repeat: {repeated}")

    def _check_room(self, item: RolloutItem, context: ModelSequence, new_positions: int, what: str) -> None:
        length = sequence_length(context)
        room = self.adapter.spec.max_positions
        if length + new_positions > room:
            raise ValueError(
                f"{self.name}: item {item.id!r} is too long: its {what} context is {length} positions and the "
                f"token budgets add {new_positions}, over the model's {room} positions (prompt {item.prompt[:60]!r})"
            )

    def _check_prompt(self, item: RolloutItem) -> None:
        if not isinstance(item.prompt, str) or not item.prompt.strip():
            raise ValueError(f"{self.name}: item {item.id!r} has an empty prompt")

    def _check_self_check_room(self, item: RolloutItem, max_description_tokens: int, max_verdict_tokens: int) -> None:
        """The self-check turn of `item.prompt` (its description at full length) leaves room for the verdict."""
        blank = Image.new("RGB", (self.adapter.spec.image_size,) * 2)
        if self.adapter.self_check == "describe":
            description = torch.tensor([self.adapter.spec.eos_id] * max_description_tokens)
            context = self.adapter.judge_context(blank, item.prompt, description=description)
        else:
            context = self.adapter.judge_context(blank, item.prompt)
        self._check_room(item, context, max_verdict_tokens, "self-check")

    def check(self, items: Sequence[RolloutItem]) -> None:
        """Raise a ValueError naming the item for input this program cannot sample; nothing is sampled."""
        raise NotImplementedError

    def __call__(
        self, items: Sequence[RolloutItem], step: int = 0, policy_version: int | None = None
    ) -> list[Trajectory]:
        raise NotImplementedError

    def _share_timings(self, trajectories: list[Trajectory]) -> None:
        share = {phase: self.timings.get(phase, 0.0) / len(trajectories) for phase in self.phases}
        for trajectory in trajectories:
            trajectory.info["seconds"] = dict(share)

    def teacher_forced(self, trajectory: Trajectory) -> list[TeacherForced]:
        """The contexts `trajectory`'s tokens were drawn in, their drawn pieces scored (`views`)."""
        return self.views(self.adapter, trajectory)

    @classmethod
    def views(cls, adapter: JanusAdapter, trajectory: Trajectory) -> list[TeacherForced]:
        """`teacher_forced` without an instance: the views need the adapter, not the sampling settings."""
        raise NotImplementedError(f"{cls.__name__} does not rebuild its contexts for teacher forcing")

    @classmethod
    def _check_views(cls, trajectory: Trajectory, views: list[TeacherForced]) -> list[TeacherForced]:
        """Every segment of `trajectory` has its place in `views`: none is silently left untrained."""
        placed = {name for view in views for name in view.segments}
        for segment in trajectory.segments:
            if segment.name not in placed:
                raise ValueError(
                    f"{cls.name}: trajectory {trajectory.id!r}: segment {segment.name!r} is not one this program "
                    f"writes in a context it can rebuild"
                )
        return views

    @classmethod
    def _check_program(cls, trajectory: Trajectory) -> None:
        if trajectory.program != cls.name:
            raise ValueError(
                f"{cls.name}: trajectory {trajectory.id!r} was written by program {trajectory.program!r}, "
                f"not {cls.name!r}: its contexts are that program's"
            )


class IntrospectiveT2I(Program):
    """Prompt → plan → image → verdict → (reflection → image)…; see the module docstring."""

    name = "introspective_t2i"
    phases = ("plan", "image", "decode", "verdict", "regeneration")

    def __init__(
        self,
        adapter: JanusAdapter,
        seed: int = 0,
        num_generations: int = 1,
        guidance: Guidance = DEFAULT_GUIDANCE,
        sampling: Sampling = DEFAULT_SAMPLING,
        regenerate: str = "on_no",
        max_rounds: int = 2,
        max_plan_tokens: int = 48,
        max_verdict_tokens: int = 48,
        max_reflection_tokens: int = 64,
        max_caption_tokens: int = 32,
    ):
        super().__init__(adapter, seed, num_generations, guidance, sampling)
        if regenerate not in REGENERATE:
            raise ValueError(f"regenerate must be one of {REGENERATE}, got {regenerate!r}")
        if max_rounds < 1:
            raise ValueError(f"max_rounds (images per trajectory at most) must be >= 1, got {max_rounds}")
        _check_budgets(
            max_plan_tokens=max_plan_tokens,
            max_verdict_tokens=max_verdict_tokens,
            max_reflection_tokens=max_reflection_tokens,
            max_caption_tokens=max_caption_tokens,
        )
        self.max_caption_tokens = max_caption_tokens  # a describing self-check's description
        self.regenerate, self.max_rounds = regenerate, max_rounds
        self.max_plan_tokens, self.max_verdict_tokens = max_plan_tokens, max_verdict_tokens
        self.max_reflection_tokens = max_reflection_tokens

    def check(self, items: Sequence[RolloutItem]) -> None:
        self._check_ids(items)
        image = self.adapter.spec.num_image_tokens + 2
        rounds = self.max_rounds - 1
        turn = self.max_plan_tokens + image + rounds * (image + self.max_verdict_tokens + self.max_reflection_tokens)
        for item in items:
            self._check_prompt(item)
            self._check_room(item, self.adapter.image_prompt(item.prompt), turn, "image turn")
            self._check_self_check_room(item, self.max_caption_tokens, self.max_verdict_tokens)

    def __call__(
        self, items: Sequence[RolloutItem], step: int = 0, policy_version: int | None = None
    ) -> list[Trajectory]:
        self.check(items)
        adapter, n, self.timings = self.adapter, self.num_generations, {}
        prompts = [items[r // n].prompt for r in range(len(items) * n)]
        with self._timed("plan"):
            plans = adapter.sample_text(
                [adapter.image_prompt(item.prompt) for item in items],
                max_new_tokens=self.max_plan_tokens,
                n=n,
                sampling=self.sampling,
                stop_strings=(PLAN_STOP,),
                generator=self._generators(items, step, "plan"),
            )
        segments: list[list[Segment]] = [
            [_text_segment(PLAN, ids, lp, text)] for ids, lp, text in zip(plans.ids, plans.logprobs, plans.texts)
        ]
        info: list[dict[str, Any]] = [{} for _ in prompts]
        # The image context of each row's current round, and the rows still going.
        contexts = [adapter.image_prompt(prompt) + (Text(ids),) for prompt, ids in zip(prompts, plans.ids)]
        active = list(range(len(prompts)))
        accepted: list[str | None] = [None] * len(prompts)
        last_drawn: list[str] = [IMAGE] * len(prompts)
        for round_ in range(1, self.max_rounds + 1):
            reflection_name, image_name, verdict_name = round_names(round_)
            phase = "regeneration" if round_ > 1 else None
            if round_ > 1:
                with self._timed(phase):
                    reflections = adapter.sample_text(
                        [contexts[r] for r in active],
                        max_new_tokens=self.max_reflection_tokens,
                        sampling=self.sampling,
                        stop_strings=(REFLECTION_STOP,),
                        generator=self._generators(items, step, reflection_name, active),
                    )
                for r, ids, lp, text in zip(active, reflections.ids, reflections.logprobs, reflections.texts):
                    segments[r].append(_text_segment(reflection_name, ids, lp, text))
                    contexts[r] = contexts[r] + (Text(ids),)
            with self._timed(phase or "image"):
                drawn = adapter.sample_images(
                    [contexts[r] for r in active],
                    guidance=self.guidance,
                    sampling=self.sampling,
                    generator=self._generators(items, step, image_name, active),
                )
            codes = drawn.codes.cpu()
            with self._timed(phase or "decode"):
                images = adapter.decode(codes)
            for r, row_codes, lp, image in zip(active, codes, drawn.logprobs, images):
                segments[r].append(_image_segment(image_name, row_codes, lp, image))
                last_drawn[r] = image_name
            if round_ > 1 and round_ == self.max_rounds:
                break  # the last image is not judged: no round follows
            with self._timed(phase or "verdict"):
                judgement, verdicts = sample_self_checks(
                    adapter,
                    images,
                    [prompts[r] for r in active],
                    self._generators(items, step, verdict_name, active),
                    self.sampling,
                    self.max_verdict_tokens,
                    self.max_caption_tokens,
                )
            going = []
            for i, (r, row_codes, p_yes, (ids, _, _, text)) in enumerate(
                zip(active, codes, judgement.p_yes, verdicts)
            ):
                segments[r] += self_check_segments(judgement, verdicts[i], i, verdict_name)
                info[r][f"p_yes/{verdict_name}"] = float(p_yes)
                parsed = parse_verdict(text)
                if parsed is not None and parsed.matches:
                    accepted[r] = image_name
                if self.regenerate == "always" or (
                    self.regenerate == "on_no" and parsed is not None and not parsed.matches
                ):
                    contexts[r] = continued_context(contexts[r], row_codes, ids, adapter.spec.eos_id)
                    going.append(r)
            active = going
            if not active or round_ == self.max_rounds:
                break
        trajectories = []
        for r, prompt in enumerate(prompts):
            item, k = items[r // n], r % n
            row_info = {"p_yes": info[r][f"p_yes/{VERDICT}"], **info[r], "final_image": accepted[r] or last_drawn[r]}
            row_info["rounds"] = sum(segment.kind == "image" for segment in segments[r])
            trajectories.append(
                Trajectory(
                    id=f"{item.id}/{k}",
                    group=item.id,
                    prompt=prompt,
                    program=self.name,
                    segments=segments[r],
                    metadata=dict(item.metadata),
                    info=row_info,
                    policy_version=policy_version,
                )
            )
        self._share_timings(trajectories)
        return trajectories

    @classmethod
    def views(cls, adapter: JanusAdapter, trajectory: Trajectory) -> list[TeacherForced]:
        """The image turn — prompt, plan, image, then per further round the previous verdict (context,
        without its EOS, after the image's codes), the reflection and the new image — and one
        self-check turn per verdict, its first token scored among the judge's " Yes"/" No"."""
        cls._check_program(trajectory)
        eos_id = adapter.spec.eos_id

        def drawn(name: str, kind: str) -> Segment:
            return _drawn(trajectory, name, kind, cls.name)

        turn: list = list(adapter.image_prompt(trajectory.prompt))
        names: dict[str, int] = {}

        def add(name: str, piece) -> None:
            names[name] = len(turn)
            turn.append(piece)

        add(PLAN, Text(drawn(PLAN, "text").ids, scored=True))
        add(IMAGE, GenImage(drawn(IMAGE, "image").ids, scored=True))
        checks = []
        round_ = 1
        while True:
            _, image_name, verdict_name = round_names(round_)
            if trajectory.has(verdict_name):
                checks.append(cls._self_check(adapter, trajectory, image_name, verdict_name))
            reflection_name, next_image, _ = round_names(round_ + 1)
            if not trajectory.has(reflection_name):
                break
            # Sampled after `continued_context`: the image's codes (already in the turn), the verdict.
            turn.append(Text(_without_eos(drawn(verdict_name, "text").ids, eos_id)))
            add(reflection_name, Text(drawn(reflection_name, "text").ids, scored=True))
            add(next_image, GenImage(drawn(next_image, "image").ids, scored=True))
            round_ += 1
        return cls._check_views(trajectory, [TeacherForced(tuple(turn), names), *checks])

    @classmethod
    def _self_check(cls, adapter: JanusAdapter, trajectory: Trajectory, image_name: str, verdict_name: str):
        image = _drawn(trajectory, image_name, "image", cls.name).image
        return self_check_view(adapter, trajectory, image, verdict_name, cls.name)

class Reconstruction(Program):
    """Source image → caption → image from the caption (UAE); see the module docstring."""

    name = "reconstruction"
    phases = ("caption", "image", "decode")
    caption_phases = ("caption",)  # the phases with redraw=False

    def __init__(
        self,
        adapter: JanusAdapter,
        seed: int = 0,
        num_generations: int = 1,
        guidance: Guidance = DEFAULT_GUIDANCE,
        sampling: Sampling = DEFAULT_SAMPLING,
        max_caption_tokens: int = 32,
        redraw: bool = True,
    ):
        super().__init__(adapter, seed, num_generations, guidance, sampling)
        _check_budgets(max_caption_tokens=max_caption_tokens)
        self.max_caption_tokens, self.redraw = max_caption_tokens, redraw

    def check(self, items: Sequence[RolloutItem]) -> None:
        self._check_ids(items)
        image = self.adapter.spec.num_image_tokens + 2
        for item in items:
            if not isinstance(item.image, Image.Image):
                raise ValueError(f"{self.name}: item {item.id!r} has no source image")  # noqa: TRY004 - bad input
            self._check_room(item, self.adapter.caption_context(item.image), self.max_caption_tokens, "caption")
            if self.redraw:  # the redrawing's context is the caption in the image turn
                head = self.adapter.image_prompt("x")
                self._check_room(item, head, self.max_caption_tokens + image, "image turn")

    def __call__(
        self, items: Sequence[RolloutItem], step: int = 0, policy_version: int | None = None
    ) -> list[Trajectory]:
        self.check(items)
        adapter, n, self.timings = self.adapter, self.num_generations, {}
        with self._timed("caption"):
            captions = adapter.sample_text(
                [adapter.caption_context(item.image) for item in items],
                max_new_tokens=self.max_caption_tokens,
                n=n,
                sampling=self.sampling,
                stop_ids=(adapter.spec.eos_id,),
                generator=self._generators(items, step, "caption"),
            )
        texts = [text.strip() for text in captions.texts]
        codes = images = None
        if self.redraw:
            with self._timed("image"):
                drawn = adapter.sample_images(
                    [adapter.image_prompt(text) for text in texts],
                    guidance=self.guidance,
                    sampling=self.sampling,
                    generator=self._generators(items, step, IMAGE),
                )
            codes = drawn.codes.cpu()
            with self._timed("decode"):
                images = adapter.decode(codes)
        trajectories = []
        for r, text in enumerate(texts):
            item, k = items[r // n], r % n
            segments = [_text_segment(CAPTION, captions.ids[r], captions.logprobs[r], text)]
            if self.redraw:
                segments.append(_image_segment(IMAGE, codes[r], drawn.logprobs[r], images[r]))
            trajectories.append(
                Trajectory(
                    id=f"{item.id}/{k}",
                    group=item.id,
                    prompt=item.prompt,
                    program=self.name,
                    segments=segments,
                    metadata=dict(item.metadata),
                    source_image=item.image,
                    info={"final_image": IMAGE} if self.redraw else {},
                    policy_version=policy_version,
                )
            )
        self._share_timings(trajectories)
        return trajectories

    @classmethod
    def views(cls, adapter: JanusAdapter, trajectory: Trajectory) -> list[TeacherForced]:
        """The captioning turn of the source image, and (when it was redrawn) the image turn of the
        caption's (stripped) text."""
        cls._check_program(trajectory)
        caption = _drawn(trajectory, CAPTION, "text", cls.name)
        if trajectory.source_image is None:  # Trajectory checks it is a PIL image otherwise
            raise ValueError(
                f"{cls.name}: trajectory {trajectory.id!r} has no source_image: segment {CAPTION!r}'s context"
            )
        captioning = adapter.caption_context(trajectory.source_image)
        views = [TeacherForced((*captioning, Text(caption.ids, scored=True)), {CAPTION: len(captioning)})]
        if trajectory.has(IMAGE):
            image = _drawn(trajectory, IMAGE, "image", cls.name)
            drawing = adapter.image_prompt(caption.text)
            views.append(TeacherForced((*drawing, GenImage(image.ids, scored=True)), {IMAGE: len(drawing)}))
        return cls._check_views(trajectory, views)


class SelfCheck(Program):
    """Image + prompt → (description →) verdict: the introspective program's self-check turn alone,
    on images given with the item (`item.image`, e.g. the shapes world's renders, half of them
    violating their prompt); see the module docstring."""

    name = "self_check"
    phases = ("verdict",)

    def __init__(
        self,
        adapter: JanusAdapter,
        seed: int = 0,
        num_generations: int = 1,
        sampling: Sampling = DEFAULT_SAMPLING,
        max_verdict_tokens: int = 48,
        max_caption_tokens: int = 32,
        answer_only: bool = False,
        enumerate_answers: bool = False,
    ):
        super().__init__(adapter, seed, num_generations, sampling=sampling)
        _check_budgets(max_verdict_tokens=max_verdict_tokens, max_caption_tokens=max_caption_tokens)
        if enumerate_answers and not answer_only:
            raise ValueError("self_check: enumerate_answers needs answer_only (a reason follows a drawn answer only)")
        self.max_verdict_tokens, self.max_caption_tokens = max_verdict_tokens, max_caption_tokens
        # The verdict is the drawn " Yes"/" No" alone: a term on it trains the decision, not a reason
        # that would share its advantage (and dilute it: one answer token among a dozen).
        self.answer_only = answer_only
        self.enumerate_answers = enumerate_answers

    def check(self, items: Sequence[RolloutItem]) -> None:
        self._check_ids(items)
        for item in items:
            if not isinstance(item.image, Image.Image):
                raise ValueError(f"{self.name}: item {item.id!r} has no image to judge")  # noqa: TRY004 - bad input
            self._check_prompt(item)
            self._check_self_check_room(item, self.max_caption_tokens, self.max_verdict_tokens)

    def __call__(
        self, items: Sequence[RolloutItem], step: int = 0, policy_version: int | None = None
    ) -> list[Trajectory]:
        self.check(items)
        n, self.timings = self.num_generations, {}
        rows = [items[r // n] for r in range(len(items) * n)]
        with self._timed("verdict"):
            judgement, verdicts = sample_self_checks(
                self.adapter,
                [item.image for item in rows],
                [item.prompt for item in rows],
                self._generators(items, step, VERDICT),
                self.sampling,
                0 if self.answer_only else self.max_verdict_tokens,
                self.max_caption_tokens,
            )
        # (row, verdict, id suffix): the drawn answer, or each answer in turn (module doc).
        answers = [(r, verdicts[r], "") for r in range(len(rows))]
        if self.enumerate_answers:
            both = tuple(zip(enumerated_verdicts(self.adapter, judgement), ("/yes", "/no")))
            answers = [(r, verdict, suffix) for r in range(len(rows)) for verdict, suffix in both]
        trajectories = [
            Trajectory(
                id=f"{rows[r].id}/{r % n}{suffix}",
                group=rows[r].group or rows[r].id,
                prompt=rows[r].prompt,
                program=self.name,
                segments=self_check_segments(judgement, verdict, r, VERDICT),
                metadata=dict(rows[r].metadata),
                source_image=rows[r].image,
                info={"p_yes": float(judgement.p_yes[r])},
                policy_version=policy_version,
            )
            for r, verdict, suffix in answers
        ]
        self._share_timings(trajectories)
        return trajectories

    @classmethod
    def views(cls, adapter: JanusAdapter, trajectory: Trajectory) -> list[TeacherForced]:
        """The self-check turn of the judged image (`source_image`)."""
        cls._check_program(trajectory)
        if trajectory.source_image is None:
            raise ValueError(f"{cls.name}: trajectory {trajectory.id!r} has no source_image: the image it judged")
        view = self_check_view(adapter, trajectory, trajectory.source_image, VERDICT, cls.name)
        return cls._check_views(trajectory, [view])


PROGRAMS: dict[str, type[Program]] = {
    program.name: program for program in (IntrospectiveT2I, Reconstruction, SelfCheck)
}
"""Rollout programs by name (`rollout.program` in config)."""
