"""Parity of the authors' saliency metrics with FOUND's ``eval_batch`` (fixture ``metrics_cases.npz``).

Every case and probe in the fixture is checked; counts and names are read from the file so the same
tests run on the held-out set.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import load_parity
from found.evaluate.metrics import (
    AuthorsMeter,
    authors_f_curve,
    authors_saliency_metrics,
    authors_thresholds,
)

pytestmark = pytest.mark.parity

ATOL = 1e-6
PER_IMAGE = ("iou", "f_max", "f_mean", "f_measure", "mae", "pixel_acc", "s_measure")


@pytest.fixture(scope="module")
def d() -> dict:
    return load_parity("metrics_cases.npz")


def _cases(d: dict) -> list[int]:
    n = len(np.atleast_1d(d["case_names"]))
    assert n > 0
    return list(range(n))


def _probes(d: dict) -> list[int]:
    return list(range(len(np.atleast_1d(d["probe_names"])))) if "probe_names" in d else []


def test_thresholds_match(d):
    np.testing.assert_array_equal(authors_thresholds(), d["f_thresholds"])


def test_every_case_per_image(d):
    for i in _cases(d):
        s = authors_saliency_metrics(d[f"c{i}_pred"], d[f"c{i}_gt"])
        name = str(d[f"c{i}_name"])
        for k in PER_IMAGE:
            np.testing.assert_allclose(getattr(s, k), d[k][i], atol=ATOL, rtol=0, err_msg=f"{name}: {k}")
        # with batch size 1 the reference's f_maxs_fixed is f_max
        np.testing.assert_allclose(s.f_max, d["f_maxs_fixed"][i], atol=ATOL, rtol=0, err_msg=name)
        np.testing.assert_allclose(s.all_f, d["all_f"][i], atol=ATOL, rtol=0, err_msg=f"{name}: all_f")
        assert s.all_f.dtype == np.float32 and s.all_f.shape == d["all_f"][i].shape


def test_f_curve_is_exact_on_threshold_ties(d):
    """Strict ``>`` against float32 thresholds: our histogram/searchsorted counting must equal the
    reference's dense comparison bit for bit (the fixture has pixels exactly on thresholds)."""
    for i in _cases(d):
        np.testing.assert_array_equal(authors_f_curve(d[f"c{i}_pred"], d[f"c{i}_gt"]), d["all_f"][i])


def test_probes_including_nan_s_measure(d):
    probes = _probes(d)
    for j in probes:
        s = authors_saliency_metrics(d[f"probe{j}_pred"], d[f"probe{j}_gt"])
        name = str(d[f"probe{j}_name"])
        for k in PER_IMAGE + ("f_maxs_fixed",):
            want = float(d[f"probe{j}_{k}"])
            got = s.f_max if k == "f_maxs_fixed" else getattr(s, k)
            if math.isnan(want):
                assert math.isnan(got), f"{name}: {k} should be NaN, got {got}"
            else:
                np.testing.assert_allclose(got, want, atol=ATOL, rtol=0, err_msg=f"{name}: {k}")


def test_dataset_level_accumulation(d):
    meter = AuthorsMeter()
    for i in _cases(d):
        meter.update(authors_saliency_metrics(d[f"c{i}_pred"], d[f"c{i}_gt"]))
    avg = meter.meter_averages()
    for k, v in avg.items():
        np.testing.assert_allclose(v, float(d[f"dataset_meter_avg_{k}"]), atol=ATOL, rtol=0, err_msg=k)
    res = meter.reference_results()
    for k, v in res.items():
        np.testing.assert_allclose(v, float(d[f"dataset_results_{k}"]), atol=ATOL, rtol=0, err_msg=k)
    # the reference quirk: results["iou"] is the last image's IoU, not the mean
    np.testing.assert_allclose(res["iou"], d["iou"][_cases(d)[-1]], atol=ATOL, rtol=0)
    # our report uses the real mean
    np.testing.assert_allclose(meter.summary()["iou"], float(d["dataset_meter_avg_ious"]), atol=ATOL, rtol=0)
    np.testing.assert_allclose(
        meter.summary()["maxF_beta2_0.09_authors"], float(d["dataset_meter_avg_f_maxs"]), atol=ATOL, rtol=0
    )
