"""Construction: the registry of model names, weights download/verify/cache, and building models."""
from .build import build_found, load_backbone, load_head
from .registry import DEFAULT_MODEL, MODELS, get_model_spec, list_models

__all__ = ["DEFAULT_MODEL", "MODELS", "build_found", "get_model_spec", "list_models", "load_backbone", "load_head"]
