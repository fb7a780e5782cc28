"""How closely the fast paths (and ONNX files) reproduce the eager fp32 baseline: features and masks."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..model.backbone import FoundFeatures
from ..predictor import Found
from .models import Nets, baseline_and_fast


def predicted_mask(model: Found, f: FoundFeatures) -> torch.Tensor:
    """The binary mask ``model.masks`` gives for these features (padded size)."""
    with torch.inference_mode():
        return model.soft_from_logits(model.logits_from_features(f)) > 0.5


def boolean_mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def feature_agreement(model: Found, f: FoundFeatures, ref_f: FoundFeatures | None, ref_mask: torch.Tensor | None) -> dict:
    """Max |Δ| of CLS attention and keys against ``ref_f``, and mask IoU / differing pixels against ``ref_mask`` (each where given)."""
    a: dict = {}
    if ref_f is not None:
        a["max_abs_attention"] = (f.cls_attention - ref_f.cls_attention).abs().max().item()
        a["max_abs_keys"] = (f.keys - ref_f.keys).abs().max().item()
    if ref_mask is not None:
        mk = predicted_mask(model, f)
        a["mask_iou"] = boolean_mask_iou(mk, ref_mask)
        a["mask_pixels_differing"] = int((mk != ref_mask).sum().item())
    return a


def precision_agreement(device: torch.device, precisions: list[str], paths: list[Path], nets: Nets = None,
                   max_side: int | None = None, log: Callable[[str], None] = print, onnx_files: list[str] = ()) -> list[dict]:
    """Mask agreement of each fast-path precision (and each ONNX file, ``onnx-<name>``, exported
    from the same weights) with the eager fp32 baseline on real images (each at its own size, longer
    side capped at ``max_side``, default the working scale): mean / minimum IoU and differing pixels.
    Meaningful with real weights (``--weights``); a random network's masks disagree for any change."""
    from ..engine import DEFAULT_MAX_SIDE
    from ..io.images import read_image

    max_side = DEFAULT_MAX_SIDE if max_side is None else max_side or None

    base, models = baseline_and_fast(device, precisions, False, nets)
    fast: dict[str, Found] = {f"fast-{p}": m for p, m in models.items()}
    if onnx_files:
        from ..runtime.onnx import OnnxCore

        fast.update({f"onnx-{Path(f).stem}": Found(OnnxCore(f, "cpu", coarse=base.coarse)) for f in onnx_files})
    ious: dict[str, list[float]] = {p: [] for p in fast}
    differ: dict[str, int] = {p: 0 for p in fast}
    failed: list[tuple[str, str]] = []
    n_ok = 0
    for path in paths:
        try:
            rgb = read_image(path, max_side=max_side, min_side=base.patch_size).rgb()
        except Exception as e:  # a bad file is reported and skipped
            failed.append((str(path), " ".join(str(e).split())[:120]))
            continue
        x = base.input_batch([rgb])
        ref = base.masks(x)[1]
        for p, m in fast.items():
            mk = m.masks(x.to(m.device))[1].to(ref.device)
            ious[p].append(boolean_mask_iou(mk, ref))
            differ[p] += int((mk != ref).sum().item())
        n_ok += 1
    rows = []
    for p in fast:
        if not ious[p]:
            continue
        row = {"bench": "agreement", "device": device.type, "path": p, "images": n_ok,
               "mask_iou_mean": float(np.mean(ious[p])), "mask_iou_min": float(min(ious[p])),
               "mask_pixels_differing": differ[p]}
        rows.append(row)
        log(f"agree  {n_ok} images   {row['path']:11s} mask IoU vs eager fp32: mean {row['mask_iou_mean']:.4f}, "
            f"min {row['mask_iou_min']:.4f} ({row['mask_pixels_differing']} px differ)")
    for f, why in failed:
        log(f"agree  skipped {f}: {why}")
    return rows
