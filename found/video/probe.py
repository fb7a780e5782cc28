"""Which files are videos, and what a video declares: content detection, the container opened with
its first video stream checked, and PyAV itself (imported only when a video is read or written)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InputError
from ..extras import require
from ..io.images import VIDEO_SUFFIXES

__all__ = ["VIDEO_SUFFIXES", "VideoInfo", "error_text", "import_av", "input_kind", "is_video", "open_container",
           "probe_video", "stream_info"]


def import_av() -> Any:
    """The ``av`` module, or a one-line error saying how to install it (PyAV is an optional extra)."""
    return require("av", "video", "reading videos")


def error_text(e: BaseException) -> str:
    """A PyAV / OS error as one short line for a report (its strerror when it has one)."""
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


# ---------------------------------------------------------------------------- what a video declares
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


def open_container(path: Path) -> Any:
    """The file opened by PyAV for reading; a missing, empty or unreadable file is a one-line InputError."""
    av = import_av()
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a video")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except Exception as e:
        raise InputError(f"{path}: not a video or image that can be read ({error_text(e)})") from None


def _declared_duration(container: Any, stream: Any) -> float | None:
    """The video stream's duration in seconds: its own, else the container's when it is the only stream."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and len(container.streams) == 1:
        return container.duration / 1_000_000
    return None


def stream_info(path: Path, container: Any) -> VideoInfo:
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
    with open_container(Path(path)) as c:
        return stream_info(Path(path), c)
