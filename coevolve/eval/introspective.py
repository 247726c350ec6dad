"""Introspective trajectories for evaluation: plan → image → verdict → (on a No) reflection → image.

The format is `coevolve.model.introspection`'s; this module only samples it, batched over
prompts, in the order the format prescribes:

1. plan in the image turn (stops at `PLAN_STOP`), then the first image after it (with CFG);
2. the verdict in its own self-check turn (`adapter.judge_context`, stops at EOS), and P(yes)
   from the constrained first answer token (`adapter.judge`);
3. on a parsed No, the image turn continues: first image, verdict, then a reflection (stops at
   `REFLECTION_STOP`) and a second image (`regenerate`).

Nothing here is scored or trained; the rollout programs sample the same turns with their
log-probs kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from coevolve.model.adapter import JanusAdapter
from coevolve.model.guidance import Guidance
from coevolve.model.introspection import (
    PLAN_STOP,
    REFLECTION_STOP,
    ParsedVerdict,
    is_plan,
    parse_reflection,
    parse_verdict,
)
from coevolve.model.sampling import Sampling
from coevolve.model.segments import Sequence, Text


@dataclass
class Trajectory:
    """One prompt's trajectory. Ids are as sampled (the stop token included); texts are decoded
    without special tokens."""

    prompt: str
    plan_ids: torch.Tensor  # (T_plan,) text ids
    plan: str
    codes: torch.Tensor  # (num_image_tokens,) VQ ids of the first image
    image: Image.Image
    verdict_ids: torch.Tensor  # (T_verdict,) text ids, ending in EOS when the model closed its turn
    verdict: str
    p_yes: float  # P(" Yes") against P(" No") as the first token of the self-check answer
    reflection_ids: torch.Tensor | None = None  # set by `regenerate`, on a parsed No only
    reflection: str | None = None
    regen_codes: torch.Tensor | None = None
    regen_image: Image.Image | None = None

    @property
    def plan_in_format(self) -> bool:
        return is_plan(self.plan)

    @property
    def parsed_verdict(self) -> ParsedVerdict | None:
        return parse_verdict(self.verdict)

    @property
    def says_no(self) -> bool:
        """The verdict parses as a No: the trajectory goes on to reflect and regenerate."""
        parsed = self.parsed_verdict
        return parsed is not None and not parsed.matches

    @property
    def reflection_in_format(self) -> bool:
        return self.reflection is not None and parse_reflection(self.reflection) is not None

    @property
    def in_format(self) -> bool:
        """Plan and verdict parse; after a No, the reflection parses and a second image exists."""
        if not (self.plan_in_format and self.parsed_verdict is not None):
            return False
        return not self.says_no or (self.reflection_in_format and self.regen_image is not None)

    @property
    def final_image(self) -> Image.Image:
        return self.image if self.regen_image is None else self.regen_image


def image_turn(adapter: JanusAdapter, prompt: str, plan_ids: torch.Tensor) -> Sequence:
    """The context the first image is drawn in: the prompt's image turn, then the plan."""
    return adapter.image_prompt(prompt) + (Text(plan_ids),)


def continuation_context(adapter: JanusAdapter, trajectory: Trajectory) -> Sequence:
    """The image turn continued after a No: plan, first image (not scored), verdict.

    The verdict's closing EOS is dropped: in the self-check turn it ends the answer, but here
    the turn goes on with the reflection.
    """
    verdict_ids = trajectory.verdict_ids
    if len(verdict_ids) > 1 and int(verdict_ids[-1]) == adapter.spec.eos_id:
        verdict_ids = verdict_ids[:-1]
    return adapter.regeneration_context(trajectory.prompt, trajectory.plan_ids, trajectory.codes, verdict_ids)


def sample_trajectories(
    adapter: JanusAdapter,
    prompts: list[str],
    guidance: Guidance,
    sampling: Sampling,
    max_plan_tokens: int,
    max_verdict_tokens: int,
    max_reflection_tokens: int,
    generator: torch.Generator | None = None,
) -> list[Trajectory]:
    """One trajectory per prompt, all steps batched over `prompts`; the No ones regenerated."""
    plans = adapter.sample_text(
        [adapter.image_prompt(prompt) for prompt in prompts],
        max_new_tokens=max_plan_tokens,
        sampling=sampling,
        stop_strings=(PLAN_STOP,),
        generator=generator,
    )
    first = adapter.sample_images(
        [image_turn(adapter, prompt, ids) for prompt, ids in zip(prompts, plans.ids)],
        guidance=guidance,
        sampling=sampling,
        generator=generator,
    )
    codes = first.codes.cpu()
    images = adapter.decode(codes)
    verdicts = adapter.sample_text(
        [adapter.judge_context(image, prompt) for image, prompt in zip(images, prompts)],
        max_new_tokens=max_verdict_tokens,
        sampling=sampling,
        stop_ids=(adapter.spec.eos_id,),
        generator=generator,
    )
    p_yes = adapter.judge(images, prompts).p_yes
    trajectories = [
        Trajectory(
            prompt=prompts[i],
            plan_ids=plans.ids[i],
            plan=plans.texts[i],
            codes=codes[i],
            image=images[i],
            verdict_ids=verdicts.ids[i],
            verdict=verdicts.texts[i],
            p_yes=float(p_yes[i]),
        )
        for i in range(len(prompts))
    ]
    regenerate(adapter, trajectories, guidance, sampling, max_reflection_tokens, generator)
    return trajectories


def regenerate(
    adapter: JanusAdapter,
    trajectories: list[Trajectory],
    guidance: Guidance,
    sampling: Sampling,
    max_reflection_tokens: int,
    generator: torch.Generator | None = None,
) -> list[Trajectory]:
    """Fill in reflection and second image, in place, for the trajectories whose verdict is a
    parsed No; returns those. The others are left as they are."""
    rejected = [trajectory for trajectory in trajectories if trajectory.says_no]
    if not rejected:
        return []
    contexts = [continuation_context(adapter, trajectory) for trajectory in rejected]
    reflections = adapter.sample_text(
        contexts,
        max_new_tokens=max_reflection_tokens,
        sampling=sampling,
        stop_strings=(REFLECTION_STOP,),
        generator=generator,
    )
    second = adapter.sample_images(
        [context + (Text(ids),) for context, ids in zip(contexts, reflections.ids)],
        guidance=guidance,
        sampling=sampling,
        generator=generator,
    )
    codes = second.codes.cpu()
    for trajectory, ids, text, row, image in zip(
        rejected, reflections.ids, reflections.texts, codes, adapter.decode(codes)
    ):
        trajectory.reflection_ids, trajectory.reflection = ids, text
        trajectory.regen_codes, trajectory.regen_image = row, image
    return rejected
