"""Where the time goes: the backbone's FLOPs and achieved rate, this CPU's matmul rate, and the
split of one photo's walk through ``found segment`` (decode, resize, backbone, head and
upsampling, edge upsampling, encode and write). Used by ``found bench`` (section *profile*).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from PIL import Image

from ..model.backbone import VisionTransformer

if TYPE_CHECKING:
    from ..predictor import Found


def backbone_flops(vit: VisionTransformer, height: int, width: int) -> float:
    """Multiply-adds × 2 of ``found_features`` on one padded ``height`` × ``width`` image.

    Patch embedding; every block but the last: qkv, attention (q kᵀ and a·v), proj, MLP; the last
    block: the keys and the CLS query only (what FOUND reads). LayerNorm, GELU and softmax are not counted.
    """
    p, d = vit.patch_size, vit.embed_dim
    n = (height // p) * (width // p)
    t = n + getattr(vit, "num_prefix_tokens", 1)  # CLS (+ DINOv2 registers)
    mlp = vit.blocks[0].mlp
    ffn = 2 * 2 * t * d * mlp.fc1.out_features if hasattr(mlp, "fc1") else 2 * t * d * (mlp.w12.out_features + mlp.w3.in_features)
    embed = 2 * n * 3 * p * p * d
    block = 2 * t * d * 3 * d + 4 * t * t * d + 2 * t * d * d + ffn
    last = 2 * t * d * d + 2 * d * d + 2 * t * d
    return float(embed + (len(vit.blocks) - 1) * block + last)


def best_time(fn: Callable[[], object], reps: int = 5, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def matmul_rates(m: int, k: int = 384, n: int = 1536, reps: int = 10) -> dict[str, float]:
    """GFLOP/s of one [m, k] × [k, n] product (a ViT-S MLP layer at m tokens): torch's default
    ``F.linear`` in fp32, and oneDNN's linear (the CPU backbone's kernel) in fp32 and bf16."""
    from ..model.backbone import cpu

    x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
    flop = 2.0 * m * k * n
    out = {"torch-fp32": flop / best_time(lambda: torch.nn.functional.linear(x, w, b), reps) / 1e9}
    if cpu.available():
        op = torch.ops.mkldnn._linear_pointwise
        for name, dt in (("onednn-fp32", torch.float32), ("onednn-bf16", torch.bfloat16)):
            xd, wd, bd = x.to(dt), w.to(dt), b.to(dt)
            out[name] = flop / best_time(lambda: op(xd, wd, bd, "none", [], ""), reps) / 1e9
    return out


def backbone_rate(model: Found, height: int, width: int, reps: int = 3) -> dict[str, float]:
    """Seconds and GFLOP/s of ``model``'s backbone (its precision and kernels) on one image."""
    x = torch.randn(1, 3, height, width)
    with torch.inference_mode():
        s = best_time(lambda: model.features(x), reps)
    flop = backbone_flops(model.backbone, height, width)
    return {"seconds": s, "gflop": flop / 1e9, "gflops": flop / s / 1e9}


def working_scale(vit: VisionTransformer, size: tuple[int, int], max_side: int | None) -> tuple[int, int, int]:
    """(padded height, padded width, tokens) at which ``found segment`` runs a photo of ``size`` = (W, H):
    reduced to ``max_side``, padded to the patch; tokens count CLS and any registers."""
    from ..io.images import capped_size
    from ..model.preprocess import padded_size

    w, h = capped_size(size, max_side, vit.patch_size)
    ph, pw = padded_size(h, w, vit.patch_size)
    return ph, pw, (ph // vit.patch_size) * (pw // vit.patch_size) + getattr(vit, "num_prefix_tokens", 1)


#: The stages of :func:`photo_split` that ``found segment``'s default output (the mask) goes through.
MASK_STAGES = ("decode", "resize", "backbone", "head+upsampling", "mask upsampling", "encode+write")


def photo_split(model: Found, path: str | Path, max_side: int | None, reps: int = 3) -> dict[str, float]:
    """Seconds per stage of one photo through ``found segment``, each stage timed alone, median over
    ``reps``: decode (JPEG at a reduced DCT scale where the working scale allows), resize to the
    working scale, backbone, head and upsampling at the working scale, the mask's bilinear
    upsampling to full size, PNG encode and write (:data:`MASK_STAGES`, summed in ``total``), and,
    apart, the edge-aware (guided) upsampling that cut-outs add (``edge upsampling``)."""
    from ..engine import to_full_resolution
    from ..io.images import capped_size
    from ..predictor import Prediction

    path = Path(path)
    with Image.open(path) as im:
        full = im.size
    target = capped_size(full, max_side, model.patch_size)

    def decode() -> Image.Image:
        """Decode the photo as ``found segment`` does: JPEG drafted towards the working scale, then RGB."""
        with Image.open(path) as im:
            if target != full:
                im.draft("RGB", target)
            im.load()
            return im.convert("RGB") if im.mode != "RGB" else im.copy()

    out: dict[str, float] = {"decode": best_time(decode, reps)}
    drafted = decode()
    out["resize"] = best_time(lambda: drafted.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0), reps) \
        if drafted.size != target else 0.0
    rgb = np.asarray(drafted.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0) if drafted.size != target else drafted)
    x = model.input_batch([rgb])
    with torch.inference_mode():
        feats = model.features(x)
        out["backbone"] = best_time(lambda: model.features(x), reps)

        def head() -> object:
            """Head, sigmoid and upsampling at the working scale on the timed backbone features: one Prediction."""
            logits = model.logits_from_features(feats)
            soft = model.soft_from_logits(logits, rgb.shape[:2])[0].cpu().numpy()
            probs = model.probabilities(logits)[0, 0].cpu().numpy()
            return Prediction(soft=soft, mask=soft > 0.5, patch_mask=probs > 0.5, patch_probs=probs, patch=model.patch_size)

        out["head+upsampling"] = best_time(head, reps)
        pred = head()
    scaled = lambda: to_full_resolution(pred, full)  # noqa: E731
    out["mask upsampling"] = best_time(lambda: scaled().mask, reps) if target != full else 0.0
    mask = scaled().mask
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "mask.png"
        out["encode+write"] = best_time(lambda: Image.fromarray(mask.astype(np.uint8) * 255).save(dst, format="PNG"), reps)
    out["total"] = sum(out[k] for k in MASK_STAGES)
    if target != full:
        with Image.open(path) as im:
            rgb_full = np.asarray(im.convert("RGB"))
        out["edge upsampling"] = best_time(lambda: scaled().cutout_mask(rgb_full), reps)
    else:
        out["edge upsampling"] = 0.0
    return out


def _repeat(fn: Callable[[], object], n: int) -> None:
    """``fn()`` ``n`` times, each result dropped before the next (memory reused, as in the backbone)."""
    for _ in range(n):
        fn()


def block_ops(vit: VisionTransformer, precision: str, tokens: int, reps: int = 5) -> dict[str, dict[str, float]]:
    """One transformer block at ``tokens`` tokens, op by op, in ``precision`` as the backbone runs it:
    ms and GFLOP/s of LayerNorm (×2), qkv, attention (its two GEMMs and its softmax, timed apart),
    proj, fc1 (+GELU) and fc2. fp32/bf16: the oneDNN kernels of :class:`~found.model.backbone.cpu.CpuBackbone`;
    int8: the quantised MLP of :mod:`found.model.backbone.quantize` with float32 attention (SDPA)."""
    from ..model.backbone import cpu
    from ..model.backbone.quantize import quantize_int8

    blk = vit.blocks[0]
    d, heads = vit.embed_dim, vit.num_heads
    hidden = blk.mlp.fc1.out_features
    x = torch.randn(1, tokens, d)
    flops = {"layernorm ×2": 0.0, "qkv": 2.0 * tokens * d * 3 * d, "attention GEMMs": 4.0 * tokens * tokens * d,
             "softmax": 0.0, "proj": 2.0 * tokens * d * d, "fc1+gelu": 2.0 * tokens * d * hidden, "fc2": 2.0 * tokens * hidden * d}
    fns: dict[str, Callable[[], object]] = {"layernorm ×2": lambda: (blk.norm1(x), blk.norm2(x))}
    if precision in ("fp32", "bf16") and cpu.available():
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        cb = cpu.CpuBackbone(vit, dtype)
        w = cb.weights[0]
        xd = x.to(dtype)
        qkv = cb.linear(xd, w["qkv"])
        h1 = torch.randn(1, tokens, hidden).to(dtype)
        rows = min(cpu.ATTENTION_ROWS, tokens)
        scores = torch.randn(rows, tokens).to(dtype)
        blocks = -(-tokens // rows) * heads
        fns.update({
            "qkv": lambda: cb.linear(xd, w["qkv"]),
            "attention": lambda: cb.attention(qkv),
            "softmax": lambda: _repeat(lambda: scores.softmax(-1), blocks),
            "proj": lambda: cb.linear(xd, w["proj"]),
            "fc1+gelu": lambda: cb.linear(xd, w["fc1"], "gelu"),
            "fc2": lambda: cb.linear(h1, w["fc2"]),
        })
    elif precision == "int8":
        q = quantize_int8(vit).blocks[0]
        h1 = torch.randn(1, tokens, hidden)
        fns.update({
            "qkv": lambda: q.attn.qkv(x),
            "attention": lambda: q.attn(x),  # qkv + SDPA + proj, fp32
            "fc1+gelu": lambda: q.mlp.act(q.mlp.fc1(x)),
            "fc2": lambda: q.mlp.fc2(h1),
            "proj": lambda: q.attn.proj(x),
        })
    else:
        raise ValueError(f"block_ops measures fp32, bf16 (oneDNN) or int8, got {precision!r}")
    out: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for name, fn in fns.items():
            s = best_time(fn, reps)
            out[name] = {"ms": 1000 * s, "gflops": flops.get(name, 0.0) / s / 1e9}
        if "softmax" in out:  # the attention's GEMMs: the attention minus its softmax
            gemm = max(out["attention"]["ms"] - out["softmax"]["ms"], 1e-6) / 1000
            out["attention GEMMs"] = {"ms": 1000 * gemm, "gflops": flops["attention GEMMs"] / gemm / 1e9}
    return out
