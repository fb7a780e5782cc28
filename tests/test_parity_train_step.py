"""One iteration of self-training against the authors' loop body (``train_step_cases.npz``).

The fixture holds a batch, the tiny ViT's inputs and the head before the step; the reference
pseudo-labels, losses and updated heads come from FOUND's own functions. Works for any fixture
set of this format (nothing here depends on the public values).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_parity, tiny_vit
from found.model.head import FoundHead
from found.train import TrainConfig, extract_features, make_optimizer, train_step

pytestmark = pytest.mark.parity

REGIMES = {"early": 0, "late": None}  # late = the first iteration without the coarse loss


@pytest.fixture(scope="module")
def case() -> dict:
    return load_parity("train_step_cases.npz")


@pytest.fixture(scope="module")
def features(case):
    vit = tiny_vit()
    x = torch.from_numpy(case["x"])
    f = extract_features(vit, x)
    assert tuple(f.grid_hw) == tuple(int(v) for v in case["grid_hw"])
    return f


def _images(case) -> torch.Tensor:
    return torch.from_numpy(case["images"]).permute(0, 3, 1, 2).float() / 255  # data[1] of the reference


def _head(case) -> FoundHead:
    w = torch.from_numpy(case["decoder_weight"])
    head = FoundHead(w.shape[1])
    head.load_state({"decoder": {"weight": w, "bias": torch.from_numpy(case["decoder_bias"])}})
    return head.train()


def _cfg(case) -> TrainConfig:
    return TrainConfig(lr0=float(case["lr0"]), w_bs_loss=float(case["w_bs_loss"]), w_self_loss=float(case["w_self_loss"]),
                       stop_bkg_loss=int(case["stop_bkg_loss"]))


def _n_iter(case, regime: str) -> int:
    return 0 if regime == "early" else int(case["stop_bkg_loss"])


def test_defaults_are_the_fixture_config(case):
    cfg = TrainConfig()
    assert cfg.lr0 == pytest.approx(float(case["lr0"]))
    assert cfg.w_bs_loss == float(case["w_bs_loss"])
    assert cfg.w_self_loss == float(case["w_self_loss"])
    assert cfg.stop_bkg_loss == int(case["stop_bkg_loss"])
    assert cfg.keep == "all"


def test_lr_per_iteration_matches_steplr(case):
    head = FoundHead(8)
    opt, sched = make_optimizer(head, TrainConfig())
    lrs = []
    for _ in range(len(case["lr_per_iter"])):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lrs, case["lr_per_iter"], rtol=0, atol=1e-12)


def _check_step(case, regime, res, head):
    np.testing.assert_allclose(res.logits.numpy(), case["logits"], rtol=0, atol=5e-5)
    np.testing.assert_array_equal(res.pred_binary.numpy(), case["pred_binary"])
    np.testing.assert_array_equal(res.pred_refined.numpy(), case["pred_refined"])
    np.testing.assert_array_equal(res.pred_refined_accepted.numpy(), case["pred_refined_accepted"])
    assert res.loss_refined_pred == pytest.approx(float(case["loss_refined_pred"]), abs=1e-5)
    if regime == "early":
        np.testing.assert_array_equal(res.coarse_object.numpy(), case["coarse_object"])
        np.testing.assert_array_equal(res.coarse_refined.numpy(), case["coarse_refined"])
        np.testing.assert_array_equal(res.coarse_refined_accepted.numpy(), case["coarse_refined_accepted"])
        assert res.loss_coarse == pytest.approx(float(case["loss_coarse"]), abs=1e-5)
        assert res.loss_self is None
    else:
        assert res.loss_self == pytest.approx(float(case["loss_self"]), abs=1e-5)
        assert res.loss_coarse is None and res.coarse_refined is None
    assert res.loss == pytest.approx(float(case[f"{regime}_loss_total"]), abs=1e-5)
    assert res.lr == pytest.approx(float(case["lr0"]))
    np.testing.assert_allclose(head.decoder.weight.detach().numpy(), case[f"{regime}_decoder_weight_after"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(head.decoder.bias.detach().numpy(), case[f"{regime}_decoder_bias_after"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("regime", list(REGIMES))
def test_step_with_reference_pseudo_labels(case, features, regime):
    """Losses and AdamW update given the authors' pseudo-labels (isolates the step from the solver)."""
    calls = []

    def reference_solver(images, masks, patch=8, keep="all"):
        assert keep == "all" and patch == 8
        m = masks.reshape(masks.shape[0], *masks.shape[-2:]).bool().numpy()
        calls.append(m)
        for inp, out, acc in (("pred_binary", "pred_refined", "pred_refined_accepted"),
                              ("coarse_object", "coarse_refined", "coarse_refined_accepted")):
            if np.array_equal(m, case[inp]):
                return torch.from_numpy(case[out]), torch.from_numpy(case[acc])
        raise AssertionError("the solver was given a mask that is neither the prediction nor the coarse mask")

    head = _head(case)
    cfg = _cfg(case)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr0)
    res = train_step(head, opt, features, _images(case), _n_iter(case, regime), cfg, refine=reference_solver)
    assert len(calls) == (2 if regime == "early" else 1)
    _check_step(case, regime, res, head)


@pytest.mark.parametrize("regime", list(REGIMES))
def test_step_end_to_end(case, features, regime):
    """The whole iteration with found.refine's solver: masks exact, losses and head within 1e-5."""
    head = _head(case)
    cfg = _cfg(case)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr0)
    res = train_step(head, opt, features, _images(case), _n_iter(case, regime), cfg)
    _check_step(case, regime, res, head)
