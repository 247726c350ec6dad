"""The rollout programs in process: the shared Trajectory they write, batch invariance, the
regeneration policies and the segment names of several rounds, the reconstruction program, the
self-check program."""

from __future__ import annotations

import pytest
import torch

from coevolve.model.guidance import Guidance
from coevolve.model.sampling import Sampling
from coevolve.rollout.items import drawn_image_items, load_items, shapes_items
from coevolve.data.shapes import verify
from coevolve.rollout.programs import IntrospectiveT2I, Reconstruction, RolloutItem, SelfCheck, continued_context
from rewards.consistency import SelfConsistency
from rewards.reconstruction import Reconstruction as ReconstructionScorer

SMALL = {"max_plan_tokens": 8, "max_verdict_tokens": 6, "max_reflection_tokens": 6}


def items(n: int, images: bool = False) -> list[RolloutItem]:
    return shapes_items("reconstruction" if images else "introspective_t2i", n, seed=7)


def test_a_trajectory_is_the_same_alone_and_inside_a_larger_batch(sft_adapter, same_tokens):
    program = IntrospectiveT2I(sft_adapter, seed=3, num_generations=2, guidance=Guidance(3.0), **SMALL)
    four = items(4)
    batch = program(four, step=5)
    alone = program(four[2:3], step=5)
    assert [t.id for t in batch] == [f"p{i:04d}/{k}" for i in range(4) for k in range(2)]
    assert all(same_tokens(x, y) for x, y in zip(alone, batch[4:6]))
    other_step = program(four[2:3], step=6)
    assert not same_tokens(other_step[0], alone[0])  # the step is part of every row's seed


def test_segments_carry_ids_logprobs_masks_and_the_verdict_is_constrained(sft_adapter):
    program = IntrospectiveT2I(sft_adapter, seed=1, num_generations=2, regenerate="never", **SMALL)
    spec = sft_adapter.spec
    for t in program(items(2), policy_version=7):
        # The SFT checkpoint's self-check describes the image before the verdict.
        assert [s.name for s in t.segments] == ["plan", "image", "description", "verdict"] and t.policy_version == 7
        assert t.group == t.id.split("/")[0] and t.final_image_name == "image" and 0 < t.info["p_yes"] < 1
        for s in t.segments:
            assert s.ids.shape == s.logprobs.shape == s.mask.shape and (s.logprobs <= 0).all()
        assert len(t.segment("image").ids) == spec.num_image_tokens and t.segment("image").mask.all()
        verdict = t.segment("verdict")
        assert sft_adapter.tokenizer.decode(verdict.ids[:1]).strip() in ("Yes", "No")  # first token restricted
        assert set(t.info["seconds"]) == {"plan", "image", "decode", "verdict", "regeneration"}


def test_always_regenerates_and_names_every_round_uniquely(sft_adapter):
    program = IntrospectiveT2I(sft_adapter, seed=2, regenerate="always", max_rounds=3, **SMALL)
    for t in program(items(2)):
        assert [s.name for s in t.segments] == [
            "plan", "image", "description", "verdict", "reflection", "regen_image", "regen_description",
            "regen_verdict", "reflection_2", "regen_image_2",
        ]  # fmt: skip
        assert t.info["rounds"] == 3 and set(t.info) >= {"p_yes/verdict", "p_yes/regen_verdict"}
        accepted = [name for name, verdict in (("image", "verdict"), ("regen_image", "regen_verdict"))
                    if t.text(verdict).strip().startswith("Yes, the image matches the prompt.")]  # fmt: skip
        assert t.final_image_name == (accepted[-1] if accepted else "regen_image_2")


def test_the_continued_context_after_round_one_is_the_regeneration_context_sft_trains(sft_adapter):
    adapter = sft_adapter
    plan = adapter.text(" Plan: a red circle.").ids
    codes = torch.arange(adapter.spec.num_image_tokens) % adapter.spec.codebook_size
    verdict = torch.cat([adapter.text(" No, the image does not match the prompt because x.").ids,
                         torch.tensor([adapter.spec.eos_id])])  # fmt: skip
    ours = continued_context(adapter.image_prompt("a red circle") + (adapter.text(" Plan: a red circle."),), codes,
                             verdict, adapter.spec.eos_id)  # fmt: skip
    sft = adapter.regeneration_context("a red circle", plan, codes, verdict[:-1])
    assert len(ours) == len(sft)
    for a, b in zip(ours, sft):
        assert type(a) is type(b) and torch.equal(getattr(a, "ids", getattr(a, "codes", None)),
                                                  getattr(b, "ids", getattr(b, "codes", None)))  # fmt: skip


def test_reconstruction_captions_redraws_and_is_scored(sft_adapter):
    program = Reconstruction(sft_adapter, seed=0, num_generations=2, guidance=Guidance(3.0),
                             sampling=Sampling(), max_caption_tokens=24)  # fmt: skip
    sources = items(6, images=True)
    trajectories = program(sources)
    assert [s.name for t in trajectories for s in t.segments] == ["caption", "image"] * 12
    assert all(t.source_image is sources[i // 2].image for i, t in enumerate(trajectories))
    scores = ReconstructionScorer(embedder="shapes").score(trajectories).scores
    assert len(scores) == 12 and all(0 <= s <= 1 for s in scores)
    print(f"mean reconstruction score {sum(scores) / len(scores):.3f}:",
          [(t.text("caption"), round(s, 3)) for t, s in zip(trajectories, scores)])  # fmt: skip


@pytest.mark.parametrize(
    "bad, match", [(" ", "item 'p0001' has an empty prompt"), ("red " * 1000, "item 'p0001' is too long")]
)
def test_empty_and_over_long_prompts_are_named(sft_adapter, bad, match):
    program = IntrospectiveT2I(sft_adapter, **SMALL)
    batch = items(2)
    batch[1].prompt = bad
    with pytest.raises(ValueError, match=match):
        program(batch)


def test_self_check_judges_each_given_image_and_its_pair_shares_the_prompt(sft_adapter):
    sources = shapes_items("self_check", 4, seed=7)
    # Items 2j and 2j + 1: one prompt, its satisfying render and its violating one.
    assert [item.metadata["satisfies"] for item in sources] == [True, False, True, False]
    assert sources[0].prompt == sources[1].prompt and sources[2].prompt == sources[3].prompt
    assert [verify(item.image, item.metadata["geneval"]).correct for item in sources] == [True, False, True, False]
    program = SelfCheck(sft_adapter, seed=0, num_generations=2, max_verdict_tokens=6, max_caption_tokens=12)
    trajectories = program(sources, policy_version=3)
    assert [t.id for t in trajectories] == [f"p{i:04d}/{k}" for i in range(4) for k in range(2)]
    for i, t in enumerate(trajectories):
        assert [s.name for s in t.segments] == ["description", "verdict"] and t.program == "self_check"
        assert t.source_image is sources[i // 2].image and t.prompt == sources[i // 2].prompt
        assert t.group == sources[i // 2].id and t.policy_version == 3 and 0 < t.info["p_yes"] < 1
        assert sft_adapter.tokenizer.decode(t.segment("verdict").ids[:1]).strip() in ("Yes", "No")
        assert set(t.info["seconds"]) == {"verdict"}
    # A judge reads the judged image as segment "source".
    scorer = SelfConsistency(judge={"name": "shapes_verifier", "segment": "source"}, self_source="verdict",
                             unparsed_score=0.0)  # fmt: skip
    details = scorer.score(trajectories).details
    assert [d["judge"] for d in details] == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]


def test_an_answer_only_self_check_draws_the_answer_alone_as_the_full_one_draws_it(sft_adapter):
    """`answer_only`: the verdict is the drawn " Yes"/" No" (one token, the one the full self-check
    draws first from the same seeds), scored by `self_source: answer`; its log-prob is the drawn
    answer's under the Yes/No-restricted distribution."""
    sources = shapes_items("self_check", 4, seed=7)
    kwargs = {"seed": 0, "num_generations": 2, "max_verdict_tokens": 6, "max_caption_tokens": 12}
    full = SelfCheck(sft_adapter, **kwargs)(sources)
    answers = SelfCheck(sft_adapter, answer_only=True, **kwargs)(sources)
    yes, no = (sft_adapter.tokenizer.encode(" " + word, add_special_tokens=False) for word in ("Yes", "No"))
    for a, f in zip(answers, full):
        verdict = a.segment("verdict")
        assert verdict.ids.tolist() in (yes, no) and verdict.text in (" Yes", " No")
        assert torch.equal(verdict.ids, f.segment("verdict").ids[: len(verdict.ids)])
        assert verdict.mask.tolist() == [True] and torch.equal(verdict.logprobs, f.segment("verdict").logprobs[:1])
        assert torch.equal(a.segment("description").ids, f.segment("description").ids)
        assert a.info["p_yes"] == f.info["p_yes"]
    said_yes = [a.segment("verdict").text == " Yes" for a in answers]
    assert 0 < sum(said_yes) < len(said_yes)  # both answers occur among these draws: the check below can fail
    scorer = SelfConsistency(judge={"name": "shapes_verifier", "segment": "source"}, self_source="answer")
    truth = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert scorer.score(answers).scores == [float(y == bool(t)) for y, t in zip(said_yes, truth)]


def test_self_check_names_an_item_without_an_image(sft_adapter):
    batch = shapes_items("self_check", 2, seed=7)
    batch[1].image = None
    with pytest.raises(ValueError, match="self_check: item 'p0001' has no image to judge"):
        SelfCheck(sft_adapter)(batch)


def test_a_self_check_of_drawn_images_judges_each_first_image_in_its_prompts_group(sft_adapter):
    """`drawn_image_items`: the first images an introspective batch drew, with their prompts and
    metadata, become self-check items; the self-checks of one prompt's images form one group."""
    drawn = IntrospectiveT2I(sft_adapter, seed=0, num_generations=2, regenerate="never", **SMALL)(items(2))
    sources = drawn_image_items(drawn, 3)
    assert [item.id for item in sources] == ["p0000/0", "p0000/1", "p0001/0"]
    assert [item.group for item in sources] == ["p0000", "p0000", "p0001"]
    for item, t in zip(sources, drawn):
        assert item.image is t.image("image") and item.prompt == t.prompt and item.metadata == t.metadata
    checks = SelfCheck(sft_adapter, seed=0, num_generations=2, max_verdict_tokens=6, max_caption_tokens=12,
                       answer_only=True)(sources)  # fmt: skip
    assert [t.group for t in checks] == ["p0000"] * 4 + ["p0001"] * 2
    assert [t.id for t in checks] == ["p0000/0/0", "p0000/0/1", "p0000/1/0", "p0000/1/1", "p0001/0/0", "p0001/0/1"]
    assert all(t.source_image is sources[i // 2].image for i, t in enumerate(checks))
    with pytest.raises(ValueError, match="4 trajectories hold 4 first images, fewer than the 5 asked for"):
        drawn_image_items(drawn, 5)
    with pytest.raises(ValueError, match=r"rollout.source=program:introspective: .* only in coevolve rl"):
        load_items("program:introspective", "self_check", 4, seed=0)
