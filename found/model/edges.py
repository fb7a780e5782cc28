"""Edge-aware upsampling of a soft mask, guided by the full-size image (Fast Guided Filter).

An image over the engine's working size is processed reduced; its soft mask (float32 in [0, 1] at
the reduced size) is blocky at the model's 8-px patches. :func:`guided_upsample` scales it to the
input's full size with the fast guided filter of He & Sun (2015, "Fast Guided Filter"), on the colour
guided filter of He, Sun & Tang (2010/2013: a 3×3 colour covariance per pixel):

1. the guide is reduced to the mask's size by exact area averaging (by strips of rows, so the
   full-size image is never converted to float at once);
2. the linear model q = a·I + b is fitted in every (2r+1)² window of the reduced guide I and mask p
   (box filters by cumulative sums, float32 on centred values), ``a = (Σ + eps·U)⁻¹ cov(I, p)``,
   ``b = p̄ − a·Ī``, and (a, b) are averaged over the windows;
3. the averaged coefficients are scaled up bilinearly (pixel centres, like Pillow's BILINEAR) and
   q = Σ_c a_c·I_c + b is evaluated on the full-size guide in strips of rows.

Memory beyond the input and the output: the coefficients scaled along x only (h × W × 4 float32,
19 MB at 4000×3000 from 400×300), the reduced-size fit (~15 MB) and a few strips (``strip`` rows ×
W × ~6 float32); measured peak at 4000×3000: ~50 MB + the output (48 MB float32, 12 MB uint8), vs
~130 MB for :func:`bilinear_upsample`.

:func:`bilinear_upsample` is the engine's current behaviour, kept here so both are measured alike
(``benchmarks/bench_edges.py``).
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

#: Patch size (px) of the backbone on the reduced image: the blocks that the filter must undo (DINO's
#: 8; the engine passes its model's patch as ``radius``, e.g. 14 for DINOv2).
PATCH = 8
#: Default window radius, in pixels of the reduced mask: one patch. The 0.5 contour of a patch-level
#: mask is off the true edge by up to about half a patch, and each window must reach clean foreground
#: and background on both sides of it to fit the colour → mask line; wider windows round corners and
#: thin parts off (see benchmarks/bench_edges.py).
DEFAULT_RADIUS = PATCH
#: Default regulariser, in colour units of [0, 1]²: windows whose colours vary less than σ ≈ 0.1 get a
#: reduced slope, so the full-size sensor noise that q = a·I + b passes through stays small where
#: foreground and background colours are close (see benchmarks/bench_edges.py).
DEFAULT_EPS = 1e-2
#: Rows of the full-size image handled at once (small strips stay in the CPU's cache: 64 is faster than 512).
DEFAULT_STRIP = 64


def bilinear_upsample(soft: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The current behaviour: ``soft`` scaled to ``size`` = (W, H) by Pillow's BILINEAR, clipped to [0, 1]."""
    im = Image.fromarray(np.asarray(soft, dtype=np.float32), mode="F").resize(
        (int(size[0]), int(size[1])), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(im, dtype=np.float32), 0, 1)


def guided_upsample(soft: np.ndarray, guide: np.ndarray, *, radius: int | None = None, eps: float = DEFAULT_EPS,
                    strip: int = DEFAULT_STRIP, out_dtype: type | np.dtype = np.float32) -> np.ndarray:
    """``soft`` float [h, w] in [0, 1] scaled to the size of ``guide`` uint8 [H, W, 3|4] by the fast guided filter.

    ``radius`` (default :data:`DEFAULT_RADIUS`) is in pixels of ``soft``; ``eps`` in colour units of [0, 1]²;
    ``strip`` rows of the full-size image are processed at once. Returns float32 [H, W] clipped to [0, 1],
    or with ``out_dtype=np.uint8`` the probability × 255 rounded (no full-size float array is made).
    The alpha channel of an RGBA guide is ignored. When the sizes agree, ``soft`` is returned unfiltered
    (clipped, as a new array), like :func:`bilinear_upsample`. Raises ValueError on bad shapes or
    dtypes, a guide smaller than ``soft``, or a guide whose aspect ratio differs from ``soft``'s by more
    than rounding to whole pixels of ``soft`` (e.g. a transposed image).
    """
    soft = np.asarray(soft)
    h, w, H, W = _check(soft, guide)
    out_dtype = np.dtype(out_dtype)
    if out_dtype not in (np.dtype(np.float32), np.dtype(np.uint8)):
        raise ValueError(f"out_dtype must be float32 or uint8, got {out_dtype}")
    r = DEFAULT_RADIUS if radius is None else int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if strip < 1:
        raise ValueError(f"strip must be >= 1, got {strip}")
    p = np.clip(np.nan_to_num(soft.astype(np.float64, copy=False), nan=0.0), 0, 1)
    if (h, w) == (H, W):
        return _finish(torch.from_numpy(p.astype(np.float32)), out_dtype).numpy()
    small = area_reduce(guide, (h, w), strip=strip)  # float64 [h, w, 3] in [0, 255]
    coef = fit_coefficients(torch.from_numpy((small / 255.0).astype(np.float32)), torch.from_numpy(p.astype(np.float32)),
                            r, float(eps))  # [4, h, w]
    coef[:3] /= 255.0  # the full-size guide is used in [0, 255]
    return apply_coefficients(coef, guide, strip=strip, out_dtype=out_dtype)


def _strip(image: np.ndarray, y0: int, y1: int) -> torch.Tensor:
    """Rows y0:y1 of the first 3 channels as a tensor (copied when the array is read-only, e.g. Pillow's)."""
    a = image[y0:y1, :, :3]
    return torch.from_numpy(np.ascontiguousarray(a) if a.flags.writeable else np.array(a))


def _check(soft: np.ndarray, guide: np.ndarray) -> tuple[int, int, int, int]:
    """(h, w, H, W) of a valid pair, else ValueError."""
    if soft.ndim != 2 or soft.size == 0:
        raise ValueError(f"soft must be a non-empty [h, w] array, got shape {soft.shape}")
    if not np.issubdtype(soft.dtype, np.floating):
        raise ValueError(f"soft must be a float array, got {soft.dtype}")
    if not isinstance(guide, np.ndarray) or guide.dtype != np.uint8 or guide.ndim != 3 or guide.shape[2] not in (3, 4):
        raise ValueError(f"guide must be a uint8 [H, W, 3|4] array, got {getattr(guide, 'dtype', type(guide))} "
                         f"{getattr(guide, 'shape', '')}")
    (h, w), (H, W) = soft.shape, guide.shape[:2]
    if H < h or W < w:
        raise ValueError(f"guide {H}x{W} is smaller than the mask {h}x{w} (HxW)")
    # one scale must give both sides of soft, each rounded to whole pixels (±1 px allows any rounding)
    if max((w - 1) / W, (h - 1) / H) > min((w + 1) / W, (h + 1) / H):
        raise ValueError(f"guide {H}x{W} and mask {h}x{w} (HxW) differ in aspect ratio")
    return h, w, H, W


def _counts(n: int, r: int, dtype: torch.dtype) -> torch.Tensor:
    """Pixels in each window of radius r clipped to an axis of n."""
    i = torch.arange(n)
    return ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(dtype)


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over the (2r+1)² window clipped to the image, for [..., h, w] (cumulative sums of the zero-padded input)."""
    h, w = x.shape[-2:]
    r = min(r, max(h, w))  # a wider window covers the whole image all the same
    k = 2 * r + 1
    c = torch.cumsum(torch.nn.functional.pad(x, (0, 0, r + 1, r)), dim=-2)
    x = c[..., k:, :] - c[..., :-k, :]
    c = torch.cumsum(torch.nn.functional.pad(x, (r + 1, r)), dim=-1)
    x = c[..., k:] - c[..., :-k]
    return x / (_counts(h, r, x.dtype)[:, None] * _counts(w, r, x.dtype)[None, :])


def fit_coefficients(I: torch.Tensor, p: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """Window-averaged guided-filter coefficients [a_r, a_g, a_b, b] ([4, h, w]) of guide I [h, w, 3] and mask p [h, w].

    Computed in the inputs' dtype on I and p less their means (the filter does not depend on them;
    centred, float32 sums lose nothing that matters next to eps, and a constant p gives a = 0 exactly).
    """
    I0, p0 = I.mean((0, 1)), p.mean()
    I, p = (I - I0).permute(2, 0, 1), p - p0  # [3, h, w], [h, w]
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    stack = torch.cat([I, p[None], I * p, torch.stack([I[i] * I[j] for i, j in pairs])])  # [13, h, w]
    m = _box(stack, r)
    mI, mp, mIp, mII = m[0:3], m[3], m[4:7], m[7:13]
    cov = mIp - mI * mp  # [3, h, w]
    s = [mII[k] - mI[i] * mI[j] for k, (i, j) in enumerate(pairs)]
    rr, rg, rb, gg, gb, bb = s[0] + eps, s[1], s[2], s[3] + eps, s[4], s[5] + eps
    # inverse of the symmetric 3×3 (Σ + eps·U) by cofactors
    i_rr, i_rg, i_rb = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
    i_gg, i_gb, i_bb = rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg
    det = rr * i_rr + rg * i_rg + rb * i_rb
    a = torch.stack([i_rr * cov[0] + i_rg * cov[1] + i_rb * cov[2],
                     i_rg * cov[0] + i_gg * cov[1] + i_gb * cov[2],
                     i_rb * cov[0] + i_gb * cov[1] + i_bb * cov[2]]) / det
    b = mp - (a * mI).sum(0)
    m = _box(torch.cat([a, b[None]]), r)
    m[3] += p0 - (m[:3] * I0.view(3, 1, 1)).sum(0)  # back to the uncentred I and p
    return m


def _axis(n_out: int, n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps (i0, i1, weight of i1) from n_in to n_out samples, pixel centres, clamped at the borders."""
    x = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(0, n_in - 1)
    i0 = x.floor().long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, (x - i0).to(torch.float32)


def _bins(n_out: int, n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per source pixel of an axis of n_in: its target bin of n_out, its share in that bin, and in the next one."""
    s = n_out / n_in
    lo = torch.arange(n_in, dtype=torch.float64) * s
    k = lo.floor().long().clamp(max=n_out - 1)
    w0 = (torch.minimum(lo + s, (k + 1).double()) - lo) / s
    w1 = 1.0 - w0
    return k, w0, torch.where(w1 > 1e-9, w1, 0.0)


def area_reduce(image: np.ndarray, hw: tuple[int, int], *, strip: int = DEFAULT_STRIP) -> np.ndarray:
    """uint8 [H, W, C≥3] → float64 [h, w, 3]: exact area averages of the first 3 channels, by strips of rows."""
    (h, w), (H, W) = hw, image.shape[:2]
    ky, wy0, wy1 = _bins(h, H)
    kx, wx0, wx1 = _bins(w, W)
    xsplit = torch.nonzero(wx1).flatten()  # columns that straddle two bins
    kx1 = (kx[xsplit] + 1).clamp(max=w - 1)
    ax0, ax1 = (wx0[xsplit] - 1).float().view(1, -1, 1), wx1[xsplit].float().view(1, -1, 1)
    acc = torch.zeros((h, w, 3), dtype=torch.float64)
    for y0 in range(0, H, strip):
        y1 = min(H, y0 + strip)
        f = _strip(image, y0, y1).to(torch.float32)
        fx = torch.zeros((y1 - y0, w, 3), dtype=torch.float32)  # sums along x (exact: whole grey levels)
        fx.index_add_(1, kx, f)  # every column into its bin, then the straddling ones shared out
        if len(xsplit):
            fs = f.index_select(1, xsplit)
            fx.index_add_(1, kx[xsplit], fs * ax0)
            fx.index_add_(1, kx1, fs * ax1)
        fx = fx.double()
        k = ky[y0:y1]
        acc.index_add_(0, k, fx)  # the same along y
        split = torch.nonzero(wy1[y0:y1]).flatten()
        if len(split):
            fs = fx.index_select(0, split)
            acc.index_add_(0, k[split], fs * (wy0[y0:y1][split] - 1).view(-1, 1, 1))
            acc.index_add_(0, (k[split] + 1).clamp(max=h - 1), fs * wy1[y0:y1][split].view(-1, 1, 1))
    return (acc / ((H / h) * (W / w))).numpy()


def apply_coefficients(coef: torch.Tensor, guide: np.ndarray, *, strip: int = DEFAULT_STRIP,
                       out_dtype: np.dtype = np.dtype(np.float32)) -> np.ndarray:
    """q = Σ_c a_c·I_c + b at full size, by strips: coef [4, h, w] scaled up bilinearly, guide uint8 [H, W, 3|4]."""
    _, h, w = coef.shape
    H, W = guide.shape[:2]
    ix0, ix1, wx = _axis(W, w)
    iy0, iy1, wy = _axis(H, h)
    cx = torch.empty((4, h, W), dtype=torch.float32)  # scaled along x once, channel by channel
    for c in range(4):
        torch.lerp(coef[c].index_select(1, ix0), coef[c].index_select(1, ix1), wx, out=cx[c])
    out = np.empty((H, W), dtype=out_dtype)
    out_t = torch.from_numpy(out)
    for y0 in range(0, H, strip):
        y1 = min(H, y0 + strip)
        ry0, ry1, ryw = iy0[y0:y1], iy1[y0:y1], wy[y0:y1].view(-1, 1)
        g = _strip(guide, y0, y1).permute(2, 0, 1)  # uint8 [3, s, W] view
        q = torch.lerp(cx[3].index_select(0, ry0), cx[3].index_select(0, ry1), ryw)
        for c in range(3):
            a = torch.lerp(cx[c].index_select(0, ry0), cx[c].index_select(0, ry1), ryw)
            q.addcmul_(a, g[c].to(torch.float32))
        out_t[y0:y1] = _finish(q, out_dtype)
    return out


def _finish(q: torch.Tensor, out_dtype: np.dtype) -> torch.Tensor:
    """float32 probabilities clipped to [0, 1], or as uint8 × 255 rounded."""
    if out_dtype == np.uint8:
        return q.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    return q.clamp_(0, 1)
