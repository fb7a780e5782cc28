"""Opt-in int8 CPU backbone: dynamic quantisation of the ViT's linear layers.

Weights are stored as int8 (one scale per output channel), activations are quantised on the fly
(one scale per call) and the matrix products run in int8 with int32 accumulation (fbgemm / x86
engine). By default only the MLPs (``fc1``, ``fc2``: half of the FLOPs) are quantised; attention
(``qkv``, ``proj``, ``scaled_dot_product_attention``), LayerNorm, GELU and the patch embedding
stay in float32. Quantising every linear layer (``scope="all"``) is faster but, on the parity
tiny ViT, moved masks below IoU 0.99 against float32; the MLP-only scope stays above it (see
``tests/test_precision.py`` and ``docs/benchmarks.md``).

Because the activation scale is computed per call, :class:`found.Found` runs the int8 backbone one
image at a time, so that the rest of its batch cannot change its activation scales: batching then
changes float rounding only (see :meth:`found.Found.predict`).
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .vit import VisionTransformer


def int8_supported() -> bool:
    """True when this torch build can run dynamically quantised linear layers on this CPU."""
    try:
        engines = torch.backends.quantized.supported_engines
    except Exception:  # pragma: no cover - exotic builds
        return False
    return any(e in engines for e in ("x86", "fbgemm", "onednn", "qnnpack"))


def _dynamic_linear(layer: nn.Linear) -> nn.Module:
    """``layer`` as a dynamically quantised int8 linear layer (per-output-channel weight scales)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    layer.qconfig = per_channel_dynamic_qconfig
    return DynamicLinear.from_float(layer)


SCOPES = {"mlp": ("fc1", "fc2"), "all": None}


def quantize_int8(vit: VisionTransformer, scope: str = "mlp") -> VisionTransformer:
    """A CPU copy of ``vit`` whose linear layers in ``scope`` run in dynamic int8; ``vit`` is unchanged.

    ``scope="mlp"``: the MLPs' ``fc1``/``fc2``; ``"all"``: every ``nn.Linear``. With ``"all"``
    the last block's attention gets separate int8 ``q_proj``/``k_proj`` layers (rows of its
    ``qkv`` weight), so that :meth:`VisionTransformer.found_features` still forms only the CLS
    query and the keys there.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {sorted(SCOPES)}, got {scope!r}")
    if not int8_supported():
        raise RuntimeError("this torch build has no quantized CPU engine (fbgemm/x86/onednn/qnnpack): int8 is unavailable")
    q = copy.deepcopy(vit).cpu().eval().requires_grad_(False)
    names = SCOPES[scope]
    if names is None:
        attn = q.blocks[-1].attn
        d = q.embed_dim
        has_bias = attn.qkv.bias is not None
        q_proj, k_proj = nn.Linear(d, d, bias=has_bias), nn.Linear(d, d, bias=has_bias)
        with torch.no_grad():
            q_proj.weight.copy_(attn.qkv.weight[:d])
            k_proj.weight.copy_(attn.qkv.weight[d : 2 * d])
            if has_bias:
                q_proj.bias.copy_(attn.qkv.bias[:d])
                k_proj.bias.copy_(attn.qkv.bias[d : 2 * d])
        attn.q_proj, attn.k_proj = q_proj, k_proj
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the eager dynamic modules still work.
        warnings.simplefilter("ignore")
        for parent in list(q.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear and (names is None or name in names):
                    setattr(parent, name, _dynamic_linear(child))
    return q
