"""The per-video outputs of ``found segment``, written from a stream of :class:`FrameResult`:
mask / soft / overlay videos, an alpha cut-out video or PNG frames, and ``<name>_boxes.jsonl``;
each frame encoded on one background thread behind the model, every output under a temporary
name until all are complete. The caller runs the model (:func:`segment_video`); nothing here does."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import FoundError
from ..io.files import AtomicGroup, replace_dir, temp_dir_beside
from ..io.records import SCHEMA_VERSION, prediction_record
from ..io.render import needs_pixels, render
from ..io.sinks import ALPHA_CODECS, VIDEO_OUTPUT_SUFFIXES, OrderedWriter
from .encode import OutputVideo, open_output_video
from .probe import VideoInfo
from .reader import VideoDecodeError
from .segment import FrameResult

__all__ = ["PENDING_ENCODES", "FrameWriter", "VideoOutputs", "VideoSummary", "frame_record"]

#: Frames whose outputs may wait to be encoded behind the model (one background thread).
PENDING_ENCODES = 16


# ---------------------------------------------------------------------------- a folder of frames, atomically
# ---------------------------------------------------------------------------- one frame's outputs
def frame_record(fr: FrameResult) -> dict:
    """One line of ``<name>_boxes.jsonl``: the schema version, the frame's index, time (s), pts and
    whether the model ran on it, then the record of the prediction it uses (docs/records.md)."""
    return {"schema_version": SCHEMA_VERSION, "frame": fr.index, "time": round(fr.time, 6), "pts": fr.pts,
            "processed": fr.processed, **prediction_record(fr.prediction, fr.result.image)}


class FrameWriter:
    """Every chosen output of one video, written frame by frame to temporary paths."""

    def __init__(self, outputs: VideoOutputs, stem: str, source: Path, info: VideoInfo, group: AtomicGroup) -> None:
        self.kinds, self.boxes, self.folder = outputs.kinds, None, None
        self.sinks: dict[str, OutputVideo] = {}
        self.frames_final: Path | None = None
        base = str(outputs.outdir / stem)
        try:
            if outputs.frames and self.kinds:
                self.frames_final = Path(base + VIDEO_OUTPUT_SUFFIXES["frames"])
                self.folder = temp_dir_beside(self.frames_final)
            else:
                for kind in self.kinds:
                    tmp = group.path(outputs.path(stem, kind))
                    self.sinks[kind] = open_output_video(kind, tmp, outputs.alpha_codec, source, info)
            if outputs.boxes:
                self.boxes = open(group.path(outputs.path(stem, "boxes")), "w", encoding="utf-8")
        except BaseException:
            self.abort()
            raise

    def add(self, fr: FrameResult) -> None:
        """Encode one frame into every output (runs on the encoding thread, in frame order)."""
        rgb = fr.rgb() if needs_pixels(self.kinds) else None  # a video frame has no alpha of its own
        images = {kind: render(kind, fr.prediction, rgb) for kind in self.kinds}
        for kind, im in images.items():
            if self.folder is not None:
                im.save(self.folder / f"{fr.index:06d}_{kind}.png", format="PNG")
            else:
                fmt = {"L": "gray", "RGB": "rgb24", "RGBA": "rgba"}[im.mode]
                self.sinks[kind].add(np.asarray(im), fmt, fr.frame)
        if self.boxes is not None:
            self.boxes.write(json.dumps(frame_record(fr)) + "\n")

    def close(self) -> None:
        """Flush every encoder and file (the group's renames happen after)."""
        for sink in self.sinks.values():
            sink.close()
        self.sinks = {}
        if self.boxes is not None:
            self.boxes.close()

    def commit_folder(self) -> None:
        """Move the finished PNG-frames folder to its final name (with --frames)."""
        if self.folder is not None and self.frames_final is not None:
            replace_dir(self.folder, self.frames_final)
            self.folder = None

    def abort(self) -> None:
        """Close everything without flushing and remove the PNG-frames folder (the group removes the files)."""
        for sink in self.sinks.values():
            with contextlib.suppress(Exception):
                sink.abort()
        if self.boxes is not None:
            self.boxes.close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


# ---------------------------------------------------------------------------- one video's outputs
@dataclass
class VideoSummary:
    """What became of one video: frames written, how many the model saw, and why decoding stopped early."""

    path: Path
    info: VideoInfo
    frames: int = 0
    processed: int = 0
    processed_size: tuple[int, int] | None = None  # (w, h) the model saw, when reduced (--max-side)
    error: str | None = None  # a truncated / corrupt file: the outputs hold the frames before it

    def count(self, fr: FrameResult) -> None:
        """Count one frame handed to the outputs (and the size the model saw it at, when reduced)."""
        self.frames += 1
        if fr.processed:
            self.processed += 1
            if fr.result.downscaled and self.processed_size is None:
                self.processed_size = fr.result.image.size

    @property
    def notes(self) -> list[str]:
        """Report lines: frames written and processed, size and rate, and the working scale when reduced."""
        i = self.info
        fps = f", {float(i.fps):.3g} fps" if i.fps else ""
        out = [f"video: {self.frames} frames ({self.processed} processed), {i.width}×{i.height}{fps}"]
        if self.processed_size:
            out.append(f"frames processed at {self.processed_size[0]}×{self.processed_size[1]} (the working scale); "
                       f"outputs at full size")
        return out

    def record(self) -> dict:
        """The video's summary as a journal record (size, frames written and processed, notes; ``error``
        when decoding stopped early): written once all its outputs are committed."""
        rec = {"width": int(self.info.width), "height": int(self.info.height), "frames": self.frames,
               "processed": self.processed, "processed_size": list(self.processed_size) if self.processed_size else None,
               "notes": self.notes}
        return rec if self.error is None else {**rec, "error": self.error}


def _raise_errors(finished: Iterator[tuple[object, Future]]) -> None:
    """Wait for the finished encodes, raising the first error in the caller's thread."""
    for _, fut in finished:
        fut.result()


def _close_stream(frames: Iterator[FrameResult]) -> None:
    """Close a frame stream that can be closed (a generator: stops its decoding thread and engine)."""
    close = getattr(frames, "close", None)
    if close is not None:
        close()


class VideoOutputs:
    """The chosen per-video outputs in ``outdir`` (see :data:`VIDEO_OUTPUT_SUFFIXES`).

    ``kinds`` among mask, soft, overlay, cutout: one video each (the cut-out in ``alpha_codec``:
    "vp9" → WebM, "prores" → ProRes 4444 MOV), or with ``frames`` PNGs named ``<frame>_<kind>.png``
    in ``<stem>_frames/``; ``boxes`` adds ``<stem>_boxes.jsonl``. All of a video's outputs appear
    together once complete, or not at all.
    """

    def __init__(self, outdir: str | os.PathLike, kinds: list[str], *, boxes: bool = False, frames: bool = False,
                 alpha_codec: str = "vp9") -> None:
        unknown = set(kinds) - {"mask", "soft", "overlay", "cutout"}
        if unknown:
            raise ValueError(f"unknown video outputs {sorted(unknown)}")
        if alpha_codec not in ALPHA_CODECS:
            raise FoundError(f"alpha codec must be one of {', '.join(ALPHA_CODECS)}, got {alpha_codec!r}")
        self.outdir, self.kinds, self.boxes = Path(outdir), list(kinds), boxes
        self.frames, self.alpha_codec = frames, alpha_codec

    def path(self, stem: str, kind: str) -> Path:
        """The final path of output ``kind`` (or "boxes", "frames") for ``stem``."""
        suffix = VIDEO_OUTPUT_SUFFIXES[kind] + (ALPHA_CODECS[self.alpha_codec][1] if kind == "cutout" else "")
        return self.outdir / (stem + suffix)

    def paths(self, stem: str) -> list[Path]:
        """Every final path written for ``stem``."""
        kinds = (["frames"] if self.kinds else []) if self.frames else list(self.kinds)
        return [self.path(stem, k) for k in kinds + (["boxes"] if self.boxes else [])]

    def exist(self, stem: str) -> bool:
        """True when every output of ``stem`` is already there (to skip it)."""
        return all(p.exists() for p in self.paths(stem))

    def write(self, source: str | os.PathLike, info: VideoInfo, frames: Iterable[FrameResult], stem: str) -> VideoSummary:
        """Write ``frames`` (from :func:`segment_video` on the video at ``source``, which declares ``info``)
        as the outputs of ``stem``; the source is read again only to copy its audio into the overlay.

        The stream is consumed here and closed before this returns. A :class:`VideoDecodeError` at its
        end keeps the frames written (``summary.error`` says why it stopped); any other error (a bad
        file's InputError, an OSError) propagates with every temporary file removed and nothing left
        under a final name.
        """
        summary = VideoSummary(Path(source), info)
        stream = iter(frames)
        group, writer, encoder = AtomicGroup(), None, None
        try:
            writer = FrameWriter(self, stem, Path(source), info, group)
            encoder = OrderedWriter(PENDING_ENCODES, thread_name="found-video-encode")
            try:
                for fr in stream:
                    _raise_errors(encoder.submit(None, writer.add, fr))
                    summary.count(fr)
            except VideoDecodeError as e:
                summary.error = str(e)
            finally:
                _close_stream(stream)  # stops the decoding thread before the caller closes the file
            _raise_errors(encoder.ready())
            encoder.close()
            writer.close()
            writer.commit_folder()
            group.commit()
        except BaseException:
            _close_stream(stream)
            if encoder is not None:
                encoder.abort()
            if writer is not None:
                writer.abort()
            group.abort()
            raise
        return summary
