"""The run's Parquet table: its schema, one row per input, parts saved during a run, merged at the end."""
from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

from ..engine import Result
from .sources import Item, read_bytes, require_pyarrow
from .stores import Store

#: Default name of the results table in the output folder.
TABLE_FILE = "results.parquet"
#: Rows kept in memory on the driver before they are saved as a table part (resume after a crash).
FLUSH_ROWS = 2000


def table_schema() -> Any:
    """The Parquet schema of the results table (one row per input)."""
    pa = require_pyarrow()
    return pa.schema([
        ("path", pa.string()),  # the input as given (local path or URI)
        ("output", pa.string()),  # stem of its outputs in the output folder
        ("width", pa.int64()), ("height", pa.int64()),  # full resolution
        ("score", pa.float64()),
        ("box", pa.list_(pa.int64())),  # x1, y1, x2, y2 (max exclusive), null when no object
        ("refined", pa.bool_()),
        ("downscaled", pa.bool_()),
        ("notes", pa.list_(pa.string())),
        ("instances", pa.string()),  # JSON list of COCO annotations (bbox, area, score, compressed-RLE segmentation)
        ("error", pa.string()),  # null when the input succeeded
    ])


def instances_json(pred: Any) -> str:
    """The prediction's objects as a JSON list of COCO annotations (bbox, area, score and a
    compressed-RLE segmentation encoded by pycocotools, as ``found segment --coco`` writes them)."""
    from ..io.coco import image_annotations

    anns = image_annotations(pred.instances, 0)
    return json.dumps([{k: a[k] for k in ("bbox", "area", "score", "segmentation")} for a in anns], separators=(",", ":"))


def result_row(item: Item, result: Result | None, error: str | None = None) -> dict:
    """One table row: the input's size, score, box and instances, or its error."""
    row: dict[str, Any] = {"path": item.path, "output": item.stem, "width": None, "height": None, "score": None,
                           "box": None, "refined": None, "downscaled": None, "notes": None, "instances": None, "error": error}
    if result is None:
        return row
    if result.image is not None:
        row["width"], row["height"] = (int(v) for v in result.size)
        row["downscaled"], row["notes"] = result.downscaled, result.notes or None
    if error is None and not result.ok:
        why = str(result.error)
        for prefix in (result.name, item.source, item.path):
            why = why.removeprefix(f"{prefix}: ")
        row["error"] = why
    if row["error"] is None and result.prediction is not None:
        pred = result.prediction
        row["score"], row["refined"] = float(pred.score), bool(pred.refined)
        row["box"] = None if pred.box is None else [int(v) for v in pred.box]
        row["instances"] = instances_json(pred)
    return row


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
                    self.rows[r["path"]] = r
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
                self.rows[r["path"]] = r
            self.pending = []

    def close(self) -> None:
        """Merge everything into the table (temporary name, then rename) and drop the parts."""
        for r in self.pending:
            self.rows[r["path"]] = r
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
    """Rows of a table or part; an unreadable one counts as absent (its inputs are redone)."""
    if not data:
        return []
    import pyarrow.parquet as pq

    try:
        return pq.read_table(io.BytesIO(data)).to_pylist()
    except Exception:
        return []


def read_table(path: str | Path) -> Any:
    """The results table as a pyarrow Table (local path or URI)."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(read_bytes(str(path))))
