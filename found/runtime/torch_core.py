"""FOUND's tensor core: a normalised, padded batch in, patch logits and pixel masks out.

Everything here is tensors on the model's device; images, files and threads live above it
(:mod:`found.predictor`, :mod:`found.engine`). Precision, ``torch.compile`` and int8 are decided
once, when the core is built.
"""
from __future__ import annotations

import contextlib
import warnings

import torch

from ..model.backbone import FoundFeatures, VisionTransformer
from ..model.head import CoarseHead, FoundHead, probabilities, soft_masks

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
#: CPU batches are split into backbone calls of at most this many tokens (one 224² image: 785).
CPU_CHUNK_TOKENS = 1024
#: Precisions the CPU backbone (:mod:`found.model.backbone.cpu`) runs, and their GEMM dtypes.
CPU_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def resolve_precision(precision: str, device: torch.device, coarse: bool = False) -> str:
    """``"auto"`` → the fastest precision that keeps the float32 masks: ``"bf16"`` for a trained
    head on a CPU that multiplies bfloat16 in hardware (oneDNN present), else ``"fp32"``. Step-1
    (``coarse``) masks stay fp32: their seed is an argmin and their threshold hard, so bf16 rounding
    can move a whole mask (IoU 0.95 against fp32 measured on a bundled photo). Others are kept."""
    if precision != "auto":
        return precision
    from ..model.backbone import cpu

    native = device.type == "cpu" and cpu.available() and cpu.native_bf16()
    return "bf16" if native and not coarse else "fp32"


def default_device() -> torch.device:
    """CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class FoundCore:
    """Frozen ViT + head (a trained :class:`FoundHead`, or :class:`CoarseHead` for step 1 alone).

    ``precision``: ``"auto"`` (default: ``"bf16"`` on a CPU with bfloat16 units, else ``"fp32"``;
    see :func:`resolve_precision`), ``"fp32"`` (the paper's numbers), ``"bf16"`` (on the CPU the
    oneDNN backbone of :mod:`found.model.backbone.cpu`; elsewhere autocast), ``"fp16"`` (autocast, for
    GPUs), or ``"int8"`` (CPU only: dynamically quantised linear layers, see
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
        tau: float = 0.3,
        *,
        compile: bool | str = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device) if device is not None else default_device()
        precision = resolve_precision(precision, self.device, coarse=head is None or bool(head.coarse))
        if precision == "int8" and self.device.type != "cpu":
            raise ValueError(f"precision 'int8' runs on the CPU only (got device {self.device}); use 'bf16' or 'fp16' on GPUs")
        self.backbone = backbone.eval().requires_grad_(False).to(self.device)
        head = CoarseHead(tau) if head is None else head
        self.head = head.eval().to(self.device)  # not frozen: a head being trained stays trainable
        self.coarse = bool(head.coarse)
        self.patch_size = int(backbone.patch_size)
        self.precision = precision
        self.tau = tau
        self._features_fn, self._cudagraphs, self.compile_mode = self._build_features_fn(compile)

    def _build_features_fn(self, compile: bool | str):
        """The backbone call this core runs: oneDNN (CPU fp32/bf16), int8-quantised, compiled or eager (decided once)."""
        net = self.backbone
        self._native_cpu = False
        if compile and self.device.type != "cuda":
            warnings.warn(f"compile={compile!r} is only used on CUDA; running eagerly on {self.device}", stacklevel=3)
            compile = False
        if self.precision == "int8":
            from ..model.backbone.quantize import quantize_int8

            net = quantize_int8(self.backbone)
        elif self.device.type == "cpu" and self.precision in CPU_DTYPES:
            from ..model.backbone import cpu

            # else the eager path: ViT-g/14's SwiGLU, or bf16 where oneDNN has no bf16 GEMM
            if cpu.available() and cpu.supports(self.backbone) and (self.precision == "fp32" or cpu.bf16_gemm()):
                self._native_cpu = True
                return cpu.CpuBackbone(self.backbone, CPU_DTYPES[self.precision]).found_features, False, None
        if not compile:
            return net.found_features, False, None
        mode = "default" if compile is True else str(compile)
        fn = torch.compile(net.found_features, mode=None if mode == "default" else mode, dynamic=False)
        return fn, "reduce-overhead" in mode or mode == "max-autotune", mode

    def _autocast(self):
        if self.precision in ("fp32", "int8") or self._native_cpu:
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
        tokens = (x.shape[-2] // self.patch_size) * (x.shape[-1] // self.patch_size) + getattr(self.backbone, "num_prefix_tokens", 1)
        return max(1, CPU_CHUNK_TOKENS // tokens)

    def logits_from_features(self, f: FoundFeatures) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] (±1 for the coarse head)."""
        return self.head.from_features(f)

    @torch.inference_mode()
    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] for a normalised, padded batch."""
        return self.logits_from_features(self.features(x))

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
