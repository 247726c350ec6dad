"""The trace store (DESIGN.md section 8): append-only Parquet shards, one per step, PNGs beside them.

A store is a directory ROOT (`RUN_DIR/rl/traces/` for `coevolve rl`, `OUT/traces/` for
`coevolve rollout`):

    ROOT/manifest.json         {"schema_version": 1, "run_config": {...}, "programs": {...},
                                "columns": [{"name": ..., "type": ...}, ...],
                                "steps": {"N": {"rows": int, "file": "step-NNNNNN.parquet"}}}
    ROOT/step-NNNNNN.parquet   the rows of step N, one per trajectory (`coevolve.traces.trace_row`)
    ROOT/images/*.png          every image; rows name them by their path relative to ROOT

Writing (`TraceWriter.write_step`): the shard goes to a hidden temporary name in ROOT, is
fsynced and renamed into place, then the manifest is replaced the same way. A writer killed at
any point leaves every completed step readable; what it leaves behind is a hidden
`.step-*.partial-*` file that readers never match and the next writer deletes. Writing a step
again replaces its shard (a resumed RL run never duplicates rows); `discard_after(k)` drops the
shards a stopped run wrote after its checkpoint k. Readers take the shards on disk
(`step-*.parquet`) as the steps; the manifest's step index may lag a killed writer by one.

Schema (version 1). Every shard of a store has the same Arrow schema, fixed when the store is
created — from the programs' config (`trace_columns`: each program's segments, reward terms,
trained segments and timing phases), or from the first step's rows — so
`datasets.load_dataset("parquet", data_files="ROOT/step-*.parquet")`, pandas and DuckDB read all
shards as one table. Columns, in this order:

- run (string), step (int64), group, id, program, prompt (string), policy_version (int64),
  plan, image_path, verdict (string), p_yes (float64), reflection, regen_image_path, caption,
  source_image_path, final_image (string), rounds (int64): `TRACE_COLUMNS`, null where the
  trajectory has no such part;
- further segments of a program (description, regen_description and regen_verdict, reflection_2,
  regen_image_2_path, ...; a description where the checkpoint's self-check writes one): string;
- dropped (bool: its group was dropped by the reward step, so it has no rewards), trained_segments
  (list<string>: the segments whose advantages reached the loss; null outside RL);
- per reward term T: `reward/T` (float64, raw score), `reward/T/normalized` (float64, group
  normalised), `reward/T/details` (string: the scorer's details as JSON); null when not scored;
- per trained segment S: `advantage/S` (float64);
- per sampling phase P: `seconds/P` (float64, the trajectory's share of its batch's time).

Images are PNG files; `*_path` columns hold their paths relative to ROOT. Texts are stored
verbatim (a viewer escapes them). `TraceStore.open(PATH)` reads a store, or finds the one in a run
directory; `TraceStore.query` filters with a DuckDB SQL condition or a named query
(`coevolve/traces/queries.py`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from coevolve.traces.queries import NamedQuery, named_queries, resolve_where
from coevolve.traces.record import TRACE_COLUMNS
from coevolve.utils.fs import PARTIAL, atomic_write

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SHARD = re.compile(r"^step-(\d+)\.parquet$")
INT_COLUMNS = ("step", "policy_version", "rounds")
FLOAT_COLUMNS = ("p_yes",)

__all__ = ["SCHEMA_VERSION", "NamedQuery", "TraceStore", "TraceWriter", "named_queries", "trace_columns"]


def shard_name(step: int) -> str:
    return f"step-{step:06d}.parquet"


def column_type(name: str) -> pa.DataType:
    """The Arrow type of trace column `name` (the rule of the module docstring's schema)."""
    if name in INT_COLUMNS:
        return pa.int64()
    if name == "dropped":
        return pa.bool_()
    if name == "trained_segments":
        return pa.list_(pa.string())
    if name.startswith("reward/") and name.endswith("/details"):
        return pa.string()
    if name in FLOAT_COLUMNS or name.startswith(("reward/", "advantage/", "seconds/")):
        return pa.float64()
    return pa.string()


def _rank(name: str) -> int:
    if name in TRACE_COLUMNS:
        return 0
    if name in ("dropped", "trained_segments"):
        return 2
    if name.startswith("reward/"):
        return 3
    if name.startswith("advantage/"):
        return 4
    if name.startswith("seconds/"):
        return 5
    return 1  # a further segment


def ordered_columns(names: Iterable[str]) -> list[str]:
    """TRACE_COLUMNS, then the other names grouped as in the module docstring (first-seen order within
    a group; a term's raw, normalised and details columns together)."""
    seen = list(dict.fromkeys([*TRACE_COLUMNS, "dropped", "trained_segments", *names]))

    def key(item: tuple[int, str]) -> tuple:
        index, name = item
        if name in TRACE_COLUMNS:
            return (0, TRACE_COLUMNS.index(name))
        if _rank(name) == 3:
            term = name[len("reward/") :].removesuffix("/normalized").removesuffix("/details")
            own = {f"reward/{term}", f"reward/{term}/normalized", f"reward/{term}/details"}
            first = next(i for i, other in enumerate(seen) if other in own)
            return (3, first, 0 if name == f"reward/{term}" else 1 if name.endswith("/normalized") else 2)
        return (_rank(name), index)

    return [name for _, name in sorted(enumerate(seen), key=key)]


def _program_parts(rollout: Mapping) -> tuple[list[str], tuple[str, ...]]:
    """(segment columns, timing phases) of one program's rollout config."""
    from coevolve.rollout.programs import PROGRAMS, description_name, round_names  # torch: only writers get here

    program = rollout.get("program", "introspective_t2i")
    if program not in PROGRAMS:
        raise ValueError(f"traces: unknown rollout program {program!r}; known: {sorted(PROGRAMS)}")
    if program == "reconstruction":
        if not rollout.get("redraw", True):  # the caption alone
            return ["caption", "source_image_path"], PROGRAMS[program].caption_phases
        columns = ["caption", "image_path", "source_image_path"]
    elif program == "self_check":
        columns = ["source_image_path", "description", "verdict"]
    else:
        rounds = int(rollout.get("max_rounds", 2))
        # A describing checkpoint's self-check writes a description before each verdict (null otherwise).
        columns = ["plan", "image_path", "description", "verdict"]
        for round_ in range(2, rounds + 1):
            reflection, image, verdict = round_names(round_)
            columns += [reflection, f"{image}_path"] + ([description_name(verdict), verdict] if round_ < rounds else [])
    return columns, PROGRAMS[program].phases


def trace_columns(programs: Mapping[str, Mapping]) -> list[str]:
    """The column names of a store holding the trajectories of `programs` ({name: {"rollout": {...},
    "reward": {"terms": {term: {"segments": [...]}}}}}, as in `rl.programs`), in schema order."""
    names: list[str] = []
    for program in programs.values():
        segments, phases = _program_parts(program.get("rollout") or {})
        names += segments
        terms = ((program.get("reward") or {}).get("terms")) or {}
        for term in terms:
            names += [f"reward/{term}", f"reward/{term}/normalized", f"reward/{term}/details"]
        names += [f"advantage/{s}" for spec in terms.values() for s in (spec or {}).get("segments", ())]
        names += [f"seconds/{phase}" for phase in phases]
    return ordered_columns(names)


def arrow_schema(columns: Sequence[str]) -> pa.Schema:
    return pa.schema([pa.field(name, column_type(name)) for name in columns])


def _cell(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name.startswith("reward/") and name.endswith("/details"):
        return json.dumps(value)
    if name == "trained_segments":
        return sorted(value)
    return value


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable trace manifest ({error})") from None
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {version!r}; this coevolve reads version {SCHEMA_VERSION}")
    return manifest


def _shards(root: Path) -> dict[int, Path]:
    return {int(m.group(1)): p for p in root.iterdir() if (m := SHARD.match(p.name)) and p.is_file()}


class TraceWriter:
    """Appends steps to the store at `root` (created when absent; see the module docstring).

    `run_config`: the run's resolved config (JSON-serialisable), kept in the manifest.
    `programs`: the programs whose trajectories the store holds ({name: {"rollout", "reward"}}), which
    fix the columns (`trace_columns`); without it an existing store keeps its columns and a new one
    takes them from the first step's rows. A row with a column outside them is an error."""

    def __init__(self, root: str | os.PathLike, run_config: dict | None = None, programs: Mapping | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for stray in self.root.glob(f".*{PARTIAL}*"):  # a killed writer's half-written file
            stray.unlink(missing_ok=True)
        existing = _read_manifest(self.root) if (self.root / MANIFEST).is_file() else None
        columns = trace_columns(programs) if programs else None
        if existing is not None:
            had = [column["name"] for column in existing["columns"]] if existing.get("columns") else None
            if columns is not None and had is not None and had != columns:
                raise ValueError(
                    f"{self.root} holds traces with other columns ({sorted(set(had) ^ set(columns))} differ); "
                    "write this run's traces elsewhere"
                )
            columns = columns or had
        self.columns: list[str] | None = columns
        self.manifest: dict = {
            "schema_version": SCHEMA_VERSION,
            "run_config": run_config,
            "programs": dict(programs) if programs else (existing or {}).get("programs"),
            "columns": None,
            "steps": {},
        }
        self._sync_steps()

    def _sync_steps(self) -> None:
        """The manifest's step index from the shards on disk (a killed writer may have left it one behind)."""
        shards = _shards(self.root)
        self.manifest["steps"] = {
            str(step): {"rows": pq.ParquetFile(path).metadata.num_rows, "file": path.name}
            for step, path in sorted(shards.items())
        }
        self._save_manifest()

    def _save_manifest(self) -> None:
        if self.columns is not None:
            self.manifest["columns"] = [{"name": n, "type": str(column_type(n))} for n in self.columns]
        self.manifest["steps"] = dict(sorted(self.manifest["steps"].items(), key=lambda item: int(item[0])))
        text = json.dumps(self.manifest, indent=1) + "\n"
        atomic_write(self.root / MANIFEST, lambda stream: stream.write(text.encode()))

    def write_step(self, step: int, rows: list[dict]) -> Path:
        """Write (or replace) the shard of `step` holding `rows`; returns its path."""
        if self.columns is None:
            self.columns = ordered_columns(key for row in rows for key in row)
        unknown = sorted({key for row in rows for key in row} - set(self.columns))
        if unknown:
            raise ValueError(f"traces at {self.root}: columns {unknown} are not in the store's schema")
        arrays = []
        for name in self.columns:
            try:
                arrays.append(pa.array([_cell(name, row.get(name)) for row in rows], type=column_type(name)))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as error:
                raise ValueError(
                    f"traces step {step}: column {name!r} holds a value of the wrong type ({error})"
                ) from None
        table = pa.Table.from_arrays(arrays, schema=arrow_schema(self.columns))
        path = self.root / shard_name(step)
        atomic_write(path, lambda stream: pq.write_table(table, stream))
        self.manifest["steps"][str(step)] = {"rows": table.num_rows, "file": path.name}
        self._save_manifest()
        return path

    def discard_after(self, step: int) -> None:
        """Remove the shards of steps after `step` (what a stopped run wrote past its checkpoint)."""
        for later, path in _shards(self.root).items():
            if later > step:
                path.unlink()
        self._sync_steps()


def find_store(path: str | os.PathLike) -> Path:
    """The store at `path`: a store directory, a `coevolve rollout` output (its `traces/`), or a run
    directory (its `rl/traces/`, else its only `rollout/*/traces/`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (give a run directory or a trace store)")
    for candidate in (path, path / "traces", path / "rl" / "traces"):
        if (candidate / MANIFEST).is_file():
            return candidate
    rollouts = sorted(p.parent for p in path.glob(f"rollout/*/traces/{MANIFEST}"))
    if len(rollouts) == 1:
        return rollouts[0]
    if rollouts:
        raise ValueError(f"{path} holds several rollout trace stores; name one: {[str(p) for p in rollouts]}")
    raise FileNotFoundError(
        f"{path} holds no trace store (no {MANIFEST} in it, in traces/, rl/traces/ or rollout/*/traces/)"
    )


class TraceStore:
    """A store opened for reading; see the module docstring."""

    def __init__(self, root: Path, manifest: dict):
        self.root, self.manifest = root, manifest

    @classmethod
    def open(cls, path: str | os.PathLike) -> TraceStore:
        root = find_store(path)
        return cls(root, _read_manifest(root))

    def steps(self) -> list[int]:
        """The completed steps (shards on disk), ascending."""
        return sorted(_shards(self.root))

    def shard_paths(self, steps: Iterable[int] | None = None) -> list[Path]:
        shards = _shards(self.root)
        if steps is None:
            return [shards[step] for step in sorted(shards)]
        missing = [step for step in steps if step not in shards]
        if missing:
            raise ValueError(f"{self.root} has no step {missing[0]} (steps: {_span(sorted(shards))})")
        return [shards[step] for step in steps]

    @property
    def columns(self) -> list[str]:
        columns = self.manifest.get("columns")
        if columns:
            return [column["name"] for column in columns]
        paths = self.shard_paths()
        return pq.read_schema(paths[0]).names if paths else list(TRACE_COLUMNS)

    @property
    def schema(self) -> pa.Schema:
        return arrow_schema(self.columns)

    @property
    def reward_terms(self) -> list[str]:
        return [c[len("reward/") :] for c in self.columns if c.startswith("reward/") and c.count("/") == 1]

    def table(self, steps: Iterable[int] | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """The rows of `steps` (default: every step) as one Arrow table, in step order; only `columns`
        when given."""
        paths = self.shard_paths(steps)
        if not paths:
            empty = self.schema.empty_table()
            return empty.select(list(columns)) if columns is not None else empty
        return pa.concat_tables([pq.read_table(path, columns=columns) for path in paths])

    def frame(self, steps: Iterable[int] | None = None):
        """All rows of `steps` as a pandas DataFrame (columns in schema order)."""
        return self.table(steps).to_pandas()

    def query_table(
        self,
        where: str | None = None,
        named: Sequence[str] = (),
        below: Sequence[str] = (),
        steps: Iterable[int] | None = None,
    ) -> pa.Table:
        """The rows (of `steps`, default all) matching the DuckDB condition `where`, every named query in
        `named` and every "TERM=VALUE" of `below` (coevolve/traces/queries.py), in step order."""
        import duckdb

        paths = self.shard_paths(steps)
        condition = resolve_where(self, where, named, below)
        if not paths:
            return self.schema.empty_table()
        connection = duckdb.connect()
        try:
            relation = connection.read_parquet([str(p) for p in paths])
            if condition:
                relation = relation.filter(condition)
            return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
        except duckdb.Error as error:
            message = " ".join(line.strip() for line in str(error).split("LINE ")[0].splitlines() if line.strip())
            raise ValueError(
                f"the condition {condition!r} is not one DuckDB can apply to {self.root}: {message}"
            ) from None
        finally:
            connection.close()

    def query(self, where: str | None = None, named: Sequence[str] = (), below: Sequence[str] = (), steps=None):
        """`query_table` as a pandas DataFrame."""
        return self.query_table(where, named, below, steps).to_pandas()


def _span(steps: list[int]) -> str:
    if not steps:
        return "none"
    return f"{steps[0]}..{steps[-1]}" if steps == list(range(steps[0], steps[-1] + 1)) else str(steps)
