"""A video's frames, decoded in order and streamed: :class:`VideoReader` (one open file),
:func:`iter_video_frames`, and :func:`prefetch` (decoding in a background thread, bounded)."""
from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import InputError
from .probe import error_text, open_container, stream_info

__all__ = ["VideoDecodeError", "VideoFrame", "VideoReader", "iter_video_frames", "prefetch"]


class VideoDecodeError(InputError):
    """Decoding stopped early (truncated or corrupt file); ``frames`` were decoded before it."""

    def __init__(self, message: str, frames: int) -> None:
        super().__init__(message)
        self.frames = frames


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


class VideoReader:
    """An open video: its ``path``, its ``info``, and its frames decoded in order (each frame's errors
    wrapped). Opening checks the file (one-line InputError); ``with VideoReader(p) as r:`` closes it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.container = open_container(self.path)
        try:
            self.info = stream_info(self.path, self.container)
        except BaseException:
            self.container.close()
            raise
        self.error: VideoDecodeError | None = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (frames already handed out keep their pixels once converted)."""
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
                raise InputError(f"{self.path}: cannot decode the video ({error_text(e)})") from None
            self.error = VideoDecodeError(f"decoding stopped after {index} frames ({error_text(e)}); "
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
    reader = VideoReader(path)
    try:
        yield from reader.frames()
    finally:
        reader.close()
    if reader.error is not None:
        raise reader.error


def prefetch(frames: Iterator[VideoFrame], every: int, depth: int) -> Iterator[VideoFrame]:
    """``frames`` decoded in a background thread, ``depth`` ahead (the RGB of processed frames
    converted there too); closing the iterator stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        """Hand ``item`` to the consumer, waiting while the queue is full; False once the consumer has stopped."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        """The thread: decode the frames (RGB of processed ones too) into the queue, then the end mark or the error."""
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
