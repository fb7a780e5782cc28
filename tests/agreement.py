"""How tests compare two computations of the same masks, so that no test depends on the CPU.

Two paths that compute the same thing (a batch against single images, the engine against the
plain predictor, ONNX Runtime against PyTorch, AVX-512 against AVX2 or no SIMD, 1 thread against
2) sum floats in other orders: their soft masks differ in the last bits (≤ 3e-7 on the tests'
models, ``SOFT_ATOL`` leaves a 30× margin), so a pixel whose probability is that close to the 0.5
threshold may land on either side of it, and a soft value on a rounding edge may take either of
two grey levels. What stays exact on every machine, and is compared exactly here:

* binary masks at every *decided* pixel: one whose probability is further than ``TIE`` from 0.5;
* patch masks at decided patches, and boxes (each tied patch may go either way);
* 8-bit soft masks within one grey level.

Byte-identical comparisons are kept for two runs of one computation on one machine.
"""
from __future__ import annotations

import numpy as np

#: Largest soft-mask difference two paths may show (the tests' models measure ≤ 3e-7).
SOFT_ATOL = 1e-5
#: A probability within TIE of 0.5 is a tie: the binary decision may go either way there. It
#: covers SOFT_ATOL and the 16-bit quantisation (7.6e-6) of recorded soft masks.
TIE = 1e-4


def decided(probability: np.ndarray, tie: float = TIE) -> np.ndarray:
    """Pixels (or patches) whose probability is not a tie with the 0.5 threshold."""
    return np.abs(np.asarray(probability, dtype=np.float64) - 0.5) > tie


def tie_fraction(probability: np.ndarray, tie: float = TIE) -> float:
    """Share of the pixels whose binary decision may go either way (|p − 0.5| ≤ ``tie``)."""
    return float((~decided(probability, tie)).mean())


def assert_masks_agree(got: np.ndarray, ref: np.ndarray, ref_probability: np.ndarray, what: str = "mask",
                       tie: float = TIE, max_ties: float = 0.01) -> None:
    """``got`` equals ``ref`` at every decided pixel; ties are rare (below ``max_ties`` of the pixels),
    so a shifted or mis-padded mask cannot hide among them."""
    got, ref = np.asarray(got, bool), np.asarray(ref, bool)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    firm = decided(ref_probability, tie)
    bad = (got != ref) & firm
    assert not bad.any(), f"{what}: {int(bad.sum())} decided pixels differ (first at {tuple(np.argwhere(bad)[0])})"
    ties = tie_fraction(ref_probability, tie)
    assert ties <= max_ties, f"{what}: {ties:.2%} of the pixels are ties: the comparison is too weak"


def assert_grey_levels_close(got: np.ndarray, ref: np.ndarray, what: str = "image", levels: int = 1) -> None:
    """Two 8-bit images of the same shape differ by at most ``levels`` grey levels anywhere."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    d = np.abs(got.astype(np.int32) - ref.astype(np.int32))
    assert d.max() <= levels, f"{what}: {int((d > levels).sum())} values differ by more than {levels} (max {d.max()})"


def possible_boxes(patch_probs: np.ndarray, image_hw: tuple[int, int], patch: int, tie: float = TIE) -> list:
    """Every box the documented rule can give when each tied patch goes either way (at most 2⁸
    cases): the largest 4-connected component of the patch mask (the first in raster order on
    equal sizes), its patch bounds × ``patch``, x2 / y2 clipped to the image; None when empty."""
    from scipy import ndimage

    probs = np.asarray(patch_probs, dtype=np.float64)
    ties = np.argwhere(~decided(probs, tie))
    assert len(ties) <= 8, f"{len(ties)} tied patches: the comparison is too weak"
    boxes = []
    for case in range(2 ** len(ties)):
        m = probs > 0.5
        for k, (i, j) in enumerate(ties):
            m[i, j] = bool(case >> k & 1)
        labels, n = ndimage.label(m)
        if n == 0:
            box = None
        else:
            ys, xs = np.nonzero(labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:])))
            box = [int(xs.min()) * patch, int(ys.min()) * patch, min(int(xs.max() + 1) * patch, image_hw[1]),
                   min(int(ys.max() + 1) * patch, image_hw[0])]
        if box not in boxes:
            boxes.append(box)
    return boxes


def assert_same_box(got, ref, ref_patch_probs: np.ndarray, image_hw: tuple[int, int], patch: int,
                    what: str = "box") -> None:
    """Boxes equal exactly, unless a patch probability is a tie: then both are among the boxes its
    sides give (so a wrong box rule still fails: the recorded box would not be among them)."""
    as_list = (lambda b: None if b is None else [int(v) for v in b])
    allowed = possible_boxes(ref_patch_probs, image_hw, patch)
    assert as_list(ref) in allowed, f"{what}: reference {as_list(ref)} is not what the rule gives ({allowed})"
    assert as_list(got) in allowed, f"{what}: {as_list(got)} != {as_list(ref)} (allowed: {allowed})"


def assert_instance_boxes_agree(got: list, ref: list, ref_soft: np.ndarray, what: str = "instance boxes") -> None:
    """Boxes of a mask's components: exact when no pixel is a tie, else the same number of boxes,
    each within one pixel (a tied pixel can only move the edge it lies on)."""
    got, ref = [[int(v) for v in b] for b in got], [[int(v) for v in b] for b in ref]
    if decided(ref_soft).all():
        assert got == ref, f"{what}: {got} != {ref}"
        return
    assert len(got) == len(ref), f"{what}: {got} != {ref}"
    assert all(max(abs(a - b) for a, b in zip(g, r)) <= 1 for g, r in zip(got, ref)), f"{what}: {got} != {ref}"


def assert_same_prediction(got, ref, what: str = "prediction", soft_atol: float = SOFT_ATOL) -> None:
    """Two predictions of one image agree in everything that does not depend on float rounding:
    soft within ``soft_atol``, masks and patch masks at decided pixels, box, score."""
    assert got.soft.shape == ref.soft.shape, f"{what}: {got.soft.shape} != {ref.soft.shape}"
    d = float(np.abs(got.soft.astype(np.float64) - ref.soft).max()) if got.soft.size else 0.0
    assert d <= soft_atol, f"{what}: soft masks differ by {d:.3g} > {soft_atol}"
    assert_masks_agree(got.mask, ref.mask, ref.soft, f"{what} mask")
    probs = ref.patch_probs if ref.patch_probs is not None else ref.patch_mask.astype(np.float32)
    assert_masks_agree(got.patch_mask, ref.patch_mask, probs, f"{what} patch mask", max_ties=1.0)
    assert_same_box(got.box, ref.box, probs, ref.mask.shape, ref.patch, f"{what} box")
    assert abs(float(got.score) - float(ref.score)) <= soft_atol, f"{what}: score {got.score} != {ref.score}"
