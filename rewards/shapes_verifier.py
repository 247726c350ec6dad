"""`shapes_verifier`: the shapes world's programmatic judge as a reward (DESIGN.md section 4).

Reads the trajectory's GenEval metadata (`trajectory.metadata["geneval"]`) and one of its images,
and scores with `coevolve.data.shapes.verify`: 1/0 for GenEval's pass/fail, or with `graded` the
fraction of clauses met (GenEval's `include`/`exclude` clauses: a two-object prompt whose image
has one of the two scores 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence

from coevolve.data.shapes import verify
from coevolve.trajectory import IMAGE, Trajectory
from rewards.base import ScoreBatch, Scorer, check_segment_name, register_scorer, select_image

GENEVAL = "geneval"
"""Key of a trajectory's GenEval metadata in `Trajectory.metadata`."""


@register_scorer("shapes_verifier")
class ShapesVerifier(Scorer):
    """Score an image against its prompt's GenEval metadata with the shapes verifier.

    Args:
        segment: the image segment to judge ("image", "regen_image", or "final").
        graded: False: 1.0 when every clause holds, else 0.0; True: the fraction of clauses met.
    """

    def __init__(self, segment: str = IMAGE, graded: bool = False):
        self.segment = check_segment_name(segment, "shapes_verifier")
        self.graded = bool(graded)

    def score(self, trajectories: Sequence[Trajectory]) -> ScoreBatch:
        scores, details = [], []
        for trajectory in trajectories:
            if GENEVAL not in trajectory.metadata:
                raise KeyError(f"trajectory {trajectory.id!r} has no metadata[{GENEVAL!r}] to verify against")
            verdict = verify(select_image(trajectory, self.segment), trajectory.metadata[GENEVAL])
            scores.append(verdict.score if self.graded else float(verdict.correct))
            details.append({"correct": verdict.correct, "clauses_met": verdict.score, "reasons": verdict.reasons})
        return ScoreBatch(scores, details)
