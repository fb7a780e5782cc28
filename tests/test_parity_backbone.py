"""The backbone reproduces DINO's forward, attention, keys and positional interpolation."""
import numpy as np
import pytest
import torch

from conftest import load_parity, tiny_vit
from found.runtime.eager import eager_found_features, last_selfattention
from found.model.preprocess import pad_to_multiple, normalize, to_chw_float

pytestmark = pytest.mark.parity

VIT = load_parity("vit_cases.npz")
CASES = [str(n) for n in VIT["case_names"]]


def _case(i):
    return {k[len(f"c{i}_"):]: v for k, v in VIT.items() if k.startswith(f"c{i}_")}


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


@pytest.mark.parametrize("i", range(len(CASES)), ids=CASES)
def test_found_features_match_reference_attention_and_keys(vit, i):
    c = _case(i)
    x = torch.from_numpy(c["x"])
    with torch.inference_mode():
        f = vit.found_features(x)
    assert tuple(f.grid_hw) == tuple(c["grid_hw"])
    np.testing.assert_allclose(f.cls_attention[0].numpy(), c["cls_attention"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(f.keys[0].numpy(), c["keys"], atol=5e-5, rtol=0)


@pytest.mark.parametrize("i", range(len(CASES)), ids=CASES)
def test_reference_path_and_full_attention_match_too(vit, i):
    c = _case(i)
    x = torch.from_numpy(c["x"])
    with torch.inference_mode():
        f = eager_found_features(vit, x)
        att = last_selfattention(vit, x)
    np.testing.assert_allclose(f.cls_attention[0].numpy(), c["cls_attention"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(f.keys[0].numpy(), c["keys"], atol=5e-5, rtol=0)
    np.testing.assert_allclose(att[0, :, 0, 0].numpy(), c["cls_self_attention"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("i", range(len(CASES)), ids=CASES)
def test_last_tokens_match_dino_forward(vit, i):
    c = _case(i)
    x = torch.from_numpy(c["x"])
    with torch.inference_mode():
        tokens = vit.forward_tokens(x)[0]
        cls = vit(x)[0]
    np.testing.assert_allclose(tokens.numpy(), c["last_tokens"], atol=5e-5, rtol=0)
    np.testing.assert_allclose(cls.numpy(), c["last_tokens"][0], atol=5e-5, rtol=0)


@pytest.mark.parametrize("i", range(len(CASES)), ids=CASES)
def test_pos_embed_interpolation_matches_dino(vit, i):
    c = _case(i)
    h, w = (int(v) for v in c["grid_hw"])
    with torch.inference_mode():
        pos = vit.interpolate_pos_encoding(h, w)[0, 1:].detach()
    np.testing.assert_allclose(pos.numpy(), c["pos_embed_interp"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("i", range(len(CASES)), ids=CASES)
def test_preprocessing_reproduces_reference_input(i):
    """Rebuild the normalised padded input from the stored one: the unpadded region round-trips
    through uint8 pixels, the padding is exactly zero."""
    c = _case(i)
    h, w = (int(v) for v in c["orig_hw"])
    x = torch.from_numpy(c["x"])
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    pixels = ((x[0, :, :h, :w] * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    rebuilt = pad_to_multiple(normalize(to_chw_float(pixels)), 8)
    assert rebuilt.shape == x.shape
    np.testing.assert_allclose(rebuilt.numpy(), c["x"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("i", range(len(CASES)), ids=CASES)
def test_cpu_fp32_backbone_matches_reference_attention_and_keys(vit, i):
    """The oneDNN CPU path that ``found segment`` runs in fp32 gives DINO's numbers (same tolerances)."""
    from found import Found
    from found.model.backbone import cpu

    if not cpu.available():
        pytest.skip("this torch build has no oneDNN linear op (the eager path, tested above, runs instead)")
    c = _case(i)
    model = Found(vit, None, device="cpu", precision="fp32")
    assert model.core.native_cpu
    f = model.features(torch.from_numpy(c["x"]))
    np.testing.assert_allclose(f.cls_attention[0].numpy(), c["cls_attention"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(f.keys[0].numpy(), c["keys"], atol=5e-5, rtol=0)
