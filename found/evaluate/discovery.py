"""Single-object discovery (VOC07, VOC12, COCO20k): CorLoc of FOUND's box, as LOST/FOUND evaluate it.

Protocol (``evaluation/uod.py`` of FOUND, itself LOST's): full-resolution image, zero-padded
(in normalised space) to a multiple of the patch size; the patch-level prediction is
``sigmoid(logits) > 0.5``; the predicted box is the box of its largest 4-connected component,
scaled by the patch size, with only x2/y2 clipped to the image
(:func:`found.model.masks.largest_component_box`); an image is a hit when that box has IoU ≥ 0.5 with at
least one ground-truth box (:func:`found.model.masks.box_iou`, the authors' eps placement).
CorLoc = hits / images.

Differences from the reference, where it crashes: an **all-empty prediction** makes the
reference raise (``argmax of an empty sequence``); :func:`predicted_box` raises a clear
``ValueError`` and the evaluation loop counts the image as a **miss** (reported separately).
An image with no ground-truth box (after removing COCO crowd boxes) is a miss, as in the reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..model.masks import box_iou, largest_component_box

#: IoU needed for a CorLoc hit.
IOU_THRESHOLD = 0.5


def predicted_box(patch_pred: np.ndarray, image_hw: tuple[int, int], patch: int) -> np.ndarray:
    """Box (x1, y1, x2, y2; int64, max exclusive) of the largest component of a binary prediction
    (patch grid, or already image-sized: then not rescaled). Raises ValueError if it is empty."""
    pred = np.asarray(patch_pred)
    if pred.ndim != 2:
        raise ValueError(f"expected a 2-D prediction, got shape {pred.shape}")
    if not np.any(pred):
        raise ValueError("empty prediction (no foreground patch): no box to evaluate; CorLoc counts it as a miss")
    return largest_component_box(pred, tuple(int(v) for v in image_hw), patch)


def box_ious(box: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """IoU (float32 [K]) of one box with K ground-truth boxes; empty for K = 0."""
    gt = np.asarray(gt_boxes).reshape(-1, 4)
    if gt.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    return np.asarray(box_iou(np.asarray(box), gt), dtype=np.float32).reshape(-1)


def is_hit(ious: np.ndarray, threshold: float = IOU_THRESHOLD) -> bool:
    """True when one IoU reaches ``threshold`` (CorLoc's hit: IoU >= 0.5 with some ground-truth box)."""
    return bool(np.any(np.asarray(ious) >= threshold))


@dataclass
class DiscoveryRecord:
    """One image's predicted box, ground-truth boxes, their IoUs and whether it is a CorLoc hit."""

    name: str
    image_hw: tuple[int, int]
    box: list[int] | None  # None: empty prediction
    gt_boxes: list[list[int]]
    ious: list[float]
    hit: bool


@dataclass
class DiscoveryResult:
    """The per-image records of a single-object discovery run, and CorLoc over them."""

    records: list[DiscoveryRecord] = field(default_factory=list)

    def add(self, name: str, patch_pred: np.ndarray | None, image_hw: tuple[int, int], gt_boxes: np.ndarray, patch: int, box: np.ndarray | None = None) -> DiscoveryRecord:
        """Score one image from its binary patch prediction (or a precomputed ``box``)."""
        if box is None and patch_pred is not None and np.any(patch_pred):
            box = predicted_box(patch_pred, image_hw, patch)
        gt = np.asarray(gt_boxes, dtype=np.int64).reshape(-1, 4)
        ious = box_ious(box, gt) if box is not None else np.zeros(gt.shape[0], dtype=np.float32)
        rec = DiscoveryRecord(
            name=name,
            image_hw=(int(image_hw[0]), int(image_hw[1])),
            box=None if box is None else [int(v) for v in box],
            gt_boxes=gt.tolist(),
            ious=[float(v) for v in ious],
            hit=box is not None and is_hit(ious),
        )
        self.records.append(rec)
        return rec

    @property
    def n_images(self) -> int:
        """Images scored so far."""
        return len(self.records)

    @property
    def n_hits(self) -> int:
        """Images whose predicted box is a hit."""
        return sum(r.hit for r in self.records)

    @property
    def corloc(self) -> float:
        """Share of images that are hits (NaN before any image)."""
        return self.n_hits / self.n_images if self.records else float("nan")

    def misses(self) -> list[str]:
        """Names of the images that are not hits (``misses.txt``), to look at the failures."""
        return [r.name for r in self.records if not r.hit]

    def summary(self) -> dict:
        """CorLoc (fraction and percent) with the counts behind it (``results.json``)."""
        return {
            "corloc": self.corloc,
            "corloc_percent": 100 * self.corloc if self.records else float("nan"),
            "n_images": self.n_images,
            "n_hits": self.n_hits,
            "n_empty_predictions": sum(r.box is None for r in self.records),
            "n_images_without_gt_box": sum(not r.gt_boxes for r in self.records),
        }


def corloc(hits: Iterable[bool]) -> float:
    """Share of hits."""
    h = list(hits)
    return sum(bool(x) for x in h) / len(h) if h else float("nan")


def evaluate_discovery(model, samples: Sequence, chunk: int = 1, progress: bool = True, desc: str = "discovery") -> DiscoveryResult:
    """Run ``model`` (a :class:`found.Found`) on ``samples`` (``DetectionSample``) and score them."""
    from tqdm.auto import tqdm

    from .datasets import read_rgb

    result = DiscoveryResult()
    bar = tqdm(total=len(samples), desc=desc, disable=not progress, unit="img")
    for s in range(0, len(samples), chunk):
        batch = samples[s : s + chunk]
        images = [read_rgb(x.image) for x in batch]
        preds = model.predict(images, mode="multi", refine=False, batch_size=chunk)
        for x, im, p in zip(batch, images, preds):
            result.add(x.name, p.patch_mask, im.shape[:2], x.boxes, model.patch_size, box=p.box)
        bar.update(len(batch))
        bar.set_postfix_str(f"CorLoc {100 * result.corloc:.1f}")
    bar.close()
    return result
