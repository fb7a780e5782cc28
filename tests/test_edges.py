"""found.model.edges: guided upsampling of a blocky soft mask beats bilinear on a sharp disc; shapes, dtypes,
ranges, constants, equal sizes, bad shapes; strips change nothing; the area reduction is exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from found.model.edges import area_reduce, bilinear_upsample, guided_upsample

H, W, FACTOR, PATCH = 600, 800, 4, 8  # full size, reduction to the working size, model patch


def disc_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 [H, W, 3], true mask [H, W], FOUND-like soft mask [H/4, W/4]) of a noisy sharp disc.

    The soft mask is the true mask at the working size averaged on the 8-px patch grid and scaled
    back ×8 bilinearly: blocky, as the model's patch-level output is.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    cy, cx, r = rng.uniform(250, 350), rng.uniform(350, 450), rng.uniform(150, 200)
    gt = (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 < r ** 2
    img = np.where(gt[..., None], np.array([200, 70, 60]), np.array([50, 100, 170])) + rng.normal(0, 8, (H, W, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    h, w = H // FACTOR, W // FACTOR
    small = gt.reshape(h, FACTOR, w, FACTOR).mean((1, 3)) >= 0.5
    ph, pw = -(-h // PATCH), -(-w // PATCH)
    patches = np.pad(small, ((0, ph * PATCH - h), (0, pw * PATCH - w))).reshape(ph, PATCH, pw, PATCH).mean((1, 3))
    up = Image.fromarray(patches.astype(np.float32), mode="F").resize((pw * PATCH, ph * PATCH), Image.Resampling.BILINEAR)
    return img, gt, np.asarray(up, dtype=np.float32)[:h, :w].copy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def boundary_f(pred: np.ndarray, gt: np.ndarray, tol: float) -> float:
    """F-measure of the boundary pixels of ``pred`` and ``gt`` within ``tol`` px of each other."""
    bp, bg = pred & ~ndimage.binary_erosion(pred), gt & ~ndimage.binary_erosion(gt)
    precision = (ndimage.distance_transform_edt(~bg)[bp] <= tol).mean()
    recall = (ndimage.distance_transform_edt(~bp)[bg] <= tol).mean()
    return float(2 * precision * recall / (precision + recall))


@pytest.fixture(scope="module")
def disc():
    return disc_case()


def test_guided_beats_bilinear_on_a_sharp_disc(disc):
    img, gt, soft = disc
    bil = bilinear_upsample(soft, (W, H)) > 0.5
    gui = guided_upsample(soft, img) > 0.5
    tol = 0.002 * np.hypot(H, W)  # 2 px: the blocks of the bilinear contour are several pixels off
    assert iou(bil, gt) < 0.99 and iou(gui, gt) > 0.995
    assert boundary_f(gui, gt, tol) > boundary_f(bil, gt, tol) + 0.1
    assert boundary_f(gui, gt, tol) > 0.95


def test_output_shape_dtype_range(disc):
    img, _, soft = disc
    out = guided_upsample(soft, img)
    assert out.shape == (H, W) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 and np.isfinite(out).all()
    u8 = guided_upsample(soft, img, out_dtype=np.uint8)
    assert u8.shape == (H, W) and u8.dtype == np.uint8
    assert np.abs(u8 / 255.0 - out).max() <= 0.5 / 255 + 1e-6
    rgba = np.concatenate([img, np.full((H, W, 1), 7, np.uint8)], axis=2)  # alpha ignored
    np.testing.assert_array_equal(guided_upsample(soft, rgba), out)
    big = bilinear_upsample(soft, (W, H))
    assert big.shape == (H, W) and big.dtype == np.float32 and big.min() >= 0 and big.max() <= 1


@pytest.mark.parametrize("value", [0.0, 0.37, 1.0])
def test_constant_mask_stays_constant(disc, value):
    img, _, soft = disc
    out = guided_upsample(np.full_like(soft, value), img)
    assert np.abs(out - value).max() < 1e-5


def test_equal_sizes_return_the_mask_unfiltered(disc):
    img, _, soft = disc
    h, w = soft.shape
    guide = np.ascontiguousarray(img[:h, :w])
    out = guided_upsample(soft, guide)
    assert out is not soft and out.dtype == np.float32
    np.testing.assert_array_equal(out, soft)
    np.testing.assert_array_equal(guided_upsample(soft * 2 - 0.5, guide), np.clip(soft * 2 - 0.5, 0, 1))


def test_tiny_and_rounded_sizes():
    rng = np.random.default_rng(1)
    guide = rng.integers(0, 256, (9, 14, 3), dtype=np.uint8)
    out = guided_upsample(rng.random((2, 3)).astype(np.float32), guide, radius=50)
    assert out.shape == (9, 14) and 0 <= out.min() <= out.max() <= 1
    assert np.abs(guided_upsample(np.full((1, 1), 0.6, np.float32), guide[:5, :5]) - 0.6).max() < 1e-5
    # sizes rounded as the engine's reduction rounds them (3999x3001 → 400x300) are accepted
    assert guided_upsample(np.zeros((30, 40), np.float32), np.zeros((301, 399, 3), np.uint8)).shape == (301, 399)


@pytest.mark.parametrize("soft_shape, guide_shape", [
    ((150, 200), (800, 600, 3)),  # transposed guide
    ((150, 200), (600, 1000, 3)),  # another aspect ratio
    ((150, 200), (100, 150, 3)),  # smaller than the mask
    ((150, 200), (600, 800)),  # no colour axis
    ((150, 200), (600, 800, 2)),
    ((150,), (600, 800, 3)),
])
def test_bad_shapes_raise(soft_shape, guide_shape):
    with pytest.raises(ValueError):
        guided_upsample(np.zeros(soft_shape, np.float32), np.zeros(guide_shape, np.uint8))


def test_bad_arguments_raise(disc):
    img, _, soft = disc
    with pytest.raises(ValueError):
        guided_upsample(soft, img.astype(np.float32))
    with pytest.raises(ValueError):
        guided_upsample((soft * 255).astype(np.uint8), img)
    for kwargs in ({"radius": -1}, {"eps": 0.0}, {"strip": 0}, {"out_dtype": np.float64}):
        with pytest.raises(ValueError):
            guided_upsample(soft, img, **kwargs)


def test_strips_give_the_result_of_one_strip(disc):
    img, _, soft = disc
    one = guided_upsample(soft, img, strip=H)
    for strip in (1, 7, 64, 333):
        assert np.abs(guided_upsample(soft, img, strip=strip) - one).max() <= 1e-6
    np.testing.assert_array_equal(guided_upsample(soft, img, strip=13, out_dtype=np.uint8),
                                  guided_upsample(soft, img, strip=H, out_dtype=np.uint8))


def test_area_reduce_is_exact():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (60, 80, 4), dtype=np.uint8)
    np.testing.assert_allclose(area_reduce(img, (6, 8)), img[..., :3].reshape(6, 10, 8, 10, 3).mean((1, 3)), atol=1e-9)
    # a non-integer ratio: pixels doubled then reduced to the same grid give the same averages
    twice = np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)
    np.testing.assert_allclose(area_reduce(twice, (23, 31)), area_reduce(img, (23, 31)), atol=1e-4)
    assert torch.from_numpy(area_reduce(img, (60, 80))).allclose(torch.from_numpy(img[..., :3].astype(np.float64)))
