"""One table of named models → backbone architecture, weight URLs, hashes and licenses (timm-style)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Arch:
    """ViT hyper-parameters (DINO's ``vit_small`` / ``vit_base`` or a custom size)."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    img_size: int = 224


@dataclass(frozen=True)
class Weights:
    """A published file: where to get it, what it should hash to (``None``: publisher gives none)."""

    url: str
    filename: str
    sha256: str | None
    license: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: Arch
    backbone: Weights
    head: Weights | None = None
    description: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)


VIT_S8 = Arch(patch_size=8, embed_dim=384, depth=12, num_heads=6)
VIT_S16 = Arch(patch_size=16, embed_dim=384, depth=12, num_heads=6)
VIT_B8 = Arch(patch_size=8, embed_dim=768, depth=12, num_heads=12)
VIT_B16 = Arch(patch_size=16, embed_dim=768, depth=12, num_heads=12)

_DINO = "https://dl.fbaipublicfiles.com/dino"


def _dino(stem: str) -> Weights:
    return Weights(f"{_DINO}/{stem}/{stem}.pth", f"{stem}.pth", None, "Apache-2.0")


FOUND_HEAD_VITS8 = Weights(
    url="https://raw.githubusercontent.com/valeoai/FOUND/main/data/weights/decoder_weights.pt",
    filename="found_decoder_vits8_duts-tr.pt",
    sha256="47ff2a4af3dbc6c80cb832cc81f8ed8ae81809e52576d0de5f9c754cf46ef9b5",
    license="Apache-2.0",
)

MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        ModelSpec(
            "found-vits8",
            VIT_S8,
            _dino("dino_deitsmall8_300ep_pretrain"),
            FOUND_HEAD_VITS8,
            "DINO ViT-S/8 (300 epochs) + the FOUND authors' head trained on DUTS-TR (the paper's model)",
            aliases=("default", "dino_vits8_300ep"),
        ),
        ModelSpec("dino-vits8", VIT_S8, _dino("dino_deitsmall8_pretrain"), None, "DINO ViT-S/8, 800 epochs; no published FOUND head"),
        ModelSpec("dino-vits16", VIT_S16, _dino("dino_deitsmall16_pretrain"), None, "DINO ViT-S/16; no published FOUND head"),
        ModelSpec("dino-vitb8", VIT_B8, _dino("dino_vitbase8_pretrain"), None, "DINO ViT-B/8; no published FOUND head"),
        ModelSpec("dino-vitb16", VIT_B16, _dino("dino_vitbase16_pretrain"), None, "DINO ViT-B/16; no published FOUND head"),
    ]
}
DEFAULT_MODEL = "found-vits8"


def get_model_spec(name: str) -> ModelSpec:
    """Look a model up by name or alias; unknown names list the known ones."""
    for spec in MODELS.values():
        if name == spec.name or name in spec.aliases:
            return spec
    raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


def list_models() -> list[str]:
    return list(MODELS)
