"""FOUND's post-processing of the bilateral-solver output, and the IoU its accept test uses.

Both follow the authors' code (``bilateral_solver.bilateral_solver_output`` and ``misc.IoU``)
exactly, including their quirks, which are part of the method's published numbers:

* ``soft > 0.5`` (strict: a pixel at exactly 0.5 is background), ``binary_fill_holes``, then
  4-connected components; the labels 0…n (0 = background) are ordered by pixel count with
  ``np.argsort`` (numpy's default sort, so ties resolve as in the reference).
* ``keep="single"`` keeps the **second most populous label, background counted** (FOUND's
  ``get_all_cc=False``): normally the largest object. If nothing is labelled the reference's
  ``IndexError`` is swallowed and an **all-ones** mask is returned.
* ``keep="all"`` keeps **every label except the most populous one** (``get_all_cc=True``):
  normally all objects. Nothing labelled → all zeros.
* Both assume the background is the most populous region. When a foreground component is larger
  than the background, "single" and "all" return the background (plus, for "all", the other
  components) — e.g. a full mask gives an empty result, which the IoU test then rejects.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

KEEP_MODES = ("single", "all")

__all__ = ["KEEP_MODES", "postprocess", "mask_iou", "check_keep"]


def check_keep(keep: str) -> str:
    """Validate a component-selection mode ("single" or "all")."""
    if keep not in KEEP_MODES:
        raise ValueError(f"keep must be one of {KEEP_MODES}, got {keep!r}")
    return keep


def _as_numpy_2d(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    """A [H, W] array from a numpy array or a (any-device) tensor."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D [H, W] array, got shape {x.shape}")
    return x


def postprocess(soft: np.ndarray | torch.Tensor, keep: str = "single") -> np.ndarray:
    """Binary mask [H, W] (bool) from a solver output, with the authors' component selection."""
    check_keep(keep)
    soft = _as_numpy_2d(soft, "soft")
    binary = ndimage.binary_fill_holes(soft > 0.5)
    labeled, n = ndimage.label(binary)  # 4-connectivity (scipy's default cross)
    counts = np.bincount(labeled.ravel(), minlength=n + 1)  # == [np.sum(labeled == i) for i in 0..n]
    order = np.argsort(counts)
    if keep == "single":
        if n == 0:  # the reference's pixel_order[-2] raises IndexError → all ones
            return np.ones(soft.shape, dtype=bool)
        return labeled == order[-2]
    if n == 0:
        return np.zeros(soft.shape, dtype=bool)
    return np.isin(labeled, order[:-1])


def mask_iou(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """The authors' IoU (``misc.IoU``): both masks binarised with ``> 0.5``, |a∧b| / |a∨b| in float32.

    Two empty masks give NaN (0/0, as the reference), which never passes a ``> threshold`` test.
    """
    a = _as_numpy_2d(a, "mask a") > 0.5
    b = _as_numpy_2d(b, "mask b") > 0.5
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    inter = np.count_nonzero(a & b)
    union = np.count_nonzero(a | b)
    if union == 0:
        return float("nan")
    return float(np.float32(inter) / np.float32(union))
