"""Pre-norm transformer block: DINO's layout (norm1 → attn, norm2 → mlp, residuals), and DINOv2's
with LayerScale (``ls1``/``ls2``) and optionally a SwiGLU feed-forward (ViT-g/14)."""
from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from .layer_scale import LayerScale
from .mlp import Mlp
from .swiglu import SwiGLU, swiglu_hidden

FFN_LAYERS = ("mlp", "swiglu")


class Block(nn.Module):
    """One pre-norm transformer block: attention, then an MLP or SwiGLU feed-forward (layer scales optional)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        eps: float = 1e-6,
        layer_scale: bool = False,
        ffn: str = "mlp",
    ) -> None:
        super().__init__()
        if ffn not in FFN_LAYERS:
            raise ValueError(f"ffn must be one of {FFN_LAYERS}, got {ffn!r}")
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio)) if ffn == "mlp" else SwiGLU(dim, swiglu_hidden(dim, mlp_ratio))
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens [B, N, D] through the residual attention branch, then the residual feed-forward branch."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))
