"""The `dpg` suite: 2x2 image grids for DPG-Bench's prompts, in the layout its scorer reads.

DPG-Bench (TencentQQGYLab/ELLA, `dpg_bench/`) keeps one prompt per file, `prompts/<item_id>.txt`.
Its `compute_dpg_bench.py --image-root-path OUTDIR --resolution R --pic-num 4` (the defaults of
its `dist_eval.sh`) reads every file of OUTDIR as `<item_id>.png` (the item id is the name up to
its first dot) and crops it into 4 tiles of R x R: top-left, top-right, bottom-left,
bottom-right. So each prompt becomes one `OUTDIR/<item_id>.png` of 2R x 2R holding images k = 0..3
in that order, R being the checkpoint's image size (384 for Janus-Pro: run the scorer with
`--resolution 384`). Nothing else is written into OUTDIR (the scorer would try to read it).

Prompt files are taken in sorted order of their names. Image k of item `item_id` is drawn with
`row_seed(eval.seed, "dpg", item_id, k)`, so it does not depend on `batch_size`, on `limit` or on
the other files. The folder is staged beside OUTDIR and renamed into place when complete.
"""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

from coevolve.eval.config import EvalConfig
from coevolve.eval.draw import draw_images
from coevolve.model.adapter import JanusAdapter
from coevolve.model.guidance import Guidance
from coevolve.model.sampling import row_seed
from coevolve.utils.fs import atomic_output_dir

PICTURES = 4  # images per prompt, tiled 2 x 2 (DPG-Bench's --pic-num 4)
TILES = ((0, 0), (1, 0), (0, 1), (1, 1))  # (column, row) of image k: DPG-Bench's crop order


def read_prompts(prompts_dir: str | Path, limit: int | None = None) -> list[tuple[str, str]]:
    """`(item_id, prompt)` of the first `limit` (None: all) `*.txt` files of `prompts_dir`, in sorted
    order of their names; the prompt is the file's text, stripped. Raises FileNotFoundError for a
    missing folder, ValueError for one with no prompt file, an empty file or an item id with a dot."""
    directory = Path(prompts_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"DPG-Bench prompts directory {directory} does not exist")
    files = sorted((path for path in directory.iterdir() if path.suffix == ".txt" and path.is_file()), key=str)
    if not files:
        raise ValueError(f"DPG-Bench prompts directory {directory} holds no <item_id>.txt prompt files")
    prompts = []
    for path in files:
        if "." in path.stem:
            raise ValueError(f"DPG-Bench prompt file {path}: the scorer reads the item id up to the first dot")
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            raise ValueError(f"DPG-Bench prompt file {path} is empty")
        prompts.append((path.stem, text))
    return prompts[:limit]


def grid(images: list[Image.Image]) -> Image.Image:
    """4 images of one size R x R -> one 2R x 2R RGB image, image k at `TILES[k]`."""
    size = images[0].width
    sheet = Image.new("RGB", (2 * size, 2 * size))
    for (column, row), image in zip(TILES, images, strict=True):
        sheet.paste(image.convert("RGB"), (column * size, row * size))
    return sheet


def generate_dpg(
    adapter: JanusAdapter,
    prompts: list[tuple[str, str]],
    out_dir: str | Path,
    config: EvalConfig,
    unconditional: str = "pad",
) -> dict:
    """Draw 4 images for each `(item_id, prompt)` and write `out_dir/<item_id>.png` grids; returns a
    summary (counts, tile size, seconds). A non-empty `out_dir` is refused unless
    `config.dpg.overwrite` (checked before drawing)."""
    suite = config.dpg
    if suite is None:
        raise ValueError("generate_dpg needs config.dpg (eval=dpg)")
    if not prompts:
        raise ValueError("generate_dpg: no prompts given")
    start = time.perf_counter()
    rows = [(item_id, prompt, k) for item_id, prompt in prompts for k in range(PICTURES)]
    images = draw_images(
        adapter,
        [prompt for _, prompt, _ in rows],
        [row_seed(config.seed, "dpg", item_id, k) for item_id, _, k in rows],
        Guidance(config.guidance_weight, unconditional),
        config.sampling,
        config.batch_size,
        desc="dpg",
    )
    tile = None
    with atomic_output_dir(out_dir, overwrite=suite.overwrite) as staging:
        for item_id, _ in prompts:
            pictures = [next(images) for _ in range(PICTURES)]
            tile = pictures[0].width
            grid(pictures).save(staging / f"{item_id}.png")
    return {
        "suite": "dpg",
        "out_dir": str(Path(out_dir).absolute()),
        "prompts": len(prompts),
        "images": len(rows),
        "resolution": tile,  # compute_dpg_bench.py's --resolution
        "pic_num": PICTURES,
        "seconds": round(time.perf_counter() - start, 3),
    }
