"""The user-facing FOUND model: images in, object masks and boxes out."""
from __future__ import annotations

import contextlib
import os
import warnings
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
from .masks import component_box, largest_component, single_component, upsample_logits
from .preprocess import normalize, padded_size, to_chw_float

ImageLike = "np.ndarray | Image.Image | str | os.PathLike | torch.Tensor"
MODES = ("multi", "single")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
#: CPU batches are split into backbone calls of at most this many tokens (one 224² image: 785).
CPU_CHUNK_TOKENS = 1024


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

    ``precision``: ``"fp32"`` (exact), ``"bf16"``/``"fp16"`` (autocast; for CUDA, also valid on
    CPU where it is usually slower), or ``"int8"`` (CPU only: dynamically quantised linear layers,
    see :mod:`found.backbone.quantize`). ``compile=True`` (or a ``torch.compile`` mode such as
    ``"reduce-overhead"``, which adds CUDA graphs) compiles the backbone on CUDA; it is ignored,
    with a warning, on other devices.
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        head: FoundHead | None = None,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        tau: float = 0.3,
        *,
        compile: bool | str = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device) if device is not None else default_device()
        if precision == "int8" and self.device.type != "cpu":
            raise ValueError(f"precision 'int8' runs on the CPU only (got device {self.device}); use 'bf16' or 'fp16' on GPUs")
        self.backbone = backbone.eval().requires_grad_(False).to(self.device)
        self.head = None if head is None else head.eval().to(self.device)  # not frozen: a head being trained stays trainable
        self.coarse = head is None  # step-1 coarse masks: ±1 logits, no trained head
        self.precision = precision
        self.tau = tau
        self._net = self.backbone
        if precision == "int8":
            from .backbone.quantize import quantize_int8

            self._net = quantize_int8(self.backbone)
        self._features_fn = self._net.found_features
        self._cudagraphs = False
        self.compile_mode: str | None = None
        if compile:
            mode = "default" if compile is True else str(compile)
            if self.device.type != "cuda":
                warnings.warn(f"compile={compile!r} is only used on CUDA; running eagerly on {self.device}", stacklevel=2)
            else:
                self._features_fn = torch.compile(self._net.found_features, mode=None if mode == "default" else mode, dynamic=False)
                self._cudagraphs = "reduce-overhead" in mode or mode == "max-autotune"
                self.compile_mode = mode

    @property
    def patch_size(self) -> int:
        return self.backbone.patch_size

    # ------------------------------------------------------------------ tensors
    def _autocast(self):
        if self.precision in ("fp32", "int8"):
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _no_tf32(self):
        """fp32 on CUDA stays fp32: cuDNN would otherwise run the patch embedding in TF32."""
        if self.precision != "fp32" or self.device.type != "cuda":
            return contextlib.nullcontext()
        c = torch.backends.cudnn
        return c.flags(enabled=c.enabled, benchmark=c.benchmark, deterministic=c.deterministic, allow_tf32=False)

    def _backbone_features(self, x: torch.Tensor) -> FoundFeatures:
        if self._cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with self._autocast(), self._no_tf32():
            f = self._features_fn(x)
        att, keys = f.cls_attention.float(), f.keys.float()
        if self._cudagraphs:  # CUDA-graph outputs are overwritten by the next replay
            att, keys = att.clone(), keys.clone()
        return FoundFeatures(att, keys, f.grid_hw)

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> FoundFeatures:
        """Last-block attention and keys (float32) for a normalised, padded batch [B, 3, H, W]."""
        x = x.to(self.device, non_blocking=True)
        chunk = self._cpu_chunk(x)
        if chunk < x.shape[0]:
            parts = [self._backbone_features(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)]
            return FoundFeatures(
                torch.cat([f.cls_attention for f in parts]), torch.cat([f.keys for f in parts]), parts[0].grid_hw
            )
        return self._backbone_features(x)

    def _cpu_chunk(self, x: torch.Tensor) -> int:
        """Images per backbone call. On CPU, batches run in chunks of about CPU_CHUNK_TOKENS tokens:
        the activations then stay in cache, which is faster than one large batch. int8 runs one
        image per call, since its activation scales are per call (batching would couple images)."""
        if self.device.type != "cpu":
            return x.shape[0]
        if self.precision == "int8":
            return 1
        tokens = (x.shape[-2] // self.patch_size) * (x.shape[-1] // self.patch_size) + 1
        return max(1, CPU_CHUNK_TOKENS // tokens)

    def logits_from_features(self, f: FoundFeatures) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] (coarse masks give ±1 when there is no head)."""
        if self.head is None:
            bkg = discover_background(f.cls_attention, f.keys, f.grid_hw, tau=self.tau)
            return (bkg.objects.float() * 2 - 1)[:, None]
        return self.head(f.key_map()).float()

    @torch.inference_mode()
    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] (coarse masks give ±1 when there is no head)."""
        return self.logits_from_features(self.features(x))

    def soft_from_logits(self, logits: torch.Tensor, image_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """Pixel-level object probability [B, H, W]: bilinear ×patch of the logits (nearest ×patch of
        the coarse mask without a head), cropped to ``image_hw`` (default: the padded size)."""
        p = self.patch_size
        hw = tuple(image_hw) if image_hw is not None else (logits.shape[-2] * p, logits.shape[-1] * p)
        if self.coarse:
            return F.interpolate(logits.gt(0).float(), scale_factor=p, mode="nearest")[:, 0, : hw[0], : hw[1]]
        return torch.sigmoid(upsample_logits(logits, p, hw))[:, 0]

    @torch.inference_mode()
    def masks(self, x: torch.Tensor, image_hw: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tensor in, masks out, all on the model's device: soft [B, H, W] float32 and binary
        (soft > 0.5) masks for a normalised, padded batch, cropped to ``image_hw``."""
        soft = self.soft_from_logits(self.patch_logits(x), image_hw)
        return soft, soft > 0.5

    # ------------------------------------------------------------------ images
    def _batches(self, arrays: Sequence[np.ndarray], batch_size: int) -> Iterable[list[int]]:
        """Indices grouped by padded size (so no extra padding changes a result), in chunks."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
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
    ) -> list[Prediction]:
        """Masks and boxes for images of any sizes (paths, PIL images or uint8 [H, W, 3] arrays).

        ``mode='multi'`` keeps the whole mask, ``'single'`` its main component (the authors'
        evaluation rule). ``refine=True`` applies the bilateral solver, kept only if IoU > 0.5.
        Images are batched by padded size; results do not depend on the batching.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        single_input = isinstance(images, (str, os.PathLike, Image.Image)) or (
            isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 3
        )
        arrays = [as_rgb_array(im) for im in ([images] if single_input else images)]
        out: list[Prediction | None] = [None] * len(arrays)
        for idx in self._batches(arrays, batch_size):
            logits = self.patch_logits(self.input_batch([arrays[i] for i in idx]))
            soft = self.soft_from_logits(logits)
            probs = logits.gt(0).float() if self.coarse else torch.sigmoid(logits)
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
                out[i] = self._finish(softs[j], patch_np[j], probs_np[j], mode, refined[j])
        return out  # type: ignore[return-value]

    def _finish(self, soft, patch_mask, probs, mode, refine_result) -> Prediction:
        """Binary mask (mode, accepted refinement), box and score of one image."""
        refined = refine_result is not None and bool(refine_result.accepted)
        mask = np.asarray(refine_result.binary, dtype=bool) if refined else soft > 0.5
        if mode == "single" and not refined:
            mask = single_component(mask)
        box, score = None, 0.0
        if patch_mask.any():
            component = largest_component(patch_mask)
            box = component_box(component, mask.shape, self.patch_size)
            score = float(probs[component].mean())
        return Prediction(soft=soft.astype(np.float32), mask=mask, patch_mask=patch_mask, box=box, score=score, refined=refined)
