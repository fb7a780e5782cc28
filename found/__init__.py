"""FOUND (Siméoni et al., CVPR 2023): unsupervised object localization by observing the background.

Quick use::

    import found
    model = found.build_found()             # DINO ViT-S/8 + the authors' head (downloaded once)
    for r in found.segment(["photo.jpg"], model):   # at the working scale, results at full size
        r.prediction.mask, r.prediction.box
    pred = model.predict("photo.jpg")[0]     # one image at its own resolution (the paper's protocol)
"""
from .background import Background, discover_background, head_weights
from .backbone import FoundFeatures, VisionTransformer
from .build import build_found, load_backbone, load_head
from .engine import DEFAULT_MAX_SIDE, Engine, segment
from .export.runtime import OnnxFound, load_onnx  # onnxruntime itself is imported on first use
from .head import FoundHead
from .instances import Instance, InstanceFilter, find_instances
from .predictor import Found, Prediction
from .registry import DEFAULT_MODEL, MODELS, get_model_spec, list_models

__version__ = "0.1.0"
__all__ = [
    "Background",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_MODEL",
    "Engine",
    "Found",
    "FoundFeatures",
    "FoundHead",
    "Instance",
    "InstanceFilter",
    "MODELS",
    "OnnxFound",
    "Prediction",
    "VisionTransformer",
    "build_found",
    "discover_background",
    "find_instances",
    "get_model_spec",
    "head_weights",
    "list_models",
    "load_backbone",
    "load_head",
    "load_onnx",
    "segment",
]
