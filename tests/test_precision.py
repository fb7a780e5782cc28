"""Reduced precision (bf16/fp16 autocast, int8) gives the fp32 masks; fp32 parity on CUDA.

Weights: the parity tiny ViT (``tiny_vit()``) with a *structured* 1×1 head — the direction from the
mean background key to the mean object key of FOUND's own coarse (step-1) masks on the test photos,
threshold halfway — so that the masks follow image content, as a trained head's do.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import load_parity, tiny_vit
from conftest import structured_head as make_structured_head
from found import Found, FoundHead

MIN_IOU = 0.99


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


@pytest.fixture(scope="module")
def photos(images_dir) -> list[np.ndarray]:
    return [np.array(Image.open(p).convert("RGB")) for p in sorted(images_dir.glob("*.png"))]


@pytest.fixture(scope="module")
def structured_head(vit, photos) -> FoundHead:
    return make_structured_head(vit, photos)


@pytest.fixture(scope="module")
def fp32_preds(vit, structured_head, photos):
    return Found(vit, structured_head, device="cpu").predict(photos)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _autocast_works(device: str, dtype: torch.dtype) -> bool:
    try:
        with torch.autocast(device_type=device, dtype=dtype):
            y = torch.nn.functional.linear(torch.ones(2, 4, device=device), torch.ones(3, 4, device=device))
        return y.dtype == dtype
    except (RuntimeError, ValueError):
        return False


def test_structured_head_gives_nontrivial_masks(fp32_preds):
    for p in fp32_preds:
        assert 0 < p.mask.mean() < 1, "the test head must give masks with both object and background"


@pytest.mark.numerics
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cpu_autocast_masks_match_fp32(vit, structured_head, photos, fp32_preds, precision):
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if not _autocast_works("cpu", dtype):
        pytest.skip(f"{precision} autocast is not supported on this CPU / torch build")
    preds = Found(vit, structured_head, device="cpu", precision=precision).predict(photos)
    for ref, p in zip(fp32_preds, preds):
        assert _iou(ref.mask, p.mask) >= MIN_IOU


@pytest.mark.numerics
def test_cpu_int8_masks_match_fp32(vit, structured_head, photos, fp32_preds):
    from found.model.backbone.quantize import int8_supported

    if not int8_supported():
        pytest.skip("this torch build has no quantized CPU engine")
    preds = Found(vit, structured_head, device="cpu", precision="int8").predict(photos)
    for ref, p in zip(fp32_preds, preds):
        assert _iou(ref.mask, p.mask) >= MIN_IOU


def test_int8_copy_leaves_the_fp32_backbone_alone(vit, photos):
    from found.model.backbone.quantize import int8_supported, quantize_int8

    if not int8_supported():
        pytest.skip("this torch build has no quantized CPU engine")
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    x = Found(vit, None, device="cpu").input_batch([photos[0][:64, :64]])
    with torch.inference_mode():
        f = vit.found_features(x)
        for scope in ("mlp", "all"):
            q = quantize_int8(vit, scope=scope)
            assert type(q.blocks[0].mlp.fc1) is not torch.nn.Linear
            assert (type(q.blocks[0].attn.qkv) is torch.nn.Linear) == (scope == "mlp")
            g = q.found_features(x)
            assert g.keys.shape == f.keys.shape and g.cls_attention.shape == f.cls_attention.shape
            assert not torch.equal(f.keys, g.keys)
            rel = (g.keys - f.keys).norm() / f.keys.norm()
            assert rel < 0.05, f"int8 ({scope}) keys are {rel:.3f} away from fp32 (relative)"
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())
    assert type(vit.blocks[0].mlp.fc1) is torch.nn.Linear
    with pytest.raises(ValueError, match="scope"):
        quantize_int8(vit, scope="attention")


# ---------------------------------------------------------------------------- CUDA (skipped without a GPU)
cuda = pytest.mark.gpu  # conftest skips these without a CUDA device


@cuda
@pytest.mark.parity
def test_cuda_fp32_matches_parity_fixtures(vit):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    d = load_parity("vit_cases.npz")
    model = Found(vit, None, device="cuda")
    for i in range(len(np.atleast_1d(d["case_names"]))):
        f = model.features(torch.from_numpy(d[f"c{i}_x"]))
        np.testing.assert_allclose(f.cls_attention[0].cpu().numpy(), d[f"c{i}_cls_attention"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(f.keys[0].cpu().numpy(), d[f"c{i}_keys"], atol=5e-5, rtol=0)


@cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_autocast_masks_match_fp32(vit, structured_head, photos, precision):
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = Found(vit, structured_head, device="cuda").predict(photos)
    preds = Found(vit, structured_head, device="cuda", precision=precision).predict(photos)
    for a, b in zip(ref, preds):
        assert _iou(a.mask, b.mask) >= MIN_IOU


@cuda
def test_cuda_compiled_matches_eager(vit, structured_head, photos):
    torch.backends.cuda.matmul.allow_tf32 = False
    one = photos[:1]  # one size: one compilation
    ref = Found(vit, structured_head, device="cuda").predict(one)
    preds = Found(vit, structured_head, device="cuda", compile=True).predict(one)
    for a, b in zip(ref, preds):
        np.testing.assert_allclose(a.soft, b.soft, atol=1e-4, rtol=0)
