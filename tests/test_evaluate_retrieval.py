"""``found evaluate retrieval``: MaskContrast's VOC12 retrieval protocol with FOUND masks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from found.cli.main import main
from found.evaluate.datasets import VOC_CLASSES
from found.evaluate.retrieval import (
    KEPT_7,
    SemsegMeter,
    bilinear_adjoint,
    ignore_classes,
    majority_class,
    mean_iou,
    resize_image_bicubic,
    resize_label_nearest,
    salient_prototype,
)
from test_evaluate_common import ellipse_mask, synthetic_image, write_tiny_model

CAT, DOG, PERSON = VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")


def test_seven_classes_are_maskcontrasts():
    assert KEPT_7 == ("aeroplane", "bottle", "bus", "car", "cat", "cow", "person")
    lab = np.array([[0, CAT, DOG, 255, PERSON]], dtype=np.uint8)
    np.testing.assert_array_equal(ignore_classes(lab, "7"), [[0, CAT, 255, 255, PERSON]])
    np.testing.assert_array_equal(ignore_classes(lab, "21"), lab)


@pytest.mark.parametrize("hw,grid", [((64, 48), (8, 6)), ((61, 45), (8, 6))])
def test_prototype_equals_pooling_upsampled_features(hw, grid):
    """Σ_x bilinear-upsampled feature · s·[s>0.5], computed through the adjoint, equals the explicit sum."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(grid[0] * grid[1], 5, generator=g)
    soft = torch.rand(hw, generator=g)
    fmap = feats.T.reshape(1, 5, *grid)
    up = F.interpolate(fmap.double(), scale_factor=8, mode="bilinear", align_corners=False)[0, :, : hw[0], : hw[1]]
    w = (soft * (soft > 0.5)).double()
    want = F.normalize((up * w).sum((1, 2)), dim=0).float()
    got = salient_prototype(feats, grid, soft, 8)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # the adjoint itself: <B f, w> = <f, Bᵀ w>
    f1 = torch.randn(grid, generator=g, dtype=torch.float64)
    lhs = (F.interpolate(f1[None, None], scale_factor=8, mode="bilinear", align_corners=False)[0, 0, : hw[0], : hw[1]] * w).sum()
    assert float(lhs) == pytest.approx(float((f1 * bilinear_adjoint(w, grid, 8)).sum()), rel=1e-10)
    assert salient_prototype(feats, grid, torch.zeros(hw), 8).abs().sum() == 0  # nothing salient


def test_majority_vote():
    lab = np.array([[0, 0, 0, CAT, CAT, DOG, DOG, 255, 255, 255]], dtype=np.uint8)
    sal = np.ones_like(lab, dtype=bool)
    assert majority_class(lab, sal) == DOG  # tie 2–2 → larger class index, 0/255 never win
    sal[0, 5] = False
    assert majority_class(lab, sal) == CAT
    assert majority_class(lab, np.zeros_like(sal)) is None
    assert majority_class(np.array([[0, 255]], np.uint8), np.ones((1, 2), bool)) is None


def test_semseg_meter_matches_per_class_loop():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 21, (40, 50)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = rng.integers(0, 21, gt.shape)
    m = SemsegMeter(21)
    m.update(pred, gt)
    valid = gt != 255
    for c in range(21):
        tp = np.sum((gt == c) & (pred == c) & valid)
        fp = np.sum((gt != c) & (pred == c) & valid)
        fn = np.sum((gt == c) & (pred != c) & valid)
        assert (m.tp[c], m.fp[c], m.fn[c]) == (tp, fp, fn)
    jac = m.jaccards()
    assert mean_iou(jac, "21") == pytest.approx(jac.mean())
    assert mean_iou(jac, "7") == pytest.approx(np.mean([jac[VOC_CLASSES.index(c)] for c in KEPT_7]))


def test_resizing_follows_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (75, 100, 3)).astype(np.uint8)
    lab = rng.integers(0, 21, (75, 100)).astype(np.uint8)
    np.testing.assert_array_equal(resize_label_nearest(lab, (64, 64)), cv2.resize(lab, (64, 64), interpolation=cv2.INTER_NEAREST))
    diff = np.abs(resize_image_bicubic(img, 64).astype(int) - cv2.resize(img, (64, 64), interpolation=cv2.INTER_CUBIC))
    assert diff.max() <= 1  # fixed-point rounding of OpenCV only
    np.testing.assert_array_equal(resize_image_bicubic(img[:64, :64], 64), img[:64, :64])  # same size: identity


# ---------------------------------------------------------------------------- end to end
def _palette_png(path: Path, lab: np.ndarray) -> None:
    im = Image.fromarray(lab, mode="P")
    im.putpalette([v for i in range(256) for v in (i, (37 * i) % 256, (91 * i) % 256)])
    im.save(path)


def write_voc_seg(root: Path) -> tuple[dict, dict]:
    """Two 64×64 scenes (a cat, a dog); val repeats the train photos so the nearest neighbour is known."""
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    scenes = {}
    for k, (cls, ell) in enumerate(((CAT, (30, 30, 20, 22)), (DOG, (34, 28, 14, 24)))):
        m = ellipse_mask(64, 64, *ell)
        lab = np.where(m, cls, 0).astype(np.uint8)
        lab[:, :2] = 255  # an ignored border
        scenes[cls] = (synthetic_image(m, 10 + k), lab)
    train = {"2008_000001": CAT, "2008_000002": DOG}
    val = {"2009_000001": CAT, "2009_000002": DOG}
    for name, cls in {**train, **val}.items():
        img, lab = scenes[cls]
        Image.fromarray(img).save(base / "JPEGImages" / f"{name}.jpg", quality=100, subsampling=0)
        _palette_png(base / "SegmentationClass" / f"{name}.png", lab)
    # identical JPEG bytes for train/val twins: copy the train files onto the val names
    for tn, vn in zip(train, val):
        (base / "JPEGImages" / f"{vn}.jpg").write_bytes((base / "JPEGImages" / f"{tn}.jpg").read_bytes())
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{n}\n" for n in train))
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{n}\n" for n in val))
    return scenes, val


def test_retrieval_end_to_end_known_answer(tmp_path):
    scenes, _ = write_voc_seg(tmp_path)
    out = tmp_path / "out"
    rc = main(["evaluate", "retrieval", "--data-dir", str(tmp_path / "VOCdevkit"), "--size", "64",
               "--output-dir", str(out), *write_tiny_model(tmp_path / "m", bias=10.0)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    cat_lab, dog_lab = scenes[CAT][1], scenes[DOG][1]
    n_cat, n_dog = np.sum(cat_lab == CAT), np.sum(dog_lab == DOG)
    valid_cat, valid_dog = np.sum(cat_lab != 255), np.sum(dog_lab != 255)
    # 21 classes: every pixel salient; val twins retrieve their own train image → whole image = its class
    assert res["memory_bank_size"] == {"21": 2, "7": 1}
    assert res["per_class_iou"]["21"]["cat"] == pytest.approx(n_cat / valid_cat)
    assert res["per_class_iou"]["21"]["dog"] == pytest.approx(n_dog / valid_dog)
    assert res["per_class_iou"]["21"]["background"] == 0.0
    assert res["miou"]["21"] == pytest.approx((n_cat / valid_cat + n_dog / valid_dog) / 21)
    # 7 classes: dog is ignored (→ 255): the bank holds only the cat; dog image's background becomes cat FP
    n_bg_dog = np.sum(dog_lab == 0)
    j_cat7 = n_cat / (valid_cat + n_bg_dog)
    assert res["per_class_iou"]["7"]["cat"] == pytest.approx(j_cat7)
    assert set(res["per_class_iou"]["7"]) == set(KEPT_7)
    assert res["miou"]["7"] == pytest.approx(j_cat7 / 7)


def test_retrieval_tokens_features_and_limits(tmp_path, capsys):
    scenes, _ = write_voc_seg(tmp_path)
    out = tmp_path / "out"
    rc = main(["evaluate", "retrieval", "--data-dir", str(tmp_path / "VOCdevkit"), "--size", "64", "--classes", "21",
               "--features", "tokens", "--limit", "1", "--output-dir", str(out), *write_tiny_model(tmp_path / "m", bias=10.0)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["n_val_images"] == 1 and res["n_train_images"] == 1 and list(res["miou"]) == ["21"]
    assert res["features"] == "tokens" and any("--limit" in n for n in res["notes"])
    lab = scenes[CAT][1]
    assert res["per_class_iou"]["21"]["cat"] == pytest.approx(np.sum(lab == CAT) / np.sum(lab != 255))
    assert "21 classes: mIoU" in capsys.readouterr().out


def test_retrieval_random_head_is_deterministic(tmp_path):
    write_voc_seg(tmp_path)
    model_args = write_tiny_model(tmp_path / "m")
    runs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        rc = main(["evaluate", "retrieval", "--data-dir", str(tmp_path / "VOCdevkit"), "--size", "64",
                   "--output-dir", str(out), *model_args])
        runs.append((rc, (out / "results.json").read_text() if rc == 0 else None))
    assert runs[0] == runs[1]


def test_retrieval_empty_bank_is_a_user_error(tmp_path, capsys):
    write_voc_seg(tmp_path)
    rc = main(["evaluate", "retrieval", "--data-dir", str(tmp_path / "VOCdevkit"), "--size", "64",
               "--output-dir", str(tmp_path / "o"), *write_tiny_model(tmp_path / "m", bias=-10.0)])
    err = capsys.readouterr().err
    assert rc != 0 and "empty memory bank" in err and len(err.strip().splitlines()) == 1
