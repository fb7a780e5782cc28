"""What :class:`found.Found` holds: a core that turns a normalised, padded batch into patch logits.

A core is any object with the attributes and methods of :class:`Core`; the implementations are
:class:`~found.runtime.torch_core.TorchCore` (the PyTorch backbone and head),
:class:`~found.runtime.onnx.OnnxCore` (an exported file on ONNX Runtime),
:class:`~found.runtime.eager.EagerCore` (DINO's eager float32 code path: the benchmark baseline)
and :class:`~found.runtime.smoothing.SmoothedCore` (a wrapper averaging another core's logits over
consecutive video frames). None subclasses another: a variant is a new core or a wrapper.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..model.backbone import FoundFeatures, VisionTransformer
from ..model.head import CoarseHead, FoundHead

#: CPU batches are split into backbone calls of at most this many tokens (one 224² image: 785).
CPU_CHUNK_TOKENS = 1024


@runtime_checkable
class Core(Protocol):
    """The tensor side of FOUND: everything :class:`found.Found` needs to predict.

    ``coarse``: logits are ±1 step-1 masks (nearest upsampling) rather than a head's real-valued
    logits (bilinear). ``backbone`` and ``head`` are the torch modules where the core has them
    (None for an ONNX file, whose graph holds them). ``features`` may be unavailable in a core
    that only has logits; ``logits_from_features`` then raises :class:`NotImplementedError`.
    """

    patch_size: int
    device: torch.device
    coarse: bool
    precision: str
    tau: float
    backbone: VisionTransformer | None
    head: nn.Module | None

    def features(self, x: torch.Tensor) -> FoundFeatures:
        """Last-block CLS attention and keys (float32) for a normalised, padded batch [B, 3, H, W]."""
        ...

    def logits_from_features(self, f: FoundFeatures) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] from the features."""
        ...

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] for a normalised, padded batch."""
        ...


def images_per_call(x: torch.Tensor, device: torch.device, precision: str, patch: int, prefix_tokens: int = 1) -> int:
    """Images per backbone call. On CPU, batches run in chunks of about CPU_CHUNK_TOKENS tokens:
    the activations then stay in cache, which is faster than one large batch. int8 runs one
    image per call, since its activation scales are per call (batching would couple images)."""
    if device.type != "cpu":
        return x.shape[0]
    if precision == "int8":
        return 1
    tokens = (x.shape[-2] // patch) * (x.shape[-1] // patch) + prefix_tokens
    return max(1, CPU_CHUNK_TOKENS // tokens)


def in_chunks(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """The batch ``x`` cut into consecutive chunks of at most ``size`` images."""
    return [x[i : i + size] for i in range(0, x.shape[0], size)]


def cat_features(parts: list[FoundFeatures]) -> FoundFeatures:
    """The features of consecutive chunks of one batch, joined along the batch."""
    if len(parts) == 1:
        return parts[0]
    return FoundFeatures(torch.cat([f.cls_attention for f in parts]), torch.cat([f.keys for f in parts]), parts[0].grid_hw)


def frozen_nets(backbone: VisionTransformer, head: FoundHead | CoarseHead | None, device: torch.device,
                tau: float) -> tuple[VisionTransformer, FoundHead | CoarseHead]:
    """The backbone frozen in eval mode and the head (``None``: :class:`CoarseHead` with ``tau``) in
    eval mode, both on ``device``; the head is not frozen: a head being trained stays trainable."""
    head = CoarseHead(tau) if head is None else head
    return backbone.eval().requires_grad_(False).to(device), head.eval().to(device)
