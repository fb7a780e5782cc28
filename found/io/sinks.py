"""Writers: the engine's results to files, each output an atomic sink.

* :class:`ImageOutputs` — per-input PNGs (mask, soft mask, RGBA cut-out, overlay), all of an
  input's outputs appear together or not at all (temporary names, then renames);
* :class:`RunFile` subclasses — one file for the run (``boxes.json``, the COCO pseudo-labels),
  kept consistent with what is on disk across reruns and written atomically at the end;
* :class:`ResultWriter` — writes results behind the model on one background thread, reports
  outcomes in input order, and stops cleanly after a fatal write error (disk full).

Nothing here calls the model or knows about the command line.
"""
from __future__ import annotations

import contextlib
import json
import threading
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image, ImageDraw

from ..engine import Result
from ..errors import describe
from .files import FATAL_WRITE_ERRNOS, atomic_group, atomic_write_text
from ..model.instances import instances_summary

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
def mask_image(mask: np.ndarray) -> Image.Image:
    """A binary mask as an 8-bit PNG image (0 / 255)."""
    return Image.fromarray(mask.astype(np.uint8) * 255)


def soft_image(pred) -> Image.Image:
    """A prediction's probability map as an 8-bit image (probability × 255, rounded)."""
    if hasattr(pred, "soft_uint8"):  # scaled up from a reduced size: no full-size float copy
        return Image.fromarray(pred.soft_uint8())
    return Image.fromarray(np.clip(pred.soft * 255 + 0.5, 0, 255).astype(np.uint8))


def cutout_image(rgb: np.ndarray, mask: np.ndarray, file_alpha: np.ndarray | None = None) -> Image.Image:
    """RGBA cut-out: the mask as alpha, never more opaque than the file's own alpha."""
    alpha = mask.astype(np.uint8) * 255
    if file_alpha is not None:
        alpha = np.minimum(alpha, file_alpha)
    return Image.fromarray(np.dstack([rgb, alpha]))


def overlay_image(rgb: np.ndarray, mask: np.ndarray, box) -> Image.Image:
    """The image with the mask tinted and the box outlined (for a quick visual check)."""
    tint = np.array([255, 40, 40], np.float32)
    out = np.array(rgb, dtype=np.uint8, copy=True)
    out[mask] = (0.5 * rgb[mask].astype(np.float32) + 0.5 * tint).round().astype(np.uint8)  # only the masked pixels in float
    im = Image.fromarray(out)
    if box is not None:
        x1, y1, x2, y2 = (int(v) for v in box)
        ImageDraw.Draw(im).rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=(255, 255, 0),
                                     width=max(1, min(rgb.shape[:2]) // 150))
    return im


class ImageOutputs:
    """The chosen per-input PNGs of a run in ``outdir``, named ``<stem><suffix>``."""

    def __init__(self, outdir: Path, kinds: list[str]) -> None:
        unknown = set(kinds) - set(OUTPUT_SUFFIXES)
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)} (choose from {', '.join(OUTPUT_SUFFIXES)})")
        self.outdir, self.kinds = Path(outdir), list(kinds)

    def paths(self, stem: str) -> list[Path]:
        return [self.outdir / (stem + OUTPUT_SUFFIXES[k]) for k in self.kinds]

    def exist(self, stem: str) -> bool:
        return all(p.exists() for p in self.paths(stem))

    def write(self, result: Result, stem: str) -> None:
        """All chosen outputs of ``result`` at its full resolution, or none (an OSError propagates)."""
        pred, base = result.prediction, str(self.outdir / stem)
        with atomic_group() as group:
            if "mask" in self.kinds:
                mask_image(pred.mask).save(group.path(base + OUTPUT_SUFFIXES["mask"]), format="PNG")
            if "soft" in self.kinds:
                soft_image(pred).save(group.path(base + OUTPUT_SUFFIXES["soft"]), format="PNG")
            if "cutout" in self.kinds or "overlay" in self.kinds:
                full = result.full_image()
                rgb = full.rgb()
                if "cutout" in self.kinds:
                    cutout_image(rgb, pred.cutout_mask(rgb), full.alpha()).save(group.path(base + OUTPUT_SUFFIXES["cutout"]), format="PNG")
                if "overlay" in self.kinds:
                    overlay_image(rgb, pred.mask, pred.box).save(group.path(base + OUTPUT_SUFFIXES["overlay"]), format="PNG")


# ---------------------------------------------------------------------------- run files
def box_record(result: Result, file: str, instances: bool = False) -> dict:
    """One input's entry of ``boxes.json``: size, score, box (xyxy and COCO xywh), notes, and with
    ``instances`` every object's box, area and score."""
    pred, li = result.prediction, result.image
    W, H = li.original_size
    rec = {"file": file, "width": W, "height": H, "score": round(float(pred.score), 6), "refined": bool(pred.refined),
           "downscaled": li.downscaled, "box_xyxy": None, "box_xywh": None}
    if li.downscaled:
        rec["processed_size"] = list(li.size)
    if li.notes:
        rec["notes"] = list(li.notes)
    if pred.box is not None:
        x1, y1, x2, y2 = (int(v) for v in pred.box)
        rec["box_xyxy"] = [x1, y1, x2, y2]
        rec["box_xywh"] = [x1, y1, x2 - x1, y2 - y1]
    if instances:
        rec["instances"] = instances_summary(pred.instances)
    return rec


class RunFile:
    """One JSON file for a whole run, keyed by input file: entries of earlier runs that are still
    on disk are kept (unless ``overwrite``), new ones added, and the file is replaced atomically."""

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.records: dict[str, dict] = {} if overwrite else self._read_old()

    def _read_old(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        try:
            return {e["file"]: e for e in json.loads(self.path.read_text(encoding="utf-8"))["images"]}
        except (ValueError, KeyError, TypeError, OSError):
            return {}

    def has(self, file: str) -> bool:
        return file in self.records

    def record(self, result: Result, file: str, name: str) -> dict:
        """The entry for ``result`` of input ``file``, which a dataset calls ``name`` (a subclass
        decides what it holds)."""
        raise NotImplementedError

    def add(self, result: Result, file: str, name: str | None = None) -> None:
        """Record ``result`` under the input ``file``; ``name`` is how a dataset calls it (default ``file``)."""
        self.records[file] = self.record(result, file, file if name is None else name)

    def document(self) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        """Write the file (atomically: the previous content stays if this fails)."""
        atomic_write_text(self.path, json.dumps(self.document(), indent=1))


class BoxesFile(RunFile):
    """``boxes.json``: per input, its size, score and box (and with ``instances`` its objects),
    sorted by file name."""

    def __init__(self, path: Path, mode: str, overwrite: bool = False, instances: bool = False) -> None:
        super().__init__(path, overwrite)
        self.mode, self.instances = mode, instances

    def record(self, result: Result, file: str, name: str) -> dict:
        return box_record(result, file, self.instances)

    def document(self) -> dict:
        return {"box_format": {"xyxy": "x1, y1, x2, y2 (max exclusive)", "xywh": "COCO x, y, width, height"},
                "mode": self.mode, "images": [self.records[k] for k in sorted(self.records)]}


class CocoFile(RunFile):
    """A run's COCO pseudo-labels: per input its size and instances (compressed-RLE masks through
    pycocotools), one "object" category; ids are given in input-path order when it is written, so a
    rerun that adds inputs keeps the file one consistent dataset. ``file_name`` is the image's path
    relative to its input folder (the image root of a trainer); ``path`` is the input as given."""

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        from .coco import require_pycocotools

        require_pycocotools()
        super().__init__(path, overwrite)

    def _read_old(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            anns: dict[int, list[dict]] = {}
            for a in doc["annotations"]:
                anns.setdefault(a["image_id"], []).append(a)
            return {im.get("path", im["file_name"]): {"file_name": im["file_name"], "path": im.get("path", im["file_name"]),
                                                      "height": im["height"], "width": im["width"],
                                                      "annotations": anns.get(im["id"], [])} for im in doc["images"]}
        except (ValueError, KeyError, TypeError, OSError):
            return {}

    def record(self, result: Result, file: str, name: str) -> dict:
        from .coco import image_annotations

        W, H = result.size
        return {"file_name": name, "path": file, "height": H, "width": W,
                "annotations": image_annotations(result.prediction.instances, 0)}

    def document(self) -> dict:
        from .coco import OBJECT_CATEGORY, coco_info, image_entry

        images, annotations = [], []
        for image_id, name in enumerate(sorted(self.records), start=1):
            r = self.records[name]
            images.append({**image_entry(image_id, r["file_name"], r["height"], r["width"]), "path": r["path"]})
            for a in r["annotations"]:
                annotations.append({**a, "id": len(annotations) + 1, "image_id": image_id})
        return {"info": coco_info("FOUND class-agnostic pseudo-labels"), "licenses": [], "images": images,
                "categories": [dict(OBJECT_CATEGORY)], "annotations": annotations}


# ---------------------------------------------------------------------------- writing behind the model
@dataclass
class Outcome:
    """What became of one input: ``ok``, or ``error`` (a one-line reason)."""

    key: object  # the caller's handle for the input (e.g. a job)
    result: Result
    error: str | None = None
    exception: BaseException | None = None  # an unexpected error while writing (for --debug)

    @property
    def ok(self) -> bool:
        return self.error is None


class ResultWriter:
    """Writes results with ``write(result, key)`` on one background thread (``threaded``) or at
    once, and hands back outcomes in submission order.

    After a write fails with a fatal errno (disk full, read-only file system) nothing more is
    written: :attr:`stopped` gives the reason, and results submitted after the failing one are
    dropped (they count as not processed), as in a sequential run.
    """

    def __init__(self, write: Callable[[Result, object], None], threaded: bool, max_pending: int) -> None:
        self._write = write
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="found-write") if threaded else None
        self._pending: deque[tuple[object, Result, Future | None]] = deque()
        self._halt = threading.Event()
        self.max_pending = max(1, max_pending)
        self.stopped = ""

    def _task(self, result: Result, key: object) -> bool:
        if self._halt.is_set():
            return False
        try:
            self._write(result, key)
        except OSError as e:
            if e.errno in FATAL_WRITE_ERRNOS:
                self._halt.set()
            raise
        return True

    def submit(self, key: object, result: Result) -> list[Outcome]:
        """Queue ``result`` (a failed one passes straight through, in order); returns the outcomes
        finished so far, waiting for the oldest while more than ``max_pending`` are queued."""
        fut: Future | None = None
        if result.ok:
            fut = self._pool.submit(self._task, result, key) if self._pool else _done(self._task, result, key)
        self._pending.append((key, result, fut))
        return self._collect(keep=self.max_pending)

    def finish(self, salvage: bool = False) -> list[Outcome]:
        """Wait for every queued write; ``salvage`` (after Ctrl-C) reports what was written even past a stop."""
        return self._collect(keep=0, salvage=salvage)

    def abort(self) -> None:
        """Drop the writes not started yet (a second Ctrl-C)."""
        self._halt.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _collect(self, keep: int, salvage: bool = False) -> list[Outcome]:
        out: list[Outcome] = []
        while self._pending and (len(self._pending) > keep or _finished(self._pending[0][2])):
            key, result, fut = self._pending[0]
            if fut is not None and not fut.done():
                fut.exception()  # wait; a Ctrl-C here leaves the entry queued for the salvage pass
            self._pending.popleft()
            if self.stopped and not salvage:
                continue  # after a fatal write error: not processed
            outcome = self._outcome(key, result, fut)
            if outcome is not None:
                out.append(outcome)
        return out

    def _outcome(self, key: object, result: Result, fut: Future | None) -> Outcome | None:
        if fut is None:
            return Outcome(key, result, str(result.error))
        if fut.cancelled():
            return None
        e = fut.exception()
        if e is None:
            return Outcome(key, result) if fut.result() else None
        if isinstance(e, OSError):
            why = e.strerror or str(e)
            if e.errno in FATAL_WRITE_ERRNOS and not self.stopped:
                self.stopped = why
            return Outcome(key, result, f"cannot write outputs: {why} (nothing written for this image)")
        return Outcome(key, result, f"unexpected error while writing outputs ({describe(e)})", exception=e)


def _finished(fut: Future | None) -> bool:
    return fut is None or fut.done()


def _done(fn: Callable, *args) -> Future:
    """An already finished future: ``fn(*args)`` run at once, in this thread."""
    fut: Future = Future()
    try:
        fut.set_result(fn(*args))
    except Exception as e:
        fut.set_exception(e)
    return fut


#: What :func:`write_results` returns when Ctrl-C stopped it.
INTERRUPTED = "interrupted (Ctrl-C)"


def write_results(results: Iterator[Result], keys: Iterable[object], write: Callable[[Result, object], None],
                  on_outcome: Callable[[Outcome], None], *, threaded: bool, max_pending: int) -> str:
    """Write each result (``write(result, key)``, keys zipped with results) behind the engine and
    pass every outcome, in input order, to ``on_outcome``.

    Returns why the run stopped early: "" (it did not), a fatal write error (disk full; later
    inputs are not processed), or :data:`INTERRUPTED` (Ctrl-C: decoding stops, what was already
    predicted is still written; a second Ctrl-C drops the writes not started). ``results`` is
    closed on return.
    """
    writer = ResultWriter(write, threaded=threaded, max_pending=max_pending)

    def report(outcomes: list[Outcome]) -> None:
        for o in outcomes:
            on_outcome(o)

    # warnings.catch_warnings is process-wide: whatever the threads do to the filters ends with the run
    with warnings.catch_warnings() if threaded else contextlib.nullcontext():
        try:
            for key, result in zip(keys, results):
                report(writer.submit(key, result))
                if writer.stopped:
                    break
            report(writer.finish())
            return writer.stopped
        except KeyboardInterrupt:
            results.close()  # type: ignore[attr-defined]  # no more decoding
            try:
                report(writer.finish(salvage=True))
            except KeyboardInterrupt:
                writer.abort()
                report(writer.finish(salvage=True))
            return INTERRUPTED
        finally:
            with contextlib.suppress(AttributeError):
                results.close()  # type: ignore[attr-defined]
            writer.close()
