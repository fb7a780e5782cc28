"""Video files through the engine, streamed frame by frame: masks, overlays, cut-outs and boxes.

The data flows one way, one module each:

* :mod:`.probe` — :func:`is_video` / :func:`input_kind` (content detection: a file Pillow opens is
  an image, animated GIFs included; otherwise PyAV is asked whether it holds a video stream) and
  :func:`probe_video` (what a file declares: :class:`VideoInfo`).
* :mod:`.reader` — :class:`VideoReader` (one open video) and :func:`iter_video_frames`: decoded
  frames with their index, pts and time in seconds.
* :mod:`.segment` — :func:`segment_video`: one :class:`FrameResult` per frame, in order; frames are
  decoded in a background thread, batched through :class:`found.engine.Engine` and handed out as
  they come, so memory stays bounded whatever the video's length. ``every=N`` runs the model on
  one frame in N and holds its mask for the frames in between; ``smooth=ALPHA`` is an exponential
  moving average of the patch logits over frames (an addition to the paper, off by default).
* :mod:`.encode` and :mod:`.sink` — :class:`VideoOutputs` writes a stream of frame results as the
  per-video outputs of ``found segment``: mask / soft / overlay videos (same fps, size and
  timestamps; audio copied into the overlay), a cut-out with alpha (WebM VP9 or ProRes 4444 MOV),
  or PNG frames, and ``<name>_boxes.jsonl``; all written under temporary names and renamed
  together once complete. The caller runs the model::

      with VideoReader("clip.mp4") as reader:
          summary = outputs.write(reader.path, reader.info, segment_video(reader, engine), "clip")

PyAV (the ``found[video]`` extra) is imported only when a video is read or written.
"""
from __future__ import annotations

from ..io.images import VIDEO_SUFFIXES
from ..io.sinks import ALPHA_CODECS, VIDEO_OUTPUT_SUFFIXES
from .probe import VideoInfo, input_kind, is_video, probe_video
from .reader import VideoDecodeError, VideoFrame, VideoReader, iter_video_frames
from .segment import FrameResult, LogitsEMA, segment_video, smoothed_model
from .sink import VideoOutputs, VideoSummary

__all__ = ["ALPHA_CODECS", "VIDEO_OUTPUT_SUFFIXES", "VIDEO_SUFFIXES", "FrameResult", "LogitsEMA", "VideoDecodeError",
           "VideoFrame", "VideoInfo", "VideoOutputs", "VideoReader", "VideoSummary", "input_kind", "is_video",
           "iter_video_frames", "probe_video", "segment_video", "smoothed_model"]
