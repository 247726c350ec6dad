"""`coevolve eval suite=geneval` writes GenEval's folder layout; the shapes verifier scores such a
folder and prints GenEval's summary (`coevolve geneval prompts|score|summary`)."""

from __future__ import annotations

import dataclasses
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from coevolve.cli.main import main
from coevolve.cli.stages import _expand
from coevolve.config import compose_config, to_typed
from coevolve.data.shapes import TAGS, sample_example, verify
from coevolve.eval.config import EvalConfig
from coevolve.eval.geneval import generate_geneval, read_metadata
from coevolve.eval.geneval_score import read_results, score_folder, summary
from coevolve.eval.shapes import shapes_prompts
from coevolve.utils.fs import OutputExistsError

# One line per GenEval tag, in the format of GenEval's prompts/evaluation_metadata.jsonl
# (COCO classes; a position clause and an exclude clause among them).
LINES = [
    '{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}',
    (
        '{"tag": "two_object", "include": [{"class": "toilet", "count": 1}, {"class": "bicycle", "count": 1}], '
        '"prompt": "a photo of a toilet and a bicycle"}'
    ),
    (
        '{"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}], '
        '"prompt": "a photo of two clocks"}'
    ),
    (
        '{"tag": "colors", "include": [{"class": "banana", "count": 1, "color": "purple"}], '
        '"prompt": "a photo of a purple banana"}'
    ),
    (
        '{"tag": "position", "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1, '
        '"position": ["right of", 0]}], "prompt": "a photo of a cat right of a dog"}'
    ),
    (
        '{"tag": "color_attr", "include": [{"class": "car", "count": 1, "color": "red"}, '
        '{"class": "umbrella", "count": 1, "color": "green"}], "prompt": "a photo of a red car and a green umbrella"}'
    ),
]
N = 2  # images per prompt


SUITE_OVERRIDES = [f"eval.geneval.images_per_prompt={N}", "eval.seed=7", "eval.batch_size=5"]


def _config(overwrite: bool = False, **changes) -> EvalConfig:
    """The eval config of `suite=geneval` + SUITE_OVERRIDES (what `cli_run` ran), with `changes`."""
    config = to_typed(compose_config(["eval=geneval", "eval.geneval.metadata_file=unused", *SUITE_OVERRIDES])).eval
    geneval = dataclasses.replace(config.geneval, overwrite=overwrite)
    return dataclasses.replace(config, geneval=geneval, **changes)


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def metadata_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "evaluation_metadata.jsonl"
    path.write_text("".join(line + "\n" for line in LINES))
    return path


@pytest.fixture(scope="module")
def cli_run(metadata_file, tiny_checkpoint, tmp_path_factory) -> Path:
    """`coevolve eval suite=geneval ...` with the tiny checkpoint: the command of the README."""
    run_dir = tmp_path_factory.mktemp("geneval_run")
    out = run_dir / "geneval"
    main(
        [
            "eval",
            "suite=geneval",
            f"run_dir={run_dir}",
            f"model.path={tiny_checkpoint}",
            f"eval.geneval.metadata_file={metadata_file}",
            f"eval.geneval.out_dir={out}",
            *SUITE_OVERRIDES,  # batch size 5, not a multiple of N: a batch ends inside a prompt's images
            "eval.device=cpu",
        ]
    )
    return out


def test_layout_is_exactly_genevals(cli_run):
    folders = sorted(path.name for path in cli_run.iterdir())
    assert folders == ["00000", "00001", "00002", "00003", "00004", "00005"]  # nothing else in OUTDIR
    for index, line in enumerate(LINES):
        folder = cli_run / f"{index:05d}"
        assert sorted(path.name for path in folder.iterdir()) == ["metadata.jsonl", "samples"]
        text = (folder / "metadata.jsonl").read_text()
        assert text == json.dumps(json.loads(line)) + "\n" and json.loads(text) == json.loads(line)
        assert sorted(path.name for path in (folder / "samples").iterdir()) == ["0000.png", "0001.png"]
        for sample in (folder / "samples").iterdir():
            with Image.open(sample) as image:
                assert image.format == "PNG" and image.mode == "RGB" and image.size == (64, 64)
    assert not [path for path in cli_run.parent.iterdir() if ".partial-" in path.name]  # staging renamed away


def test_same_seed_same_bytes_whatever_the_batch_size_or_limit(cli_run, metadata_file, tiny_adapter, tmp_path):
    metadatas = read_metadata(metadata_file)
    generate_geneval(tiny_adapter, metadatas, tmp_path / "again", _config(batch_size=3))
    assert _files(tmp_path / "again") == _files(cli_run)
    generate_geneval(tiny_adapter, read_metadata(metadata_file, limit=2), tmp_path / "two", _config())
    assert _files(tmp_path / "two") == {name: data for name, data in _files(cli_run).items() if name[:5] < "00002"}
    generate_geneval(tiny_adapter, metadatas, tmp_path / "other", _config(seed=8))
    other, same = _files(tmp_path / "other"), _files(cli_run)
    assert other.keys() == same.keys() and any(other[name] != same[name] for name in same if name.endswith(".png"))


@pytest.mark.parametrize(
    "lines, message",
    [
        ([LINES[0], LINES[1], "{not json"], "line 3: not JSON"),
        ([LINES[0], '{"tag": "single_object", "include": []}'], "line 2: 'prompt' is missing"),
        (['{"prompt": "a photo of a bench"}'], "line 1: 'tag' is missing"),
        ([LINES[0], "", LINES[1]], "line 2: not JSON"),
        ([LINES[0], '["a photo of a bench"]'], "line 2: a line must be a JSON object"),
        ([], "holds no prompts"),
    ],
)
def test_bad_metadata_lines_are_named_with_file_and_line(tmp_path, lines, message):
    path = tmp_path / "meta.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(ValueError, match=message) as error:
        read_metadata(path)
    assert str(path) in str(error.value)


def test_trailing_blank_lines_are_ignored_and_a_missing_file_is_named(tmp_path):
    path = tmp_path / "meta.jsonl"
    path.write_text(LINES[0] + "\n\n\n")
    assert read_metadata(path) == [json.loads(LINES[0])]
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_metadata(tmp_path / "nope.jsonl")


def test_taken_output_is_refused_before_the_model_loads_and_kept(metadata_file, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    argv = ["eval", "suite=geneval", f"run_dir={tmp_path}", f"eval.geneval.metadata_file={metadata_file}",
            f"eval.geneval.out_dir={out}", f"model.path={tmp_path / 'no-checkpoint-here'}"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err  # about the folder, not the missing checkpoint: the folder is checked first
    assert "exists and is not empty" in err and "eval.geneval.overwrite=true" in err
    assert _files(out) == {"mine.txt": b"keep me"}


def test_overwrite_replaces_and_an_interrupted_run_leaves_no_folder(metadata_file, tiny_adapter, tmp_path, monkeypatch):
    metadatas = read_metadata(metadata_file, limit=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError):
        generate_geneval(tiny_adapter, metadatas, out, _config())
    generate_geneval(tiny_adapter, metadatas, out, _config(overwrite=True))
    assert sorted(_files(out)) == ["00000/metadata.jsonl", "00000/samples/0000.png", "00000/samples/0001.png"]

    calls = []

    def failing_decode(images):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # as if the run were stopped after its first batch
        return type(tiny_adapter).decode(tiny_adapter, images)

    monkeypatch.setattr(tiny_adapter, "decode", failing_decode)
    with pytest.raises(KeyboardInterrupt):
        generate_geneval(tiny_adapter, read_metadata(metadata_file), tmp_path / "cut", _config(batch_size=2))
    assert len(calls) == 2 and not (tmp_path / "cut").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]  # no staging left behind


def test_suite_config_is_typed_and_named():
    config = to_typed(compose_config(["eval=geneval", "eval.geneval.metadata_file=m.jsonl"]))
    assert config.eval.suite == "geneval" and config.eval.geneval.images_per_prompt == 4 and config.eval.dpg is None
    assert to_typed(compose_config([])).eval.suite == "shapes"
    assert _expand("suite=geneval") == "eval=geneval"
    with pytest.raises(ValueError, match="eval.suite=geneval needs eval.geneval"):
        to_typed(compose_config(["eval.suite=geneval"]))
    with pytest.raises(ValueError, match="images_per_prompt"):
        to_typed(compose_config(["eval=geneval", "eval.geneval.metadata_file=m", "eval.geneval.images_per_prompt=0"]))
    with pytest.raises(Exception, match="eval.geneval.imagez_per_prompt"):
        compose_config(["eval=geneval", "eval.geneval.imagez_per_prompt=2"])


# -- scoring shapes-world images with the verifier ---------------------------------------------

PER_CATEGORY = 2
# Prompt j = 6r + c (category c, occurrence r) gets (c + r) % 3 correct renders of its N = 2 images
# (capped at N), the rest wrong: per category 1, 3, 2, 1, 3, 2 correct of 4 images.
EXPECTED_SUMMARY = """\
Summary
=======
Total images: 24
Total prompts: 12
% correct images: 50.00%
% correct prompts: 66.67%

Task breakdown
==============
single_object    = 25.00% (1 / 4)
two_object       = 75.00% (3 / 4)
counting         = 50.00% (2 / 4)
colors           = 25.00% (1 / 4)
position         = 75.00% (3 / 4)
color_attr       = 50.00% (2 / 4)

Overall score (avg. over tasks): 0.50000"""


def _run(argv: list[str]) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


@pytest.fixture()
def shapes_folder(tmp_path) -> tuple[Path, Path]:
    """(GenEval-layout folder of known-correct and known-wrong renders, its metadata file)."""
    metadata_file = tmp_path / "shapes_metadata.jsonl"
    _run(["geneval", "prompts", "--out", str(metadata_file), "--per-category", str(PER_CATEGORY), "--seed", "3"])
    root = tmp_path / "images"
    for j, example in enumerate(shapes_prompts(PER_CATEGORY, 3)):
        c, r = j % 6, j // 6
        right_image = example.render()
        wrong_image = sample_example(example.seed, example.tag, satisfies=False).render()
        assert verify(right_image, example.metadata).correct and not verify(wrong_image, example.metadata).correct
        folder = root / f"{j:05d}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(example.metadata) + "\n")
        for k in range(N):
            image = right_image if k < (c + r) % 3 else wrong_image
            if r == 1:  # drawn at 128px: the scorer scales it back to the verifier's 64
                image = image.resize((128, 128), Image.Resampling.NEAREST)
            image.save(folder / "samples" / f"{k:04d}.png")
    return root, metadata_file


def test_prompts_file_is_the_shapes_eval_prompt_set(shapes_folder):
    lines = shapes_folder[1].read_text().splitlines()
    assert [json.loads(line) for line in lines] == [e.metadata for e in shapes_prompts(PER_CATEGORY, 3)]
    assert [json.loads(line)["tag"] for line in lines[:6]] == list(TAGS)
    assert list(json.loads(lines[2])) == ["tag", "include", "exclude", "prompt"]  # counting, GenEval's key order
    before = shapes_folder[1].read_bytes()
    assert main(["geneval", "prompts", "--out", str(shapes_folder[1])]) == 2  # an existing file is kept
    assert shapes_folder[1].read_bytes() == before


def test_score_prints_genevals_summary_of_known_renders(shapes_folder, tmp_path):
    root, _ = shapes_folder
    results = tmp_path / "results.jsonl"
    printed = _run(["geneval", "score", str(root), "--outfile", str(results)])
    assert printed == EXPECTED_SUMMARY + "\n"
    rows = read_results(results)
    assert len(rows) == 24 and all(
        list(row) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"] for row in rows
    )
    first = rows[0]
    assert first["filename"] == str(root / "00000" / "samples" / "0000.png")
    assert json.loads(first["metadata"]) == json.loads((root / "00000" / "metadata.jsonl").read_text())
    assert all((row["reason"] == "") == row["correct"] for row in rows)
    assert all(isinstance(json.loads(row["details"]), dict) for row in rows)
    assert _run(["geneval", "summary", str(results)]) == printed
    assert _genevals_own_summary(results) == printed


def _genevals_own_summary(results: Path) -> str:
    """djghosh13/geneval's evaluation/summary_scores.py, its printing verbatim (pandas), on `results`."""
    out = io.StringIO()
    with redirect_stdout(out):
        df = pd.read_json(results, orient="records", lines=True)
        print("Summary")
        print("=======")
        print(f"Total images: {len(df)}")
        print(f"Total prompts: {len(df.groupby('metadata'))}")
        print(f"% correct images: {df['correct'].mean():.2%}")
        print(f"% correct prompts: {df.groupby('metadata')['correct'].any().mean():.2%}")
        print()
        task_scores = []
        print("Task breakdown")
        print("==============")
        for tag, task_df in df.groupby("tag", sort=False):
            task_scores.append(task_df["correct"].mean())
            print(f"{tag:<16} = {task_df['correct'].mean():.2%} ({task_df['correct'].sum()} / {len(task_df)})")
        print()
        print(f"Overall score (avg. over tasks): {np.mean(task_scores):.5f}")
    return out.getvalue()


def test_suite_output_on_shapes_prompts_is_scored(shapes_folder, tiny_adapter, tmp_path):
    metadatas = read_metadata(shapes_folder[1], limit=6)
    generate_geneval(tiny_adapter, metadatas, tmp_path / "drawn", _config())
    rows = score_folder(tmp_path / "drawn")
    assert len(rows) == 6 * N and [row["tag"] for row in rows[::N]] == [m["tag"] for m in metadatas]
    assert summary(rows).splitlines()[2:4] == ["Total images: 12", "Total prompts: 6"]


def test_scoring_bad_folders_is_an_error_naming_them(cli_run, tmp_path, capsys):
    # GenEval's COCO prompts are not the shapes world's: the verifier cannot judge them.
    assert main(["geneval", "score", str(cli_run), "--outfile", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "00000/metadata.jsonl" in err and "unknown class 'bench'" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        score_folder(tmp_path / "empty")
    (tmp_path / "half" / "00000").mkdir(parents=True)
    with pytest.raises(ValueError, match="needs metadata.jsonl and samples"):
        score_folder(tmp_path / "half")
    assert not (tmp_path / "r.jsonl").exists()
