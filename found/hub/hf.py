"""Hugging Face ``transformers`` DINOv2 checkpoints (``Dinov2Model``, ``Dinov2WithRegistersModel``):
keys converted once, at load, to the official DINOv2 layout that :mod:`found.model.backbone.dinov2` uses.

A checkpoint is a ``model.safetensors`` / ``pytorch_model.bin`` file or a directory holding one and
its ``config.json``. Without registers the model gets the official DINOv2 interpolation (offset 0.1),
not ``transformers``' ``Dinov2Model`` one (``size=``, no offset): see docs/dinov2.md.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..errors import WeightsError
from ..extras import require

#: Weight files of a ``save_pretrained`` directory, in the order they are looked for.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_PREFIXES = ("dinov2.", "model.", "backbone.")
_EMBED = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
# per-layer names: legacy hub names (attention.attention.query, attention.output.dense) and the
# transformers ≥ 5 ones (attention.q_proj … o_proj); SwiGLU's weights_in/weights_out → w12/w3
_LAYER = [
    (r"norm1\.", "norm1."), (r"norm2\.", "norm2."),
    (r"mlp\.fc1\.", "mlp.fc1."), (r"mlp\.fc2\.", "mlp.fc2."),
    (r"mlp\.weights_in\.", "mlp.w12."), (r"mlp\.weights_out\.", "mlp.w3."),
    (r"layer_scale1\.lambda1", "ls1.gamma"), (r"layer_scale2\.lambda1", "ls2.gamma"),
    (r"attention\.output\.dense\.", "attn.proj."), (r"attention\.o_proj\.", "attn.proj."),
]
_QKV = {"query": 0, "key": 1, "value": 2, "q_proj": 0, "k_proj": 1, "v_proj": 2}
_QKV_RE = re.compile(r"attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$")


def is_hf_state(state: dict[str, torch.Tensor]) -> bool:
    """True for a ``transformers`` DINOv2 state dict (``embeddings.*`` / ``encoder.layer.*`` keys)."""
    return any(_strip(k).startswith("embeddings.patch_embeddings.") for k in state)


def _strip(k: str) -> str:
    for p in _PREFIXES:
        if k.startswith(p) and ("embeddings." in k or "encoder." in k or "layernorm" in k):
            return k[len(p):]
    return k


def convert_hf_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``transformers`` DINOv2 keys → official ones; query/key/value rows are stacked into ``qkv``."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], list] = {}
    for key, v in state.items():
        k = _strip(key)
        if k in _EMBED:
            out[_EMBED[k]] = v
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.(.*)$", k)
        if m is None:
            if k.startswith(("pooler.", "classifier.")):
                continue  # heads on top of the backbone
            raise WeightsError(f"unrecognised key {key!r} in a transformers DINOv2 checkpoint")
        i, rest = int(m.group(1)), m.group(2)
        q = _QKV_RE.match(rest)
        if q:
            qkv.setdefault((i, q.group(2)), [None, None, None])[_QKV[q.group(1)]] = v
            continue
        for pattern, repl in _LAYER:
            if re.match(pattern, rest):
                out[f"blocks.{i}." + re.sub("^" + pattern, repl, rest)] = v
                break
        else:
            raise WeightsError(f"unrecognised key {key!r} in a transformers DINOv2 checkpoint")
    for (i, kind), parts in qkv.items():
        if any(p is None for p in parts):
            raise WeightsError(f"layer {i}: query, key and value {kind} are not all in the checkpoint")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
    if "pos_embed" in out and out["pos_embed"].dim() == 2:
        out["pos_embed"] = out["pos_embed"][None]
    return out


def weight_file(directory: Path) -> Path:
    """The weight file of a ``save_pretrained`` directory."""
    for name in HF_WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    shards = sorted(directory.glob("model-*.safetensors"))
    if shards:
        raise WeightsError(f"{directory}: sharded checkpoints are not supported; merge them into model.safetensors")
    raise WeightsError(f"{directory}: no {' or '.join(HF_WEIGHT_FILES)} in this folder")


def read_config(directory: Path) -> dict:
    """``config.json`` of a ``save_pretrained`` directory ({} when absent)."""
    path = directory / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: unreadable config ({e})") from None


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file (needs the ``safetensors`` extra)."""
    load_file = require("safetensors.torch", "hf", f"{path}: reading .safetensors", WeightsError).load_file
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 (safetensors raises its own error types)
        raise WeightsError(f"{path}: not a readable safetensors file: {str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__}") from None
