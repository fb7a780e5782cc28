"""The user-facing FOUND model: images in, object masks and boxes out."""
from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .background import discover_background
from .backbone import FoundFeatures, VisionTransformer
from .head import FoundHead
from .masks import largest_component_box, single_component, upsample_logits
from .preprocess import pad_to_multiple, normalize, padded_size, to_chw_float

ImageLike = "np.ndarray | Image.Image | str | os.PathLike | torch.Tensor"
MODES = ("multi", "single")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class Prediction:
    """FOUND's output for one image (all arrays on CPU)."""

    soft: np.ndarray  # [H, W] float32 object probability
    mask: np.ndarray  # [H, W] bool: soft > 0.5 ('multi') or its main component ('single')
    patch_mask: np.ndarray  # [h, w] bool: patch-level binary prediction
    box: np.ndarray | None  # (x1, y1, x2, y2), max exclusive: largest component of patch_mask
    score: float  # mean object probability over the patches of that component (0 if none)
    refined: bool = False  # True when bilateral refinement was applied and accepted

    @property
    def image_hw(self) -> tuple[int, int]:
        return tuple(self.mask.shape)  # type: ignore[return-value]


def default_device() -> torch.device:
    """CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def as_rgb_array(image) -> np.ndarray:
    """Accept a path, a PIL image, or uint8 [H, W, 3] array/tensor; return uint8 [H, W, 3]."""
    from .imageio import load_image, to_rgb_array

    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb_array(image)
    a = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an [H, W, 3] RGB image, got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    a = a[..., :3]
    if a.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {a.dtype}")
    return np.ascontiguousarray(a)


class Found:
    """FOUND on a frozen ViT: ``predict`` gives soft/binary masks and boxes for a list of images.

    ``head=None`` gives the training-free coarse masks of step 1 (background discovery).
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        head: FoundHead | None = None,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        tau: float = 0.3,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device) if device is not None else default_device()
        self.backbone = backbone.eval().requires_grad_(False).to(self.device)
        self.head = None if head is None else head.eval().requires_grad_(False).to(self.device)
        self.precision = precision
        self.tau = tau

    @property
    def patch_size(self) -> int:
        return self.backbone.patch_size

    # ------------------------------------------------------------------ tensors
    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> FoundFeatures:
        """Last-block attention and keys (float32) for a normalised, padded batch [B, 3, H, W]."""
        x = x.to(self.device, non_blocking=True)
        with self._autocast():
            f = self.backbone.found_features(x)
        return FoundFeatures(f.cls_attention.float(), f.keys.float(), f.grid_hw)

    @torch.inference_mode()
    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] (coarse masks give ±1 when there is no head)."""
        f = self.features(x)
        if self.head is None:
            bkg = discover_background(f.cls_attention, f.keys, f.grid_hw, tau=self.tau)
            return (bkg.objects.float() * 2 - 1)[:, None]
        return self.head(f.key_map())

    # ------------------------------------------------------------------ images
    def _batches(self, arrays: Sequence[np.ndarray], batch_size: int) -> Iterable[list[int]]:
        """Indices grouped by padded size (so no extra padding changes a result), in chunks."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, a in enumerate(arrays):
            groups[padded_size(a.shape[0], a.shape[1], self.patch_size)].append(i)
        for idx in groups.values():
            for s in range(0, len(idx), batch_size):
                yield idx[s : s + batch_size]

    @torch.inference_mode()
    def predict(
        self,
        images: Sequence | np.ndarray | Image.Image | str | os.PathLike,
        mode: str = "multi",
        refine: bool = False,
        batch_size: int = 8,
    ) -> list[Prediction]:
        """Masks and boxes for images of any sizes (paths, PIL images or uint8 [H, W, 3] arrays).

        ``mode='multi'`` keeps the whole mask, ``'single'`` its main component (the authors'
        evaluation rule). ``refine=True`` applies the bilateral solver, kept only if IoU > 0.5.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        single_input = isinstance(images, (str, os.PathLike, Image.Image)) or (
            isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 3
        )
        arrays = [as_rgb_array(im) for im in ([images] if single_input else images)]
        out: list[Prediction | None] = [None] * len(arrays)
        p = self.patch_size
        for idx in self._batches(arrays, batch_size):
            x = pad_to_multiple(normalize(to_chw_float(np.stack([arrays[i] for i in idx]))), p)
            logits = self.patch_logits(x).float()
            h, w = arrays[idx[0]].shape[:2]
            if self.head is None:
                soft = F.interpolate(logits.gt(0).float(), scale_factor=p, mode="nearest")[..., :h, :w]
            else:
                soft = torch.sigmoid(upsample_logits(logits, p, (h, w)))
            probs = torch.sigmoid(logits) if self.head is not None else logits.gt(0).float()
            soft_np = soft[:, 0].cpu().numpy()
            patch_np = logits[:, 0].gt(0).cpu().numpy()
            probs_np = probs[:, 0].cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = self._finish(arrays[i], soft_np[j], patch_np[j], probs_np[j], mode, refine)
        return out  # type: ignore[return-value]

    def _finish(self, image, soft, patch_mask, probs, mode, refine) -> Prediction:
        mask = soft > 0.5
        refined = False
        if refine:
            from .refine import refine_masks

            r = refine_masks([image], [mask.astype(np.float32)], keep="single" if mode == "single" else "all")[0]
            refined = bool(r.accepted)
            mask = np.asarray(r.mask, dtype=bool)
        if mode == "single":
            mask = single_component(mask)
        box, score = None, 0.0
        if patch_mask.any():
            box = largest_component_box(patch_mask, mask.shape, self.patch_size)
            from scipy import ndimage

            labeled, _ = ndimage.label(patch_mask)
            largest = int(np.argmax(np.bincount(labeled.ravel())[1:])) + 1
            score = float(probs[labeled == largest].mean())
        return Prediction(soft=soft.astype(np.float32), mask=mask, patch_mask=patch_mask, box=box, score=score, refined=refined)
