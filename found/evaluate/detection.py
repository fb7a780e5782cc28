"""Class-agnostic detection metrics of FOUND's instances (VOC07, VOC12, COCO20k), beside CorLoc.

Every ground-truth box of an image counts, as one class ("object", category 1), exactly the boxes
CorLoc uses (:mod:`found.evaluate.datasets`: VOC difficult objects included, COCO crowd boxes
removed). The detections are the image's instances (:func:`found.model.instances.find_instances` on
the predicted pixel mask ``soft > 0.5``, no refinement), each with its score; ``--objects single``
keeps the largest one only. pycocotools' ``COCOeval`` (``iouType="bbox"``, maxDets 1/10/100,
area range "all") gives AP (IoU .50:.05:.95), AP50, AP75 and AR@1/10/100. CorLoc is computed as
``found evaluate discovery`` does (largest component of the patch-level mask).

Boxes are pixel boxes (x1, y1, x2, y2, max exclusive) given to COCO as (x1, y1, x2 − x1, y2 − y1);
COCOeval's IoU takes width and height as they are (no +1), as our :func:`found.model.masks.box_iou`
up to its eps. A metric with no ground truth at all is undefined (COCOeval's −1): reported as NaN.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..model.instances import Instance, InstanceFilter, find_instances
from .discovery import DiscoveryResult

#: results.json keys → index in ``COCOeval.stats``.
COCO_STATS = {"AP": 0, "AP50": 1, "AP75": 2, "AR1": 6, "AR10": 7, "AR100": 8}
MAX_DETS = (1, 10, 100)


def xyxy_to_xywh(box: Sequence[float] | np.ndarray) -> list[float]:
    """A box (x1, y1, x2, y2) as COCO's (x, y, width, height)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def gt_dataset(gt_boxes: Sequence[np.ndarray], image_hws: Sequence[tuple[int, int]]) -> dict:
    """Class-agnostic COCO ground truth: image ``k`` has id ``k + 1``; every box is category 1."""
    images, anns = [], []
    for k, (boxes, hw) in enumerate(zip(gt_boxes, image_hws)):
        images.append({"id": k + 1, "width": int(hw[1]), "height": int(hw[0]), "file_name": str(k + 1)})
        for b in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            xywh = xyxy_to_xywh(b)
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": 1, "bbox": xywh,
                         "area": xywh[2] * xywh[3], "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


def detection_results(detections: Sequence[Sequence[tuple[Sequence[float], float]]]) -> list[dict]:
    """COCO results list (``loadRes`` input) of per-image ``(box_xyxy, score)`` detections."""
    return [{"image_id": k + 1, "category_id": 1, "bbox": xywh, "score": float(s), "area": xywh[2] * xywh[3]}
            for k, dets in enumerate(detections) for box, s in dets for xywh in [xyxy_to_xywh(box)]]


def coco_detection_metrics(gt_boxes: Sequence[np.ndarray], image_hws: Sequence[tuple[int, int]],
                           detections: Sequence[Sequence[tuple[Sequence[float], float]]]) -> dict[str, float]:
    """AP, AP50, AP75, AR1, AR10, AR100 (COCOeval, bbox, one class) of per-image detections
    ``[(box_xyxy, score), …]`` against per-image ground-truth boxes (xyxy). NaN when undefined."""
    from ..io.coco import coco_class

    COCO = coco_class()
    if len(gt_boxes) != len(detections) or len(gt_boxes) != len(image_hws):
        raise ValueError("one list of ground-truth boxes, one size and one list of detections per image")
    from pycocotools.cocoeval import COCOeval

    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        gt = COCO()
        gt.dataset = gt_dataset(gt_boxes, image_hws)
        gt.createIndex()
        res = detection_results(detections)
        if res:
            dt = gt.loadRes(res)
        else:  # loadRes cannot take an empty list: an empty result set
            dt = COCO()
            dt.dataset = {"images": list(gt.dataset["images"]), "annotations": [], "categories": gt.dataset["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.maxDets = list(MAX_DETS)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: (float("nan") if ev.stats[i] < 0 else float(ev.stats[i])) for k, i in COCO_STATS.items()}


@dataclass
class DetectionRecord:
    """One image's ground-truth boxes and predicted instances, as scored by COCOeval."""

    name: str
    image_hw: tuple[int, int]
    gt_boxes: list[list[int]]
    instances: list[Instance]


@dataclass
class DetectionResult:
    """Per-image instances and ground truth, CorLoc beside (``discovery``)."""

    objects: str = "multi"
    records: list[DetectionRecord] = field(default_factory=list)
    discovery: DiscoveryResult = field(default_factory=DiscoveryResult)

    def add(self, name: str, image_hw: tuple[int, int], gt_boxes: np.ndarray, instances: list[Instance],
            patch_mask: np.ndarray | None, patch: int) -> DetectionRecord:
        """Record one image: its instances, and its CorLoc hit from the patch-level mask."""
        gt = np.asarray(gt_boxes, dtype=np.int64).reshape(-1, 4)
        rec = DetectionRecord(name, (int(image_hw[0]), int(image_hw[1])), gt.tolist(), list(instances))
        self.records.append(rec)
        self.discovery.add(name, patch_mask, image_hw, gt, patch)
        return rec

    def metrics(self) -> dict[str, float]:
        """COCO AP/AR (class-agnostic bbox) of every recorded image's instances, scored by their score."""
        return coco_detection_metrics(
            [np.asarray(r.gt_boxes).reshape(-1, 4) for r in self.records],
            [r.image_hw for r in self.records],
            [[(i.box_xyxy, i.score) for i in r.instances] for r in self.records],
        )

    def summary(self) -> dict:
        """The detection metrics with CorLoc and counts of images, boxes and instances (``results.json``)."""
        d = self.discovery.summary()
        return {
            **self.metrics(),
            "corloc": d["corloc"],
            "corloc_percent": d["corloc_percent"],
            "objects": self.objects,
            "n_images": len(self.records),
            "n_gt_boxes": sum(len(r.gt_boxes) for r in self.records),
            "n_instances": sum(len(r.instances) for r in self.records),
            "n_images_without_instance": sum(not r.instances for r in self.records),
            "n_images_without_gt_box": d["n_images_without_gt_box"],
        }

    def per_image(self) -> dict:
        """JSON-ready per-image record: instances (boxes, area, score), GT boxes, CorLoc box and hit."""
        return {
            r.name: {"image_hw": list(r.image_hw), "instances": [i.to_dict() for i in r.instances],
                     "gt_boxes_xyxy": r.gt_boxes, "corloc_box_xyxy": d.box, "corloc_hit": d.hit}
            for r, d in zip(self.records, self.discovery.records)
        }


def image_instances(model, image: np.ndarray, objects: str = "multi", flt: InstanceFilter | None = None
                    ) -> tuple[list[Instance], np.ndarray]:
    """(instances of the predicted pixel mask, patch-level binary mask) of one uint8 RGB image:
    the components of ``Found.predict``'s whole mask (soft > 0.5), all or the largest (``objects``)."""
    pred = model.predict(image)[0]
    return find_instances(pred.mask, pred.patch_probs, model.patch_size, mode=objects, flt=flt), pred.patch_mask


def evaluate_detection(model, samples: Sequence, objects: str = "multi", flt: InstanceFilter | None = None,
                       progress: bool = True, desc: str = "detection") -> DetectionResult:
    """Run ``model`` (a :class:`found.Found`) on ``samples`` (``DetectionSample``) and record them."""
    from tqdm.auto import tqdm

    from .datasets import read_rgb

    result = DetectionResult(objects=objects)
    for x in tqdm(samples, desc=desc, disable=not progress, unit="img"):
        image = read_rgb(x.image)
        instances, patch_mask = image_instances(model, image, objects, flt)
        result.add(x.name, image.shape[:2], x.boxes, instances, patch_mask, model.patch_size)
    return result
