"""`self_consistency`: an honest self-check outscores a wrong one; self from P(yes) or the verdict text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coevolve.data.shapes import balanced_examples
from coevolve.model.introspection import verdict_text
from coevolve.trajectory import IMAGE, VERDICT, Segment, Trajectory
from rewards import ScoreBatch, Scorer, SelfConsistency
from rewards.shapes_verifier import GENEVAL

EXAMPLES = balanced_examples(60, seed=2024)  # 30 satisfying renders, 30 labelled violations, 6 categories


def _trajectory(example, index: int, says_yes: bool, p_yes: float, group: str | None = None) -> Trajectory:
    reason = example.violation or "the image shows something else"
    return Trajectory(
        id=f"case{index}/{'yes' if says_yes else 'no'}",
        group=group or f"case{index}",
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


@pytest.mark.parametrize("self_source", ["verdict", "p_yes", "answer"])
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
    if self_source in ("verdict", "answer"):
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


def _one_answer(examples, says_yes: bool) -> list[Trajectory]:
    return [_trajectory(example, i, says_yes, 0.9 if says_yes else 0.1) for i, example in enumerate(examples)]


def test_balanced_classes_pay_every_constant_answer_the_same_and_honesty_more():
    examples = [e for e in EXAMPLES if e.satisfies][:3] + [e for e in EXAMPLES if not e.satisfies][:1]
    scorer = SelfConsistency(judge={"name": "shapes_verifier"}, self_source="verdict", balance_classes="batch")
    always_yes = scorer.score(_one_answer(examples, True))
    always_no = scorer.score(_one_answer(examples, False))
    # n = 4 samples, k = 2 classes: matching images weigh 4 / (2 * 3), the violating one 4 / (2 * 1)
    np.testing.assert_allclose(always_yes.scores, [2 / 3, 2 / 3, 2 / 3, 0.0])
    np.testing.assert_allclose(always_no.scores, [0.0, 0.0, 0.0, 2.0])
    assert np.mean(always_yes.scores) == pytest.approx(0.5) and np.mean(always_no.scores) == pytest.approx(0.5)
    assert [d["weight"] for d in always_no.details] == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0])
    honest = scorer.score([_trajectory(e, i, e.satisfies, 0.5) for i, e in enumerate(examples)])
    assert np.mean(honest.scores) == pytest.approx(1.0)
    unbalanced = SelfConsistency(judge={"name": "shapes_verifier"}, self_source="verdict")
    assert np.mean(unbalanced.score(_one_answer(examples, True)).scores) == pytest.approx(0.75)


def test_balanced_classes_with_one_class_weigh_one():
    examples = [e for e in EXAMPLES if not e.satisfies][:3]
    scorer = SelfConsistency(judge={"name": "shapes_verifier"}, self_source="verdict", balance_classes="batch")
    np.testing.assert_allclose(scorer.score(_one_answer(examples, False)).scores, [1.0, 1.0, 1.0])


def test_balanced_classes_refuse_a_graded_judge_naming_the_samples():
    scorer = SelfConsistency(judge={"name": "shapes_verifier", "graded": True}, balance_classes="batch")
    two_object = [e for e in EXAMPLES if e.tag == "two_object" and not e.satisfies][:1]
    graded = scorer.judge.score(_one_answer(two_object, True)).scores
    assert 0.0 < graded[0] < 1.0  # a violating two-object scene meets some of its clauses
    with pytest.raises(ValueError, match=r"balance_classes needs a yes/no judge.*case0/yes"):
        scorer.score(_one_answer(two_object, True))


def test_a_constant_self_check_gets_no_net_push_when_balanced_and_batch_scaled():
    """The policy-gradient push on the answer: the sum of the advantages of Yes answers.

    Groups hold images of one class (two violating groups, one matching), each with one Yes and one
    No answer, the state of a self-check that cannot tell the classes apart. Group-scaled plain
    agreement pushes it towards the majority's answer (No); balanced and batch-scaled, not at all."""
    from rewards import RewardTerm, RewardTerms

    matching = [e for e in EXAMPLES if e.satisfies][:1]
    violating = [e for e in EXAMPLES if not e.satisfies][:2]
    trajectories = []
    for g, example in enumerate(violating + matching):
        for says_yes in (True, False):
            t = _trajectory(example, g, says_yes, 0.5)
            trajectories.append(t)

    def push(balance: str, scale: str) -> float:
        scorer = SelfConsistency(judge={"name": "shapes_verifier"}, self_source="verdict", balance_classes=balance)
        terms = RewardTerms([RewardTerm("sc", scorer, 1.0, (VERDICT,), scale_rewards=scale)])
        advantages = terms(trajectories).advantages[VERDICT]
        return float(sum(a for a, t in zip(advantages, trajectories) if t.id.endswith("/yes")))

    # plain, group std: each group's pair gets -+0.707 (mean-centred 0/1 over std 0.707); 2 No groups, 1 Yes
    assert push("none", "group") == pytest.approx(-1 / math.sqrt(2), abs=1e-3)
    assert push("batch", "batch") == pytest.approx(0.0, abs=1e-12)
    assert push("batch", "group") == pytest.approx(-1 / math.sqrt(2), abs=1e-3)  # the group's std divides the weights out


def test_balance_classes_names_its_scopes():
    for bad in (True, "prompt"):
        with pytest.raises(ValueError, match=r"balance_classes must be one of \('none', 'batch', 'group', 'tag'\)"):
            SelfConsistency(judge={"name": "shapes_verifier"}, balance_classes=bad)


def test_tag_balanced_classes_weigh_within_each_category_and_drop_one_class_categories():
    """Scope `tag`: class frequencies within each prompt category, whatever the groups."""
    by_tag = {}
    for e in EXAMPLES:
        by_tag.setdefault(e.tag, {}).setdefault(e.satisfies, []).append(e)
    counting, colors = by_tag["counting"], by_tag["colors"]
    # counting: 1 matching, 3 violating images (each its own group); colors: 2 violating images only
    chosen = counting[True][:1] + counting[False][:3] + colors[False][:2]
    trajectories = [_trajectory(e, i, False, 0.5) for i, e in enumerate(chosen)]
    for t, e in zip(trajectories, chosen):
        t.metadata["tag"] = e.tag
    scorer = SelfConsistency(judge={"name": "shapes_verifier"}, self_source="verdict", balance_classes="tag")
    details = scorer.score(trajectories).details
    assert [d["weight"] for d in details] == pytest.approx([2.0] + [2 / 3] * 3 + [0.0] * 2)
    del trajectories[4].metadata["tag"]
    with pytest.raises(ValueError, match=r"balance_classes 'tag' needs metadata\['tag'\].*\['case4/no'\]"):
        scorer.score(trajectories)


def _mixed_and_violating_groups(answers: list[bool]) -> list[Trajectory]:
    """Group "mixed": one matching image and three violating ones, answered `answers`; group
    "violating": three violating images, each answered No."""
    matching = [e for e in EXAMPLES if e.satisfies][:1]
    violating = [e for e in EXAMPLES if not e.satisfies][:6]
    mixed = [_trajectory(e, i, a, 0.5, "mixed") for i, (e, a) in enumerate(zip(matching + violating[:3], answers))]
    rest = [_trajectory(e, 4 + i, False, 0.5, "violating") for i, e in enumerate(violating[3:])]
    return mixed + rest


def test_group_balanced_classes_weigh_within_each_prompt_and_drop_one_class_groups():
    scorer = SelfConsistency(judge={"name": "shapes_verifier"}, self_source="verdict", balance_classes="group")
    always_yes = scorer.score(_mixed_and_violating_groups([True] * 4))
    always_no = scorer.score(_mixed_and_violating_groups([False] * 4))
    # the mixed group: n = 4, k = 2 -> the matching image weighs 4 / (2 * 1), each violating one 4 / (2 * 3);
    # the violating group holds one class: weight 0, its correct Nos earn nothing
    np.testing.assert_allclose(always_yes.scores, [2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(always_no.scores, [0.0, 2 / 3, 2 / 3, 2 / 3, 0.0, 0.0, 0.0])
    assert [d["weight"] for d in always_no.details] == pytest.approx([2.0] + [2 / 3] * 3 + [0.0] * 3)
    honest = scorer.score(_mixed_and_violating_groups([True, False, False, False]))
    assert np.mean(honest.scores[:4]) == pytest.approx(1.0) and np.mean(always_yes.scores[:4]) == pytest.approx(0.5)
    # batch scope on the same samples: 7 samples, 1 matching -> 7 / 2, 6 violating -> 7 / 12 each
    batch = SelfConsistency(judge={"name": "shapes_verifier"}, self_source="verdict", balance_classes="batch")
    assert [d["weight"] for d in batch.score(_mixed_and_violating_groups([False] * 4)).details] == pytest.approx(
        [3.5] + [7 / 12] * 6
    )


def test_an_answer_that_ignores_the_image_gets_no_expected_push_when_group_balanced():
    """The expected policy-gradient push on P(yes) of an answer drawn Yes with p = 1/2 whatever the
    image, in a group of one matching and three violating images: the mean over all 16 answer
    draws of sum_i A_i * d log pi(a_i) / d logit (+1/2 for Yes, -1/2 for No). Plain agreement
    pushes towards the majority (No); group-balanced without std scaling exactly not; scaled by
    the group's std, the push comes back (smaller)."""
    import itertools

    from rewards import RewardTerm, RewardTerms

    def push(balance: str, scale: str) -> float:
        scorer = SelfConsistency(judge={"name": "shapes_verifier"}, self_source="verdict", balance_classes=balance)
        terms = RewardTerms([RewardTerm("sc", scorer, 1.0, (VERDICT,), scale_rewards=scale)])
        total = 0.0
        for answers in itertools.product((True, False), repeat=4):
            trajectories = _mixed_and_violating_groups(list(answers))[:4]
            advantages = terms(trajectories).advantages[VERDICT]
            total += sum(a * (0.5 if says_yes else -0.5) for a, says_yes in zip(advantages, answers))
        return total / 16

    assert push("none", "group") == pytest.approx(-0.6996, abs=1e-3)
    assert push("group", "none") == pytest.approx(0.0, abs=1e-12)
    assert push("group", "group") == pytest.approx(-0.1815, abs=1e-3)


def test_the_answer_source_reads_the_drawn_yes_or_no_whatever_follows():
    """`self_source: answer` scores the Yes/No a verdict starts with: an answer-only verdict, or one
    whose reason is cut or off format (`verdict` needs `unparsed_score` there); a verdict starting
    with neither is an error naming the trajectory."""
    example = EXAMPLES[1]  # violating
    scorer = SelfConsistency(judge={"name": "shapes_verifier"}, self_source="answer")
    cut = [_trajectory(example, 1, says_yes, 0.5) for says_yes in (True, False, True)]
    # " Yes" then "w": a reason's first token follows the answer token with no space.
    for trajectory, text in zip(cut, (" Yes", " No", " Yesw")):
        trajectory.segment(VERDICT).text = text
    assert scorer.score(cut).scores == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match=r"verdict .* does not parse as Yes/No"):
        SelfConsistency(judge={"name": "shapes_verifier"}, self_source="verdict").score(cut)
    cut[0].segment(VERDICT).text = " Maybe"
    with pytest.raises(ValueError, match=r"trajectory 'case1/yes': verdict ' Maybe' does not start with Yes or No"):
        scorer.score(cut)
