"""FOUND's two uses of the bilateral solver: refining an inference mask, and training pseudo-labels.

* :func:`refine_masks` — ``misc.apply_bilateral_solver`` at full resolution (what the authors'
  evaluation does with ``apply_bilateral=True``): solve with the binary mask as target,
  post-process, keep the result only if its IoU with the input mask is > 0.5.
* :func:`pseudo_labels` — ``misc.batch_apply_bilateral_solver`` (training): patch-level masks are
  upsampled to the image, refined, and the accepted results brought back to the patch grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .inputs import ImageLike, MaskLike, as_rgb_uint8, as_rgb_uint8_batch, as_target
from .postprocess import check_keep, mask_iou, postprocess
from .settings import RefineSettings, as_settings
from .solver import resolve_device, solve_normalised

__all__ = ["IOU_THRESHOLD", "RefineResult", "refine_masks", "pseudo_labels", "downsample_binary"]

#: The authors' acceptance threshold on IoU(input mask, refined mask) (strict ``>``).
IOU_THRESHOLD = 0.5


@dataclass
class RefineResult:
    """Outcome of refining one mask."""

    soft: np.ndarray  # [H, W] float64 solver output
    binary: np.ndarray  # [H, W] bool, post-processed solver output ("single" / "all" components)
    accepted: bool  # IoU(input mask, binary) > threshold
    iou: float  # the authors' IoU (float32 precision; NaN if both masks are empty)
    mask: np.ndarray  # [H, W] bool final mask: ``binary`` if accepted, else the input mask (> 0.5)


def refine_masks(images: Sequence[ImageLike], masks: Sequence[MaskLike], keep: str = "single", *,
                 iou_threshold: float = IOU_THRESHOLD, settings: RefineSettings | None = None,
                 device: torch.device | str | None = None) -> list[RefineResult]:
    """Refine full-resolution masks with the bilateral solver, the authors' way, for a batch.

    ``images``: a sequence of images (see :func:`found.refine.bilateral_solve`) or a float
    [B, 3, H, W] tensor; ``masks``: the matching [H, W] masks (bool or 0/1 float, e.g. the
    thresholded prediction upsampled to the image). ``keep`` selects the components ("single"
    for FOUND's single-object mode, "all" for its multi mode, see :mod:`found.refine.postprocess`).
    ``settings`` are the solver's (default: FOUND's); it runs on ``device`` (default: the device of
    the first tensor given, else CPU). All images are solved in one batched call; post-processing
    runs on the CPU.
    """
    check_keep(keep)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim != 4:
        raise ValueError("images must be a sequence of images or a [B, 3, H, W] tensor; "
                         f"got a single array of shape {tuple(images.shape)} (wrap it in a list)")
    images, masks = list(images), list(masks)
    if len(images) != len(masks):
        raise ValueError(f"got {len(images)} images but {len(masks)} masks")
    settings = as_settings(settings)
    if not images:
        return []
    device = resolve_device(device, [*images, *masks])
    settings.check_device(device)
    rgbs = [as_rgb_uint8(im, device) for im in images]
    tgts = [as_target(m, r.shape[:2], device, i, settings) for i, (m, r) in enumerate(zip(masks, rgbs))]
    softs = solve_normalised(rgbs, [t.reshape(-1) for t in tgts], settings).soft
    results = []
    for soft, target in zip(softs, tgts):
        soft = soft.detach().to("cpu", torch.float64).numpy()
        target = target.cpu().numpy()
        binary = postprocess(soft, keep)
        iou = mask_iou(target, binary)
        accepted = bool(iou > iou_threshold)
        results.append(RefineResult(soft=soft, binary=binary, accepted=accepted, iou=iou,
                                    mask=binary.copy() if accepted else target > 0.5))
    return results


def pseudo_labels(images: torch.Tensor, patch_masks: torch.Tensor, patch: int = 8, keep: str = "all", *,
                  iou_threshold: float = IOU_THRESHOLD, settings: RefineSettings | None = None,
                  device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilateral-refined patch-level pseudo-labels for a training batch (``batch_apply_bilateral_solver``).

    ``images``: float [B, 3, H, W] in [0, 1] (the un-normalised crops); ``patch_masks``: [B, 1, h, w]
    or [B, h, w] (bool or 0/1 float) with h = H // patch, w = W // patch. Per image: the mask is
    resized to (H, W) (bilinear, align_corners=False, like ``cv2.resize``), solved (all images in
    one batched call with ``settings``, on ``device``, default the inputs' device), post-processed with ``keep`` (training uses "all"),
    and accepted if IoU(resized mask, result) > 0.5; an accepted result is brought back to (h, w) by
    bilinear interpolation + ``.bool()`` (a patch is foreground iff any of its 4 central pixels
    is), a rejected one keeps the input mask (``> 0.5``). Gradients are not tracked.

    Returns ``(labels [B, h, w] bool, accepted [B] bool)`` on the inputs' device.
    """
    check_keep(keep)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.dtype.is_floating_point:
        raise ValueError("images must be a float tensor [B, 3, H, W] in [0, 1], got "
                         f"{type(images).__name__} {getattr(images, 'dtype', '')} {tuple(getattr(images, 'shape', ()))}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 3 (or 1) channels, got shape {tuple(images.shape)}")
    if not isinstance(patch_masks, torch.Tensor):
        raise TypeError(f"patch_masks must be a tensor, got {type(patch_masks).__name__}")
    n_img, _, height, width = images.shape
    masks = patch_masks.unsqueeze(1) if patch_masks.dim() == 3 else patch_masks
    if masks.dim() != 4 or masks.shape[0] != n_img or masks.shape[1] != 1:
        raise ValueError(f"patch_masks must be [B, 1, h, w] or [B, h, w] with B = {n_img}, got {tuple(patch_masks.shape)}")
    h, w = masks.shape[-2:]
    if (h, w) != (height // patch, width // patch):
        raise ValueError(f"patch_masks grid {(h, w)} does not match images {(height, width)} with patch {patch}: "
                         f"expected {(height // patch, width // patch)}")
    settings = as_settings(settings)
    device = torch.device(device) if device is not None else images.device
    settings.check_device(device)
    if n_img == 0:
        empty = torch.zeros((0, h, w), dtype=torch.bool, device=images.device)
        return empty, torch.zeros(0, dtype=torch.bool, device=images.device)

    with torch.no_grad():
        masks = masks.detach().to(device=device, dtype=torch.float32)
        resized = F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        rgb = as_rgb_uint8_batch(images.detach().to(device))
        targets = list(resized.to(torch.float64).reshape(n_img, -1).unbind(0))
        softs = solve_normalised(list(rgb.unbind(0)), targets, settings).soft
        soft = torch.stack(softs).to("cpu", torch.float64).numpy()
        binary = torch.from_numpy(np.stack([postprocess(s, keep) for s in soft])).to(device)
        fg = resized > 0.5
        inter = (fg & binary).sum((1, 2)).float()
        union = (fg | binary).sum((1, 2)).float()
        accepted = (inter / union) > iou_threshold  # float32, NaN (both empty) → rejected
        down = downsample_binary(binary, (h, w))
        labels = torch.where(accepted.view(-1, 1, 1), down, masks[:, 0] > 0.5)
    return labels.to(images.device), accepted.to(images.device)


def downsample_binary(binary: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """[B, H, W] bool → [B, h, w] bool as the authors: bilinear (align_corners=False) then ``.bool()``.

    For H = 8h this makes a patch foreground iff any of its 4 central pixels (8i+3, 8i+4) × (8j+3,
    8j+4) is: the only pixels with a non-zero bilinear weight.
    """
    down = F.interpolate(binary.unsqueeze(1).float(), size=tuple(hw), mode="bilinear", align_corners=False)
    return down[:, 0] != 0
