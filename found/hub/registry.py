"""One table of named models → backbone architecture, weight URLs, hashes and licenses (timm-style)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Arch:
    """ViT hyper-parameters: DINO's ``vit_small`` / ``vit_base``, DINOv2's, or a custom size.

    ``family="dinov2"``: LayerScale, ``num_register_tokens`` registers, and the official hub
    constructors' position-embedding interpolation (see :mod:`found.model.backbone.dinov2`).
    """

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    img_size: int = 224
    family: str = "dino"
    num_register_tokens: int = 0
    ffn: str = "mlp"
    layer_scale: bool = True  # DINOv2 only (``init_values`` set: every released model)

    @property
    def num_prefix_tokens(self) -> int:
        """CLS plus registers: the tokens before the patches."""
        return 1 + self.num_register_tokens


@dataclass(frozen=True)
class Weights:
    """A published file: where to get it, what it should hash to (``None``: publisher gives none)."""

    url: str
    filename: str
    sha256: str | None
    license: str


@dataclass(frozen=True)
class ModelSpec:
    """A named model of the registry: backbone architecture and weights, the FOUND head's if published, aliases."""

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
_DINOV2 = "https://dl.fbaipublicfiles.com/dinov2"


def _dinov2_arch(size: str, registers: int) -> Arch:
    """DINOv2 ``vit_{small,base,large,giant2}`` at patch 14 as the official hub builds them (img_size 518)."""
    dim, depth, heads, ffn = {"s": (384, 12, 6, "mlp"), "b": (768, 12, 12, "mlp"), "l": (1024, 24, 16, "mlp"),
                              "g": (1536, 40, 24, "swiglu")}[size]
    return Arch(14, dim, depth, heads, img_size=518, family="dinov2", num_register_tokens=registers, ffn=ffn)


def _dinov2(size: str, registers: int) -> Weights:
    """The official torch.hub file: ``dinov2_vit{size}14[_reg4]_pretrain.pth``."""
    base = f"dinov2_vit{size}14"
    stem = f"{base}_reg{registers}" if registers else base
    return Weights(f"{_DINOV2}/{base}/{stem}_pretrain.pth", f"{stem}_pretrain.pth", None, "Apache-2.0")


def _dinov2_specs() -> list[ModelSpec]:
    names = {"s": "ViT-S/14", "b": "ViT-B/14", "l": "ViT-L/14", "g": "ViT-g/14"}
    specs = []
    for size, label in names.items():
        for reg in (0, 4):
            suffix = "-reg" if reg else ""
            specs.append(ModelSpec(
                f"dinov2-vit{size}14{suffix}", _dinov2_arch(size, reg), _dinov2(size, reg), None,
                f"DINOv2 {label}{' with 4 registers' if reg else ''} (experimental); no published FOUND head",
                aliases=(f"dinov2_vit{size}14{'_reg' if reg else ''}",),
            ))
    return specs


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
        *_dinov2_specs(),
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
    """The registry's model names (aliases not included)."""
    return list(MODELS)
