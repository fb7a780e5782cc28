"""Parity of object-discovery boxes, IoUs, hits and CorLoc with FOUND/LOST (fixture ``uod_cases.npz``).

Cases are enumerated from the file, so the same tests run on the held-out set.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import load_parity
from found.evaluate.discovery import DiscoveryResult, box_ious, corloc, is_hit, predicted_box

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def d() -> dict:
    return load_parity("uod_cases.npz")


def _cases(d: dict) -> list[int]:
    n = len(np.atleast_1d(d["case_names"]))
    assert n > 0
    return list(range(n))


def test_boxes_ious_hits(d):
    patch = int(d["patch_size"])
    for i in _cases(d):
        name = str(d[f"c{i}_name"])
        hw = tuple(int(v) for v in d[f"c{i}_image_hw"])
        box = predicted_box(d[f"c{i}_pred"], hw, patch)
        np.testing.assert_array_equal(box, d[f"c{i}_box"], err_msg=name)
        assert box.dtype == np.int64
        ious = box_ious(box, d[f"c{i}_gt_boxes"])
        np.testing.assert_allclose(ious, d[f"c{i}_ious"], atol=1e-6, rtol=0, err_msg=name)
        assert is_hit(ious) == bool(d[f"c{i}_hit"]), name


def test_corloc_over_all_cases(d):
    patch = int(d["patch_size"])
    res = DiscoveryResult()
    for i in _cases(d):
        res.add(str(d[f"c{i}_name"]), d[f"c{i}_pred"], tuple(d[f"c{i}_image_hw"]), d[f"c{i}_gt_boxes"], patch)
    np.testing.assert_array_equal([r.hit for r in res.records], d["hits"])
    assert res.corloc == float(d["corloc"])
    assert corloc(d["hits"]) == float(d["corloc"])
    assert res.misses() == [str(d[f"c{i}_name"]) for i in _cases(d) if not d["hits"][i]]


def test_corloc_of_patch_level_cases(d):
    """The reference's evaluation loop was run on the cases whose prediction is at patch level."""
    patch = int(d["patch_size"])
    res = DiscoveryResult()
    for i in _cases(d):
        hw = tuple(int(v) for v in d[f"c{i}_image_hw"])
        if tuple(d[f"c{i}_pred"].shape) != hw:
            res.add(str(i), d[f"c{i}_pred"], hw, d[f"c{i}_gt_boxes"], patch)
    assert res.n_images > 0
    assert res.corloc == float(d["corloc_patch_level_cases_via_loop"])


def test_all_zero_prediction(d):
    """The reference raises (``{probe}``); we raise a clear ValueError, and CorLoc counts a miss."""
    assert "ValueError" in str(d["probe_all_zero_pred_error"])
    zero = np.zeros_like(d["c0_pred"])
    hw = tuple(int(v) for v in d["c0_image_hw"])
    with pytest.raises(ValueError, match="empty prediction"):
        predicted_box(zero, hw, int(d["patch_size"]))
    res = DiscoveryResult()
    rec = res.add("empty", zero, hw, d["c0_gt_boxes"], int(d["patch_size"]))
    assert rec.box is None and not rec.hit and res.corloc == 0.0
    assert res.summary()["n_empty_predictions"] == 1


def test_no_ground_truth_box_is_a_miss():
    res = DiscoveryResult()
    pred = np.zeros((4, 4), dtype=bool)
    pred[1:3, 1:3] = True
    rec = res.add("nogt", pred, (32, 32), np.zeros((0, 4), dtype=np.int64), 8)
    assert rec.box == [8, 8, 24, 24] and rec.ious == [] and not rec.hit
    assert res.summary()["n_images_without_gt_box"] == 1
