"""The inference engine: any iterable of inputs in, one full-resolution result per input out.

Every surface runs this one path (``found segment``, ``found bench``, the server, video, Ray):

    inputs → bounded decode (thread pool, read-ahead) → chunks of ``batch_size`` → the model
    (same-size images batched) → predictions mapped back to each input's full resolution
    → :class:`Result`, in input order, with an input's error as a value.

Memory is bounded by the read-ahead window and one chunk, whatever the number of inputs. Images
over ``max_side`` are decoded reduced and processed at that size; the engine scales the masks,
soft mask and box back, so results never show the reduction.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
from PIL import Image

from .errors import FoundError, InferenceError, InputError, OptionsError, describe
from .io.images import LoadedImage, read_image, source_name
from .model.instances import Instance, InstanceFilter, find_instances
from .options import DEFAULT_MAX_SIDE, EDGES, MODES, RunOptions, check
from .predictor import Prediction

__all__ = ["DEFAULT_MAX_SIDE", "EDGES", "MODES", "READ_AHEAD_CHUNKS", "Engine", "Result", "RunOptions",
           "ScaledPrediction", "default_workers", "map_ahead", "segment", "to_full_resolution"]
#: Chunks (of ``batch_size`` inputs) decoded ahead of the one being predicted.
READ_AHEAD_CHUNKS = 2
T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Decoding threads when none are given: min(4, CPUs)."""
    return min(4, os.cpu_count() or 1)


@dataclass
class Result:
    """The engine's answer for one input: a full-resolution prediction, or the input's error."""

    index: int  # position in the input iterable
    source: object  # the input as given (path, bytes, image, array)
    name: str  # how messages name it (the path, or "<bytes #i>")
    prediction: Prediction | ScaledPrediction | None = None  # at the input's full resolution
    error: FoundError | None = None
    image: LoadedImage | None = None  # the image as processed (reduced when over max_side)

    @property
    def ok(self) -> bool:
        """True when the input was predicted (no error)."""
        return self.error is None

    @property
    def notes(self) -> list[str]:
        """What loading the input noted (e.g. downscaling, an animation's first frame); empty if it failed to load."""
        return list(self.image.notes) if self.image is not None else []

    @property
    def downscaled(self) -> bool:
        """True when the input was processed reduced to the working scale (``max_side``)."""
        return self.image is not None and self.image.downscaled

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the input at full resolution."""
        return self.image.original_size if self.image is not None else (0, 0)

    def full_image(self) -> LoadedImage:
        """The input at full resolution (decoded again when it was processed reduced)."""
        if self.image is None:
            raise ValueError(f"{self.name}: no image (the input failed)")
        if not self.image.downscaled:
            return self.image
        return read_image(self.source, max_side=None, name=self.name)

    def rgb(self) -> np.ndarray:
        """uint8 [H, W, 3] pixels at full resolution (for cut-outs and overlays)."""
        return self.full_image().rgb()


def map_ahead(
    fn: Callable[[T], R], items: Iterable[T], pool: ThreadPoolExecutor | None, window: int,
    catch: tuple[type[BaseException], ...] = (InputError,),
) -> Iterator[tuple[T, R | BaseException]]:
    """``(item, fn(item))`` in input order, ``fn`` running up to ``window`` items ahead in ``pool``.

    An exception of a ``catch`` type is yielded in place of the result; any other is raised here, in
    the consumer's thread. ``pool=None`` calls ``fn`` lazily in this thread (no read-ahead). Closing
    the generator early cancels the calls that have not started, so memory stays bounded by
    ``window`` results.
    """
    if pool is None:
        for x in items:
            try:
                r: R | BaseException = fn(x)
            except catch as e:
                r = e
            yield x, r
        return
    pending: deque[tuple[T, Future]] = deque()
    it = iter(items)
    try:
        for x in islice(it, max(1, window)):
            pending.append((x, pool.submit(fn, x)))
        while pending:
            x, fut = pending.popleft()
            for nxt in islice(it, 1):
                pending.append((nxt, pool.submit(fn, nxt)))
            try:
                r = fut.result()
            except catch as e:
                r = e
            yield x, r
    finally:
        for _, fut in pending:
            fut.cancel()


class ScaledPrediction:
    """A :class:`Prediction` made at a reduced size, seen at the input's full ``size`` (width, height).

    Same fields as a Prediction; ``mask`` and ``soft`` are scaled up when read (bilinear; the mask
    from 0/255 thresholded at 127), so a huge photo costs no full-size float until one is asked
    for. ``processed`` is the prediction at the size the model saw. :meth:`cutout_mask` is the
    mask cut-outs use: with ``edges="guided"`` it follows the full-size image's edges.
    """

    def __init__(self, processed: Prediction, size: tuple[int, int], edges: str = "guided") -> None:
        self.edges = check("edges", edges)
        self.processed, self.size = processed, (int(size[0]), int(size[1]))
        self.patch_mask, self.refined = processed.patch_mask, processed.refined
        self.patch_probs, self.mode, self.instance_filter = processed.patch_probs, processed.mode, processed.instance_filter
        self._mask: np.ndarray | None = None

    @property
    def score(self) -> float:
        """The processed prediction's score (mean object probability of its mask's patches)."""
        return self.processed.score

    @cached_property
    def box(self) -> np.ndarray | None:
        """The processed prediction's box in pixels of the full-size input."""
        return _scale_box(self.processed.box, self.processed.mask.shape, self.size)

    @cached_property
    def instances(self) -> list[Instance]:
        """The instances of the full-size mask; each pixel's patch cell is that of the reduced image."""
        h, w = self.processed.mask.shape
        cell = (self.processed.patch * self.size[1] / h, self.processed.patch * self.size[0] / w)
        return find_instances(self.mask, self.processed._probs(), cell, mode=self.mode, flt=self.instance_filter)

    @property
    def image_hw(self) -> tuple[int, int]:
        """(height, width) of the full-size input, as ``Prediction.image_hw``."""
        return self.size[1], self.size[0]

    @property
    def mask(self) -> np.ndarray:
        """bool [H, W] mask at full size: the processed mask stretched bilinearly, computed once when first read."""
        if self._mask is None:
            im = Image.fromarray(self.processed.mask.astype(np.uint8) * 255).resize(self.size, Image.Resampling.BILINEAR)
            self._mask = np.asarray(im) > 127
        return self._mask

    @property
    def soft(self) -> np.ndarray:
        """float32 [H, W] probability at full size (computed on each read: use :meth:`soft_uint8` to save memory)."""
        im = Image.fromarray(self.processed.soft.astype(np.float32), mode="F").resize(self.size, Image.Resampling.BILINEAR)
        return np.clip(np.asarray(im, dtype=np.float32), 0, 1)

    def soft_uint8(self) -> np.ndarray:
        """uint8 [H, W] probability × 255 at full size, scaled from the 8-bit map (no float copy)."""
        small = np.clip(self.processed.soft * 255 + 0.5, 0, 255).astype(np.uint8)
        return np.asarray(Image.fromarray(small).resize(self.size, Image.Resampling.BILINEAR))

    def cutout_mask(self, rgb: np.ndarray) -> np.ndarray:
        """bool [H, W]: the working-scale mask brought to full size along the edges of ``rgb`` (the
        input at full size) by the guided filter, or :attr:`mask` with ``edges="bilinear"`` or where
        the reduced image's aspect differs from the input's (a one-patch-thin strip)."""
        if self.edges == "guided":
            from .model.edges import guided_upsample

            try:
                return guided_upsample(self.processed.mask.astype(np.float32), rgb, radius=self.processed.patch,
                                       out_dtype=np.uint8) > 127  # window radius: one patch of the model
            except ValueError:
                pass
        return self.mask


def _scale_box(box: np.ndarray | None, hw: tuple[int, int], size: tuple[int, int]) -> np.ndarray | None:
    """A box of an image of ``hw`` = (h, w) in pixels of the same image at ``size`` = (W, H)."""
    if box is None:
        return None
    (h, w), (W, H) = hw, size
    sx, sy = W / w, H / h
    return np.array([min(W, round(box[0] * sx)), min(H, round(box[1] * sy)),
                     min(W, round(box[2] * sx)), min(H, round(box[3] * sy))], dtype=np.int64)


def to_full_resolution(pred: Prediction, size: tuple[int, int], edges: str = "guided") -> Prediction | ScaledPrediction:
    """``pred`` as seen at ``size`` = (width, height): itself when the sizes agree."""
    h, w = pred.mask.shape
    return pred if (w, h) == tuple(size) else ScaledPrediction(pred, size, edges)


class Engine:
    """FOUND over streams of inputs: see the module docstring.

    ``model`` is a :class:`found.Found` (holding any core: torch, ONNX Runtime, …); ``options`` a
    :class:`~found.options.RunOptions` (mode, refine, batch size, decoding threads, working scale,
    cut-out edges, instance filter, video, debug). Without ``options``, the keywords build one (any
    RunOptions field; ``instance_filter`` may be given as an InstanceFilter).
    """

    def __init__(self, model, options: RunOptions | None = None, *, mode: str = "multi", refine: bool = False,
                 batch_size: int = 8, workers: int | None = None, max_side: int | None = DEFAULT_MAX_SIDE,
                 debug: bool = False, instance_filter: InstanceFilter | None = None, edges: str = "guided",
                 **more: object) -> None:
        keywords = dict(mode=mode, refine=refine, batch_size=batch_size, workers=workers, max_side=max_side,
                        debug=debug, instance_filter=instance_filter, edges=edges)
        if options is None:
            options = RunOptions.from_keywords(**keywords, **more)
        elif not isinstance(options, RunOptions):
            raise TypeError(f"options must be a RunOptions, got {type(options).__name__}")
        elif more or keywords != _ENGINE_DEFAULTS:
            raise TypeError("give Engine either options or keywords, not both (options.replace(...) changes some)")
        if options.max_side and options.max_side < model.patch_size:
            raise OptionsError("max_side", f"{options.max_side} is smaller than one {model.patch_size}-px patch")
        self.model, self.options = model, options
        self.workers = default_workers() if options.workers is None else options.workers

    @property
    def mode(self) -> str:
        """The run's mode ("multi" or "single"), from its options."""
        return self.options.mode

    @property
    def refine(self) -> bool:
        """Whether masks are refined by the bilateral solver, from the run's options."""
        return self.options.refine

    @property
    def batch_size(self) -> int:
        """Images per forward pass, from the run's options."""
        return self.options.batch_size

    @property
    def max_side(self) -> int | None:
        """The working scale: the longer side inputs are reduced to when over it (0/None: native), from the options."""
        return self.options.max_side

    @property
    def edges(self) -> str:
        """How cut-outs of reduced inputs reach full size ("guided" or "bilinear"), from the run's options."""
        return self.options.edges

    @property
    def debug(self) -> bool:
        """Whether an inference error is raised instead of returned as the input's result, from the run's options."""
        return self.options.debug

    @property
    def instance_filter(self) -> InstanceFilter | None:
        """Which connected components count as instances (None: all), from the run's options."""
        return self.options.instance_filter

    @property
    def read_ahead(self) -> int:
        """Inputs decoded ahead of the chunk being predicted."""
        return max(READ_AHEAD_CHUNKS * self.batch_size, self.workers)

    def load(self, source: object, index: int | None = None) -> LoadedImage:
        """Decode one input at its processing size; a bad input raises a one-line InputError."""
        return read_image(source, max_side=self.max_side, min_side=self.model.patch_size, name=source_name(source, index))

    def infer(self, images: list[LoadedImage]) -> list[Prediction | ScaledPrediction | FoundError]:
        """Full-resolution predictions for decoded images, batched by size. If the batch fails (e.g.
        out of memory) each image is retried alone; one that still fails gets an InferenceError."""
        if not images:
            return []
        arrays = [li.rgb() for li in images]
        try:
            preds: list = self.model.predict(arrays, mode=self.mode, refine=self.refine, batch_size=self.batch_size,
                                             instance_filter=self.instance_filter)
        except Exception as e:
            if self.debug:
                raise
            preds = [self._predict_one(a) for a in arrays] if len(arrays) > 1 else [_inference_error(e)]
        return [p if isinstance(p, FoundError) else to_full_resolution(p, li.original_size, self.edges)
                for p, li in zip(preds, images)]

    def _predict_one(self, array: np.ndarray) -> Prediction | FoundError:
        try:
            return self.model.predict([array], mode=self.mode, refine=self.refine, batch_size=1,
                                      instance_filter=self.instance_filter)[0]
        except Exception as e:
            if self.debug:
                raise
            return _inference_error(e)

    def run(self, inputs: Iterable[object]) -> Iterator[Result]:
        """One :class:`Result` per input, in input order. Closing the generator early (or Ctrl-C)
        stops decoding; nothing is left running."""
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="found-read") if self.workers else None
        loaded = map_ahead(lambda item: self.load(item[1], item[0]), enumerate(inputs), pool, self.read_ahead)
        try:
            while True:
                chunk = list(islice(loaded, self.batch_size))
                if not chunk:
                    return
                yield from self._results(chunk)
        finally:
            loaded.close()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _results(self, chunk: list[tuple[tuple[int, object], LoadedImage | InputError]]) -> Iterator[Result]:
        ready = [li for _, li in chunk if isinstance(li, LoadedImage)]
        preds = iter(self.infer(ready))
        for (i, src), li in chunk:
            name = source_name(src, i)
            if isinstance(li, InputError):
                yield Result(i, src, name, error=li)
                continue
            p = next(preds)
            if isinstance(p, FoundError):
                yield Result(i, src, name, error=p, image=li)
            else:
                yield Result(i, src, name, prediction=p, image=li)


#: Engine's keywords at their defaults (the keywords must stay so when ``options`` is given).
_ENGINE_DEFAULTS = dict(mode="multi", refine=False, batch_size=8, workers=None, max_side=DEFAULT_MAX_SIDE,
                        debug=False, instance_filter=None, edges="guided")


def _inference_error(e: BaseException) -> InferenceError:
    return InferenceError(f"inference failed ({describe(e)})")


def segment(inputs: Iterable[object], model=None, options: RunOptions | None = None, **keywords) -> Iterator[Result]:
    """``Engine(model or build_found(), options or RunOptions(**keywords)).run(inputs)``: the one-call
    library entry point."""
    if model is None:
        from .hub.build import build_found

        model = build_found()
    return Engine(model, options, **keywords).run(inputs)
