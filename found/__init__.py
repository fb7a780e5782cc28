"""FOUND (Siméoni et al., CVPR 2023): unsupervised object localization by observing the background.

Quick use::

    import found
    model = found.build_found()             # DINO ViT-S/8 + the authors' head (downloaded once)
    for r in found.segment(["photo.jpg"], model):   # at the working scale, results at full size
        r.prediction.mask, r.prediction.box
    pred = model.predict("photo.jpg")[0]     # one image at its own resolution (the paper's protocol)
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

#: modules of the flat layout (before 0.2) → where they live now; old imports keep working with a warning
MOVED = {
    "found.background": "found.model.background",
    "found.backbone": "found.model.backbone",
    "found.edges": "found.model.edges",
    "found.head": "found.model.head",
    "found.instances": "found.model.instances",
    "found.masks": "found.model.masks",
    "found.preprocess": "found.model.preprocess",
    "found.build": "found.hub.build",
    "found.hf": "found.hub.hf",
    "found.registry": "found.hub.registry",
    "found.core": "found.runtime.torch_core",
    "found.baseline": "found.runtime.eager",
    "found.coco": "found.io.coco",
    "found.fileio": "found.io.files",
    "found.imageio": "found.io.images",
    "found.inputs": "found.io.sources",
    "found.override": "found.io.override",
    "found.writers": "found.io.sinks",
    "found.distributed": "found.ray",
    "found.profiling": "found.bench.profiling",
}


def moved_to(name: str) -> str | None:
    """The module an old ``found.*`` import path now names, or None if it did not move."""
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return None


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves an old import path with the module at its new place, warning once with the new name."""

    def __init__(self) -> None:
        self.spec_of: dict[str, object] = {}

    def find_spec(self, name: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        """A spec served by this finder when ``name`` is an old import path, else None (other finders go on)."""
        return importlib.util.spec_from_loader(name, self) if moved_to(name) else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        """The module at its new place, imported now, after a DeprecationWarning that names the new path."""
        new = moved_to(spec.name)
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self.spec_of[spec.name] = module.__spec__
        return module

    def exec_module(self, module) -> None:
        """Nothing to run (the new module is loaded); only its own spec is put back."""
        module.__spec__ = self.spec_of[module.__spec__.name]


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())

from .model.background import Background, discover_background, head_weights  # noqa: E402
from .model.backbone import FoundFeatures, VisionTransformer  # noqa: E402
from .hub.build import build_found, load_backbone, load_head  # noqa: E402
from .engine import DEFAULT_MAX_SIDE, Engine, segment  # noqa: E402
from .options import RunOptions  # noqa: E402
from .model.head import FoundHead  # noqa: E402
from .model.instances import Instance, InstanceFilter, find_instances  # noqa: E402
from .predictor import Found, OnnxFound, Prediction, load_onnx  # noqa: E402  (onnxruntime: imported on first use)
from .hub.registry import DEFAULT_MODEL, MODELS, get_model_spec, list_models  # noqa: E402
from .version import __version__  # noqa: E402

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
    "RunOptions",
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
