"""The run's Parquet table: its schema (the record's keys, docs/records.md), one row per input, parts
saved during a run, merged at the end."""
from __future__ import annotations

import contextlib
import io
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ..io.records import RECORD_KEYS, SCHEMA_VERSION, result_record
from .sources import Item, read_bytes, require_pyarrow

if TYPE_CHECKING:
    from ..engine import Result
from .stores import Store

#: Default name of the results table in the output folder.
TABLE_FILE = "results.parquet"
#: Rows kept in memory on the driver before they are saved as a table part (resume after a crash).
FLUSH_ROWS = 2000


def table_schema() -> Any:
    """The Parquet schema of the results table: one row per input, the record's keys as columns
    (docs/records.md; nested fields kept as Parquet lists and structs under the same names)."""
    pa = require_pyarrow()
    boxes = pa.list_(pa.int64())
    instance = pa.struct([("box_xyxy", boxes), ("box_xywh", boxes), ("area", pa.int64()), ("score", pa.float64()),
                          ("segmentation", pa.struct([("size", boxes), ("counts", pa.string())]))])
    return pa.schema([
        ("schema_version", pa.int64()),
        ("file", pa.string()),  # the input as given (local path or URI)
        ("name", pa.string()),  # how a dataset names it (COCO file_name)
        ("output", pa.string()),  # stem of its outputs in the output folder
        ("width", pa.int64()), ("height", pa.int64()),  # full resolution
        ("score", pa.float64()),
        ("refined", pa.bool_()),
        ("downscaled", pa.bool_()),
        ("box_xyxy", boxes),  # x1, y1, x2, y2 (max exclusive), null when no object
        ("box_xywh", boxes),  # COCO x, y, w, h
        ("processed_size", boxes),  # (w, h) the model saw, when downscaled
        ("notes", pa.list_(pa.string())),
        ("instances", pa.list_(instance)),  # every object, with its compressed-RLE segmentation
        ("error", pa.string()),  # null when the input succeeded
    ], metadata={"found.schema_version": str(SCHEMA_VERSION)})


def result_row(item: Item, result: Result | None, error: str | None = None) -> dict:
    """One table row: the input's record (size, score, boxes, instances with their masks), or its error."""
    row: dict[str, Any] = {name: None for name in table_schema().names}
    row.update(schema_version=SCHEMA_VERSION, file=item.path, name=item.name, output=item.stem, error=error)
    if result is None:
        return row
    if result.image is not None:  # a failed input may still have a size
        row["width"], row["height"] = (int(v) for v in result.size)
        row["downscaled"], row["notes"] = result.downscaled, result.notes
    if error is None and not result.ok:
        why = str(result.error)
        for prefix in (result.name, item.source, item.path):
            why = why.removeprefix(f"{prefix}: ")
        row["error"] = why
    if row["error"] is None and result.prediction is not None:
        row.update(result_record(result, item.path, item.name, instances=True, masks=True))
    return row


def row_records(rows: Iterable[dict]) -> list[dict]:
    """The records of a table's successful rows (table-only columns left out): what run files are assembled from."""
    keep = ("file", "name", *RECORD_KEYS, "instances")
    return [{k: r[k] for k in keep} for r in rows if r.get("error") is None and r.get("width") is not None]


class ResultsTable:
    """The run's Parquet table: rows of earlier runs, parts saved during this run (so a crashed
    driver loses at most :data:`FLUSH_ROWS` rows), merged and written atomically by :meth:`close`."""

    def __init__(self, store: Store, name: str, overwrite: bool = False) -> None:
        self.store, self.name, self.parts_dir = store, name, f"{name}.parts"
        self.rows: dict[str, dict] = {}
        self.pending: list[dict] = []
        if not overwrite:
            for part in [name, *store.list(self.parts_dir)]:
                for r in _read_rows(store.read(part)):
                    self.rows[r["file"]] = r
        self.old_ok = {p for p, r in self.rows.items() if r.get("error") is None}

    def add(self, rows: list[dict]) -> None:
        """Keep ``rows``, saving a part once :data:`FLUSH_ROWS` are pending."""
        self.pending.extend(rows)
        if len(self.pending) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Save the pending rows as a new part."""
        if self.pending:
            name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"  # read back in time order
            self.store.write_file(f"{self.parts_dir}/{name}", _to_parquet(self.pending))
            for r in self.pending:
                self.rows[r["file"]] = r
            self.pending = []

    def close(self) -> None:
        """Merge everything into the table (temporary name, then rename) and drop the parts."""
        for r in self.pending:
            self.rows[r["file"]] = r
        self.pending = []
        self.store.write_file(self.name, _to_parquet([self.rows[k] for k in sorted(self.rows)]))
        with contextlib.suppress(OSError):
            self.store.remove(self.parts_dir)


def _to_parquet(rows: list[dict]) -> bytes:
    """The bytes of a Parquet file of ``rows`` (the table's schema)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=table_schema()), buf)
    return buf.getvalue()


def _read_rows(data: bytes | None) -> list[dict]:
    """Rows of a table or part; an unreadable one, or one of another schema version (before
    version 2), counts as absent (its inputs are redone)."""
    if not data:
        return []
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception:
        return []
    if (table.schema.metadata or {}).get(b"found.schema_version") != str(SCHEMA_VERSION).encode():
        return []
    return table.to_pylist()


def read_table(path: str | Path) -> Any:
    """The results table as a pyarrow Table (local path or URI)."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(read_bytes(str(path))))
