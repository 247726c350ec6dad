"""`shapes_verifier`: the shapes world's programmatic judge as a reward (DESIGN.md section 4).

Reads the trajectory's GenEval metadata (`trajectory.metadata["geneval"]`) and one of its images,
and scores with `coevolve.data.shapes.verify`: 1/0 for GenEval's pass/fail, or with `graded` the
fraction of clauses met (GenEval's `include`/`exclude` clauses: a two-object prompt whose image
has one of the two scores 0.5).

With `text` the judge reads the other way: the claims checked are those of a text the policy
wrote about the image — a self-check's `description`, a reconstruction's `caption` — parsed as a
caption of the world's grammar (`parse_caption`: exactly the objects it names, their counts,
colours and relation), so a description earns what is true of the image it describes, as an image
earns what is true of its prompt. A text outside the grammar claims nothing: `unparsed_score`
scores it (required with `text`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from coevolve.data.shapes import verify
from coevolve.data.shapes.describe import parse_caption, verify_described
from coevolve.trajectory import IMAGE, Trajectory
from rewards.base import ScoreBatch, Scorer, check_segment_name, register_scorer, select_image

GENEVAL = "geneval"
"""Key of a trajectory's GenEval metadata in `Trajectory.metadata`."""


@register_scorer("shapes_verifier")
class ShapesVerifier(Scorer):
    """Score an image against its prompt's GenEval metadata (or a text about it) with the shapes verifier.

    Args:
        segment: the image segment to judge ("image", "regen_image", "final" or "source").
        graded: False: 1.0 when every clause holds, else 0.0; True: the fraction of clauses met.
        text: None (the prompt's metadata), or the text segment whose caption is checked against
            the image (e.g. "description" with segment "image", "caption" with "source").
        unparsed_score: with `text` or `scene_of`, the score of a text that is not a caption of the grammar.
        scene_of: None, or the text segment whose described scene is judged against the prompt's
            metadata in place of an image (e.g. "description"); not with `text` or `segment`.
    """

    def __init__(self, segment: str = IMAGE, graded: bool = False, text: str | None = None,
                 unparsed_score: float | None = None, scene_of: str | None = None):  # fmt: skip
        self.segment = check_segment_name(segment, "shapes_verifier")
        self.graded = bool(graded)
        if text is not None and scene_of is not None:
            raise ValueError(
                f"shapes_verifier: text {text!r} checks a text against an image, scene_of {scene_of!r} a prompt "
                "against a text's scene; give one"
            )
        if scene_of is not None and segment != IMAGE:
            raise ValueError(f"shapes_verifier: scene_of {scene_of!r} judges a text's scene, not segment {segment!r}")
        read = text if text is not None else scene_of
        if read is not None:
            key = "text" if text is not None else "scene_of"
            check_segment_name(read, f"shapes_verifier {key}")
            if unparsed_score is None or not math.isfinite(unparsed_score):
                raise ValueError(
                    f"shapes_verifier: {key} {read!r} needs a finite unparsed_score (what a {read} outside the "
                    f"caption grammar scores), got {unparsed_score!r}"
                )
        elif unparsed_score is not None:
            raise ValueError(
                "shapes_verifier: unparsed_score applies with text or scene_of only (the prompt's metadata always "
                "parses)"
            )
        self.text, self.scene_of, self.unparsed_score = text, scene_of, unparsed_score

    def _claims(self, trajectory: Trajectory) -> dict | None:
        if self.text is not None:
            return parse_caption(trajectory.text(self.text))
        if GENEVAL not in trajectory.metadata:
            raise KeyError(f"trajectory {trajectory.id!r} has no metadata[{GENEVAL!r}] to verify against")
        return trajectory.metadata[GENEVAL]

    def score(self, trajectories: Sequence[Trajectory]) -> ScoreBatch:
        scores, details = [], []
        reads_text = self.text is not None or self.scene_of is not None
        for trajectory in trajectories:
            claims = self._claims(trajectory)
            if claims is None:
                verdict = None
            elif self.scene_of is not None:
                verdict = verify_described(trajectory.text(self.scene_of), claims)
            else:
                verdict = verify(select_image(trajectory, self.segment), claims)
            if verdict is None:
                scores.append(self.unparsed_score)
                details.append({"correct": False, "parsed": False})
                continue
            scores.append(verdict.score if self.graded else float(verdict.correct))
            details.append({"correct": verdict.correct, "clauses_met": verdict.score, "reasons": verdict.reasons}
                           | ({"parsed": True} if reads_text else {}))  # fmt: skip
        return ScoreBatch(scores, details)
