"""Writing whole output directories and files so that readers never see half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


class OutputExistsError(FileExistsError):
    """The output directory already holds files and overwriting was not asked for."""


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse to write into `out` when it exists and is not empty, unless `overwrite`."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"output directory {out} exists and is not empty; pass --overwrite to replace it"
        )


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh staging directory that replaces `out` only if the block completes.

    The staging directory is a sibling of `out` (same filesystem, so the final move is a
    rename). If the block raises or the process is killed, `out` is untouched: it either
    does not exist or still holds what it held before; the staging directory is removed
    on exceptions, and a killed run leaves only a hidden ``.<name>.partial-*`` sibling.
    """
    out = Path(out).absolute()
    check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would otherwise become the output's mode
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # Re-checked: another writer may have filled `out` while we were working.
    check_output_dir(out, overwrite)
    if out.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, retired / out.name)
        os.replace(staging, out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out)


PARTIAL = ".partial-"
"""Infix of the hidden temporary name a file is written under before its rename (`.NAME.partial-XXXX`)."""


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Write `path` through `write(binary_stream)` into a hidden temporary sibling, fsync it, and
    rename it over `path` (then fsync the folder): readers, and a machine that loses power, see
    the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}{PARTIAL}", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write` of `text` (UTF-8)."""
    return atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))
