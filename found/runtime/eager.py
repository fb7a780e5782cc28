"""DINO's eager code path as FOUND's reference code runs it: the benchmark baseline.

:class:`EagerCore` runs it as a core: ``found bench`` times the model against ``Found(EagerCore(...))``
(it is not used for inference otherwise), and the parity tests check
that the fast path (:meth:`found.model.backbone.VisionTransformer.found_features`) computes the same
numbers. Every block materialises its N×N attention map (``softmax(q kᵀ · scale) @ v``), the last
block runs its whole attention and stops before its MLP (DINO's ``get_last_selfattention``), and
the keys come from the ``qkv`` output (FOUND's forward hook).
"""
from __future__ import annotations

import torch

from ..model.backbone import FoundFeatures, VisionTransformer
from ..model.backbone.layers.attention import Attention
from ..model.backbone.layers.block import Block
from ..model.background import DEFAULT_TAU
from ..model.head import CoarseHead, FoundHead
from .core import frozen_nets
from .device import as_device


def eager_attention(attn: Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DINO's ``Attention.forward`` line by line: (output, attention [B, heads, N, N], qkv [B, N, 3D])."""
    b, n, d = x.shape
    qkv_out = attn.qkv(x)
    qkv = qkv_out.reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    a = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
    out = (a @ v).transpose(1, 2).reshape(b, n, d)
    return attn.proj(out), a, qkv_out


def eager_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """A pre-norm block with eager attention, as DINO (and DINOv2, with LayerScale) computes it."""
    x = x + block.ls1(eager_attention(block.attn, block.norm1(x))[0])
    return x + block.ls2(block.mlp(block.norm2(x)))


def last_block_input(vit: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """The normalised input of the last block: tokens through every earlier block, eagerly."""
    t = vit.prepare_tokens(x)
    for blk in vit.blocks[:-1]:
        t = eager_block(blk, t)
    return vit.blocks[-1].norm1(t)


def last_selfattention(vit: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """The full last-block attention [B, heads, N+1, N+1] (DINO's ``get_last_selfattention``)."""
    return eager_attention(vit.blocks[-1].attn, last_block_input(vit, x))[1]


def eager_found_features(vit: VisionTransformer, x: torch.Tensor) -> FoundFeatures:
    """FOUND's features computed the way DINO + FOUND's hook compute them."""
    grid = vit.grid_size(x)
    _, attn, qkv = eager_attention(vit.blocks[-1].attn, last_block_input(vit, x))
    d, r = vit.embed_dim, vit.num_prefix_tokens
    return FoundFeatures(cls_attention=attn[:, :, 0, r:], keys=qkv[:, r:, d : 2 * d], grid_hw=grid)


class EagerCore:
    """The benchmark baseline as a core: the backbone runs DINO's eager float32 path
    (:func:`eager_found_features`) on the whole batch in one call, as plain eager code does; the head
    (``None``: :class:`CoarseHead` with ``tau``) is the same as the fast path's."""

    precision = "fp32"

    def __init__(self, backbone: VisionTransformer, head: FoundHead | CoarseHead | None = None,
                 device: str | torch.device | None = None, tau: float = DEFAULT_TAU) -> None:
        self.device = as_device(device)
        self.backbone, self.head = frozen_nets(backbone, head, self.device, tau)
        self.coarse = bool(self.head.coarse)
        self.patch_size = int(backbone.patch_size)
        self.tau = tau

    def __repr__(self) -> str:
        return f"EagerCore({type(self.backbone).__name__}, coarse={self.coarse}, device={self.device})"

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> FoundFeatures:
        """Last-block CLS attention and keys for a normalised, padded batch [B, 3, H, W], computed eagerly."""
        return eager_found_features(self.backbone, x.to(self.device, non_blocking=True))

    def logits_from_features(self, f: FoundFeatures) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] (±1 for the coarse head)."""
        return self.head.from_features(f)

    @torch.inference_mode()
    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Object logits on the patch grid [B, 1, h, w] for a normalised, padded batch."""
        return self.logits_from_features(self.features(x))
