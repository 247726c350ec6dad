"""SFT records: the shapes world, writing, and loading from jsonl / parquet / save_to_disk with checks."""

import json

import datasets
import numpy as np
import pytest
from PIL import Image

from coevolve.data.records import FIELDS, Record, RecordError, load_records, shapes_records, write_records
from coevolve.data.shapes.metadata import TAGS
from coevolve.data.shapes.prompts import derive_seed, sample_example


@pytest.fixture(scope="module")
def shapes():
    return shapes_records(8, seed=3)


def _same(a: Record, b: Record) -> None:
    for name in ("prompt", "plan", "caption", "negative_reason", "tag"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("image", "negative_image"):
        assert np.array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name))), name


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _png(path, color=(255, 0, 0)):
    Image.new("RGB", (8, 8), color).save(path)
    return path.name


def test_shapes_records_pair_positive_and_negative(shapes):
    assert len(shapes) == 8 and [r.tag for r in shapes[:6]] == list(TAGS)
    for i, record in enumerate(shapes):
        good = sample_example(derive_seed(3, i), TAGS[i % len(TAGS)], True)
        bad = sample_example(derive_seed(3, i), TAGS[i % len(TAGS)], False)
        assert record.prompt == good.prompt == bad.prompt and record.where == f"shapes row {i}"
        assert (record.plan, record.caption, record.negative_reason) == (good.plan, good.caption, bad.violation)
        assert record.image.tobytes() == good.render().tobytes()
        assert record.negative_image.tobytes() == bad.render().tobytes()
    assert shapes_records(8, seed=3) == shapes


def test_round_trip_through_jsonl(shapes, tmp_path):
    jsonl = write_records(shapes, tmp_path / "out")
    assert jsonl == tmp_path / "out" / "records.jsonl"
    first = json.loads(jsonl.read_text().splitlines()[0])
    assert first["image"] == "images/000000.png" and first["negative_image"] == "images/000000-negative.png"
    for source in (jsonl, tmp_path / "out"):  # the file, or its directory (the images/ are skipped)
        loaded = load_records(source, required=FIELDS)
        assert len(loaded) == len(shapes)
        for a, b in zip(shapes, loaded):
            _same(a, b)
            assert a == b and b.image.mode == "RGB"
        assert loaded[5].where.endswith("records.jsonl row 5")


def test_limit(shapes, tmp_path):
    jsonl = write_records(shapes, tmp_path / "out")
    assert [r.prompt for r in load_records(jsonl, ["plan"], limit=3)] == [r.prompt for r in shapes[:3]]
    assert load_records(jsonl, [], limit=0) == []
    assert len(load_records(jsonl, [], limit=100)) == len(shapes)


def test_parquet_with_embedded_images(shapes, tmp_path):
    features = datasets.Features(
        {
            "prompt": datasets.Value("string"),
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            "extra": datasets.Value("int64"),
        }
    )
    rows = {
        "prompt": [r.prompt for r in shapes],
        "image": [r.image for r in shapes],
        "caption": [r.caption for r in shapes],
        "extra": list(range(len(shapes))),
    }
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "train.parquet"))
    loaded = load_records(tmp_path / "train.parquet", ["caption"])
    for a, b in zip(shapes, loaded, strict=True):
        assert b.caption == a.caption and b.plan is None and b.negative_image is None and b.tag is None
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_save_to_disk_directory(shapes, tmp_path):
    rows = {
        "prompt": [r.prompt for r in shapes],
        "image": [r.image for r in shapes],
        "negative_image": [r.negative_image for r in shapes],
        "negative_reason": [r.negative_reason for r in shapes],
    }
    features = datasets.Features(
        {
            "prompt": datasets.Value("string"),
            "image": datasets.Image(),
            "negative_image": datasets.Image(),
            "negative_reason": datasets.Value("string"),
        }
    )
    dataset = datasets.Dataset.from_dict(rows, features=features)
    dataset.save_to_disk(str(tmp_path / "saved"))
    for a, b in zip(shapes, load_records(tmp_path / "saved", ["negative_image"]), strict=True):
        assert b.negative_reason == a.negative_reason
        assert np.array_equal(np.asarray(a.negative_image), np.asarray(b.negative_image))
    datasets.DatasetDict({"train": dataset, "test": dataset.select([0, 1])}).save_to_disk(str(tmp_path / "dict"))
    assert len(load_records(tmp_path / "dict", [], split="test")) == 2
    with pytest.raises(RecordError, match="no split 'validation'"):
        load_records(tmp_path / "dict", [], split="validation")


def test_directory_splits_and_relative_paths(tmp_path):
    (tmp_path / "data" / "pics").mkdir(parents=True)
    _png(tmp_path / "data" / "pics" / "a.png")
    absolute = tmp_path / "b.png"
    _png(absolute, (0, 0, 255))
    _write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": "a", "image": "pics/a.png", "notes": 1}])
    _write_jsonl(tmp_path / "data" / "test.jsonl", [{"prompt": "b", "image": str(absolute)}])
    (train,) = load_records(tmp_path, [])
    (test,) = load_records(tmp_path, [], split="test")
    assert train.prompt == "a" and train.image.getpixel((0, 0)) == (255, 0, 0)
    assert test.prompt == "b" and test.image.getpixel((0, 0)) == (0, 0, 255)
    assert train.where == f"{tmp_path / 'data' / 'train.jsonl'} row 0"


def _bad_rows(tmp_path):
    good = _png(tmp_path / "good.png")
    return [{"prompt": f"p{i}", "image": good, "plan": f"plan {i}"} for i in range(5)]


def test_missing_column_names_file_field_and_columns(tmp_path):
    rows = [{"prompt": "p", "image": _png(tmp_path / "good.png"), "caption": "c"}]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(RecordError, match=r"d\.jsonl: required field 'plan' is not a column.*prompt, image, caption"):
        load_records(path, ["plan"])


def test_null_and_empty_required_fields(tmp_path):
    rows = _bad_rows(tmp_path)
    rows[3]["plan"] = None
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(RecordError, match=r"d\.jsonl row 3: required field 'plan' is null or empty"):
        load_records(path, ["plan"])
    assert load_records(path, [])[3].plan is None  # not required: absent
    rows[3]["plan"], rows[2]["prompt"] = "ok", "  "
    with pytest.raises(RecordError, match=r"d\.jsonl row 2: required field 'prompt'"):
        load_records(_write_jsonl(tmp_path / "d.jsonl", rows), [])


def test_wrong_type(tmp_path):
    rows = _bad_rows(tmp_path)
    rows[1]["prompt"] = 7
    with pytest.raises(RecordError, match=r"d\.jsonl row 1: field 'prompt' must be a string, got int 7"):
        load_records(_write_jsonl(tmp_path / "d.jsonl", rows), [])


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_unreadable_image(tmp_path, kind):
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    encoded = (tmp_path / "noise.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(b"not a png at all" if kind == "garbage" else encoded[: len(encoded) // 2])
    rows = _bad_rows(tmp_path)
    rows[2]["image"] = "bad.png"
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(RecordError, match=r"d\.jsonl row 2: field 'image': cannot decode image .*bad\.png"):
        load_records(path, [])


def test_missing_image_file(tmp_path):
    rows = _bad_rows(tmp_path)
    rows[4]["image"] = "nowhere/x.png"
    with pytest.raises(RecordError, match=r"d\.jsonl row 4: field 'image': image file .*nowhere/x\.png does not exist"):
        load_records(_write_jsonl(tmp_path / "d.jsonl", rows), [])


def test_lone_negative_image(tmp_path):
    rows = _bad_rows(tmp_path)
    for row in rows:
        row["negative_image"], row["negative_reason"] = row["image"], "wrong colour"
    rows[1]["negative_reason"] = None
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(
        RecordError, match=r"d\.jsonl row 1: field 'negative_image' is set but 'negative_reason' is not"
    ):
        load_records(path, [])  # the pairing holds even when the negatives are not required
    with pytest.raises(RecordError, match=r"d\.jsonl row 1: required field 'negative_reason' is null"):
        load_records(path, ["negative_image"])  # requiring one requires the other
    rows = [{k: v for k, v in row.items() if k != "negative_reason"} for row in rows]
    with pytest.raises(RecordError, match=r"e\.jsonl row 0: field 'negative_image' is set but 'negative_reason'"):
        load_records(_write_jsonl(tmp_path / "e.jsonl", rows), [])


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown required field"):
        load_records(tmp_path, ["captions"])
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "nope.jsonl", [])
    with pytest.raises(RecordError, match="no .jsonl/.json/.parquet files"):
        load_records(tmp_path, [])
