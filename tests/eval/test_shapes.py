"""`evaluate_shapes` on the untrained tiny checkpoint, and the rows and figures it builds.

An untrained model almost never writes parsable text, so the No → reflection → second image
branch of the figures is tested on hand-built trajectories (the rollout program's regeneration is
tested in tests/rollout).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from PIL import Image

from coevolve.data.shapes import TAGS, render, sample_example
from coevolve.data.shapes.describe import caption, caption_objects, scene_objects
from coevolve.eval import ShapesEvalConfig, evaluate_shapes
from coevolve.eval.shapes import _named, _shapes, _trajectory_figures, _trajectory_row, _verdict_accuracy
from coevolve.model.introspection import YES_VERDICT, reflection_text, verdict_text
from coevolve.trajectory import Segment, Trajectory
from coevolve.utils.fs import OutputExistsError

TINY = ShapesEvalConfig(
    num_prompts_per_category=1,
    num_heldout_renders=6,
    num_caption_images=3,
    max_plan_tokens=6,
    max_verdict_tokens=6,
    max_reflection_tokens=6,
    max_caption_tokens=6,
    batch_size=4,  # smaller than the 6 prompts: the batching seams are exercised
)


@pytest.fixture(scope="module")
def runs(tiny_adapter, tmp_path_factory):
    """Two runs with the same config, each written to its own directory."""
    out = tmp_path_factory.mktemp("eval")
    figures = [evaluate_shapes(tiny_adapter, TINY, out_dir=out / name) for name in ("a", "b")]
    return figures, [out / "a", out / "b"]


def _without_seconds(figures: dict) -> dict:
    return {key: value for key, value in figures.items() if key != "seconds"}


def _accuracies(tree, path=""):
    """Yield (path, accuracy dict) for every {"n", "correct", "accuracy"} in the figures."""
    if isinstance(tree, dict):
        if {"n", "correct", "accuracy"} <= tree.keys():
            yield path, tree
        for key, value in tree.items():
            yield from _accuracies(value, f"{path}.{key}")


@pytest.mark.slow
def test_figures_structure_ranges_and_counts(runs):
    figures = runs[0][0]
    assert set(figures) == {
        "image_accuracy", "final_image_accuracy", "format_rate", "verdict_accuracy_own",
        "verdict_accuracy_heldout", "caption_accuracy", "caption_objects", "caption_shapes", "reconstruction",
        "caption_reconstruction", "config", "unconditional", "counts", "seconds",
    }  # fmt: skip
    assert figures["config"] == dataclasses.asdict(TINY) and figures["unconditional"] == "pad"
    found = dict(_accuracies(figures))
    assert len(found) == 9 * (1 + len(TAGS))  # 9 accuracies, each overall and per category
    for path, summary in found.items():
        assert 0 <= summary["correct"] <= summary["n"], path
        assert summary["accuracy"] is None if summary["n"] == 0 else 0 <= summary["accuracy"] <= 1, path
    for name in ("image_accuracy", "final_image_accuracy"):
        assert figures[name]["n"] == 6 and all(s["n"] == 1 for s in figures[name]["per_category"].values())
    own = figures["verdict_accuracy_own"]
    assert own["text"]["n"] == own["p_yes"]["n"] == own["verifier_positive"] + own["verifier_negative"] == 6
    heldout = figures["verdict_accuracy_heldout"]
    assert heldout["p_yes"]["n"] == heldout["text"]["n"] == 6 and heldout["positives"] == heldout["negatives"] == 3
    assert figures["caption_accuracy"]["n"] == 3 and 0 <= figures["caption_accuracy"]["parsed"] <= 1
    for name in ("caption_objects", "caption_shapes"):
        assert figures[name]["n"] == 3 and 1 / 3 <= figures[name]["best_constant"] <= 1
    reconstruction = figures["reconstruction"]
    assert reconstruction["n"] == 3 and 0 <= reconstruction["mean_similarity"] <= 1
    assert all(0 <= value <= 1 for value in reconstruction["per_category"].values())
    rendered = figures["caption_reconstruction"]
    assert rendered["n"] == 3 and 0 <= rendered["mean_similarity"] <= 1 and 0 <= rendered["drawn"] <= 1
    # a caption the renderer cannot draw scores 0: the mean is at most the share drawn
    assert rendered["mean_similarity"] <= rendered["drawn"]
    rates = figures["format_rate"]
    assert rates["n"] == 6 and all(0 <= rates[key] <= 1 for key in ("rate", "plan", "verdict"))
    assert figures["counts"]["trajectories"] == 6 and figures["seconds"] > 0
    json.dumps(figures)  # JSON-serialisable


@pytest.mark.slow
def test_files_are_written(runs):
    (figures, _), (out, _) = runs
    assert sorted(path.name for path in out.iterdir()) == ["eval.json", "grid.png", "trajectories.jsonl"]
    assert json.loads((out / "eval.json").read_text()) == figures
    rows = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert [row["tag"] for row in rows] == list(TAGS)  # one prompt per category, interleaved
    assert all(
        {"prompt", "plan", "verdict", "p_yes", "reflection", "image_correct", "in_format"} <= row.keys() for row in rows
    )
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (64 * len(TAGS), 64)  # one row: a column per category


@pytest.mark.slow
def test_same_seed_same_figures_and_trajectories(runs):
    (first, second), (out_a, out_b) = runs
    assert _without_seconds(first) == _without_seconds(second)
    assert (out_a / "trajectories.jsonl").read_text() == (out_b / "trajectories.jsonl").read_text()
    assert (out_a / "grid.png").read_bytes() == (out_b / "grid.png").read_bytes()


def test_existing_output_and_bad_unconditional_fail_before_any_work(tiny_adapter, tmp_path):
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(OutputExistsError):
        evaluate_shapes(tiny_adapter, TINY, out_dir=tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["old.txt"]
    with pytest.raises(ValueError, match="unconditional"):
        evaluate_shapes(tiny_adapter, TINY, unconditional="empty")


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_prompts_per_category", 0),
        ("seed", -1),
        ("guidance_weight", 0.5),
        ("temperature", -0.1),
        ("top_k", -1),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("max_plan_tokens", 0),
        ("max_verdict_tokens", 0),
        ("max_reflection_tokens", 0),
        ("max_caption_tokens", 0),
        ("num_heldout_renders", -2),
        ("num_caption_images", -1),
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("num_prompts_per_category", True),
    ],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"ShapesEvalConfig.{field} "):
        ShapesEvalConfig(**{field: value})


# -- rows and figures of hand-built trajectories ----------------------------------------------


def _trajectory(prompt: str, verdict: str, image: Image.Image, plan: str = " Plan: a red circle in the centre.",
                reflection: str | None = None, regen_image: Image.Image | None = None) -> Trajectory:  # fmt: skip
    segments = [Segment("plan", "text", text=plan), Segment("image", "image", image=image),
                Segment("verdict", "text", text=verdict)]  # fmt: skip
    if reflection is not None:
        segments.append(Segment("reflection", "text", text=reflection))
    if regen_image is not None:
        segments.append(Segment("regen_image", "image", image=regen_image))
    return Trajectory(id="0/0", group="0", prompt=prompt, program="introspective_t2i", segments=segments,
                      info={"p_yes": 0.25})  # fmt: skip


def test_format_and_figures_of_a_corrected_trajectory():
    example = sample_example(5, "colors")
    wrong = render(sample_example(5, "colors", satisfies=False).scene)
    reason = example.violation if example.violation else "the colour is wrong"
    no = verdict_text(False, reason)
    half = _trajectory(example.prompt, no, wrong, plan=example.plan)
    assert not _trajectory_row(example, half)["in_format"]  # a No without its reflection and second image
    corrected = _trajectory(example.prompt, no, wrong, example.plan, reflection_text(reason), render(example.scene))
    confident = _trajectory(example.prompt, YES_VERDICT, render(example.scene), plan=example.plan)
    rows = [_trajectory_row(example, corrected), _trajectory_row(example, confident)]
    assert [row["in_format"] for row in rows] == [True, True]  # a Yes needs no reflection
    assert [row["image_correct"] for row in rows] == [False, True]
    assert [row["regen_image_correct"] for row in rows] == [True, None]
    figures = _trajectory_figures(rows)
    assert figures["image_accuracy"]["accuracy"] == 0.5 and figures["final_image_accuracy"]["accuracy"] == 1.0
    assert figures["format_rate"] == {"rate": 1.0, "n": 2, "plan": 1.0, "verdict": 1.0, "reflection": 1.0, "num_no": 1}
    own = figures["verdict_accuracy_own"]
    assert own["text"]["accuracy"] == 1.0  # the No was right about the wrong image, the Yes about the right one
    assert own["p_yes"]["accuracy"] == 0.5  # p_yes = 0.25 for both: right only on the wrong image
    assert own["verifier_positive"] == own["verifier_negative"] == 1
    assert own["text"]["per_category"]["colors"]["n"] == 2 and own["text"]["per_category"]["position"]["n"] == 0
    assert own["text"]["balanced_accuracy"] == 1.0 and own["p_yes"]["balanced_accuracy"] == 0.5
    assert own["p_yes"]["auc"] == 0.5  # the same P(yes) for both images: a tie


def test_balanced_verdict_accuracy_exposes_a_judge_that_always_says_no():
    truth = [True] * 3 + [False] * 7
    always_no = [not ok for ok in truth]  # right exactly on the 7 images the verifier rejects
    figures = _verdict_accuracy(always_no, truth, ["colors"] * 10)
    assert figures["accuracy"] == 0.7 and figures["balanced_accuracy"] == 0.5
    # Right on 2 of 3 accepted and 6 of 7 rejected images: (2/3 + 6/7) / 2.
    mixed = [True, True, False] + [True] * 6 + [False]
    assert _verdict_accuracy(mixed, truth, ["colors"] * 10)["balanced_accuracy"] == pytest.approx((2 / 3 + 6 / 7) / 2)
    assert _verdict_accuracy([True, False], [True, True], ["colors"] * 2)["balanced_accuracy"] is None  # one class only


def test_auc_ranks_p_yes_wherever_the_threshold_sits():
    truth = [True, True, False, False, False]
    # Every P(yes) below 0.5, so every verdict is No: balanced accuracy 0.5, but the accepted
    # images rank above the rejected ones in 5 of 6 pairs and tie in 1 (0.30 vs 0.30).
    p_yes = [0.40, 0.30, 0.30, 0.20, 0.10]
    figures = _verdict_accuracy([(p > 0.5) == ok for p, ok in zip(p_yes, truth)], truth, ["colors"] * 5, p_yes)
    assert figures["balanced_accuracy"] == 0.5
    assert figures["auc"] == pytest.approx(5.5 / 6)
    assert _verdict_accuracy([True], [True], ["colors"], [0.9])["auc"] is None  # one class only


def test_auc_within_a_category_sees_through_a_category_prior():
    # The judge knows that its counting images fail and its colour images pass, and nothing more:
    # P(yes) depends on the category alone. Over all pairs that ranks well; within a category, ties.
    tags = ["colors"] * 4 + ["counting"] * 4
    truth = [True, True, True, False, True, False, False, False]
    p_yes = [0.8] * 4 + [0.2] * 4
    figures = _verdict_accuracy([(p > 0.5) == ok for p, ok in zip(p_yes, truth)], truth, tags, p_yes)
    assert figures["auc"] == pytest.approx((3 * 3 + 0.5 * 3 * 1 + 0.5 * 1 * 3) / 16)  # 9 wins and 6 ties in 16 pairs
    assert figures["auc_within_category"] == 0.5
    # A judge that also reads the image ranks within each category too.
    seeing = [0.9, 0.9, 0.9, 0.7, 0.3, 0.1, 0.1, 0.1]
    assert _verdict_accuracy([True] * 8, truth, tags, seeing)["auc_within_category"] == 1.0
    assert "auc" not in _verdict_accuracy([True], [True], ["colors"])  # sampled verdicts have no P(yes)


def test_each_category_shows_its_p_yes_on_accepted_and_rejected_images():
    tags = ["colors"] * 4 + ["counting"] * 3 + ["position"]
    truth = [True, True, True, False, False, False, True, True]
    p_yes = [0.9, 0.7, 0.8, 0.6, 0.2, 0.4, 0.3, 0.5]
    per_category = _verdict_accuracy([(p > 0.5) == ok for p, ok in zip(p_yes, truth)], truth, tags, p_yes)["per_category"]
    assert per_category["colors"]["mean_p_yes"] == pytest.approx({"accepted": 0.8, "rejected": 0.6})
    assert per_category["colors"]["auc"] == 1.0
    assert per_category["counting"]["mean_p_yes"] == pytest.approx({"accepted": 0.3, "rejected": 0.3})
    assert per_category["counting"]["auc"] == 0.5  # 0.3 beats 0.2 and loses to 0.4
    # One class only, or no image at all: nothing to compare.
    assert per_category["position"]["mean_p_yes"] == {"accepted": 0.5, "rejected": None}
    assert per_category["position"]["auc"] is None
    assert per_category["two_object"]["mean_p_yes"] == {"accepted": None, "rejected": None}
    assert "mean_p_yes" not in _verdict_accuracy([True], [True], ["colors"])["per_category"]["colors"]


@pytest.mark.slow
def test_trajectories_do_not_depend_on_the_batch_size(tiny_adapter, runs):
    """Each trajectory draws from its own seeded generators: batch 6 gives batch 4's trajectories."""
    first = runs[0][0]
    one_batch = evaluate_shapes(tiny_adapter, dataclasses.replace(TINY, batch_size=6, num_heldout_renders=0,
                                                                  num_caption_images=0))  # fmt: skip
    for key in ("image_accuracy", "final_image_accuracy", "format_rate", "verdict_accuracy_own"):
        assert _without_mean_p_yes(one_batch[key]) == _without_mean_p_yes(first[key]), key
    # A P(yes) is a float of a batched forward pass: the same to rounding, not to the bit.
    assert _mean_p_yes(first) and _mean_p_yes(one_batch) == pytest.approx(_mean_p_yes(first), abs=1e-6)


def _mean_p_yes(figures) -> list[float]:
    cells = figures["verdict_accuracy_own"]["p_yes"]["per_category"].values()
    return [value for cell in cells for value in cell["mean_p_yes"].values() if value is not None]


def _without_mean_p_yes(figures):
    if isinstance(figures, dict):
        return {key: _without_mean_p_yes(value) for key, value in figures.items() if key != "mean_p_yes"}
    return figures


def test_captions_naming_the_objects_are_counted_against_a_blind_captioner():
    scenes = [sample_example(seed, tag).scene for seed, tag in ((1, "counting"), (2, "two_object"), (3, "colors"))]
    shown = [scene_objects(scene) for scene in scenes]
    right = [" " + caption(scene) for scene in scenes]
    recoloured = right[0].replace(scenes[0].objects[0].color, "purple" if scenes[0].objects[0].color != "purple" else "red")
    said = [caption_objects(recoloured), caption_objects(right[1]), caption_objects("word salad")]
    tags = ["counting", "two_object", "colors"]
    objects = _named(said, shown, tags, lambda o: o)
    shapes = _named(said, shown, tags, _shapes)
    # The wrong colour fails the objects but not the shapes; an unparsable caption fails both.
    assert (objects["correct"], shapes["correct"]) == (1, 2)
    assert objects["per_category"]["two_object"]["accuracy"] == 1.0 and objects["per_category"]["counting"]["correct"] == 0
    # Three different scenes: a caption that ignores the image names at most one of them.
    assert objects["best_constant"] == shapes["best_constant"] == pytest.approx(1 / 3)
    assert _named([said[1]] * 2, [shown[1]] * 2, tags[:2], _shapes)["best_constant"] == 1.0
