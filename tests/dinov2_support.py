"""DINOv2 parity fixtures: every ``*_cases.npz`` under ``$FOUND_PARITY_DIR/dinov2`` and the model it names."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO_PARITY, parity_dir

#: DINOv2 constructors' sizes (``vit_small`` … as in dinov2/models/vision_transformer.py).
_SIZES = {"vit_small": (384, 12, 6), "vit_base": (768, 12, 12), "vit_large": (1024, 24, 16), "vit_giant2": (1536, 40, 24)}


def dinov2_dir() -> Path:
    """The parity folder's DINOv2 fixtures (``$FOUND_PARITY_DIR/dinov2``, default the repo copy)."""
    return parity_dir() / "dinov2"


#: The repository's own copy: the non-parity tests (loading, ONNX, CLI) use its named files.
REPO_DINOV2 = REPO_PARITY / "dinov2"


def case_files() -> list[Path]:
    """Every case file, whatever its name (the parametrisation; [] fails in :func:`load_cases`)."""
    return sorted(dinov2_dir().glob("*_cases.npz"))


def case_file_params():
    files = case_files()
    return files if files else [pytest.param(None, id="no-dinov2-case-files")]


def load_cases(path: Path | None) -> dict:
    if path is None:
        pytest.fail(f"no *_cases.npz in {dinov2_dir()}: the DINOv2 parity fixtures are missing")
    with np.load(path) as d:
        return {k: d[k] for k in d.files} | {"_folder": path.parent}


def cases(d: dict) -> list[dict]:
    """Per-case dicts with the ``c{i}_`` prefix removed."""
    names = json.loads(str(d["case_names"])) if d["case_names"].dtype.kind == "U" and str(d["case_names"]).startswith("[") \
        else [str(n) for n in np.atleast_1d(d["case_names"])]
    return [{k[len(f"c{i}_"):]: v for k, v in d.items() if k.startswith(f"c{i}_")} | {"name": n} for i, n in enumerate(names)]


def regenerate_weights(d: dict) -> dict[str, np.ndarray]:
    """The README's recipe: seeded numpy weights from ``model_meta_json`` and ``keys_json``, checksummed."""
    seed = json.loads(str(d["model_meta_json"]))["seed"]
    rng, sd = np.random.default_rng(seed), {}
    for k, shape in json.loads(str(d["keys_json"])):
        shape = tuple(shape)
        if k.endswith(("ls1.gamma", "ls2.gamma")):
            v = rng.uniform(0.1, 1.0, size=shape)
        else:
            z = rng.standard_normal(size=shape)
            if k in ("cls_token", "pos_embed", "register_tokens", "mask_token"):
                v = 0.2 * z
            elif any(s in k for s in (".norm1.", ".norm2.")) or k.startswith("norm."):
                v = 1 + 0.1 * z if k.endswith("weight") else 0.1 * z
            elif k.endswith(".bias"):
                v = 0.1 * z
            else:
                v = z * 1.8 / math.sqrt(int(np.prod(shape[1:])))
        sd[k] = (np.round(v * 1024) / 1024).astype(np.float32)
    chk = json.loads(str(d["weights_checksums_json"]))
    bad = [k for k in sd if abs(sd[k].astype(np.float64).sum() - chk[k][0]) > 1e-6]
    assert not bad, f"regenerated weights do not match their checksums: {bad[:3]}"
    return sd


def model_state(d: dict) -> dict[str, torch.Tensor]:
    """The case file's model weights: its ``model_file`` next to it, or regenerated from the recipe."""
    name = str(d["model_file"])
    if name:
        with np.load(Path(d.get("_folder", dinov2_dir())) / name) as w:
            sd = {k: w[k] for k in w.files if not k.endswith("_json")}
    else:
        sd = regenerate_weights(d)
    return {k: torch.from_numpy(v) for k, v in sd.items()}


def build_model(d: dict):
    """The official constructor's model (its kwargs from ``model_meta_json``) with the case file's weights."""
    from found.model.backbone import DinoV2VisionTransformer

    meta = json.loads(str(d["model_meta_json"]))
    kw = meta["kwargs"]
    ctor = meta["constructor"].rsplit(".", 1)[-1].split("(")[0]
    dim, depth, heads = _SIZES.get(ctor, (kw.get("embed_dim"), kw.get("depth"), kw.get("num_heads")))
    ffn = {"mlp": "mlp", "swiglu": "swiglu", "swiglufused": "swiglu"}.get(kw.get("ffn_layer", "mlp"))
    if ffn is None:
        pytest.fail(f"fixture FFN {kw['ffn_layer']!r} is not handled by this test")
    vit = DinoV2VisionTransformer(
        patch_size=kw["patch_size"], embed_dim=kw.get("embed_dim", dim), depth=kw.get("depth", depth),
        num_heads=kw.get("num_heads", heads), mlp_ratio=kw.get("mlp_ratio", 4), img_size=kw["img_size"],
        num_register_tokens=kw.get("num_register_tokens", 0), interpolate_antialias=kw.get("interpolate_antialias", False),
        interpolate_offset=kw.get("interpolate_offset", 0.1), ffn=ffn, layer_scale=bool(kw.get("init_values")),
    )
    vit.load_state_dict(model_state(d), strict=True)
    return vit.eval()
