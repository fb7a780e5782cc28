"""FOUND's PyTorch core: a frozen ViT and a head turn a normalised, padded batch into patch logits.

Everything here is tensors on the core's device; images, files and threads live above it
(:mod:`found.predictor`, :mod:`found.engine`). Precision, ``torch.compile`` and int8 are decided
once, when the core is built.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from ..model.backbone import FoundFeatures, VisionTransformer
from ..model.background import DEFAULT_TAU
from ..model.head import CoarseHead, FoundHead
from .core import CPU_CHUNK_TOKENS, cat_features, frozen_nets, images_per_call, in_chunks
from .device import PRECISIONS, as_device, autocast, check_precision, default_device, no_tf32, resolve_precision

__all__ = ["CPU_CHUNK_TOKENS", "CPU_DTYPES", "PRECISIONS", "TorchCore", "default_device", "resolve_precision"]

#: Precisions the CPU backbone (:mod:`found.model.backbone.cpu`) runs, and their GEMM dtypes.
CPU_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FeaturesFn = Callable[[torch.Tensor], FoundFeatures]


class TorchCore:
    """Frozen ViT + head (a trained :class:`FoundHead`, or :class:`CoarseHead` for step 1 alone).

    ``precision``: ``"auto"`` (default: ``"bf16"`` on a CPU with bfloat16 units, else ``"fp32"``;
    see :func:`found.runtime.device.resolve_precision`), ``"fp32"`` (the paper's numbers), ``"bf16"``
    (on the CPU the oneDNN backbone of :mod:`found.model.backbone.cpu`; elsewhere autocast), ``"fp16"``
    (autocast, for GPUs), or ``"int8"`` (CPU only: dynamically quantised linear layers, see
    :mod:`found.model.backbone.quantize`). On the CPU, fp32 and bf16 run
    :class:`~found.model.backbone.cpu.CpuBackbone`, which reads the backbone's weights once, here.
    ``compile=True`` (or a ``torch.compile`` mode such as ``"reduce-overhead"``, which adds CUDA
    graphs) compiles the backbone on CUDA; it is ignored, with a warning, on other devices.
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        head: FoundHead | CoarseHead | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
        tau: float = DEFAULT_TAU,
        *,
        compile: bool | str = False,
    ) -> None:
        check_precision(precision, "cpu")
        self.device = as_device(device)
        self.precision = check_precision(resolve_precision(precision, self.device, coarse=head is None or bool(head.coarse)), self.device)
        self.backbone, self.head = frozen_nets(backbone, head, self.device, tau)
        self.coarse = bool(self.head.coarse)
        self.patch_size = int(backbone.patch_size)
        self.tau = tau
        self.native_cpu = False  # True when the oneDNN CPU backbone runs (no autocast then)
        self.cudagraphs = False  # True when compiled with CUDA graphs (outputs copied out of the graph)
        self.compile_mode: str | None = None
        self.features_fn = self._build_features_fn(compile)

    def __repr__(self) -> str:
        return f"TorchCore({type(self.backbone).__name__}, coarse={self.coarse}, device={self.device}, precision={self.precision!r})"

    def _build_features_fn(self, compile: bool | str) -> FeaturesFn:
        """The backbone call this core runs: oneDNN (CPU fp32/bf16), int8-quantised, compiled or eager (decided once)."""
        net = self.backbone
        if compile and self.device.type != "cuda":
            warnings.warn(f"compile={compile!r} is only used on CUDA; running eagerly on {self.device}", stacklevel=4)
            compile = False
        if self.precision == "int8":
            from ..model.backbone.quantize import quantize_int8

            net = quantize_int8(self.backbone)
        elif self.device.type == "cpu" and self.precision in CPU_DTYPES:
            from ..model.backbone import cpu

            # else the eager path: ViT-g/14's SwiGLU, or bf16 where oneDNN has no bf16 GEMM
            if cpu.available() and cpu.supports(self.backbone) and (self.precision == "fp32" or cpu.bf16_gemm()):
                self.native_cpu = True
                return cpu.CpuBackbone(self.backbone, CPU_DTYPES[self.precision]).found_features
        if not compile:
            return net.found_features
        mode = "default" if compile is True else str(compile)
        self.compile_mode = mode
        self.cudagraphs = "reduce-overhead" in mode or mode == "max-autotune"
        return torch.compile(net.found_features, mode=None if mode == "default" else mode, dynamic=False)

    def backbone_features(self, x: torch.Tensor) -> FoundFeatures:
        """One backbone call (no chunking) under this core's precision; attention and keys in float32."""
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(self.device, "fp32" if self.native_cpu else self.precision), no_tf32(self.device, self.precision):
            f = self.features_fn(x)
        att, keys = f.cls_attention.float(), f.keys.float()
        if self.cudagraphs:  # CUDA-graph outputs are overwritten by the next replay
            att, keys = att.clone(), keys.clone()
        return FoundFeatures(att, keys, f.grid_hw)

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> FoundFeatures:
        """Last-block attention and keys (float32) for a normalised, padded batch [B, 3, H, W]."""
        x = x.to(self.device, non_blocking=True)
        chunk = images_per_call(x, self.device, self.precision, self.patch_size, getattr(self.backbone, "num_prefix_tokens", 1))
        return cat_features([self.backbone_features(c) for c in in_chunks(x, chunk)])

    def logits_from_features(self, f: FoundFeatures) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] (±1 for the coarse head)."""
        return self.head.from_features(f)

    @torch.inference_mode()
    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] for a normalised, padded batch."""
        return self.logits_from_features(self.features(x))


def __getattr__(name: str) -> type:
    """``FoundCore``, the name before 0.2, is :class:`TorchCore` (held by :class:`found.Found`)."""
    if name == "FoundCore":
        warnings.warn("found.runtime.torch_core.FoundCore is now TorchCore (found.Found holds one: Found(core))",
                      DeprecationWarning, stacklevel=2)
        return TorchCore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
