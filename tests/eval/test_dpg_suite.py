"""`coevolve eval suite=dpg` writes DPG-Bench's layout: one 2x2 grid `<item_id>.png` per prompt file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import numpy
from PIL import Image, ImageChops

from coevolve.cli.main import main
from coevolve.config import compose_config, to_typed
from coevolve.eval.config import EvalConfig
from coevolve.eval.dpg import TILES, generate_dpg, read_prompts
from coevolve.eval.draw import draw_images
from coevolve.model.guidance import Guidance
from coevolve.model.sampling import row_seed
from coevolve.utils.fs import OutputExistsError

# DPG-Bench's prompt files are dense paragraphs named by item id (ELLA's dpg_bench/prompts/).
PROMPTS = {
    "1": "An eye-catching vibrant red pickup truck with a stout and rectangular build is parked on the sandy "
    "shores as dusk sets in. The truck's glossy paint contrasts with the soft, amber hues of the setting sun.",
    "256": "A small wooden table with three green apples on it, next to a blue ceramic vase holding tall "
    "sunflowers, in a bright kitchen.",
    "10": "Two cats sitting on a windowsill, one black and one white, looking out at falling snow.",
}
ORDER = ["1", "10", "256"]  # sorted by file name
SUITE_OVERRIDES = ["eval.seed=11", "eval.batch_size=5"]  # 5: batches cross prompt boundaries


def _config(overwrite: bool = False, **changes) -> EvalConfig:
    """The eval config of `suite=dpg` + SUITE_OVERRIDES (what `cli_run` ran), with `changes`."""
    config = to_typed(compose_config(["eval=dpg", "eval.dpg.prompts_dir=unused", *SUITE_OVERRIDES])).eval
    return dataclasses.replace(config, dpg=dataclasses.replace(config.dpg, overwrite=overwrite), **changes)


def _files(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(root.iterdir())}


@pytest.fixture(scope="module")
def prompts_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("dpg_prompts")
    for item_id, text in PROMPTS.items():
        (directory / f"{item_id}.txt").write_text(text)  # DPG-Bench's files have no final newline
    return directory


@pytest.fixture(scope="module")
def cli_run(prompts_dir, tiny_checkpoint, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("dpg_run")
    out = run_dir / "dpg"
    argv = ["eval", "suite=dpg", f"run_dir={run_dir}", f"model.path={tiny_checkpoint}",
            f"eval.dpg.prompts_dir={prompts_dir}", f"eval.dpg.out_dir={out}", "eval.device=cpu", *SUITE_OVERRIDES]  # fmt: skip
    main(argv)
    return out


def test_one_grid_per_prompt_file_of_twice_the_image_size(cli_run):
    assert sorted(path.name for path in cli_run.iterdir()) == [f"{item_id}.png" for item_id in ORDER]
    for path in cli_run.iterdir():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (128, 128)  # 2 x 64


def test_tiles_are_the_seeded_images_in_dpg_benchs_crop_order(cli_run, tiny_adapter):
    """Tile k of item "10" (DPG's crop k: top-left, top-right, bottom-left, bottom-right) is image k
    drawn alone with row_seed(seed, "dpg", "10", k)."""
    config = _config()
    alone = list(
        draw_images(
            tiny_adapter,
            [PROMPTS["10"]] * 4,
            [row_seed(11, "dpg", "10", k) for k in range(4)],
            Guidance(config.guidance_weight, "pad"),
            config.sampling,
            batch_size=1,
        )
    )
    with Image.open(cli_run / "10.png") as sheet:
        for k, (column, row) in enumerate(TILES):
            tile = sheet.crop((column * 64, row * 64, (column + 1) * 64, (row + 1) * 64)).convert("RGB")
            # The same codes decoded in a batch of 1 and of 4 may round a pixel differently (the VQ
            # decoder's float sums depend on the batch's kernel), so equal up to one grey level in
            # a handful of pixels; another seed's image differs in most of its pixels.
            difference = numpy.asarray(ImageChops.difference(tile, alone[k].convert("RGB")))
            assert difference.max() <= 2 and (difference.max(axis=-1) > 0).sum() <= 8, (k, difference.max())


def test_same_seed_same_bytes_whatever_the_batch_size(cli_run, prompts_dir, tiny_adapter, tmp_path):
    prompts = read_prompts(prompts_dir)
    generate_dpg(tiny_adapter, prompts, tmp_path / "again", _config(batch_size=12))
    assert _files(tmp_path / "again") == _files(cli_run)
    generate_dpg(tiny_adapter, read_prompts(prompts_dir, limit=1), tmp_path / "first", _config())
    assert _files(tmp_path / "first") == {"1.png": _files(cli_run)["1.png"]}
    generate_dpg(tiny_adapter, prompts, tmp_path / "other", _config(seed=12))
    assert _files(tmp_path / "other").keys() == _files(cli_run).keys() != {}
    assert _files(tmp_path / "other") != _files(cli_run)


def test_prompt_files_are_read_in_sorted_order_stripped(prompts_dir):
    assert read_prompts(prompts_dir) == [(item_id, PROMPTS[item_id]) for item_id in ORDER]
    (prompts_dir.parent / "padded").mkdir()
    (prompts_dir.parent / "padded" / "7.txt").write_text("  a red circle \n")
    (prompts_dir.parent / "padded" / "notes.md").write_text("not a prompt")
    assert read_prompts(prompts_dir.parent / "padded") == [("7", "a red circle")]


def test_bad_prompt_folders_are_errors_naming_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        read_prompts(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no prompts here")
    with pytest.raises(ValueError, match=f"{empty} holds no"):
        read_prompts(empty)
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "3.txt").write_text("  \n")
    with pytest.raises(ValueError, match="3.txt is empty"):
        read_prompts(blank)
    dotted = tmp_path / "dotted"
    dotted.mkdir()
    (dotted / "a.b.txt").write_text("a prompt")
    with pytest.raises(ValueError, match="up to the first dot"):
        read_prompts(dotted)


def test_empty_prompts_dir_and_taken_output_fail_on_the_command_line(prompts_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "suite=dpg", f"run_dir={tmp_path}", f"eval.dpg.prompts_dir={empty}"])
    assert exit_.value.code == 2 and f"{empty} holds no" in capsys.readouterr().err
    out = tmp_path / "out"
    out.mkdir()
    (out / "1.png").write_bytes(b"earlier work")
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "suite=dpg", f"run_dir={tmp_path}", f"eval.dpg.prompts_dir={prompts_dir}",
              f"eval.dpg.out_dir={out}"])  # fmt: skip
    assert exit_.value.code == 2 and "eval.dpg.overwrite=true" in capsys.readouterr().err
    assert _files(out) == {"1.png": b"earlier work"}


def test_overwrite_replaces_a_taken_folder(prompts_dir, tiny_adapter, tmp_path):
    prompts = read_prompts(prompts_dir, limit=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.png").write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        generate_dpg(tiny_adapter, prompts, out, _config())
    summary = generate_dpg(tiny_adapter, prompts, out, _config(overwrite=True))
    assert sorted(_files(out)) == ["1.png"] and summary["resolution"] == 64 and summary["pic_num"] == 4
