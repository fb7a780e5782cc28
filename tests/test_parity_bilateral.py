"""Parity of found.refine with FOUND's bilateral solver on ``bilateral_cases.npz``.

Every case found in the fixture is checked (the same tests run on a held-out fixture set with
other images, sizes and case counts). Tolerances (see docs/refinement.md): soft outputs atol 1e-8
in float64 (observed ~1e-14); grid sizes, binaries, accept decisions and pseudo-labels exact;
accept IoUs within 1e-6 (they are float32 values computed from exact binaries).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_parity, n_cases
from found.refine import bilateral_solve, postprocess, pseudo_labels, refine_masks, solve_batch

pytestmark = pytest.mark.parity

SOFT_ATOL = 1e-8
MASKS = ("clean", "noisy")
KEEPS = (("single", "largest"), ("all", "all_cc"))


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    d = load_parity("bilateral_cases.npz")
    out = [{k.split("_", 1)[1]: v for k, v in d.items() if k.startswith(f"c{i}_")} for i in range(n_cases(d))]
    assert out, "bilateral_cases.npz holds no case"
    return out


@pytest.fixture(scope="module")
def solved(cases) -> dict:
    """Soft outputs of every (case, mask): each image alone, and all of them in one batched call."""
    single = {(i, m): bilateral_solve([c["image"]], [c[f"mask_{m}"]])[0].numpy()
              for i, c in enumerate(cases) for m in MASKS}
    keys = list(single)
    batch = solve_batch([cases[i]["image"] for i, _ in keys], [cases[i][f"mask_{m}"] for i, m in keys])
    return {"single": single, "batch": dict(zip(keys, (s.numpy() for s in batch.soft))),
            "n_vertices": dict(zip(keys, batch.n_vertices))}


def _name(c: dict) -> str:
    return str(c["name"])


def test_grid_vertex_count(cases, solved):
    for i, c in enumerate(cases):
        for m in MASKS:
            assert solved["n_vertices"][i, m] == int(c["n_vertices"]), f"{_name(c)}: vertex count"


@pytest.mark.parametrize("mode", ["single", "batch"])
def test_soft_output(cases, solved, mode):
    for i, c in enumerate(cases):
        for m in MASKS:
            ours, ref = solved[mode][i, m], c[f"soft_{m}"]
            assert ours.dtype == np.float64 and ours.shape == ref.shape
            err = np.abs(ours - ref).max()
            assert err <= SOFT_ATOL, f"{_name(c)}/{m}: max |Δ| {err:.2e}"
            # the threshold itself, exact-0.5 ties included (isolated vertices keep their mean)
            assert np.array_equal(ours > 0.5, ref > 0.5), f"{_name(c)}/{m}: soft > 0.5 differs"
            assert np.array_equal(ours == 0.5, ref == 0.5), f"{_name(c)}/{m}: exact-0.5 pixels differ"


def test_batched_equals_single(cases, solved):
    for key, soft in solved["single"].items():
        assert np.abs(soft - solved["batch"][key]).max() <= 1e-12, f"{_name(cases[key[0]])}/{key[1]}"


def test_binaries(cases, solved):
    for i, c in enumerate(cases):
        for m in MASKS:
            for keep, ref_key in KEEPS:
                ours = postprocess(solved["single"][i, m], keep)
                assert ours.dtype == bool
                assert np.array_equal(ours, c[f"binary_{ref_key}_{m}"]), f"{_name(c)}/{m}/{keep}"


def test_accept_decisions(cases):
    for keep, ref_key in KEEPS:
        images = [c["image"] for c in cases for _ in MASKS]
        masks = [c[f"mask_{m}"] for c in cases for m in MASKS]
        results = iter(refine_masks(images, masks, keep=keep))
        for c in cases:
            for m in MASKS:
                res = next(results)
                where = f"{_name(c)}/{m}/{keep}"
                assert np.array_equal(res.binary, c[f"binary_{ref_key}_{m}"]), where
                assert res.accepted == bool(c[f"accept_{ref_key}_{m}"]), where
                assert res.iou == pytest.approx(float(c[f"accept_iou_{ref_key}_{m}"]), abs=1e-6, nan_ok=True), where
                expected = res.binary if res.accepted else c[f"mask_{m}"] > 0.5
                assert np.array_equal(res.mask, expected), where


def test_pseudo_label_solver_binary(cases):
    """The training target (patch mask resized to the image) through solver + post-processing."""
    softs = bilateral_solve([c["image"] for c in cases], [c["patch_mask_resized"] for c in cases])
    for c, soft in zip(cases, softs):
        for keep, ref_key in KEEPS:
            assert np.array_equal(postprocess(soft, keep), c[f"pseudo_bs_binary_{ref_key}"]), f"{_name(c)}/{keep}"


def test_pseudo_labels(cases):
    for c in cases:
        image = torch.from_numpy(c["image"]).permute(2, 0, 1).unsqueeze(0).float() / 255  # ToTensor
        for (keep, ref_key), shape in zip(KEEPS, ("bhw", "b1hw")):  # both mask layouts, both modes
            mask = torch.from_numpy(c["patch_mask"])
            mask = mask[None, None] if shape == "b1hw" else mask[None]
            labels, accepted = pseudo_labels(image, mask, patch=8, keep=keep)
            where = f"{_name(c)}/{keep}/{shape}"
            assert labels.dtype == torch.bool and labels.shape == (1, *c["patch_mask"].shape), where
            assert accepted.dtype == torch.bool and accepted.shape == (1,), where
            assert np.array_equal(labels[0].numpy(), c[f"pseudo_label_{ref_key}"]), where
            assert bool(accepted[0]) == bool(c[f"pseudo_used_bs_{ref_key}"]), where
            # the reference returns a bool tensor exactly when it used the solver output
            assert bool(accepted[0]) == bool(c[f"pseudo_label_is_bool_{ref_key}"]), where


def test_pseudo_labels_batched(cases):
    """Cases of equal size solved as one training batch give the per-case labels."""
    by_size: dict[tuple, list[dict]] = {}
    for c in cases:
        by_size.setdefault(c["image"].shape, []).append(c)
    for group in by_size.values():
        images = torch.stack([torch.from_numpy(c["image"]).permute(2, 0, 1) for c in group]).float() / 255
        masks = torch.stack([torch.from_numpy(c["patch_mask"]) for c in group])
        labels, accepted = pseudo_labels(images, masks)
        for j, c in enumerate(group):
            assert np.array_equal(labels[j].numpy(), c["pseudo_label_all_cc"]), _name(c)
            assert bool(accepted[j]) == bool(c["pseudo_used_bs_all_cc"]), _name(c)


@pytest.mark.slow
def test_device_agnostic_code_path(cases, monkeypatch):
    """The pure-torch path used on GPUs (no numpy helpers, whole batch at once, colour table
    instead of the per-pixel colour maths), run here on CPU, reproduces the reference too."""
    from found.refine import RefineSettings, solver

    monkeypatch.setattr(solver, "CPU_CHUNK_PIXELS", 1 << 40)
    monkeypatch.setattr(solver, "LUT_MIN_PIXELS", 0)
    try:
        out = solve_batch([c["image"] for c in cases for _ in MASKS], [c[f"mask_{m}"] for c in cases for m in MASKS],
                          settings=RefineSettings(backend="torch"))
    finally:
        solver.clear_caches()
    softs = iter(out.soft)
    n_vert = iter(out.n_vertices)
    for c in cases:
        for m in MASKS:
            soft = next(softs).numpy()
            assert next(n_vert) == int(c["n_vertices"]), _name(c)
            assert np.abs(soft - c[f"soft_{m}"]).max() <= SOFT_ATOL, f"{_name(c)}/{m}"
            assert np.array_equal(soft > 0.5, c[f"soft_{m}"] > 0.5), f"{_name(c)}/{m}"
