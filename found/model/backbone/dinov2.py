"""DINOv2 Vision Transformer (facebookresearch/dinov2 layout), with or without register tokens.

Parameter names match the official ``DinoVisionTransformer`` (``block_chunks=0``) so its torch.hub
checkpoints load with ``strict=True``. Differences from DINO that FOUND must reproduce:

* LayerScale on both residual branches (``ls1``/``ls2``), optionally a SwiGLU FFN (ViT-g/14);
* ``R`` register tokens inserted after the position embedding: tokens are [CLS, registers, patches];
  registers take part in every attention softmax but are never patches for FOUND;
* position-embedding interpolation as the official hub constructors set it: without registers bicubic
  with ``scale_factor=(g + 0.1) / M`` (DINO's); with registers antialiased bicubic to ``size=(g_h, g_w)``.
  Both keep the embedding unchanged on the native square grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vit import VisionTransformer


class DinoV2VisionTransformer(VisionTransformer):
    """A DINOv2 ViT; ``found_features``, ``forward_tokens`` and ``forward`` behave as in the base class."""

    def __init__(
        self,
        patch_size: int = 14,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        img_size: int = 518,
        in_chans: int = 3,
        num_register_tokens: int = 0,
        interpolate_antialias: bool | None = None,
        interpolate_offset: float | None = None,
        ffn: str = "mlp",
        layer_scale: bool = True,
    ) -> None:
        super().__init__(patch_size, embed_dim, depth, num_heads, mlp_ratio, qkv_bias, img_size, in_chans,
                         block_kwargs={"layer_scale": layer_scale, "ffn": ffn})
        # the official hub constructors: registers ⇒ antialias, no offset; no registers ⇒ offset 0.1
        reg = num_register_tokens > 0
        self.interpolate_antialias = reg if interpolate_antialias is None else bool(interpolate_antialias)
        self.interpolate_offset = (0.0 if reg else 0.1) if interpolate_offset is None else float(interpolate_offset)
        self.num_register_tokens = num_register_tokens
        self.num_prefix_tokens = 1 + num_register_tokens
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if reg else None
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # iBOT masking only: loaded, never used
        self.ffn = ffn

    def _resize_pos_grid(self, grid: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """[1, D, M, M] → [1, D, h, w] as the official ``interpolate_pos_encoding`` (offset or size)."""
        m = grid.shape[-1]
        if self.interpolate_offset:
            o = self.interpolate_offset
            size = {"scale_factor": ((h + o) / m, (w + o) / m)}
        else:
            size = {"size": (h, w)}
        return F.interpolate(grid, mode="bicubic", antialias=self.interpolate_antialias, **size)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[CLS + pos, registers, patches + pos]: [B, 1 + R + N, D]."""
        t = super().prepare_tokens(x)
        if self.register_tokens is None:
            return t
        reg = self.register_tokens.to(t.dtype).expand(t.shape[0], -1, -1)
        return torch.cat([t[:, :1], reg, t[:, 1:]], dim=1)
