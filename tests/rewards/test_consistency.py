"""`self_consistency`: an honest self-check outscores a wrong one; self from P(yes) or the verdict text."""

from __future__ import annotations

import numpy as np
import pytest

from coevolve.data.shapes import balanced_examples
from coevolve.model.introspection import verdict_text
from coevolve.trajectory import IMAGE, VERDICT, Segment, Trajectory
from rewards import ScoreBatch, Scorer, SelfConsistency
from rewards.shapes_verifier import GENEVAL

EXAMPLES = balanced_examples(60, seed=2024)  # 30 satisfying renders, 30 labelled violations, 6 categories


def _trajectory(example, index: int, says_yes: bool, p_yes: float) -> Trajectory:
    reason = example.violation or "the image shows something else"
    return Trajectory(
        id=f"case{index}/{'yes' if says_yes else 'no'}",
        group=f"case{index}",
        prompt=example.prompt,
        program="test",
        segments=[
            Segment(IMAGE, "image", image=example.render()),
            Segment(VERDICT, "text", text=verdict_text(says_yes, reason)),
        ],
        metadata={GENEVAL: example.metadata},
        info={"p_yes": p_yes},
    )


def _honest_and_wrong(confidence: float):
    honest, wrong = [], []
    for i, example in enumerate(EXAMPLES):
        truth = example.satisfies
        honest.append(_trajectory(example, i, truth, confidence if truth else 1 - confidence))
        wrong.append(_trajectory(example, i, not truth, 1 - confidence if truth else confidence))
    return honest, wrong


@pytest.mark.parametrize("self_source", ["verdict", "p_yes"])
def test_honest_verdicts_outrank_wrong_ones_in_every_case(self_source):
    scorer = SelfConsistency(judge={"name": "shapes_verifier"}, self_source=self_source)
    honest, wrong = _honest_and_wrong(confidence=0.8)
    h = np.array(scorer.score(honest).scores)
    w = np.array(scorer.score(wrong).scores)
    print(
        f"self_consistency ({self_source}): honest mean {h.mean():.3f}, wrong mean {w.mean():.3f}, "
        f"honest > wrong in {(h > w).sum()}/{len(h)} cases"
    )
    assert (h > w).all()
    if self_source == "verdict":
        assert (h == 1.0).all() and (w == 0.0).all()
    else:  # 1 - |verifier - p_yes| with p_yes 0.8 towards the truth (honest) or away from it (wrong)
        np.testing.assert_allclose(h, 0.8)
        np.testing.assert_allclose(w, 0.2)


def test_details_carry_judge_and_self():
    honest, _ = _honest_and_wrong(confidence=0.9)
    out = SelfConsistency(judge={"name": "shapes_verifier"}).score(honest[:2])
    assert out.details == [{"judge": 1.0, "self": 0.9}, {"judge": 0.0, "self": pytest.approx(0.1)}]


def test_unparsed_verdict_is_an_error_unless_a_score_is_configured():
    honest, _ = _honest_and_wrong(confidence=0.9)
    broken = honest[0]
    broken.segments[1] = Segment(VERDICT, "text", text=" Maybe?")
    scorer = SelfConsistency(judge={"name": "shapes_verifier"}, self_source="verdict")
    with pytest.raises(ValueError, match=r"case0/yes.*does not parse as Yes/No"):
        scorer.score([broken])
    penalised = SelfConsistency(judge={"name": "shapes_verifier"}, self_source="verdict", unparsed_score=-1.0)
    assert penalised.score([broken, honest[1]]).scores == [-1.0, 1.0]
    with pytest.raises(ValueError, match="applies to self_source 'verdict' only"):
        SelfConsistency(judge={"name": "shapes_verifier"}, unparsed_score=0.0)


def test_missing_p_yes_and_a_judge_outside_unit_interval_fail():
    honest, _ = _honest_and_wrong(confidence=0.9)
    del honest[0].info["p_yes"]
    with pytest.raises(KeyError, match=r"case0/yes.*info\['p_yes'\]"):
        SelfConsistency(judge={"name": "shapes_verifier"}).score(honest[:1])

    class Cosine(Scorer):
        def score(self, trajectories):
            return ScoreBatch([-0.3] * len(trajectories))

    with pytest.raises(ValueError, match=r"outside \[0, 1\].*case1/no"):
        SelfConsistency(judge=Cosine()).score(honest[1:2])


def test_a_yes_no_judge_as_the_judge(tiny_checkpoint):
    """The frozen tiny policy as the judge: the score is exactly 1 - |P_judge(yes) - self|."""
    from rewards import YesNoJudge

    honest, wrong = _honest_and_wrong(confidence=0.8)
    judge = YesNoJudge(model_path=str(tiny_checkpoint))
    sample = honest[:4] + wrong[:4]
    p = np.array(judge.score(sample).scores)
    out = SelfConsistency(judge=judge).score(sample)
    selves = np.array([t.info["p_yes"] for t in sample])
    np.testing.assert_allclose(out.scores, 1 - np.abs(p - selves), rtol=1e-6)
