"""Output videos encoded with PyAV: one file per output kind, keeping the input's timestamps, with
the input's audio copied into the overlay (:func:`open_output_video` picks codec and pixel format)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import FoundError
from ..io.sinks import ALPHA_CODECS
from .probe import VideoInfo, import_av
from .reader import VideoFrame

__all__ = ["MP4_AUDIO", "AudioCopy", "OutputVideo", "open_output_video", "require_encoder"]

#: Audio codecs an MP4 can hold: copied into the overlay as they are (others are left out, with a note).
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"}


def require_encoder(name: str, purpose: str) -> None:
    """A one-line error when this PyAV build lacks the encoder ``name`` (checked before any frame is encoded)."""
    av = import_av()
    try:
        av.codec.Codec(name, "w")
    except Exception:
        raise FoundError(f"this PyAV build has no {name} encoder (needed for {purpose})") from None


class AudioCopy:
    """The first audio stream of ``src`` copied, packet by packet, into ``out`` as video is written
    (its own demuxer, so nothing is buffered beyond one packet)."""

    def __init__(self, src: Path, out: Any) -> None:
        self.src = import_av().open(str(src), metadata_errors="ignore")
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
        """Close the audio source's demuxer."""
        self.src.close()


#: Container options of every output video: reproducible bytes (FFmpeg's ``-fflags +bitexact``).
BITEXACT = {"fflags": "+bitexact"}


class OutputVideo:
    """One output video at a temporary path: frames keep the input's timestamps (time base, pts)."""

    def __init__(self, path: Path, fmt: str, codec: str, pix_fmt: str, info: VideoInfo, options: dict,
                 audio_from: Path | None = None) -> None:
        av = import_av()
        # bitexact: no random segment id or date in the container, so the same frames give the same file
        self.container = av.open(str(path), "w", format=fmt, options=BITEXACT)
        try:
            s = self.container.add_stream(codec, rate=info.fps or Fraction(25), options=options)
            s.width, s.height, s.pix_fmt = info.width, info.height, pix_fmt
            s.time_base = info.time_base
            s.codec_context.time_base = info.time_base
            self.stream, self.tb = s, info.time_base
            self.audio = AudioCopy(audio_from, self.container) if audio_from is not None else None
        except BaseException:
            self.container.close()
            raise
        self.end = 0.0

    def add(self, pixels: np.ndarray, fmt: str, fr: VideoFrame) -> None:
        """Encode one frame's image (``fmt``: gray, rgb24 or rgba) at the input frame's timestamp."""
        frame = import_av().VideoFrame.from_ndarray(pixels, format=fmt)
        frame.pts, frame.time_base, frame.duration = fr.pts, self.tb, fr.duration
        self.end = float((fr.pts + fr.duration) * self.tb)
        if self.audio is not None:
            self.audio.until(fr.time, self.container.mux)
        for pkt in self.stream.encode(frame):
            self.container.mux(pkt)

    def close(self) -> None:
        """Flush the encoder and the rest of the audio, then close the file."""
        try:
            for pkt in self.stream.encode():
                self.container.mux(pkt)
            if self.audio is not None:
                self.audio.until(self.end, self.container.mux)
        finally:
            self.abort()

    def abort(self) -> None:
        """Close the file and the audio source without flushing."""
        if self.audio is not None:
            self.audio.close()
        self.container.close()


def open_output_video(kind: str, tmp: Path, alpha_codec: str, source: Path, info: VideoInfo) -> OutputVideo:
    """The output video of ``kind`` at ``tmp``: the cut-out in ``alpha_codec``, lossless grey H.264 for
    masks, H.264 with the input's audio (when an MP4 holds it) for the overlay."""
    if kind == "cutout":
        fmt, _, codec, pix, opts = ALPHA_CODECS[alpha_codec]
        require_encoder(codec, f"the {alpha_codec} cut-out; try another alpha_codec=CODEC or frames=True")
        return OutputVideo(tmp, fmt, codec, pix, info, dict(opts))
    require_encoder("libx264", f"the {kind} video; try frames=True")
    if kind in ("mask", "soft"):  # lossless grey: the mask read back is the mask written
        return OutputVideo(tmp, "mp4", "libx264", "gray", info, {"qp": "0", "preset": "veryfast"})
    even = info.width % 2 == 0 and info.height % 2 == 0  # 4:2:0 needs even sizes; odd ones get 4:4:4
    audio = source if info.audio in MP4_AUDIO else None
    return OutputVideo(tmp, "mp4", "libx264", "yuv420p" if even else "yuv444p", info,
                       {"crf": "20", "preset": "veryfast"}, audio_from=audio)
