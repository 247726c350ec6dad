"""atomic_output_dir: the output appears whole or not at all, and never clobbers by default."""

from __future__ import annotations

import pytest

from coevolve.utils.fs import OutputExistsError, atomic_output_dir


def test_output_appears_only_when_block_completes(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as staging:
        (staging / "a.txt").write_text("a")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_previous_contents_and_no_staging(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output_dir(out, overwrite=True) as staging:
            (staging / "new.txt").write_text("new")
            raise RuntimeError("boom")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_overwrite_replaces_and_refusal_names_the_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match=f"{out} exists and is not empty; pass --overwrite"):
        with atomic_output_dir(out):
            pass
    with atomic_output_dir(out, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_file_in_the_way_is_an_error(tmp_path):
    out = tmp_path / "out"
    out.write_text("not a directory")
    with pytest.raises(OutputExistsError, match="is not a directory"):
        with atomic_output_dir(out, overwrite=True):
            pass
