"""Unit tests of found.refine: exact colour conversion, solver vs a scipy formulation, odd inputs,
post-processing rules, the inference and training entry points."""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math

import numpy as np
import pytest
import torch

from conftest import REPO
from found.refine import (
    bilateral_solve,
    clear_caches,
    mask_iou,
    postprocess,
    pseudo_labels,
    refine_masks,
    RefineSettings,
    rgb_to_yuv,
    solve_batch,
)
from found.refine import colour, grid, inputs, numpy_solver, solver
from found.refine.refinement import downsample_binary

TORCH = RefineSettings(backend="torch")  # the device-agnostic torch path (what GPUs run), here on CPU

RGB_TO_YUV = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
OFFSET = np.array([0.0, 128.0, 128.0])


def _sigmas(sigmas: tuple[float, float, float], **kw) -> RefineSettings:
    """Settings with (sigma_spatial, sigma_luma, sigma_chroma) = ``sigmas``."""
    return RefineSettings(**dict(zip(("sigma_spatial", "sigma_luma", "sigma_chroma"), sigmas)), **kw)


def _scipy_baseline():
    spec = importlib.util.spec_from_file_location("scipy_bilateral", REPO / "benchmarks" / "scipy_bilateral.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _numpy_yuv(rgb: np.ndarray) -> np.ndarray:
    """The authors' rgb2yuv (np.tensordot) on [N, 3] uint8."""
    return np.tensordot(rgb[None], RGB_TO_YUV, ([2], [1]))[0] + OFFSET


@functools.lru_cache(maxsize=1)
def _boundary_colours() -> np.ndarray:
    """All colours whose Y (σ 16), U or V (σ 8) is exactly on a grid-cell boundary in decimal
    arithmetic, where the float rounding of the reference decides the coordinate."""
    c = np.arange(256, dtype=np.int64)
    r, g, b = (a.ravel() for a in np.meshgrid(c, c, c, indexing="ij"))
    ny = 299 * r + 587 * g + 114 * b
    nu = -168736 * r - 331264 * g + 500000 * b + 128_000_000
    nv = 500000 * r - 418688 * g - 81312 * b + 128_000_000
    sel = (ny % 16000 == 0) | (nu % 8_000_000 == 0) | (nv % 8_000_000 == 0)
    return np.stack([r[sel], g[sel], b[sel]], 1).astype(np.uint8)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour image with some flat grey areas (uint8 [h, w, 3])."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([np.sin(yy / 7 + k) * np.cos(xx / 11 - k) for k in range(3)], -1)
    img = (base * 90 + 128 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
    img[: h // 4, : w // 3] = img[: h // 4, : w // 3, :1]  # grey block
    return img


def _ellipse(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    m = ((yy - h * 0.5) / (h * 0.3)) ** 2 + ((xx - w * 0.45) / (w * 0.25)) ** 2 <= 1
    return (m ^ (rng.random((h, w)) < 0.03)).astype(np.float32)


# --------------------------------------------------------------------------- exact colour conversion
def test_rgb_to_yuv_bit_exact_with_numpy():
    greys = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1)
    rand = np.random.default_rng(1).integers(0, 256, (200_000, 3)).astype(np.uint8)
    for rgb in (greys, rand, _boundary_colours()):
        ours = rgb_to_yuv(torch.from_numpy(rgb)).numpy()
        assert np.array_equal(ours, _numpy_yuv(rgb))


def test_plain_float64_would_not_be_exact():
    """Guard for the FMA emulation: a naive float64 evaluation differs on boundary colours."""
    rgb = _boundary_colours()
    f = rgb.astype(np.float64)
    naive = (f[:, :1] * RGB_TO_YUV[:, 0] + f[:, 1:2] * RGB_TO_YUV[:, 1]) + f[:, 2:] * RGB_TO_YUV[:, 2] + OFFSET
    assert not np.array_equal(naive, _numpy_yuv(rgb))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("sigmas", [(16.0, 8.0), (4.0, 4.0), (12.5, 3.0), (255.0, 0.7)])
def test_colour_coordinates_exact(sigmas, backend):
    s_l, s_c = sigmas
    settings = RefineSettings(sigma_luma=s_l, sigma_chroma=s_c, backend=backend)
    rgb = np.concatenate([_boundary_colours(), np.random.default_rng(2).integers(0, 256, (50_000, 3)).astype(np.uint8),
                          np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1)])
    yuv = _numpy_yuv(rgb)
    ref = np.stack([(yuv[:, 0] / s_l).astype(int), (yuv[:, 1] / s_c).astype(int), (yuv[:, 2] / s_c).astype(int)], 1)
    ours = torch.stack(colour.colour_coords(torch.from_numpy(rgb), settings), 1).numpy()
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("sigmas", [(16.0, 16.0, 8.0), (1.0, 16.0, 8.0)], ids=["compact-key", "authors-hash"])
def test_cpu_and_torch_grids_are_the_same_grid(sigmas):
    """The CPU (numpy) grid is the torch grid with its vertices renumbered (by image, then number of
    neighbours) and without padding: same vertices, pixel → vertex map, counts and neighbour rows,
    each row's entries in the same (key) order."""
    imgs = [_image(37, 53, 1), _image(20, 300, 2), _image(37, 53, 3)]
    rgb = np.concatenate([im.reshape(-1, 3) for im in imgs])
    sizes = [im.shape[:2] for im in imgs]
    settings = _sigmas(sigmas)
    flat = numpy_solver.build_flat_grid(rgb, sizes, settings)
    ref = grid.build_grid(torch.from_numpy(rgb), sizes, settings.replace(backend="torch"))
    nv = ref.n_vertices.numpy()
    assert flat.n_vertices == nv.tolist()
    # slot in the padded torch layout of each CPU vertex (order: its rank in key order, images concatenated)
    image = np.repeat(np.arange(len(sizes)), nv)[flat.order]
    slot = image * ref.v_max + flat.order - np.concatenate([[0], np.cumsum(nv)[:-1]])[image]
    assert np.array_equal(np.sort(flat.order), np.arange(nv.sum()))
    assert np.array_equal(slot[np.repeat(flat.run_vertex, flat.run_len)], ref.pixel_slot.numpy())
    assert np.array_equal(flat.counts, ref.counts.numpy()[slot])
    assert np.array_equal(flat.indices[flat.diag_pos], np.arange(nv.sum()))
    crow, col = ref.crow.numpy(), ref.col.numpy()
    for j in range(nv.sum()):
        ours = slot[flat.indices[flat.indptr[j]:flat.indptr[j + 1]]]
        assert np.array_equal(ours, col[crow[slot[j]]:crow[slot[j] + 1]]), j
    deg = np.diff(flat.indptr)
    for i in range(len(sizes)):  # vertices grouped by image, then by number of neighbours
        lo = sum(nv[:i])
        assert np.all(np.diff(deg[lo:lo + nv[i]]) >= 0)


@pytest.mark.parametrize("sigmas", [(16.0, 16.0, 8.0), (5.0, 7.0, 3.0)])
def test_dense_lookup_table_builds_the_same_grid_as_sorting(sigmas, monkeypatch):
    """The dense (colour cell, spatial cell) table finds exactly the vertices, run → vertex map and
    neighbours that sorting and searching the keys find, images of a batch included."""
    imgs = [_image(37, 53, 1), _image(20, 90, 2), _image(64, 64, 3)]
    rgb = np.concatenate([im.reshape(-1, 3) for im in imgs])
    sizes = [im.shape[:2] for im in imgs]
    settings = _sigmas(sigmas)
    lay = grid.key_layout(sizes, settings)
    keys = np.unique(numpy_solver.pixel_keys(rgb, sizes, settings, lay))
    assert numpy_solver.dense_index(keys, lay) is not None  # the table path is what runs
    table = numpy_solver.build_flat_grid(rgb, sizes, settings)
    assert all(len(src) for src, *_ in table.links)  # links along every dimension
    monkeypatch.setattr(numpy_solver, "DENSE_LOOKUP_MAX", 0)
    assert numpy_solver.dense_index(keys, lay) is None
    search = numpy_solver.build_flat_grid(rgb, sizes, settings)
    for name in ("run_start", "run_len", "run_vertex", "n_vertices", "order", "counts", "indptr", "indices",
                 "diag_pos"):
        assert np.array_equal(getattr(table, name), getattr(search, name)), name
    for a, b in zip(table.links, search.links):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_cpu_matvec_without_the_private_kernel(monkeypatch):
    """The CPU solver calls scipy's compiled CSR kernel directly; without it (another scipy) it uses
    the public operator, with identical results."""
    imgs = [_image(40, 50, 1), _image(30, 20, 2)]
    masks = [_ellipse(40, 50), (_ellipse(30, 20) * 0.6 + 0.2).astype(np.float32)]
    assert numpy_solver.KERNEL is not None  # this scipy has it: the fast path is what runs
    fast = solve_batch(imgs, masks)
    one = solve_batch(imgs[:1], masks[:1])
    monkeypatch.setattr(numpy_solver, "KERNEL", None)
    plain = solve_batch(imgs, masks)
    assert plain.iterations == fast.iterations
    assert all(torch.equal(a, b) for a, b in zip(fast.soft, plain.soft))
    assert torch.equal(one.soft[0], solve_batch(imgs[:1], masks[:1]).soft[0])


def test_private_kernel_is_used_only_if_it_computes_correctly(monkeypatch):
    from scipy.sparse import _sparsetools

    assert numpy_solver._find_kernel() is _sparsetools.csr_matvec
    monkeypatch.setattr(_sparsetools, "csr_matvec", lambda *args: None, raising=False)  # computes nothing
    assert numpy_solver._find_kernel() is None
    monkeypatch.delattr(_sparsetools, "csr_matvec")
    assert numpy_solver._find_kernel() is None


def test_spatial_key_maps_are_cached_only_for_small_images(monkeypatch):
    monkeypatch.setattr(numpy_solver, "SPATIAL_CACHE_PIXELS", 40 * 40)
    clear_caches()
    small, large = _image(30, 40), _image(50, 60)
    for im in (small, large, small):
        out = solve_batch([im], [_ellipse(*im.shape[:2])])
        assert out.soft[0].shape == im.shape[:2]
    assert numpy_solver._cached_spatial_map.cache_info().currsize == 1  # the small image's, reused
    assert numpy_solver._cached_spatial_map.cache_info().hits == 1
    clear_caches()
    assert numpy_solver._cached_spatial_map.cache_info().currsize == 0


def test_float32_solver_on_cpu():
    """dtype=float32 runs the CPU solver in single precision (float32 products and BLAS): outputs
    are float32 and within single-precision error of float64 and of the torch path."""
    imgs = [_image(40, 50, 1), _image(30, 20, 2)]
    masks = [_ellipse(40, 50), (_ellipse(30, 20) * 0.6 + 0.2).astype(np.float32)]
    f64 = bilateral_solve(imgs, masks)
    for batch in (imgs, imgs[:1]):
        f32 = bilateral_solve(batch, masks[:len(batch)], settings=RefineSettings(dtype=torch.float32))
        plain = bilateral_solve(batch, masks[:len(batch)], settings=TORCH.replace(dtype=torch.float32))
        for a, b, c in zip(f32, plain, f64):
            assert a.dtype == torch.float32
            assert (a.double() - c).abs().max() < 1e-4 and (a - b).abs().max() < 1e-4


def test_inputs_that_require_grad_are_accepted():
    img = torch.from_numpy(_image(20, 24)).permute(2, 0, 1).double().div(255).requires_grad_()
    mask = torch.from_numpy(_ellipse(20, 24)).requires_grad_()
    soft = bilateral_solve([img], [mask])[0]
    ref = bilateral_solve([img.detach()], [mask.detach()])[0]
    assert not soft.requires_grad and torch.equal(soft, ref)


def test_colour_lut_matches_direct_path(monkeypatch):
    rgb = torch.from_numpy(np.concatenate([_boundary_colours(),
                                           np.random.default_rng(3).integers(0, 256, (100_000, 3)).astype(np.uint8)]))
    settings = RefineSettings()
    lay = grid.key_layout([(8, 8)], settings)
    clear_caches()
    direct = grid.colour_key(rgb, settings, lay, torch.int64)
    wl, wu, wv = lay.weights[2:]
    assert colour.colour_table(settings, (wu // wl, wv // wl), rgb.device, build=True) is not None
    via_lut = grid.colour_key(rgb, settings, lay, torch.int64)
    clear_caches()
    assert np.array_equal(direct.numpy(), via_lut.numpy())


def test_colour_table_is_built_once_enough_pixels_were_solved(monkeypatch):
    """Small calls add up: the table appears once the calls with these sigmas have solved
    LUT_MIN_PIXELS pixels in all (not before), and results do not change when it does."""
    imgs = [_image(40, 50, k) for k in range(3)]
    masks = [_ellipse(40, 50, k) for k in range(3)]
    clear_caches()
    monkeypatch.setattr(solver, "LUT_MIN_PIXELS", 3 * 40 * 50)
    try:
        first = [bilateral_solve([im], [m])[0] for im, m in zip(imgs[:2], masks[:2])]
        assert not colour._LUT_CACHE  # 2 × 2,000 pixels so far
        bilateral_solve(imgs[2:], masks[2:], settings=RefineSettings(sigma_luma=8))  # other sigmas count separately
        assert not colour._LUT_CACHE
        third = bilateral_solve(imgs[2:], masks[2:])[0]  # 6,000 pixels with these sigmas: built
        assert len(colour._LUT_CACHE) == 1
        again = [bilateral_solve([im], [m])[0] for im, m in zip(imgs, masks)]
    finally:
        clear_caches()
    assert not colour._LUT_CACHE and not solver._PIXELS_SOLVED
    for a, b in zip([*first, third], again):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- solver vs scipy formulation
@pytest.mark.parametrize(
    "shape, kw",
    [
        ((37, 53), {}),
        ((64, 48), {"sigma_spatial": 8, "sigma_luma": 4, "sigma_chroma": 4}),
        ((50, 70), {"sigma_spatial": 12.5, "sigma_luma": 7, "sigma_chroma": 3, "lam": 100.0}),
        ((40, 300), {"sigma_spatial": 1}),  # x coordinates > 253: the authors' 255-hash itself
        ((30, 40), {"max_iter": 3}),
        ((30, 40), {"tol": 0.5}),
        ((30, 40), {"max_iter": 0}),
    ],
)
def test_matches_scipy_formulation(shape, kw):
    sb = _scipy_baseline()
    img, mask = _image(*shape, seed=shape[1]), _ellipse(*shape, seed=shape[0])
    soft_target = (mask * 0.8 + 0.1).astype(np.float32)  # non-binary target
    for target in (mask, soft_target):
        out = solve_batch([img], [target], settings=RefineSettings(**kw))
        ref, n_vert = sb.solve(img, target, **kw)
        assert out.n_vertices == [n_vert]
        assert np.abs(out.soft[0].numpy() - ref).max() <= 1e-10


def test_authors_hash_collisions_are_reproduced():
    """With σ_spatial = 1 on a flat 6×300 image the key 'x + 255·y + …' collides ((x, y) ≡ (x − 255,
    y + 1) for x ≥ 255): the reference merges those 5·45 vertices and so do we."""
    sb = _scipy_baseline()
    img = np.full((6, 300, 3), 90, np.uint8)
    mask = _ellipse(6, 300)
    out = solve_batch([img], [mask], settings=RefineSettings(sigma_spatial=1))
    assert out.n_vertices == [6 * 300 - 5 * 45]
    ref, n_vert = sb.solve(img, mask, sigma_spatial=1)
    assert n_vert == out.n_vertices[0]
    assert np.abs(out.soft[0].numpy() - ref).max() <= 1e-10


def test_iteration_count_and_tolerance_rule():
    img, mask = _image(40, 40), _ellipse(40, 40)
    assert solve_batch([img], [mask], settings=RefineSettings(max_iter=7)).iterations == [7]
    # ‖r0‖ < tol·‖b‖ at the first check
    assert solve_batch([img], [mask], settings=RefineSettings(tol=1e9)).iterations == [0]
    flat = solve_batch([img], [mask], settings=RefineSettings(max_iter=0)).soft[0]
    assert torch.equal(flat, solve_batch([img], [mask], settings=RefineSettings(tol=1e9)).soft[0])
    assert solve_batch([img], [np.zeros((40, 40))]).iterations == [0]  # b = 0


def test_batch_composition_does_not_change_results():
    imgs = [_image(31, 45, 1), _image(64, 64, 2), _image(17, 90, 3)]
    masks = [_ellipse(31, 45), _ellipse(64, 64), _ellipse(17, 90)]
    together = bilateral_solve(imgs, masks)
    for img, mask, soft in zip(imgs, masks, together):
        alone = bilateral_solve([img], [mask])[0]
        assert soft.shape == alone.shape
        assert (soft - alone).abs().max() <= 1e-12


def test_cpu_chunking_is_invisible(monkeypatch):
    imgs = [_image(40, 50, k) for k in range(5)]
    masks = [_ellipse(40, 50, k) for k in range(5)]
    ref = bilateral_solve(imgs, masks)
    monkeypatch.setattr(solver, "CPU_CHUNK_PIXELS", 1)  # one image per chunk
    for a, b in zip(ref, bilateral_solve(imgs, masks)):
        assert (a - b).abs().max() <= 1e-12


def test_parallel_cpu_chunks_match_sequential(monkeypatch):
    """Chunks solved on a thread pool (one per torch thread) give exactly the sequential results,
    keep the input order, and leave torch's thread count as it was."""
    imgs = [_image(30 + 3 * k, 41, k) for k in range(6)]
    masks = [_ellipse(30 + 3 * k, 41, k) for k in range(6)]
    monkeypatch.setattr(solver, "CPU_CHUNK_PIXELS", 1)  # one image per chunk
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        sequential = solve_batch(imgs, masks)
        torch.set_num_threads(3)
        parallel = solve_batch(imgs, masks)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    assert parallel.n_vertices == sequential.n_vertices and parallel.iterations == sequential.iterations
    for a, b in zip(sequential.soft, parallel.soft):
        assert torch.equal(a, b)


def test_concurrent_solves_restore_the_thread_count(monkeypatch):
    """Two threads solving multi-chunk batches at once share the one-thread override; the
    caller's torch thread count is back afterwards and both results are right."""
    from concurrent.futures import ThreadPoolExecutor

    imgs = [_image(24, 30, k) for k in range(4)]
    masks = [_ellipse(24, 30, k) for k in range(4)]
    monkeypatch.setattr(solver, "CPU_CHUNK_PIXELS", 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ref = bilateral_solve(imgs, masks)
        torch.set_num_threads(3)
        with ThreadPoolExecutor(2) as pool:
            outs = list(pool.map(lambda _: bilateral_solve(imgs, masks), range(6)))
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    for out in outs:
        assert all(torch.equal(a, b) for a, b in zip(ref, out))


def test_cg_backends_agree():
    """The numpy/scipy CG used on CPU and the torch CG used on other devices run the same
    iterations and agree to rounding, for a batch of different sizes."""
    imgs = [_image(33, 47, 1), _image(52, 20, 2), _image(20, 30, 3)]
    masks = [_ellipse(33, 47), (_ellipse(52, 20) * 0.7 + 0.2).astype(np.float32), np.zeros((20, 30))]  # b = 0
    for kw in ({}, {"max_iter": 4}, {"tol": 0.2}):  # tol 0.2: the images stop after 14 and 10 steps
        settings = RefineSettings(**kw)
        fast = solve_batch(imgs, masks, settings=settings)
        alone = [solve_batch([im], [m], settings=settings) for im, m in zip(imgs, masks)]  # the one-image CG
        plain = solve_batch(imgs, masks, settings=settings.replace(backend="torch"))
        assert fast.iterations == plain.iterations == [a.iterations[0] for a in alone]
        assert fast.n_vertices == plain.n_vertices
        assert fast.iterations[2] == 0
        if "tol" in kw:
            assert fast.iterations[0] != fast.iterations[1]
        for a, b, c in zip(fast.soft, plain.soft, alone):
            assert (a - b).abs().max() <= 1e-12 and (a - c.soft[0]).abs().max() <= 1e-12


# --------------------------------------------------------------------------- odd inputs
def test_mask_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="does not match the image size"):
        bilateral_solve([_image(20, 30)], [np.zeros((30, 20))])
    with pytest.raises(ValueError, match="2 images but 1 masks"):
        bilateral_solve([_image(20, 30)] * 2, [np.zeros((20, 30))])


def test_empty_mask():
    img = _image(24, 32)
    soft = bilateral_solve([img], [np.zeros((24, 32))])[0]
    assert torch.count_nonzero(soft) == 0  # b = 0: scipy returns b itself
    assert postprocess(soft, "single").all()  # nothing labelled → the reference's all-ones fallback
    assert not postprocess(soft, "all").any()
    for keep in ("single", "all"):
        res = refine_masks([img], [np.zeros((24, 32), dtype=bool)], keep=keep)[0]
        assert not res.accepted and not res.mask.any()
    assert math.isnan(refine_masks([img], [np.zeros((24, 32))], keep="all")[0].iou)  # 0/0


def test_full_mask_returns_background_and_is_rejected():
    img = _image(24, 32)
    soft = bilateral_solve([img], [np.ones((24, 32))])[0]
    assert (soft - 1).abs().max() < 1e-6
    for keep in ("single", "all"):
        res = refine_masks([img], [np.ones((24, 32))], keep=keep)[0]
        assert not res.binary.any()  # the one component is "the background": dropped
        assert res.iou == 0.0 and not res.accepted
        assert res.mask.all()  # the input mask is kept


@pytest.mark.parametrize("layout", ["hw", "hw1"])
def test_grayscale_images_are_replicated(layout):
    grey = _image(20, 28)[..., 0]
    img = grey if layout == "hw" else grey[..., None]
    mask = _ellipse(20, 28)
    ref = bilateral_solve([np.repeat(grey[..., None], 3, 2)], [mask])[0]
    assert torch.equal(bilateral_solve([img], [mask])[0], ref)


def test_float_and_pil_images():
    from PIL import Image

    img, mask = _image(20, 28), _ellipse(20, 28)
    ref = bilateral_solve([img], [mask])[0]
    as_float = torch.from_numpy(img).permute(2, 0, 1).float() / 255  # ToTensor
    assert torch.equal(bilateral_solve([as_float], [mask])[0], ref)
    assert torch.equal(bilateral_solve([Image.fromarray(img)], [mask])[0], ref)
    # float images are truncated like ToPILImage (x·255 → uint8), not rounded
    assert torch.equal(inputs.as_rgb_uint8(torch.full((3, 2, 2), 0.999)), torch.full((2, 2, 3), 254, dtype=torch.uint8))


def test_one_pixel_image():
    for value in (0.0, 0.3, 1.0):
        soft = bilateral_solve([np.full((1, 1, 3), 77, np.uint8)], [np.full((1, 1), value)])[0]
        assert soft.shape == (1, 1) and soft.item() == pytest.approx(value, abs=1e-12)
    res = refine_masks([np.full((1, 1, 3), 77, np.uint8)], [np.ones((1, 1))])[0]
    assert res.binary.shape == (1, 1) and not res.accepted


def test_invalid_inputs():
    img, mask = _image(10, 10), _ellipse(10, 10)
    with pytest.raises(TypeError):
        bilateral_solve([img.astype(np.int64)], [mask])
    with pytest.raises(ValueError, match="channel"):
        bilateral_solve([np.zeros((10, 10, 4), np.uint8)], [mask])
    with pytest.raises(ValueError, match="NaN"):
        bilateral_solve([img], [np.full((10, 10), np.nan)])
    with pytest.raises(ValueError, match="sigma_luma"):
        RefineSettings(sigma_luma=0)
    with pytest.raises(ValueError, match="keep"):
        postprocess(np.zeros((4, 4)), keep="largest")
    with pytest.raises(ValueError, match="single array"):
        refine_masks(img, [mask])
    with pytest.raises(TypeError):
        refine_masks([img], [mask], sigma=3)
    with pytest.raises(TypeError, match="unknown refine setting"):
        RefineSettings().replace(sigma=3)
    with pytest.raises(TypeError, match="RefineSettings"):
        bilateral_solve([img], [mask], settings={"lam": 1.0})
    assert bilateral_solve([], []) == []


# --------------------------------------------------------------------------- settings and backends
def test_settings_are_validated_and_normalised():
    s = RefineSettings(sigma_spatial=8, lam=100, max_iter=np.int64(5))
    assert s.sigmas == (8.0, 16.0, 8.0) and isinstance(s.lam, float) and type(s.max_iter) is int
    assert s.replace(tol=0.5) == RefineSettings(sigma_spatial=8, lam=100, max_iter=5, tol=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.lam = 1.0
    for bad, word in [({"sigma_chroma": -1}, "sigma_chroma"), ({"lam": float("nan")}, "lam"),
                      ({"max_iter": 2.5}, "max_iter"), ({"bistochastize_iters": True}, "bistochastize_iters"),
                      ({"tol": -1e-3}, "tol"), ({"confidence": 0}, "confidence"), ({"a_diag_min": 0}, "a_diag_min"),
                      ({"dtype": torch.float16}, "dtype"), ({"backend": "cuda"}, "backend")]:
        with pytest.raises(ValueError, match=word):
            RefineSettings(**bad)


def test_backend_chooses_the_solver(monkeypatch):
    """"auto" and "numpy" run the numpy solver on CPU tensors, "torch" the torch solver (what GPUs
    run), with the same results."""
    img, mask = _image(30, 40), _ellipse(30, 40)
    calls = []

    def spy(module):
        real = module.solve
        monkeypatch.setattr(module, "solve", lambda *a: calls.append(module.__name__) or real(*a))

    from found.refine import torch_solver
    spy(numpy_solver)
    spy(torch_solver)
    outs = {b: solve_batch([img], [mask], settings=RefineSettings(backend=b)) for b in ("auto", "numpy", "torch")}
    assert calls == ["found.refine.numpy_solver"] * 2 + ["found.refine.torch_solver"]
    assert torch.equal(outs["auto"].soft[0], outs["numpy"].soft[0])
    assert (outs["auto"].soft[0] - outs["torch"].soft[0]).abs().max() <= 1e-12


def test_numpy_backend_on_a_gpu_is_a_one_line_error():
    numpy_only = RefineSettings(backend="numpy")
    with pytest.raises(ValueError, match="backend='numpy' solves CPU tensors only") as err:
        numpy_only.check_device("cuda")
    assert "\n" not in str(err.value)
    numpy_only.check_device("cpu")
    RefineSettings().check_device("cuda")  # "auto" runs torch there
    img, mask = _image(10, 12), _ellipse(10, 12)
    for call in (lambda: bilateral_solve([img], [mask], settings=numpy_only, device="meta"),
                 lambda: refine_masks([img], [mask], settings=numpy_only, device="meta"),
                 lambda: pseudo_labels(torch.rand(1, 3, 16, 24), torch.ones(1, 2, 3), settings=numpy_only,
                                       device="meta")):
        with pytest.raises(ValueError, match="backend='numpy'"):
            call()


def test_settings_reach_every_entry_point():
    img, mask = _image(30, 40), _ellipse(30, 40)
    settings = RefineSettings(max_iter=2, sigma_luma=4)
    soft = solve_batch([img], [mask], settings=settings).soft[0]
    assert torch.equal(bilateral_solve([img], [mask], settings=settings)[0], soft)
    assert not torch.equal(bilateral_solve([img], [mask])[0], soft)
    assert np.array_equal(refine_masks([img], [mask], settings=settings)[0].soft, soft.numpy())


# --------------------------------------------------------------------------- post-processing rules
def _blobs() -> np.ndarray:
    soft = np.zeros((20, 20))
    soft[2:10, 2:10] = 0.9  # 64 px with a hole
    soft[5:7, 5:7] = 0.1
    soft[14:17, 14:19] = 0.8  # 15 px
    soft[0, 19] = 0.5  # exactly 0.5: background (strict >)
    return soft


def test_postprocess_single_and_all():
    single, every = postprocess(_blobs(), "single"), postprocess(_blobs(), "all")
    assert single.sum() == 64 and single[5, 5]  # largest component, hole filled
    assert every.sum() == 64 + 15 and not every[0, 19]
    assert np.array_equal(postprocess(torch.from_numpy(_blobs()), "all"), every)


def test_postprocess_assumes_background_is_largest():
    soft = np.full((10, 10), 0.9)
    soft[0, :3] = 0.0  # a foreground of 97 px, background of 3 px
    assert np.array_equal(postprocess(soft, "single"), soft < 0.5)  # → the background
    assert np.array_equal(postprocess(soft, "all"), soft < 0.5)


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4))
    b[1:3] = 1.0
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(a, b) == float(np.float32(4) / np.float32(12))
    assert mask_iou(a, torch.from_numpy(a)) == 1.0
    assert math.isnan(mask_iou(np.zeros((3, 3)), np.zeros((3, 3))))
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(np.zeros((3, 3)), np.zeros((3, 4)))


# --------------------------------------------------------------------------- entry points
def test_refine_masks_rule():
    img = _image(48, 64)
    mask = _ellipse(48, 64) > 0.5
    for keep in ("single", "all"):
        res = refine_masks([img], [mask], keep=keep)[0]
        assert res.binary.dtype == bool and res.mask.dtype == bool and res.soft.dtype == np.float64
        assert res.iou == mask_iou(mask, res.binary)
        assert res.accepted == (res.iou > 0.5)
        assert np.array_equal(res.mask, res.binary if res.accepted else mask)
        assert np.array_equal(res.binary, postprocess(res.soft, keep))
    strict = refine_masks([img], [mask], iou_threshold=0.999)[0]
    assert not strict.accepted and np.array_equal(strict.mask, mask)


def test_downsample_binary_uses_the_four_central_pixels():
    b = torch.zeros(1, 16, 24, dtype=torch.bool)
    b[0, 3, 4] = True  # central pixel of patch (0, 0)
    b[0, 8, 8] = True  # corner pixel of patch (1, 1): zero bilinear weight
    b[0, 12, 19] = True  # central pixel of patch (1, 2)
    down = downsample_binary(b, (2, 3))
    assert down.tolist() == [[[True, False, False], [False, False, True]]]
    full = torch.zeros(1, 16, 24, dtype=torch.bool)
    full[:, 3:5, 3:5] = True
    assert downsample_binary(full, (2, 3))[0, 0, 0]


def test_pseudo_labels_contract():
    img = torch.from_numpy(np.stack([_image(48, 64, k) for k in range(3)])).permute(0, 3, 1, 2).float() / 255
    patch = torch.zeros(3, 6, 8)
    patch[:, 1:5, 2:6] = 1
    patch[2] = 1  # full mask: the solver result is empty → rejected → input kept
    labels, accepted = pseudo_labels(img, patch)
    assert labels.shape == (3, 6, 8) and labels.dtype == torch.bool
    assert accepted.shape == (3,) and accepted.dtype == torch.bool
    assert not accepted[2] and labels[2].all()
    labels4, accepted4 = pseudo_labels(img, patch.unsqueeze(1).bool())
    assert torch.equal(labels4, labels) and torch.equal(accepted4, accepted)
    with pytest.raises(ValueError, match="does not match"):
        pseudo_labels(img, torch.zeros(3, 5, 8))
    with pytest.raises(ValueError, match="float tensor"):
        pseudo_labels((img * 255).byte(), patch)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    imgs = [_image(40, 56, k) for k in range(3)]
    masks = [_ellipse(40, 56, k) for k in range(3)]
    cpu = bilateral_solve(imgs, masks)
    gpu64 = bilateral_solve([torch.from_numpy(x).cuda() for x in imgs], [torch.from_numpy(m).cuda() for m in masks])
    gpu32 = bilateral_solve(imgs, masks, device="cuda", settings=RefineSettings(dtype=torch.float32))
    gpu_torch = bilateral_solve(imgs, masks, device="cuda", settings=TORCH)  # "auto" is "torch" on a GPU
    assert all(torch.equal(a, b) for a, b in zip(gpu64, gpu_torch))
    with pytest.raises(ValueError, match="backend='numpy'"):
        bilateral_solve(imgs, masks, device="cuda", settings=RefineSettings(backend="numpy"))
    for a, b, c in zip(cpu, gpu64, gpu32):
        assert b.device.type == "cuda" and b.dtype == torch.float64
        assert (a - b.cpu()).abs().max() <= 1e-10
        assert (a - c.double().cpu()).abs().max() <= 1e-4
    img = torch.stack([torch.from_numpy(x) for x in imgs]).permute(0, 3, 1, 2).float().div(255).cuda()
    labels, accepted = pseudo_labels(img, torch.ones(3, 5, 7, device="cuda"))
    assert labels.device.type == "cuda" and accepted.device.type == "cuda"
