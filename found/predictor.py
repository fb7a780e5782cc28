"""The user-facing FOUND model: images in, object masks and boxes out."""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from .model.backbone import FoundFeatures, VisionTransformer
from .model.background import DEFAULT_TAU
from .model.head import CoarseHead, FoundHead, probabilities, soft_masks
from .model.instances import Instance, InstanceFilter, find_instances
from .model.masks import component_box, largest_component, single_component
from .model.preprocess import normalize, padded_size, to_chw_float
from .io.images import to_rgb_array as as_rgb_array  # the one image normaliser (kept under its old name here)
from .options import MODES, check
from .runtime.core import CPU_CHUNK_TOKENS, Core
from .runtime.device import PRECISIONS, default_device
from .runtime.onnx import OnnxCore
from .runtime.torch_core import TorchCore

ImageLike = "np.ndarray | Image.Image | str | os.PathLike | torch.Tensor"
__all__ = ["CPU_CHUNK_TOKENS", "MODES", "PRECISIONS", "Found", "OnnxFound", "Prediction", "as_rgb_array",
           "default_device", "load_onnx"]


@dataclass
class Prediction:
    """FOUND's output for one image (all arrays on CPU)."""

    soft: np.ndarray  # [H, W] float32 object probability
    mask: np.ndarray  # [H, W] bool: soft > 0.5 ('multi') or its main component ('single')
    patch_mask: np.ndarray  # [h, w] bool: patch-level binary prediction
    refined: bool = False  # True when bilateral refinement was applied and accepted
    patch_probs: np.ndarray | None = None  # [h, w] float32 patch-level object probability
    patch: int = 8  # pixels per patch cell
    mode: str = "multi"
    instance_filter: "InstanceFilter | None" = None

    @property
    def image_hw(self) -> tuple[int, int]:
        """(height, width) of the image, the size of ``mask`` and ``soft``."""
        return tuple(self.mask.shape)  # type: ignore[return-value]

    @cached_property
    def _main_component(self) -> np.ndarray | None:
        """The largest 4-connected component of ``patch_mask`` (None when it is empty); computed when first asked."""
        return largest_component(self.patch_mask) if self.patch_mask.any() else None

    @cached_property
    def box(self) -> np.ndarray | None:
        """(x1, y1, x2, y2), max exclusive: the largest component of ``patch_mask`` in pixels (None if empty)."""
        c = self._main_component
        return None if c is None else component_box(c, self.mask.shape, self.patch)

    @cached_property
    def score(self) -> float:
        """Mean object probability over the patches of that component (0 if none)."""
        c = self._main_component
        return 0.0 if c is None else float(self._probs()[c].mean())

    @cached_property
    def instances(self) -> list[Instance]:
        """The objects: one per 4-connected component of ``mask`` (largest first; 'single': the
        largest), each with box, area, pixels and score, filtered by ``instance_filter``."""
        return find_instances(self.mask, self._probs(), self.patch, mode=self.mode, flt=self.instance_filter)

    def cutout_mask(self, rgb: np.ndarray) -> np.ndarray:
        """The mask cut-outs use: the mask itself (a prediction at full size has no finer edges to follow)."""
        return self.mask

    def _probs(self) -> np.ndarray:
        return self.patch_probs if self.patch_probs is not None else self.patch_mask.astype(np.float32)


class Found:
    """FOUND on a frozen ViT: ``predict`` gives soft/binary masks and boxes for a list of images.

    The image front end over a :class:`~found.runtime.core.Core`, which it holds (``model.core``)
    as SAM's predictor holds its model: :class:`~found.runtime.torch_core.TorchCore` (the backbone,
    the head, precision and compilation), :class:`~found.runtime.onnx.OnnxCore` (an exported file,
    :func:`load_onnx`), :class:`~found.runtime.eager.EagerCore` (the benchmark baseline) or
    :class:`~found.runtime.smoothing.SmoothedCore` (logits averaged over video frames).

    ``Found(backbone, head, device=None, precision="auto", tau=0.3, compile=False)`` builds the
    torch core: ``Found(TorchCore(backbone, head, ...))``. ``head=None`` gives the training-free
    coarse masks of step 1 (background discovery, as :class:`found.model.head.CoarseHead`).
    """

    def __init__(
        self,
        core: Core | VisionTransformer,
        head: FoundHead | CoarseHead | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
        tau: float = DEFAULT_TAU,
        *,
        compile: bool | str = False,
    ) -> None:
        if isinstance(core, torch.nn.Module):
            core = TorchCore(core, head, device, precision, tau, compile=compile)
        elif (head, device, precision, tau, compile) != (None, None, "auto", DEFAULT_TAU, False):
            raise TypeError("Found(core) takes no backbone options: give them to the core (e.g. TorchCore(backbone, head, device))")
        elif not isinstance(core, Core):
            raise TypeError(f"Found needs a core (TorchCore, OnnxCore, EagerCore, SmoothedCore …) or a backbone, got {type(core).__name__}")
        self.core: Core = core

    def __repr__(self) -> str:
        return f"Found({self.core!r})"

    # ------------------------------------------------------------------ the core
    @property
    def patch_size(self) -> int:
        """Pixels per patch cell of the core."""
        return self.core.patch_size

    @property
    def device(self) -> torch.device:
        """Where the core's tensors (and ``masks``' outputs) live."""
        return self.core.device

    @property
    def coarse(self) -> bool:
        """Whether the core gives ±1 step-1 masks rather than a head's logits."""
        return self.core.coarse

    @property
    def precision(self) -> str:
        """The core's precision (``"auto"`` resolved when it was built)."""
        return self.core.precision

    @property
    def tau(self) -> float:
        """The background threshold τ of step 1."""
        return self.core.tau

    @property
    def backbone(self) -> VisionTransformer | None:
        """The core's torch backbone (None for an ONNX file, whose graph holds it)."""
        return self.core.backbone

    @property
    def head(self) -> torch.nn.Module | None:
        """The core's torch head (:class:`FoundHead`, :class:`CoarseHead`; None for an ONNX file)."""
        return self.core.head

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> FoundFeatures:
        """Last-block attention and keys (float32) for a normalised, padded batch [B, 3, H, W]."""
        return self.core.features(x)

    def logits_from_features(self, f: FoundFeatures) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] (±1 for coarse masks)."""
        return self.core.logits_from_features(f)

    @torch.inference_mode()
    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] for a normalised, padded batch."""
        return self.core.patch_logits(x)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Patch-level object probability (sigmoid, or the coarse binary mask)."""
        return probabilities(logits, self.coarse)

    def soft_from_logits(self, logits: torch.Tensor, image_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """Pixel-level object probability [B, H, W], cropped to ``image_hw`` (default: the padded size)."""
        p = self.patch_size
        hw = tuple(image_hw) if image_hw is not None else (logits.shape[-2] * p, logits.shape[-1] * p)
        return soft_masks(logits, p, hw, self.coarse)

    @torch.inference_mode()
    def masks(self, x: torch.Tensor, image_hw: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tensor in, masks out, all on the model's device: soft [B, H, W] float32 and binary
        (soft > 0.5) masks for a normalised, padded batch, cropped to ``image_hw``."""
        soft = self.soft_from_logits(self.patch_logits(x), image_hw)
        return soft, soft > 0.5

    # ------------------------------------------------------------------ images
    def _batches(self, arrays: Sequence[np.ndarray], batch_size: int) -> Iterable[list[int]]:
        """Indices grouped by padded size (so no extra padding changes a result), in chunks."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, a in enumerate(arrays):
            groups[padded_size(a.shape[0], a.shape[1], self.patch_size)].append(i)
        for idx in groups.values():
            for s in range(0, len(idx), batch_size):
                yield idx[s : s + batch_size]

    def input_batch(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 [H, W, 3] images of one padded size → normalised, zero-padded batch on the device.

        The uint8 pixels are sent (from pinned memory, asynchronously on CUDA) and normalised on
        the device; each image is padded on its own, so it gives the same result in any batch.
        """
        p = self.patch_size
        ph, pw = padded_size(arrays[0].shape[0], arrays[0].shape[1], p)
        sizes = [a.shape[:2] for a in arrays]
        if any(padded_size(h, w, p) != (ph, pw) for h, w in sizes):
            raise ValueError("input_batch needs images of one padded size")
        if all(hw == (ph, pw) for hw in sizes):
            host = np.stack(arrays)
        else:
            host = np.zeros((len(arrays), ph, pw, 3), np.uint8)
            for i, a in enumerate(arrays):
                host[i, : a.shape[0], : a.shape[1]] = a
        t = torch.from_numpy(host)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        x = normalize(to_chw_float(t))
        for i, (h, w) in enumerate(sizes):
            if (h, w) != (ph, pw):  # zeros in normalised space, as pad_to_multiple
                x[i, :, h:, :] = 0
                x[i, :, :, w:] = 0
        return x

    @torch.inference_mode()
    def predict(
        self,
        images: Sequence | np.ndarray | Image.Image | str | os.PathLike,
        mode: str = "multi",
        refine: bool = False,
        batch_size: int = 8,
        instance_filter: InstanceFilter | None = None,
    ) -> list[Prediction]:
        """Masks and boxes for images of any sizes (paths, bytes, PIL images or uint8 arrays: :func:`as_rgb_array`).

        ``mode='multi'`` keeps the whole mask, ``'single'`` its main component (the authors'
        evaluation rule). ``refine=True`` applies the bilateral solver, kept only if IoU > 0.5.
        ``instance_filter`` applies to each prediction's ``instances``.
        Images are batched by padded size. Batching changes float rounding only, on any CPU and in
        fp32 or int8: each soft mask is within 1e-5 of the image's own one-image result (≤ 4e-7
        measured on ViT-S/8), so binary masks can differ only where a probability is that close to 0.5.
        """
        check("mode", mode)  # the options' rules (an Engine's options were checked once, on creation)
        check("batch_size", batch_size)
        single_input = isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)) or (
            isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 3
        )
        arrays = [as_rgb_array(im) for im in ([images] if single_input else images)]
        out: list[Prediction | None] = [None] * len(arrays)
        for idx in self._batches(arrays, batch_size):
            logits = self.patch_logits(self.input_batch([arrays[i] for i in idx]))
            soft = self.soft_from_logits(logits)
            probs = self.probabilities(logits)
            soft_np = soft.cpu().numpy()
            patch_np = probs[:, 0].gt(0.5).cpu().numpy()  # sigmoid > 0.5, as the authors (not logit > 0)
            probs_np = probs[:, 0].cpu().numpy()
            softs = [soft_np[j, : arrays[i].shape[0], : arrays[i].shape[1]] for j, i in enumerate(idx)]
            refined = [None] * len(idx)
            if refine:  # one batched solve per group; as the authors, the full binary mask is refined
                from .refine import refine_masks

                keep = "single" if mode == "single" else "all"
                refined = refine_masks([arrays[i] for i in idx], [(s > 0.5).astype(np.float32) for s in softs], keep=keep)
            for j, i in enumerate(idx):
                out[i] = self._finish(softs[j], patch_np[j], probs_np[j], mode, refined[j], instance_filter)
        return out  # type: ignore[return-value]

    def _finish(self, soft, patch_mask, probs, mode, refine_result, instance_filter=None) -> Prediction:
        """Binary mask (mode, accepted refinement) of one image; its box and score are computed when asked."""
        refined = refine_result is not None and bool(refine_result.accepted)
        mask = np.asarray(refine_result.binary, dtype=bool) if refined else soft > 0.5
        if mode == "single" and not refined:
            mask = single_component(mask)
        return Prediction(soft=soft.astype(np.float32), mask=mask, patch_mask=patch_mask, refined=refined,
                          patch_probs=probs.astype(np.float32), patch=self.patch_size, mode=mode,
                          instance_filter=instance_filter)


def load_onnx(path: str | os.PathLike, device: str | torch.device | None = None, **kwargs) -> Found:
    """The FOUND predictor of an exported ONNX file (``found export onnx``): ``Found(OnnxCore(path, device, **kwargs))``."""
    return Found(OnnxCore(path, device, **kwargs))


def OnnxFound(path: str | os.PathLike, device: str | torch.device | None = None, **kwargs) -> Found:  # noqa: N802
    """The name before 0.2 of :func:`load_onnx` (it was a subclass; now ``Found(OnnxCore(...))``)."""
    return load_onnx(path, device, **kwargs)
