"""Input normalisation shared by the solver entry points: images of any supported kind → uint8
[H, W, 3] tensors (as FOUND feeds its solver), masks → float64 targets, with one-line errors.

Images go through the one normaliser, :func:`found.io.images.to_rgb_array`; only the solver's own
float convention (channel-first in [0, 1], truncated like torchvision's ``ToPILImage``) is read here."""
from __future__ import annotations

from typing import TYPE_CHECKING, Union

import numpy as np
import torch

from ..io.images import to_rgb_array
from .settings import RefineSettings

if TYPE_CHECKING:
    from PIL import Image as _PILImage

__all__ = ["ImageLike", "MaskLike", "as_rgb_uint8", "as_rgb_uint8_batch", "as_target"]

ImageLike = Union[np.ndarray, torch.Tensor, "_PILImage.Image"]
MaskLike = Union[np.ndarray, torch.Tensor]


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``a``'s memory when possible (copied if read-only or non-contiguous)."""
    if not a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a, order="C")
    return torch.from_numpy(a)


def as_rgb_uint8(image: ImageLike, device: torch.device | str | None = None) -> torch.Tensor:
    """Any supported image → uint8 [H, W, 3] tensor (on ``device``, default: where it is).

    * floating arrays/tensors are channel-first in [0, 1]: [3, H, W], [1, H, W] or [H, W]; they
      become ``x·255`` truncated to uint8 (torchvision ``ToPILImage``, what FOUND feeds the solver;
      values outside [0, 1] are clamped first instead of wrapping);
    * everything else goes through :func:`found.io.images.to_rgb_array`: uint8 arrays/tensors
      channel-last, [H, W, 3], [H, W, 1] or [H, W] (grey → replicated; no alpha channel), PIL images
      of any mode.
    """
    is_tensor = isinstance(image, torch.Tensor)
    floating = image.dtype.is_floating_point if is_tensor else isinstance(image, np.ndarray) and image.dtype.kind == "f"
    if not floating:
        t = _from_numpy(to_rgb_array(image, alpha=False))
        target = device if device is not None else (image.device if is_tensor else None)
        return t if target is None else t.to(target)
    t = _from_numpy(image) if isinstance(image, np.ndarray) else image.detach()
    if device is not None:
        t = t.to(device)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"a float image must be [3, H, W], [1, H, W] or [H, W] (channel-first, in [0, 1]), got {tuple(t.shape)}")
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError("the image contains NaN or infinite values")
    t = (t * 255).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"empty image of shape {tuple(t.shape)}")
    if t.shape[-1] == 1:
        t = t.expand(-1, -1, 3)
    return t.contiguous()


def as_target(mask: MaskLike, hw: tuple[int, int], device: torch.device, index: int | None = None,
              settings: RefineSettings | None = None) -> torch.Tensor:
    """A [H, W] (or [1, H, W]) mask → float64 tensor; its shape must be the image's (H, W)
    (``settings``' backend decides whether numpy checks a CPU mask's values)."""
    t = _from_numpy(mask) if isinstance(mask, np.ndarray) else mask
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"masks must be numpy arrays or torch tensors, got {type(mask).__name__}")
    t = t.detach()
    if t.dim() == 3 and t.shape[0] == 1:
        t = t[0]
    where = "" if index is None else f" (image {index})"
    if tuple(t.shape) != tuple(hw):
        raise ValueError(f"mask shape {tuple(t.shape)} does not match the image size {tuple(hw)}{where}: "
                         "resize the mask to the image first")
    if t.dtype.is_complex:
        raise TypeError(f"complex masks are not supported{where}")
    if t.dtype.is_floating_point:  # checked before the float64 copy; integer / bool masks are finite
        use_numpy = (t.device.type == "cpu" and t.dtype != torch.bfloat16
                     and (settings is None or settings.backend != "torch"))
        finite = bool(np.isfinite(t.numpy()).all()) if use_numpy else bool(torch.isfinite(t).all())
        if not finite:
            raise ValueError(f"the mask contains NaN or infinite values{where}")
    return t.to(device=device, dtype=torch.float64)


def as_rgb_uint8_batch(images: torch.Tensor) -> torch.Tensor:
    """Float [B, C, H, W] in [0, 1] → uint8 [B, H, W, 3] as torchvision's ``ToPILImage`` (×255, truncated)."""
    x = images.float() if images.dtype in (torch.float16, torch.bfloat16) else images
    if not bool(torch.isfinite(x).all()):
        raise ValueError("the images contain NaN or infinite values")
    rgb = (x * 255).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    if rgb.shape[-1] == 1:
        rgb = rgb.expand(-1, -1, -1, 3)
    return rgb.contiguous()
