"""SwiGLU feed-forward block of DINOv2 ViT-g/14 (parameter names ``w12``, ``w3``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden(dim: int, mlp_ratio: float) -> int:
    """DINOv2's hidden width: two thirds of ``dim * mlp_ratio``, rounded up to a multiple of 8."""
    return (int(int(dim * mlp_ratio) * 2 / 3) + 7) // 8 * 8


class SwiGLU(nn.Module):
    """``w3(silu(a) * b)`` with ``a, b`` the two halves of ``w12(x)``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim)
        self.w3 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward output for tokens [.., D] (same shape)."""
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)
