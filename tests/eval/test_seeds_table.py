"""The README's results table over seeds: means, spreads and the paired RL − SFT difference."""

import json

import pytest

from coevolve.eval.seeds_table import TAGS, load, table


def _figures(first: float, own: float, reconstruction: float, balanced: float | None = 0.5) -> dict:
    per_category = {tag: {"accuracy": first if tag == "colors" else 0.0} for tag in TAGS}
    return {
        "image_accuracy": {"accuracy": first, "per_category": per_category},
        "final_image_accuracy": {"accuracy": first},
        "verdict_accuracy_own": {
            "p_yes": {"accuracy": own, "balanced_accuracy": balanced},
            "text": {"accuracy": own, "balanced_accuracy": own},
        },
        "verdict_accuracy_heldout": {"p_yes": {"accuracy": 0.5}},
        "caption_accuracy": {"accuracy": 0.0},
        "format_rate": {"rate": 1.0},
        "reconstruction": {"mean_similarity": reconstruction},
    }


def _record(seed: int, sft_first: float, rl_first: float, rl_seconds: float) -> dict:
    return {
        "seed": seed,
        "stages": {"sft": {"seconds": 540.0}, "rl": {"seconds": rl_seconds, "resumed": seed == 2}},
        "eval": {
            "tiny": _figures(0.0, 0.5, 0.1, balanced=None if seed < 2 else 0.5),  # all its images wrong
            "sft": _figures(sft_first, 0.4, 0.15),
            "rl": _figures(rl_first, 0.6, 0.2),
        },
    }


def _row(markdown: str, label: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_table_gives_mean_std_and_the_paired_difference():
    # RL − SFT per seed: +0.10, +0.05, +0.15 -> mean +10.0, std 5.0 points.
    records = [_record(0, 0.30, 0.40, 600), _record(1, 0.40, 0.45, 660), _record(2, 0.35, 0.50, 720)]
    markdown, values = table(records)
    assert markdown.splitlines()[0].startswith("| metric (mean ± std over seeds 0, 1, 2) |")
    assert _row(markdown, "image accuracy, first image") == ["0.0 ± 0.0", "35.0 ± 5.0", "45.0 ± 5.0", "+10.0 ± 5.0"]
    assert _row(markdown, "… colors") == ["0.0 ± 0.0", "35.0 ± 5.0", "45.0 ± 5.0", "+10.0 ± 5.0"]
    assert _row(markdown, "… position") == ["0.0 ± 0.0"] * 3 + ["0.0 ± 0.0"]
    assert _row(markdown, "own verdicts vs verifier, P(yes) > 0.5")[3] == "+20.0 ± 0.0"
    assert _row(markdown, "own verdicts, P(yes), balanced") == ["50.0 ± 0.0 (1 seed)"] + ["50.0 ± 0.0"] * 2 + ["0.0 ± 0.0"]
    assert _row(markdown, "reconstruction score") == ["0.100 ± 0.000", "0.150 ± 0.000", "0.200 ± 0.000", "+0.050 ± 0.000"]
    assert values["metrics"]["image accuracy, first image"]["rl - sft"] == pytest.approx([0.10, 0.05, 0.15])
    assert _row(markdown, "rl") == ["10.0 / 11.0 / 12.0 (resumed)"]
    assert _row(markdown, "bootstrap") == ["not timed (reused) / not timed (reused) / not timed (reused)"]


def test_two_runs_of_one_seed_are_refused():
    with pytest.raises(ValueError, match=r"share a seed: \[0, 0\]"):
        table([_record(0, 0.3, 0.4, 600), _record(0, 0.3, 0.4, 600)])


def test_an_unfinished_run_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="pipeline.json"):
        load(tmp_path)
    (tmp_path / "pipeline.json").write_text(json.dumps({"seed": 0, "stages": {"sft": {"seconds": 1.0}}}))
    with pytest.raises(ValueError, match=f"{tmp_path}/pipeline.json: the pipeline has not reached its end"):
        load(tmp_path)
