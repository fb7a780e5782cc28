"""``found evaluate saliency`` end to end on tiny datasets in each official layout."""
from __future__ import annotations

import json

import numpy as np
import pytest

from found.cli.main import main
from found.evaluate.datasets import saliency_dirs, saliency_samples
from found.evaluate.metrics import authors_saliency_metrics
from test_evaluate_common import SAL_IMAGES, build_tiny, read_csv, write_saliency_dataset, write_tiny_model

LAYOUTS = {
    "ECSSD": ("ECSSD/images", "ECSSD/ground_truth_mask"),
    "DUTS-TE": ("DUTS-TE/DUTS-TE-Image", "DUTS-TE/DUTS-TE-Mask"),
    "DUT-OMRON": ("DUT-OMRON-image", "pixelwiseGT-new-PNG"),
}


@pytest.mark.parametrize("dataset", list(LAYOUTS))
def test_official_layouts_all_object_head(tmp_path, dataset):
    """A head that calls every pixel 'object': the scores are known from the GT alone."""
    img_rel, gt_rel = LAYOUTS[dataset]
    gts = write_saliency_dataset(tmp_path / "data" / img_rel, tmp_path / "data" / gt_rel)
    model_args = write_tiny_model(tmp_path / "model", bias=10.0)
    out = tmp_path / "out"
    rc = main(["evaluate", "saliency", "--dataset", dataset, "--data-dir", str(tmp_path / "data"),
               "--mode", "multi", "--output-dir", str(out), *model_args])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == dataset and res["mode"] == "multi" and res["n_images"] == len(SAL_IMAGES)
    rows = read_csv(out / "per_image.csv")
    assert [r["name"] for r in rows] == sorted(gts)
    expected = {n: authors_saliency_metrics(np.ones(g.shape, np.float32), g) for n, g in gts.items()}
    for r in rows:
        e = expected[r["name"]]
        assert float(r["iou"]) == pytest.approx(gts[r["name"]].mean(), abs=1e-6)  # all-object prediction
        assert float(r["iou"]) == pytest.approx(e.iou, abs=1e-6)
        assert float(r["acc"]) == pytest.approx(e.pixel_acc, abs=1e-6)
        assert float(r["maxF_beta2_0.09_authors"]) == pytest.approx(e.f_max, abs=1e-6)
    a = res["authors_protocol"]
    assert a["iou"] == pytest.approx(np.mean([e.iou for e in expected.values()]), abs=1e-6)
    assert a["acc"] == pytest.approx(np.mean([e.pixel_acc for e in expected.values()]), abs=1e-6)
    assert a["maxF_beta2_0.09_authors"] == pytest.approx(np.mean([e.f_max for e in expected.values()]), abs=1e-6)
    std = res["standard_pysodmetrics_beta2_0.3"]
    if std is not None:
        # a constant map: pysodmetrics leaves it unnormalised (all ones) → MAE = background share
        # (pysodmetrics thresholds the grey GT at 128: the anti-aliased 128 pixel stays background)
        want = np.mean([1 - g.mean() for g in gts.values()])
        assert std["MAE"] == pytest.approx(want, abs=1e-6)
        assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_library_and_cli_agree_single_and_multi(tmp_path, capsys):
    """Random head, generic --images/--masks layout: the CSV equals Found.predict + the metrics."""
    gts = write_saliency_dataset(tmp_path / "imgs", tmp_path / "masks", image_ext=".png")
    model_args = write_tiny_model(tmp_path / "model")
    model = build_tiny(tmp_path / "model")
    from found.evaluate.datasets import read_rgb

    for mode in ("single", "multi"):
        out = tmp_path / f"out-{mode}"
        rc = main(["evaluate", "saliency", "--images", str(tmp_path / "imgs"), "--masks", str(tmp_path / "masks"),
                   "--mode", mode, "--output-dir", str(out), "--no-plot", *model_args])
        assert rc == 0
        text = capsys.readouterr().out
        assert "IoU" in text or "iou" in text
        rows = {r["name"]: r for r in read_csv(out / "per_image.csv")}
        assert set(rows) == set(gts)
        for name, gt in gts.items():
            pred = model.predict(read_rgb(tmp_path / "imgs" / f"{name}.png"), mode=mode)[0]
            scored = pred.soft if mode == "multi" else pred.mask.astype(np.float32)
            e = authors_saliency_metrics(scored, gt)
            for col, v in (("iou", e.iou), ("acc", e.pixel_acc), ("maxF_beta2_0.09_authors", e.f_max), ("mae_binary_authors", e.mae)):
                assert float(rows[name][col]) == pytest.approx(v, abs=1e-6), (mode, name, col)
        assert not (out / "curves.png").exists()
        assert json.loads((out / "results.json").read_text())["mode"] == mode


def test_single_mode_scores_a_binary_map(tmp_path):
    """In 'single' mode the scored map is binary, so F at every threshold is the same: maxF = F@0.5."""
    write_saliency_dataset(tmp_path / "imgs", tmp_path / "masks")
    model_args = write_tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    assert main(["evaluate", "saliency", "--images", str(tmp_path / "imgs"), "--masks", str(tmp_path / "masks"),
                 "--mode", "single", "--output-dir", str(out), "--no-plot", *model_args]) == 0
    for r in read_csv(out / "per_image.csv"):
        assert float(r["maxF_beta2_0.09_authors"]) == pytest.approx(float(r["F_at_0.5_beta2_0.09_authors"]), abs=1e-6)


def test_limit_and_layout_detection(tmp_path):
    write_saliency_dataset(tmp_path / "ECSSD" / "images", tmp_path / "ECSSD" / "ground_truth_mask")
    # the dataset folder itself or its parent
    assert saliency_dirs("ECSSD", tmp_path) == saliency_dirs("ECSSD", tmp_path / "ECSSD")
    img, gt = saliency_dirs("ECSSD", tmp_path)
    assert [s.name for s in saliency_samples(img, gt, limit=2)] == sorted(n for n, *_ in SAL_IMAGES)[:2]
    model_args = write_tiny_model(tmp_path / "model", bias=-10.0)
    out = tmp_path / "out"
    assert main(["evaluate", "saliency", "--dataset", "ECSSD", "--data-dir", str(tmp_path), "--limit", "1",
                 "--output-dir", str(out), "--no-plot", *model_args]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["n_images"] == 1 and any("--limit" in n for n in res["notes"])
    assert res["authors_protocol"]["iou"] == 0.0  # all-background head


def test_user_errors_are_one_line(tmp_path, capsys):
    write_saliency_dataset(tmp_path / "imgs", tmp_path / "masks")
    (tmp_path / "masks" / "b_img.png").unlink()
    model_args = write_tiny_model(tmp_path / "model")
    rc = main(["evaluate", "saliency", "--images", str(tmp_path / "imgs"), "--masks", str(tmp_path / "masks"), *model_args])
    err = capsys.readouterr().err
    assert rc != 0 and "no mask" in err and "b_img" in err and len(err.strip().splitlines()) == 1
    rc = main(["evaluate", "saliency", "--dataset", "DUTS-TE", "--data-dir", str(tmp_path), *model_args])
    err = capsys.readouterr().err
    assert rc != 0 and "DUTS-TE-Image" in err and len(err.strip().splitlines()) == 1
    rc = main(["evaluate", "saliency", "--images", str(tmp_path / "imgs"), *model_args])
    assert rc != 0 and "--masks" in capsys.readouterr().err


def test_size_mismatch_is_reported(tmp_path, capsys):
    from PIL import Image

    write_saliency_dataset(tmp_path / "imgs", tmp_path / "masks")
    Image.new("L", (10, 10)).save(tmp_path / "masks" / "a_img.png")
    rc = main(["evaluate", "saliency", "--images", str(tmp_path / "imgs"), "--masks", str(tmp_path / "masks"),
               "--output-dir", str(tmp_path / "o"), *write_tiny_model(tmp_path / "model")])
    err = capsys.readouterr().err
    assert rc != 0 and "a_img" in err and "10x10" in err
    assert not (tmp_path / "o" / "results.json").exists()


def test_refine(tmp_path):
    """With the bilateral solver (scipy is a core dependency, so it is always there): binary refined masks are scored."""
    write_saliency_dataset(tmp_path / "imgs", tmp_path / "masks")
    out = tmp_path / "out"
    rc = main(["evaluate", "saliency", "--images", str(tmp_path / "imgs"), "--masks", str(tmp_path / "masks"),
               "--mode", "multi", "--refine", "--output-dir", str(out), "--no-plot",
               *write_tiny_model(tmp_path / "model")])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["refine"] is True and 0 <= res["authors_protocol"]["refined_images"] <= len(SAL_IMAGES)
    for r in read_csv(out / "per_image.csv"):  # refined masks are binary: maxF = F@0.5
        assert float(r["maxF_beta2_0.09_authors"]) == pytest.approx(float(r["F_at_0.5_beta2_0.09_authors"]), abs=1e-6)


def test_evaluation_runs_at_native_resolution_whatever_the_working_scale(tmp_path):
    """The paper's protocol: an image over found segment's working scale is evaluated at its own size,
    in fp32 (found evaluate's default precision), not reduced as found segment would process it."""
    from found.engine import DEFAULT_MAX_SIDE, Engine
    from found.evaluate.datasets import read_rgb
    from PIL import Image

    from test_evaluate_common import ellipse_mask, synthetic_image

    h, w = 300, DEFAULT_MAX_SIDE + 120
    gt = ellipse_mask(h, w, 150, 260, 90, 140)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(synthetic_image(gt, 0)).save(tmp_path / "imgs" / "big.png")
    Image.fromarray((gt * 255).astype(np.uint8)).save(tmp_path / "masks" / "big.png")
    model_args = write_tiny_model(tmp_path / "model")
    model = build_tiny(tmp_path / "model")
    assert model.precision == "fp32"
    out = tmp_path / "out"
    assert main(["evaluate", "saliency", "--images", str(tmp_path / "imgs"), "--masks", str(tmp_path / "masks"),
                 "--output-dir", str(out), "--no-plot", *model_args]) == 0
    [row] = read_csv(out / "per_image.csv")
    rgb = read_rgb(tmp_path / "imgs" / "big.png")
    native = model.predict(rgb)[0]
    assert float(row["iou"]) == pytest.approx(authors_saliency_metrics(native.soft, gt).iou, abs=1e-6)
    [engine] = list(Engine(model, workers=0).run([rgb]))
    assert engine.downscaled  # found segment would have reduced it: evaluation did not
