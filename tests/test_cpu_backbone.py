"""The CPU backbone (oneDNN GEMMs, :mod:`found.model.backbone.cpu`) and the ``auto`` precision policy.

fp32 must give the eager model's features up to float rounding; bf16 must keep the fp32 masks
(IoU ≥ 0.99) on the bundled photos and on the parity inputs, which is what allows ``auto`` to pick
it; ``auto`` must pick fp32 for step-1 masks, off the CPU, and where the CPU has no bf16 units.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import REPO, load_parity, structured_head, tiny_vit
from found import Found
from found.model.backbone import VisionTransformer, cpu
from found.runtime.device import resolve_precision

needs_onednn = pytest.mark.skipif(not cpu.available(), reason="this torch build has no oneDNN linear op")
MIN_IOU = 0.99


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@needs_onednn
@pytest.mark.numerics
@pytest.mark.parametrize("batch,hw", [(1, (64, 96)), (3, (40, 56)), (2, (8, 8))])
def test_fp32_cpu_backbone_gives_the_eager_features(vit, batch, hw):
    torch.manual_seed(0)
    x = torch.randn(batch, 3, *hw)
    with torch.inference_mode():
        ref = vit.found_features(x)
        got = cpu.CpuBackbone(vit, torch.float32).found_features(x)
    assert got.grid_hw == ref.grid_hw and got.keys.dtype == torch.float32
    torch.testing.assert_close(got.cls_attention, ref.cls_attention, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.keys, ref.keys, atol=1e-5, rtol=1e-5)


@needs_onednn
@pytest.mark.numerics
def test_attention_blocks_of_rows_do_not_change_the_result(vit, monkeypatch):
    """Attention is computed in blocks of ATTENTION_ROWS query rows; a block size that does not divide N agrees."""
    x = torch.randn(1, 3, 80, 88)  # 110 patches + CLS
    with torch.inference_mode():
        ref = cpu.CpuBackbone(vit, torch.float32).found_features(x)
        monkeypatch.setattr(cpu, "ATTENTION_ROWS", 7)
        got = cpu.CpuBackbone(vit, torch.float32).found_features(x)
    torch.testing.assert_close(got.keys, ref.keys, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got.cls_attention, ref.cls_attention, atol=1e-7, rtol=1e-6)


@pytest.mark.skipif(not cpu.bf16_gemm(), reason="oneDNN runs no bf16 GEMM here (ISA capped or missing)")
def test_bf16_cpu_backbone_stays_close_and_leaves_the_model_alone(vit):
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    x = torch.randn(2, 3, 48, 64)
    with torch.inference_mode():
        ref = vit.found_features(x)
        got = cpu.CpuBackbone(vit, torch.bfloat16).found_features(x)
    assert got.keys.dtype == torch.float32 and got.cls_attention.dtype == torch.float32
    assert not torch.equal(got.keys, ref.keys)  # really ran in bf16
    assert float((got.keys - ref.keys).norm() / ref.keys.norm()) < 0.02
    assert torch.allclose(got.cls_attention.sum(-1), ref.cls_attention.sum(-1), atol=1e-3)
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        cpu.CpuBackbone(vit, torch.float16)


@needs_onednn
@pytest.mark.numerics
def test_bf16_keeps_the_fp32_masks_on_photos_and_parity_inputs(vit, photos):
    """The rule that lets ``auto`` pick bf16: IoU ≥ 0.99 against fp32 on the bundled photos and on
    every parity input (tiny parity ViT, a head that follows image content)."""
    images = list(photos.values())
    head = structured_head(vit, images)
    fp32, bf16 = Found(vit, head, device="cpu", precision="fp32"), Found(vit, head, device="cpu", precision="bf16")
    assert fp32.core.native_cpu and bf16.core.native_cpu == cpu.bf16_gemm()  # else bf16 runs autocast: the rule holds too
    for a, b in zip(fp32.predict(images), bf16.predict(images)):
        assert 0 < a.mask.mean() < 1
        assert _iou(a.mask, b.mask) >= MIN_IOU
    cases = load_parity("vit_cases.npz")
    names = [k[: -len("_x")] for k in cases if k.endswith("_x")]
    assert names, "the parity ViT cases hold no input"
    for c in names:
        x = torch.from_numpy(cases[f"{c}_x"])
        ma, mb = (m.soft_from_logits(m.patch_logits(x))[0].numpy() > 0.5 for m in (fp32, bf16))
        assert _iou(ma, mb) >= MIN_IOU, c


SHARED_HEAD = REPO.parent / "shared" / "weights" / "found_decoder_vits8_duts-tr.pt"


@pytest.mark.skipif(not cpu.bf16_gemm(), reason="oneDNN runs no bf16 GEMM here: auto never picks bf16 (the rule is for that path)")
@pytest.mark.numerics
@pytest.mark.slow
def test_bf16_keeps_the_fp32_masks_at_full_model_size(photos):
    """ViT-S/8 of the real size (random weights: the published backbone cannot be downloaded here)
    with the authors' trained head, at the default working scale: the oneDNN bf16 path that ``auto``
    picks gives IoU ≥ 0.99 against fp32. (PyTorch's bf16 autocast, everything in bf16, does not: 0.985.)"""
    from found.engine import DEFAULT_MAX_SIDE
    from found.hub.build import read_head
    from found.io.images import read_image

    if not SHARED_HEAD.is_file():
        pytest.skip(f"the authors' head is not at {SHARED_HEAD} (published weights are not committed)")
    torch.manual_seed(0)
    vit = VisionTransformer(patch_size=8, embed_dim=384, depth=12, num_heads=6).eval()
    head = read_head(SHARED_HEAD)
    images = [read_image(im, max_side=DEFAULT_MAX_SIDE).rgb() for im in photos.values()]
    ref = Found(vit, head, device="cpu", precision="fp32").predict(images)
    got = Found(vit, head, device="cpu", precision="bf16").predict(images)
    for a, b in zip(ref, got):
        assert _iou(a.mask, b.mask) >= MIN_IOU


def test_auto_precision_is_bf16_only_for_a_trained_head_on_a_bf16_cpu(monkeypatch):
    cpu_dev, cuda_dev = torch.device("cpu"), torch.device("cuda")
    for p in ("fp32", "bf16", "fp16", "int8"):
        assert resolve_precision(p, cpu_dev) == p
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    monkeypatch.setattr(cpu, "available", lambda: True)
    assert resolve_precision("auto", cpu_dev) == "bf16"
    assert resolve_precision("auto", cpu_dev, coarse=True) == "fp32"
    assert resolve_precision("auto", cuda_dev) == "fp32"
    monkeypatch.setattr(cpu, "native_bf16", lambda: False)
    assert resolve_precision("auto", cpu_dev) == "fp32"
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    monkeypatch.setattr(cpu, "available", lambda: False)
    assert resolve_precision("auto", cpu_dev) == "fp32"


def test_the_model_reports_the_precision_it_runs(vit, monkeypatch):
    from found.model.head import FoundHead

    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    assert Found(vit, FoundHead(96), device="cpu").precision == ("bf16" if cpu.available() else "fp32")
    assert Found(vit, None, device="cpu").precision == "fp32"
    monkeypatch.setattr(cpu, "native_bf16", lambda: False)
    assert Found(vit, FoundHead(96), device="cpu").precision == "fp32"


def test_bf16_where_onednn_cannot_runs_autocast(vit, monkeypatch, photos):
    """An explicit bf16 on a CPU where oneDNN has no bf16 GEMM (its ISA capped) runs the eager autocast path."""
    from found.model.head import FoundHead

    monkeypatch.setattr(cpu, "bf16_gemm", lambda: False)
    model = Found(vit, FoundHead(96), device="cpu", precision="bf16")
    assert not model.core.native_cpu and model.precision == "bf16"
    assert model.predict(photos["coffee"][:64, :80])[0].mask.shape == (64, 80)


def test_without_onednn_the_eager_path_runs(vit, monkeypatch, photos):
    from found.model.head import FoundHead

    im = photos["coffee"][:64, :80]
    head = FoundHead(96)
    ref = Found(vit, head, device="cpu", precision="fp32")
    monkeypatch.setattr(cpu, "available", lambda: False)
    eager = Found(vit, head, device="cpu", precision="fp32")
    assert not eager.core.native_cpu
    assert np.abs(eager.predict(im)[0].soft - ref.predict(im)[0].soft).max() < 1e-5


def test_native_bf16_reads_the_cpu_flags(monkeypatch, tmp_path):
    import platform

    cpu.native_bf16.cache_clear()
    try:
        monkeypatch.setattr(cpu, "bf16_gemm", lambda: True)
        monkeypatch.setattr(platform, "system", lambda: "Linux")
        monkeypatch.setattr(platform, "machine", lambda: "x86_64")
        info = tmp_path / "cpuinfo"
        monkeypatch.setattr(cpu, "CPUINFO", info)
        info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n")
        assert cpu.native_bf16() is False
        cpu.native_bf16.cache_clear()
        info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
        assert cpu.native_bf16() is True
        cpu.native_bf16.cache_clear()
        monkeypatch.setattr(cpu, "bf16_gemm", lambda: False)  # e.g. ONEDNN_MAX_CPU_ISA=AVX2
        assert cpu.native_bf16() is False
        cpu.native_bf16.cache_clear()
        monkeypatch.setattr(platform, "machine", lambda: "arm64")
        assert cpu.native_bf16() is False
    finally:
        cpu.native_bf16.cache_clear()
