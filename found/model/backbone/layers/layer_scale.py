"""Per-channel residual scaling (DINOv2's ``ls1``/``ls2``: ``x + gamma * branch(x)``)."""
from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """Multiply the last dimension by a learned vector ``gamma``."""

    def __init__(self, dim: int, init_value: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` scaled channel by channel by ``gamma``."""
        return x * self.gamma
