"""Two-layer feed-forward block with exact (erf) GELU, as in DINO."""
from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """The feed-forward block of DINO's ViT: Linear → GELU → Linear (parameter names ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward output for tokens [.., D] (same shape)."""
        return self.fc2(self.act(self.fc1(x)))
