"""found.model.instances: connected components of a mask as instances (box, area, pixels, score) and their filters."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from found.errors import FoundError
from found.model.instances import Instance, InstanceFilter, InstanceOptionError, find_instances, patch_mask_pixels
from found.model.masks import component_box, largest_component

PATCH = 4
#: 3 × 4 patch grid of a 12 × 16 image; cell (i, j) has probability (4 i + j) / 16
PROBS = np.arange(12, dtype=np.float64).reshape(3, 4) / 16


def known_mask() -> np.ndarray:
    """Six 4-connected components with hand-computed boxes, areas and patch cells."""
    m = np.zeros((12, 16), dtype=bool)
    m[0:3, 0:6] = True  # A: 18 px, cells (0,0) (0,1)
    m[0, 8] = True  # E: 1 px, cell (0,2)
    m[1, 9] = True  # F: 1 px, only diagonal to E: a separate instance; cell (0,2)
    m[5:11, 9:16] = True  # B: 42 px, cells (1,2) (1,3) (2,2) (2,3)
    m[7, 0:3] = True  # D: an L of 5 px, cells (1,0) (2,0)
    m[8:10, 0] = True
    m[11, 0] = True  # C: 1 px, cell (2,0)
    return m


#: name → (box_xyxy, area, score) expected, in the expected output order (area desc, then raster order)
EXPECTED = [
    ("B", (9, 5, 16, 11), 42, (6 + 7 + 10 + 11) / 16 / 4),
    ("A", (0, 0, 6, 3), 18, (0 + 1) / 16 / 2),
    ("D", (0, 7, 3, 10), 5, (4 + 8) / 16 / 2),
    ("E", (8, 0, 9, 1), 1, 2 / 16),
    ("F", (9, 1, 10, 2), 1, 2 / 16),
    ("C", (0, 11, 1, 12), 1, 8 / 16),
]


def _summary(instances: list[Instance]) -> list[tuple]:
    return [(i.box_xyxy, i.area, i.score) for i in instances]


def _expected(names: str = "BADEFC") -> list[tuple]:
    return [e[1:] for e in EXPECTED if e[0] in names]


def test_every_component_is_an_instance_with_exact_box_area_and_score():
    found = find_instances(known_mask(), PROBS, PATCH)
    assert _summary(found) == _expected()
    assert [i.box_xywh for i in found][:3] == [(9, 5, 7, 6), (0, 0, 6, 3), (0, 7, 3, 3)]


def test_instance_masks_are_the_components_pixels():
    mask = known_mask()
    found = find_instances(mask, PROBS, PATCH)
    labeled, n = ndimage.label(mask)
    assert n == len(found) == 6
    union = np.zeros_like(mask)
    for inst in found:
        full = inst.full_mask()
        assert full.shape == mask.shape and full.dtype == bool
        assert int(full.sum()) == inst.area
        # exactly one label's pixels, none outside the box
        labels = np.unique(labeled[full])
        assert len(labels) == 1 and np.array_equal(full, labeled == labels[0])
        x1, y1, x2, y2 = inst.box_xyxy
        assert inst.crop.shape == (y2 - y1, x2 - x1) and np.array_equal(inst.crop, full[y1:y2, x1:x2])
        assert not np.any(union & full)
        union |= full
    assert np.array_equal(union, mask)
    d = found[2]
    assert d.crop.tolist() == [[True, True, True], [True, False, False], [True, False, False]]  # the L
    assert d.full_mask((20, 30)).shape == (20, 30) and int(d.full_mask((20, 30)).sum()) == 5
    with pytest.raises(ValueError, match="does not fit"):
        found[0].full_mask((5, 5))


def test_to_dict_is_json_ready():
    import json

    d = find_instances(known_mask(), PROBS, PATCH)[0].to_dict()
    assert json.loads(json.dumps(d)) == {"box_xyxy": [9, 5, 16, 11], "box_xywh": [9, 5, 7, 6], "area": 42, "score": 34 / 64}


def test_single_mode_keeps_the_largest_then_filters():
    assert _summary(find_instances(known_mask(), PROBS, PATCH, mode="single")) == _expected("B")
    # the largest fails the score threshold: no object, even though C (0.5) would pass alone
    flt = InstanceFilter(min_score=0.6)
    assert find_instances(known_mask(), PROBS, PATCH, mode="single", flt=flt) == []


def test_single_mode_ties_go_to_the_first_component_in_raster_order():
    m = np.zeros((8, 8), dtype=bool)
    m[5:7, 1:3] = True  # 4 px, met second in raster order
    m[0:2, 5:7] = True  # 4 px, met first
    (inst,) = find_instances(m, np.full((2, 2), 0.7), PATCH, mode="single")
    assert inst.box_xyxy == (5, 0, 7, 2)
    np.testing.assert_array_equal(inst.full_mask(), largest_component(m))


@pytest.mark.parametrize(
    "flt,names",
    [
        (InstanceFilter(max_instances=2), "BA"),
        (InstanceFilter(max_instances=1), "B"),
        (InstanceFilter(max_instances=100), "BADEFC"),
        (InstanceFilter(min_area=5), "BAD"),  # pixels; the threshold is inclusive
        (InstanceFilter(min_area=18), "BA"),
        (InstanceFilter(min_area=1), "BADEFC"),
        (InstanceFilter(min_area=0.1), "B"),  # fraction: 0.1 × 192 px = 19.2 px
        (InstanceFilter(min_area=5 / 192), "BAD"),  # fraction: exactly 5 px
        (InstanceFilter(min_score=0.5), "BC"),  # inclusive: C scores exactly 0.5
        (InstanceFilter(min_score=0.375), "BDC"),
        (InstanceFilter(min_score=1.0), ""),
        (InstanceFilter(max_instances=1, min_score=0.5), "B"),
        (InstanceFilter(max_instances=2, min_area=1, min_score=0.1), "BD"),  # filter first, then the K largest
    ],
)
def test_filters_keep_what_they_document(flt, names):
    assert _summary(find_instances(known_mask(), PROBS, PATCH, flt=flt)) == _expected(names)


def test_min_pixels_of_a_fraction_and_of_pixels():
    assert InstanceFilter(min_area=0.25).min_pixels((10, 20)) == 50.0
    assert InstanceFilter(min_area=3).min_pixels((10, 20)) == 3.0


def test_no_object_gives_an_empty_list():
    assert find_instances(np.zeros((12, 16), bool), PROBS, PATCH) == []
    assert find_instances(np.zeros((12, 16), bool), PROBS, PATCH, mode="single") == []
    assert find_instances(known_mask(), PROBS, PATCH, flt=InstanceFilter(min_area=1000)) == []


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"max_instances": 0}, "max_instances"),
        ({"max_instances": -3}, "max_instances"),
        ({"max_instances": 1.5}, "max_instances"),
        ({"max_instances": True}, "max_instances"),
        ({"min_area": -1}, "min_area"),
        ({"min_area": -0.01}, "min_area"),
        ({"min_area": float("nan")}, "min_area"),
        ({"min_area": float("inf")}, "min_area"),
        ({"min_score": 1.5}, "min_score"),
        ({"min_score": -0.1}, "min_score"),
        ({"min_score": float("nan")}, "min_score"),
    ],
)
def test_bad_filter_options_are_one_line_usage_errors(kwargs, name):
    with pytest.raises(InstanceOptionError) as e:
        InstanceFilter(**kwargs)
    msg = str(e.value)
    assert msg.startswith(name) and "\n" not in msg
    assert isinstance(e.value, FoundError) and isinstance(e.value, ValueError) and e.value.exit_code == 2


def test_bad_inputs_are_rejected():
    with pytest.raises(InstanceOptionError, match="mode"):
        find_instances(known_mask(), PROBS, PATCH, mode="all")
    with pytest.raises(ValueError, match="do not cover"):
        find_instances(known_mask(), PROBS[:2], PATCH)
    with pytest.raises(ValueError, match="2-D"):
        find_instances(np.zeros((2, 2, 2), bool), PROBS, PATCH)


@pytest.mark.parametrize("seed", range(6))
def test_patch_mask_instances_reproduce_the_prediction_box_and_score(seed):
    """Instances of the patch mask at image size give Prediction.box and .score exactly
    (component_box of the largest patch component, mean probability over its patches)."""
    rng = np.random.default_rng(seed)
    patch = 8
    hw = (int(rng.integers(20, 70)), int(rng.integers(20, 70)))
    grid = (-(-hw[0] // patch), -(-hw[1] // patch))
    probs = rng.random(grid).astype(np.float32)
    patch_mask = probs > 0.55
    if not patch_mask.any():
        patch_mask[0, 0] = True
    (inst,) = find_instances(patch_mask_pixels(patch_mask, patch, hw), probs, patch, mode="single")
    comp = largest_component(patch_mask)
    assert inst.box_xyxy == tuple(int(v) for v in component_box(comp, hw, patch))
    assert inst.score == float(probs[comp].mean())
    # every patch component is one instance
    assert len(find_instances(patch_mask_pixels(patch_mask, patch, hw), probs, patch)) == ndimage.label(patch_mask)[1]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 24), st.integers(1, 24), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_instances_partition_the_mask(h, w, patch, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((h, w)) < 0.4
    probs = rng.random((-(-h // patch), -(-w // patch)))
    found = find_instances(mask, probs, patch)
    assert sum(i.area for i in found) == int(mask.sum())
    assert [i.area for i in found] == sorted((i.area for i in found), reverse=True)
    total = np.zeros_like(mask, dtype=np.int32)
    for inst in found:
        full = inst.full_mask()
        total += full
        ys, xs = np.nonzero(full)
        assert inst.box_xyxy == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        cells = {(y // patch, x // patch) for y, x in zip(ys, xs)}
        assert inst.score == pytest.approx(np.mean([probs[c] for c in cells]), rel=1e-12)
        assert 0.0 <= inst.score <= 1.0
    assert np.array_equal(total, mask.astype(np.int32))
