"""The `geneval` suite: images for GenEval's prompts, in the folder layout GenEval's scorer reads.

GenEval (djghosh13/geneval) reads prompts from `prompts/evaluation_metadata.jsonl`, one JSON object
per line (`{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo
of a bench"}`; other tags carry colours, positions `["left of", 0]` and `exclude` clauses), and its
`evaluation/evaluate_images.py OUTDIR` scores the folder its README specifies:

    OUTDIR/00000/metadata.jsonl      line 0 of the metadata file (json.dumps of it, then a newline)
    OUTDIR/00000/samples/0000.png    image k of that prompt, k zero-padded to 4 digits
    OUTDIR/00000/samples/0001.png
    OUTDIR/00001/...                 the prompt's line index, zero-padded to 5 digits

(`grid.png` is optional there and not written; GenEval's own diffusers script pads samples to 5
digits, its README to 4; the scorer takes any `\\d+.png`.) Nothing else is written into OUTDIR.

Seeds: image k of the prompt on line i is drawn with `row_seed(eval.seed, "geneval", i, k)`, so it
does not depend on `batch_size`, on `limit` or on the other lines. The folder is staged beside
OUTDIR and renamed into place when complete: an interrupted run leaves no OUTDIR that looks done.
`write_metadata` writes a metadata file (e.g. the shapes world's prompt set) in the same format.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from coevolve.eval.config import EvalConfig
from coevolve.eval.draw import draw_images
from coevolve.model.adapter import JanusAdapter
from coevolve.model.guidance import Guidance
from coevolve.model.sampling import row_seed
from coevolve.utils.fs import OutputExistsError, atomic_output_dir, atomic_write_text


def prompt_folder(index: int) -> str:
    """A prompt's folder name: its line index zero-padded to 5 digits."""
    return f"{index:0>5}"


def sample_name(k: int) -> str:
    """Image k's file name in `samples/`: k zero-padded to 4 digits."""
    return f"{k:0>4}.png"


def read_metadata(path: str | Path, limit: int | None = None) -> list[dict]:
    """The first `limit` (None: all) lines of a GenEval metadata file, each a dict with a string
    "tag" and "prompt" (other keys are kept as they are). Every line is checked; blank lines at the
    end are ignored. Raises FileNotFoundError, or ValueError naming the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GenEval metadata file {path} does not exist")
    lines = [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"GenEval metadata file {path} holds no prompts")
    metadatas = []
    for number, line in enumerate(lines, start=1):
        where = f"{path}, line {number}"
        try:
            metadata = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not JSON ({error.msg}): {line[:80]!r}") from None
        if not isinstance(metadata, dict):
            raise ValueError(f"{where}: a line must be a JSON object, got {type(metadata).__name__}")
        for key in ("tag", "prompt"):
            if not isinstance(metadata.get(key), str) or not metadata[key].strip():
                raise ValueError(f"{where}: {key!r} is missing or not a non-empty string: {line[:80]!r}")
        metadatas.append(metadata)
    return metadatas[:limit]


def write_metadata(path: str | Path, metadatas: list[dict], overwrite: bool = False) -> Path:
    """Write `metadatas` as a GenEval metadata file (one `json.dumps` per line); an existing
    non-empty file is refused unless `overwrite`."""
    path = Path(path)
    if path.exists() and (path.is_dir() or path.stat().st_size) and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    return atomic_write_text(path, "".join(json.dumps(metadata) + "\n" for metadata in metadatas))


def generate_geneval(
    adapter: JanusAdapter,
    metadatas: list[dict],
    out_dir: str | Path,
    config: EvalConfig,
    unconditional: str = "pad",
) -> dict:
    """Draw `config.geneval.images_per_prompt` images for each of `metadatas` (line i at index i)
    into `out_dir` in GenEval's layout; returns a summary (counts, image size, seconds).

    A non-empty `out_dir` is refused unless `config.geneval.overwrite` (checked before drawing).
    """
    suite = config.geneval
    if suite is None:
        raise ValueError("generate_geneval needs config.geneval (eval=geneval)")
    if not metadatas:
        raise ValueError("generate_geneval: no prompts given")
    n = suite.images_per_prompt
    start = time.perf_counter()
    rows = [(index, k) for index in range(len(metadatas)) for k in range(n)]
    images = draw_images(
        adapter,
        [metadatas[index]["prompt"] for index, _ in rows],
        [row_seed(config.seed, "geneval", index, k) for index, k in rows],
        Guidance(config.guidance_weight, unconditional),
        config.sampling,
        config.batch_size,
        desc="geneval",
    )
    size = None
    with atomic_output_dir(out_dir, overwrite=suite.overwrite) as staging:
        for index, metadata in enumerate(metadatas):
            samples = staging / prompt_folder(index) / "samples"
            samples.mkdir(parents=True)
            (samples.parent / "metadata.jsonl").write_text(json.dumps(metadata) + "\n", encoding="utf-8")
        for (index, k), image in zip(rows, images, strict=True):
            image.save(staging / prompt_folder(index) / "samples" / sample_name(k))
            size = image.size
    return {
        "suite": "geneval",
        "out_dir": str(Path(out_dir).absolute()),
        "prompts": len(metadatas),
        "images": len(rows),
        "images_per_prompt": n,
        "image_size": list(size),
        "tags": {tag: sum(m["tag"] == tag for m in metadatas) for tag in dict.fromkeys(m["tag"] for m in metadatas)},
        "seconds": round(time.perf_counter() - start, 3),
    }
