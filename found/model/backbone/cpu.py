"""The ViT's FOUND features on the CPU through oneDNN GEMMs, in float32 or bfloat16.

Why: on the CPU this project is measured on (AMD EPYC, Zen 5), ``nn.Linear`` in float32 runs through
MKL's sgemm at about half of what oneDNN reaches for the same product, and the CPU kernel behind
``scaled_dot_product_attention`` neither uses bf16 dot-product units nor beats a plain
``softmax(q kᵀ) v`` done per head with oneDNN GEMMs (docs/benchmarks.md, *Where the time goes*).
:class:`CpuBackbone` runs the same ViT (the same parameters, read once) with:

* every linear layer through oneDNN (``torch.ops.mkldnn._linear_pointwise``), GELU fused into ``fc1``;
* attention per image and head, in blocks of :data:`ATTENTION_ROWS` query rows (scores stay in cache);
* DINOv2's LayerScale (``ls1``/``ls2``, float32 on the residual branch) and register tokens (from
  ``prepare_tokens``; sliced away after the last block's softmax, as in the eager model);
* in ``bf16``: the linear layers and attention in bfloat16 with float32 accumulation; the residual
  stream, LayerNorm and the whole last block (CLS attention and keys, what FOUND reads) in float32.

Float32 gives the eager model's numbers up to float rounding (summation order); bf16 moves masks
only where a probability is near 0.5 (``tests/test_cpu_backbone.py`` holds it to IoU ≥ 0.99 against
float32). Where oneDNN's linear op is missing (other builds), :func:`available` is False and
:class:`found.runtime.torch_core.TorchCore` keeps the eager path.
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch
from torch import nn

from .vit import FoundFeatures, VisionTransformer

CPUINFO = Path("/proc/cpuinfo")
#: Query rows per attention step: a [rows, N] score block of a few hundred kB stays in cache.
ATTENTION_ROWS = 512


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """True when this torch build has oneDNN and its linear op (x86 and Arm builds of torch ≥ 2.1)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x = torch.ones(2, 4)
        return bool(torch.allclose(op(x, torch.ones(3, 4), torch.zeros(3), "none", [], ""), torch.full((2, 3), 4.0)))
    except Exception:
        return False


@functools.lru_cache(maxsize=None)
def bf16_gemm() -> bool:
    """True when oneDNN runs bfloat16 GEMMs here (it refuses where its ISA is capped below the CPU's
    bf16 instructions, e.g. ``ONEDNN_MAX_CPU_ISA=AVX2``)."""
    if not available():
        return False
    try:
        x, w = torch.ones(2, 32, dtype=torch.bfloat16), torch.ones(16, 32, dtype=torch.bfloat16)
        return bool(torch.all(torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "") == 32))
    except Exception:
        return False


@functools.lru_cache(maxsize=None)
def native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX, read from /proc/cpuinfo)
    and oneDNN may use it (:func:`bf16_gemm`)."""
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and bf16_gemm()


def supports(vit: VisionTransformer) -> bool:
    """True for blocks this path runs: DINO's, and DINOv2's (LayerScale, registers) with a GELU MLP."""
    from .layers import Mlp

    return all(isinstance(b.mlp, Mlp) for b in vit.blocks)


class CpuBackbone(nn.Module):
    """``vit.found_features`` with oneDNN GEMMs in ``dtype`` (float32 or bfloat16); ``vit`` is shared, not copied."""

    def __init__(self, vit: VisionTransformer, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"CpuBackbone runs float32 or bfloat16, got {dtype}")
        if not available():
            raise RuntimeError("this torch build has no oneDNN linear op; use the eager backbone")
        if not supports(vit):
            raise ValueError("CpuBackbone runs GELU-MLP blocks only (not DINOv2 ViT-g/14's SwiGLU); use the eager backbone")
        self.vit, self.dtype, self.patch_size = vit, dtype, vit.patch_size
        self._op = torch.ops.mkldnn._linear_pointwise  # resolved once: each lookup costs microseconds
        self.num_heads = vit.num_heads
        # weights in the GEMM dtype, made once (biases too: oneDNN wants one dtype); the query rows of
        # qkv carry the attention scale d^-½ (exact for 64-d heads), so no per-head multiply is needed
        #: Per block but the last: name (qkv, proj, fc1, fc2) → (weight, bias) as the GEMMs take them.
        self.weights: list[dict[str, tuple[torch.Tensor, torch.Tensor | None]]] = []
        for b in vit.blocks[:-1]:
            w = {}
            for name, layer in (("qkv", b.attn.qkv), ("proj", b.attn.proj), ("fc1", b.mlp.fc1), ("fc2", b.mlp.fc2)):
                weight = layer.weight.detach().clone()
                bias = None if layer.bias is None else layer.bias.detach().clone()
                if name == "qkv":
                    d = weight.shape[1]
                    weight[:d] *= b.attn.scale
                    if bias is not None:
                        bias[:d] *= b.attn.scale
                w[name] = (weight.to(dtype).contiguous(), None if bias is None else bias.to(dtype).contiguous())
            self.weights.append(w)

    def linear(self, x: torch.Tensor, wb: tuple, post: str = "none") -> torch.Tensor:
        """``x @ wᵀ + b`` through oneDNN, with ``post="gelu"`` fused (exact erf GELU)."""
        w, b = wb
        return self._op(x, w, b, post, [], "none" if post == "gelu" else "")

    def attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """softmax(q kᵀ) v for [B, N, 3·D] projections (q already scaled by d^-½) → [B, N, D], per image and head."""
        b, n, _ = qkv.shape
        heads = self.num_heads
        d = qkv.shape[-1] // 3
        hd = d // heads
        qkv = qkv.reshape(b, n, 3, heads, hd)
        out = torch.empty(b, n, d, dtype=qkv.dtype)
        lin = self._op
        for i in range(b):
            for h in range(heads):
                q = qkv[i, :, 0, h].contiguous()  # [N, hd]
                k = qkv[i, :, 1, h].contiguous()
                vt = qkv[i, :, 2, h].t().contiguous()  # [hd, N]: the "weight" of attn @ v
                rows = ATTENTION_ROWS
                for s in range(0, n, rows):
                    att = lin(q[s : s + rows], k, None, "none", [], "").softmax(dim=-1)
                    out[i, s : s + rows, h * hd : (h + 1) * hd] = lin(att, vt, None, "none", [], "")
        return out

    def _block(self, t: torch.Tensor, blk: nn.Module, w: dict) -> torch.Tensor:
        """One pre-norm block; the residual stream ``t`` stays float32 and is updated in place."""
        x = blk.norm1(t).to(self.dtype)
        t += blk.ls1(self.linear(self.attention(self.linear(x, w["qkv"])), w["proj"]).float())
        x = blk.norm2(t).to(self.dtype)
        t += blk.ls2(self.linear(self.linear(x, w["fc1"], "gelu"), w["fc2"]).float())
        return t

    @torch.inference_mode()
    def found_features(self, x: torch.Tensor) -> FoundFeatures:
        """As :meth:`VisionTransformer.found_features`: CLS→patch attention and patch keys (float32)."""
        vit = self.vit
        grid = vit.grid_size(x)
        t = vit.prepare_tokens(x.float()).contiguous()
        for blk, w in zip(vit.blocks[:-1], self.weights):
            t = self._block(t, blk, w)
        last = vit.blocks[-1]
        attn, keys = last.attn.cls_attention_and_keys(last.norm1(t))
        r = vit.num_prefix_tokens  # CLS (and DINOv2's registers): in the softmax, not patches
        return FoundFeatures(cls_attention=attn[:, :, r:], keys=keys[:, r:], grid_hw=grid)

