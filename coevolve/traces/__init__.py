"""Traces (DESIGN.md section 8): one flat record per trajectory, images as PNG files beside it.

`record.trace_row` builds the record; the append-only store, queries and the viewer build on it.
"""

from coevolve.traces.record import TRACE_COLUMNS, trace_row

__all__ = ["TRACE_COLUMNS", "trace_row"]
