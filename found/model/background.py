"""Step 1 of FOUND: discover the background from one seed patch, without training.

Pure batched tensor functions. Shapes: ``cls_attention`` [B, heads, N] (CLS→patch attention),
``keys`` [B, N, D] (patch keys, heads concatenated), ``grid_hw`` = (h, w) with N = h·w.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Cosine-similarity threshold τ above which a patch is background (paper: 0.3).
DEFAULT_TAU = 0.3
_EPS = 1e-10


@dataclass
class Background:
    """Result of background discovery for a batch."""

    background: torch.Tensor  # [B, h, w] bool: coarse background mask
    seed_index: torch.Tensor  # [B] int64: patch index of the background seed
    cos_to_seed: torch.Tensor  # [B, N] cosine similarity of every patch key to the seed key
    beta: torch.Tensor  # [B, heads] head weights (computed even when not applied)
    q_fraction: torch.Tensor  # [B, heads] share of patches above the mean attention
    mean_attention: torch.Tensor  # [B] per-image mean of all heads' attention

    @property
    def objects(self) -> torch.Tensor:
        """Coarse object mask [B, h, w] bool: the complement of the background."""
        return ~self.background


def head_sparsity(cls_attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean attention per image [B] and, per head, the share of patches above it [B, heads]."""
    mean = cls_attention.mean(dim=(1, 2))
    q = (cls_attention > mean[:, None, None]).sum(-1).to(cls_attention.dtype) / cls_attention.shape[-1]
    return mean, q


def head_weights(cls_attention: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """CroW-style head weights β_h = log(Σ_h'(Q_h'+ε) / (Q_h+ε)) [B, heads]: sparse heads weigh more."""
    _, q = head_sparsity(cls_attention)
    q = q + eps
    return torch.log(q.sum(-1, keepdim=True) / q)


def weight_keys(keys: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Scale each head's slice of the keys by β_h: [B, N, D] → [B, N, D]."""
    b, n, d = keys.shape
    heads = beta.shape[-1]
    return (keys.reshape(b, n, heads, d // heads) * beta[:, None, :, None]).reshape(b, n, d)


def background_seed(cls_attention: torch.Tensor, beta: torch.Tensor | None = None) -> torch.Tensor:
    """Index [B] of the patch that receives the least (β-weighted) summed attention."""
    att = cls_attention if beta is None else cls_attention * beta[:, :, None]
    return att.sum(1).argmin(-1)


def similarity_to_seed(keys: torch.Tensor, seed_index: torch.Tensor) -> torch.Tensor:
    """Cosine similarity [B, N] of every patch key to the seed patch's key."""
    k = F.normalize(keys, dim=-1)
    seed = k[torch.arange(k.shape[0], device=k.device), seed_index]
    return torch.einsum("bnd,bd->bn", k, seed)


def discover_background(
    cls_attention: torch.Tensor,
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    tau: float = DEFAULT_TAU,
    reweight: bool = True,
) -> Background:
    """FOUND's coarse background: patches whose (β-reweighted) key is similar (> τ) to the seed's."""
    if cls_attention.dim() != 3 or keys.dim() != 3:
        raise ValueError("cls_attention must be [B, heads, N] and keys [B, N, D]")
    b, heads, n = cls_attention.shape
    if keys.shape[:2] != (b, n) or keys.shape[-1] % heads:
        raise ValueError(f"keys {tuple(keys.shape)} do not match attention {tuple(cls_attention.shape)}")
    h, w = grid_hw
    if h * w != n:
        raise ValueError(f"grid {h}x{w} does not hold {n} patches")
    cls_attention = cls_attention.float()
    keys = keys.float()
    mean, q = head_sparsity(cls_attention)
    qe = q + _EPS
    beta = torch.log(qe.sum(-1, keepdim=True) / qe)
    if reweight:
        seed = background_seed(cls_attention, beta)
        keys = weight_keys(keys, beta)
    else:
        seed = background_seed(cls_attention)
    cos = similarity_to_seed(keys, seed)
    return Background(
        background=(cos > tau).reshape(b, h, w),
        seed_index=seed,
        cos_to_seed=cos,
        beta=beta,
        q_fraction=q,
        mean_attention=mean,
    )
