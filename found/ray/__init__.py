"""``found segment`` over many machines: the engine inside a Ray Data pipeline.

    inputs (folders, globs, .txt/.csv/.parquet lists of paths or URIs)
      → plan on the driver (skip inputs whose outputs and table row exist)
      → chunks of ``batch_size`` inputs, the same chunks ``found segment`` forms
      → a pool of actors (:class:`SegmentActor`), each building the model ONCE and running
        :class:`found.engine.Engine` on one chunk at a time, writing outputs atomically
      → rows streamed back to the driver, saved in parts as they come, merged at the end into one
        Parquet table (one row per input: its record, docs/records.md, or its error).

Why chunks and not rows: the model's batches are formed inside a chunk, so a chunk decides the
floating-point rounding of its predictions. Sending ``found segment``'s own chunks makes the outputs
byte-identical to a single-machine run, whatever the number of workers, block sizes or retries.

Fault tolerance: actors are restarted and their tasks retried by Ray (``max_restarts`` /
``max_task_retries``); a retried chunk rewrites the same files (atomic renames, identical bytes) and
its rows replace the lost task's (Ray keeps only a finished task's output; the table is keyed by
file). A bad input is a row with its error. Ray and pyarrow are imported only inside this package,
on first use (``found[ray]``).

Modules, in the order of the data flow: :mod:`.sources` (inputs, URIs, lists), :mod:`.stores` (where
outputs go), :mod:`.table` (the Parquet table), :mod:`.actor` (the worker side), :mod:`.driver` (the run).
"""
from .actor import RunConfig, SegmentActor
from .driver import RaySummary, ray_session, segment_with_ray
from .sources import LIST_SUFFIXES, Item, collect, filesystem, is_uri, read_bytes, read_list, require_pyarrow
from .stores import LocalStore, Store, UriStore, open_store
from .table import FLUSH_ROWS, TABLE_FILE, ResultsTable, read_table, result_row, row_records, table_schema

__all__ = [
    "FLUSH_ROWS",
    "Item",
    "LIST_SUFFIXES",
    "LocalStore",
    "RaySummary",
    "ResultsTable",
    "RunConfig",
    "SegmentActor",
    "Store",
    "TABLE_FILE",
    "UriStore",
    "collect",
    "filesystem",
    "is_uri",
    "open_store",
    "ray_session",
    "read_bytes",
    "read_list",
    "read_table",
    "require_pyarrow",
    "result_row",
    "row_records",
    "segment_with_ray",
    "table_schema",
]
