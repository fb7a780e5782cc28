"""Building blocks of the DINO/DINOv2-compatible ViT (one module per layer, as in dinov2)."""
from .attention import Attention
from .block import Block
from .layer_scale import LayerScale
from .mlp import Mlp
from .patch_embed import PatchEmbed
from .swiglu import SwiGLU

__all__ = ["Attention", "Block", "LayerScale", "Mlp", "PatchEmbed", "SwiGLU"]
