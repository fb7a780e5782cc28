"""Building blocks of the DINO-compatible ViT (one module per layer, as in dinov2)."""
from .attention import Attention
from .block import Block
from .mlp import Mlp
from .patch_embed import PatchEmbed

__all__ = ["Attention", "Block", "Mlp", "PatchEmbed"]
