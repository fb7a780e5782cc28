"""``found segment`` over many machines: the engine inside a Ray Data pipeline.

    inputs (folders, globs, .txt/.csv/.parquet lists of paths or URIs)
      → plan on the driver (skip inputs whose outputs and table row exist)
      → chunks of ``batch_size`` inputs, the same chunks ``found segment`` forms
      → a pool of actors (:class:`SegmentActor`), each building the model ONCE and running
        :class:`found.engine.Engine` on one chunk at a time, writing outputs atomically
      → rows streamed back to the driver, saved in parts as they come, merged at the end into one
        Parquet table (one row per input: path, size, score, box, instances, error).

Why chunks and not rows: the model's batches are formed inside a chunk, so a chunk decides the
floating-point rounding of its predictions. Sending ``found segment``'s own chunks makes the outputs
byte-identical to a single-machine run, whatever the number of workers, block sizes or retries.

Fault tolerance: actors are restarted and their tasks retried by Ray (``max_restarts`` /
``max_task_retries``); a retried chunk rewrites the same files (atomic renames, identical bytes) and
its rows replace the lost task's (Ray keeps only a finished task's output; the table is keyed by
path). A bad input is a row with its error. Ray and pyarrow are imported only here (``found[ray]``).
"""
from __future__ import annotations

import contextlib
import csv
import fnmatch
import io
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .engine import DEFAULT_MAX_SIDE, Engine, Result
from .errors import FoundError, one_line
from .extras import require
from .io.images import IMAGE_SUFFIXES
from .io.sources import collect_inputs, path_key
from .io.sinks import OUTPUT_SUFFIXES, ImageOutputs

#: Default name of the results table in the output folder.
TABLE_FILE = "results.parquet"
#: Input arguments read as lists of paths or URIs (one per line / a ``path`` column).
LIST_SUFFIXES = (".txt", ".csv", ".parquet")
#: Rows kept in memory on the driver before they are saved as a table part (resume after a crash).
FLUSH_ROWS = 2000


def _pa():
    """pyarrow, or a one-line error naming the extra."""
    pyarrow = require("pyarrow", "ray", "the Ray path")
    for name in ("pyarrow.fs", "pyarrow.parquet"):
        require(name, "ray", "the Ray path")
    return pyarrow


def table_schema():
    """The Parquet schema of the results table (one row per input)."""
    pa = _pa()
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


# ---------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Item:
    """One input: ``path`` as given (row key), ``source`` as a worker reads it, ``stem`` of its outputs."""

    path: str
    source: str
    stem: str


def is_uri(s: str) -> bool:
    """``scheme://…`` (s3://, gs://, file://, …); plain paths and Windows drives are not."""
    head, sep, _ = s.partition("://")
    return bool(sep) and len(head) > 1 and head.replace("+", "").replace("-", "").isalnum()


def _fs(uri: str):
    """``(filesystem, path)`` of a URI; a bad one is a FoundError."""
    _pa()
    from pyarrow import fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:  # ArrowInvalid, ArrowNotImplementedError, …
        raise FoundError(f"{uri}: not a usable URI ({one_line(e)})") from None


def _uri_of(uri: str, path: str) -> str:
    """The URI of ``path`` on the filesystem of ``uri`` (same scheme)."""
    scheme = uri[: uri.index("://") + 3]
    return scheme + (path if scheme != "file://" or path.startswith("/") else "/" + path)


def read_bytes(source: str) -> bytes:
    """The bytes of a local path or URI (an OSError / FoundError on failure)."""
    if not is_uri(source):
        return Path(source).read_bytes()
    fs, p = _fs(source)
    with fs.open_input_stream(p) as f:
        return f.read()


def read_list(arg: str) -> list[str]:
    """Paths or URIs listed in a .txt (one per line, # comments), .csv or .parquet (a ``path`` column)."""
    suffix = Path(arg.split("?")[0]).suffix.lower()
    try:
        data = read_bytes(arg)
    except (OSError, FoundError) as e:
        raise FoundError(f"{arg}: cannot read the input list ({one_line(e)})") from None
    if suffix == ".txt":
        lines = (ln.strip() for ln in data.decode("utf-8-sig").splitlines())
        entries = [ln for ln in lines if ln and not ln.startswith("#")]
    elif suffix == ".csv":
        rows = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
        if "path" not in (rows.fieldnames or []):
            raise FoundError(f"{arg}: no 'path' column in this CSV list")
        entries = [r["path"].strip() for r in rows if (r.get("path") or "").strip()]
    else:
        import pyarrow.parquet as pq

        try:
            t = pq.read_table(io.BytesIO(data))
        except Exception as e:
            raise FoundError(f"{arg}: not a readable Parquet list ({one_line(e)})") from None
        if "path" not in t.column_names:
            raise FoundError(f"{arg}: no 'path' column in this Parquet list")
        entries = [str(p).strip() for p in t.column("path").to_pylist() if p is not None and str(p).strip()]
    if is_uri(arg):
        return entries
    base = Path(arg).parent  # relative entries are relative to the list's folder
    return [e if is_uri(e) or Path(e).is_absolute() else str(base / e) for e in entries]


def _uri_files(uri: str, recursive: bool) -> list[tuple[str, str]]:
    """``(uri, stem)`` of the image(s) a URI names: a file, a folder (prefix) or a glob pattern."""
    from pyarrow import fs as pafs

    fs, p = _fs(uri)
    wild = next((i for i, ch in enumerate(p) if ch in "*?["), None)
    if wild is None:
        info = fs.get_file_info(p)
        if info.type == pafs.FileType.File:
            return [(uri, Path(p).stem)]
        if info.type != pafs.FileType.Directory:
            raise FoundError(f"{uri}: no such file or folder")
        base, pattern = p.rstrip("/"), None
    else:
        base, pattern = p[:wild].rsplit("/", 1)[0], p
    sel = pafs.FileSelector(base, recursive=recursive or (pattern is not None and "**" in pattern), allow_not_found=True)
    out = []
    for f in sorted(fs.get_file_info(sel), key=lambda f: f.path):
        name = f.base_name
        if f.type != pafs.FileType.File or name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if pattern is not None and not fnmatch.fnmatchcase(f.path, pattern.replace("**/", "*")):
            continue
        rel = f.path[len(base):].lstrip("/") if pattern is None else name
        out.append((_uri_of(uri, f.path), str(Path(rel).with_suffix(""))))
    if not out:
        raise FoundError(f"{uri}: no images found" + (" (add -r for sub-folders)" if pattern is None and not recursive else ""))
    return out


def collect(inputs: Iterable[str], recursive: bool = False, outdir: Path | None = None) -> tuple[list[Item], list[tuple[str, str]]]:
    """Items for a run and the unusable arguments (``(arg, why)``).

    Local files, folders and globs are collected by :func:`found.io.sources.collect_inputs` (the same
    inputs, order and output names as ``found segment``); lists and URIs are added after them.
    Listed entries are not checked here (a missing one becomes an error row), so a list of
    millions of URIs costs no request on the driver.
    """
    inputs = list(inputs)
    local = [a for a in inputs if not is_uri(a) and not a.lower().endswith(LIST_SUFFIXES)]
    jobs, failures = collect_inputs(local, recursive, outdir) if local else ([], [])
    items = [Item(str(j.path), str(j.path.absolute()), str(j.rel)) for j in jobs]
    seen = {path_key(j.path) for j in jobs}
    stems: dict[str, int] = {}
    for it in items:
        stems[it.stem] = 1
    extra: list[tuple[str, str]] = []
    for arg in inputs:
        if arg in local:
            continue
        try:
            if arg.lower().split("?")[0].endswith(LIST_SUFFIXES):
                extra.extend((e, Path(e.split("?")[0]).stem) for e in read_list(arg))
            else:
                extra.extend(_uri_files(arg, recursive))
        except FoundError as e:
            failures.append((arg, one_line(e).removeprefix(f"{arg}: ")))
    for path, stem in extra:
        key = path if is_uri(path) else path_key(Path(path))
        if key in seen:
            continue
        seen.add(key)
        n = stems.get(stem, 0)
        stems[stem] = n + 1
        items.append(Item(path, path if is_uri(path) else str(Path(path).absolute()), stem if not n else f"{stem}_{n}"))
    return items, failures


# ---------------------------------------------------------------------------- where outputs go
class LocalStore:
    """Outputs in a local folder: :class:`ImageOutputs` (atomic groups) and the table beside them."""

    def __init__(self, outdir: str | Path, kinds: list[str]) -> None:
        self.outdir = Path(outdir)
        self.images = ImageOutputs(self.outdir, kinds)

    def prepare(self) -> None:
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FoundError(f"output folder {self.outdir} is not usable: {e.strerror or e}") from None
        if not self.outdir.is_dir():
            raise FoundError(f"output {self.outdir} exists and is not a folder")

    def existing(self, stems: list[str]) -> set[str]:
        return {s for s in stems if self.images.exist(s)}

    def write(self, result: Result, stem: str) -> None:
        self.images.write(result, stem)

    def file(self, name: str) -> str:
        return str(self.outdir / name)

    def read(self, name: str) -> bytes | None:
        p = self.outdir / name
        return p.read_bytes() if p.is_file() else None

    def write_file(self, name: str, data: bytes) -> None:
        from .io.files import atomic_write_bytes

        (self.outdir / name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.outdir / name, data)

    def list(self, folder: str) -> list[str]:
        d = self.outdir / folder
        return sorted(f"{folder}/{p.name}" for p in d.iterdir() if p.suffix == ".parquet") if d.is_dir() else []

    def remove(self, name: str) -> None:
        p = self.outdir / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


class UriStore(LocalStore):
    """Outputs under a URI (``s3://bucket/run``, ``file:///…``): each input's PNGs are made in a local
    temporary folder by :class:`ImageOutputs`, then uploaded, each file under its final name (an
    object store shows an object whole or not at all; a local file system gets a rename)."""

    def __init__(self, uri: str, kinds: list[str]) -> None:
        self.uri, self.kinds = uri.rstrip("/"), list(kinds)
        self.fs, self.base = _fs(self.uri)
        self.images = ImageOutputs(Path("."), kinds)  # for the output names only

    def prepare(self) -> None:
        try:
            self.fs.create_dir(self.base, recursive=True)
        except OSError as e:
            raise FoundError(f"output {self.uri} is not usable: {one_line(e)}") from None

    def _key(self, name: str) -> str:
        return f"{self.base}/{name}"

    def existing(self, stems: list[str]) -> set[str]:
        from pyarrow import fs as pafs

        files = {f.path for f in self.fs.get_file_info(pafs.FileSelector(self.base, recursive=True, allow_not_found=True))}
        return {s for s in stems if all(self._key(str(p)) in files for p in self.images.paths(s))}

    def write(self, result: Result, stem: str) -> None:
        with tempfile.TemporaryDirectory(prefix="found-out-") as tmp:
            ImageOutputs(Path(tmp), self.kinds).write(result, stem)
            for p in ImageOutputs(Path(tmp), self.kinds).paths(stem):
                self.write_file(str(p.relative_to(tmp)), p.read_bytes())

    def file(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def read(self, name: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(self._key(name)) as f:
                return f.read()
        except (FileNotFoundError, OSError):
            return None

    def write_file(self, name: str, data: bytes) -> None:
        key = self._key(name)
        self.fs.create_dir(key.rsplit("/", 1)[0], recursive=True)
        local = self.fs.type_name == "local"
        tmp = f"{key}.{uuid.uuid4().hex[:8]}.part" if local else key
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        if local:
            self.fs.move(tmp, key)

    def list(self, folder: str) -> list[str]:
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self._key(folder), allow_not_found=True))
        return sorted(f"{folder}/{f.base_name}" for f in infos if f.base_name.endswith(".parquet"))

    def remove(self, name: str) -> None:
        from pyarrow import fs as pafs

        info = self.fs.get_file_info(self._key(name))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self._key(name))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self._key(name))


def open_store(outdir: str | Path, kinds: list[str]) -> LocalStore:
    """The output location: a local folder, or any URI pyarrow knows (s3://, gs://, hdfs://, file://)."""
    return UriStore(str(outdir), kinds) if is_uri(str(outdir)) else LocalStore(Path(outdir).absolute(), kinds)


# ---------------------------------------------------------------------------- rows
def _instances_json(pred) -> str:
    """The prediction's objects as a JSON list of COCO annotations (bbox, area, score and a
    compressed-RLE segmentation encoded by pycocotools, as ``found segment --coco`` writes them)."""
    from .io.coco import image_annotations

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
        row["instances"] = _instances_json(pred)
    return row


# ---------------------------------------------------------------------------- the actor
@dataclass(frozen=True)
class RunConfig:
    """What every actor needs (pickled once per actor): model options and engine / output settings."""

    model_options: dict
    outdir: str
    kinds: tuple[str, ...] = ("mask",)
    mode: str = "multi"
    refine: bool = False
    batch_size: int = 8
    max_side: int | None = DEFAULT_MAX_SIDE
    threads: int = 1  # torch threads per actor (its CPUs)
    decode_workers: int = 0  # engine decoding threads inside an actor
    edges: str = "guided"  # how cut-outs of reduced images reach full size (found.engine.EDGES)


class SegmentActor:
    """A Ray Data callable class: the model is built once per actor; each call runs the engine on
    chunks of inputs, writes their outputs and returns their rows (a pyarrow Table).

    Subclass it (``segment_with_ray(actor_class=…)``) to add columns or hooks; keep :meth:`write`
    atomic so a retried chunk never leaves half an output.
    """

    def __init__(self, config: RunConfig) -> None:
        import torch

        from .hub.build import build_found

        torch.set_num_threads(max(1, config.threads))
        self.config = config
        model = build_found(**{**config.model_options, "progress": False})
        self.engine = Engine(model, mode=config.mode, refine=config.refine, batch_size=config.batch_size,
                             workers=config.decode_workers, max_side=config.max_side, edges=config.edges)
        self.store = open_store(config.outdir, list(config.kinds))

    def __call__(self, batch: dict) -> Any:
        import pyarrow as pa

        rows: list[dict] = []
        for chunk in batch["items"]:
            rows.extend(self.segment([Item(*x) for x in json.loads(str(chunk))]))
        return pa.Table.from_pylist(rows, schema=table_schema())

    def segment(self, items: list[Item]) -> list[dict]:
        """Rows of one chunk (at most ``batch_size`` inputs: one engine chunk, as ``found segment`` forms it)."""
        sources: list[Any] = []
        read_errors: dict[int, str] = {}
        for i, it in enumerate(items):
            if is_uri(it.source):
                try:
                    sources.append(read_bytes(it.source))
                except (OSError, FoundError) as e:
                    read_errors[i] = f"cannot read ({one_line(e)})"
            else:
                sources.append(it.source)
        results = iter(self.engine.run(sources))
        rows = []
        for i, it in enumerate(items):
            if i in read_errors:
                rows.append(result_row(it, None, read_errors[i]))
                continue
            result = next(results)
            error = None
            if result.ok:
                try:
                    self.write(result, it.stem)
                except OSError as e:
                    error = f"cannot write outputs: {e.strerror or one_line(e)} (nothing written for this image)"
            rows.append(result_row(it, result, error))
        return rows

    def write(self, result: Result, stem: str) -> None:
        """All outputs of one input, atomically (a rerun of the chunk writes the same bytes)."""
        self.store.write(result, stem)


# ---------------------------------------------------------------------------- the table
class ResultsTable:
    """The run's Parquet table: rows of earlier runs, parts saved during this run (so a crashed
    driver loses at most :data:`FLUSH_ROWS` rows), merged and written atomically by :meth:`close`."""

    def __init__(self, store: LocalStore, name: str, overwrite: bool = False) -> None:
        self.store, self.name, self.parts_dir = store, name, f"{name}.parts"
        self.rows: dict[str, dict] = {}
        self.pending: list[dict] = []
        if not overwrite:
            for part in [name, *store.list(self.parts_dir)]:
                for r in _read_rows(store.read(part)):
                    self.rows[r["path"]] = r
        self.old_ok = {p for p, r in self.rows.items() if r.get("error") is None}

    def add(self, rows: list[dict]) -> None:
        self.pending.extend(rows)
        if len(self.pending) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
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


def read_table(path: str | Path):
    """The results table as a pyarrow Table (local path or URI)."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(read_bytes(str(path))))


# ---------------------------------------------------------------------------- the run
@dataclass
class RaySummary:
    """What a run did: counts, failures (input, reason), the table's location and timings."""

    ok: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    rows_received: int = 0  # rows the pipeline returned (one per input processed: no duplicates)
    table: str = ""
    workers: int = 0
    seconds: float = 0.0
    first_row_seconds: float | None = None  # from submitting the pipeline to the first row (startup)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "skipped": self.skipped, "failed": [{"input": p, "reason": r} for p, r in self.failures],
                "rows_received": self.rows_received, "table": self.table, "workers": self.workers,
                "seconds": round(self.seconds, 3), "first_row_seconds": self.first_row_seconds}


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, runtime_env: dict | None = None) -> Iterator[Any]:
    """Ray connected for the run: the instance already initialised in this process, a cluster at
    ``address``, or a local instance (``None`` / ``"local"``) started here and shut down after.
    Usage statistics are off and no dashboard is started."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = require("ray", "ray", "--ray")
    if ray.is_initialized():
        yield ray
        return
    opts: dict[str, Any] = {"include_dashboard": False, "configure_logging": False, "log_to_driver": False}
    if runtime_env:
        opts["runtime_env"] = runtime_env
    if address in (None, "", "local"):
        opts["num_cpus"] = num_cpus
    else:
        opts["address"] = address
    try:
        ray.init(**opts)
    except Exception as e:
        raise FoundError(f"cannot start or reach Ray at {address or 'local'}: {one_line(e)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _default_workers(ray, cpus_per_worker: float, gpus_per_worker: float) -> int:
    res = ray.cluster_resources()
    if gpus_per_worker:
        return max(1, int(res.get("GPU", 0) // gpus_per_worker))
    return max(1, int(res.get("CPU", 1) // max(cpus_per_worker, 1e-9)))


def segment_with_ray(
    inputs: Iterable[str], outdir: str | Path, model_options: dict | None = None, *,
    address: str | None = None, workers: int | None = None, cpus_per_worker: float = 1, gpus_per_worker: float = 0,
    batch_size: int = 8, kinds: Iterable[str] = ("mask",), mode: str = "multi", refine: bool = False,
    max_side: int | None = DEFAULT_MAX_SIDE, edges: str = "guided", recursive: bool = False, overwrite: bool = False,
    table: str = TABLE_FILE, chunks_per_task: int = 4, num_cpus: int | None = None, runtime_env: dict | None = None,
    actor_class: type = SegmentActor, on_rows=None,
) -> RaySummary:
    """Segment ``inputs`` on a Ray cluster (or a local instance) and write what ``found segment``
    writes, plus the Parquet ``table`` (one row per input) in ``outdir`` (a folder or a URI).

    ``model_options`` are :func:`found.build_found` keyword arguments (paths must be readable on every
    node). Inputs whose outputs exist and whose table row is ok are skipped (unless ``overwrite``).
    ``workers`` actors (default: as many as the cluster's CPUs / GPUs allow) each take
    ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs. ``on_rows(rows)`` sees each returned batch.
    """
    kinds = list(kinds)
    if batch_size < 1:
        raise FoundError("batch_size must be at least 1")
    if workers is not None and workers < 1:
        raise FoundError("workers must be at least 1 with Ray (actors)")
    start = time.perf_counter()
    store = open_store(outdir, kinds)
    store.prepare()
    items, failures = collect([str(a) for a in inputs], recursive, None if isinstance(store, UriStore) else store.outdir)
    _refuse_overwriting_inputs(items, store, table)
    results = ResultsTable(store, table, overwrite)
    done = set() if overwrite else store.existing([it.stem for it in items if it.path in results.old_ok])
    todo = [it for it in items if it.stem not in done or it.path not in results.old_ok]
    summary = RaySummary(skipped=len(items) - len(todo), table=store.file(table))
    bad_args = [{**result_row(Item(a, a, ""), None, why)} for a, why in failures]
    results.add(bad_args)
    if todo:
        with ray_session(address, num_cpus, runtime_env) as ray:
            if gpus_per_worker and address in (None, "", "local") and ray.cluster_resources().get("GPU", 0) < gpus_per_worker:
                raise FoundError(f"gpus_per_worker={gpus_per_worker} but the local Ray instance has "
                                 f"{ray.cluster_resources().get('GPU', 0):g} GPUs")
            n_blocks = _n_blocks(len(todo), batch_size, chunks_per_task)
            summary.workers = min(n_blocks, workers or _default_workers(ray, cpus_per_worker, gpus_per_worker))
            config = RunConfig(_portable(model_options or {}), str(outdir if is_uri(str(outdir)) else store.outdir),
                               tuple(kinds), mode, refine, batch_size, max_side or None, max(1, int(cpus_per_worker)),
                               edges=edges)
            try:
                for rows in _pipeline(ray, todo, config, summary.workers, cpus_per_worker, gpus_per_worker,
                                      chunks_per_task, actor_class):
                    if summary.first_row_seconds is None:
                        summary.first_row_seconds = round(time.perf_counter() - start, 3)
                    summary.rows_received += len(rows)
                    results.add(rows)
                    if on_rows is not None:
                        on_rows(rows)
            except BaseException:  # Ctrl-C, a lost cluster: keep the rows received (a rerun resumes from them)
                with contextlib.suppress(Exception):
                    results.flush()
                raise
    results.close()
    new = {r["path"]: r for r in bad_args}
    todo_paths = {it.path for it in todo}
    for path, r in results.rows.items():
        if path in todo_paths or path in new:
            if r["error"] is None:
                summary.ok += 1
            else:
                summary.failures.append((path, r["error"]))
    summary.seconds = time.perf_counter() - start
    return summary


def _portable(options: dict) -> dict:
    """Model options with local weight paths made absolute (actors may run in another folder)."""
    out = dict(options)
    for k in ("weights", "head"):
        v = out.get(k)
        if v and not is_uri(str(v)) and Path(v).exists():
            out[k] = str(Path(v).absolute())
    return out


def _refuse_overwriting_inputs(items: list[Item], store: LocalStore, table: str) -> None:
    if isinstance(store, UriStore):
        return
    inputs = {path_key(Path(it.source)) for it in items if not is_uri(it.source)}
    if path_key(store.outdir / table) in inputs:
        raise FoundError(f"{store.outdir / table} is an input; choose another output folder")
    for it in items:
        for out in store.images.paths(it.stem):
            if path_key(out) in inputs:
                raise FoundError(f"output {out} would overwrite an input; choose another output folder")


def _n_blocks(n_inputs: int, batch_size: int, chunks_per_task: int) -> int:
    """Ray tasks of the run: ``chunks_per_task`` chunks each (a task is the unit of retry)."""
    n_chunks = -(-n_inputs // batch_size)
    return max(1, -(-n_chunks // max(1, chunks_per_task)))


def _pipeline(ray, todo: list[Item], config: RunConfig, workers: int, cpus: float, gpus: float,
              chunks_per_task: int, actor_class: type) -> Iterator[list[dict]]:
    """Rows of the inputs, as the actors return them (a Ray Data streaming execution)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    with contextlib.suppress(AttributeError):
        ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    B = config.batch_size
    chunks = [{"items": json.dumps([[it.path, it.source, it.stem] for it in todo[i:i + B]])} for i in range(0, len(todo), B)]
    blocks = _n_blocks(len(todo), B, chunks_per_task)
    ds = ray.data.from_items(chunks, override_num_blocks=blocks)
    out = ds.map_batches(actor_class, fn_constructor_args=(config,), batch_size=1, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=workers),
                         num_cpus=cpus, num_gpus=gpus or None)
    for batch in out.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield batch.to_pylist()
