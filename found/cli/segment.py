"""``found segment INPUT... -o OUTDIR``: masks, cut-outs, overlays and boxes for images on disk.

Options, input collection and the run report; the work is the library's: the engine
(:mod:`found.engine`) predicts, the sinks (:mod:`found.io.sinks`) write each input's outputs and
append its record to the run journal (:mod:`found.io.journal`, ``OUTDIR/.found-journal.jsonl``), and
hand back each outcome, which this module reads into the report.
A batch never stops at a bad image: each failure is recorded and the run ends with a summary
(ok / skipped / failed with reasons, plus notices such as "first frame of an animated GIF").
Exit code 0 when every image succeeded, 1 when some failed, 2 for usage errors, 130 on Ctrl-C.
Every output is written under a temporary name and renamed once all outputs of that image are
complete; then its record is appended to the journal. A rerun (after Ctrl-C or kill -9) skips the
inputs with a record and all outputs, removes the temporaries a killed run left, and every run
assembles boxes.json and the COCO file from the journal (docs/robustness.md, *Crash safety*). With --workers N (default min(4, CPUs)), N threads decode the next images while the
model runs and one thread writes the outputs behind it, in input order; --workers 0 runs
everything in turn. See docs/robustness.md for the behaviour on each kind of bad input.
Videos (detected by content) are segmented frame by frame into mask / overlay / cut-out videos and
per-frame boxes by found.video; each counts as one input (docs/video.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..engine import DEFAULT_MAX_SIDE, EDGES, MODES, READ_AHEAD_CHUNKS, Engine, default_workers
from ..errors import FoundError
from ..io.coco import require_pycocotools
from ..io.files import FATAL_WRITE_ERRNOS, atomic_write_text, check_writable
from ..io.sources import Job, collect_inputs, path_key
from ..video import ALPHA_CODECS, FrameResult, VideoOutputs, VideoReader, input_kind, segment_video
from ..io.sinks import (BOXES_FILE, INTERRUPTED, OUTPUT_SUFFIXES, BoxesFile, CocoFile, ImageOutputs, Outcome, RunFile,
                        RunOutputs, write_results)
from .common import add_instance_args, add_model_args, check_batch_options, cli_message, model_from_args
from ..options import RunOptions
from .distributed import add_ray_args
from .resume import open_journal, sweep_temporaries

#: Chunks (of --batch-size images) whose outputs may wait to be written, behind the model.
PENDING_WRITE_CHUNKS = 2
__all__ = ["READ_AHEAD_CHUNKS", "PENDING_WRITE_CHUNKS", "add_parser", "default_workers", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``found segment``: inputs, outputs, run options, video, instance, Ray and model flags."""
    p = sub.add_parser("segment", help="segment the main object(s) of images", description=__doc__)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the outputs")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders of folder inputs")
    o = p.add_argument_group("outputs (default: --mask)")
    o.add_argument("--mask", action="store_true", help="binary mask PNG (<name>_mask.png, 0/255)")
    o.add_argument("--soft", action="store_true", help="soft mask PNG (<name>_soft.png, probability × 255)")
    o.add_argument("--cutout", action="store_true", help="RGBA cut-out PNG (<name>_cutout.png)")
    o.add_argument("--overlay", action="store_true", help="mask and box drawn over the image (<name>_overlay.png)")
    o.add_argument("--boxes", action="store_true", help=f"one {BOXES_FILE} for the run (xyxy and COCO xywh boxes, sizes, scores; "
                   f"with --coco or an instance option also every object's box, area and score)")
    o.add_argument("--coco", metavar="FILE", help="also write the run's objects as one COCO dataset (instances with "
                   "compressed-RLE masks, one 'object' category; needs pip install 'found[coco]')")
    o.add_argument("--all", action="store_true", help="every output above (not --coco)")
    p.add_argument("--mode", choices=MODES, default="multi", help="'multi' keeps the whole mask, 'single' its main component")
    p.add_argument("--refine", action="store_true", help="bilateral-solver refinement (kept only if IoU with the mask > 0.5)")
    p.add_argument("--overwrite", action="store_true", help="start afresh: redo every input and restart the run journal (default: skip inputs "
                   "already done: a record in OUTDIR/.found-journal.jsonl and all outputs on disk)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (same-size images are batched)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="threads that decode the next images while the model runs; outputs are then encoded and "
                        "written by one more background thread, in input order (default min(4, CPUs); "
                        "0 = no threads, everything in turn; results are the same either way)")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, metavar="PX",
                   help=f"the working scale: images whose longer side exceeds PX are decoded and processed at that size "
                        f"(default {DEFAULT_MAX_SIDE}, the scale the paper measured its masks at); every output is "
                        f"still written at the image's full size (0 = native resolution: slower, memory grows with the image)")
    p.add_argument("--edges", choices=EDGES, default="guided",
                   help="how cut-outs of images processed reduced reach full size: guided = along the full-size image's "
                        "edges (fast guided filter; default), bilinear = stretched like the masks")
    p.add_argument("--report", metavar="PATH", help="also write the run report as JSON (counts, failures, notes)")
    v = p.add_argument_group("videos (any file PyAV reads, detected by content; needs found[video]; see docs/video.md)")
    v.add_argument("--frames", action="store_true", help="write a video's outputs as PNG frames in <name>_frames/ instead of videos")
    v.add_argument("--every", type=int, default=1, metavar="N", help="run the model on one frame in N, holding its mask in between")
    v.add_argument("--smooth", type=float, default=None, metavar="ALPHA",
                   help="moving average of the logits over frames, weight ALPHA in (0, 1] on the new frame (not in the paper)")
    v.add_argument("--alpha-codec", choices=list(ALPHA_CODECS), default="vp9",
                   help="cut-out video with alpha: vp9 (WebM, default) or prores (ProRes 4444 MOV)")
    add_instance_args(p)
    add_ray_args(p)
    add_model_args(p)
    # every output is closed and renamed when run() returns: the process may skip Python's teardown
    p.set_defaults(func=run, fast_exit=True)


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
    temporaries_removed: int = 0  # left by a killed earlier run, removed at the start

    def fail(self, path: object, why: str) -> None:
        """Record ``path`` as failed with ``why``, without the path prefix the message may already carry."""
        self.failures.append((str(path), why.removeprefix(f"{path}: ")))

    def to_dict(self) -> dict:
        """The report as data (``--report``): what tests and scripts read instead of the wording."""
        return {"ok": self.ok, "skipped": self.skipped, "not_processed": self.not_processed, "stopped": self.stopped,
                "failed": [{"input": p, "reason": r} for p, r in self.failures],
                "notes": [{"input": p, "note": n} for p, n in self.notes], "downscaled": list(self.downscaled),
                "temporaries_removed": self.temporaries_removed}

    def print(self, max_side: int) -> None:
        """Print the run report to stderr: counts, failures, notes, downscaled images and why the run stopped."""
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
                  f"(the working scale; outputs written at full size; --max-side 0 = native resolution)", file=err)
            for path in self.downscaled[:10]:
                print(f"    downscaled: {path}", file=err)
            if n > 10:
                print(f"    … and {n - 10} more (see 'downscaled' in {BOXES_FILE} with --boxes)", file=err)
        if self.stopped:
            print(f"  stopped: {self.stopped}; finished outputs are kept, rerun the same command to resume", file=err)


@dataclass
class Plan:
    """What a run will do: its outputs (images, journal, run files), the inputs still to process,
    and the skipped count."""

    outdir: Path
    outputs: RunOutputs
    todo: list[Job]
    skipped: int
    input_failures: list[tuple[str, str]] = field(default_factory=list)
    videos: list[Job] = field(default_factory=list)  # inputs that are videos (not in todo)
    video: VideoOutputs | None = None



def _output_folder(path: str) -> Path:
    outdir = Path(path)
    if outdir.exists() and not outdir.is_dir():
        raise FoundError(f"output {outdir} exists and is not a folder")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        check_writable(outdir)
    except OSError as e:
        raise FoundError(f"output folder {outdir} is not usable: {e.strerror or e}") from None
    return outdir


def _wants_instances(args: argparse.Namespace, options: RunOptions) -> bool:
    """Objects are listed (boxes.json) when asked for: --coco, or an instance filter."""
    return bool(args.coco) or options.instance_filter is not None


def _run_files(args: argparse.Namespace, outdir: Path, inputs: set, want_boxes: bool, created: str,
               instances: bool) -> list[RunFile]:
    """boxes.json and the COCO file, when asked for (neither may be an input)."""
    files: list[RunFile] = []
    if want_boxes:
        if path_key(outdir / BOXES_FILE) in inputs:
            raise FoundError(f"{outdir / BOXES_FILE} is an input; choose another -o")
        files.append(BoxesFile(outdir / BOXES_FILE, args.mode, instances=instances))
    if args.coco:
        if path_key(Path(args.coco)) in inputs:
            raise FoundError(f"--coco {args.coco} is an input; choose another file")
        try:
            Path(args.coco).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FoundError(f"--coco {args.coco}: cannot create its folder ({e.strerror or e})") from None
        files.append(CocoFile(Path(args.coco), created=created))
    return files


def plan_run(args: argparse.Namespace, options: RunOptions) -> Plan:
    """Outputs chosen, inputs collected, outputs that would overwrite an input refused, the journal
    opened, and the inputs done skipped: those with a record in the journal and all their outputs
    (none with --overwrite). The caller closes ``plan.outputs.journal``."""
    kinds = [k for k in OUTPUT_SUFFIXES if getattr(args, k) or args.all]
    want_boxes = args.boxes or args.all
    if not kinds and not want_boxes and not args.coco:
        kinds = ["mask"]
    outdir = _output_folder(args.output)
    jobs, input_failures = collect_inputs(args.inputs, args.recursive, outdir)
    images = ImageOutputs(outdir, kinds)
    video = VideoOutputs(outdir, kinds, boxes=want_boxes, frames=args.frames, alpha_codec=args.alpha_codec)
    is_video = {path_key(j.path) for j in jobs if input_kind(j.path) == "video"}
    inputs = {path_key(j.path) for j in jobs}
    for j in jobs:
        for out in images.paths(j.stem) + video.paths(j.stem):
            if path_key(out) in inputs:
                raise FoundError(f"output {out} would overwrite an input; choose another -o")
    if args.coco:
        require_pycocotools()
    journal = open_journal(outdir, options, args)
    try:
        instances = _wants_instances(args, options)
        outputs = RunOutputs(images, _run_files(args, outdir, inputs, want_boxes, journal.created, instances), journal,
                             instances=instances)
    except BaseException:
        journal.close()
        raise

    def done(j: Job) -> bool:
        """True when a job's outputs all exist and the journal records it finished (so a rerun skips it)."""
        if path_key(j.path) in is_video:
            return video.exist(j.stem) and outputs.video_finished(str(j.path))
        return images.exist(j.stem) and outputs.finished(str(j.path))

    todo = [j for j in jobs if not done(j)]
    plan = Plan(outdir, outputs, [j for j in todo if path_key(j.path) not in is_video], len(jobs) - len(todo),
                input_failures, [j for j in todo if path_key(j.path) in is_video], video)
    return plan


def run(args: argparse.Namespace) -> int:
    """``found segment``: every input through the engine into OUTDIR, then the report; exit 0, 1 (failures) or 130."""
    if getattr(args, "ray", None) is not None:  # the same run on a Ray cluster (found.ray)
        from .distributed import run as run_on_ray

        args.fast_exit = False  # Ray's own shutdown runs at exit
        return run_on_ray(args)
    started = time.time()
    options = check_batch_options(args)  # the flags as one RunOptions, validated there
    plan = plan_run(args, options)
    try:
        report = Report(skipped=plan.skipped, temporaries_removed=sweep_temporaries(plan.outdir, args.coco, started))
        for arg, why in plan.input_failures:
            report.fail(arg, why)
        interrupted = _work(plan, report, args, options)
        for path, e in plan.outputs.close():  # the run files, from the journal: after every run
            report.fail(path, f"cannot write ({e.strerror or e}); previous content kept")
    finally:
        plan.outputs.journal.close(discard_empty=True)
    _finish_report(report, args)
    if interrupted:
        return 130
    return 1 if report.failures or report.not_processed else 0


def _work(plan: Plan, report: Report, args: argparse.Namespace, options: RunOptions) -> bool:
    """Load the model when there is work, then the images and the videos; True when stopped by Ctrl-C."""
    if not plan.todo and not plan.videos:
        return False
    engine = Engine(model_from_args(args), options)
    interrupted = False
    if plan.todo:
        interrupted = _process(engine, plan, report, args)
        if interrupted or report.stopped:
            report.not_processed += len(plan.videos)
    if plan.videos and not interrupted and not report.stopped:
        interrupted = process_videos(engine, plan, report, args)
    return interrupted


def _process(engine: Engine, plan: Plan, report: Report, args: argparse.Namespace) -> bool:
    """Run the engine over the plan's inputs, write behind it (outputs, then the record into the
    journal) and read back each outcome into the report; True when stopped by Ctrl-C."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(plan.todo), unit="img", desc="segment", disable=not args.progress)
    n_failed = len(report.failures)
    outputs = plan.outputs
    writes = write_results(engine.run(j.path for j in plan.todo), plan.todo,
                           lambda result, job: outputs.write(result, job.stem, str(job.path), job.name),
                           threaded=engine.workers > 0, max_pending=PENDING_WRITE_CHUNKS * args.batch_size)
    try:
        for o in writes:
            _record(o, report, debug=engine.debug)
            bar.update(1)
    except KeyboardInterrupt:  # between two outcomes: what was predicted is still written
        for o in writes.salvage():
            _record(o, report, debug=engine.debug)
    bar.close()
    stopped = writes.stopped
    report.stopped = stopped if stopped in ("", INTERRUPTED) else f"{stopped} in {plan.outdir}"
    report.not_processed = len(plan.todo) - report.ok - (len(report.failures) - n_failed)
    return stopped == INTERRUPTED


def process_videos(engine: Engine, plan: Plan, report: Report, args: argparse.Namespace) -> bool:
    """Each video job through :func:`segment_video`, its frames written by :meth:`VideoOutputs.write`
    (one input each in the report); True on Ctrl-C."""
    from tqdm.auto import tqdm

    for i, job in enumerate(plan.videos):
        bar = tqdm(unit="frame", desc=job.path.name, disable=not args.progress)
        try:
            with VideoReader(job.path) as reader:
                frames = _counted(segment_video(reader, engine, every=args.every, smooth=args.smooth), bar)
                summary = plan.video.write(reader.path, reader.info, frames, job.stem)
        except KeyboardInterrupt:
            report.stopped = INTERRUPTED
            report.not_processed += len(plan.videos) - i
            return True
        except FoundError as e:
            if engine.debug:
                raise
            report.fail(job.path, cli_message(e))
            continue
        except OSError as e:
            report.fail(job.path, f"cannot write outputs: {e.strerror or e} (nothing written for this video)")
            if e.errno in FATAL_WRITE_ERRNOS:
                report.stopped = f"{e.strerror or e} in {plan.outdir}"
                report.not_processed += len(plan.videos) - i - 1
                return False
            continue
        finally:
            bar.close()
        plan.outputs.add_video(str(job.path), job.name, summary.record())  # only now is the video finished
        if summary.error:
            report.fail(job.path, summary.error)
        else:
            report.ok += 1
        report.notes.extend((str(job.path), n) for n in summary.notes)
    return False


def _counted(frames: Iterator[FrameResult], bar) -> Iterator[FrameResult]:
    """``frames``, counted on the progress bar as the sink takes them (closing this closes them)."""
    try:
        for fr in frames:
            bar.update(1)
            yield fr
    finally:
        frames.close()  # type: ignore[attr-defined]  # stops the decoding thread before the reader closes


def _record(o: Outcome, report: Report, debug: bool) -> None:
    """One input's outcome into the report (its record is already in the journal)."""
    job: Job = o.key  # type: ignore[assignment]
    if not o.ok:
        if o.exception is not None:
            if debug:
                raise o.exception
            report.fail(job.path, f"{o.error}; rerun with --debug for the traceback")
        else:
            report.fail(job.path, o.error or "")
        return
    report.ok += 1
    report.notes.extend((str(job.path), n) for n in o.result.notes if not n.startswith("downscaled"))
    if o.result.downscaled:
        li = o.result.image
        report.downscaled.append(f"{job.path} ({li.original_size[0]}×{li.original_size[1]} → {li.size[0]}×{li.size[1]})")


def _finish_report(report: Report, args: argparse.Namespace) -> None:
    report.print(args.max_side)
    if getattr(args, "report", None):
        try:
            atomic_write_text(Path(args.report), json.dumps(report.to_dict(), indent=1))
        except OSError as e:
            print(f"found segment: cannot write the report {args.report}: {e.strerror or e}", file=sys.stderr)
