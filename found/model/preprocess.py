"""Image tensors as FOUND's backbone expects them: ImageNet-normalised, zero-padded right/bottom."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_chw_float(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [H, W, 3] (or a batch [B, H, W, 3]) → float32 in [0, 1], channels first."""
    t = torch.as_tensor(image)
    if t.dtype != torch.uint8:
        raise TypeError(f"expected uint8 RGB pixels, got {t.dtype}")
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected [H, W, 3] or [B, H, W, 3] RGB, got {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).float().div(255)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(x − mean) / std per channel on [B, 3, H, W] floats in [0, 1] (torchvision ``Normalize`` order)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - mean) / std


def padded_size(h: int, w: int, patch: int) -> tuple[int, int]:
    """(H, W) rounded up to multiples of ``patch``: the size :func:`pad_to_multiple` pads to."""
    return -(-h // patch) * patch, -(-w // patch) * patch


def pad_to_multiple(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Zero-pad [.., H, W] on the right/bottom to multiples of ``patch`` (zeros in normalised space)."""
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, w, patch)
    if (ph, pw) == (h, w):
        return x
    return F.pad(x, (0, pw - w, 0, ph - h))


def prepare(image: np.ndarray | torch.Tensor, patch: int) -> torch.Tensor:
    """uint8 RGB image(s) → normalised, padded backbone input [B, 3, H', W']."""
    return pad_to_multiple(normalize(to_chw_float(image)), patch)
