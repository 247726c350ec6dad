"""`coevolve traces ls|show|query|export`: terminal views of a trace store (coevolve/traces/store.py).

Each command takes RUN: a run directory, a `coevolve rollout` output or a store directory
(`TraceStore.open`). `ls` prints one line per step (rows, dropped, the mean of each reward term
over its scored rows: the `PROGRAM/reward/TERM/mean` of metrics.jsonl); `show` one block per
trajectory; `query` the rows matching a DuckDB condition and named queries (queries.py); `export`
those rows as jsonl, parquet or csv. Errors (an unknown path, step, group, term or query, a
condition DuckDB rejects) are ValueError/FileNotFoundError naming what was wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from coevolve.traces.store import TraceStore
from coevolve.utils.fs import atomic_write

FORMATS = ("jsonl", "parquet", "csv")
WIDTH = 100


def term_programs(store: TraceStore) -> dict[str, str]:
    """Reward term -> the config name of the program it belongs to (as the metric names use it)."""
    out = {}
    for name, program in (store.manifest.get("programs") or {}).items():
        for term in ((program or {}).get("reward") or {}).get("terms") or {}:
            out.setdefault(term, name)
    return out


def ls(store: TraceStore) -> str:
    terms = store.reward_terms
    table = store.table(columns=["step", "dropped", *(f"reward/{t}" for t in terms)])
    frame = table.to_pandas()
    lines = [
        f"{store.root}  schema {store.manifest.get('schema_version')}, {len(store.steps())} steps, {len(frame)} rows"
    ]
    if frame.empty:
        return "\n".join(lines)
    programs = term_programs(store)
    lines.append("reward means per step over scored rows (metrics.jsonl: " + ", ".join(
        f"{programs[t]}/reward/{t}/mean" if t in programs else f"reward/{t}" for t in terms) + ")")  # fmt: skip
    grouped = frame.groupby("step", sort=True)
    summary = grouped.agg(rows=("step", "size"), dropped=("dropped", lambda s: int(s.fillna(False).sum())))
    for term in terms:
        summary[term] = grouped[f"reward/{term}"].mean()
    lines.append(summary.reset_index().to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    return "\n".join(lines)


def _short(value, limit: int = WIDTH) -> str:
    text = str(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show(store: TraceStore, step: int, group: str | None = None, trajectory_id: str | None = None) -> str:
    rows = store.table([step]).to_pylist()
    if group is not None:
        groups = sorted({row["group"] for row in rows})
        rows = [row for row in rows if row["group"] == group]
        if not rows:
            raise ValueError(f"step {step} of {store.root} has no group {group!r} (groups: {groups})")
    if trajectory_id is not None:
        rows = [row for row in rows if row["id"] == trajectory_id]
        if not rows:
            raise ValueError(f"step {step} of {store.root} has no trajectory {trajectory_id!r}" +
                             (f" in group {group!r}" if group else ""))  # fmt: skip
    return "\n\n".join(_block(store, row) for row in rows)


def _block(store: TraceStore, row: dict) -> str:
    head = (f"── {row['id']}  step {row['step']}  group {row['group']}  {row['program']}  "
            f"policy version {row['policy_version']}")  # fmt: skip
    lines = [head, f"  prompt:       {row['prompt']}"]
    skip = {"run", "step", "group", "id", "program", "prompt", "policy_version", "dropped", "trained_segments"}
    for name, value in row.items():
        if value is None or name in skip or name.startswith(("reward/", "advantage/", "seconds/")):
            continue
        if name.endswith("_path"):
            value = store.root / value
        elif isinstance(value, str):
            value = value.strip()  # a text segment starts with the space that follows "<|Assistant|>:"
        elif name == "p_yes":
            value = f"{value:.3f}"
        lines.append(f"  {name + ':':<13} {value}")
    rewards = [f"{t} {row[f'reward/{t}']:.3f} ({row[f'reward/{t}/normalized']:+.2f})"
               for t in store.reward_terms if row.get(f"reward/{t}") is not None]  # fmt: skip
    lines.append(
        "  rewards:      " + ("  ".join(rewards) if rewards else "none (dropped)" if row.get("dropped") else "none")
    )
    advantages = [
        f"{c[len('advantage/') :]} {v:+.3f}" for c, v in row.items() if c.startswith("advantage/") and v is not None
    ]
    if advantages:
        lines.append("  advantages:   " + "  ".join(advantages))
    if row.get("trained_segments") is not None:
        lines.append("  trained:      " + (", ".join(row["trained_segments"]) or "nothing"))
    return "\n".join(lines)


def query(store: TraceStore, where=None, named=(), below=(), steps=None, columns=None, limit: int = 20) -> str:
    table = store.query_table(where, named, below, steps)
    lines = [
        f"{table.num_rows} of {sum(pq.ParquetFile(p).metadata.num_rows for p in store.shard_paths(steps))} rows match"
    ]
    if table.num_rows == 0:
        return lines[0]
    if columns is None:
        columns = ["step", "id", "prompt", "verdict", *(f"reward/{t}" for t in store.reward_terms)]
        columns = [c for c in columns if c in table.column_names]
    else:
        unknown = [c for c in columns if c not in table.column_names]
        if unknown:
            raise ValueError(f"--columns: no column {unknown[0]!r} in {store.root}")
    frame = table.select(columns).slice(0, limit).to_pandas()
    for name in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[name]):
            frame[name] = frame[name].map(lambda v: None if v is None else _short(str(v).strip(), 40))
    lines.append(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    if table.num_rows > limit:
        lines.append(f"... {table.num_rows - limit} more (--limit N, or `coevolve traces export`)")
    return "\n".join(lines)


def _json_rows(table: pa.Table) -> list[dict]:
    rows = table.to_pylist()
    details = [c for c in table.column_names if c.startswith("reward/") and c.endswith("/details")]
    for row in rows:
        for column in details:
            if row[column] is not None:
                row[column] = json.loads(row[column])
    return rows


def export(store: TraceStore, out: str | Path, fmt: str, where=None, named=(), below=(), steps=None) -> int:
    """Write the matching rows to `out` as `fmt` (jsonl: details as objects; csv: lists as JSON); returns the count."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}")
    filtered = where or named or below
    table = store.query_table(where, named, below, steps) if filtered else store.table(steps)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        atomic_write(out, lambda stream: pq.write_table(table, stream))
    elif fmt == "jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in _json_rows(table))
        atomic_write(out, lambda stream: stream.write(text.encode()))
    else:
        frame = table.to_pandas()
        if "trained_segments" in frame:
            frame["trained_segments"] = frame["trained_segments"].map(
                lambda v: None if v is None else json.dumps(list(v))
            )
        atomic_write(out, lambda stream: stream.write(frame.to_csv(index=False).encode()))
    return table.num_rows
