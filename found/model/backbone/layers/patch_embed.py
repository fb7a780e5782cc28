"""Image → patch tokens with a strided convolution (DINO's `patch_embed.proj`)."""
from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping ``patch_size`` patches and project each to ``embed_dim``."""

    def __init__(self, patch_size: int = 8, in_chans: int = 3, embed_dim: int = 384) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, N, D] of images [B, C, H, W] whose sides are multiples of the patch size."""
        # [B, C, H, W] -> [B, N, D], tokens in row-major order over the patch grid
        return self.proj(x).flatten(2).transpose(1, 2)
