"""Sinks: the engine's results to files, each output an atomic sink.

* :class:`ImageOutputs` — per-input PNGs (mask, soft mask, RGBA cut-out, overlay) drawn by
  :mod:`found.io.render`; all of an input's outputs appear together or not at all (temporary
  names, then renames);
* :class:`RunFile` subclasses — one file for the run (``boxes.json``, the COCO pseudo-labels),
  assembled from records (:mod:`found.io.records`), kept consistent with what is on disk across
  reruns and written atomically at the end; :class:`RunOutputs` writes an input and returns its record;
* :class:`OrderedWriter` — the one ordered background writer; :class:`ResultWriter` /
  :func:`write_results` write results behind the model on it and hand back outcomes (with each
  input's record) in input order, stopping cleanly after a fatal write error (disk full).

Data flows one way: results in, files and outcomes out. Nothing here calls the model, calls back
into its caller, or knows about the command line.
"""
from __future__ import annotations

import contextlib
import json
import threading
import warnings
from collections import deque
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ..errors import describe
from .files import FATAL_WRITE_ERRNOS, atomic_group, atomic_write_text
from .records import boxes_document, result_record
from .render import render_result

if TYPE_CHECKING:  # io never imports the engine at run time
    from ..engine import Result
    from .journal import Journal

#: Per-input outputs and the suffix each adds to the input's stem.
OUTPUT_SUFFIXES = {
    "mask": "_mask.png",
    "soft": "_soft.png",
    "cutout": "_cutout.png",
    "overlay": "_overlay.png",
}
BOXES_FILE = "boxes.json"
#: Cut-out codecs with a real alpha channel: name → (container format, file suffix, codec, pixel format, options).
ALPHA_CODECS = {
    "vp9": ("webm", ".webm", "libvpx-vp9", "yuva420p", {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0"}),
    "prores": ("mov", ".mov", "prores_ks", "yuva444p10le", {"profile": "4"}),  # ProRes 4444
}
#: Per-video outputs (found.video) and the suffix each adds to the input's stem (the cut-out's depends on the codec).
VIDEO_OUTPUT_SUFFIXES = {"mask": "_mask.mp4", "soft": "_soft.mp4", "overlay": "_overlay.mp4", "cutout": "_cutout",
                         "boxes": "_boxes.jsonl", "frames": "_frames"}
#: Endings of every video output file name (so a folder scan never takes them as inputs).
VIDEO_OUTPUT_ENDINGS = tuple(v for k, v in VIDEO_OUTPUT_SUFFIXES.items() if k not in ("cutout", "frames")) + tuple(
    VIDEO_OUTPUT_SUFFIXES["cutout"] + c[1] for c in ALPHA_CODECS.values())


# ---------------------------------------------------------------------------- images
class ImageOutputs:
    """The chosen per-input PNGs of a run in ``outdir``, named ``<stem><suffix>``."""

    def __init__(self, outdir: Path, kinds: list[str]) -> None:
        unknown = set(kinds) - set(OUTPUT_SUFFIXES)
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)} (choose from {', '.join(OUTPUT_SUFFIXES)})")
        self.outdir, self.kinds = Path(outdir), list(kinds)

    def paths(self, stem: str) -> list[Path]:
        """The output files of input ``stem``, one per chosen kind."""
        return [self.outdir / (stem + OUTPUT_SUFFIXES[k]) for k in self.kinds]

    def exist(self, stem: str) -> bool:
        """True when every chosen output of input ``stem`` is on disk (a rerun may skip it)."""
        return all(p.exists() for p in self.paths(stem))

    def write(self, result: Result, stem: str) -> None:
        """All chosen outputs of ``result`` at its full resolution (drawn by :mod:`found.io.render`),
        or none (an OSError propagates)."""
        base = str(self.outdir / stem)
        with atomic_group() as group:
            for kind, image in render_result(self.kinds, result).items():
                image.save(group.path(base + OUTPUT_SUFFIXES[kind]), format="PNG")


# ---------------------------------------------------------------------------- run files
class RunFile:
    """One JSON file for a whole run, assembled from records (:mod:`found.io.records`) keyed by
    input file, and replaced atomically by :meth:`close` (only when its content changed)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict] = {}

    def has(self, file: str) -> bool:
        """True when the input ``file`` has a record in this run file."""
        return file in self.records

    def add(self, record: dict) -> None:
        """Keep ``record`` (of a successful input: :func:`found.io.records.result_record`) under its ``file``."""
        self.records[record["file"]] = record

    def document(self) -> dict:
        """The file's JSON content, built from the records (each kind of run file says how)."""
        raise NotImplementedError

    def close(self) -> None:
        """Write the file (atomically: the previous content stays if this fails); an identical file is left alone."""
        text = json.dumps(self.document(), indent=1)
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if self.path.read_text(encoding="utf-8") == text:
                return
        atomic_write_text(self.path, text)


class BoxesFile(RunFile):
    """``boxes.json``: per input, its record (size, score, boxes; with ``instances`` its objects),
    sorted by file name (:func:`found.io.records.boxes_document`)."""

    def __init__(self, path: Path, mode: str, instances: bool = False) -> None:
        super().__init__(path)
        self.mode, self.instances = mode, instances

    def document(self) -> dict:
        """The ``boxes.json`` document: the records sorted by file name, with their objects when asked."""
        return boxes_document(self.records.values(), self.mode, self.instances)


class CocoFile(RunFile):
    """A run's COCO pseudo-labels, built by :func:`found.io.coco.coco_from_records`: per input its
    size and instances (compressed-RLE masks), one "object" category; ids in input-path order when
    it is written, so a rerun that adds inputs keeps the file one consistent dataset. ``file_name``
    is the record's ``name`` (the image's path relative to its input folder), ``path`` its ``file``;
    ``created`` (ISO 8601) dates it, so a rebuilt file is the same file."""

    def __init__(self, path: Path, created: str | None = None) -> None:
        from .coco import require_pycocotools

        require_pycocotools()
        super().__init__(path)
        self.created = created

    def document(self) -> dict:
        """The COCO dataset of the records (pycocotools imported only now)."""
        from .coco import coco_from_records

        return coco_from_records(self.records.values(), created=self.created)


#: ``kind`` of a journal record that stands for a whole video (never part of a run file).
VIDEO_RECORD = "video"


class RunOutputs:
    """Everything a batch run writes for one input, on the writer thread: its images, then its
    record appended to the run's journal (:class:`found.io.journal.Journal`), which says what is
    finished; the run files are assembled from the journal's records by :meth:`close`. Records list
    objects when ``instances`` or a COCO file asks, with their masks for a COCO file."""

    def __init__(self, images: ImageOutputs, run_files: list[RunFile], journal: Journal, instances: bool = False) -> None:
        self.images, self.run_files, self.journal = images, list(run_files), journal
        self.masks = any(isinstance(f, CocoFile) for f in self.run_files)
        self.instances = instances or self.masks

    def write(self, result: Result, stem: str, file: str, name: str | None = None) -> dict:
        """Write the images of ``result`` as ``stem``, then append its record to the journal; returns the record.
        The record is made first, so that the append follows the renames at once (a kill between the two
        leaves outputs without a record: the input is redone)."""
        record = result_record(result, file, name, instances=self.instances, masks=self.masks)
        self.images.write(result, stem)
        self.journal.append(file, record)
        return record

    def finished(self, file: str) -> bool:
        """Whether the journal holds a record of ``file`` with all this run's files need."""
        record = self.journal.records.get(file)
        if record is None or record.get("kind") == VIDEO_RECORD:
            return False
        objects = record.get("instances")
        if self.instances and not isinstance(objects, list):
            return False
        return not self.masks or all("segmentation" in o for o in objects)

    def video_finished(self, file: str) -> bool:
        """Whether the journal holds the record of the video ``file`` (appended once its outputs were committed)."""
        return (self.journal.records.get(file) or {}).get("kind") == VIDEO_RECORD

    def add_video(self, file: str, name: str, summary: dict) -> None:
        """Append the record of a video whose outputs are all committed (``summary``: frames, notes, …)."""
        self.journal.append(file, {"file": file, "name": name, "kind": VIDEO_RECORD, **summary})

    def close(self) -> list[tuple[Path, OSError]]:
        """Write every run file from the journal's image records; returns those that could not be, with why."""
        records = {r["file"]: r for r in self.journal.records.values() if r.get("kind") != VIDEO_RECORD}
        failed = []
        for f in self.run_files:
            f.records = dict(records)
            try:
                f.close()
            except OSError as e:
                failed.append((f.path, e))
        return failed


# ---------------------------------------------------------------------------- writing behind the model
class OrderedWriter:
    """Calls run in submission order on one background thread (``threaded``) or at once, at most
    ``max_pending`` of them waiting (memory stays bounded); their futures come back in order.

    The one ordered background writer: image files (:class:`ResultWriter`) and video frames
    (:mod:`found.video.sink`) are both written through it.
    """

    def __init__(self, max_pending: int, threaded: bool = True, thread_name: str = "found-write") -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=thread_name) if threaded else None
        self.pending: deque[tuple[object, Future]] = deque()
        self.max_pending = max(1, max_pending)

    def submit(self, tag: object, fn: Callable | None, *args: Any) -> Iterator[tuple[object, Future]]:
        """Queue ``fn(*args)`` (None: nothing to run, ``tag`` passes through in order); yields the
        ``(tag, future)`` pairs finished so far, waiting for the oldest while too many are queued."""
        if fn is None:
            fut: Future = Future()
            fut.set_result(None)
        else:
            fut = self.pool.submit(fn, *args) if self.pool else _done(fn, *args)
        self.pending.append((tag, fut))
        return self.ready(keep=self.max_pending)

    def ready(self, keep: int = 0) -> Iterator[tuple[object, Future]]:
        """Yield finished ``(tag, future)`` pairs in order, waiting for the oldest while more than
        ``keep`` are queued (a Ctrl-C while waiting leaves it queued)."""
        while self.pending and (len(self.pending) > keep or self.pending[0][1].done()):
            tag, fut = self.pending[0]
            if not fut.done():
                with contextlib.suppress(CancelledError):
                    fut.exception()  # wait
            self.pending.popleft()
            yield tag, fut

    def abort(self) -> None:
        """Drop the calls not started yet and stop the thread."""
        for _, fut in self.pending:
            fut.cancel()
        self.close()

    def close(self) -> None:
        """Stop the thread (calls not started are dropped; a running one is waited for)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Outcome:
    """What became of one input: ``ok`` with what ``write`` returned (e.g. its record), or
    ``error`` (a one-line reason)."""

    key: object  # the caller's handle for the input (e.g. a job)
    result: Result
    error: str | None = None
    exception: BaseException | None = None  # an unexpected error while writing (for --debug)
    record: Any = None  # what the write returned

    @property
    def ok(self) -> bool:
        """True when the input was written (no error)."""
        return self.error is None


class ResultWriter:
    """Writes results with ``write(result, key)`` through an :class:`OrderedWriter` and hands back
    outcomes in submission order.

    After a write fails with a fatal errno (disk full, read-only file system) nothing more is
    written: :attr:`stopped` gives the reason, and results submitted after the failing one are
    dropped (they count as not processed), as in a sequential run.
    """

    def __init__(self, write: Callable[[Result, object], Any], threaded: bool, max_pending: int) -> None:
        self._write = write
        self.queue = OrderedWriter(max_pending, threaded, "found-write")
        self._halt = threading.Event()
        self.stopped = ""

    def _task(self, result: Result, key: object) -> tuple[bool, Any]:
        if self._halt.is_set():
            return False, None
        try:
            return True, self._write(result, key)
        except OSError as e:
            if e.errno in FATAL_WRITE_ERRNOS:
                self._halt.set()
            raise

    def submit(self, key: object, result: Result) -> Iterator[Outcome]:
        """Queue ``result`` (a failed one passes straight through, in order); yields the outcomes
        finished so far, waiting for the oldest while too many are queued."""
        fn = self._task if result.ok else None
        return self._outcomes(self.queue.submit((key, result), fn, result, key))

    def finish(self, salvage: bool = False) -> Iterator[Outcome]:
        """Wait for every queued write; ``salvage`` (after Ctrl-C) reports what was written even past a stop."""
        return self._outcomes(self.queue.ready(keep=0), salvage)

    def abort(self) -> None:
        """Drop the writes not started yet (a second Ctrl-C)."""
        self._halt.set()
        self.queue.abort()

    def close(self) -> None:
        """Stop the writer thread: writes not started are dropped, a running one is waited for."""
        self.queue.close()

    def _outcomes(self, finished: Iterator[tuple[object, Future]], salvage: bool = False) -> Iterator[Outcome]:
        for (key, result), fut in finished:
            if self.stopped and not salvage:
                continue  # after a fatal write error: not processed
            outcome = self._outcome(key, result, fut)
            if outcome is not None:
                yield outcome

    def _outcome(self, key: object, result: Result, fut: Future) -> Outcome | None:
        if not result.ok:
            return Outcome(key, result, str(result.error))
        if fut.cancelled():
            return None
        e = fut.exception()
        if e is None:
            written, record = fut.result()
            return Outcome(key, result, record=record) if written else None
        if isinstance(e, OSError):
            why = e.strerror or str(e)
            if e.errno in FATAL_WRITE_ERRNOS and not self.stopped:
                self.stopped = why
            return Outcome(key, result, f"cannot write outputs: {why} (nothing written for this image)")
        return Outcome(key, result, f"unexpected error while writing outputs ({describe(e)})", exception=e)


def _done(fn: Callable, *args: Any) -> Future:
    """An already finished future: ``fn(*args)`` run at once, in this thread."""
    fut: Future = Future()
    try:
        fut.set_result(fn(*args))
    except Exception as e:
        fut.set_exception(e)
    return fut


#: :attr:`WriteBehind.stopped` when Ctrl-C stopped the run.
INTERRUPTED = "interrupted (Ctrl-C)"


class WriteBehind:
    """Writes each result (``write(result, key)``, keys zipped with results) behind the engine;
    iterate it for the outcomes, in input order (data flows one way: the caller reads them).

    :attr:`stopped` then says why the run stopped early: "" (it did not), a fatal write error (disk
    full; later inputs are not processed), or :data:`INTERRUPTED` (Ctrl-C: decoding stops, what
    was already predicted is still written; a second Ctrl-C drops the writes not started). A Ctrl-C
    that lands in the caller's loop instead is handed over with :meth:`salvage`. ``results`` is
    closed at the end.
    """

    def __init__(self, results: Iterator[Result], keys: Iterable[object], write: Callable[[Result, object], Any], *,
                 threaded: bool, max_pending: int) -> None:
        self.results, self.keys, self.threaded = results, keys, threaded
        self.writer = ResultWriter(write, threaded=threaded, max_pending=max_pending)
        self.stopped = ""

    def __iter__(self) -> Iterator[Outcome]:
        # warnings.catch_warnings is process-wide: whatever the threads do to the filters ends with the run
        with warnings.catch_warnings() if self.threaded else contextlib.nullcontext():
            try:
                for key, result in zip(self.keys, self.results):
                    yield from self.writer.submit(key, result)
                    if self.writer.stopped:
                        break
                yield from self.writer.finish()
                self.stopped = self.writer.stopped
            except KeyboardInterrupt:
                yield from self.salvage()
            finally:
                self._close()

    def salvage(self) -> Iterator[Outcome]:
        """After Ctrl-C: stop decoding, and yield the outcomes of what was already predicted (a second
        Ctrl-C drops the writes not started)."""
        self.stopped = INTERRUPTED
        with contextlib.suppress(AttributeError):
            self.results.close()  # type: ignore[attr-defined]  # no more decoding
        try:
            try:
                yield from self.writer.finish(salvage=True)
            except KeyboardInterrupt:
                self.writer.abort()
                yield from self.writer.finish(salvage=True)
        finally:
            self._close()

    def _close(self) -> None:
        with contextlib.suppress(AttributeError):
            self.results.close()  # type: ignore[attr-defined]
        self.writer.close()


def write_results(results: Iterator[Result], keys: Iterable[object], write: Callable[[Result, object], Any], *,
                  threaded: bool, max_pending: int) -> WriteBehind:
    """The outcomes of writing ``results`` behind the engine: see :class:`WriteBehind`."""
    return WriteBehind(results, keys, write, threaded=threaded, max_pending=max_pending)
