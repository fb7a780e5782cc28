"""DINO-compatible Vision Transformer with a FOUND-specific last-block path.

Parameter names match facebookresearch/dino's ``VisionTransformer`` so that its checkpoints load
with ``strict=True``. Inputs must already be padded to a multiple of the patch size
(see :func:`found.model.preprocess.pad_to_multiple`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Block, PatchEmbed


def _compiling() -> bool:
    """True while torch.compile (Dynamo) traces this code."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


@dataclass
class FoundFeatures:
    """What FOUND reads from the last block of the backbone."""

    cls_attention: torch.Tensor  # [B, heads, N] CLS→patch attention (softmax over all tokens: CLS, registers, patches)
    keys: torch.Tensor  # [B, N, D] patch keys, heads concatenated
    grid_hw: tuple[int, int]  # (h, w) patch grid, N = h * w

    @property
    def num_heads(self) -> int:
        """Attention heads of the last block."""
        return self.cls_attention.shape[1]

    def key_map(self) -> torch.Tensor:
        """Keys as a feature map [B, D, h, w] (the input of FOUND's 1×1 conv head)."""
        b, _, d = self.keys.shape
        return self.keys.transpose(1, 2).reshape(b, d, *self.grid_hw)


class VisionTransformer(nn.Module):
    """DINO's ViT (its checkpoints load strictly), with the last-block path FOUND reads: CLS attention and keys."""

    def __init__(
        self,
        patch_size: int = 8,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        img_size: int = 224,
        in_chans: int = 3,
        block_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, **(block_kwargs or {})) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        #: Tokens before the patches ([CLS] here; [CLS, registers] in DINOv2 with registers).
        self.num_prefix_tokens = 1
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    # ------------------------------------------------------------------ tokens
    def interpolate_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        """Positional encoding [1, h*w + 1, D] for an h×w patch grid, exactly as DINO computes it
        (bicubic with ``scale_factor=(g+0.1)/g0``; unchanged only for the native square grid)."""
        pos = self.pos_embed
        n0 = pos.shape[1] - 1
        g0 = int(math.sqrt(n0))
        if h * w == n0 and h == w:
            return pos
        # cached for inference; not while torch.compile traces (the graph holds the result anyway)
        use_cache = not torch.is_grad_enabled() and not _compiling()
        key = None
        if use_cache:
            # inference tensors (a model copied inside inference_mode) have no version counter
            key = (h, w, pos.device, pos.dtype, pos.data_ptr(), None if pos.is_inference() else pos._version)
            if key in self._pos_cache:
                return self._pos_cache[key]
        patch_pos = pos[:, 1:].reshape(1, g0, g0, -1).permute(0, 3, 1, 2).float()
        patch_pos = self._resize_pos_grid(patch_pos, h, w)
        if patch_pos.shape[-2:] != (h, w):
            raise RuntimeError(f"position embedding interpolated to {tuple(patch_pos.shape[-2:])}, expected {(h, w)}")
        patch_pos = patch_pos.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, h * w, -1)
        out = torch.cat([pos[:, :1], patch_pos], dim=1)
        if use_cache:
            if len(self._pos_cache) > 32:
                self._pos_cache.clear()
            self._pos_cache[key] = out
        return out

    def _resize_pos_grid(self, grid: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """[1, D, g0, g0] → [1, D, h, w]: DINO's bicubic with ``scale_factor=(g+0.1)/g0``."""
        g0 = grid.shape[-1]
        return F.interpolate(grid, scale_factor=((h + 0.1) / g0, (w + 0.1) / g0), mode="bicubic")

    def grid_size(self, x: torch.Tensor) -> tuple[int, int]:
        """(h, w) patch grid of images ``x`` [.., H, W] (an error unless both sides are multiples of the patch)."""
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"input {h}x{w} is not a multiple of the patch size {p}; pad it first")
        return h // p, w // p

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch-embed, prepend CLS, add (interpolated) positional encoding: [B, N+1, D]."""
        h, w = self.grid_size(x)
        tokens = self.patch_embed(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        return tokens + self.interpolate_pos_encoding(h, w).to(tokens.dtype)

    # ------------------------------------------------------------------ forwards
    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the final LayerNorm [B, N+1, D] (DINO's ``get_intermediate_layers(x, 1)[0]``)."""
        t = self.prepare_tokens(x)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """CLS embedding [B, D], as DINO's ``VisionTransformer.forward`` (head = identity)."""
        return self.forward_tokens(x)[:, 0]

    def found_features(self, x: torch.Tensor) -> FoundFeatures:
        """FOUND's inputs from the last block: CLS→patch attention and patch keys.

        The last block's N×N attention, its value/projection and its MLP are never computed.
        """
        grid = self.grid_size(x)
        t = self.prepare_tokens(x)
        for blk in self.blocks[:-1]:
            t = blk(t)
        last = self.blocks[-1]
        attn, keys = last.attn.cls_attention_and_keys(last.norm1(t))
        r = self.num_prefix_tokens  # softmax over every token; CLS (and registers) are sliced away after
        return FoundFeatures(cls_attention=attn[:, :, r:], keys=keys[:, r:], grid_hw=grid)
