"""Format rewards: does the trajectory's text keep the format SFT taught?

`introspective_format`, for the introspective program:

R1-style format reward for the introspective program (`coevolve.model.introspection`): the share
of its text segments written in their format — the plan one `Plan: … .` sentence, every verdict a
parsable Yes/No (`parse_verdict`), every reflection `Reflection: the image is wrong because … .
Draw the image again, correcting the mistake.` Trained on the text segments, it holds the format
that SFT taught while other terms move the policy (without it, rewards on the image alone let
the plan and reflection text drift).

`shapes_caption_format`, for the reconstruction program on the shapes world: 1 when the caption
is in the world's caption grammar (`parse_caption`), else 0. The reconstruction reward alone
does not hold it: trained on the similarity of the redrawn image, captions drifted into word
salad within 60 RL steps on one seed of three ("Plan: circle above to the right of the
mistake."; parsed 93% → 0%). Only for the shapes world: real captions have no grammar to check.
"""

from __future__ import annotations

from collections.abc import Sequence

from coevolve.data.shapes.describe import parse_caption
from coevolve.model.introspection import is_plan, parse_reflection, parse_verdict
from coevolve.trajectory import CAPTION, PLAN, REFLECTION, VERDICT, Trajectory
from rewards.base import ScoreBatch, Scorer, register_scorer

REGEN_VERDICT = "regen_verdict"


def _checker(name: str):
    """The format check of a segment name, or None for a segment without one (images, captions)."""
    if name == PLAN:
        return is_plan
    if name == VERDICT or name.startswith(REGEN_VERDICT):
        return lambda text: parse_verdict(text) is not None
    if name.startswith(REFLECTION):
        return lambda text: parse_reflection(text) is not None
    return None


@register_scorer("introspective_format")
class IntrospectiveFormat(Scorer):
    """The fraction of a trajectory's plan, verdict and reflection segments in format (0..1)."""

    def score(self, trajectories: Sequence[Trajectory]) -> ScoreBatch:
        scores, details = [], []
        for trajectory in trajectories:
            checked = {}
            for segment in trajectory.segments:
                check = _checker(segment.name)
                if check is not None and segment.kind == "text":
                    checked[segment.name] = bool(check(segment.text))
            if not checked:
                raise ValueError(
                    f"trajectory {trajectory.id!r} has no plan, verdict or reflection segment to check "
                    f"(segments {[s.name for s in trajectory.segments]}); is it an introspective trajectory?"
                )
            scores.append(sum(checked.values()) / len(checked))
            details.append({"in_format": checked})
        return ScoreBatch(scores, details)


@register_scorer("shapes_caption_format")
class ShapesCaptionFormat(Scorer):
    """1.0 when the trajectory's caption parses in the shapes world's caption grammar, else 0.0."""

    def score(self, trajectories: Sequence[Trajectory]) -> ScoreBatch:
        scores, details = [], []
        for trajectory in trajectories:
            captions = [s for s in trajectory.segments if s.name == CAPTION and s.kind == "text"]
            if len(captions) != 1:
                raise ValueError(
                    f"trajectory {trajectory.id!r} has {len(captions)} caption segments, not one "
                    f"(segments {[s.name for s in trajectory.segments]}); is it a reconstruction trajectory?"
                )
            parsed = parse_caption(captions[0].text) is not None
            scores.append(1.0 if parsed else 0.0)
            details.append({"parsed": parsed})
        return ScoreBatch(scores, details)
