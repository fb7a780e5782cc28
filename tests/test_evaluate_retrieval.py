"""``found evaluate retrieval``: MaskContrast's VOC12 retrieval protocol with FOUND masks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import found.evaluate.retrieval as retrieval
from found.cli.main import main
from found.errors import FoundError
from found.evaluate.datasets import VOC_CLASSES
from found.evaluate.retrieval import (
    KEPT_7,
    SemsegMeter,
    bilinear_adjoint,
    ignore_classes,
    majority_class,
    mean_iou,
    object_weights,
    pooled_prototypes,
    refine_binary,
    resize_image_bicubic,
    resize_label_nearest,
    split_objects,
)
from found.refine import mask_iou
from conftest import require
from test_evaluate_common import ellipse_mask, synthetic_image, write_tiny_model

CAT, DOG, PERSON = VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")


@pytest.fixture(autouse=True)
def _one_thread():
    """The bilateral solver and the tiny model are much faster single-threaded on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
    got = pooled_prototypes(feats, grid, (soft * (soft > 0.5))[None], 8)[0]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # the adjoint itself: <B f, w> = <f, Bᵀ w>
    f1 = torch.randn(grid, generator=g, dtype=torch.float64)
    lhs = (F.interpolate(f1[None, None], scale_factor=8, mode="bilinear", align_corners=False)[0, 0, : hw[0], : hw[1]] * w).sum()
    assert float(lhs) == pytest.approx(float((f1 * bilinear_adjoint(w, grid, 8)).sum()), rel=1e-10)
    assert pooled_prototypes(feats, grid, torch.zeros(1, *hw), 8).abs().sum() == 0  # nothing salient


@pytest.mark.parametrize("pooling", ["mean", "soft"])
def test_object_prototypes_equal_explicit_pooling(pooling):
    """Both poolings, several objects at once, through the adjoint = the explicit upsampled sum."""
    g = torch.Generator().manual_seed(2)
    grid, hw = (8, 6), (61, 45)
    feats = torch.randn(grid[0] * grid[1], 5, generator=g)
    soft = torch.rand(hw, generator=g)
    objs = [np.zeros(hw, bool), np.zeros(hw, bool)]
    objs[0][5:20, 3:30] = True
    objs[1][40:58, 10:44] = True
    up = F.interpolate(feats.T.reshape(1, 5, *grid).double(), scale_factor=8, mode="bilinear", align_corners=False)[0, :, : hw[0], : hw[1]]
    want = []
    for o in objs:
        o_t = torch.from_numpy(o)
        v = up[:, o_t].mean(1) if pooling == "mean" else (up[:, o_t] * soft[o_t].double()).sum(1)
        want.append(F.normalize(v, dim=0).float())
    got = pooled_prototypes(feats, grid, object_weights(objs, soft, pooling), 8)
    torch.testing.assert_close(got, torch.stack(want), atol=1e-6, rtol=0)
    assert pooled_prototypes(feats, grid, object_weights([], soft, pooling), 8).shape == (0, 5)


def test_mean_and_soft_pooling_on_a_hand_made_case():
    """patch = 1 (no upsampling): features e₁ on the left pixel, e₂ on the right one, one object covering
    both with saliency 0.9 / 0.6: mean → (1, 1)/√2 whatever s, soft → (0.9, 0.6)/‖·‖."""
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    soft = torch.tensor([[0.9, 0.6]])
    obj = [np.ones((1, 2), bool)]
    mean = pooled_prototypes(feats, (1, 2), object_weights(obj, soft, "mean"), 1)[0]
    soft_p = pooled_prototypes(feats, (1, 2), object_weights(obj, soft, "soft"), 1)[0]
    torch.testing.assert_close(mean, torch.tensor([1.0, 1.0]) / 2**0.5)
    torch.testing.assert_close(soft_p, torch.tensor([0.9, 0.6]) / (0.9**2 + 0.6**2) ** 0.5)
    # the saliency does not move the mean prototype
    torch.testing.assert_close(pooled_prototypes(feats, (1, 2), object_weights(obj, torch.tensor([[0.51, 1.0]]), "mean"), 1)[0], mean)
    # and the two poolings can retrieve different neighbours: bank (1, 0) and (1, 1)/√2
    bank = torch.tensor([[1.0, 0.0], [2**-0.5, 2**-0.5]])
    soft2 = torch.tensor([[1.0, 0.1]])
    assert int(torch.argmax(bank @ pooled_prototypes(feats, (1, 2), object_weights(obj, soft2, "mean"), 1)[0])) == 1
    assert int(torch.argmax(bank @ pooled_prototypes(feats, (1, 2), object_weights(obj, soft2, "soft"), 1)[0])) == 0
    with pytest.raises(FoundError, match="pooling"):
        object_weights(obj, soft, "max")


def test_soft_pooling_of_the_whole_mask_is_maskcontrasts_prototype():
    """MaskContrast's prototype: L2-normalised Σ_x up(features)(x)·s(x)·[s(x) > 0.5]."""
    g = torch.Generator().manual_seed(3)
    feats, soft = torch.randn(48, 7, generator=g), torch.rand(61, 45, generator=g)
    objs = split_objects((soft > 0.5).numpy(), "single")
    up = F.interpolate(feats.T.reshape(1, 7, 8, 6).double(), scale_factor=8, mode="bilinear", align_corners=False)[0, :, :61, :45]
    want = F.normalize((up * (soft * (soft > 0.5)).double()).sum((1, 2)), dim=0).float()
    torch.testing.assert_close(pooled_prototypes(feats, (8, 6), object_weights(objs, soft, "soft"), 8)[0], want, atol=1e-6, rtol=0)


def test_split_objects_multi_components_and_small_ones_discarded():
    m = np.zeros((100, 100), bool)  # 1 % of the image = 100 pixels
    m[2:22, 2:22] = True  # 400 px: kept
    m[40:50, 5:15] = True  # exactly 100 px: kept (only *smaller* than 1 % is discarded)
    m[70:79, 5:16] = True  # 99 px: discarded
    m[60:72, 60:72] = True  # two 144-px squares touching by a corner only: two objects (4-connectivity)
    m[72:84, 72:84] = True
    m[5, 90] = True  # a single pixel: discarded
    objs = split_objects(m, "multi")
    assert [int(o.sum()) for o in objs] == [400, 100, 144, 144]  # raster (label) order
    assert objs[0][2:22, 2:22].all() and objs[1][40:50, 5:15].all()
    assert objs[2][60:72, 60:72].all() and objs[3][72:84, 72:84].all()
    assert not any(o[70:79, 5:16].any() or o[5, 90] for o in objs)
    assert not (objs[0] & objs[1]).any()
    single = split_objects(m, "single")
    assert len(single) == 1 and (single[0] == m).all()  # single: the whole mask, small parts included
    assert split_objects(np.zeros((4, 4), bool), "multi") == [] and split_objects(np.zeros((4, 4), bool), "single") == []
    assert len(split_objects(m, "multi", min_fraction=0.0)) == 6
    with pytest.raises(FoundError, match="objects"):
        split_objects(m, "many")


def _blocky(m: np.ndarray, p: int = 8) -> np.ndarray:
    """A patch-level version of a mask (a patch is in iff its centre pixel is), as a coarse prediction."""
    return np.kron(m[p // 2 :: p, p // 2 :: p], np.ones((p, p), bool))[: m.shape[0], : m.shape[1]]


def test_refine_follows_the_iou_rule():
    ell = ellipse_mask(64, 64, 30, 30, 20, 22)
    img = synthetic_image(ell, 3)
    coarse = _blocky(ell)
    # accepted: the solver snaps the blocky mask to the ellipse
    m, accepted = refine_binary(img, coarse, "single")
    assert accepted and (m != coarse).any() and mask_iou(m, ell) > 0.98 > mask_iou(coarse, ell)
    # a full mask: the solver's "single" component is the background → empty → IoU 0 → rejected, input kept
    full = np.ones((64, 64), bool)
    m, accepted = refine_binary(img, full, "single")
    assert not accepted and m.all()
    # three equal blobs: "all" keeps the three (accepted); "single" keeps one, IoU ≈ 1/3 → rejected, input kept
    three = ellipse_mask(64, 64, 16, 16, 10, 10) | ellipse_mask(64, 64, 16, 48, 10, 10) | ellipse_mask(64, 64, 48, 32, 10, 10)
    img3, coarse3 = synthetic_image(three, 5), _blocky(three)
    m, accepted = refine_binary(img3, coarse3, "multi")
    assert accepted and (m != coarse3).any() and len(split_objects(m, "multi")) == 3 and mask_iou(m, three) > 0.95
    m, accepted = refine_binary(img3, coarse3, "single")
    assert not accepted and (m == coarse3).all() and len(split_objects(m, "multi")) == 3


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
    cv2 = require("cv2", "eval")  # OpenCV comes with pysodmetrics
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


# ---------------------------------------------------------------------------- the paper's three setups, end to end
def _obj(lab: np.ndarray) -> np.ndarray:
    return (lab != 0) & (lab != 255)


def write_voc_multi(root: Path) -> dict[str, np.ndarray]:
    """Train/val twins (identical JPEG bytes) of two 64×64 scenes: A = a cat (left), a larger person
    (right) and a 5×5 dog (25 px < 1 % of the image); B = a dog. Returns the labels by scene."""
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    cat, person = ellipse_mask(64, 64, 32, 16, 13, 9), ellipse_mask(64, 64, 34, 45, 20, 13)
    blob = np.zeros((64, 64), bool)
    blob[3:8, 28:33] = True
    lab_a = np.zeros((64, 64), np.uint8)
    lab_a[cat], lab_a[person], lab_a[blob] = CAT, PERSON, DOG
    dog = ellipse_mask(64, 64, 30, 30, 14, 20)
    lab_b = np.where(dog, DOG, 0).astype(np.uint8)
    labels = {"A": lab_a, "B": lab_b}
    for k, (scene, lab) in enumerate(labels.items()):
        lab[:, :2] = 255  # an ignored border
        img = synthetic_image(_obj(lab), 20 + k)
        for name in (f"2008_00000{k + 1}", f"2009_00000{k + 1}"):
            Image.fromarray(img).save(base / "JPEGImages" / f"{name}.jpg", quality=100, subsampling=0)
            _palette_png(base / "SegmentationClass" / f"{name}.png", lab)
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("2008_000001\n2008_000002\n")
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2009_000001\n2009_000002\n")
    return labels


def oracle_forward(model, image, features="keys"):
    """Stand-in for FOUND's forward: saliency from the synthetic image's brightness (objects are
    bright: s ∈ (0.5, 1), background 0.1) and one-hot patch features (distinct places → distinct
    prototypes, so a val object's nearest train object is its twin)."""
    bright = torch.from_numpy(image.astype(np.float64).mean(-1) / 255)
    soft = torch.where(bright > 0.47, 0.3 + 0.7 * bright, torch.full_like(bright, 0.1)).float()
    h, w = image.shape[0] // 8, image.shape[1] // 8
    return soft, torch.eye(h * w), (h, w)


def _run(tmp_path, monkeypatch, *extra):
    labels = write_voc_multi(tmp_path)
    monkeypatch.setattr(retrieval, "forward_saliency_and_features", oracle_forward)
    out = tmp_path / "out"
    rc = main(["evaluate", "retrieval", "--data-dir", str(tmp_path / "VOCdevkit"), "--size", "64",
               "--output-dir", str(out), *extra, *write_tiny_model(tmp_path / "m", bias=10.0)])
    assert rc == 0
    return labels, json.loads((out / "results.json").read_text())


def test_cli_single_saliency_mask(tmp_path, monkeypatch):
    """Table 3 row 'single saliency mask': scene A is one object, labelled person (its majority)."""
    labels, res = _run(tmp_path, monkeypatch)
    a, b = labels["A"], labels["B"]
    assert (res["objects"], res["pooling"], res["refine"]) == ("single", "mean", False)
    assert res["n_train_objects"] == 2 and res["n_val_objects"] == 2 and res["memory_bank_size"] == {"21": 2, "7": 1}
    iou = res["per_class_iou"]["21"]
    assert iou["cat"] == 0.0
    assert iou["person"] == pytest.approx(np.sum(a == PERSON) / np.sum(_obj(a)))  # cat and dog pixels of A → person
    assert iou["dog"] == pytest.approx(np.sum(b == DOG) / (np.sum(b == DOG) + np.sum(a == DOG)))
    assert iou["background"] == 1.0


def test_cli_multiple_saliency_masks(tmp_path, monkeypatch):
    """Table 3 row 'multiple saliency masks': cat and person are separate objects, the 25-px dog is discarded."""
    labels, res = _run(tmp_path, monkeypatch, "--objects", "multi")
    a, b = labels["A"], labels["B"]
    assert res["objects"] == "multi" and res["min_object_fraction"] == 0.01 and res["connectivity"] == 4
    assert res["n_train_objects"] == 3 and res["n_val_objects"] == 3
    assert res["memory_bank_size"] == {"21": 3, "7": 2}  # 7 classes: the dog object is all-ignored
    iou = res["per_class_iou"]["21"]
    assert iou["cat"] == 1.0 and iou["person"] == 1.0
    n_blob = np.sum(a == DOG)
    assert iou["dog"] == pytest.approx(np.sum(b == DOG) / (np.sum(b == DOG) + n_blob))  # the blob is background
    n_bg = np.sum(a == 0) + np.sum(b == 0)
    assert iou["background"] == pytest.approx(n_bg / (n_bg + n_blob))
    assert res["per_class_iou"]["7"]["cat"] == 1.0 and res["per_class_iou"]["7"]["person"] == 1.0


def test_cli_single_mask_with_bilateral_solver(tmp_path, monkeypatch):
    """Table 3 row '+ bilateral solver': keep="single" retains A's largest component (the person,
    IoU with the mask > 0.5 → accepted), so A's cat becomes background instead of person."""
    labels, res = _run(tmp_path, monkeypatch, "--refine")
    a = labels["A"]
    assert res["refine"] is True and res["refine_keep"] == "single" and res["refine_iou_threshold"] == 0.5
    assert res["n_refined_train_images"] == 2 and res["n_refined_val_images"] == 2
    iou = res["per_class_iou"]["21"]
    assert iou["cat"] == 0.0
    assert iou["person"] > 0.9 > np.sum(a == PERSON) / np.sum(_obj(a))  # better than without the solver
    assert iou["background"] < 1.0  # the cat's pixels are now predicted background


def test_cli_soft_pooling_and_multi_refine_are_recorded(tmp_path, monkeypatch, capsys):
    labels, res = _run(tmp_path, monkeypatch, "--objects", "multi", "--refine", "--pooling", "soft", "--classes", "21")
    assert (res["objects"], res["pooling"], res["refine"], res["refine_keep"]) == ("multi", "soft", True, "all")
    assert res["n_val_objects"] == 3 and list(res["miou"]) == ["21"]
    assert res["per_class_iou"]["21"]["cat"] > 0.9 and res["per_class_iou"]["21"]["person"] > 0.9
    out = capsys.readouterr().out
    assert "objects multi, bilateral solver, soft pooling" in out and "bilateral solver accepted on" in out
