"""The predictor: batching by size, tensor API, coarse mode, modes, validation."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from agreement import SOFT_ATOL, assert_same_prediction
from conftest import seeded_head, tiny_vit
from found import Found, FoundHead, discover_background
from found.model.preprocess import normalize, pad_to_multiple, to_chw_float


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


@pytest.fixture(scope="module")
def head() -> FoundHead:
    return seeded_head(96, seed=3)


def _mixed(photos) -> list[np.ndarray]:
    a, c, r = photos["astronaut"], photos["coffee"], photos["retina"]
    # 200x300 and 197x298 share the padded size 200x304 (one batch), the others do not
    return [a[:200, :300], c[:197, :298], r[:120, :77], a[40:240, 100:400], c[:64, :64]]


@pytest.mark.numerics
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_batching_changes_nothing_but_float_rounding(vit, head, photos, precision):
    """What ``Found.predict`` promises on any CPU: each image's soft mask in a batch (two of these
    share a padded size, so one batch holds both) is within SOFT_ATOL of its own one-image result,
    and masks, patch masks, boxes and scores are the same wherever no probability is a tie."""
    from found.model.backbone.quantize import int8_supported

    if precision == "int8" and not int8_supported():
        pytest.skip("this torch build has no quantized CPU engine")
    model = Found(vit, head, device="cpu", precision=precision)
    images = _mixed(photos)
    together = model.predict(images, batch_size=8)
    alone = [model.predict(im)[0] for im in images]
    for k, (im, a, b) in enumerate(zip(images, together, alone)):
        assert a.soft.shape == b.soft.shape == im.shape[:2]
        assert_same_prediction(a, b, f"{precision} image {k}", soft_atol=SOFT_ATOL)


@pytest.mark.numerics
def test_batched_features_equal_unbatched(vit, photos):
    model = Found(vit, None, device="cpu")
    crops = [photos["astronaut"][:160, :240], photos["coffee"][:160, :240], photos["retina"][:160, :240]]
    x = model.input_batch(crops)
    f = model.features(x)
    for i in range(len(crops)):
        g = model.features(x[i : i + 1])
        np.testing.assert_allclose(f.cls_attention[i].numpy(), g.cls_attention[0].numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(f.keys[i].numpy(), g.keys[0].numpy(), atol=1e-5, rtol=0)


def test_input_batch_pads_each_image_with_normalised_zeros(vit, photos):
    model = Found(vit, None, device="cpu")
    a, b = photos["coffee"][:197, :298], photos["astronaut"][:200, :300]
    x = model.input_batch([a, b])
    assert x.shape == (2, 3, 200, 304)
    for i, im in enumerate((a, b)):
        expected = pad_to_multiple(normalize(to_chw_float(im)), 8)[0]
        np.testing.assert_allclose(x[i].numpy(), expected.numpy(), atol=1e-6, rtol=0)
    assert torch.all(x[0, :, 197:, :] == 0) and torch.all(x[0, :, :, 298:] == 0)
    with pytest.raises(ValueError, match="one padded size"):
        model.input_batch([a, photos["retina"][:50, :50]])


def test_masks_tensor_api_matches_predict(vit, head, photos):
    model = Found(vit, head, device="cpu")
    im = photos["coffee"][:203, :277]
    soft, mask = model.masks(model.input_batch([im]), image_hw=im.shape[:2])
    pred = model.predict(im)[0]
    assert soft.shape == mask.shape == (1, 203, 277) and mask.dtype == torch.bool
    np.testing.assert_allclose(soft[0].numpy(), pred.soft, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(mask[0].numpy(), pred.mask)


def test_single_mode_keeps_one_component_of_the_multi_mask(vit, photos):
    # a head that reads one key channel gives a fragmented mask: several components in 'multi'
    h = FoundHead(96)
    with torch.no_grad():
        h.decoder.weight.zero_()
        h.decoder.weight[0, 5] = 1.0
        h.decoder.bias.zero_()
    model = Found(vit, h, device="cpu")
    im = photos["astronaut"]
    multi = model.predict(im, mode="multi")[0].mask
    single = model.predict(im, mode="single")[0].mask
    assert ndimage.label(multi)[1] >= 2, "precondition: the multi mask should have several components"
    labels, n = ndimage.label(single)
    assert n == 1
    assert np.all(multi[single]), "the kept component must come from the multi mask"
    assert single.sum() < multi.sum()


def test_coarse_mode_is_background_discovery_on_the_same_features(vit, photos):
    model = Found(vit, None, device="cpu")
    for im in (photos["coffee"][:181, :243], photos["retina"]):
        pred = model.predict(im)[0]
        f = model.features(model.input_batch([im]))
        objects = discover_background(f.cls_attention, f.keys, f.grid_hw).objects[0].numpy()
        np.testing.assert_array_equal(pred.patch_mask, objects)
        up = np.repeat(np.repeat(objects, 8, axis=0), 8, axis=1)[: im.shape[0], : im.shape[1]]
        np.testing.assert_array_equal(pred.mask, up)
        assert set(np.unique(pred.soft)) <= {0.0, 1.0}


def test_validation_errors(vit, head):
    with pytest.raises(ValueError, match="precision"):
        Found(vit, head, device="cpu", precision="fp64")
    with pytest.raises(ValueError, match="CPU only"):
        Found(vit, head, device="cuda", precision="int8")
    with pytest.raises(RuntimeError):
        Found(vit, head, device="no-such-device")
    model = Found(vit, head, device="cpu")
    im = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="mode"):
        model.predict(im, mode="several")
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(im, batch_size=0)
    with pytest.raises(TypeError):
        model.predict(np.zeros((32, 32, 3), np.float32))


def test_compile_is_ignored_with_a_warning_off_cuda(vit, head, photos):
    im = photos["coffee"][:96, :96]
    with pytest.warns(UserWarning, match="only used on CUDA"):
        model = Found(vit, head, device="cpu", compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eager = Found(vit, head, device="cpu")
    np.testing.assert_array_equal(model.predict(im)[0].soft, eager.predict(im)[0].soft)


@pytest.mark.gpu
def test_cuda_predict_matches_cpu(vit, head, photos):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    images = _mixed(photos)
    cpu = Found(vit, head, device="cpu").predict(images)
    gpu = Found(vit, head, device="cuda").predict(images)
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(a.soft, b.soft, atol=1e-4, rtol=0)
        assert (a.mask != b.mask).mean() < 1e-3


def test_cli_accepts_int8_on_cpu_only(monkeypatch):
    from found.cli import common
    from found.cli.main import build_parser
    from found.errors import FoundError

    args = build_parser().parse_args(["segment", "in.jpg", "-o", "out", "--precision", "int8", "--device", "cpu"])
    assert args.precision == "int8"
    common.check_model_args(args)  # fine on the CPU
    monkeypatch.setattr("found.runtime.device.default_device", lambda: torch.device("cuda"))
    args.device = None  # default device: a GPU here
    with pytest.raises(FoundError, match="CPU only"):
        common.check_model_args(args)


def test_wrapping_a_head_in_found_leaves_it_trainable():
    from found import Found, FoundHead, VisionTransformer

    head = FoundHead(32)
    Found(VisionTransformer(patch_size=8, embed_dim=32, depth=1, num_heads=2), head, device="cpu")
    assert all(p.requires_grad for p in head.parameters())


@pytest.mark.parametrize("mode", ["multi", "single"])
def test_refine_applies_the_solver_to_the_binary_mask_and_keeps_it_only_if_accepted(vit, head, photos, mode):
    from found.model.masks import single_component
    from found.refine import refine_masks

    images = [photos["coffee"][:96, :128], photos["astronaut"][:80, :80]]
    model = Found(vit, head, device="cpu")
    plain = model.predict(images, mode="multi")
    refined = model.predict(images, mode=mode, refine=True)
    expected = refine_masks(images, [p.soft > 0.5 for p in plain], keep="single" if mode == "single" else "all")
    for p, r, e in zip(plain, refined, expected):
        assert r.refined == bool(e.accepted)
        if e.accepted:
            assert np.array_equal(r.mask, e.binary)
        else:
            assert np.array_equal(r.mask, p.mask if mode == "multi" else single_component(p.mask))
        assert np.array_equal(r.soft, p.soft) and np.array_equal(r.box, p.box)
