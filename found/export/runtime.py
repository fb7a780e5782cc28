"""Whether an exported file may be used: the int8 acceptance rule (masks against the fp32 file) and
the head a file was exported with. The ONNX Runtime model itself is ``Found(OnnxCore(path))``
(:mod:`found.runtime.onnx`, :func:`found.load_onnx`); its old names are kept here.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import FoundError
from ..predictor import Found, OnnxFound, load_onnx  # noqa: F401  (names before 0.2)
from ..runtime.onnx import PROVIDERS, OnnxCore, open_session  # noqa: F401  (names before 0.2)
from .onnx import head_sha256

#: int8 files are accepted only with at least this mask IoU against fp32 on real photos.
MIN_INT8_IOU = 0.99


def head_file_sha256(head: str | os.PathLike) -> str:
    """The :func:`found.export.onnx.head_sha256` of a head checkpoint file (to check a file's head)."""
    from ..hub.build import load_head
    from ..hub.weights import existing_file, load_checkpoint

    path = existing_file(head, "head=PATH")
    state = load_checkpoint(path)
    inner = state.get("decoder", state)
    dim = int(inner["weight"].shape[1]) if "weight" in inner else 384
    return head_sha256(load_head(head=path, in_dim=dim))


def predictor_agreement(reference: Found, candidate: Found, images: list[np.ndarray]) -> dict:
    """Binary-mask agreement of two predictors (``candidate`` against ``reference``) on uint8 images,
    one at a time: mean / minimum IoU over the images and the number of differing pixels."""
    ious, differ = [], 0
    for rgb in images:
        a = reference.predict(rgb)[0].mask
        b = candidate.predict(rgb)[0].mask
        union = np.logical_or(a, b).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(a, b).sum() / union))
        differ += int((a != b).sum())
    if not ious:
        raise FoundError("mask agreement needs at least one image")
    return {"images": len(ious), "mask_iou_mean": float(np.mean(ious)), "mask_iou_min": float(min(ious)),
            "mask_pixels_differing": differ}


def int8_accepted(agreement: dict, min_iou: float | None = None) -> bool:
    """The int8 acceptance rule: every image's mask IoU against fp32 is at least ``min_iou``
    (default :data:`MIN_INT8_IOU`)."""
    return agreement["mask_iou_min"] >= (MIN_INT8_IOU if min_iou is None else min_iou)
