"""Frozen self-supervised ViT backbones (DINO, DINOv2) and the features FOUND reads from them."""
from .dinov2 import DinoV2VisionTransformer
from .vit import FoundFeatures, VisionTransformer

__all__ = ["DinoV2VisionTransformer", "FoundFeatures", "VisionTransformer"]
