"""The shapes world as a Hugging Face dataset."""

import collections
import json

import datasets
import pytest

from coevolve.data.shapes.dataset import FEATURES, shapes_dataset
from coevolve.data.shapes.metadata import TAGS, validate_metadata
from coevolve.data.shapes.prompts import derive_seed, sample_example
from coevolve.data.shapes.verifier import verify


@pytest.fixture(scope="module")
def mixed():
    return shapes_dataset(60, seed=4, negative_fraction=0.25)


def test_columns_and_features(mixed):
    assert isinstance(mixed, datasets.Dataset) and len(mixed) == 60
    assert mixed.features == FEATURES
    assert mixed.column_names == ["prompt", "tag", "metadata", "plan", "caption", "image",
                                  "satisfies", "violation", "seed"]
    row = mixed[0]
    assert row["image"].mode == "RGB" and row["image"].size == (64, 64)
    assert isinstance(row["metadata"], str) and isinstance(row["seed"], int)


def test_rows_are_the_seeded_examples(mixed):
    assert collections.Counter(mixed["tag"]) == {tag: 10 for tag in TAGS}
    assert mixed["tag"][:6] == list(TAGS)
    assert sum(not s for s in mixed["satisfies"]) == 15
    for i, row in enumerate(mixed):
        assert row["seed"] == derive_seed(4, i)
        example = sample_example(row["seed"], row["tag"], row["satisfies"])
        assert row["prompt"] == example.prompt and row["caption"] == example.caption
        assert json.loads(row["metadata"]) == example.metadata == validate_metadata(row["metadata"])
        assert (row["violation"] == "") == row["satisfies"]
        assert row["image"].tobytes() == example.render().tobytes()


def test_verifier_reads_rows_directly(mixed):
    for row in mixed:
        assert verify(row["image"], row["metadata"]).correct == row["satisfies"]


def test_same_arguments_give_identical_rows(mixed):
    again = shapes_dataset(60, seed=4, negative_fraction=0.25)
    assert again.data.table.equals(mixed.data.table)  # image PNG bytes included
    other = shapes_dataset(60, seed=5, negative_fraction=0.25)
    assert other["prompt"] != mixed["prompt"]


def test_tag_subset_and_defaults():
    ds = shapes_dataset(8, seed=0, tags=("counting", "position"))
    assert ds["tag"] == ["counting", "position"] * 4
    assert all(ds["satisfies"]) and set(ds["violation"]) == {""}
    assert len(shapes_dataset(0, seed=0)) == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"tags": ("counting", "spatial")}, "unknown tag 'spatial' in tags"),
    ({"negative_fraction": 1.5}, "negative_fraction must be in [0, 1], got 1.5"),
    ({"tags": ()}, "tags must name at least one tag"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError) as err:
        shapes_dataset(4, seed=0, **kwargs)
    assert message in str(err.value)
