"""Traces (DESIGN.md section 8): one flat record per trajectory, in an append-only Parquet store.

`record.trace_row` builds the record (images as PNG files); `store` writes steps as Parquet shards
(`TraceWriter`) and reads them back (`TraceStore`: pandas, Arrow, DuckDB queries); `queries` holds
the named filters; `commands` the terminal views of `coevolve traces`.
"""

from coevolve.traces.record import TRACE_COLUMNS, trace_row
from coevolve.traces.store import SCHEMA_VERSION, TraceStore, TraceWriter, named_queries

__all__ = ["SCHEMA_VERSION", "TRACE_COLUMNS", "TraceStore", "TraceWriter", "named_queries", "trace_row"]
