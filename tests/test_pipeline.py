"""The pipeline's closing table: every checkpoint's headline eval figures, side by side."""

from coevolve.pipeline import summary_table

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def _figures(first: float, heldout: float, reconstruction: float) -> dict:
    per_category = {tag: {"n": 20, "correct": 0, "accuracy": first if tag == "counting" else 0.0} for tag in TAGS}
    return {
        "image_accuracy": {"accuracy": first, "per_category": per_category},
        "final_image_accuracy": {"accuracy": 0.25},
        "verdict_accuracy_own": {"p_yes": {"accuracy": 0.5}},
        "verdict_accuracy_heldout": {"p_yes": {"accuracy": heldout}},
        "caption_accuracy": {"accuracy": 0.0},
        "format_rate": {"rate": 1.0},
        "reconstruction": {"mean_similarity": reconstruction},
    }


def test_summary_table_lists_each_checkpoint_in_its_column():
    table = summary_table({"tiny": _figures(0.0, 0.5, 0.1), "sft": _figures(0.125, 0.8, 0.2)}).splitlines()
    assert table[0].split() == ["metric", "tiny", "sft"]
    rows = {line[:30].strip(): line[30:].split() for line in table[1:]}
    assert rows["image accuracy (first image)"] == ["0.0%", "12.5%"]
    assert rows["counting"] == ["0.0%", "12.5%"] and rows["colors"] == ["0.0%", "0.0%"]
    assert rows["held-out verdicts, P(yes)"] == ["50.0%", "80.0%"]
    assert rows["reconstruction"] == ["0.100", "0.200"]
    assert len(table) == 1 + 1 + len(TAGS) + 5 + 1
