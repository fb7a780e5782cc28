"""Shared builders for the evaluation tests (tiny random ViT, synthetic datasets) and the tests of
the standard-metric wrapper against pysodmetrics itself."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require
from found.model.backbone import VisionTransformer
from found.hub.build import save_head
from found.model.head import FoundHead

# ---------------------------------------------------------------------------- builders (imported by other tests)


def write_tiny_model(d: Path, bias: float | None = None, seed: int = 0) -> list[str]:
    """A random 64-d, 2-block, 2-head ViT/8 and a head; returns the CLI model options.

    ``bias`` set: the head ignores the features (weight 0) and predicts that constant logit, so
    every pixel is object (bias > 0) or background (bias < 0): outputs are known in advance.
    Random weights are for tests only.
    """
    d.mkdir(parents=True, exist_ok=True)
    g = torch.manual_seed(seed)
    vit = VisionTransformer(patch_size=8, embed_dim=64, depth=2, num_heads=2)
    with torch.no_grad():
        for p in vit.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    torch.save(vit.state_dict(), d / "vit.pth")
    head = FoundHead(64)
    with torch.no_grad():
        if bias is None:
            head.decoder.weight.copy_(torch.randn(head.decoder.weight.shape, generator=g) * 0.3)
            head.decoder.bias.fill_(0.0)
        else:
            head.decoder.weight.zero_()
            head.decoder.bias.fill_(bias)
    save_head(head, d / "head.pt")
    return ["--model", "auto", "--weights", str(d / "vit.pth"), "--head", str(d / "head.pt"),
            "--num-heads", "2", "--device", "cpu", "--no-progress"]


def build_tiny(d: Path):
    """The same model as ``found evaluate`` builds from ``write_tiny_model(d)``'s files (fp32, the paper's protocol)."""
    from found.hub.build import build_found

    return build_found(model="auto", weights=d / "vit.pth", head=d / "head.pt", num_heads=2, device="cpu", progress=False,
                       precision="fp32")


def ellipse_mask(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def synthetic_image(mask: np.ndarray, seed: int) -> np.ndarray:
    """Dark noisy background, bright noisy object: uint8 RGB."""
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 70, size=(*mask.shape, 3))
    img[mask] = rng.integers(170, 240, size=(int(mask.sum()), 3))
    return img.astype(np.uint8)


#: (name, H, W, ellipse) of the synthetic saliency images; sizes are not multiples of 8
SAL_IMAGES = [("a_img", 61, 83, (30, 40, 18, 25)), ("b_img", 72, 64, (20, 20, 10, 12)), ("c_img", 45, 90, (22, 70, 12, 15))]


def write_saliency_dataset(img_dir: Path, gt_dir: Path, image_ext: str = ".jpg") -> dict[str, np.ndarray]:
    """Images (JPEG by default, like the official sets) and 0/255 PNG masks; returns the binary GTs."""
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    gts = {}
    for i, (name, h, w, ell) in enumerate(SAL_IMAGES):
        m = ellipse_mask(h, w, *ell)
        Image.fromarray(synthetic_image(m, i)).save(img_dir / f"{name}{image_ext}", quality=95)
        gray = (m * 255).astype(np.uint8)
        gray[0, 0] = 128  # an anti-aliased pixel: background for the authors (== 255 rule)
        Image.fromarray(gray).save(gt_dir / f"{name}.png")
        gts[name] = gray == 255
    return gts


def read_csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------- standard metrics vs pysodmetrics
def _psm():
    return require("py_sod_metrics", "eval")


def _cases():
    rng = np.random.default_rng(3)
    gt = ellipse_mask(50, 70, 25, 30, 15, 20)
    soft = np.clip(gt * 0.7 + rng.random(gt.shape) * 0.4, 0, 1)
    yield soft, gt
    gt2 = ellipse_mask(40, 40, 10, 30, 6, 6)
    yield rng.random(gt2.shape), gt2


@pytest.mark.slow
def test_wrapper_equals_direct_pysodmetrics():
    import warnings

    from found.evaluate.metrics import StandardSaliencyMetrics, to_uint8_map

    psm = _psm()
    ours = StandardSaliencyMetrics()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm = psm.Fmeasure(beta=0.3)
    sm, em, mae = psm.Smeasure(), psm.Emeasure(), psm.MAE()
    for soft, gt in _cases():
        p, g = to_uint8_map(soft), (gt * 255).astype(np.uint8)
        per = ours.step(p, g)
        for m in (fm, sm, em, mae):
            m.step(pred=p, gt=g)
        assert per["S_measure"] == pytest.approx(sm.sms[-1], abs=1e-12)
        assert per["MAE_soft"] == pytest.approx(mae.maes[-1], abs=1e-12)
    r = ours.results()["metrics"]
    f = fm.get_results()["fm"]
    e = em.get_results()["em"]
    assert r["maxF_beta2_0.3"] == pytest.approx(float(np.max(f["curve"])), abs=1e-12)
    assert r["meanF_beta2_0.3"] == pytest.approx(float(np.mean(f["curve"])), abs=1e-12)
    assert r["adpF_beta2_0.3"] == pytest.approx(float(f["adp"]), abs=1e-12)
    assert r["S_measure"] == pytest.approx(float(sm.get_results()["sm"]), abs=1e-12)
    assert r["maxE"] == pytest.approx(float(np.max(e["curve"])), abs=1e-12)
    assert r["meanE"] == pytest.approx(float(np.mean(e["curve"])), abs=1e-12)
    assert r["adpE"] == pytest.approx(float(e["adp"]), abs=1e-12)
    assert r["MAE"] == pytest.approx(float(mae.get_results()["mae"]), abs=1e-12)
    # a worse prediction scores lower
    assert 0 < r["maxF_beta2_0.3"] < 1 and 0 < r["MAE"] < 1


def test_perfect_prediction_scores_one():
    from found.evaluate.metrics import StandardSaliencyMetrics, authors_saliency_metrics, to_uint8_map

    _psm()
    gt = ellipse_mask(48, 64, 24, 30, 12, 20)
    std = StandardSaliencyMetrics()
    std.step(to_uint8_map(gt.astype(float)), (gt * 255).astype(np.uint8))
    r = std.results()["metrics"]
    assert r["maxF_beta2_0.3"] == pytest.approx(1.0, abs=1e-9)
    assert r["adpF_beta2_0.3"] == pytest.approx(1.0, abs=1e-9)
    assert r["S_measure"] == pytest.approx(1.0, abs=1e-9)
    # pysodmetrics divides by (N − 1 + eps) in the E-measure, so a perfect map scores a hair above 1
    assert r["maxE"] == pytest.approx(1.0, abs=1e-3)
    assert r["MAE"] == 0.0
    a = authors_saliency_metrics(gt.astype(np.float32), gt)
    assert a.iou == pytest.approx(1.0, abs=1e-6) and a.pixel_acc == 1.0 and a.mae == 0.0
    assert a.f_max == pytest.approx(1.0, abs=1e-6) and a.s_measure == pytest.approx(1.0, abs=1e-6)


def test_authors_beta_is_squared_twice():
    """Precision 1, recall 0.5: β² = 0.09 gives 1.09·0.5/(0.09+0.5); the usual β² = 0.3 would give 0.565."""
    from found.evaluate.metrics import authors_f_measure

    gt = np.zeros((10, 10), bool)
    gt[:, :4] = True
    pred = np.zeros((10, 10), np.float32)
    pred[:, :2] = 1
    assert authors_f_measure(pred, gt) == pytest.approx(1.09 * 0.5 / 0.59, abs=1e-6)
    assert abs(authors_f_measure(pred, gt) - 1.3 * 0.5 / 0.8) > 0.05
