"""A video through the engine: :func:`segment_video` turns a video's frames into one
:class:`FrameResult` per frame, in order and streamed (``every=N`` frame skipping, ``smooth``
temporal smoothing of the patch logits: ``Found(SmoothedCore(model.core, alpha))``). Nothing here writes."""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..engine import Engine, Result
from ..options import check
from ..predictor import Found
from ..runtime.smoothing import LogitsEMA, SmoothedCore
from .reader import VideoFrame, VideoReader, prefetch

__all__ = ["DECODE_AHEAD", "FrameResult", "LogitsEMA", "segment_video", "smoothed_engine", "smoothed_model"]

#: Frames decoded ahead of the engine (in a background thread).
DECODE_AHEAD = 8


# ---------------------------------------------------------------------------- smoothing
def smoothed_model(model: Found, alpha: float) -> Found:
    """``Found(SmoothedCore(model.core, alpha))``: the same core (same weights) with its patch logits
    averaged over consecutive frames by a fresh :class:`LogitsEMA`. Frames must be given in order
    (the engine keeps input order, and a video's frames share one padded size)."""
    return Found(SmoothedCore(model.core, alpha))


def smoothed_engine(engine: Engine, alpha: float) -> Engine:
    """A new engine with ``engine``'s options running :func:`smoothed_model` (``engine`` is left as it is)."""
    return Engine(smoothed_model(engine.model, alpha), engine.options)


# ---------------------------------------------------------------------------- segmentation
@dataclass
class FrameResult:
    """One frame and the engine result whose mask it uses (its own, or the last processed one)."""

    frame: VideoFrame
    result: Result  # the engine's result (index = position among processed frames)
    processed: bool  # False for a frame that holds the mask of the last processed frame (--every)

    @property
    def index(self) -> int:
        """The frame's position in presentation order."""
        return self.frame.index

    @property
    def pts(self) -> int:
        """The frame's presentation timestamp, in the stream's ``time_base``."""
        return self.frame.pts

    @property
    def time(self) -> float:
        """The frame's presentation time in seconds."""
        return self.frame.time

    @property
    def prediction(self) -> Any:
        """The prediction whose mask the frame uses (its own, or the last processed frame's)."""
        return self.result.prediction

    def rgb(self) -> np.ndarray:
        """uint8 [H, W, 3] RGB pixels of the frame at the video's size."""
        return self.frame.rgb()


def segment_video(source: str | os.PathLike | VideoReader, engine: Engine, every: int = 1,
                  smooth: float | None = None) -> Iterator[FrameResult]:
    """One :class:`FrameResult` per frame of the video, in order, streamed: frames are decoded in a
    background thread, batched through the engine and handed out as they come (memory stays bounded).

    ``every=N`` runs the model on frames 0, N, 2N, … and gives the frames in between the last
    processed frame's result. ``smooth`` (alpha in (0, 1]) smooths the logits over processed
    frames. A truncated file yields the frames decoded, then raises :class:`VideoDecodeError`;
    a frame the model fails on raises its :class:`FoundError`. A :class:`VideoReader` given as
    ``source`` is left open (its owner closes it); a path is opened and closed here.
    """
    check("every", every)
    if smooth is not None:
        engine = smoothed_engine(engine, smooth)
    reader = source if isinstance(source, VideoReader) else VideoReader(source)
    frames = prefetch(reader.frames(), every, DECODE_AHEAD)
    stash: deque[VideoFrame] = deque()  # decoded, not handed out yet

    def to_engine() -> Iterator[np.ndarray]:
        """Pixels of every ``every``-th frame for the model; each frame is stashed to be handed out in order."""
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
        if not isinstance(source, VideoReader):
            reader.close()
    if reader.error is not None:
        raise reader.error
