"""Head → upsampled soft mask → binary → 'single' component, as the authors' evaluate_saliency."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import load_parity
from found.hub.build import read_head, save_head
from found.model.head import FoundHead
from found.model.masks import single_component, upsample_logits

pytestmark = pytest.mark.parity

HEAD = load_parity("head_cases.npz")
CASES = [str(n) for n in np.atleast_1d(HEAD["case_names"])]


def _case(i):
    return {k[len(f"c{i}_"):]: v for k, v in HEAD.items() if k.startswith(f"c{i}_")}


@pytest.fixture(scope="module")
def head():
    h = FoundHead(HEAD["decoder_weight"].shape[1])
    h.load_state({"decoder": {"weight": torch.from_numpy(HEAD["decoder_weight"]), "bias": torch.from_numpy(HEAD["decoder_bias"])}})
    return h.eval()


@pytest.mark.parametrize("i", range(len(CASES)), ids=CASES)
def test_logits_soft_binary_and_single_component_match(head, i):
    c = _case(i)
    H, W = (int(v) for v in c["image_hw"])
    with torch.inference_mode():
        logits = head(torch.from_numpy(c["feats"]))
        soft = torch.sigmoid(upsample_logits(logits, 8, (H, W)))[0, 0].numpy()
    np.testing.assert_allclose(logits.numpy(), c["logits"], atol=5e-5, rtol=0)
    np.testing.assert_allclose(soft, c["soft"], atol=1e-5, rtol=0)
    # exact binaries are meaningful on every CPU only with a margin: every upsampled logit of the
    # fixture is further from 0 than our logits may differ (5e-5), so no pixel is a float tie
    assert float(c["min_abs_upsampled_logit"]) > 5e-5, "fixture has a tie at 0.5: an exact binary check would be CPU-dependent"
    binary = soft > 0.5
    np.testing.assert_array_equal(binary, c["binary"])
    labeled, n = ndimage.label(binary)
    assert n == int(c["n_components"])
    np.testing.assert_array_equal(np.bincount(labeled.ravel(), minlength=n + 1)[1:], c["component_sizes"])
    np.testing.assert_array_equal(single_component(binary), c["single_cc_mask"])


def test_single_component_keeps_the_largest_object_not_the_background():
    m = np.zeros((20, 20), bool)
    m[1:4, 1:4] = True  # 9 px
    m[8:16, 8:16] = True  # 64 px
    out = single_component(m)
    assert out.sum() == 64 and out[10, 10] and not out[2, 2]


def test_single_component_of_a_full_mask_is_the_full_mask():
    m = np.ones((5, 7), bool)
    assert single_component(m).all()


def test_head_rejects_checkpoint_of_wrong_width():
    h = FoundHead(384)
    with pytest.raises(ValueError, match="expected"):
        h.load_state({"decoder": {"weight": torch.zeros(1, 96, 1, 1), "bias": torch.zeros(1)}})


def test_head_save_roundtrip_uses_authors_format(tmp_path):
    h = FoundHead(32)
    torch.nn.init.normal_(h.decoder.weight)
    save_head(h, tmp_path / "head.pt")
    state = torch.load(tmp_path / "head.pt", weights_only=True)
    assert set(state) == {"decoder"} and set(state["decoder"]) == {"weight", "bias"}
    h2 = read_head(tmp_path / "head.pt")
    assert torch.equal(h2.decoder.weight, h.decoder.weight)
