"""The DINOv2 backbone (with and without registers) reproduces the official code on every case file."""
import numpy as np
import pytest
import torch

from dinov2_support import build_model, case_file_params, cases, load_cases, model_state
from found.hub import weights as hub
from found.model.backbone import cpu
from found.runtime.eager import eager_found_features
from found.hub.build import build_vit
from found.model.preprocess import normalize, pad_to_multiple, to_chw_float

pytestmark = pytest.mark.parity

FILES = case_file_params()
IDS = [getattr(f, "stem", "none") for f in FILES]


@pytest.fixture(scope="module", params=FILES, ids=IDS)
def fixture(request):
    d = load_cases(request.param)
    return d, build_model(d), cases(d)


def _features_fn(path: str, vit):
    """The backbone call of each path: the model's own, DINO's eager reference path, the oneDNN CPU path."""
    if path == "model":
        return vit.found_features
    if path == "eager":
        return lambda x: eager_found_features(vit, x)
    if not cpu.available():
        pytest.skip("no oneDNN linear op in this torch build (the eager path is used)")
    return cpu.CpuBackbone(vit, torch.float32).found_features


@pytest.mark.parametrize("path", ["model", "eager", "cpu"])
def test_found_features_match_official_attention_and_keys(fixture, path):
    d, vit, cs = fixture
    features = _features_fn(path, vit)
    for c in cs:
        with torch.inference_mode():
            f = features(torch.from_numpy(c["x"]))
        assert tuple(f.grid_hw) == tuple(int(v) for v in c["grid_hw"]), c["name"]
        np.testing.assert_allclose(f.cls_attention[0].numpy(), c["cls_attention"], atol=1e-5, rtol=0, err_msg=c["name"])
        np.testing.assert_allclose(f.keys[0].numpy(), c["keys"], atol=5e-5, rtol=0, err_msg=c["name"])


def test_all_tokens_match_official_forward_in_cls_register_patch_order(fixture):
    d, vit, cs = fixture
    for c in cs:
        with torch.inference_mode():
            tokens = vit.forward_tokens(torch.from_numpy(c["x"]))[0]
        assert tokens.shape[0] == c["last_tokens"].shape[0]
        np.testing.assert_allclose(tokens.numpy(), c["last_tokens"], atol=5e-5, rtol=0, err_msg=c["name"])


def test_registers_take_part_in_attention_but_are_not_patches(fixture):
    d, vit, cs = fixture
    r = vit.num_register_tokens
    for c in cs:
        total = c["cls_self_attention"] + c["cls_attention"].sum(1)
        if r:
            assert c["cls_register_attention"].shape[1] == r
            total = total + c["cls_register_attention"].sum(1)
        np.testing.assert_allclose(total, 1.0, atol=1e-5)
        with torch.inference_mode():
            f = vit.found_features(torch.from_numpy(c["x"]))
        assert f.keys.shape[1] == int(np.prod(c["grid_hw"]))  # patches only
        # the patch attention sums to less than one exactly by the CLS and register mass
        np.testing.assert_allclose(1 - f.cls_attention[0].sum(-1).numpy(),
                                   c["cls_self_attention"] + (c["cls_register_attention"].sum(1) if r else 0), atol=1e-5)


def test_pos_embed_interpolation_matches_official_hub_setting(fixture):
    d, vit, cs = fixture
    for c in cs:
        h, w = (int(v) for v in c["grid_hw"])
        with torch.inference_mode():
            pos = vit.interpolate_pos_encoding(h, w).detach()
        np.testing.assert_allclose(pos.numpy(), c["pos_embed_interp"], atol=1e-5, rtol=0, err_msg=c["name"])


def test_preprocessing_pads_to_fourteen_with_zeros(fixture):
    d, vit, cs = fixture
    for c in cs:
        rebuilt = pad_to_multiple(normalize(to_chw_float(c["image_u8"])), 14)
        assert rebuilt.shape == c["x"].shape
        np.testing.assert_allclose(rebuilt.numpy(), c["x"], atol=1e-6, rtol=0, err_msg=c["name"])


def test_architecture_is_recognised_from_checkpoint_keys(fixture):
    d, vit, cs = fixture
    state = model_state(d)
    arch = hub.infer_arch(state, num_heads=vit.num_heads)
    assert (arch.family, arch.patch_size, arch.num_register_tokens) == ("dinov2", 14, vit.num_register_tokens)
    auto = build_vit(arch)
    assert (auto.interpolate_antialias, auto.interpolate_offset) == (vit.interpolate_antialias, vit.interpolate_offset)
    hub.load_backbone_state(auto, state, "fixture")
    c = cs[-1]
    with torch.inference_mode():
        f = auto.eval().found_features(torch.from_numpy(c["x"]))
    np.testing.assert_allclose(f.cls_attention[0].numpy(), c["cls_attention"], atol=1e-5, rtol=0)
