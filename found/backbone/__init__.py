"""Frozen self-supervised ViT backbones (DINO) and the features FOUND reads from them."""
from .vit import FoundFeatures, VisionTransformer

__all__ = ["FoundFeatures", "VisionTransformer"]
