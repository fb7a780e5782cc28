"""``found segment INPUT... -o OUTDIR``: masks, cut-outs, overlays and boxes for images on disk.

A batch never stops at a bad image: each failure is recorded and the run ends with a summary
(ok / skipped / failed with reasons, plus notices such as "first frame of an animated GIF").
Exit code 0 when every image succeeded, 1 when some failed, 2 for usage errors. Every output is
written under a temporary name and renamed once all outputs of that image are complete.
With --workers N (default min(4, CPUs)), N threads decode the next images while the model runs and
one thread writes the outputs behind it, in input order; --workers 0 runs everything in turn.
See docs/robustness.md for the behaviour on each kind of bad input.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import sys
import threading
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import FoundError, InputError
from ..fileio import FATAL_WRITE_ERRNOS, atomic_group, atomic_write_text, check_writable
from ..imageio import IMAGE_SUFFIXES, LoadedImage, read_image
from ..pipeline import map_ahead
from .common import add_model_args, check_model_args, check_refine, model_from_args

OUTPUTS = {
    "mask": "_mask.png",
    "soft": "_soft.png",
    "cutout": "_cutout.png",
    "overlay": "_overlay.png",
}
BOXES_FILE = "boxes.json"
DEFAULT_MAX_SIDE = 1024
#: Chunks (of --batch-size images) decoded ahead of the one being predicted, and chunks whose
#: outputs may wait to be written: together they bound the images held in memory.
READ_AHEAD_CHUNKS = 2
PENDING_WRITE_CHUNKS = 2


def default_workers() -> int:
    """Decoding threads of ``found segment`` when ``--workers`` is not given: min(4, CPUs)."""
    return min(4, os.cpu_count() or 1)


def add_parser(sub) -> None:
    p = sub.add_parser("segment", help="segment the main object(s) of images", description=__doc__)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the outputs")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders of folder inputs")
    o = p.add_argument_group("outputs (default: --mask)")
    o.add_argument("--mask", action="store_true", help="binary mask PNG (<name>_mask.png, 0/255)")
    o.add_argument("--soft", action="store_true", help="soft mask PNG (<name>_soft.png, probability × 255)")
    o.add_argument("--cutout", action="store_true", help="RGBA cut-out PNG (<name>_cutout.png)")
    o.add_argument("--overlay", action="store_true", help="mask and box drawn over the image (<name>_overlay.png)")
    o.add_argument("--boxes", action="store_true", help=f"one {BOXES_FILE} for the run (xyxy and COCO xywh boxes, sizes, scores)")
    o.add_argument("--all", action="store_true", help="every output above")
    p.add_argument("--mode", choices=["multi", "single"], default="multi", help="'multi' keeps the whole mask, 'single' its main component")
    p.add_argument("--refine", action="store_true", help="bilateral-solver refinement (kept only if IoU with the mask > 0.5)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip images whose outputs exist)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (same-size images are batched)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="threads that decode the next images while the model runs; outputs are then encoded and "
                        "written by one more background thread, in input order (default min(4, CPUs); "
                        "0 = no threads, everything in turn; results are the same either way)")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, metavar="PX",
                   help=f"decode and process images whose longer side exceeds PX at that size (bounded memory); "
                        f"masks are scaled back to the full size, cut-outs/overlays stay at the reduced size "
                        f"(default {DEFAULT_MAX_SIDE}; 0 = never, memory then grows with the image)")
    add_model_args(p)
    p.set_defaults(func=run)


@dataclass
class Job:
    path: Path
    rel: Path  # output stem relative to OUTDIR (without suffix)


def _key(path: Path) -> Path:
    """Identity of an input for de-duplication (a symlink loop cannot be resolved: keep it as is)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def collect_inputs(inputs: list[str], recursive: bool, outdir: Path | None = None) -> tuple[list[Job], list[tuple[str, str]]]:
    """Expand files, folders and globs into jobs; unusable arguments are returned as failures.

    Folders are scanned for files with an image suffix (hidden files skipped; sub-folders only with
    ``recursive``, symbolic links to folders never followed, so link loops cannot recurse).
    Files inside ``outdir`` named like this command's outputs are never taken as inputs, so a run
    whose output folder is (inside) an input folder can be repeated.
    """
    out_key = _key(outdir) if outdir is not None and outdir.exists() else None

    def own_output(f: Path) -> bool:
        return out_key is not None and out_key in _key(f).parents and f.name.endswith(tuple(OUTPUTS.values()))

    jobs: list[Job] = []
    failures: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path, rel: Path) -> None:
        key = _key(path)
        if key not in seen:
            seen.add(key)
            jobs.append(Job(path, rel))

    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            errors: list[OSError] = []
            if recursive:
                walker = os.walk(p, followlinks=False, onerror=errors.append)
            else:
                try:
                    walker = [(str(p), [], os.listdir(p))]
                except OSError as e:
                    errors.append(e)
                    walker = []
            n_before = len(jobs)
            for root, dirs, files in walker:
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    f = Path(root) / name
                    if name.startswith(".") or f.suffix.lower() not in IMAGE_SUFFIXES or f.is_dir() or own_output(f):
                        continue
                    add(f, f.relative_to(p).with_suffix(""))
            for e in errors:
                failures.append((str(e.filename or p), f"cannot list folder ({e.strerror or e})"))
            if len(jobs) == n_before and not errors:
                hint = " (add -r for sub-folders)" if not recursive and any(c.is_dir() for c in p.iterdir()) else ""
                failures.append((arg, f"no images found in this folder{hint}"))
        elif p.exists() or p.is_symlink():
            add(p, Path(p.stem))
        elif any(ch in arg for ch in "*?["):
            matches = sorted(glob.glob(arg, recursive=recursive))
            if not matches:
                failures.append((arg, "no file matches this pattern"))
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    failures.append((m, "is a directory, not an image (give the folder itself to scan it)"))
                else:
                    add(mp, Path(mp.stem))
        else:
            failures.append((arg, "no such file or folder"))
    # Disambiguate equal output stems (e.g. a/x.jpg and b/x.png given as files).
    counts: dict[Path, int] = {}
    for j in jobs:
        n = counts.get(j.rel, 0)
        counts[j.rel] = n + 1
        if n:
            j.rel = j.rel.with_name(f"{j.rel.name}_{n}")
    return jobs, failures


def overlay_image(rgb: np.ndarray, mask: np.ndarray, box) -> Image.Image:
    """The image with the mask tinted and the box outlined (for a quick visual check)."""
    from PIL import ImageDraw

    out = rgb.astype(np.float32)
    tint = np.array([255, 40, 40], np.float32)
    out[mask] = 0.5 * out[mask] + 0.5 * tint
    im = Image.fromarray(out.round().astype(np.uint8))
    if box is not None:
        x1, y1, x2, y2 = (int(v) for v in box)
        ImageDraw.Draw(im).rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=(255, 255, 0), width=max(1, min(rgb.shape[:2]) // 150))
    return im


@dataclass
class Report:
    """What happened to each input, printed at the end of the run (the run report)."""

    ok: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    downscaled: list[str] = field(default_factory=list)
    stopped: str = ""
    not_processed: int = 0

    def fail(self, path: object, why: str) -> None:
        self.failures.append((str(path), why.removeprefix(f"{path}: ")))

    def print(self, max_side: int) -> None:
        err = sys.stderr
        line = f"found segment: {self.ok} ok, {self.skipped} skipped (outputs exist), {len(self.failures)} failed"
        if self.not_processed:
            line += f", {self.not_processed} not processed"
        print(line, file=err)
        for path, why in self.failures:
            print(f"  failed: {path}: {why}", file=err)
        for path, note in self.notes:
            print(f"  note: {path}: {note}", file=err)
        if self.downscaled:
            n = len(self.downscaled)
            print(f"  note: {n} image{'s' if n > 1 else ''} larger than --max-side {max_side} processed at reduced size "
                  f"(masks scaled back to full size; cut-outs/overlays at the reduced size; --max-side 0 disables)", file=err)
            for path in self.downscaled[:10]:
                print(f"    downscaled: {path}", file=err)
            if n > 10:
                print(f"    … and {n - 10} more (see 'downscaled' in {BOXES_FILE} with --boxes)", file=err)
        if self.stopped:
            print(f"  stopped: {self.stopped}; finished outputs are kept, rerun the same command to resume", file=err)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    debug = bool(getattr(args, "debug", False))
    wanted = [k for k in OUTPUTS if getattr(args, k) or args.all]
    want_boxes = args.boxes or args.all
    if not wanted and not want_boxes:
        wanted = ["mask"]
    if args.batch_size < 1:
        raise FoundError("--batch-size must be at least 1")
    workers = getattr(args, "workers", None)
    if workers is None:
        workers = default_workers()
    if workers < 0:
        raise FoundError("--workers must be 0 (no threads) or a positive number of threads")
    if args.max_side < 0:
        raise FoundError("--max-side must be 0 (no cap) or a positive number of pixels")
    check_refine(args)
    check_model_args(args)
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise FoundError(f"output {outdir} exists and is not a folder")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        check_writable(outdir)
    except OSError as e:
        raise FoundError(f"output folder {outdir} is not usable: {e.strerror or e}") from None

    jobs, input_failures = collect_inputs(args.inputs, args.recursive, outdir)
    inputs = {_key(j.path) for j in jobs}
    for j in jobs:
        for k in wanted:
            out = outdir / (str(j.rel) + OUTPUTS[k])
            if _key(out) in inputs:
                raise FoundError(f"output {out} would overwrite an input; choose another -o")
    boxes_path = outdir / BOXES_FILE
    if want_boxes and _key(boxes_path) in inputs:
        raise FoundError(f"{boxes_path} is an input; choose another -o")
    old_boxes: dict[str, dict] = {}
    if want_boxes and boxes_path.is_file() and not args.overwrite:
        try:
            old_boxes = {e["file"]: e for e in json.loads(boxes_path.read_text(encoding="utf-8"))["images"]}
        except (ValueError, KeyError, TypeError, OSError):
            old_boxes = {}

    def done(j: Job) -> bool:
        if args.overwrite:
            return False
        files_done = all((outdir / (str(j.rel) + OUTPUTS[k])).exists() for k in wanted)
        return files_done and (not want_boxes or str(j.path) in old_boxes)

    todo = [j for j in jobs if not done(j)]
    report = Report(skipped=len(jobs) - len(todo))
    for arg, why in input_failures:
        report.fail(arg, why)
    if not todo:
        report.print(args.max_side)
        return 1 if report.failures else 0
    model = model_from_args(args)
    patch = int(model.patch_size)
    if args.max_side and args.max_side < patch:
        raise FoundError(f"--max-side {args.max_side} is smaller than one {patch}-px patch")

    records: dict[str, dict] = dict(old_boxes)
    bar = tqdm(total=len(todo), unit="img", desc="segment", disable=not args.progress)
    n_before = len(report.failures)
    # --workers N: N threads decode up to READ_AHEAD_CHUNKS chunks ahead of the one being predicted,
    # and one writer thread encodes and writes outputs in input order while the next chunks run.
    # Outcomes are reported here, in input order, exactly as the sequential run (--workers 0) does.
    read_pool = ThreadPoolExecutor(workers, thread_name_prefix="found-read") if workers else None
    write_pool = ThreadPoolExecutor(1, thread_name_prefix="found-write") if workers else None
    stop = threading.Event()  # set by the writer on a fatal write error (disk full): later images are not written
    pending: deque[_Chunk] = deque()  # chunks predicted, outcomes not yet reported (oldest first)
    max_side = args.max_side or None

    def load(j: Job) -> LoadedImage:
        return read_image(j.path, max_side=max_side, min_side=patch)

    def finish(chunk: _Chunk, salvage: bool = False) -> None:
        """Report ``chunk``'s outcomes in input order, waiting for its writes. A chunk after the one
        where the run stopped is dropped (its images count as not processed), as in a sequential run;
        ``salvage`` (after Ctrl-C) keeps whatever was written."""
        if report.stopped and not salvage:
            chunk.entries.clear()
            return
        while chunk.entries:
            j, li, outcome = chunk.entries[0]
            if not isinstance(outcome, str) and not outcome.done():
                wait_futures([outcome])  # Ctrl-C here leaves the entry for the salvage pass
            chunk.entries.popleft()
            if isinstance(outcome, str):
                report.fail(j.path, outcome)
            elif salvage or not report.stopped:
                _save_one(outdir, j, li, outcome, records, report, debug)
            bar.update(1)

    def finish_pending(keep: int) -> None:
        """Report finished chunks; wait for the oldest while more than ``keep`` are pending (bounded memory)."""
        while pending and (len(pending) > keep or pending[0].done()):
            finish(pending[0])
            pending.popleft()

    def drain(salvage: bool = False) -> None:
        while pending:
            finish(pending[0], salvage)
            pending.popleft()

    loaded = map_ahead(load, todo, read_pool, window=max(READ_AHEAD_CHUNKS * args.batch_size, workers))
    interrupted = False
    # warnings.catch_warnings is process-wide: whatever the threads do to the filters ends with the run
    with warnings.catch_warnings() if workers else contextlib.nullcontext():
        try:
            while not report.stopped and not stop.is_set():
                chunk = _Chunk()
                pending.append(chunk)  # before reading: a Ctrl-C still reports what this chunk did
                ready: list[tuple[Job, LoadedImage]] = []
                for j, li in islice(loaded, args.batch_size):
                    if isinstance(li, InputError):
                        chunk.entries.append((j, None, str(li)))
                    else:
                        ready.append((j, li))
                if not chunk.entries and not ready:
                    pending.pop()
                    break
                for (j, li), pred in zip(ready, _predict(model, [li for _, li in ready], args, debug)):
                    if isinstance(pred, BaseException):
                        chunk.entries.append((j, li, f"inference failed ({_why(pred)})"))
                    else:
                        task = (_write_task, outdir, j, li, pred, wanted, stop)
                        chunk.entries.append((j, li, write_pool.submit(*task) if write_pool else _Done(*task)))
                finish_pending(keep=PENDING_WRITE_CHUNKS)
            drain()
        except KeyboardInterrupt:
            interrupted = True
            report.stopped = "interrupted (Ctrl-C)"
            loaded.close()  # no more decoding; the images already predicted are still written
            try:
                drain(salvage=True)
            except KeyboardInterrupt:  # a second Ctrl-C: drop the writes not started yet
                stop.set()
                if write_pool is not None:
                    write_pool.shutdown(wait=True, cancel_futures=True)
                drain(salvage=True)
        finally:
            loaded.close()
            for pool in (read_pool, write_pool):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    report.not_processed = len(todo) - report.ok - (len(report.failures) - n_before)
    if want_boxes:
        entries = [records[k] for k in sorted(records)]
        doc = {"box_format": {"xyxy": "x1, y1, x2, y2 (max exclusive)", "xywh": "COCO x, y, width, height"}, "mode": args.mode, "images": entries}
        try:
            atomic_write_text(boxes_path, json.dumps(doc, indent=1))
        except OSError as e:
            report.fail(boxes_path, f"cannot write ({e.strerror or e}); previous content kept")
    report.print(args.max_side)
    if interrupted:
        return 130
    return 1 if report.failures or report.not_processed else 0


def _why(e: BaseException) -> str:
    text = " ".join(str(e).split())[:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _predict(model, images: list[LoadedImage], args: argparse.Namespace, debug: bool) -> list:
    """Predictions for ``images``; if the batch fails (e.g. out of memory) each image is retried
    alone, and an image that still fails gets its exception in place of a prediction."""
    if not images:
        return []
    arrays = [li.rgb() for li in images]
    try:
        return model.predict(arrays, mode=args.mode, refine=args.refine, batch_size=args.batch_size)
    except Exception as e:
        if len(arrays) == 1:
            if debug:
                raise
            return [e]
    out: list = []
    for a in arrays:
        try:
            out.extend(model.predict([a], mode=args.mode, refine=args.refine, batch_size=1))
        except Exception as e:
            if debug:
                raise
            out.append(e)
    return out


@dataclass
class _Chunk:
    """One chunk's outcomes in input order: (job, image, failure text or the future of its write)."""

    entries: deque = field(default_factory=deque)

    def done(self) -> bool:
        return all(isinstance(o, str) or o.done() for _, _, o in self.entries)


class _Done:
    """An already finished future (``--workers 0``): the call runs at once, in this thread."""

    def __init__(self, fn, *args) -> None:
        self._value, self._error = None, None
        try:
            self._value = fn(*args)
        except Exception as e:
            self._error = e

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value


#: What :func:`_write_task` returns when the run has stopped (disk full) before this image.
_NOT_WRITTEN = object()


def _write_task(outdir: Path, job: Job, li: LoadedImage, pred, wanted: list[str], stop: threading.Event):
    """Write one image's outputs (in the writer thread); once a write failed fatally nothing more is written."""
    if stop.is_set():
        return _NOT_WRITTEN
    try:
        return _write_outputs(outdir, job, li, pred, wanted)
    except OSError as e:
        if e.errno in FATAL_WRITE_ERRNOS:
            stop.set()
        raise


def _save_one(outdir: Path, job: Job, li: LoadedImage, outcome, records: dict, report: Report, debug: bool) -> None:
    """Record the outcome of one image's write (all outputs or none, see :func:`_write_task`) in ``report``."""
    if outcome.cancelled():
        return
    try:
        rec = outcome.result()
    except OSError as e:
        why = e.strerror or str(e)
        report.fail(job.path, f"cannot write outputs: {why} (nothing written for this image)")
        if e.errno in FATAL_WRITE_ERRNOS and not report.stopped:
            report.stopped = f"{why} in {outdir}"
        return
    except Exception as e:  # a bug on an odd image must not lose the rest of the batch
        if debug:
            raise
        report.fail(job.path, f"unexpected error while writing outputs ({_why(e)}); rerun with --debug for the traceback")
        return
    if rec is _NOT_WRITTEN:
        return
    records[str(job.path)] = rec
    report.ok += 1
    report.notes.extend((str(job.path), n) for n in li.notes if not n.startswith("downscaled"))
    if li.downscaled:
        report.downscaled.append(f"{job.path} ({li.original_size[0]}×{li.original_size[1]} → {li.size[0]}×{li.size[1]})")


def _write_outputs(outdir: Path, job: Job, li: LoadedImage, pred, wanted: list[str]) -> dict:
    """Masks at the file's full size (scaled back with uint8 resizes, one at a time, never a
    full-size float), cut-out/overlay at the processed size; the box in full-size pixel coordinates."""
    w, h = li.size
    W, H = li.original_size
    box = pred.box
    if (w, h) != (W, H) and box is not None:
        sx, sy = W / w, H / h
        box = np.array([min(W, round(box[0] * sx)), min(H, round(box[1] * sy)), min(W, round(box[2] * sx)), min(H, round(box[3] * sy))])
    base = str(outdir / str(job.rel))
    with atomic_group() as group:
        if "mask" in wanted:
            mask = Image.fromarray(pred.mask.astype(np.uint8) * 255)
            if (w, h) != (W, H):
                mask = mask.resize((W, H), Image.Resampling.BILINEAR).point(lambda v: 255 if v > 127 else 0)
            mask.save(group.path(base + OUTPUTS["mask"]), format="PNG")
            del mask
        if "soft" in wanted:
            soft = Image.fromarray(np.clip(pred.soft * 255 + 0.5, 0, 255).astype(np.uint8))
            if (w, h) != (W, H):
                soft = soft.resize((W, H), Image.Resampling.BILINEAR)
            soft.save(group.path(base + OUTPUTS["soft"]), format="PNG")
            del soft
        if "cutout" in wanted or "overlay" in wanted:
            rgb = li.rgb()
            if "cutout" in wanted:
                alpha = pred.mask.astype(np.uint8) * 255
                file_alpha = li.alpha()
                if file_alpha is not None:  # keep the file's own transparency
                    alpha = np.minimum(alpha, file_alpha)
                Image.fromarray(np.dstack([rgb, alpha])).save(group.path(base + OUTPUTS["cutout"]), format="PNG")
            if "overlay" in wanted:
                overlay_image(rgb, pred.mask, pred.box).save(group.path(base + OUTPUTS["overlay"]), format="PNG")
    rec = {"file": str(job.path), "width": W, "height": H, "score": round(float(pred.score), 6), "refined": bool(pred.refined),
           "downscaled": li.downscaled, "box_xyxy": None, "box_xywh": None}
    if li.downscaled:
        rec["processed_size"] = [w, h]
    if li.notes:
        rec["notes"] = list(li.notes)
    if box is not None:
        x1, y1, x2, y2 = (int(v) for v in box)
        rec["box_xyxy"] = [x1, y1, x2, y2]
        rec["box_xywh"] = [x1, y1, x2 - x1, y2 - y1]
    return rec
