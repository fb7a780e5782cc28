"""From head logits to masks and boxes, following the authors' evaluation code exactly."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def upsample_logits(logits: torch.Tensor, patch: int, image_hw: tuple[int, int]) -> torch.Tensor:
    """[B, 1, h, w] logits → bilinear ×patch (align_corners=False) → cropped to the image [B, 1, H, W]."""
    up = F.interpolate(logits, scale_factor=patch, mode="bilinear", align_corners=False)
    return up[..., : image_hw[0], : image_hw[1]]


def single_component(binary: np.ndarray) -> np.ndarray:
    """The authors' 'single' rule: among the 4-connected components of ``binary``, drop the label
    that overlaps the background most, keep the most populous remaining one. An empty mask stays empty."""
    from scipy import ndimage  # imported when first needed: it costs 0.2 s of a short run's start

    binary = np.asarray(binary, dtype=bool)
    labeled, n = ndimage.label(binary)
    if n == 0:
        return binary.copy()
    counts = np.bincount(labeled.ravel(), minlength=n + 1)
    order = np.argsort(counts)
    # overlap of each label (in `order`) with the background; argmax gives the position to drop
    bg_overlap = np.bincount(labeled[~binary].ravel(), minlength=n + 1)[order]
    order = np.delete(order, int(np.argmax(bg_overlap)))
    return labeled == order[-1]


def largest_component(pred: np.ndarray) -> np.ndarray:
    """Bool mask of the largest 4-connected component of a binary prediction; ties go to the
    component met first in raster order (the authors' ``bincount().argmax()``).

    Raises ValueError on an all-zero prediction.
    """
    from scipy import ndimage

    labeled, n = ndimage.label(np.asarray(pred))
    if n == 0:
        raise ValueError("no foreground in the prediction: no box")
    return labeled == int(np.argmax(np.bincount(labeled.ravel())[1:])) + 1


def component_box(component: np.ndarray, image_hw: tuple[int, int], patch: int) -> np.ndarray:
    """Box (x1, y1, x2, y2; max exclusive) of a non-empty bool mask, scaled by ``patch`` unless the
    mask already has the image size; only x2/y2 are clipped to the image (as the authors)."""
    ys, xs = np.nonzero(component)
    y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    scale = 1 if tuple(component.shape) == tuple(image_hw) else patch
    box = [x1 * scale, y1 * scale, x2 * scale, y2 * scale]
    box[2] = min(box[2], int(image_hw[1]))
    box[3] = min(box[3], int(image_hw[0]))
    return np.asarray(box, dtype=np.int64)


def largest_component_box(pred: np.ndarray, image_hw: tuple[int, int], patch: int) -> np.ndarray:
    """Box of the largest 4-connected component of a binary prediction (the authors'
    ``get_bbox_from_segmentation_labels``). Raises ValueError on an all-zero prediction."""
    return component_box(largest_component(pred), image_hw, patch)


def box_iou(box: np.ndarray | torch.Tensor, boxes: np.ndarray | torch.Tensor, eps: float = 1e-7) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box with K boxes, float32, with the authors' eps placement."""
    b1 = torch.as_tensor(np.asarray(box)).float().reshape(4)
    b2 = torch.as_tensor(np.asarray(boxes)).float().reshape(-1, 4)
    iw = (torch.minimum(b1[2], b2[:, 2]) - torch.maximum(b1[0], b2[:, 0])).clamp(min=0)
    ih = (torch.minimum(b1[3], b2[:, 3]) - torch.maximum(b1[1], b2[:, 1])).clamp(min=0)
    inter = iw * ih
    w1, h1 = b1[2] - b1[0], b1[3] - b1[1] + eps
    w2, h2 = b2[:, 2] - b2[:, 0], b2[:, 3] - b2[:, 1] + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    return (inter / union).numpy()
