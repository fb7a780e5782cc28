"""Multi-head self-attention with DINO's parameter layout (`qkv`, `proj`).

Two paths: a fused one (``scaled_dot_product_attention``) for the ordinary blocks, and
``cls_attention_and_keys`` for the last block, which gives FOUND exactly what it needs — the
CLS→patch attention and the patch keys — without building the N×N attention matrix. DINO's eager
path (the benchmark baseline) lives in :mod:`found.runtime.eager`, outside the model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with DINO's parameter names (``qkv``, ``proj``), plus FOUND's CLS-query path."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def split_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values [B, heads, N, head_dim] of the tokens ``x`` [B, N, D]."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # each [B, heads, N, head_dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused attention; numerically DINO's softmax(q kᵀ · d^-½) v."""
        b, n, d = x.shape
        q, k, v = self.split_qkv(x)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    def _query_and_keys(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLS query [B, 1, D] and all keys [B, N, D]; only the q and k rows of ``qkv`` are applied.

        A quantised copy (see :mod:`found.model.backbone.quantize`) carries separate ``q_proj``/``k_proj``
        layers, since its ``qkv`` weight cannot be sliced.
        """
        d = x.shape[-1]
        q_proj = getattr(self, "q_proj", None)
        if q_proj is not None:
            return q_proj(x[:, :1]), self.k_proj(x)
        w_q, w_k = self.qkv.weight[:d], self.qkv.weight[d : 2 * d]
        bias = self.qkv.bias
        q_cls = F.linear(x[:, :1], w_q, None if bias is None else bias[:d])
        keys = F.linear(x, w_k, None if bias is None else bias[d : 2 * d])
        return q_cls, keys

    def cls_attention_and_keys(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLS→token attention [B, heads, N] (softmax over all N tokens, CLS included) and the
        keys of all tokens [B, N, D] (heads concatenated), from the block's normalised input.

        Only the CLS query is formed, so the cost is O(N·D) instead of O(N²·D).
        """
        b, n, d = x.shape
        q_cls, keys = self._query_and_keys(x)  # [B, 1, D], [B, N, D]
        qh = q_cls.reshape(b, self.num_heads, 1, self.head_dim)
        kh = keys.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        logits = (qh * self.scale) @ kh.transpose(-2, -1)  # [B, heads, 1, N]
        return logits.softmax(dim=-1)[:, :, 0], keys
