"""The driver side: plan the run, stream chunks through a pool of actors, keep their rows in the table."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..engine import DEFAULT_MAX_SIDE
from ..errors import FoundError, OptionsError, one_line
from ..extras import require
from ..io.records import boxes_document
from ..io.sinks import BOXES_FILE, CocoFile
from ..io.sources import path_key
from ..model.instances import InstanceFilter
from ..options import RunOptions
from .actor import RunConfig, SegmentActor
from .sources import Item, collect, is_uri
from .stores import open_store
from .table import TABLE_FILE, ResultsTable, result_row, row_records


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
        """The summary as JSON-ready values (``found segment --report``)."""
        return {"ok": self.ok, "skipped": self.skipped, "failed": [{"input": p, "reason": r} for p, r in self.failures],
                "rows_received": self.rows_received, "table": self.table, "workers": self.workers,
                "seconds": round(self.seconds, 3), "first_row_seconds": self.first_row_seconds}


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, runtime_env: dict | None = None) -> Iterator[Any]:
    """Ray connected for the run: the instance already initialised in this process, a cluster at
    ``address``, or a local instance (``None`` / ``"local"``) started here and shut down after.
    Usage statistics are off and no dashboard is started."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = require("ray", "ray", "running on Ray")
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


def _default_workers(ray: Any, cpus_per_worker: float, gpus_per_worker: float) -> int:
    """As many actors as the cluster's GPUs (or CPUs) allow."""
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
    actor_class: type = SegmentActor, on_rows: Callable[[list[dict]], Any] | None = None,
    instance_filter: InstanceFilter | None = None, coco: str | Path | None = None, boxes: bool = False,
    options: RunOptions | None = None,
) -> RaySummary:
    """Segment ``inputs`` on a Ray cluster (or a local instance) and write what ``found segment``
    writes, plus the Parquet ``table`` (one row per input) in ``outdir`` (a folder or a URI).
    ``instance_filter`` chooses the objects the rows keep; ``coco`` (a local path) and, with
    ``boxes``, ``boxes.json`` in ``outdir`` are then written from the table's rows at the end: the
    same files ``found segment --coco`` / ``--boxes`` write.

    ``model_options`` are :func:`found.build_found` keyword arguments (paths must be readable on every
    node). Inputs whose outputs exist and whose table row is ok are skipped (unless ``overwrite``).
    ``workers`` actors (default: as many as the cluster's CPUs / GPUs allow) each take
    ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs. ``on_rows(rows)`` sees each returned batch.
    ``options`` (a :class:`~found.options.RunOptions`, pickled to every actor; its ``workers`` are the
    decoding threads inside an actor) replaces ``batch_size``, ``mode``, ``refine``, ``max_side``,
    ``edges`` and ``instance_filter``, which otherwise build one.
    """
    kinds = list(kinds)
    if options is None:
        options = RunOptions.from_keywords(instance_filter, mode=mode, refine=refine, batch_size=batch_size,
                                           max_side=max_side, edges=edges, workers=0)
    _check_cluster_options(workers, cpus_per_worker, gpus_per_worker)
    start = time.perf_counter()
    store = open_store(outdir, kinds)
    store.prepare()
    items, failures = collect([str(a) for a in inputs], recursive, store.local_dir)
    store.refuse_overwriting(items, table)
    if boxes:
        store.refuse_overwriting(items, BOXES_FILE)
    coco_file = _coco_file(coco, items)
    results = ResultsTable(store, table, overwrite)
    done = set() if overwrite else store.existing([it.stem for it in items if it.path in results.old_ok])
    todo = [it for it in items if it.stem not in done or it.path not in results.old_ok]
    summary = RaySummary(skipped=len(items) - len(todo), table=store.file(table))
    bad_args = [result_row(Item(a, a, ""), None, why) for a, why in failures]
    results.add(bad_args)
    if todo:
        with ray_session(address, num_cpus, runtime_env) as ray:
            if gpus_per_worker and address in (None, "", "local") and ray.cluster_resources().get("GPU", 0) < gpus_per_worker:
                raise FoundError(f"gpus_per_worker={gpus_per_worker} but the local Ray instance has "
                                 f"{ray.cluster_resources().get('GPU', 0):g} GPUs")
            n_blocks = _n_blocks(len(todo), options.batch_size, chunks_per_task)
            summary.workers = min(n_blocks, workers or _default_workers(ray, cpus_per_worker, gpus_per_worker))
            config = RunConfig(_portable(model_options or {}), store.location, tuple(kinds), options,
                               max(1, int(cpus_per_worker)))
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
    records = row_records(results.rows.values())  # run files: assembled from the rows alone
    if coco_file is not None:
        for record in records:
            coco_file.add(record)
        coco_file.close()
    if boxes:
        listed = coco is not None or options.instance_filter is not None  # as found segment lists objects
        text = json.dumps(boxes_document(records, options.mode, listed), indent=1)
        store.write_file(BOXES_FILE, text.encode("utf-8"))
    _count(summary, results, {it.path for it in todo} | {r["file"] for r in bad_args})
    summary.seconds = time.perf_counter() - start
    return summary


def _check_cluster_options(workers: int | None, cpus_per_worker: float, gpus_per_worker: float) -> None:
    """The Ray-only options: at least one actor, each with some CPU and no negative GPU share."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise OptionsError("workers", f"must be at least 1 with Ray (the number of actors), got {workers!r}")
    if not cpus_per_worker > 0:
        raise OptionsError("cpus_per_worker", f"must be more than 0, got {cpus_per_worker!r}")
    if not gpus_per_worker >= 0:
        raise OptionsError("gpus_per_worker", f"must be 0 or more, got {gpus_per_worker!r}")


def _count(summary: RaySummary, results: ResultsTable, paths: set[str]) -> None:
    """Add this run's rows (those of ``paths``) to the summary: ok, or a failure with its reason."""
    for path, r in results.rows.items():
        if path in paths:
            if r["error"] is None:
                summary.ok += 1
            else:
                summary.failures.append((path, r["error"]))


def _coco_file(coco: str | Path | None, items: list[Item]) -> CocoFile | None:
    """The run's COCO file (a local path, not one of the inputs; pycocotools checked), or None."""
    if coco is None:
        return None
    if is_uri(str(coco)):
        raise FoundError(f"coco={coco}: give a local path (the COCO file is written on the driver)")
    path = Path(coco)
    if path_key(path) in {path_key(Path(it.source)) for it in items if not is_uri(it.source)}:
        raise FoundError(f"coco={coco} is an input; choose another file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FoundError(f"coco={coco}: cannot create its folder ({e.strerror or e})") from None
    return CocoFile(path)  # assembled from the table, which holds every run's rows


def _portable(options: dict) -> dict:
    """Model options with local weight paths made absolute (actors may run in another folder)."""
    out = dict(options)
    for k in ("weights", "head"):
        v = out.get(k)
        if v and not is_uri(str(v)) and Path(v).exists():
            out[k] = str(Path(v).absolute())
    return out


def _n_blocks(n_inputs: int, batch_size: int, chunks_per_task: int) -> int:
    """Ray tasks of the run: ``chunks_per_task`` chunks each (a task is the unit of retry)."""
    n_chunks = -(-n_inputs // batch_size)
    return max(1, -(-n_chunks // max(1, chunks_per_task)))


def _pipeline(ray: Any, todo: list[Item], config: RunConfig, workers: int, cpus: float, gpus: float,
              chunks_per_task: int, actor_class: type) -> Iterator[list[dict]]:
    """Rows of the inputs, as the actors return them (a Ray Data streaming execution)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    with contextlib.suppress(AttributeError):
        ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    B = config.options.batch_size
    chunks = [{"items": json.dumps([[it.path, it.source, it.stem] for it in todo[i:i + B]])} for i in range(0, len(todo), B)]
    blocks = _n_blocks(len(todo), B, chunks_per_task)
    ds = ray.data.from_items(chunks, override_num_blocks=blocks)
    out = ds.map_batches(actor_class, fn_constructor_args=(config,), batch_size=1, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=workers),
                         num_cpus=cpus, num_gpus=gpus or None)
    for batch in out.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield batch.to_pylist()
