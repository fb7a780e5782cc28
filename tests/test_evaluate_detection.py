"""Class-agnostic detection metrics (COCOeval) of the instances and ``found evaluate detection``.

Hand-computed answers use COCOeval's definitions: 10 IoU thresholds .50:.05:.95 (a match needs
IoU ≥ t), precision made monotone then read at 101 recall points 0, .01, …, 1 (a point beyond the
last reached recall counts 0), AP averaged over thresholds; AR@k = recall with the k best-scored
detections per image, averaged over thresholds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from conftest import require
from found.cli.main import main
from found.evaluate import datasets as ds
from found.evaluate.detection import coco_detection_metrics, gt_dataset
from found.model.masks import component_box, largest_component
from test_evaluate_common import build_tiny, write_tiny_model
from test_evaluate_discovery import write_voc


@pytest.fixture()
def cocoeval():
    """pycocotools' COCOeval (found[coco]), for the tests that evaluate detections."""
    return require("pycocotools.cocoeval", "coco")


KEYS = ("AP", "AP50", "AP75", "AR1", "AR10", "AR100")
THRESHOLDS = np.linspace(0.5, 0.95, 10)
GT = [np.array([[10, 10, 20, 20]]), np.array([[0, 0, 30, 30]])]
HW = [(40, 40), (40, 40)]


def _metrics(dets):
    return coco_detection_metrics(GT, HW, dets)


def test_perfect_predictions_give_ap_1(cocoeval):
    m = _metrics([[((10, 10, 20, 20), 0.9)], [((0, 0, 30, 30), 0.3)]])
    assert m == dict.fromkeys(KEYS, 1.0)


def test_a_low_scored_false_positive_after_every_hit_changes_nothing(cocoeval):
    m = _metrics([[((10, 10, 20, 20), 0.9), ((30, 30, 40, 40), 0.1)], [((0, 0, 30, 30), 0.8)]])
    assert m == dict.fromkeys(KEYS, 1.0)


def test_a_known_shift_gives_the_iou_threshold_answer(cocoeval):
    # image 2's box shifted right by 6 px: IoU = 24·30 / (900 + 900 − 720) = 2/3, a match at
    # t = .50 .55 .60 .65 (4 thresholds) only. There both detections hit: AP 1, recall 1.
    # At the 6 higher thresholds the better-scored hit (image 1) gives recall 1/2 at precision 1:
    # recall points 0 … .50 (51 of 101) read precision 1 → AP 51/101, recall 1/2.
    shifted = (6, 0, 36, 30)
    iou = (24 * 30) / (900 + 900 - 24 * 30)
    assert int(np.sum(THRESHOLDS <= iou)) == 4
    m = _metrics([[((10, 10, 20, 20), 0.9)], [(shifted, 0.8)]])
    assert m["AP"] == pytest.approx((4 * 1 + 6 * 51 / 101) / 10, abs=1e-12)
    assert m["AP50"] == 1.0
    assert m["AP75"] == pytest.approx(51 / 101, abs=1e-12)
    for k in ("AR1", "AR10", "AR100"):
        assert m[k] == pytest.approx((4 * 1 + 6 * 0.5) / 10, abs=1e-12)


def test_the_shifted_box_ranked_first_gives_the_other_answer(cocoeval):
    # same boxes, the shifted one scored higher: at the 6 high thresholds the first detection is a
    # miss (precision 0 at recall 0), the second a hit (precision 1/2 at recall 1/2) → 51/101 · 1/2.
    m = _metrics([[((10, 10, 20, 20), 0.2)], [((6, 0, 36, 30), 0.8)]])
    assert m["AP"] == pytest.approx((4 + 6 * (51 / 101) * 0.5) / 10, abs=1e-12)
    assert m["AR100"] == pytest.approx(0.7, abs=1e-12)


def test_recall_at_1_counts_only_the_best_detection_per_image(cocoeval):
    gt = [np.array([[0, 0, 10, 10], [20, 20, 40, 40]])]
    dets = [[((0, 0, 10, 10), 0.4), ((20, 20, 40, 40), 0.9)]]
    m = coco_detection_metrics(gt, [(50, 50)], dets)
    assert m["AR1"] == 0.5 and m["AR10"] == 1.0 and m["AR100"] == 1.0 and m["AP"] == 1.0


def test_no_detection_gives_zero_and_no_ground_truth_is_undefined(cocoeval):
    assert _metrics([[], []]) == dict.fromkeys(KEYS, 0.0)
    m = coco_detection_metrics([np.zeros((0, 4))], [(10, 10)], [[((0, 0, 5, 5), 0.5)]])
    assert all(np.isnan(m[k]) for k in KEYS)


def test_ground_truth_is_one_class_of_xywh_boxes():
    d = gt_dataset([np.array([[39, 19, 45, 25], [0, 0, 90, 50]])], [(50, 90)])
    assert [a["bbox"] for a in d["annotations"]] == [[39, 19, 6, 6], [0, 0, 90, 50]]
    assert {a["category_id"] for a in d["annotations"]} == {1} and d["images"][0]["width"] == 90


# ---------------------------------------------------------------------------- the command
# id, (H, W), VOC objects; every image has a whole-image box and a small one
DET_IMAGES = [
    ("000011", (61, 83), [("dog", 1, 1, 83, 61, 0), ("cat", 10, 10, 20, 20, 0)]),
    ("000012", (40, 72), [("car", 30, 10, 40, 20, 1), ("bus", 1, 1, 72, 40, 0)]),
]


def write_det_voc(root: Path) -> Path:
    return write_voc(root, "2007", DET_IMAGES)


@pytest.mark.parametrize("objects", ["single", "multi"])
def test_all_object_head_finds_each_whole_image_box(cocoeval, tmp_path, objects):
    """Every pixel is object: one whole-image instance per image, matching the whole-image box
    exactly (IoU 1) and missing the small one: every detection a hit, recall 1/2 →
    AP = 51/101 (recall points 0 … .50 at precision 1), AR 1/2, CorLoc 1."""
    devkit = write_det_voc(tmp_path)
    out = tmp_path / "out"
    rc = main(["evaluate", "detection", "--dataset", "VOC07", "--data-dir", str(devkit), "--output-dir", str(out),
               "--objects", objects, *write_tiny_model(tmp_path / "m", bias=10.0)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["task"] == "detection" and res["objects"] == objects
    for k in ("AP", "AP50", "AP75"):
        assert res[k] == pytest.approx(51 / 101, abs=1e-12)
    for k in ("AR1", "AR10", "AR100"):
        assert res[k] == pytest.approx(0.5, abs=1e-12)
    assert res["corloc"] == 1.0 and res["n_images"] == 2 and res["n_gt_boxes"] == 4 and res["n_instances"] == 2
    boxes = json.loads((out / "boxes.json").read_text())
    assert [i["box_xyxy"] for i in boxes["000011"]["instances"]] == [[0, 0, 83, 61]]
    assert boxes["000011"]["instances"][0]["area"] == 61 * 83
    assert boxes["000012"]["gt_boxes_xyxy"] == [[29, 9, 40, 20], [0, 0, 72, 40]]
    assert boxes["000012"]["corloc_hit"] and boxes["000012"]["corloc_box_xyxy"] == [0, 0, 72, 40]


def test_no_object_head_gives_empty_instance_lists(cocoeval, tmp_path, capsys):
    devkit = write_det_voc(tmp_path)
    out = tmp_path / "out"
    assert main(["evaluate", "detection", "--dataset", "VOC07", "--data-dir", str(devkit), "--output-dir", str(out),
                 *write_tiny_model(tmp_path / "m", bias=-10.0)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["AP"] == 0.0 and res["AR100"] == 0.0 and res["corloc"] == 0.0 and res["n_images_without_instance"] == 2
    assert all(v["instances"] == [] for v in json.loads((out / "boxes.json").read_text()).values())
    assert "AP 0.00" in capsys.readouterr().out


def test_instances_are_the_components_of_the_predicted_mask(cocoeval, tmp_path):
    """With a random head: 'multi' lists every 4-connected component of Prediction.mask,
    'single' the box of its largest; CorLoc equals `found evaluate discovery`'s."""
    devkit = write_det_voc(tmp_path)
    model_args = write_tiny_model(tmp_path / "m", seed=1)  # this random head gives 2 components on 000011
    runs = {}
    for objects in ("single", "multi"):
        out = tmp_path / objects
        assert main(["evaluate", "detection", "--dataset", "VOC07", "--data-dir", str(devkit), "--output-dir", str(out),
                     "--objects", objects, *model_args]) == 0
        runs[objects] = (json.loads((out / "results.json").read_text()), json.loads((out / "boxes.json").read_text()))
    assert main(["evaluate", "discovery", "--dataset", "VOC07", "--data-dir", str(devkit), "--output-dir", str(tmp_path / "d"), *model_args]) == 0
    disc = json.loads((tmp_path / "d" / "results.json").read_text())
    model = build_tiny(tmp_path / "m")
    counts = []
    for name, *_ in DET_IMAGES:
        p = model.predict(ds.read_rgb(devkit / "VOC2007" / "JPEGImages" / f"{name}.jpg"))[0]
        multi = runs["multi"][1][name]["instances"]
        labeled, n = ndimage.label(p.mask)
        assert len(multi) == n
        counts.append(n)
        assert sorted(i["area"] for i in multi) == sorted(np.bincount(labeled.ravel())[1:].tolist())
        single = runs["single"][1][name]["instances"]
        if n:
            assert [i["box_xyxy"] for i in single] == [component_box(largest_component(p.mask), p.mask.shape, 8).tolist()]
        assert runs["multi"][1][name]["corloc_box_xyxy"] == (None if p.box is None else [int(v) for v in p.box])
    assert max(counts) >= 2 and min(counts) >= 1  # not a vacuous check
    for objects in ("single", "multi"):
        assert runs[objects][0]["corloc"] == disc["corloc"]


def test_filters_apply_to_the_evaluated_instances(cocoeval, tmp_path):
    devkit = write_det_voc(tmp_path)
    out = tmp_path / "out"
    # the whole-image instances: 4000 px keeps only the larger one
    assert main(["evaluate", "detection", "--dataset", "VOC07", "--data-dir", str(devkit), "--output-dir", str(out),
                 "--min-area", "4000", *write_tiny_model(tmp_path / "m", bias=10.0)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["n_instances"] == 1 and res["filters"]["min_area"] == 4000  # 61×83 = 5063 px kept, 40×72 = 2880 dropped
    assert res["AR100"] == pytest.approx(0.25, abs=1e-12)


@pytest.mark.parametrize(
    "option,value,word",
    [("--max-instances", "0", "--max-instances"), ("--min-area", "-1", "--min-area"), ("--min-score", "1.5", "--min-score"),
     ("--min-score", "-0.2", "--min-score")],
)
def test_bad_instance_options_are_one_line_usage_errors(tmp_path, capsys, option, value, word):
    devkit = write_det_voc(tmp_path)
    rc = main(["evaluate", "detection", "--dataset", "VOC07", "--data-dir", str(devkit), option, value,
               *write_tiny_model(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and word in err


def test_missing_pycocotools_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    devkit = write_det_voc(tmp_path)
    for name in ("pycocotools", "pycocotools.coco", "pycocotools.mask", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)
    rc = main(["evaluate", "detection", "--dataset", "VOC07", "--data-dir", str(devkit), *write_tiny_model(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "found[coco]" in err


def test_coco20k_detection_uses_the_discovery_ground_truth(cocoeval, tmp_path):
    from test_evaluate_discovery import write_coco

    lst = write_coco(tmp_path / "coco")
    out = tmp_path / "out"
    assert main(["evaluate", "detection", "--dataset", "COCO20k", "--data-dir", str(tmp_path / "coco"), "--coco20k-list", str(lst),
                 "--output-dir", str(out), *write_tiny_model(tmp_path / "m", bias=10.0)]) == 0
    res = json.loads((out / "results.json").read_text())
    # GT: image 9 whole image (found), image 25 a small box (missed), image 30 crowd only (no GT)
    assert res["n_images"] == 3 and res["n_gt_boxes"] == 2 and res["n_images_without_gt_box"] == 1
    assert res["AR100"] == pytest.approx(0.5, abs=1e-12) and res["corloc"] == pytest.approx(1 / 3)
    assert list(json.loads((out / "boxes.json").read_text())) == ["9", "25", "30"]
