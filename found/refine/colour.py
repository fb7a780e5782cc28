"""RGB → bilateral-grid colour coordinates, bit-exact with the authors' numpy.

The grid cell of a pixel is ``trunc(Y/σ_l), trunc(U/σ_c), trunc(V/σ_c)`` with FOUND's JPEG
RGB → YUV matrix evaluated as their ``np.tensordot`` does (OpenBLAS: fused multiply-adds). A
coordinate flips when a value lands exactly on a cell boundary (every grey pixel has U = V = 128 in
real arithmetic), so the fast float32 evaluation is checked and the few pixels near a boundary are
recomputed exactly (:func:`rgb_to_yuv`). A cached table over all 2^24 colours replaces the maths
for large workloads.
"""
from __future__ import annotations

import functools
import math
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from .settings import RefineSettings

#: RGB → YUV (JPEG / BT.601 full range), rows Y, U, V — FOUND's ``RGB_TO_YUV``.
RGB_TO_YUV = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
YUV_OFFSET = (0.0, 128.0, 128.0)


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


# --------------------------------------------------------------------------- grid colour coordinates
def colour_coords(rgb: torch.Tensor, settings: RefineSettings) -> list[torch.Tensor]:
    """Grid coordinates ``trunc(Y/σ_l), trunc(U/σ_c), trunc(V/σ_c)`` (3 × [P] int32) of [P, 3] uint8
    pixels, bit-exact with the authors' numpy (σ from ``settings``; numpy on CPU unless its
    backend is "torch").

    A float32 evaluation is within ~2e-4/σ of the reference value, so it can only get a
    coordinate wrong when ``value/σ`` is that close to an integer: those pixels (all grey pixels
    for U and V, ~1 % of the others) are recomputed exactly (:func:`rgb_to_yuv`, or a 256-entry
    table for grey pixels).
    """
    s_luma, s_chroma = settings.sigma_luma, settings.sigma_chroma
    sigmas = (s_luma, s_chroma, s_chroma)
    if settings.uses_numpy(rgb.device):
        return [torch.from_numpy(c) for c in colour_coords_numpy(rgb.numpy(), settings)]
    margin = _margin(sigmas)
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


def colour_index(coords: Sequence[torch.Tensor], radix_l: int, radix_lu: int) -> torch.Tensor:
    """Mixed-radix colour cell ``L + radix_l·U + radix_lu·V`` (int32, < 2^24 in compact layouts)."""
    return torch.add(torch.add(coords[0], coords[1], alpha=radix_l), coords[2], alpha=radix_lu)


def _exact_coords(rgb: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """[N, 3] uint8 → [N, 3] int64 ``trunc(YUV / σ)`` through the exact :func:`rgb_to_yuv`."""
    yuv = rgb_to_yuv(rgb)
    return torch.stack([(yuv[:, c] / sig).trunc().to(torch.int64) for c, sig in enumerate(sigmas)], 1)


def _margin(sigmas: Sequence[float]) -> float:
    """Above this ``0.5 − distance to the nearest integer`` of ``value/σ`` in float32, recompute exactly."""
    return 0.5 - _eps(sigmas)


def _eps(sigmas: Sequence[float]) -> float:
    """Largest error of a float32 evaluation of ``value/σ`` we allow for (with a wide safety factor)."""
    return 1e-3 * max(1.0, 1.0 / min(sigmas))


def colour_coords_numpy(rgb: np.ndarray, settings: RefineSettings) -> list[np.ndarray]:
    """:func:`colour_coords` for [P, 3] uint8 numpy pixels (3 × [P] int32).

    The same float32 evaluation and exact fix-up as the torch code, arranged for numpy: contiguous
    channels, no temporaries, and ``ε`` folded into the offset, so that ``c = int(q + ε)`` is the
    cell and ``q + ε − c < 2ε`` flags the pixels within ``ε`` of a boundary (exactly recomputed:
    grey pixels from their 256-entry table, the few others with the numpy form of
    :func:`rgb_to_yuv`)."""
    sigmas = (settings.sigma_luma, settings.sigma_chroma, settings.sigma_chroma)
    eps = _eps(sigmas)
    f = np.ascontiguousarray(rgb.T).astype(np.float32)  # [3, P], unit-stride channels
    q = np.empty_like(f)
    tmp = np.empty(f.shape[1], dtype=np.float32)
    for i, (row, off, sig) in enumerate(zip(RGB_TO_YUV, YUV_OFFSET, sigmas)):
        w = np.array(row, dtype=np.float32) / np.float32(sig)
        np.multiply(f[0], w[0], out=q[i])
        q[i] += np.multiply(f[1], w[1], out=tmp)
        q[i] += np.multiply(f[2], w[2], out=tmp)
        q[i] += np.float32(off / sig + eps)
    t = np.trunc(q)  # = floor: q > 0
    coords = t.astype(np.int32)
    q -= t
    near = q.min(0) < 2 * eps  # the float32 cell may be off by one: recompute exactly
    grey = np.equal(f[0], f[1])
    grey &= np.equal(f[1], f[2])
    g_idx = np.flatnonzero(grey)
    if g_idx.size:  # every grey pixel sits on a chroma boundary (U = V = 128): take its exact cells
        table = _grey_coords(sigmas[0], sigmas[1]).numpy().astype(np.int32)
        level = rgb[g_idx, 0]
        for c in range(3):
            coords[c][g_idx] = table[:, c].take(level)
        near[g_idx] = False
    idx = np.flatnonzero(near)
    if idx.size:
        yuv = _yuv_channels(rgb[idx].astype(np.float64))
        for c, (v, sig) in enumerate(zip(yuv, sigmas)):
            coords[c][idx] = np.trunc(v / sig)
    return list(coords)


@functools.lru_cache(maxsize=16)
def _grey_coords(s_luma: float, s_chroma: float) -> torch.Tensor:
    """Exact grid colour coordinates [256, 3] of the grey pixels (v, v, v)."""
    v = torch.arange(256, dtype=torch.uint8).unsqueeze(1).expand(256, 3).contiguous()
    return _exact_coords(v, (s_luma, s_chroma, s_chroma))


# --------------------------------------------------------------------------- colour table
#: Colour → cell tables over all 2^24 RGB values (int16, 32 MiB, when the cells fit, as with the
#: default sigmas; else int32; ~0.5–1 s to build on one CPU core), kept for the most recent sigmas /
#: devices: with one, the per-pixel colour work is one gather instead of ~30 elementwise passes (:mod:`found.refine.solver` decides when to build).
_LUT_CACHE: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
_LUT_CACHE_SIZE = 2


def colour_table(settings: RefineSettings, radix: tuple[int, int], device: torch.device,
                 build: bool) -> torch.Tensor | None:
    """The cached cell table for the settings' colour sigmas on ``device`` (built now if ``build``,
    with the settings' backend), else None."""
    k = (settings.sigma_luma, settings.sigma_chroma, radix, str(device))
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
        lut[lo:lo + step] = colour_index(colour_coords(rgb, settings), *radix)
    if int(lut.max()) < 2**15:  # half the memory, and fewer cache misses per lookup
        lut = lut.to(torch.int16)
    _LUT_CACHE[k] = lut
    while len(_LUT_CACHE) > _LUT_CACHE_SIZE:
        _LUT_CACHE.popitem(last=False)
    return lut


def clear_tables() -> None:
    """Drop the cached colour tables."""
    _LUT_CACHE.clear()
