"""Object instances of a binary mask: one per connected component, with box, area, pixels and score.

Pure numpy/scipy (layer "core"). An *instance* is a 4-connected component of the predicted
pixel mask (``scipy.ndimage.label``'s default structure, the connectivity of
:mod:`found.model.masks`). Its **score** is the mean object probability of the patch cells it touches:
the unweighted mean of ``patch_probs[y // patch, x // patch]`` over the distinct cells holding at
least one of its pixels — the per-image ``Prediction.score`` rule (mean over the patches of the
component), extended to pixel masks.

Consistency with ``Prediction.box``/``score`` (the largest 4-connected component of the patch
mask): the instances of :func:`patch_mask_pixels` (the patch mask at image size) reproduce them
exactly — same box (x2/y2 clipped to the image), same score. The instances of the full-resolution
mask (``soft > 0.5``, possibly refined) have tight pixel boxes instead, which differ from the
patch box by the bilinear upsampling (less than one patch on each side).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import OptionsError

#: ``find_instances`` modes: every component, or only the largest one (the per-image box's rule).
INSTANCE_MODES = ("multi", "single")


@dataclass(frozen=True, eq=False)  # eq would compare the crop arrays ambiguously
class Instance:
    """One object: a connected component of a binary mask.

    ``crop`` holds the component's pixels inside its box (bool [y2 − y1, x2 − x1]); the whole-image
    mask is :meth:`full_mask` (kept cropped to save memory on large images with many objects).
    """

    box_xyxy: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, max exclusive
    area: int  # pixels of the component
    score: float  # mean object probability of the patch cells it touches, in [0, 1]
    crop: np.ndarray  # bool [y2 - y1, x2 - x1]: the component inside its box
    image_hw: tuple[int, int]  # size of the image the mask belongs to

    @property
    def box_xywh(self) -> tuple[int, int, int, int]:
        """COCO box (x, y, width, height) in pixels."""
        x1, y1, x2, y2 = self.box_xyxy
        return (x1, y1, x2 - x1, y2 - y1)

    def full_mask(self, hw: tuple[int, int] | None = None) -> np.ndarray:
        """bool [H, W] mask of this instance on the whole image (``hw`` defaults to ``image_hw``)."""
        h, w = self.image_hw if hw is None else (int(hw[0]), int(hw[1]))
        x1, y1, x2, y2 = self.box_xyxy
        if x2 > w or y2 > h:
            raise ValueError(f"instance box {self.box_xyxy} does not fit an image of size {(h, w)}")
        out = np.zeros((h, w), dtype=bool)
        out[y1:y2, x1:x2] = self.crop
        return out

    def to_dict(self) -> dict:
        """JSON-ready summary (no pixels): boxes, area and score."""
        return {"box_xyxy": list(self.box_xyxy), "box_xywh": list(self.box_xywh), "area": self.area, "score": self.score}


class InstanceOptionError(OptionsError):
    """A bad instance filter option (a usage error: one line naming the field)."""


@dataclass(frozen=True)
class InstanceFilter:
    """Which instances to keep.

    ``max_instances``: at most K instances (the K largest), None for all; K ≥ 1.
    ``min_area``: drop smaller instances; ≥ 1 is a number of pixels, in [0, 1) a fraction of the
    image's pixels (so 0.01 keeps instances of at least 1 % of the image); 0 keeps all.
    ``min_score``: drop instances whose score is below it; in [0, 1].
    Filters apply to area and score first, then the K largest of what is left are kept.
    """

    max_instances: int | None = None
    min_area: float = 0.0
    min_score: float = 0.0

    def __post_init__(self) -> None:
        k = self.max_instances
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
            raise InstanceOptionError("max_instances", f"must be an integer >= 1, got {k!r}")
        if not _is_number(self.min_area) or not (0 <= self.min_area < math.inf):
            raise InstanceOptionError("min_area", f"must be >= 0 (pixels if >= 1, else a fraction of the image), got {self.min_area!r}")
        if not _is_number(self.min_score) or not (0 <= self.min_score <= 1):
            raise InstanceOptionError("min_score", f"must be in [0, 1], got {self.min_score!r}")

    def min_pixels(self, image_hw: tuple[int, int]) -> float:
        """The area threshold in pixels for an image of size ``image_hw``."""
        return float(self.min_area) if self.min_area >= 1 else float(self.min_area) * image_hw[0] * image_hw[1]

    def keeps(self, inst: Instance) -> bool:
        """Whether ``inst`` passes the area and score thresholds (not the count)."""
        return inst.area >= self.min_pixels(inst.image_hw) and inst.score >= self.min_score

    def apply(self, instances: list[Instance]) -> list[Instance]:
        """Instances (sorted by area, largest first) that pass, at most ``max_instances``."""
        kept = [i for i in instances if self.keeps(i)]
        return kept if self.max_instances is None else kept[: int(self.max_instances)]


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and not math.isnan(v)


def _cell_size(patch: int | tuple[float, float]) -> tuple[float, float]:
    """(vertical, horizontal) pixels per patch cell: ``patch`` itself, or a pair for a mask scaled
    up from the size the model saw (e.g. ``patch × H / h`` for a photo processed reduced)."""
    py, px = (patch, patch) if np.isscalar(patch) else patch
    if min(py, px) < 1:
        raise ValueError(f"patch must be >= 1, got {patch}")
    return (int(py), int(px)) if float(py).is_integer() and float(px).is_integer() else (float(py), float(px))


def _check_inputs(mask: np.ndarray, patch_probs: np.ndarray, cell: tuple[float, float]) -> None:
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    if patch_probs.ndim != 2:
        raise ValueError(f"expected 2-D patch probabilities, got shape {patch_probs.shape}")
    need = (math.ceil(mask.shape[0] / cell[0] - 1e-9), math.ceil(mask.shape[1] / cell[1] - 1e-9))
    if patch_probs.shape[0] < need[0] or patch_probs.shape[1] < need[1]:
        raise ValueError(f"patch probabilities {patch_probs.shape} do not cover a {mask.shape} mask with patch {cell} (need {need})")


def find_instances(
    mask: np.ndarray,
    patch_probs: np.ndarray,
    patch: int | tuple[float, float],
    mode: str = "multi",
    flt: InstanceFilter | None = None,
) -> list[Instance]:
    """Instances of a binary pixel mask, largest first (ties: first met in raster order).

    ``mask``: bool [H, W] (the predicted mask at image size). ``patch_probs``: float [h, w] object
    probabilities on the patch grid (h ≥ ⌈H / patch⌉, w ≥ ⌈W / patch⌉; padding cells are unused).
    ``mode="multi"``: every 4-connected component; ``"single"``: only the largest one (the
    per-image box's rule), to which ``flt`` then applies. An empty mask, or nothing passing
    ``flt``, gives ``[]``.
    """
    if mode not in INSTANCE_MODES:
        raise InstanceOptionError("mode", f"must be one of {INSTANCE_MODES}, got {mode!r}")
    mask = np.asarray(mask, dtype=bool)
    probs = np.asarray(patch_probs)
    if not np.issubdtype(probs.dtype, np.floating):
        probs = probs.astype(np.float64)
    cell = _cell_size(patch)
    _check_inputs(mask, probs, cell)
    from scipy import ndimage  # imported when first needed (0.2 s of a short run's start)

    labeled, n = ndimage.label(mask)
    if n == 0:
        return []
    areas = np.bincount(labeled.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-areas, kind="stable")  # largest first; equal areas keep label (raster) order
    if mode == "single":
        order = order[:1]
    slices = ndimage.find_objects(labeled)
    hw = (int(mask.shape[0]), int(mask.shape[1]))
    out = [_instance(labeled, int(k) + 1, slices[int(k)], int(areas[k]), probs, cell, hw) for k in order]
    return (flt or InstanceFilter()).apply(out)


def _instance(labeled: np.ndarray, label: int, sl: tuple[slice, slice], area: int, probs: np.ndarray,
              cell: tuple[float, float], hw: tuple[int, int]) -> Instance:
    """One component: its box, cropped pixels and patch-cell score."""
    crop = labeled[sl] == label
    y1, x1 = sl[0].start, sl[1].start
    cells = _touched_cells(crop, (y1, x1), cell, probs.shape)
    score = float(probs.ravel()[cells].mean())  # cells in raster order: the same sum as probs[component].mean()
    box = (int(x1), int(y1), int(sl[1].stop), int(sl[0].stop))
    return Instance(box_xyxy=box, area=area, score=score, crop=crop, image_hw=hw)


def _touched_cells(crop: np.ndarray, origin: tuple[int, int], cell: tuple[float, float], grid: tuple[int, int]) -> np.ndarray:
    """Flat indices (raster order) of the patch cells holding at least one pixel of ``crop``.

    Rows, then columns, of the crop are OR-reduced over each cell's span, so memory stays near the
    crop's size (no list of pixel coordinates, which would be 16 bytes a pixel on huge images).
    """
    def spans(start: int, n: int, size: float, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Where the crop's rows (or columns) enter a new patch cell: offsets for ``reduceat``, and each run's cell."""
        idx = np.minimum((np.arange(start, start + n) // size).astype(np.int64), limit - 1)
        starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
        return starts, idx[starts]

    (ys, cy), (xs, cx) = spans(origin[0], crop.shape[0], cell[0], grid[0]), spans(origin[1], crop.shape[1], cell[1], grid[1])
    touched = np.logical_or.reduceat(np.logical_or.reduceat(crop, ys, axis=0), xs, axis=1)
    r, c = np.nonzero(touched)
    return cy[r] * grid[1] + cx[c]


def patch_mask_pixels(patch_mask: np.ndarray, patch: int, image_hw: tuple[int, int]) -> np.ndarray:
    """The patch-level mask at image size: each cell repeated ``patch`` times, cropped to the image.

    Every cell keeps at least one pixel (the grid is ⌈H / patch⌉ × ⌈W / patch⌉ or larger), so the
    components are those of the patch mask, and :func:`find_instances` on this mask gives the
    boxes and scores of :func:`found.model.masks.component_box` and ``Prediction.score``.
    """
    pm = np.asarray(patch_mask, dtype=bool)
    h, w = int(image_hw[0]), int(image_hw[1])
    if pm.ndim != 2 or pm.shape[0] * patch < h or pm.shape[1] * patch < w:
        raise ValueError(f"patch mask {pm.shape} with patch {patch} does not cover an image of size {(h, w)}")
    return np.repeat(np.repeat(pm, patch, axis=0), patch, axis=1)[:h, :w]
