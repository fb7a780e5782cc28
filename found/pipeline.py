"""Folder pipeline: image files in, PNG masks out, with the CPU work off the model's critical path.

Decoding (and optional resizing) runs ahead in a thread pool — Pillow releases the GIL while it
decodes, resizes and encodes — so the accelerator is fed without waiting; same-size images are
batched (pinned memory and asynchronous copies on CUDA, see :meth:`found.Found.input_batch`), and
the PNG masks are encoded and written by a second pool while the next batch runs.
"""
from __future__ import annotations

import os
import time
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
from PIL import Image

from .errors import InputError
from .fileio import atomic_path
from .imageio import open_image, to_rgb_array
from .masks import single_component
from .preprocess import padded_size

MASK_SUFFIX = "_mask.png"
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class FolderResult:
    """What :func:`segment_files` did."""

    written: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Item:
    index: int
    path: Path
    rgb: np.ndarray  # model input (resized if asked)
    orig_hw: tuple[int, int]


def parse_size(text: str) -> tuple[int, int]:
    """``"320x480"`` (height × width) or ``"224"`` → (h, w)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        hw = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else None
    except ValueError:
        hw = None
    if hw is None or min(hw) < 1:
        raise ValueError(f"size {text!r} is not HxW (e.g. 320x480) or a single side")
    return hw


def load_for_model(path: str | os.PathLike, size: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``path`` to uint8 RGB, resized (bicubic) to ``size`` = (h, w) if given; also the original (h, w)."""
    im = open_image(path)
    rgb = to_rgb_array(im)
    orig = (rgb.shape[0], rgb.shape[1])
    if size is not None and orig != tuple(size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BICUBIC))
    return rgb, orig


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
        for x in it:
            pending.append((x, pool.submit(fn, x)))
            if len(pending) >= max(1, window):
                break
        while pending:
            x, fut = pending.popleft()
            for nxt in it:
                pending.append((nxt, pool.submit(fn, nxt)))
                break
            try:
                r = fut.result()
            except catch as e:
                r = e
            yield x, r
    finally:
        for _, fut in pending:
            fut.cancel()


def _iter_loaded(paths: Sequence[Path], size, pool: ThreadPoolExecutor | None, window: int) -> Iterator[tuple[int, Path, object]]:
    """(index, path, (rgb, orig_hw) or an InputError) in input order, decoding up to ``window`` ahead."""
    for i, (p, loaded) in enumerate(map_ahead(lambda p: load_for_model(p, size), paths, pool, window)):
        yield i, p, loaded


def _write_mask(mask: np.ndarray, orig_hw: tuple[int, int], out: Path) -> Path:
    im = Image.fromarray(mask.astype(np.uint8) * 255)
    if mask.shape != tuple(orig_hw):
        im = im.resize((orig_hw[1], orig_hw[0]), Image.NEAREST)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        im.save(tmp, format="PNG", compress_level=1)
    return out


def segment_files(
    model,
    paths: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    size: tuple[int, int] | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    mode: str = "multi",
) -> FolderResult:
    """Write ``<stem>_mask.png`` (0/255, at each image's own size) into ``outdir`` for every file.

    ``model`` is a :class:`found.Found`. ``size`` = (h, w) resizes every image for inference (the
    mask is scaled back, nearest); ``None`` runs each at its own size (batched by padded size).
    ``workers`` threads decode and write (default: CPUs − 1, at least 1; 0 = all in this thread).
    Unreadable files are reported in ``failures``, the others are still processed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if mode not in ("multi", "single"):
        raise ValueError(f"mode must be 'multi' or 'single', got {mode!r}")
    paths = [Path(p) for p in paths]
    outdir = Path(outdir)
    if workers is None:
        workers = max(1, (os.cpu_count() or 2) - 1)
    result = FolderResult()
    start = time.perf_counter()
    load_pool = ThreadPoolExecutor(workers, thread_name_prefix="found-load") if workers else None
    write_pool = ThreadPoolExecutor(workers, thread_name_prefix="found-write") if workers else None
    writes: list[tuple[Path, Future]] = []
    buckets: dict[tuple[int, int], list[_Item]] = defaultdict(list)
    patch = model.patch_size

    def flush(key: tuple[int, int]) -> None:
        items = buckets.pop(key, [])
        if not items:
            return
        _, masks = model.masks(model.input_batch([it.rgb for it in items]))
        masks_np = masks.cpu().numpy()
        for it, m in zip(items, masks_np):
            m = m[: it.rgb.shape[0], : it.rgb.shape[1]]
            if mode == "single":
                m = single_component(m)
            out = outdir / (it.path.stem + MASK_SUFFIX)
            if write_pool is None:
                try:
                    result.written.append(_write_mask(m, it.orig_hw, out))
                except OSError as e:
                    result.failures.append((str(it.path), f"cannot write {out}: {e.strerror or e}"))
            else:
                writes.append((it.path, write_pool.submit(_write_mask, m, it.orig_hw, out)))

    try:
        for i, p, loaded in _iter_loaded(paths, size, load_pool, window=max(2 * batch_size, 4 * workers)):
            if isinstance(loaded, InputError):
                result.failures.append((str(p), str(loaded)))
                continue
            rgb, orig = loaded  # type: ignore[misc]
            key = padded_size(rgb.shape[0], rgb.shape[1], patch)
            buckets[key].append(_Item(i, p, rgb, orig))
            if len(buckets[key]) >= batch_size:
                flush(key)
        for key in list(buckets):
            flush(key)
        for p, fut in writes:
            try:
                result.written.append(fut.result())
            except OSError as e:
                result.failures.append((str(p), f"cannot write mask: {e.strerror or e}"))
    finally:
        for pool in (load_pool, write_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    result.seconds = time.perf_counter() - start
    return result
