"""Batched fast bilateral solver (Barron & Poole, 2016) as FOUND uses it, in torch.

The algorithm follows FOUND's ``bilateral_solver.py`` (itself adapted from TokenCut) step by step,
so that a float64 run reproduces it to ~1e-14 (docs/refinement.md):

* RGB → YUV with the JPEG matrix, bit-exactly as the authors' ``np.tensordot`` computes it
  (OpenBLAS accumulates the three products with fused multiply-adds; see :func:`rgb_to_yuv`):
  the grid coordinates ``trunc(value / sigma)`` flip when a value lands exactly on a cell
  boundary (every grey pixel has U = V = 128 in real arithmetic, a chroma boundary).
* 5-D grid (x, y, luma, u, v) keyed like the authors' ``Σ coord_d · 255^d``: vertices are the
  sorted unique keys of each image, the blur links vertices whose keys differ by ``±w_d``. A
  compact mixed-radix key with the same order and neighbours is used when every coordinate is
  ≤ 253, else the authors' key itself (collisions included).
* Splat (per-vertex sums in pixel order, as scipy's CSR product), 10 bistochastisation
  iterations, ``A = λ (D_m − D_n B D_n) + diag(S w)``, ``b = S (w·t)``, and Jacobi-preconditioned
  CG from ``S(w·t) / S w`` with scipy's stopping rule (``‖r‖ < tol·‖b‖`` tested at the start of
  each of at most ``max_iter`` iterations; ``b = 0`` returns zeros); slice.

Several images are solved at once: their vertices form a padded ``[B, V_max]`` block-diagonal
system (images never share a vertex) and CG runs for all of them with per-image scalars and a
per-image convergence mask — no Python loop over images or vertices in the hot path, any torch
device. On CPU the batch is cut into cache-sized chunks, solved in parallel (one per torch thread),
and the per-pixel colour maths, a few index operations and the CG iterations use numpy/scipy,
whose per-call cost on these small arrays is a fraction of torch's.
"""
from __future__ import annotations

import contextlib
import functools
import math
import numbers
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
import torch

if TYPE_CHECKING:
    from PIL import Image as _PILImage

ImageLike = Union[np.ndarray, torch.Tensor, "_PILImage.Image"]
MaskLike = Union[np.ndarray, torch.Tensor]

#: RGB → YUV (JPEG / BT.601 full range), rows Y, U, V — FOUND's ``RGB_TO_YUV``.
RGB_TO_YUV = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
YUV_OFFSET = (0.0, 128.0, 128.0)
#: Base of the authors' coordinate hash (``MAX_VAL``).
HASH_BASE = 255
GRID_DIM = 5

__all__ = [
    "SolveOutput",
    "bilateral_solve",
    "solve_batch",
    "rgb_to_yuv",
    "as_rgb_uint8",
    "as_target",
]


# --------------------------------------------------------------------------- exact colour conversion
def _two_sum(a, b):
    """Knuth's TwoSum: ``s = RN(a + b)`` and the exact error ``a + b − s``."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _add_round_to_odd(a, b):
    """``a + b`` rounded to odd: the exact sum if representable, else the neighbour with an odd last bit.

    Works on float64 torch tensors and numpy arrays alike (numpy is cheaper for a few pixels on CPU).
    """
    s, err = _two_sum(a, b)
    xp = np if isinstance(s, np.ndarray) else torch
    fix = (err != 0) & ((s.view(xp.int64) & 1) == 0)
    if not bool(fix.any()):
        return s
    toward = xp.where(err > 0, xp.full_like(s, math.inf), xp.full_like(s, -math.inf))
    return xp.where(fix, xp.nextafter(s, toward), s)


def _fma_small_int(a, b: float, c):
    """Correctly rounded ``a·b + c`` (a fused multiply-add) for integer-valued float64 ``a`` < 2^26.

    ``a·b = p + e`` exactly (Dekker's product with ``b`` split by Veltkamp; ``a`` needs no split),
    then the three-term sum ``c + p + e`` is rounded once with Boldo & Melquiond's round-to-odd
    trick. Plain elementwise ops only (torch or numpy), so it is exact on every device.
    """
    p = a * b
    t = 134217729.0 * b  # 2^27 + 1
    bh = t - (t - b)
    bl = b - bh
    e = (a * bh - p) + a * bl
    th, tl = _two_sum(c, p)
    return th + _add_round_to_odd(tl, e)


def rgb_to_yuv(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3] uint8 RGB → [..., 3] float64 YUV, bit-identical to FOUND's ``rgb2yuv`` under numpy.

    numpy's ``tensordot`` runs OpenBLAS dgemm, which forms ``fma(B, m2, fma(G, m1, R·m0))`` and
    then adds the offset; we emulate exactly that (checked against numpy on all 2^24 colours).
    Exactness matters: the grid coordinate of a grey pixel depends on whether U comes out as
    128 or 128 − 1 ulp.
    """
    if rgb.dtype != torch.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb_to_yuv expects uint8 [..., 3], got {rgb.dtype} {tuple(rgb.shape)}")
    return torch.stack(_yuv_channels(rgb.to(torch.float64)), dim=-1)


def _yuv_channels(f):
    """Y, U, V of float64 [..., 3] integer-valued RGB (torch or numpy), as :func:`rgb_to_yuv`."""
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    out = []
    for row, off in zip(RGB_TO_YUV, YUV_OFFSET):
        acc = r * row[0]
        acc = _fma_small_int(g, row[1], acc)
        acc = _fma_small_int(b, row[2], acc)
        out.append(acc + off)
    return out


# --------------------------------------------------------------------------- input normalisation
def _from_numpy(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``a``'s memory when possible (copied if read-only or non-contiguous)."""
    if not a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a, order="C")
    return torch.from_numpy(a)


def as_rgb_uint8(image: ImageLike, device: torch.device | str | None = None) -> torch.Tensor:
    """Any supported image → uint8 [H, W, 3] tensor (on ``device``, default: where it is).

    * uint8 arrays/tensors are channel-last: [H, W, 3], [H, W, 1] or [H, W] (grey → replicated);
    * floating arrays/tensors are channel-first in [0, 1]: [3, H, W], [1, H, W] or [H, W]; they
      become ``x·255`` truncated to uint8 (torchvision ``ToPILImage``, what FOUND feeds the solver;
      values outside [0, 1] are clamped first instead of wrapping);
    * PIL images are converted with ``.convert("RGB")`` as the authors do.
    """
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow is a dependency
            Image = None
        if Image is not None and isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        else:
            raise TypeError(f"unsupported image type {type(image).__name__}: use a numpy array, a torch tensor or a PIL image")
    t = _from_numpy(image) if isinstance(image, np.ndarray) else image
    if device is not None:
        t = t.to(device)
    if t.dtype == torch.uint8:
        if t.dim() == 2:
            t = t.unsqueeze(-1)
        if t.dim() != 3 or t.shape[-1] not in (1, 3):
            raise ValueError(f"a uint8 image must be [H, W], [H, W, 1] or [H, W, 3] (channel-last), got {tuple(t.shape)}")
    elif t.dtype.is_floating_point:
        if t.dim() == 2:
            t = t.unsqueeze(0)
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"a float image must be [3, H, W], [1, H, W] or [H, W] (channel-first, in [0, 1]), got {tuple(t.shape)}")
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        if not bool(torch.isfinite(t).all()):
            raise ValueError("the image contains NaN or infinite values")
        t = (t * 255).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
    else:
        raise TypeError(f"images must be uint8 (channel-last) or floating point in [0, 1] (channel-first), got {t.dtype}")
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"empty image of shape {tuple(t.shape)}")
    if t.shape[-1] == 1:
        t = t.expand(-1, -1, 3)
    return t.contiguous()


def as_target(mask: MaskLike, hw: tuple[int, int], device: torch.device, index: int | None = None) -> torch.Tensor:
    """A [H, W] (or [1, H, W]) mask → float64 tensor; its shape must be the image's (H, W)."""
    t = _from_numpy(mask) if isinstance(mask, np.ndarray) else mask
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"masks must be numpy arrays or torch tensors, got {type(mask).__name__}")
    if t.dim() == 3 and t.shape[0] == 1:
        t = t[0]
    where = "" if index is None else f" (image {index})"
    if tuple(t.shape) != tuple(hw):
        raise ValueError(f"mask shape {tuple(t.shape)} does not match the image size {tuple(hw)}{where}: "
                         "resize the mask to the image first")
    if t.dtype.is_complex:
        raise TypeError(f"complex masks are not supported{where}")
    t = t.to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"the mask contains NaN or infinite values{where}")
    return t


# --------------------------------------------------------------------------- grid
@dataclass
class _Grid:
    """Bilateral grids of a batch of images in a padded [B, V_max] vertex layout.

    Vertex ``j`` of image ``i`` lives in slot ``i·V_max + j`` (vertices sorted by the authors' key);
    padding slots are isolated vertices with one pseudo-pixel and a zero target. The ±1 neighbour
    graph plus the diagonal is kept as a CSR pattern (``crow``, ``col``, sorted columns).
    """

    pixel_slot: torch.Tensor  # [P] slot of every pixel (images concatenated, row-major)
    n_vertices: torch.Tensor  # [B]
    v_max: int
    counts: torch.Tensor  # [B·V_max] float64 pixels per vertex (1 on padding)
    crow: torch.Tensor  # [B·V_max + 1] CSR row pointers
    col: torch.Tensor  # [nnz] column of each stored entry
    row: torch.Tensor  # [nnz] (int64) row of each stored entry
    diag_pos: torch.Tensor  # [B·V_max] position of each row's diagonal entry

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """Sparse CSR matrix with this pattern and the given [nnz] values."""
        n = self.crow.numel() - 1
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
            return torch.sparse_csr_tensor(self.crow, self.col, values, size=(n, n), check_invariants=False)


@dataclass(frozen=True)
class _Layout:
    """How the 5-D integer coordinates are packed into one sortable key."""

    weights: tuple[int, int, int, int, int]  # key step of +1 along x, y, luma, u, v
    stride: int  # key offset between consecutive images
    compact: bool  # mixed radix (True) or the authors' base-255 hash (False)


def _layout(sizes: Sequence[tuple[int, int]], sigmas: tuple[float, float, float]) -> _Layout:
    """Choose the key packing from static upper bounds of the coordinates (no device sync).

    The authors' key is ``Σ c_d·255^d``; as long as every coordinate is ≤ 253 it is a bijection
    whose ±1 neighbour lookups never hit a real vertex by wrapping around, so a mixed-radix key
    with digits ``bound_d + 2`` gives the same vertices, the same sorted order and the same
    neighbours with far fewer bits. Otherwise (images wider/taller than 253·σ_spatial pixels, or
    σ_luma/σ_chroma ≈ 1) the authors' hash itself is used, collisions included.
    """
    s_spatial, s_luma, s_chroma = sigmas
    max_h = max(h for h, _ in sizes)
    max_w = max(w for _, w in sizes)
    bounds = (
        math.floor((max_w - 1) / s_spatial), math.floor((max_h - 1) / s_spatial),
        math.floor(255.0 / s_luma) + 1, math.floor(256.0 / s_chroma) + 1, math.floor(256.0 / s_chroma) + 1,
    )
    if max(bounds) >= 2**31 - 2:
        raise ValueError(f"sigmas {sigmas} are too small: grid coordinates would overflow")
    if max(bounds) <= HASH_BASE - 2:
        weights, w = [], 1
        for bd in bounds:
            weights.append(w)
            w *= bd + 2
        stride = w
        compact = True
    else:
        weights = [HASH_BASE**d for d in range(GRID_DIM)]
        stride = sum(bd * wd for bd, wd in zip(bounds, weights)) + 2 * weights[-1] + 2
        compact = False
    if stride * (len(sizes) + 1) >= 2**62:
        raise ValueError("images too large or sigmas too small for a 64-bit grid key")
    return _Layout(tuple(weights), stride, compact)


def _spatial_key(sizes: Sequence[tuple[int, int]], s_spatial: float, lay: _Layout, device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    """Per-pixel key part of (x, y, image): ``trunc(ix/σ)·w_x + trunc(iy/σ)·w_y + image·stride``."""
    wx, wy = lay.weights[0], lay.weights[1]
    n_img = len(sizes)
    offsets = torch.arange(n_img, device=device, dtype=dtype) * lay.stride
    if len(set(sizes)) == 1:  # one size: one [H·W] map broadcast over the batch
        h, w = sizes[0]
        ys = (torch.arange(h, device=device, dtype=torch.float64) / s_spatial).trunc().to(dtype) * wy
        xs = (torch.arange(w, device=device, dtype=torch.float64) / s_spatial).trunc().to(dtype) * wx
        return ((ys[:, None] + xs[None, :]).reshape(1, -1) + offsets[:, None]).reshape(-1)
    n_pix = torch.tensor([h * w for h, w in sizes], device=device)
    widths = torch.tensor([w for _, w in sizes], device=device)
    img = torch.repeat_interleave(torch.arange(n_img, device=device), n_pix)
    local = torch.arange(img.numel(), device=device) - (torch.cumsum(n_pix, 0) - n_pix)[img]
    w_pix = widths[img]
    iy = torch.div(local, w_pix, rounding_mode="floor")
    ix = local - iy * w_pix
    return ((ix.to(torch.float64) / s_spatial).trunc().to(dtype) * wx
            + (iy.to(torch.float64) / s_spatial).trunc().to(dtype) * wy + offsets[img])


def _colour_coords(rgb: torch.Tensor, s_luma: float, s_chroma: float) -> list[torch.Tensor]:
    """Grid coordinates ``trunc(Y/σ_l), trunc(U/σ_c), trunc(V/σ_c)`` (3 × [P] int32) of [P, 3] uint8
    pixels, bit-exact with the authors' numpy.

    A float32 evaluation is within ~2e-4/σ of the reference value, so it can only get a
    coordinate wrong when ``value/σ`` is that close to an integer: those pixels (all grey pixels
    for U and V, ~1 % of the others) are recomputed exactly (:func:`rgb_to_yuv`, or a 256-entry
    table for grey pixels).
    """
    sigmas = (s_luma, s_chroma, s_chroma)
    margin = 0.5 - 1e-3 * max(1.0, 1.0 / min(sigmas))
    if _numpy_ok(rgb):
        return _colour_coords_numpy(rgb.numpy(), sigmas, margin)
    r, g, b = (rgb[:, i].float() for i in range(3))
    coords, dev = [], None
    for row, off, sig in zip(RGB_TO_YUV, YUV_OFFSET, sigmas):
        q = torch.add(torch.add(r * (row[0] / sig), g, alpha=row[1] / sig), b, alpha=row[2] / sig).add_(off / sig)
        c = q.to(torch.int32)  # truncation; q >= 0
        coords.append(c)
        e = (q - c).sub_(0.5).abs_()  # 0.5 − distance to the nearest integer
        dev = e if dev is None else torch.maximum(dev, e, out=dev)
    near = dev > margin
    idx = torch.nonzero(near).squeeze(1)
    if idx.numel():
        sub = rgb.index_select(0, idx)
        grey = (sub[:, 0] == sub[:, 1]) & (sub[:, 1] == sub[:, 2])
        exact = torch.empty((idx.numel(), 3), dtype=torch.int64, device=rgb.device)
        g_idx = torch.nonzero(grey).squeeze(1)
        if g_idx.numel():
            table = _grey_coords(s_luma, s_chroma).to(rgb.device)
            exact.index_copy_(0, g_idx, table.index_select(0, sub.index_select(0, g_idx)[:, 0].long()))
        c_idx = torch.nonzero(~grey).squeeze(1)
        if c_idx.numel():
            exact.index_copy_(0, c_idx, _exact_coords(sub.index_select(0, c_idx), sigmas))
        for c in range(3):
            coords[c].index_copy_(0, idx, exact[:, c].to(torch.int32))
    return coords


def _colour_index(coords: Sequence[torch.Tensor], radix_l: int, radix_lu: int) -> torch.Tensor:
    """Mixed-radix colour cell ``L + radix_l·U + radix_lu·V`` (int32, < 2^24 in compact layouts)."""
    return torch.add(torch.add(coords[0], coords[1], alpha=radix_l), coords[2], alpha=radix_lu)


#: A colour → cell table over all 2^24 RGB values (64 MiB, int32; ~0.5–1 s to build on one CPU
#: core) is built once the calls with the same sigmas on a device have solved at least this many
#: pixels in all (one training batch; ~40 single 224² images), then reused by every such call:
#: the per-pixel colour work becomes one gather instead of ~30 elementwise passes.
LUT_MIN_PIXELS = 1 << 21
_LUT_CACHE: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
_LUT_CACHE_SIZE = 2
_PIXELS_SOLVED: dict[tuple, int] = {}  # pixels solved so far per (sigmas, device), towards LUT_MIN_PIXELS


def _colour_lut(s_luma: float, s_chroma: float, radix: tuple[int, int], device: torch.device,
                build: bool) -> torch.Tensor | None:
    """The cached cell table for these sigmas on ``device`` (built now if ``build``), else None."""
    k = (s_luma, s_chroma, radix, str(device))
    lut = _LUT_CACHE.get(k)
    if lut is not None:
        _LUT_CACHE.move_to_end(k)
        return lut
    if not build:
        return None
    lut = torch.empty(1 << 24, dtype=torch.int32, device=device)
    step = 1 << 20
    for lo in range(0, 1 << 24, step):
        i = torch.arange(lo, lo + step, dtype=torch.int32, device=device)
        rgb = torch.stack([i & 255, (i >> 8) & 255, i >> 16], 1).to(torch.uint8)
        lut[lo:lo + step] = _colour_index(_colour_coords(rgb, s_luma, s_chroma), *radix)
    _LUT_CACHE[k] = lut
    while len(_LUT_CACHE) > _LUT_CACHE_SIZE:
        _LUT_CACHE.popitem(last=False)
    return lut


def clear_caches() -> None:
    """Drop the cached colour tables and the pixel counts that trigger them (e.g. to free memory or
    to time a cold start)."""
    _LUT_CACHE.clear()
    _PIXELS_SOLVED.clear()


def _colour_key(rgb: torch.Tensor, s_luma: float, s_chroma: float, lay: _Layout, dtype: torch.dtype) -> torch.Tensor:
    """Per-pixel key part of the colour coordinates (luma, u, v), bit-exact with the authors' numpy."""
    wl, wu, wv = lay.weights[2:]
    if not lay.compact:
        c = _colour_coords(rgb, s_luma, s_chroma)
        return c[0].to(dtype) * wl + c[1].to(dtype) * wu + c[2].to(dtype) * wv
    radix = (wu // wl, wv // wl)
    lut = _colour_lut(s_luma, s_chroma, radix, rgb.device, build=False)
    if lut is not None:
        r, g, b = (rgb[:, i].int() for i in range(3))
        cell = lut.index_select(0, torch.add(torch.add(r, g, alpha=256), b, alpha=65536))
    else:
        cell = _colour_index(_colour_coords(rgb, s_luma, s_chroma), *radix)
    return cell.to(dtype).mul_(wl)


def _exact_coords(rgb: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """[N, 3] uint8 → [N, 3] int64 ``trunc(YUV / σ)`` through the exact :func:`rgb_to_yuv`."""
    yuv = rgb_to_yuv(rgb)
    return torch.stack([(yuv[:, c] / sig).trunc().to(torch.int64) for c, sig in enumerate(sigmas)], 1)


def _colour_coords_numpy(rgb: np.ndarray, sigmas: Sequence[float], margin: float) -> list[torch.Tensor]:
    """CPU version of :func:`_colour_coords` in numpy: the same float32 evaluation and exact fix-up,
    with contiguous channels and no temporaries (strided reads and fresh buffers dominated), grey
    pixels from their 256-entry table in one pass, and the few other near-boundary pixels
    recomputed exactly with the numpy form of :func:`rgb_to_yuv`."""
    f = rgb.T.astype(np.float32, order="C")  # [3, P], unit-stride channels
    q = np.empty_like(f)
    tmp = np.empty(f.shape[1], dtype=np.float32)
    for i, (row, off, sig) in enumerate(zip(RGB_TO_YUV, YUV_OFFSET, sigmas)):
        w = np.array(row, dtype=np.float32) / np.float32(sig)
        np.multiply(f[0], w[0], out=q[i])
        q[i] += np.multiply(f[1], w[1], out=tmp)
        q[i] += np.multiply(f[2], w[2], out=tmp)
        q[i] += np.float32(off / sig)
    t = np.trunc(q)  # q >= 0
    coords = t.astype(np.int32)
    q -= t
    q -= 0.5
    np.abs(q, out=q)
    near = q.max(0) > margin  # within ~1e-3 of a cell boundary: the float32 value may be off by one cell
    grey = np.equal(f[0], f[1])
    grey &= np.equal(f[1], f[2])
    if grey.any():  # every grey pixel sits on a chroma boundary (U = V = 128): take its exact cells
        table = _grey_coords(sigmas[0], sigmas[1]).numpy().astype(np.int32)
        level = f[0].astype(np.intp)
        for c in range(3):
            np.copyto(coords[c], table[:, c].take(level), where=grey)
        near &= ~grey
    idx = np.flatnonzero(near)
    if idx.size:
        yuv = _yuv_channels(rgb[idx].astype(np.float64))
        for c, (v, sig) in enumerate(zip(yuv, sigmas)):
            coords[c][idx] = np.trunc(v / sig)
    return [torch.from_numpy(c) for c in coords]


@functools.lru_cache(maxsize=16)
def _grey_coords(s_luma: float, s_chroma: float) -> torch.Tensor:
    """Exact grid colour coordinates [256, 3] of the grey pixels (v, v, v)."""
    v = torch.arange(256, dtype=torch.uint8).unsqueeze(1).expand(256, 3).contiguous()
    return _exact_coords(v, (s_luma, s_chroma, s_chroma))


#: Use numpy for a few index operations on CPU tensors (several times faster there than torch's
#: kernels); other devices always use the torch implementations. Tests switch it off to run the
#: device-agnostic torch code path on CPU.
NUMPY_FAST_PATHS = True


def _numpy_ok(t: torch.Tensor) -> bool:
    return NUMPY_FAST_PATHS and t.device.type == "cpu"


def _masked(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``t[mask]`` (numpy's boolean indexing is several times faster on CPU)."""
    if _numpy_ok(t):
        return torch.from_numpy(np.ascontiguousarray(t.numpy()[mask.numpy()]))
    return t[mask]


def _search(sorted_keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """``searchsorted`` (numpy's is ~2× faster on CPU)."""
    if _numpy_ok(sorted_keys):
        return torch.from_numpy(np.searchsorted(sorted_keys.numpy(), queries.numpy()))
    return torch.searchsorted(sorted_keys, queries)


def _repeat(values: torch.Tensor, counts: torch.Tensor, total: int) -> torch.Tensor:
    """``repeat_interleave`` (numpy's ``repeat`` is ~5× faster on CPU)."""
    if _numpy_ok(values):
        return torch.from_numpy(np.repeat(values.numpy(), counts.numpy()))
    return torch.repeat_interleave(values, counts, output_size=total)


def _unique_runs(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runs of equal consecutive keys (key, length) and the sorted unique keys with each run's index."""
    if _numpy_ok(key):
        k = key.numpy()
        starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
        run_keys = k[starts]
        run_len = np.diff(np.append(starts, k.size))
        bits = max(int(run_keys.size).bit_length(), 1)
        top = int(run_keys.max()) if run_keys.size else 0
        if run_keys.size <= PACKED_SORT_MAX and top < 2 ** (62 - bits) and int(run_keys.min()) >= 0:
            keys, run_vertex = _packed_unique(run_keys, bits)
            return (torch.from_numpy(run_keys), torch.from_numpy(run_len), torch.from_numpy(keys),
                    torch.from_numpy(run_vertex))
        run_keys, run_len = torch.from_numpy(run_keys), torch.from_numpy(run_len)
    else:
        run_keys, run_len = torch.unique_consecutive(key, return_counts=True)
    keys, run_vertex = torch.unique(run_keys, sorted=True, return_inverse=True)
    return run_keys, run_len, keys, run_vertex


#: Up to this many runs, :func:`_packed_unique` (one plain sort of 64-bit words) beats
#: ``torch.unique``'s argsort on CPU; above it torch's is faster.
PACKED_SORT_MAX = 1 << 17


def _packed_unique(values: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for non-negative ints: each value is packed with its
    index into one int64 (``value << bits | index``) so that a plain (SIMD) sort replaces the argsort."""
    packed = (values.astype(np.int64) << bits) | np.arange(values.size, dtype=np.int64)
    packed.sort()
    sorted_values = packed >> bits
    first = np.empty(values.size, dtype=bool)
    first[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=first[1:])
    inverse = np.empty(values.size, dtype=np.int64)
    inverse[packed & ((1 << bits) - 1)] = np.cumsum(first) - 1
    return sorted_values[first], inverse


def _grid(rgb: torch.Tensor, sizes: Sequence[tuple[int, int]], sigmas: tuple[float, float, float]) -> _Grid:
    """Vertices (sorted unique keys per image), pixel → vertex map and ±1 neighbours of a batch."""
    device = rgb.device
    lay = _layout(sizes, sigmas)
    n_img = len(sizes)
    kdt = torch.int32 if lay.stride * (n_img + 1) < 2**31 else torch.int64
    key = _colour_key(rgb, sigmas[1], sigmas[2], lay, kdt)
    key += _spatial_key(sizes, sigmas[0], lay, device, kdt)

    # unique over runs of equal consecutive keys (≈ 1/3 of the pixels): a smaller sort
    n_pix = key.numel()
    run_keys, run_len, keys, run_vertex = _unique_runs(key)
    del key
    n_vert = keys.numel()

    v_img = torch.div(keys, lay.stride, rounding_mode="floor").long()
    n_vertices = torch.bincount(v_img, minlength=n_img)
    v_max = int(n_vertices.max())
    total = n_img * v_max
    slot = v_img * v_max + (torch.arange(n_vert, device=device) - (torch.cumsum(n_vertices, 0) - n_vertices)[v_img])
    run_slot = slot.index_select(0, run_vertex)
    pixel_slot = _repeat(run_slot, run_len, n_pix)
    counts = torch.ones(total, dtype=torch.float64, device=device)
    counts[slot] = 0.0
    counts.index_add_(0, run_slot, run_len.to(torch.float64))

    # neighbours, columns in increasing order: −w_4 … −w_0, self, +w_0 … +w_4. Only the +w_d
    # vertices are searched (+1 along x is simply the next key); −w_d links are their mirror.
    columns = torch.full((total, 2 * GRID_DIM + 1), -1, dtype=torch.long, device=device)
    columns[:, GRID_DIM] = torch.arange(total, device=device)
    w = torch.tensor(lay.weights, dtype=keys.dtype, device=device).unsqueeze(1)
    want = keys.unsqueeze(0) + w  # [5, V]
    pos = torch.empty(want.shape, dtype=torch.long, device=device)
    pos[0] = torch.arange(1, n_vert + 1, device=device)
    pos[1:] = _search(keys, want[1:].reshape(-1)).to(device).view(GRID_DIM - 1, n_vert)
    pos.clamp_(max=n_vert - 1)
    hit = keys.index_select(0, pos.view(-1)).view(pos.shape) == want
    dims = torch.arange(GRID_DIM, device=device).unsqueeze(1).expand(GRID_DIM, n_vert)
    src = _masked(slot.unsqueeze(0).expand(GRID_DIM, n_vert), hit)
    dst = _masked(slot.index_select(0, pos.view(-1)).view(pos.shape), hit)
    d_hit = _masked(dims, hit)
    flat = columns.view(-1)
    flat.index_put_((src * (2 * GRID_DIM + 1) + (GRID_DIM + 1) + d_hit,), dst)
    flat.index_put_((dst * (2 * GRID_DIM + 1) + (GRID_DIM - 1) - d_hit,), src)
    valid = columns >= 0
    per_row = valid.sum(1, dtype=torch.int32)
    nnz = int(per_row.sum())
    idt = torch.int32 if nnz < 2**31 - 1 else torch.int64
    crow = torch.zeros(total + 1, dtype=idt, device=device)
    crow[1:] = torch.cumsum(per_row, 0)
    col = _masked(columns, valid).to(idt)
    row = torch.zeros(nnz, dtype=torch.long, device=device)  # every row has its diagonal: crow increases
    row[crow[1:-1].long()] = 1
    row = torch.cumsum(row, 0)
    diag_pos = crow[:-1].long() + valid[:, :GRID_DIM].sum(1)
    return _Grid(pixel_slot=pixel_slot, n_vertices=n_vertices, v_max=v_max, counts=counts,
                 crow=crow, col=col, row=row, diag_pos=diag_pos)


# --------------------------------------------------------------------------- solver
@dataclass
class SolveOutput:
    """Solver outputs for a batch: soft maps plus grid / CG diagnostics (per image)."""

    soft: list[torch.Tensor]  # [H, W] per image, solver dtype, on the solver device
    n_vertices: list[int]  # bilateral-grid vertices per image
    iterations: list[int]  # CG iterations run per image (0 when b = 0 or x0 already converged)


def _check_params(confidence: float, sigmas: Sequence[float], lam: float, max_iter: int, tol: float) -> None:
    """Reject parameters the solver cannot use (with a message naming the parameter)."""
    for name, v in zip(("sigma_spatial", "sigma_luma", "sigma_chroma"), sigmas):
        if isinstance(v, bool) or not (isinstance(v, numbers.Real) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    if not (math.isfinite(confidence) and confidence > 0):
        raise ValueError(f"confidence must be a positive number, got {confidence!r}")
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a positive number, got {lam!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")


def _sequential_sums(value: float, counts: torch.Tensor) -> torch.Tensor:
    """``0 + value + value + …`` (k terms, left to right) for every k in ``counts``: what scipy's
    CSR splat gives for a constant per-pixel value (zeros in between change nothing), bit for bit
    and independent of the summation order of the device."""
    kmax = int(counts.max())
    table = np.concatenate([[0.0], np.cumsum(np.full(kmax, float(value)))])  # add.accumulate: sequential
    return torch.from_numpy(table).to(counts.device).index_select(0, counts.long())


def _system_torch(grid: _Grid, w_splat: torch.Tensor, b: torch.Tensor, lam: float, max_iter: int, tol: float,
                  a_diag_min: float, bistochastize_iters: int, dtype: torch.dtype,
                  n_img: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bistochastise, assemble ``A`` and run the batched CG with torch (any device): vertex values [B, V_max]."""
    device = b.device
    v_max = grid.v_max
    # bistochastisation; blur = 2·dim·I + Σ_d (shift_−d + shift_+d)
    unit = torch.ones(grid.col.shape, dtype=torch.float64, device=device)
    unit[grid.diag_pos] = 2 * GRID_DIM
    blur = grid.matrix(unit)
    m = grid.counts
    n = torch.ones_like(m)
    for _ in range(bistochastize_iters):
        n = torch.sqrt(n * m / (blur @ n))
    m = n * (blur @ n)

    # A = λ (D_m − D_n B D_n) + diag(S w), the authors' expression entry by entry
    diag = lam * (m - n * ((2 * GRID_DIM) * n)) + w_splat
    entries = -(lam * (n.index_select(0, grid.row) * n.index_select(0, grid.col)))
    entries[grid.diag_pos] = diag
    A = grid.matrix(entries.to(dtype))
    inv_diag = (1.0 / torch.clamp(diag, min=a_diag_min)).to(dtype).view(n_img, v_max)
    x = (b / w_splat).to(dtype).view(n_img, v_max)  # flat initialisation
    b = b.to(dtype).view(n_img, v_max)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return (A @ v.reshape(-1)).view(n_img, v_max)

    # Jacobi-preconditioned CG for all images at once, with scipy's per-system stopping rule
    b_norm = torch.linalg.vector_norm(b, dim=1)
    atol = tol * b_norm
    active = b_norm > 0  # scipy returns b itself (zeros) when ‖b‖ = 0
    x = torch.where(active.unsqueeze(1), x, b)
    r = b - matvec(x)
    p = torch.zeros_like(r)
    rho_prev = torch.ones(n_img, dtype=dtype, device=device)
    iterations = torch.zeros(n_img, dtype=torch.long, device=device)
    for _ in range(int(max_iter)):
        active &= ~(torch.linalg.vector_norm(r, dim=1) < atol)  # scipy: stop when ‖r‖ < atol, tested first
        if not bool(active.any()):
            break
        iterations += active
        z = inv_diag * r
        rho = torch.linalg.vecdot(r, z)
        beta = torch.where(active, rho / rho_prev, 0.0).unsqueeze(1)
        p = torch.addcmul(z, p, beta)
        q = matvec(p)
        alpha = torch.where(active, rho / torch.linalg.vecdot(p, q), 0.0).unsqueeze(1)
        x.addcmul_(alpha, p)  # alpha = 0 freezes an image once it has converged
        r.addcmul_(alpha, q, value=-1.0)
        rho_prev = torch.where(active, rho, rho_prev)
    return x, iterations.tolist()


def _system_numpy(grid: _Grid, w_splat: torch.Tensor, b: torch.Tensor, lam: float, max_iter: int, tol: float,
                  a_diag_min: float, bistochastize_iters: int, dtype: torch.dtype,
                  n_img: int) -> tuple[torch.Tensor, list[int]]:
    """:func:`_system_torch` on CPU with numpy and scipy.sparse: the same operations, at a fraction of
    torch's per-call overhead on these small vectors, and CG per image (:func:`_cg_single`)."""
    from scipy import sparse

    v_max = grid.v_max
    nd = np.dtype("float64") if dtype == torch.float64 else np.dtype("float32")
    crow, col, row, diag_pos = grid.crow.numpy(), grid.col.numpy(), grid.row.numpy(), grid.diag_pos.numpy()
    shape = (crow.size - 1, crow.size - 1)
    unit = np.ones(col.size)
    unit[diag_pos] = 2 * GRID_DIM
    blur = sparse.csr_matrix((unit, col, crow), shape=shape, copy=False)
    m = grid.counts.numpy()
    n = np.ones_like(m)
    for _ in range(bistochastize_iters):
        n = np.sqrt(n * m / (blur @ n))
    m = n * (blur @ n)

    ws = w_splat.numpy()
    diag = lam * (m - n * ((2 * GRID_DIM) * n)) + ws
    entries = -(lam * (n[row] * n[col]))
    entries[diag_pos] = diag
    entries = entries.astype(nd, copy=False)
    inv_diag = (1.0 / np.maximum(diag, a_diag_min)).astype(nd, copy=False).reshape(n_img, v_max)
    bn = b.numpy()
    x0 = (bn / ws).astype(nd, copy=False).reshape(n_img, v_max)  # flat initialisation
    bn = bn.astype(nd, copy=False).reshape(n_img, v_max)

    # CG image by image on its own block of A (no padding, scalar recurrences, each image stops
    # when it converges); padding slots keep x = 0 (they are never sliced)
    x = np.zeros((n_img, v_max), dtype=nd)
    iterations = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, nv in enumerate(grid.n_vertices.tolist()):
            lo = i * v_max
            s0, s1 = int(crow[lo]), int(crow[lo + nv])
            block = sparse.csr_matrix((entries[s0:s1], col[s0:s1] - lo, crow[lo:lo + nv + 1] - s0),
                                      shape=(nv, nv), copy=False)
            x[i, :nv], it = _cg_single(block, bn[i, :nv], x0[i, :nv], inv_diag[i, :nv], tol, max_iter)
            iterations.append(it)
    return torch.from_numpy(x), iterations


def _cg_single(A, b: np.ndarray, x: np.ndarray, inv_diag: np.ndarray, tol: float,
               max_iter: int) -> tuple[np.ndarray, int]:
    """Jacobi-preconditioned CG for one system, step for step as ``scipy.sparse.linalg.cg(A, b, x0=x,
    M=diag(inv_diag), rtol=tol, atol=0, maxiter=max_iter)``: solution and iterations run."""
    def dot(u: np.ndarray, v: np.ndarray) -> float:
        return float(np.einsum("i,i", u, v))

    b_norm = math.sqrt(dot(b, b))
    if b_norm == 0:  # scipy returns b itself (zeros)
        return b.copy(), 0
    atol = tol * b_norm
    x = x.copy()
    r = b - A @ x
    z, tmp = np.empty_like(r), np.empty_like(r)
    p = None
    rho_prev = 1.0
    for it in range(int(max_iter)):
        if math.sqrt(dot(r, r)) < atol:  # scipy: stop when ‖r‖ < atol, tested first
            return x, it
        np.multiply(inv_diag, r, out=z)
        rho = dot(r, z)
        if p is None:
            p = z.copy()
        else:
            p *= rho / rho_prev
            p += z
        q = A @ p
        alpha = rho / dot(p, q)
        x += np.multiply(p, alpha, out=tmp)
        r -= np.multiply(q, alpha, out=tmp)
        rho_prev = rho
    return x, int(max_iter)


def _solve(rgb: torch.Tensor, target: torch.Tensor, sizes: Sequence[tuple[int, int]], confidence: float,
           sigmas: tuple[float, float, float], lam: float, max_iter: int, tol: float, a_diag_min: float,
           bistochastize_iters: int, dtype: torch.dtype) -> SolveOutput:
    """Core batched solver on flat inputs: rgb [P, 3] uint8 and target [P] float64, images concatenated."""
    device = rgb.device
    grid = _grid(rgb, sizes, sigmas)
    n_img, v_max = len(sizes), grid.v_max
    total = n_img * v_max
    slot = grid.pixel_slot

    # splat, in pixel order per vertex like scipy's CSR (index_add_ is sequential on CPU)
    real = (torch.arange(v_max, device=device) < grid.n_vertices.unsqueeze(1)).reshape(-1)
    w_splat = torch.where(real, _sequential_sums(confidence, grid.counts), torch.ones_like(grid.counts))
    if bool(((target == 0) | (target == 1)).all()):  # binary target: b from exact foreground counts
        fg = torch.zeros(total, dtype=torch.float64, device=device).index_add_(0, slot, target)
        b = _sequential_sums(confidence, fg)
    else:  # index_add_ adds in pixel order on CPU (atomics on GPU: order-dependent last bits)
        b = torch.zeros(total, dtype=torch.float64, device=device).index_add_(0, slot, target * confidence)

    if _numpy_ok(rgb):
        x, iterations = _system_numpy(grid, w_splat, b, lam, max_iter, tol, a_diag_min, bistochastize_iters,
                                      dtype, n_img)
    else:
        x, iterations = _system_torch(grid, w_splat, b, lam, max_iter, tol, a_diag_min, bistochastize_iters,
                                      dtype, n_img)

    pix = x.reshape(-1).index_select(0, slot)  # slice
    soft, start = [], 0
    for h, w in sizes:
        soft.append(pix[start:start + h * w].view(h, w))
        start += h * w
    return SolveOutput(soft=soft, n_vertices=grid.n_vertices.tolist(), iterations=[int(i) for i in iterations])


def solve_batch(
    images: Sequence[ImageLike],
    targets: Sequence[MaskLike],
    confidence: float = 0.999,
    *,
    sigma_spatial: float = 16,
    sigma_luma: float = 16,
    sigma_chroma: float = 8,
    lam: float = 256.0,
    max_iter: int = 25,
    tol: float = 1e-5,
    a_diag_min: float = 1e-5,
    bistochastize_iters: int = 10,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> SolveOutput:
    """Like :func:`bilateral_solve`, plus per-image grid sizes and CG iteration counts."""
    images, targets = list(images), list(targets)
    if len(images) != len(targets):
        raise ValueError(f"got {len(images)} images but {len(targets)} masks")
    params = solver_params(confidence, sigma_spatial=sigma_spatial, sigma_luma=sigma_luma, sigma_chroma=sigma_chroma,
                           lam=lam, max_iter=max_iter, tol=tol, a_diag_min=a_diag_min,
                           bistochastize_iters=bistochastize_iters, dtype=dtype)
    if not images:
        return SolveOutput([], [], [])
    if device is None:
        first = next((x for x in [*images, *targets] if isinstance(x, torch.Tensor)), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    rgbs = [as_rgb_uint8(im, device) for im in images]
    tgts = [as_target(t, r.shape[:2], device, i).reshape(-1) for i, (t, r) in enumerate(zip(targets, rgbs))]
    return _run(rgbs, tgts, params)


def solver_params(confidence: float = 0.999, *, sigma_spatial: float = 16, sigma_luma: float = 16,
                  sigma_chroma: float = 8, lam: float = 256.0, max_iter: int = 25, tol: float = 1e-5,
                  a_diag_min: float = 1e-5, bistochastize_iters: int = 10,
                  dtype: torch.dtype = torch.float64) -> tuple:
    """Validated solver parameters, in the order :func:`_solve` takes them."""
    sigmas = (sigma_spatial, sigma_luma, sigma_chroma)
    _check_params(confidence, sigmas, lam, max_iter, tol)
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
    if isinstance(bistochastize_iters, bool) or not isinstance(bistochastize_iters, numbers.Integral) or bistochastize_iters < 0:
        raise ValueError(f"bistochastize_iters must be a non-negative integer, got {bistochastize_iters!r}")
    if not (isinstance(a_diag_min, numbers.Real) and math.isfinite(a_diag_min) and a_diag_min > 0):
        raise ValueError(f"a_diag_min must be a positive number, got {a_diag_min!r}")
    return (float(confidence), tuple(float(s) for s in sigmas), float(lam), int(max_iter), float(tol),
            float(a_diag_min), int(bistochastize_iters), dtype)


def _run(rgbs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], params: tuple) -> SolveOutput:
    """Solve normalised inputs (uint8 [H, W, 3] images, float64 [H·W] targets, one device) in chunks."""
    sizes = [(int(r.shape[0]), int(r.shape[1])) for r in rgbs]
    device = rgbs[0].device
    sigmas = params[1]
    seen_key = (sigmas[1], sigmas[2], str(device))
    seen = _PIXELS_SOLVED[seen_key] = _PIXELS_SOLVED.get(seen_key, 0) + sum(h * w for h, w in sizes)
    if seen >= LUT_MIN_PIXELS:  # enough colour work so far for the table to pay off: build it once
        lay = _layout(sizes, sigmas)
        if lay.compact:
            wl, wu, wv = lay.weights[2:]
            _colour_lut(sigmas[1], sigmas[2], (wu // wl, wv // wl), device, build=True)

    def solve(chunk: tuple[int, int]) -> SolveOutput:
        lo, hi = chunk
        rgb = torch.cat([r.reshape(-1, 3) for r in rgbs[lo:hi]])
        return _solve(rgb, torch.cat(list(targets[lo:hi])), sizes[lo:hi], *params)

    chunks = _chunks(sizes, device)
    workers = min(len(chunks), torch.get_num_threads()) if device.type == "cpu" else 1
    if workers > 1:  # chunks are independent; numpy, scipy and torch kernels release the GIL
        with ThreadPoolExecutor(workers) as pool, _single_threaded_torch():
            parts = list(pool.map(solve, chunks))
    else:
        parts = [solve(c) for c in chunks]
    out = SolveOutput([], [], [])
    for part in parts:
        out.soft += part.soft
        out.n_vertices += part.n_vertices
        out.iterations += part.iterations
    return out


_THREADS_LOCK = threading.Lock()
_THREADS_USERS = 0
_THREADS_SAVED = 1


@contextlib.contextmanager
def _single_threaded_torch():
    """One torch thread per worker while chunks are solved in parallel (no oversubscription).

    torch's thread count is process-wide: concurrent solves share one override, and the count
    the first of them found is restored when the last one ends.
    """
    global _THREADS_USERS, _THREADS_SAVED
    with _THREADS_LOCK:
        if _THREADS_USERS == 0:
            _THREADS_SAVED = torch.get_num_threads()
            torch.set_num_threads(1)
        _THREADS_USERS += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_USERS -= 1
            if _THREADS_USERS == 0:
                torch.set_num_threads(_THREADS_SAVED)


#: On CPU, images are solved in groups of about this many pixels: the working set then stays in
#: cache, which beats one huge system (memory-bound) while keeping Python overhead amortised.
CPU_CHUNK_PIXELS = 1 << 19


def _chunks(sizes: Sequence[tuple[int, int]], device: torch.device) -> list[tuple[int, int]]:
    """Consecutive [lo, hi) groups of images solved together (everything at once off-CPU)."""
    if device.type != "cpu":
        return [(0, len(sizes))]
    groups, lo, acc = [], 0, 0
    for i, (h, w) in enumerate(sizes):
        if i > lo and acc + h * w > CPU_CHUNK_PIXELS:
            groups.append((lo, i))
            lo, acc = i, 0
        acc += h * w
    groups.append((lo, len(sizes)))
    return groups


def bilateral_solve(
    images: Sequence[ImageLike],
    targets: Sequence[MaskLike],
    confidence: float = 0.999,
    *,
    sigma_spatial: float = 16,
    sigma_luma: float = 16,
    sigma_chroma: float = 8,
    lam: float = 256.0,
    max_iter: int = 25,
    tol: float = 1e-5,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> list[torch.Tensor]:
    """Bilateral-solver soft outputs [H, W] for a batch of images of any sizes (FOUND's ``output_solver``).

    ``images``: uint8 [H, W, 3] / [H, W, 1] / [H, W] arrays or tensors, float [3, H, W] in [0, 1], or
    PIL images; ``targets``: [H, W] masks (float or bool) of the same sizes. The solver runs on
    ``device`` (default: the device of the first tensor given, else CPU) in ``dtype`` (float64 by
    default, which reproduces the authors' scipy solver to ~1e-14; float32 is faster on GPUs but
    may flip pixels within ~1e-6 of 0.5). Returns one tensor per image on that device.
    """
    return solve_batch(
        images, targets, confidence, sigma_spatial=sigma_spatial, sigma_luma=sigma_luma,
        sigma_chroma=sigma_chroma, lam=lam, max_iter=max_iter, tol=tol, device=device, dtype=dtype,
    ).soft
