"""ViT-g/14's SwiGLU FFN on a tiny random model (no official fixture): layout, key detection, the
eager fallback of the CPU path, the reference path and ONNX."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import require
from found.hub import weights as hub
from found import Found
from found.model.backbone import DinoV2VisionTransformer
from found.model.backbone.layers.swiglu import swiglu_hidden
from found.runtime.eager import eager_found_features
from found.hub.build import load_backbone


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    v = DinoV2VisionTransformer(embed_dim=48, depth=2, num_heads=3, img_size=56, num_register_tokens=4, ffn="swiglu").eval()
    with torch.no_grad():
        for b in v.blocks:
            b.ls1.gamma.uniform_(0.1, 1.0)
            b.ls2.gamma.uniform_(0.1, 1.0)
        v.pos_embed.normal_(0, 0.2)
        v.register_tokens.normal_(0, 0.2)
    return v


def test_swiglu_hidden_width_is_dinov2s_rounding():
    assert swiglu_hidden(1536, 4.0) == 4096  # ViT-g/14: w12 [8192, 1536], w3 [1536, 4096]
    assert swiglu_hidden(48, 4.0) == 128


def test_swiglu_is_silu_of_one_half_times_the_other(vit):
    mlp = vit.blocks[0].mlp
    x = torch.randn(5, 48)
    a, b = mlp.w12(x).chunk(2, -1)
    torch.testing.assert_close(mlp(x), mlp.w3(F.silu(a) * b))


def test_swiglu_checkpoint_is_recognised_and_loads(vit, tmp_path):
    torch.save(vit.state_dict(), tmp_path / "g.pth")
    arch = hub.infer_arch(vit.state_dict(), num_heads=3)
    assert (arch.ffn, arch.mlp_ratio, arch.num_register_tokens, arch.family) == ("swiglu", 4.0, 4, "dinov2")
    loaded = load_backbone("auto", tmp_path / "g.pth", num_heads=3)
    x = torch.randn(1, 3, 70, 98)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.found_features(x).keys, vit.found_features(x).keys)


def test_cpu_path_falls_back_to_eager_and_matches_the_reference(vit):
    x = torch.randn(1, 3, 70, 98)
    model = Found(vit, None, device="cpu", precision="fp32")
    assert not model.core.native_cpu  # the oneDNN path runs GELU MLPs only
    f = model.features(x)
    with torch.inference_mode():
        ref = eager_found_features(vit, x)
    torch.testing.assert_close(f.cls_attention, ref.cls_attention, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(f.keys, ref.keys, atol=1e-5, rtol=1e-5)


def test_swiglu_model_exports_to_onnx(vit, tmp_path):
    require("onnxruntime", "onnx")
    from found import load_onnx
    from found.export.onnx import export_onnx

    path = export_onnx(vit, None, tmp_path / "g.onnx")
    x = torch.randn(1, 3, 70, 98)
    with torch.inference_mode():
        ref = vit.found_features(x)
    got = load_onnx(path, "cpu").features(x)
    torch.testing.assert_close(got.cls_attention, ref.cls_attention, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got.keys, ref.keys, atol=1e-4, rtol=1e-4)
