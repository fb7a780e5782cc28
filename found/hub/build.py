"""Construct backbones, heads and the `Found` predictor from registry names or local files."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import weights as hub
from ..model.backbone import DinoV2VisionTransformer, VisionTransformer
from ..model.head import FoundHead
from .registry import DEFAULT_MODEL, Arch, get_model_spec

if TYPE_CHECKING:
    from ..predictor import Found


def build_vit(arch: Arch) -> VisionTransformer:
    """An uninitialised-weights ViT of ``arch``: DINO's, or DINOv2's for ``family="dinov2"``."""
    if arch.family == "dinov2":
        return DinoV2VisionTransformer(
            patch_size=arch.patch_size, embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads,
            mlp_ratio=arch.mlp_ratio, img_size=arch.img_size, num_register_tokens=arch.num_register_tokens, ffn=arch.ffn,
            layer_scale=arch.layer_scale,
        )
    if arch.family != "dino":
        raise ValueError(f"unknown backbone family {arch.family!r}")
    return VisionTransformer(
        patch_size=arch.patch_size,
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads,
        mlp_ratio=arch.mlp_ratio,
        img_size=arch.img_size,
    )


def load_backbone(
    model: str = DEFAULT_MODEL,
    weights: str | os.PathLike | None = None,
    num_heads: int | None = None,
    progress: bool = True,
) -> VisionTransformer:
    """A DINO or DINOv2 ViT with weights: registered ``model`` (downloaded unless ``weights`` is
    given) or ``model="auto"`` with a local ``weights`` file (or ``transformers`` directory) whose
    architecture is read off the checkpoint's keys."""
    if model == "auto":
        if weights is None and not os.environ.get(hub.ENV_BACKBONE):
            raise hub.WeightsError(f"model='auto' needs a backbone file: pass weights=PATH or set {hub.ENV_BACKBONE}=PATH")
        path = hub.existing_file(weights or os.environ[hub.ENV_BACKBONE], "weights=PATH / " + hub.ENV_BACKBONE, allow_hf_dir=True)
        state, config = hub.read_backbone(path)
        arch = hub.infer_arch(state, num_heads, config)
    else:
        spec = get_model_spec(model)
        path = hub.resolve(spec.backbone, weights, hub.ENV_BACKBONE, "weights", progress=progress)
        state, _ = hub.read_backbone(path)
        arch = spec.arch
    with torch.device("meta"):  # no random initialisation: every parameter comes from the checkpoint
        vit = build_vit(arch)
    hub.load_backbone_state(vit, state, str(path))
    return vit.eval().requires_grad_(False)


def load_head(model: str = DEFAULT_MODEL, head: str | os.PathLike | None = None, in_dim: int = 384, progress: bool = True) -> FoundHead:
    """The trained 1×1 conv: a local file, or the registered model's published head."""
    if head is None and not os.environ.get(hub.ENV_HEAD):
        spec = None if model == "auto" else get_model_spec(model)
        if spec is None or spec.head is None:
            raise hub.WeightsError(
                f"model {model!r} has no published FOUND head: pass head=PATH (train one with `found train`) "
                f"or set {hub.ENV_HEAD}=PATH, or use coarse=True for step-1 masks"
            )
        path = hub.resolve(spec.head, None, hub.ENV_HEAD, "head", progress=progress)
    else:
        path = hub.existing_file(head or os.environ[hub.ENV_HEAD], "head=PATH / " + hub.ENV_HEAD)
    h = FoundHead(in_dim)
    state = hub.load_checkpoint(path)
    try:
        h.load_state(state)
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
        raise hub.WeightsError(f"{path}: not a FOUND head for this backbone ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
    return h.eval().requires_grad_(False)


def read_head(path: str | os.PathLike, in_dim: int | None = None) -> FoundHead:
    """A head saved in the authors' format (:func:`save_head`); ``in_dim`` defaults to the file's."""
    state = hub.load_checkpoint(Path(path))
    inner = state.get("decoder", state)
    dim = in_dim if in_dim is not None else int(inner["weight"].shape[1]) if "weight" in inner else 384
    head = FoundHead(dim)
    head.load_state(state)
    return head


def save_head(head: FoundHead, path: str | os.PathLike) -> None:
    """Save ``head`` in the authors' format, atomically (temporary file, then rename)."""
    hub.atomic_torch_save(head.state_for_saving(), Path(path))


def build_found(
    model: str = DEFAULT_MODEL,
    weights: str | os.PathLike | None = None,
    head: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    coarse: bool = False,
    num_heads: int | None = None,
    progress: bool = True,
    **kwargs,
) -> "Found":
    """The FOUND predictor ready to use, ``Found(TorchCore(backbone, head, device, **kwargs))``;
    ``coarse=True`` needs no trained head (step-1 masks)."""
    from ..predictor import Found
    from ..runtime.torch_core import TorchCore

    vit = load_backbone(model, weights, num_heads=num_heads, progress=progress)
    h = None if coarse else load_head(model, head, in_dim=vit.embed_dim, progress=progress)
    return Found(TorchCore(vit, h, device=device, **kwargs))
