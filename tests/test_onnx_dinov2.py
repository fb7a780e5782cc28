"""ONNX export of DINOv2 backbones: the graph's position-embedding matrices (offset bicubic without
registers, antialiased bicubic with) and ONNX Runtime against torch on the tiny models."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import require
from dinov2_support import REPO_DINOV2, build_model, load_cases

from found import Found, FoundHead, load_onnx
from found.export.onnx import FoundOnnxGraph, antialias_bicubic_matrix, export_onnx

SIZES = [(224, 224), (196, 308), (182, 252), (98, 140)]


def _model(name: str):
    return build_model(load_cases(REPO_DINOV2 / f"{name}_cases.npz"))


@pytest.mark.parametrize("m", [16, 37])
@pytest.mark.parametrize("hw", [(13, 18), (20, 27), (16, 16), (40, 70), (5, 3), (16, 30)])
def test_antialias_matrix_equals_torch_antialiased_bicubic(m, hw) -> None:
    g = torch.randn(1, 8, m, m, generator=torch.Generator().manual_seed(m))
    ref = F.interpolate(g, size=hw, mode="bicubic", antialias=True)[0]
    mh, mw = antialias_bicubic_matrix(torch.tensor(hw[0]), m), antialias_bicubic_matrix(torch.tensor(hw[1]), m)
    got = torch.einsum("hi,cij,wj->chw", mh, g[0], mw)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["dinov2_tiny", "dinov2_tiny_reg4"])
@pytest.mark.parametrize("grid", [(16, 16), (14, 22), (13, 18), (16, 9), (1, 1)])
def test_traceable_position_encoding_matches_dinov2(name, grid) -> None:
    vit = _model(name)
    with torch.no_grad():
        ref = vit.interpolate_pos_encoding(*grid)
        got = FoundOnnxGraph(vit).pos_encoding(*grid)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["dinov2_tiny", "dinov2_tiny_reg4"])
def test_onnx_runtime_matches_torch_on_tiny_dinov2(name, tmp_path) -> None:
    require("onnxruntime", "onnx")
    vit = _model(name)
    torch.manual_seed(3)
    head = FoundHead(vit.embed_dim).eval()
    path = export_onnx(vit, head, tmp_path / f"{name}.onnx", model=name)
    ref, ort = Found(vit, head, device="cpu", precision="fp32"), load_onnx(path, "cpu")
    assert ort.patch_size == 14
    rng = np.random.default_rng(0)
    for hw in SIZES:
        x = ref.input_batch([rng.integers(0, 256, (*hw, 3), dtype=np.uint8)])
        a, b = ref.features(x), ort.features(x)
        assert a.grid_hw == b.grid_hw
        torch.testing.assert_close(b.cls_attention, a.cls_attention, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b.keys, a.keys, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ort.patch_logits(x), ref.patch_logits(x), atol=1e-4, rtol=1e-4)
