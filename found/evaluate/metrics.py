"""Saliency and object-discovery metrics.

Two families live here:

* **The authors' metrics** (``authors_*``): what FOUND's ``evaluation/saliency.py`` computes with
  the metric code it took from SelfMask, reproduced value for value (torch float32, the same
  formulas and the same quirks), because the paper's numbers come from it. Quirks kept on purpose:

  - F-measure squares its ``beta_square = 0.3`` again, so the effective β² is **0.09**
    (hence the name ``maxF_beta2_0.09_authors`` in reports);
  - ``f_mean`` uses the adaptive threshold ``2·mean(pred)`` **without clipping to 1**;
  - MAE and pixel accuracy are computed on the prediction **binarised at 0.5**;
  - IoU is 0 when prediction and ground truth are both empty (``0 / (0 + 1e-7)``);
  - the S-measure is NaN for a one-pixel object or background, and whenever the ground-truth
    centroid falls in row or column 0 (an empty quadrant has a NaN mean);
  - the reference's ``results["iou"]`` is the IoU of the *last* image, not an average
    (:meth:`AuthorsMeter.reference_results` reproduces it; reports use the real mean).

* **Standard salient-object metrics** (:class:`StandardSaliencyMetrics`): a thin wrapper over
  ``pysodmetrics`` (optional dependency, ``pip install found[eval]``) with the usual β² = 0.3:
  max/mean/adaptive F, S-measure, max/mean/adaptive E-measure, MAE on the soft map.

Edge cases of the authors' metrics, as the reference behaves (and so do we):

==========================  ===================================================================
empty ground truth          IoU 0, recall 0 → every F 0, S = 1 − mean(pred)
full ground truth           S = mean(pred); ``f_mean`` 0 if 2·mean(pred) ≥ max(pred)
empty prediction            precision 0 → F 0; IoU 0
ties with a threshold       comparisons are strict (``pred > t``), thresholds are float32
                            ``arange(0, 1, 1/255)``
==========================  ===================================================================
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ..extras import require

#: Number of thresholds of the authors' F-max.
N_THRESHOLDS = 255
#: The value the authors' code calls ``beta_square``; it squares it again (effective 0.09).
AUTHORS_BETA_SQUARE_NOMINAL = 0.3
AUTHORS_BETA2_EFFECTIVE = AUTHORS_BETA_SQUARE_NOMINAL**2
_EPS = 1e-7
_TINY = 1e-20


def authors_thresholds() -> np.ndarray:
    """The 255 float32 thresholds ``torch.arange(0, 1, 1/255)`` of the authors' F-max."""
    return torch.arange(0, 1, 1 / N_THRESHOLDS).numpy()


def _as_f32(a) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a))
    if t.dim() != 2:
        raise ValueError(f"expected a 2-D map, got shape {tuple(t.shape)}")
    return t.to(torch.float32)


def _check_pair(pred, gt) -> tuple[torch.Tensor, torch.Tensor]:
    p, g = _as_f32(pred), _as_f32(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and ground truth {tuple(g.shape)} differ in size")
    return p, g


def _f_from_counts(tp: torch.Tensor, n_pred: torch.Tensor, n_gt: torch.Tensor) -> torch.Tensor:
    """The authors' F from integer counts (float32, their eps placement, β² squared again)."""
    b2 = AUTHORS_BETA_SQUARE_NOMINAL**2
    prec = tp / (n_pred + _EPS)
    rec = tp / (n_gt + _EPS)
    return ((1 + b2) * prec * rec) / (b2 * prec + rec + _EPS)


def _counts_above(pred: torch.Tensor, gt_bool: torch.Tensor, thr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each float32 threshold t: (#pixels with pred > t inside the GT, #pixels with pred > t)."""
    flat = pred.reshape(-1).numpy()
    all_sorted = np.sort(flat)
    fg_sorted = np.sort(flat[gt_bool.reshape(-1).numpy()])
    t = thr.numpy().astype(np.float32)
    n_pred = all_sorted.size - np.searchsorted(all_sorted, t, side="right")
    tp = fg_sorted.size - np.searchsorted(fg_sorted, t, side="right")
    return torch.from_numpy(tp.astype(np.int64)), torch.from_numpy(n_pred.astype(np.int64))


def authors_f_curve(pred, gt) -> np.ndarray:
    """F at each of the 255 thresholds (float32 [255]); ``max`` of it is the authors' F-max."""
    p, g = _check_pair(pred, gt)
    tp, n_pred = _counts_above(p, g != 0, torch.from_numpy(authors_thresholds()))
    return _f_from_counts(tp, n_pred, g.sum()).numpy()


def _f_at(p: torch.Tensor, g: torch.Tensor, threshold: torch.Tensor | float) -> float:
    binary = p > threshold
    tp = torch.logical_and(binary, g).sum()
    return float(_f_from_counts(tp, binary.sum(), g.sum()))


def authors_f_measure(pred, gt, threshold: float = 0.5) -> float:
    """F (effective β² = 0.09) of ``pred > threshold``."""
    p, g = _check_pair(pred, gt)
    return _f_at(p, g, threshold)


def authors_f_mean(pred, gt) -> float:
    """F at the adaptive threshold ``2·mean(pred)`` (not clipped to 1, as the authors)."""
    p, g = _check_pair(pred, gt)
    return _f_at(p, g, 2 * p.mean(dim=(-1, -2), keepdim=True))


def authors_iou(pred, gt) -> float:
    """IoU of ``pred > 0.5`` with the GT: |P∧G| / (|P∨G| + 1e-7); 0 when both are empty."""
    p, g = _check_pair(pred, gt)
    b = p > 0.5
    inter = torch.logical_and(b, g).sum()
    union = torch.logical_or(b, g).sum()
    return float(inter / (union + _EPS))


def authors_pixel_accuracy(pred, gt) -> float:
    """Share of pixels where ``pred > 0.5`` equals the GT."""
    p, g = _check_pair(pred, gt)
    return float(((p > 0.5) == g).to(torch.float32).mean())


def authors_mae(pred, gt) -> float:
    """Mean |binary(pred > 0.5) − GT| — on the *binarised* prediction, as the authors."""
    p, g = _check_pair(pred, gt)
    return float(torch.mean(torch.abs((p > 0.5).float() - g)))


# ---------------------------------------------------------------------------- S-measure
def _ssim(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor | float:
    n = pred.shape[-2] * pred.shape[-1]
    x, y = pred.mean(), gt.mean()
    denom = n - 1 + _TINY
    sx = ((pred - x) * (pred - x)).sum() / denom
    sy = ((gt - y) * (gt - y)).sum() / denom
    sxy = ((pred - x) * (gt - y)).sum() / denom
    a = 4 * x * y * sxy
    b = (x * x + y * y) * (sx + sy)
    if a != 0:  # NaN != 0 too: NaN propagates, as in the reference
        return a / (b + _TINY)
    return 1.0 if b == 0 else 0.0


def _object_score(values: torch.Tensor) -> torch.Tensor:
    x = values.mean()
    with warnings.catch_warnings():  # unbiased std of one pixel: NaN (kept, as in the reference)
        warnings.simplefilter("ignore")
        s = values.std()
    return 2.0 * x / (x * x + 1.0 + s + _TINY)


def _s_object(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    fg = torch.where(gt == 0, torch.zeros_like(pred), pred)
    bg = torch.where(gt == 1, torch.zeros_like(pred), 1 - pred)
    o_fg = _object_score(fg[gt == 1])
    o_bg = _object_score(bg[(1 - gt) == 1])
    u = gt.mean()
    return u * o_fg + (1 - u) * o_bg


def _s_region(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    rows, cols = gt.shape
    total = gt.sum()
    cx = torch.round((gt.sum(dim=0) * torch.arange(cols, dtype=torch.float32)).sum() / total).long()
    cy = torch.round((gt.sum(dim=1) * torch.arange(rows, dtype=torch.float32)).sum() / total).long()
    X, Y = int(cx), int(cy)
    area = rows * cols
    xf, yf = cx.float(), cy.float()
    w1 = xf * yf / area
    w2 = (cols - xf) * yf / area
    w3 = xf * (rows - yf) / area
    w4 = 1 - w1 - w2 - w3
    quads = [(slice(0, Y), slice(0, X)), (slice(0, Y), slice(X, cols)), (slice(Y, rows), slice(0, X)), (slice(Y, rows), slice(X, cols))]
    q = [_ssim(pred[r, c], gt[r, c]) for r, c in quads]
    return w1 * q[0] + w2 * q[1] + w3 * q[2] + w4 * q[3]


def authors_s_measure(pred, gt, alpha: float = 0.5) -> float:
    """Structure measure (Fan et al. 2017) as the authors' code computes it (float32, clamped at 0,
    NaN for one-pixel objects/backgrounds or a GT centroid in row/column 0)."""
    p, g = _check_pair(pred, gt)
    y = g.mean()
    if y == 0:
        return float(1.0 - p.mean())
    if y == 1:
        return float(p.mean())
    g = (g >= 0.5).to(torch.float32)
    q = alpha * _s_object(p, g) + (1 - alpha) * _s_region(p, g)
    q = torch.as_tensor(q)
    if q.item() < 0:
        return 0.0
    return float(q.item())


# ---------------------------------------------------------------------------- per image, dataset
@dataclass
class AuthorsScores:
    """The authors' per-image saliency metrics (``all_f``: F at each of the 255 thresholds)."""

    iou: float
    pixel_acc: float
    mae: float
    f_measure: float
    f_max: float
    f_mean: float
    s_measure: float
    all_f: np.ndarray = field(repr=False)


def authors_saliency_metrics(pred, gt) -> AuthorsScores:
    """All of the authors' per-image metrics for a soft (or binary) prediction in [0, 1] and a
    {0, 1} ground truth of the same size."""
    p, g = _check_pair(pred, gt)
    curve = authors_f_curve(p, g)
    return AuthorsScores(
        iou=authors_iou(p, g),
        pixel_acc=authors_pixel_accuracy(p, g),
        mae=authors_mae(p, g),
        f_measure=authors_f_measure(p, g),
        f_max=float(torch.from_numpy(curve).max()),
        f_mean=authors_f_mean(p, g),
        s_measure=authors_s_measure(p, g.clone()),
        all_f=curve,
    )


class AuthorsMeter:
    """Dataset-level averages the way FOUND's ``evaluate_saliency`` accumulates them (batch size 1)."""

    #: reference meter name → AuthorsScores field
    METER_FIELDS = {
        "f_scores": "f_measure",
        "f_maxs": "f_max",
        "f_maxs_fixed": "f_max",  # f_values are re-created per call: with batch size 1 this is f_max
        "f_means": "f_mean",
        "maes": "mae",
        "ious": "iou",
        "pixel_accs": "pixel_acc",
        "s_measures": "s_measure",
    }

    def __init__(self) -> None:
        self.scores: list[AuthorsScores] = []

    def update(self, scores: AuthorsScores) -> None:
        """Add one image's scores to the averages."""
        self.scores.append(scores)

    def __len__(self) -> int:
        return len(self.scores)

    def _mean(self, name: str, nan_policy: str = "propagate") -> float:
        v = np.array([getattr(s, name) for s in self.scores], dtype=np.float64)
        if v.size == 0:
            return math.nan
        if nan_policy == "omit":
            v = v[~np.isnan(v)]
            return float(v.mean()) if v.size else math.nan
        return float(v.mean())

    def meter_averages(self) -> dict[str, float]:
        """``metrics_res[k].avg`` for every reference meter (NaN propagates, as in the reference)."""
        return {k: self._mean(f) for k, f in self.METER_FIELDS.items()}

    def reference_results(self) -> dict[str, float]:
        """The reference's ``results`` dict, quirk included: ``iou`` is the last image's IoU."""
        m = self.meter_averages()
        return {
            "f_measure": m["f_scores"],
            "f_max": m["f_maxs"],
            "f_maxs_fixed": m["f_maxs_fixed"],
            "f_mean": m["f_means"],
            "s_measure": m["s_measures"],
            "mae": m["maes"],
            "iou": self.scores[-1].iou if self.scores else math.nan,
            "pixel_acc": m["pixel_accs"],
        }

    def mean_f_curve(self) -> np.ndarray:
        """Mean over images of the per-threshold F (float64 [255])."""
        if not self.scores:
            return np.full(N_THRESHOLDS, np.nan)
        return np.mean(np.stack([s.all_f.astype(np.float64) for s in self.scores]), axis=0)

    def summary(self) -> dict[str, float]:
        """Report names (the paper's Acc / IoU / maxFβ first); S-measure averaged over non-NaN images."""
        return {
            "acc": self._mean("pixel_acc"),
            "iou": self._mean("iou"),
            "maxF_beta2_0.09_authors": self._mean("f_max"),
            "F_at_0.5_beta2_0.09_authors": self._mean("f_measure"),
            "meanF_adaptive_beta2_0.09_authors": self._mean("f_mean"),
            "mae_binary_authors": self._mean("mae"),
            "s_measure_authors": self._mean("s_measure", nan_policy="omit"),
            "s_measure_nan_images": int(sum(math.isnan(s.s_measure) for s in self.scores)),
        }


# ---------------------------------------------------------------------------- pysodmetrics
def to_uint8_map(pred: np.ndarray) -> np.ndarray:
    """A [0, 1] map as the uint8 image a saliency benchmark reads (round(255·p))."""
    return np.clip(np.rint(np.asarray(pred, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def pysodmetrics_available() -> bool:
    """True when pysodmetrics is installed (the standard SOD metrics are then computed too)."""
    try:
        import py_sod_metrics  # noqa: F401
    except ImportError:
        return False
    return True


class StandardSaliencyMetrics:
    """The field's standard metrics (β² = 0.3) through ``pysodmetrics``, dataset-level as usual:
    max/mean F and E over the dataset-mean curves, adaptive F/E, S-measure and MAE averaged.

    ``step`` takes uint8 maps (prediction 0–255, ground truth 0–255 thresholded at 128 by
    pysodmetrics); predictions are min–max normalised by pysodmetrics, as in every SOD toolbox.
    """

    BETA2 = 0.3

    def __init__(self) -> None:
        psm = require("py_sod_metrics", "eval", "computing the standard saliency metrics", ImportError)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.fm = psm.Fmeasure(beta=self.BETA2)
        self.sm = psm.Smeasure()
        self.em = psm.Emeasure()
        self.mae = psm.MAE()

    def step(self, pred_u8: np.ndarray, gt_u8: np.ndarray) -> dict[str, float]:
        """Add one image; returns its own values (max F over thresholds, S, max E, MAE)."""
        pred_u8 = np.asarray(pred_u8, dtype=np.uint8)
        gt_u8 = np.asarray(gt_u8, dtype=np.uint8)
        self.fm.step(pred=pred_u8, gt=gt_u8)
        self.sm.step(pred=pred_u8, gt=gt_u8)
        self.em.step(pred=pred_u8, gt=gt_u8)
        self.mae.step(pred=pred_u8, gt=gt_u8)
        return {
            "maxF_beta2_0.3": float(np.max(self.fm.changeable_fms[-1])),
            "S_measure": float(self.sm.sms[-1]),
            "maxE": float(np.max(self.em.changeable_ems[-1])) if self.em.changeable_ems[-1] is not None else math.nan,
            "MAE_soft": float(self.mae.maes[-1]),
        }

    def results(self) -> dict:
        """Dataset metrics and the curves (precision, recall, F per threshold 0…255)."""
        fm = self.fm.get_results()
        sm = self.sm.get_results()["sm"]
        em = self.em.get_results()["em"]
        mae = self.mae.get_results()["mae"]
        curve = np.asarray(fm["fm"]["curve"], dtype=np.float64)
        em_curve = np.asarray(em["curve"], dtype=np.float64)
        return {
            "metrics": {
                "maxF_beta2_0.3": float(curve.max()),
                "meanF_beta2_0.3": float(curve.mean()),
                "adpF_beta2_0.3": float(fm["fm"]["adp"]),
                "S_measure": float(sm),
                "maxE": float(em_curve.max()),
                "meanE": float(em_curve.mean()),
                "adpE": float(em["adp"]),
                "MAE": float(mae),
            },
            "curves": {
                "precision": np.asarray(fm["pr"]["p"], dtype=np.float64),
                "recall": np.asarray(fm["pr"]["r"], dtype=np.float64),
                "f": curve,
            },
        }
