"""Training images: folder listing, a resumable seeded batch order, and the DataLoader.

Determinism does not depend on worker processes: the order of epoch ``e`` is a permutation drawn
from ``(seed, e)`` and sample ``i`` of epoch ``e`` is augmented with a generator seeded by
``(seed, e, i)``. The whole run is one stream of batches; its position is ``(epoch, batch)``,
which a checkpoint stores so that a resumed run sees exactly the batches that were left.
"""
from __future__ import annotations

import hashlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import FoundError, InputError
from ..io.images import IMAGE_SUFFIXES, open_image, to_rgb_array
from .augment import augment
from .config import TrainConfig

#: Sub-folders searched first, as the authors lay DUTS out (``<root>/DUTS/DUTS-TR-Image``).
DUTS_TR_DIRS = ("DUTS-TR-Image", "DUTS/DUTS-TR-Image", "DUTS-TR/DUTS-TR-Image")
_AUG_STREAM = 0xA5  # separates the augmentation generators from the order generators
_ORDER_STREAM = 0x0D


def find_images(data_dir: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Images to train on: DUTS-TR's image folder if ``data_dir`` holds one, else the folder itself.

    Files are sorted by name (the authors' order before shuffling); masks are never read.
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FoundError(f"--data-dir {root} is not a folder")
    for sub in DUTS_TR_DIRS:
        if (root / sub).is_dir():
            root = root / sub
            break
    if recursive:
        files = [Path(d) / f for d, _, names in os.walk(root) for f in names]
    else:
        files = [p for p in root.iterdir() if p.is_file()]
    files = sorted((p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
                   key=lambda p: str(p.relative_to(root)))
    if not files:
        raise FoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {root}")
    return files


def files_digest(files: Sequence[Path], root: Path | None = None) -> str:
    """Short hash of the file list (names only), stored in checkpoints to catch a changed dataset."""
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root) if root else f.name).encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:16]


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of the ``n`` samples in ``epoch`` (independent of everything else)."""
    return np.random.default_rng([seed, _ORDER_STREAM, epoch]).permutation(n)


@dataclass(frozen=True)
class Position:
    """Where the batch stream stands: the next batch is batch ``batch`` of epoch ``epoch``."""

    epoch: int = 0
    batch: int = 0


class EpochBatchSampler(Sampler):
    """Batches of ``(epoch, batch, sample)`` keys over ``epochs`` shuffled epochs, from ``start`` on."""

    def __init__(self, n: int, batch_size: int, seed: int, epochs: int, drop_last: bool = False, start: Position = Position()) -> None:
        if n <= 0:
            raise ValueError("empty dataset")
        self.n, self.batch_size, self.seed, self.epochs, self.drop_last = n, batch_size, seed, epochs, drop_last
        self.start = start
        if self.batches_per_epoch == 0:
            raise FoundError(f"{n} images are fewer than one batch of {batch_size} with drop_last")

    @property
    def batches_per_epoch(self) -> int:
        """Batches in one epoch (the last, partial one counted unless ``drop_last``)."""
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def advance(self, pos: Position) -> Position:
        """The position after consuming the batch at ``pos``."""
        if pos.batch + 1 < self.batches_per_epoch:
            return Position(pos.epoch, pos.batch + 1)
        return Position(pos.epoch + 1, 0)

    def __len__(self) -> int:
        return max(0, (self.epochs - self.start.epoch) * self.batches_per_epoch - self.start.batch)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        bs = self.batch_size
        for epoch in range(self.start.epoch, self.epochs):
            order = epoch_order(self.n, self.seed, epoch)
            first = self.start.batch if epoch == self.start.epoch else 0
            for b in range(first, self.batches_per_epoch):
                yield [(epoch, b, int(i)) for i in order[b * bs : (b + 1) * bs]]


class TrainImages(Dataset):
    """Augmented training crops as uint8 [3, S, S] tensors, keyed by ``(epoch, batch, index)``."""

    def __init__(self, files: Sequence[Path], cfg: TrainConfig) -> None:
        self.files = list(files)
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.files)

    def sample_rng(self, epoch: int, index: int) -> np.random.Generator:
        """The augmentation generator of one sample in one epoch, seeded from both alone (so resuming repeats it)."""
        return np.random.default_rng([self.cfg.seed, _AUG_STREAM, epoch, index])

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, int, int, int]:
        epoch, batch, index = key
        im = open_image(self.files[index])
        if im.mode != "RGB":
            im = Image.fromarray(to_rgb_array(im))
        pixels = augment(im, self.sample_rng(epoch, index), self.cfg)
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), epoch, batch, index


@dataclass
class Batch:
    """A collated batch: uint8 images [B, 3, S, S], the stream position and the sample indices."""

    images: torch.Tensor
    position: Position
    indices: list[int]

    def pin_memory(self) -> "Batch":
        """Pin the images in page-locked memory (DataLoader's ``pin_memory`` hook) and return the batch."""
        self.images = self.images.pin_memory()
        return self


def collate(items: list[tuple[torch.Tensor, int, int, int]]) -> Batch:
    """One :class:`Batch` of dataset items: images stacked, the first item's position, every item's index."""
    return Batch(torch.stack([it[0] for it in items]), Position(items[0][1], items[0][2]), [it[3] for it in items])


def _worker_init(_: int) -> None:
    # Ctrl-C is handled by the main process (it finishes the step and checkpoints); workers must
    # survive it so that the loader can be shut down in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: TrainImages, sampler: EpochBatchSampler, num_workers: int, pin_memory: bool) -> DataLoader:
    """The batch stream: worker processes, pinned memory and prefetching when ``num_workers > 0``."""
    kwargs: dict = {}
    if num_workers > 0:
        kwargs = dict(persistent_workers=True, prefetch_factor=2, worker_init_fn=_worker_init)
    return DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate, pin_memory=pin_memory, **kwargs
    )


def reraise_worker_error(e: Exception) -> None:
    """A worker's :class:`InputError` arrives wrapped in a multi-line message; keep its one line."""
    if isinstance(e, InputError):
        last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise InputError(last.split("InputError: ", 1)[-1]) from None
    raise e
