"""Export FOUND's tensor core to ONNX: normalised, padded images [B, 3, H, W] → patch logits,
CLS→patch attention and patch keys, with dynamic batch, height and width.

The backbone's position-embedding interpolation is rewritten here as two weight matrices built from
the input size inside the graph, so one file serves every size: DINO's and DINOv2's without
registers (bicubic, ``scale_factor=(g+0.1)/g0``) and DINOv2's with registers (PyTorch's antialiased
bicubic to ``size=g``, the same kernel ONNX ``Resize(antialias=1)`` does not reproduce at opset 17).
The native square grid keeps the embedding unchanged, as in PyTorch.
The file carries its own description (:data:`METADATA_KEYS`) so the runtime needs nothing else.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from ..extras import require
from ..model.backbone import VisionTransformer
from ..model.background import DEFAULT_TAU
from ..model.head import FoundHead
from ..model.preprocess import IMAGENET_MEAN, IMAGENET_STD
from ..runtime.onnx_file import (  # noqa: F401  (the file format, re-exported for the exporter's callers)
    FORMAT, INPUT, METADATA_KEYS, OUTPUTS, OnnxFileError, OnnxInfo, check_file, info_from_metadata, read_info,
)
from ..version import __version__

OPSET = 17
_CUBIC_A = -0.75  # PyTorch's (and ONNX Resize's default) bicubic coefficient
#: Query slices of the exported attention (see ``FoundOnnxGraph._attention``).
ATTENTION_CHUNKS = 8


# ---------------------------------------------------------------------- graph
def _cubic_near(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution weight for a tap at distance t ∈ [0, 1]."""
    return ((_CUBIC_A + 2) * t - (_CUBIC_A + 3)) * t * t + 1


def _cubic_far(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution weight for a tap at distance t ∈ [1, 2]."""
    a = _CUBIC_A
    return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a


def bicubic_matrix(n_out: torch.Tensor, n_in: int, offset: float = 0.1) -> torch.Tensor:
    """[n_out, n_in] weights of PyTorch's bicubic resize (align_corners=False, border taps
    clamped) with DINO's ``scale_factor = (n_out + offset) / n_in``; ``n_out`` may be a traced size."""
    n_out = torch.as_tensor(n_out)
    # PyTorch forms 1/scale_factor in float64 and rounds it to float32; float32 here (TensorRT and
    # WebGPU have no float64) may differ in the last bit: ~1e-7 on the embedding.
    size = n_out.float()
    scale = torch.full_like(size, float(n_in)) / (size + offset)  # one Div (n_in / x would be Reciprocal · Mul)
    i = torch.arange(n_out, dtype=torch.int64).float()
    real = scale * (i + 0.5) - 0.5
    idx = torch.floor(real)
    t = real - idx
    cols = torch.arange(n_in, dtype=torch.int64)
    weights = (_cubic_far(t + 1), _cubic_near(t), _cubic_near(1 - t), _cubic_far(2 - t))
    m = torch.zeros_like(real)[:, None] * cols[None].float()
    for k, wk in enumerate(weights):
        tap = torch.clamp(idx.long() + (k - 1), 0, n_in - 1)
        m = m + (tap[:, None] == cols[None]).float() * wk[:, None]
    return m


_AA_CUBIC_A = -0.5  # PyTorch's antialiased bicubic uses Keys' a = -0.5 (PIL's), not -0.75


def _aa_cubic(x: torch.Tensor) -> torch.Tensor:
    """PyTorch's antialias bicubic filter (a = −0.5) at distance ``x``; 0 beyond 2."""
    a = _AA_CUBIC_A
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((x - 5) * x + 8) * x * a - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def antialias_bicubic_matrix(n_out: torch.Tensor, n_in: int) -> torch.Tensor:
    """[n_out, n_in] weights of ``F.interpolate(size=n_out, mode="bicubic", antialias=True)``
    (align_corners=False): support widened by the scale when down-sampling, taps outside the input
    dropped and each row renormalised; ``n_out`` may be a traced size."""
    n_out = torch.as_tensor(n_out)
    size = n_out.float()
    scale = torch.full_like(size, float(n_in)) / size
    wide = scale >= 1
    support = torch.where(wide, 2.0 * scale, torch.full_like(scale, 2.0))
    invscale = torch.where(wide, 1.0 / scale, torch.ones_like(scale))
    center = scale * (torch.arange(n_out, dtype=torch.int64).float() + 0.5)  # [n_out]
    lo = torch.clamp(torch.floor(center - support + 0.5), min=0.0)  # PyTorch truncates; equal after the clamp
    hi = torch.clamp(torch.floor(center + support + 0.5), max=float(n_in))
    cols = torch.arange(n_in, dtype=torch.int64).float()[None]  # [1, n_in]
    inside = (cols >= lo[:, None]) & (cols < hi[:, None])
    w = _aa_cubic((cols - center[:, None] + 0.5) * invscale) * inside.float()
    total = w.sum(dim=1, keepdim=True)
    return w / torch.where(total == 0, torch.ones_like(total), total)


def _identity_rows(n_out: torch.Tensor, n_in: int) -> torch.Tensor:
    """[n_out, n_in] 0/1 matrix with ones on the diagonal (the identity when n_out == n_in)."""
    rows = torch.arange(torch.as_tensor(n_out), dtype=torch.int64)
    return (rows[:, None] == torch.arange(n_in, dtype=torch.int64)[None]).float()


class FoundOnnxGraph(nn.Module):
    """What the ONNX file computes: ``found_features`` of the backbone (+ the head's logits)."""

    def __init__(self, backbone: VisionTransformer, head: FoundHead | None = None, attention_chunks: int = ATTENTION_CHUNKS) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        if attention_chunks < 1:
            raise ValueError(f"attention_chunks must be at least 1, got {attention_chunks}")
        self.attention_chunks = attention_chunks
        n0 = backbone.pos_embed.shape[1] - 1
        self.g0 = int(round(n0**0.5))
        if self.g0 * self.g0 != n0:
            raise ValueError(f"position embedding of {n0} patches is not a square grid")

    def _resize_matrix(self, n: torch.Tensor) -> torch.Tensor:
        """The backbone family's 1-D interpolation matrix [n, g0] (see ``_resize_pos_grid``)."""
        vit = self.backbone
        antialias = bool(getattr(vit, "interpolate_antialias", False))
        offset = float(getattr(vit, "interpolate_offset", 0.1))
        if antialias and offset == 0:
            return antialias_bicubic_matrix(n, self.g0)
        if not antialias and offset:
            return bicubic_matrix(n, self.g0, offset)
        raise ValueError(f"no ONNX form for bicubic interpolation with antialias={antialias}, offset={offset}")

    def pos_encoding(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """[1, h*w + 1, D] as ``VisionTransformer.interpolate_pos_encoding``, with traceable sizes."""
        pos = self.backbone.pos_embed
        g0, d = self.g0, pos.shape[-1]
        h, w = torch.as_tensor(h), torch.as_tensor(w)
        native = (h == g0) & (w == g0)
        mh = torch.where(native, _identity_rows(h, g0), self._resize_matrix(h))
        mw = torch.where(native, _identity_rows(w, g0), self._resize_matrix(w))
        grid = pos[0, 1:].float().reshape(g0, g0 * d)
        rows = (mh @ grid).reshape(-1, g0, d)  # [h, g0, D]
        patch = (mw[None] @ rows).reshape(1, -1, d)  # [1, h*w, D]
        return torch.cat([pos[:, :1].float(), patch], dim=1).to(pos.dtype)

    def _attention(self, attn, x: torch.Tensor) -> torch.Tensor:
        """``Attention.forward`` with the queries in ``attention_chunks`` slices: ONNX writes
        attention as MatMul → Softmax → MatMul, so each slice holds only its rows of the N×N
        matrix (peak memory / chunks; every row's softmax is unchanged)."""
        b, n, d = x.shape
        q, k, v = attn.split_qkv(x)
        if self.attention_chunks == 1:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            step = (n + self.attention_chunks - 1) // self.attention_chunks
            out = torch.cat([F.scaled_dot_product_attention(q[:, :, i * step : (i + 1) * step], k, v)
                             for i in range(self.attention_chunks)], dim=2)
        return attn.proj(out.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The exported graph: padded images [B, 3, H, W] → (head logits,) CLS→patch attention and patch keys."""
        vit = self.backbone
        fmap = vit.patch_embed.proj(x)  # [B, D, h, w]
        h, w = fmap.shape[2], fmap.shape[3]
        t = fmap.flatten(2).transpose(1, 2)
        t = torch.cat([vit.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        t = t + self.pos_encoding(h, w).to(t.dtype)
        registers = getattr(vit, "register_tokens", None)
        if registers is not None:  # DINOv2: [CLS, registers, patches], registers get no position
            t = torch.cat([t[:, :1], registers.expand(t.shape[0], -1, -1), t[:, 1:]], dim=1)
        for blk in vit.blocks[:-1]:
            t = t + blk.ls1(self._attention(blk.attn, blk.norm1(t)))
            t = t + blk.ls2(blk.mlp(blk.norm2(t)))
        last = vit.blocks[-1]
        attn, keys = last.attn.cls_attention_and_keys(last.norm1(t))
        r = vit.num_prefix_tokens  # the softmax covered every token; CLS and registers are sliced away
        attn, keys = attn[:, :, r:], keys[:, r:]
        if self.head is None:
            return attn, keys
        key_map = keys.transpose(1, 2).reshape(keys.shape[0], keys.shape[2], h, w)
        return self.head(key_map), attn, keys


# ---------------------------------------------------------------------- export
def head_sha256(head: FoundHead | None) -> str:
    """SHA-256 of the head's float32 weight and bias bytes ('' for no head): ties a file to a head."""
    if head is None:
        return ""
    sha = hashlib.sha256()
    for name in ("weight", "bias"):
        sha.update(getattr(head.decoder, name).detach().float().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def _metadata(backbone: VisionTransformer, head: FoundHead | None, model: str, tau: float) -> dict[str, str]:
    """The file's description (:data:`METADATA_KEYS`), all strings."""
    return {
        "format": FORMAT, "found_version": __version__, "model": model,
        "patch_size": str(backbone.patch_size), "embed_dim": str(backbone.embed_dim), "num_heads": str(backbone.num_heads),
        "mean": json.dumps(list(IMAGENET_MEAN)), "std": json.dumps(list(IMAGENET_STD)), "tau": repr(float(tau)),
        "coarse": "1" if head is None else "0", "head_sha256": head_sha256(head), "quantization": "none",
    }


def _require_onnx() -> ModuleType:
    """The ``onnx`` module, or a one-line error naming the ``onnx`` extra."""
    return require("onnx", "onnx", "ONNX export")


def export_onnx(
    backbone: VisionTransformer,
    head: FoundHead | None,
    path: str | os.PathLike,
    *,
    model: str = "custom",
    tau: float = DEFAULT_TAU,
    opset: int = OPSET,
    sample_hw: tuple[int, int] | None = None,
    attention_chunks: int = ATTENTION_CHUNKS,
) -> Path:
    """Write the ONNX file for ``backbone`` (+ ``head``; ``None``: attention and keys only, for
    coarse masks) atomically; dynamic batch, height and width. Returns the path."""
    onnx = _require_onnx()
    from ..io.files import atomic_path

    path = Path(path)
    p = backbone.patch_size
    graph = FoundOnnxGraph(backbone.eval().cpu(), None if head is None else head.eval().cpu(), attention_chunks).eval()
    sample_hw = sample_hw or (30 * p, 40 * p)  # not the native grid, not square: nothing is specialised
    x = torch.zeros(1, 3, *sample_hw)
    outputs = list(OUTPUTS if head is not None else OUTPUTS[1:])
    axes = {INPUT: {0: "batch", 2: "height", 3: "width"}, "cls_attention": {0: "batch", 2: "patches"},
            "keys": {0: "batch", 1: "patches"}}
    if head is not None:
        axes["logits"] = {0: "batch", 2: "grid_height", 3: "grid_width"}
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about sizes: the sizes are traced on purpose
        torch.onnx.export(graph, (x,), str(tmp), dynamo=False, opset_version=opset, input_names=[INPUT],
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
        proto = onnx.load(str(tmp))
        set_metadata(proto, {**_metadata(backbone, head, model, tau), "attention_chunks": str(attention_chunks)})
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return path


def set_metadata(proto, entries: dict[str, str]) -> None:
    """Replace the model's ``metadata_props`` entries named in ``entries``."""
    keep = [(m.key, m.value) for m in proto.metadata_props if m.key not in entries]
    del proto.metadata_props[:]
    for k, v in [*keep, *entries.items()]:
        proto.metadata_props.add(key=k, value=str(v))


#: ``quantize_onnx_int8`` scopes: the MLPs only, or every linear layer of the backbone.
INT8_SCOPES = ("mlp", "all")


def _linear_nodes(proto, embed_dim: int, scope: str) -> list[str]:
    """Names of the MatMul/Gemm nodes of the backbone's linear layers in ``scope``, found by the
    shape of their constant weight ([D, hidden] / [hidden, D] for the MLP; also [D, 3D] and
    [D, D] for attention): node names are not stable enough to select by."""
    shapes = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    d = embed_dim
    names = []
    for n in proto.graph.node:
        w = shapes.get(n.input[1]) if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 else None
        if w is None or len(w) != 2 or d not in w:
            continue
        other = w[1] if w[0] == d else w[0]
        mlp = other not in (d, 3 * d)
        if mlp or (scope == "all" and (w == (d, d) or w == (d, 3 * d))):
            names.append(n.name)
    return names


def quantize_onnx_int8(src: str | os.PathLike, dst: str | os.PathLike, scope: str = "mlp") -> Path:
    """onnxruntime's dynamic int8 quantisation of ``src``'s linear layers into ``dst`` (atomic).

    ``scope="mlp"`` quantises the MLPs only (as the torch int8 path, :mod:`found.model.backbone.quantize`),
    ``"all"`` also the attention projections; per-channel int8 weights, activations quantised per
    call. Metadata is kept, with ``quantization=int8-dynamic-<scope>``.
    """
    onnx = _require_onnx()
    quantization = require("onnxruntime.quantization", "onnx", "int8 quantisation")
    QuantType, quantize_dynamic = quantization.QuantType, quantization.quantize_dynamic
    from ..io.files import atomic_path

    if scope not in INT8_SCOPES:
        raise ValueError(f"scope must be one of {INT8_SCOPES}, got {scope!r}")
    src, dst = Path(src), Path(dst)
    info = read_info(src)
    if info.quantization != "none":
        raise OnnxFileError(f"{src}: already quantised ({info.quantization}); quantise the fp32 export")
    proto = onnx.load(str(src))
    nodes = _linear_nodes(proto, info.embed_dim, scope)
    if not nodes:
        raise OnnxFileError(f"{src}: no linear layers of a {info.embed_dim}-d backbone found; re-export it with `found export onnx`")
    with atomic_path(dst) as tmp, warnings.catch_warnings(), _quiet_root_logger():
        warnings.simplefilter("ignore")  # onnxruntime suggests pre-processing; the graph is already optimised
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=nodes,
                         op_types_to_quantize=["MatMul", "Gemm"])
        out = onnx.load(str(tmp))
        set_metadata(out, {**info.metadata, "quantization": f"int8-dynamic-{scope}"})
        onnx.save(out, str(tmp))
    return dst


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantiser logs advice on the root logger; keep it off the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
