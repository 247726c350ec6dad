"""GenEval's scorer and summary for the shapes world: the verifier in place of Mask2Former + CLIP.

`score_folder` walks a GenEval-layout folder as `evaluation/evaluate_images.py` does (every
all-digit subfolder: its `metadata.jsonl`, then each `samples/` file matching `\\d+\\.png`; here in
numeric order) and judges each image with the shapes verifier (`coevolve.data.shapes.verify`, which
implements GenEval's `evaluate()` clause for clause; an image that is not 64px is scaled to it).
Its rows are the scorer's `results.jsonl` lines: `filename`, `tag`, `prompt`, `correct`, `reason`,
`metadata` (JSON text) and `details` (JSON text: each detected class's boxes as
`[x0, y0, x1, y1, score]`).

`summary` prints what `evaluation/summary_scores.py results.jsonl` prints, line for line: totals,
% correct images and prompts (a prompt is one distinct `metadata`; it is correct when any of its
images is), each tag's accuracy in order of first appearance, and the overall score, the mean over
tags. It reads GenEval's own results.jsonl as well.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from coevolve.data.shapes import as_verifiable, verify
from coevolve.utils.fs import atomic_write_text

SAMPLE = re.compile(r"\d+\.png")  # GenEval's pattern (re.match: a prefix match)


def _numbered(paths) -> list[Path]:
    return sorted(paths, key=lambda path: (int(re.match(r"\d+", path.name).group()), path.name))


def score_folder(image_dir: str | Path) -> list[dict]:
    """One results row per image of the GenEval-layout folder `image_dir`, judged by the verifier.

    Raises FileNotFoundError for a missing folder, ValueError naming the file for a prompt folder
    without metadata.jsonl or samples/, metadata the shapes world cannot judge (e.g. GenEval's COCO
    classes), an unreadable image, or a folder holding no images at all."""
    root = Path(image_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"GenEval image folder {root} does not exist")
    rows = []
    for folder in _numbered(path for path in root.iterdir() if path.is_dir() and path.name.isdigit()):
        metadata_file, samples = folder / "metadata.jsonl", folder / "samples"
        if not metadata_file.is_file() or not samples.is_dir():
            raise ValueError(f"{folder} is not a GenEval prompt folder: it needs metadata.jsonl and samples/")
        try:
            metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{metadata_file}: not JSON ({error.msg})") from None
        for path in _numbered(p for p in samples.iterdir() if p.is_file() and SAMPLE.match(p.name)):
            try:
                with Image.open(path) as opened:
                    image = as_verifiable(opened.convert("RGB"))
            except (OSError, UnidentifiedImageError) as error:
                raise ValueError(f"cannot read image {path}: {error}") from None
            try:
                verdict = verify(image, metadata)
            except ValueError as error:
                raise ValueError(f"{metadata_file}: {error}") from None
            details: dict[str, list] = {}
            for detection in verdict.detections:
                details.setdefault(detection.shape, []).append([*detection.box, detection.score])
            rows.append(
                {
                    "filename": str(path),
                    "tag": metadata["tag"],
                    "prompt": metadata.get("prompt"),
                    "correct": verdict.correct,
                    "reason": verdict.reason,
                    "metadata": json.dumps(metadata),
                    "details": json.dumps(details),
                }
            )
    if not rows:
        raise ValueError(f"{root} holds no images in GenEval's layout (<index>/samples/<k>.png)")
    return rows


def write_results(rows: list[dict], outfile: str | Path) -> Path:
    """`rows` as GenEval's results.jsonl (one JSON object per line), replacing `outfile`."""
    return atomic_write_text(outfile, "".join(json.dumps(row) + "\n" for row in rows))


def read_results(path: str | Path) -> list[dict]:
    """The rows of a results.jsonl (ours or GenEval's); ValueError names a bad line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not JSON ({error.msg})") from None
        if not isinstance(row, dict) or not {"tag", "correct", "metadata"} <= row.keys():
            raise ValueError(f"{path}, line {number}: a results row needs 'tag', 'correct' and 'metadata'")
        rows.append(row)
    if not rows:
        raise ValueError(f"results file {path} holds no rows")
    return rows


def summary(rows: list[dict]) -> str:
    """The text `summary_scores.py` prints for these results rows (without the final newline)."""
    correct = [bool(row["correct"]) for row in rows]
    prompts: dict[str, bool] = {}  # GenEval groups by the metadata's JSON text
    for row, ok in zip(rows, correct):
        key = row["metadata"] if isinstance(row["metadata"], str) else json.dumps(row["metadata"])
        prompts[key] = prompts.get(key, False) or ok
    tags: dict[str, list[bool]] = {}
    for row, ok in zip(rows, correct):
        tags.setdefault(row["tag"], []).append(ok)
    lines = [
        "Summary",
        "=======",
        f"Total images: {len(rows)}",
        f"Total prompts: {len(prompts)}",
        f"% correct images: {sum(correct) / len(correct):.2%}",
        f"% correct prompts: {sum(prompts.values()) / len(prompts):.2%}",
        "",
        "Task breakdown",
        "==============",
        *(f"{tag:<16} = {sum(flags) / len(flags):.2%} ({sum(flags)} / {len(flags)})" for tag, flags in tags.items()),
        "",
        f"Overall score (avg. over tasks): {sum(sum(f) / len(f) for f in tags.values()) / len(tags):.5f}",
    ]
    return "\n".join(lines)
