"""Video files through the engine, streamed frame by frame: masks, overlays, cut-outs and boxes.

* :func:`is_video` / :func:`input_kind` — content detection: a file Pillow opens is an image
  (animated GIFs included); otherwise PyAV is asked whether it holds a video stream.
* :func:`iter_video_frames` — decoded frames with their index, pts and time in seconds.
* :func:`segment_video` — one :class:`FrameResult` per frame, in order: frames are decoded in a
  background thread, batched through :class:`found.engine.Engine` and handed out as they come, so
  memory stays bounded whatever the video's length. ``every=N`` runs the model on one frame in N
  and holds its mask for the frames in between; ``smooth=ALPHA`` is an exponential moving average
  of the patch logits over frames (an addition to the paper, off by default).
* :class:`VideoOutputs` — the per-video outputs of ``found segment``: mask / soft / overlay videos
  (same fps, size and timestamps; audio copied into the overlay), a cut-out with alpha (WebM VP9
  or ProRes 4444 MOV), or PNG frames, and ``<name>_boxes.jsonl``; all written under temporary
  names and renamed together once complete.

PyAV (the ``found[video]`` extra) is imported only when a video is read or written.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import queue
import shutil
import tempfile
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from .engine import Engine, Result
from .errors import FoundError, InputError
from .extras import require
from .io.files import AtomicGroup
from .io.images import VIDEO_SUFFIXES
from .io.sinks import ALPHA_CODECS, VIDEO_OUTPUT_ENDINGS, VIDEO_OUTPUT_SUFFIXES
from .io.sinks import cutout_image, mask_image, overlay_image, soft_image

__all__ = ["ALPHA_CODECS", "VIDEO_OUTPUT_SUFFIXES", "VIDEO_SUFFIXES", "FrameResult", "VideoDecodeError",
           "VideoFrame", "VideoInfo", "VideoOutputs", "VideoSummary", "input_kind", "is_video", "iter_video_frames",
           "probe_video", "segment_video", "smoothed_model"]

#: Audio codecs an MP4 can hold: copied into the overlay as they are (others are left out, with a note).
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"}
#: Frames decoded ahead of the engine (in a background thread).
DECODE_AHEAD = 8
#: Frames whose outputs may wait to be encoded behind the model (one background thread).
PENDING_ENCODES = 16


class VideoDecodeError(InputError):
    """Decoding stopped early (truncated or corrupt file); ``frames`` were decoded before it."""

    def __init__(self, message: str, frames: int) -> None:
        super().__init__(message)
        self.frames = frames


def _av():
    """The ``av`` module, or a one-line error saying how to install it."""
    return require("av", "video", "reading videos")


def _why(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e)
    text = " ".join(str(text).split())[:200]
    return text or type(e).__name__


# ---------------------------------------------------------------------------- detection
def _pillow_image(path: Path) -> bool:
    """True when Pillow identifies the file as an image it can decode (MPEG is only identified)."""
    try:
        with Image.open(path) as im:
            return im.format != "MPEG"
    except Exception:
        return False


#: Demuxers that read still images or text (PyAV opens them, but such files are not videos).
_NOT_VIDEO_DEMUXERS = ("image2", "gif", "apng", "webp", "ico", "tty", "txt")


def _av_probe(path: Path) -> tuple[int, int] | None:
    """(video streams, all streams) when PyAV opens the file as a video container, else None."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            names = c.format.name.split(",")
            if any(n in _NOT_VIDEO_DEMUXERS or n.endswith("_pipe") for n in names):
                return None
            return len(c.streams.video), len(c.streams)
    except Exception:
        return None


def is_video(path: str | os.PathLike) -> bool:
    """True when ``path`` is not an image Pillow reads and PyAV finds a video stream in it."""
    p = Path(path)
    if not p.is_file() or _pillow_image(p):
        return False
    streams = _av_probe(p)
    return streams is not None and streams[0] > 0


def input_kind(path: str | os.PathLike) -> str:
    """How ``found segment`` treats a file: "image" (Pillow reads it, or nothing claims it: the image
    path words the error) or "video" (PyAV opens it as a container, or its name says video: the
    video path words the error, e.g. "no video stream")."""
    p = Path(path)
    if not p.is_file() or _pillow_image(p):
        return "image"
    if _av_probe(p) is not None or p.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    return "image"


# ---------------------------------------------------------------------------- reading
@dataclass
class VideoInfo:
    """What the file declares about its first video stream."""

    width: int
    height: int
    fps: Fraction | None  # average frame rate (None when unknown)
    time_base: Fraction
    codec: str
    frames: int  # declared frame count (0 when the container does not say)
    duration: float | None  # seconds, when declared
    audio: str | None  # codec of the first audio stream, if any


@dataclass
class VideoFrame:
    """One decoded frame: ``index`` in presentation order, ``pts`` (in ``time_base``), ``time`` in seconds."""

    index: int
    pts: int
    time: float
    duration: int  # pts units until the next frame (estimated for the last one)
    _frame: Any = field(default=None, repr=False)
    _rgb: np.ndarray | None = field(default=None, repr=False)
    _size: tuple[int, int] = (0, 0)

    def rgb(self) -> np.ndarray:
        """uint8 [H, W, 3] RGB at the video's size (converted once, then cached)."""
        if self._rgb is None:
            w, h = self._size
            self._rgb = self._frame.to_ndarray(format="rgb24", width=w, height=h)
            self._frame = None
        return self._rgb


def _open_input(path: Path):
    av = _av()
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a video")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except Exception as e:
        raise InputError(f"{path}: not a video or image that can be read ({_why(e)})") from None


def _declared_duration(container, stream) -> float | None:
    """The video stream's duration in seconds: its own, else the container's when it is the only stream."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and len(container.streams) == 1:
        return container.duration / 1_000_000
    return None


def _info(path: Path, container) -> VideoInfo:
    """The first video stream's properties; a file without one, or one nothing decodes, is an InputError."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        has = f" (it has {', '.join(kinds)} only)" if kinds else ""
        raise InputError(f"{path}: no video stream{has}")
    s = container.streams.video[0]
    ctx = s.codec_context
    if ctx is None or ctx.name in (None, "none"):
        raise InputError(f"{path}: unsupported video codec ({s.codec_context.name if ctx else 'unknown'}); this PyAV build cannot decode it")
    if not s.width or not s.height:
        raise InputError(f"{path}: video stream has no frame size (unsupported or corrupt)")
    fps = s.average_rate or s.guessed_rate
    audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
    return VideoInfo(s.width, s.height, Fraction(fps) if fps else None, Fraction(s.time_base or Fraction(1, 90000)),
                     ctx.name, int(s.frames or 0), _declared_duration(container, s), audio)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """What ``path`` declares (size, fps, codec, frames, duration, audio); bad files raise InputError."""
    with _open_input(Path(path)) as c:
        return _info(Path(path), c)


class _Reader:
    """An open video: its info, and its frames decoded in order (each frame's errors wrapped)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.container = _open_input(self.path)
        try:
            self.info = _info(self.path, self.container)
        except BaseException:
            self.container.close()
            raise
        self.error: VideoDecodeError | None = None

    def close(self) -> None:
        self.container.close()

    def frames(self) -> Iterator[VideoFrame]:
        """Frames in presentation order; decoding errors end the stream and are kept in ``error``."""
        stream = self.container.streams.video[0]
        stream.thread_type = "AUTO"
        tb, info = self.info.time_base, self.info
        step = max(1, round(1 / (info.fps * tb))) if info.fps else 1
        index, last, end = 0, None, 0.0
        try:
            for frame in self.container.decode(stream):
                pts = frame.pts if frame.pts is not None else (0 if last is None else last + step)
                if last is not None and pts <= last:
                    pts = last + 1  # repeated or missing timestamps: keep them strictly increasing
                last = pts
                end = float((pts + step) * tb)
                yield VideoFrame(index, pts, float(pts * tb), step, frame, None, (info.width, info.height))
                index += 1
        except Exception as e:
            if index == 0:
                raise InputError(f"{self.path}: cannot decode the video ({_why(e)})") from None
            self.error = VideoDecodeError(f"decoding stopped after {index} frames ({_why(e)}); "
                                          f"the outputs hold the frames decoded", index)
            return
        if index == 0:
            raise InputError(f"{self.path}: the video has no frames")
        start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        if info.duration and end - start + 2 * step * float(tb) < info.duration:
            self.error = VideoDecodeError(
                f"the video ended after {index} frames ({end - start:.2f} s of the {info.duration:.2f} s it declares: "
                f"truncated or corrupt); the outputs hold the frames decoded", index)


def iter_video_frames(path: str | os.PathLike) -> Iterator[VideoFrame]:
    """The frames of ``path`` in order (``frame.rgb()`` gives the pixels).

    A file that cannot be opened, has no video stream or no frame raises :class:`InputError` at
    once; a truncated or corrupt one yields the frames decoded so far, then raises
    :class:`VideoDecodeError`.
    """
    reader = _Reader(path)
    try:
        yield from reader.frames()
    finally:
        reader.close()
    if reader.error is not None:
        raise reader.error


def _prefetch(frames: Iterator[VideoFrame], every: int, depth: int) -> Iterator[VideoFrame]:
    """``frames`` decoded in a background thread, ``depth`` ahead (the RGB of processed frames
    converted there too); closing the iterator stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for fr in frames:
                if fr.index % every == 0:
                    fr.rgb()
                if not put(fr):
                    return
            put(done)
        except BaseException as e:  # handed to the consumer
            put(e)

    t = threading.Thread(target=work, name="found-video-decode", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()


# ---------------------------------------------------------------------------- smoothing
class LogitsEMA:
    """Exponential moving average of patch logits over consecutive frames (an addition to the paper):
    ``s_k = alpha * l_k + (1 - alpha) * s_(k-1)``; ``alpha=1`` is no smoothing. It restarts when
    the frame size changes."""

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise FoundError(f"smoothing alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.state = None

    def __call__(self, logits):
        out = logits.clone()
        for i in range(out.shape[0]):
            if self.state is not None and self.state.shape == out[i].shape:
                out[i] = self.alpha * out[i] + (1 - self.alpha) * self.state
            self.state = out[i].clone()
        return out


def smoothed_model(model, alpha: float):
    """A shallow copy of ``model`` (same weights) whose ``patch_logits`` pass through a fresh
    :class:`LogitsEMA`: ``predict`` then thresholds the smoothed logits. Frames must be given in
    order (the engine keeps input order, and a video's frames share one padded size)."""
    ema = LogitsEMA(alpha)
    inner = model.patch_logits
    m = copy.copy(model)
    m.patch_logits = lambda x: ema(inner(x))  # an instance attribute shadows the method for predict()
    return m


# ---------------------------------------------------------------------------- segmentation
@dataclass
class FrameResult:
    """One frame and the engine result whose mask it uses (its own, or the last processed one)."""

    frame: VideoFrame
    result: Result  # the engine's result (index = position among processed frames)
    processed: bool  # False for a frame that holds the mask of the last processed frame (--every)

    @property
    def index(self) -> int:
        return self.frame.index

    @property
    def pts(self) -> int:
        return self.frame.pts

    @property
    def time(self) -> float:
        return self.frame.time

    @property
    def prediction(self):
        return self.result.prediction

    def rgb(self) -> np.ndarray:
        return self.frame.rgb()


def segment_video(source: str | os.PathLike | _Reader, engine: Engine, every: int = 1,
                  smooth: float | None = None) -> Iterator[FrameResult]:
    """One :class:`FrameResult` per frame of the video, in order, streamed (see the module docstring).

    ``every=N`` runs the model on frames 0, N, 2N, … and gives the frames in between the last
    processed frame's result. ``smooth`` (alpha in (0, 1]) smooths the logits over processed
    frames. A truncated file yields the frames decoded, then raises :class:`VideoDecodeError`;
    a frame the model fails on raises its :class:`FoundError`.
    """
    if every < 1:
        raise FoundError(f"every must be at least 1, got {every}")
    if smooth is not None:
        engine = copy.copy(engine)
        engine.model = smoothed_model(engine.model, smooth)
    reader = source if isinstance(source, _Reader) else _Reader(source)
    frames = _prefetch(reader.frames(), every, DECODE_AHEAD)
    stash: deque[VideoFrame] = deque()  # decoded, not handed out yet

    def to_engine() -> Iterator[np.ndarray]:
        for fr in frames:
            stash.append(fr)
            if fr.index % every == 0:
                yield fr.rgb()

    results = engine.run(to_engine())
    current: Result | None = None
    try:
        for res in results:
            if not res.ok:
                raise type(res.error)(f"{reader.path}: frame {res.index * every}: {res.error}")
            while stash and stash[0].index < res.index * every:
                yield FrameResult(stash.popleft(), current, False)  # type: ignore[arg-type]
            yield FrameResult(stash.popleft(), res, True)
            current = res
        while stash:
            yield FrameResult(stash.popleft(), current, False)  # type: ignore[arg-type]
    finally:
        results.close()
        frames.close()
        if not isinstance(source, _Reader):
            reader.close()
    if reader.error is not None:
        raise reader.error


# ---------------------------------------------------------------------------- writing
def _encoder(name: str, purpose: str) -> None:
    """A one-line error when this PyAV build lacks the encoder ``name``."""
    av = _av()
    try:
        av.codec.Codec(name, "w")
    except Exception:
        raise FoundError(f"this PyAV build has no {name} encoder (needed for {purpose})") from None


class _AudioCopy:
    """The first audio stream of ``src`` copied, packet by packet, into ``out`` as video is written
    (its own demuxer, so nothing is buffered beyond one packet)."""

    def __init__(self, src: Path, out) -> None:
        self.src = _av().open(str(src), metadata_errors="ignore")
        ain = self.src.streams.audio[0]
        self.tb = ain.time_base
        self.stream = out.add_stream_from_template(ain)
        self.packets = self.src.demux(ain)
        self.next = None
        self.done = False

    def until(self, t: float, mux: Callable) -> None:
        """Mux the packets that start before ``t`` seconds."""
        while not self.done:
            if self.next is None:
                try:
                    pkt = next(self.packets)
                except Exception:  # end of file, or a truncated one: stop copying
                    self.done = True
                    return
                if pkt.dts is None or pkt.size == 0:
                    continue
                self.next = pkt
            if self.next.pts is not None and float(self.next.pts * self.tb) >= t:
                return
            self.next.stream = self.stream
            mux(self.next)
            self.next = None

    def close(self) -> None:
        self.src.close()


class _VideoSink:
    """One output video at a temporary path: frames keep the input's timestamps (time base, pts)."""

    def __init__(self, path: Path, fmt: str, codec: str, pix_fmt: str, info: VideoInfo, options: dict,
                 audio_from: Path | None = None) -> None:
        av = _av()
        self.container = av.open(str(path), "w", format=fmt)
        try:
            s = self.container.add_stream(codec, rate=info.fps or Fraction(25), options=options)
            s.width, s.height, s.pix_fmt = info.width, info.height, pix_fmt
            s.time_base = info.time_base
            s.codec_context.time_base = info.time_base
            self.stream, self.tb = s, info.time_base
            self.audio = _AudioCopy(audio_from, self.container) if audio_from is not None else None
        except BaseException:
            self.container.close()
            raise
        self.end = 0.0

    def add(self, pixels: np.ndarray, fmt: str, fr: VideoFrame) -> None:
        frame = _av().VideoFrame.from_ndarray(pixels, format=fmt)
        frame.pts, frame.time_base, frame.duration = fr.pts, self.tb, fr.duration
        self.end = float((fr.pts + fr.duration) * self.tb)
        if self.audio is not None:
            self.audio.until(fr.time, self.container.mux)
        for pkt in self.stream.encode(frame):
            self.container.mux(pkt)

    def close(self) -> None:
        try:
            for pkt in self.stream.encode():
                self.container.mux(pkt)
            if self.audio is not None:
                self.audio.until(self.end, self.container.mux)
        finally:
            self.abort()

    def abort(self) -> None:
        if self.audio is not None:
            self.audio.close()
        self.container.close()


def _tmp_dir_beside(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` onto ``final`` (an older ``final`` is removed)."""
    if final.is_dir() and not final.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
        os.replace(final, old / "old")
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _instance_records(pred) -> list[dict] | None:
    instances = getattr(pred, "instances", None)
    if instances is None:
        return None
    return [i.to_dict() if hasattr(i, "to_dict") else dict(i) for i in instances]


def frame_record(fr: FrameResult) -> dict:
    """One line of ``<name>_boxes.jsonl``: frame index, pts, time, box (xyxy and COCO xywh), score,
    whether the model ran on this frame, and the instances when the prediction has them."""
    pred = fr.prediction
    rec: dict = {"frame": fr.index, "time": round(fr.time, 6), "pts": fr.pts, "processed": fr.processed,
                 "score": round(float(pred.score), 6), "box_xyxy": None, "box_xywh": None}
    if pred.box is not None:
        x1, y1, x2, y2 = (int(v) for v in pred.box)
        rec["box_xyxy"], rec["box_xywh"] = [x1, y1, x2, y2], [x1, y1, x2 - x1, y2 - y1]
    instances = _instance_records(pred)
    if instances is not None:
        rec["instances"] = instances
    return rec


class _FrameWriter:
    """Every chosen output of one video, written frame by frame to temporary paths."""

    def __init__(self, outputs: VideoOutputs, stem: str, reader: _Reader, group: AtomicGroup) -> None:
        self.kinds, self.sinks, self.boxes, self.folder = outputs.kinds, {}, None, None
        self.frames_final: Path | None = None
        base = str(outputs.outdir / stem)
        try:
            if outputs.frames and self.kinds:
                self.frames_final = Path(base + VIDEO_OUTPUT_SUFFIXES["frames"])
                self.folder = _tmp_dir_beside(self.frames_final)
            else:
                for kind in self.kinds:
                    self.sinks[kind] = self._sink(outputs, kind, group.path(outputs.path(stem, kind)), reader)
            if outputs.boxes:
                self.boxes = open(group.path(outputs.path(stem, "boxes")), "w", encoding="utf-8")
        except BaseException:
            self.abort()
            raise

    @staticmethod
    def _sink(outputs: VideoOutputs, kind: str, tmp: Path, reader: _Reader) -> _VideoSink:
        info = reader.info
        if kind == "cutout":
            fmt, _, codec, pix, opts = ALPHA_CODECS[outputs.alpha_codec]
            _encoder(codec, f"the {outputs.alpha_codec} cut-out; try --alpha-codec or --frames")
            return _VideoSink(tmp, fmt, codec, pix, info, dict(opts))
        _encoder("libx264", f"the {kind} video; try --frames")
        if kind in ("mask", "soft"):  # lossless grey: the mask read back is the mask written
            return _VideoSink(tmp, "mp4", "libx264", "gray", info, {"qp": "0", "preset": "veryfast"})
        even = info.width % 2 == 0 and info.height % 2 == 0  # 4:2:0 needs even sizes; odd ones get 4:4:4
        audio = reader.path if info.audio in MP4_AUDIO else None
        return _VideoSink(tmp, "mp4", "libx264", "yuv420p" if even else "yuv444p", info,
                          {"crf": "20", "preset": "veryfast"}, audio_from=audio)

    def add(self, fr: FrameResult) -> None:
        """Encode one frame into every output (runs on the encoding thread, in frame order)."""
        pred = fr.prediction
        needs_rgb = any(k in self.kinds for k in ("cutout", "overlay"))
        rgb = fr.rgb() if needs_rgb else None
        images = {}
        if "mask" in self.kinds:
            images["mask"] = mask_image(pred.mask)
        if "soft" in self.kinds:
            images["soft"] = soft_image(pred)
        if "overlay" in self.kinds:
            images["overlay"] = overlay_image(rgb, pred.mask, pred.box)
        if "cutout" in self.kinds:
            images["cutout"] = cutout_image(rgb, pred.cutout_mask(rgb))
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
        if self.folder is not None and self.frames_final is not None:
            _replace_dir(self.folder, self.frames_final)
            self.folder = None

    def abort(self) -> None:
        for sink in self.sinks.values():
            with contextlib.suppress(Exception):
                sink.abort()
        if self.boxes is not None:
            self.boxes.close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class _Behind:
    """Calls run in order on one background thread, at most ``max_pending`` waiting; the first
    error is raised in the caller's thread (on the next submit or at :meth:`finish`)."""

    def __init__(self, max_pending: int) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="found-video-encode")
        self.pending: deque[Future] = deque()
        self.max_pending = max(1, max_pending)

    def submit(self, fn: Callable, *args) -> None:
        self.pending.append(self.pool.submit(fn, *args))
        while self.pending and (len(self.pending) > self.max_pending or self.pending[0].done()):
            self.pending.popleft().result()

    def finish(self) -> None:
        while self.pending:
            self.pending.popleft().result()
        self.pool.shutdown(wait=True)

    def abort(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class VideoSummary:
    """What became of one video: frames written, how many the model saw, and why decoding stopped early."""

    path: Path
    info: VideoInfo
    frames: int = 0
    processed: int = 0
    processed_size: tuple[int, int] | None = None  # (w, h) the model saw, when reduced (--max-side)
    error: str | None = None  # a truncated / corrupt file: the outputs hold the frames before it

    @property
    def notes(self) -> list[str]:
        i = self.info
        fps = f", {float(i.fps):.3g} fps" if i.fps else ""
        out = [f"video: {self.frames} frames ({self.processed} processed), {i.width}×{i.height}{fps}"]
        if self.processed_size:
            out.append(f"frames processed at {self.processed_size[0]}×{self.processed_size[1]} (--max-side); "
                       f"outputs at full size")
        return out


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
        suffix = VIDEO_OUTPUT_SUFFIXES[kind] + (ALPHA_CODECS[self.alpha_codec][1] if kind == "cutout" else "")
        return self.outdir / (stem + suffix)

    def paths(self, stem: str) -> list[Path]:
        kinds = (["frames"] if self.kinds else []) if self.frames else list(self.kinds)
        return [self.path(stem, k) for k in kinds + (["boxes"] if self.boxes else [])]

    def exist(self, stem: str) -> bool:
        return all(p.exists() for p in self.paths(stem))

    def write(self, path: str | os.PathLike, engine: Engine, stem: str, *, every: int = 1,
              smooth: float | None = None, on_frame: Callable[[FrameResult], None] | None = None) -> VideoSummary:
        """Segment the video at ``path`` and write its outputs as ``stem``.

        Bad files (no video stream, no frame, unknown codec) raise a one-line InputError and leave
        nothing; a truncated or corrupt one keeps the frames decoded (``summary.error`` says why it
        stopped). OSErrors propagate, with every temporary file removed.
        """
        reader = _Reader(path)
        summary = VideoSummary(Path(path), reader.info)
        group, writer, behind = AtomicGroup(), None, None
        try:
            writer = _FrameWriter(self, stem, reader, group)
            behind = _Behind(PENDING_ENCODES)
            frames = segment_video(reader, engine, every, smooth)
            try:
                for fr in frames:
                    behind.submit(writer.add, fr)
                    summary.frames += 1
                    if fr.processed:
                        summary.processed += 1
                        if fr.result.downscaled and summary.processed_size is None:
                            summary.processed_size = fr.result.image.size
                    if on_frame is not None:
                        on_frame(fr)
            except VideoDecodeError as e:
                summary.error = str(e)
            finally:
                frames.close()  # stops the decoding thread before the file is closed
            behind.finish()
            writer.close()
            writer.commit_folder()
            group.commit()
        except BaseException:
            if behind is not None:
                behind.abort()
            if writer is not None:
                writer.abort()
            group.abort()
            raise
        finally:
            reader.close()
        return summary
