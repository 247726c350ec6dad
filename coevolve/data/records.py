"""SFT records: the data the supervised warm start trains on, and their schema.

A *record* is one row of a data file; SFT builds its task mixture from records. Fields:

===============  ==========================================================  ========================
field            value                                                       needed by
===============  ==========================================================  ========================
prompt           str: the text prompt                                        every task
image            image (see below) that MATCHES the prompt                   every task
plan             str: the plan written before drawing ``image``              t2i, regen
caption          str: a caption of ``image``                                 caption, draw_caption
negative_image   image that does NOT match the prompt                        judge (negatives), regen
negative_reason  str: what is wrong with ``negative_image``,                 judge (negatives), regen
                 e.g. "the circle is red, not blue"
negative_caption str: a caption of ``negative_image``                       judge of a describing
                                                                             checkpoint (with caption)
tag              str: a free label for grouping (shapes: the GenEval         no task (optional)
                 category)
===============  ==========================================================  ========================

Rules, checked by ``load_records`` (each break is a ``RecordError`` naming file, row and field):

- ``prompt`` and ``image`` are always required; the caller names the other fields its tasks need.
  A required field must be a column, and non-null and non-empty in every row.
- A field that is not required may be missing, null or ``""``: all three mean absent (None).
- ``negative_image`` and ``negative_reason`` come together: a row has both or neither (requiring
  one requires the other).
- ``negative_caption`` needs ``negative_image``.
- Text fields are strings (a number is an error). Columns outside the table are ignored.

An image is one of: a path (str), relative to the directory of the data file (or of the
``save_to_disk`` directory), or absolute; a ``{"bytes": ..., "path": ...}`` dict as
``datasets.Image`` stores it (an ``Image`` column of a Parquet file or of a ``save_to_disk``
dataset arrives so; the bytes win, else the path as above); the encoded bytes of an image file; a
PIL image. Every image is decoded when loaded and converted to RGB, so a missing, truncated or
garbage file fails at load time, not during training.

A source is a ``.jsonl`` / ``.json`` / ``.parquet`` file (read whole; ``split`` is not used), a
directory of such files (split by file name as ``datasets.load_dataset`` does: ``train.jsonl``,
``data/test-00000-of-00002.parquet``; files that name no split are all ``train``; other files,
such as images, are skipped), or a directory written by ``Dataset.save_to_disk`` /
``DatasetDict.save_to_disk``. Rows are numbered from 0 within each file: ``Record.where`` and
errors read ``data/train.jsonl row 12``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from coevolve.utils.fs import atomic_output_dir

FIELDS = ("prompt", "image", "plan", "caption", "negative_image", "negative_reason", "negative_caption")
TEXT_FIELDS = ("prompt", "plan", "caption", "negative_reason", "negative_caption", "tag")
IMAGE_FIELDS = ("image", "negative_image")
DATA_EXTENSIONS = (".jsonl", ".json", ".parquet")
_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # written by save_to_disk
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class RecordError(ValueError):
    """Data that breaks the record schema; the message names the file, the row and the field."""


@dataclass(frozen=True, kw_only=True)
class Record:
    """One SFT record (fields as in the module docstring).

    Images are RGB PIL images, already decoded; absent optional fields are None. ``where`` says
    where the record came from ("data/train.jsonl row 12", "shapes row 3") for error messages;
    it takes no part in equality.
    """

    prompt: str
    image: Image.Image
    where: str = field(compare=False)
    plan: str | None = None
    caption: str | None = None
    negative_image: Image.Image | None = None
    negative_reason: str | None = None
    negative_caption: str | None = None
    tag: str | None = None

    def __post_init__(self):
        if (self.negative_image is None) != (self.negative_reason is None):
            pair = ("negative_image", "negative_reason")
            given, lacking = pair if self.negative_reason is None else pair[::-1]
            raise RecordError(f"{self.where}: field {given!r} is set but {lacking!r} is not; they come together")
        if self.negative_caption is not None and self.negative_image is None:
            raise RecordError(f"{self.where}: field 'negative_caption' is set but 'negative_image' is not")


def load_records(
    path: str | os.PathLike, required: Iterable[str], split: str = "train", limit: int | None = None
) -> list[Record]:
    """Read, check and decode the records at ``path`` (a file or directory; see the module docstring).

    ``required``: field names the caller's tasks need, besides ``prompt`` and ``image``. ``split``:
    which split of a directory to read. ``limit``: keep only the first ``limit`` records (in file
    order). Returns the records with images loaded. Raises ``RecordError`` for data that breaks
    the schema, ``FileNotFoundError`` when ``path`` does not exist, ``ValueError`` for an unknown
    field name in ``required``.
    """
    required = {"prompt", "image", *required}
    unknown = required - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown required field(s) {sorted(unknown)}; fields are {', '.join(FIELDS)}")
    if required & {"negative_image", "negative_reason"}:
        required |= {"negative_image", "negative_reason"}
    required = [name for name in FIELDS if name in required]  # a fixed order gives stable messages
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    records: list[Record] = []
    for label, base_dir, dataset in _sources(Path(path), split):
        if limit is not None:
            dataset = dataset.select(range(min(len(dataset), limit - len(records))))
        records.extend(_records(dataset, label, base_dir, required))
        if limit is not None and len(records) >= limit:
            break
    return records


def shapes_records(num_examples: int, seed: int) -> list[Record]:
    """The built-in shapes world as ``num_examples`` records with every field set.

    Record ``i`` has tag ``TAGS[i % len(TAGS)]`` and seed ``derive_seed(seed, i)``: its prompt,
    image, plan and caption come from the satisfying example, its ``negative_image``,
    ``negative_reason`` and ``negative_caption`` from the violating example of the same seed
    (same prompt).
    """
    from coevolve.data.shapes.metadata import TAGS
    from coevolve.data.shapes.prompts import derive_seed, sample_example

    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    records = []
    for i in range(num_examples):
        tag, example_seed = TAGS[i % len(TAGS)], derive_seed(seed, i)
        good, bad = sample_example(example_seed, tag, True), sample_example(example_seed, tag, False)
        records.append(
            Record(
                prompt=good.prompt,
                image=good.render(),
                plan=good.plan,
                caption=good.caption,
                negative_image=bad.render(),
                negative_reason=bad.violation,
                negative_caption=bad.caption,
                tag=tag,
                where=f"shapes row {i}",
            )
        )
    return records


def write_records(records: Iterable[Record], path_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``records`` as ``path_dir/records.jsonl`` plus ``path_dir/images/*.png``; return the jsonl path.

    Image paths in the jsonl are relative (``images/000012.png``, ``images/000012-negative.png``);
    absent fields are left out of their row. The directory appears whole or not at all; an existing
    non-empty ``path_dir`` is replaced only with ``overwrite``.
    """
    path_dir = Path(path_dir)
    with atomic_output_dir(path_dir, overwrite) as staging:
        (staging / "images").mkdir()
        with open(staging / "records.jsonl", "w", encoding="utf-8") as out:
            for i, record in enumerate(records):
                row = {name: getattr(record, name) for name in (*FIELDS, "tag")}
                for name, suffix in (("image", ""), ("negative_image", "-negative")):
                    if row[name] is not None:
                        relative = f"images/{i:06d}{suffix}.png"
                        row[name].save(staging / relative)
                        row[name] = relative
                out.write(json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False) + "\n")
    return path_dir / "records.jsonl"


def _sources(path: Path, split: str) -> Iterator[tuple[str, Path, object]]:
    """Yield (label for messages, directory relative image paths start from, ``datasets.Dataset``)."""
    import datasets
    from datasets.data_files import DataFilesDict, get_data_patterns

    if not path.exists():
        raise FileNotFoundError(f"no records at {path}: it does not exist")
    if path.is_dir() and any((path / name).is_file() for name in _SAVED_MARKERS):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise RecordError(f"{path}: no split {split!r}; splits present: {', '.join(loaded)}")
            loaded = loaded[split]
        yield str(path), path, loaded
        return
    if path.is_dir():
        try:
            patterns = get_data_patterns(str(path))
            by_split = DataFilesDict.from_patterns(patterns, str(path), allowed_extensions=list(DATA_EXTENSIONS))
        except FileNotFoundError:
            by_split = {}
        by_split = {str(name): files for name, files in by_split.items() if files}
        if split not in by_split:
            found = f"splits present: {', '.join(by_split)}" if by_split else "no .jsonl/.json/.parquet files"
            raise RecordError(f"{path}: no data files for split {split!r}; {found}")
        files = [Path(f) for f in by_split[split]]
    elif path.suffix in DATA_EXTENSIONS:
        files = [path]
    else:
        raise RecordError(f"{path}: not a {'/'.join(DATA_EXTENSIONS)} file or a directory of them")
    for file in files:
        label = str(path / file.relative_to(path.resolve())) if path.is_dir() else str(path)
        builder = "parquet" if file.suffix == ".parquet" else "json"
        # A private cache, gone once the file's rows are read: records are decoded eagerly anyway.
        with tempfile.TemporaryDirectory(prefix="coevolve-records-") as cache, _quiet(datasets):
            try:
                dataset = datasets.load_dataset(builder, data_files=[str(file)], split="train", cache_dir=cache)
            except Exception as error:  # datasets wraps parse errors in several types; keep the cause
                cause = error.__cause__ or error
                raise RecordError(f"{label}: cannot read as {builder}: {type(cause).__name__}: {cause}") from error
            yield label, file.parent, dataset


@contextlib.contextmanager
def _quiet(datasets):
    """Hide the per-file "Generating train split" bars; restore the caller's setting after."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _records(dataset, label: str, base_dir: Path, required: list[str]) -> Iterator[Record]:
    import datasets

    columns = dataset.column_names
    for name in required:
        if name not in columns:
            raise RecordError(
                f"{label}: required field {name!r} is not a column; columns present: {', '.join(columns)}"
            )
    for name in IMAGE_FIELDS:  # decode ourselves, so that a bad image is named with its row
        if isinstance(dataset.features.get(name), datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    dataset = dataset.select_columns([c for c in columns if c in (*TEXT_FIELDS, *IMAGE_FIELDS)])
    for i, row in enumerate(dataset):
        where = f"{label} row {i}"
        values = {name: _text(row.get(name), where, name) for name in TEXT_FIELDS}
        values |= {name: _image(row.get(name), where, name, base_dir) for name in IMAGE_FIELDS}
        for name in required:
            if values[name] is None:
                raise RecordError(f"{where}: required field {name!r} is null or empty")
        yield Record(where=where, **values)


def _text(value, where: str, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(f"{where}: field {name!r} must be a string, got {type(value).__name__} {value!r:.80}")
    return value if value.strip() else None


def _image(value, where: str, name: str, base_dir: Path) -> Image.Image | None:
    """Decode one image value (path, ``{"bytes", "path"}`` dict, bytes or PIL) to loaded RGB; None if absent."""
    if isinstance(value, Image.Image):
        source, shown = value, "in-memory image"
    else:
        if isinstance(value, dict):
            data, ref = value.get("bytes"), value.get("path")
        elif isinstance(value, (bytes, bytearray)):
            data, ref = value, None
        elif value is None or isinstance(value, str):
            data, ref = None, value
        else:
            raise RecordError(
                f"{where}: field {name!r} must be an image path, image bytes or an image, "
                f"got {type(value).__name__} {value!r:.80}"
            )
        if not isinstance(data, (bytes, bytearray, type(None))) or not isinstance(ref, (str, type(None))):
            raise RecordError(f"{where}: field {name!r}: expected bytes and a path string, got {value!r:.80}")
        if data is not None:
            source, shown = io.BytesIO(data), f"embedded bytes ({ref})" if ref else "embedded bytes"
        elif not ref:
            return None  # null, "" or a dict holding neither bytes nor path: absent
        else:
            source = Path(ref) if os.path.isabs(ref) else base_dir / ref
            shown = str(source)
            if not source.is_file():
                raise RecordError(f"{where}: field {name!r}: image file {shown} does not exist")
    try:
        if isinstance(source, Image.Image):
            rgb = source.convert("RGB")
        else:
            with Image.open(source) as opened:
                rgb = opened.convert("RGB")
        rgb.load()  # convert() decodes already; load() makes the "decoded now" contract explicit
    except _DECODE_ERRORS as error:
        raise RecordError(f"{where}: field {name!r}: cannot decode image {shown}: {error}") from error
    return rgb
