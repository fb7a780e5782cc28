"""Batched fast bilateral solver (Barron & Poole, 2016) as FOUND uses it, in torch.

The algorithm follows FOUND's ``bilateral_solver.py`` (itself adapted from TokenCut) step by step,
so that a float64 run reproduces it to ~1e-14 (docs/refinement.md):

* RGB → YUV → grid colour coordinates, bit-exact (:mod:`found.refine.colour`);
* the 5-D bilateral grid keyed like the authors' hash (:mod:`found.refine.grid`);
* splat (per-vertex sums in pixel order, as scipy's CSR product), 10 bistochastisation
  iterations, ``A = λ (D_m − D_n B D_n) + diag(S w)``, ``b = S (w·t)``, and Jacobi-preconditioned
  CG from ``S(w·t) / S w`` with scipy's stopping rule (``‖r‖ < tol·‖b‖`` tested at the start of
  each of at most ``max_iter`` iterations; ``b = 0`` returns zeros); slice.

Several images are solved at once: their vertices form a padded ``[B, V_max]`` block-diagonal
system (images never share a vertex). With torch (any device) CG runs for all of them with
per-image scalars and a per-image convergence mask — no Python loop over images or vertices in
the hot path. On CPU the batch is cut into cache-sized chunks, solved in parallel (one per torch
thread) by the numpy/scipy form of the same solver (:mod:`found.refine.cpu`), whose per-call
cost on these small arrays is a fraction of torch's.
"""
from __future__ import annotations

import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence, Union

import numpy as np
import torch

from ..override import SharedOverride
from . import cpu
from ._cpu import numpy_ok

from .colour import clear_tables, colour_table, rgb_to_yuv
from .grid import GRID_DIM, Grid, build_grid, key_layout
from .system import a_diagonal, bistochastize, sequential_sums

if TYPE_CHECKING:
    from PIL import Image as _PILImage

ImageLike = Union[np.ndarray, torch.Tensor, "_PILImage.Image"]
MaskLike = Union[np.ndarray, torch.Tensor]

__all__ = [
    "SolveOutput",
    "bilateral_solve",
    "solve_batch",
    "rgb_to_yuv",
    "as_rgb_uint8",
    "as_target",
    "clear_caches",
]

#: The colour table (:mod:`found.refine.colour`) is built once the calls with the same sigmas on the
#: CPU have solved this many pixels in all, then reused by every such call. It takes ~0.5 s to
#: build and saves ~5–10 ns per pixel, so it is built once the calls have solved about as many
#: pixels as its build would save time on (~64 M pixels: ~1,300 images of 224², ~400 of 320×480,
#: the first ~13 iterations of training): never more than twice the cost of the better choice in
#: hindsight, and no build at all for short jobs.
LUT_MIN_PIXELS = 1 << 26
#: The same on other devices, where the table takes milliseconds to build (one training batch).
LUT_MIN_PIXELS_GPU = 1 << 21
_PIXELS_SOLVED: dict[tuple, int] = {}  # pixels solved so far per (sigmas, device), towards LUT_MIN_PIXELS


def clear_caches() -> None:
    """Drop the cached colour tables, the pixel counts that trigger them and the cached spatial key
    maps (e.g. to free memory or to time a cold start)."""
    clear_tables()
    cpu._cached_spatial_map.cache_clear()
    _PIXELS_SOLVED.clear()


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
    t = _from_numpy(image) if isinstance(image, np.ndarray) else image.detach()
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
    t = t.detach()
    if t.dim() == 3 and t.shape[0] == 1:
        t = t[0]
    where = "" if index is None else f" (image {index})"
    if tuple(t.shape) != tuple(hw):
        raise ValueError(f"mask shape {tuple(t.shape)} does not match the image size {tuple(hw)}{where}: "
                         "resize the mask to the image first")
    if t.dtype.is_complex:
        raise TypeError(f"complex masks are not supported{where}")
    if t.dtype.is_floating_point:  # checked before the float64 copy; integer / bool masks are finite
        finite = bool(np.isfinite(t.numpy()).all()) if numpy_ok(t) and t.dtype != torch.bfloat16 else bool(
            torch.isfinite(t).all())
        if not finite:
            raise ValueError(f"the mask contains NaN or infinite values{where}")
    return t.to(device=device, dtype=torch.float64)


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
    table = sequential_sums(value, int(counts.max()))
    return torch.from_numpy(table).to(counts.device).index_select(0, counts.long())


def _system_torch(grid: Grid, w_splat: torch.Tensor, b: torch.Tensor, lam: float, max_iter: int, tol: float,
                  a_diag_min: float, bistochastize_iters: int, dtype: torch.dtype,
                  n_img: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bistochastise, assemble ``A`` and run the batched CG with torch (any device): vertex values [B, V_max]."""
    device = b.device
    v_max = grid.v_max
    # bistochastisation; blur = 2·dim·I + Σ_d (shift_−d + shift_+d)
    unit = torch.ones(grid.col.shape, dtype=torch.float64, device=device)
    unit[grid.diag_pos] = 2 * GRID_DIM
    n, m = bistochastize(grid.matrix(unit), grid.counts, bistochastize_iters)

    # A = λ (D_m − D_n B D_n) + diag(S w), the authors' expression entry by entry
    diag = a_diagonal(m, n, w_splat, lam)
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


def _solve(rgb: torch.Tensor, target: torch.Tensor, sizes: Sequence[tuple[int, int]], confidence: float,
           sigmas: tuple[float, float, float], lam: float, max_iter: int, tol: float, a_diag_min: float,
           bistochastize_iters: int, dtype: torch.dtype) -> SolveOutput:
    """Core batched solver on flat inputs: rgb [P, 3] uint8 and target [P] float64, images concatenated."""
    if numpy_ok(rgb):
        pix, n_vertices, iterations = cpu.solve(rgb.numpy(), target.numpy(), sizes, confidence, sigmas, lam,
                                                max_iter, tol, a_diag_min, bistochastize_iters, dtype)
        return SolveOutput(soft=_split(torch.from_numpy(pix), sizes), n_vertices=n_vertices, iterations=iterations)
    device = rgb.device
    grid = build_grid(rgb, sizes, sigmas)
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

    x, iterations = _system_torch(grid, w_splat, b, lam, max_iter, tol, a_diag_min, bistochastize_iters, dtype, n_img)
    pix = x.reshape(-1).index_select(0, slot)  # slice
    return SolveOutput(soft=_split(pix, sizes), n_vertices=grid.n_vertices.tolist(),
                       iterations=[int(i) for i in iterations])


def _split(pix: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Per-pixel values of concatenated images → one [H, W] view per image."""
    soft, start = [], 0
    for h, w in sizes:
        soft.append(pix[start:start + h * w].view(h, w))
        start += h * w
    return soft


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
    if seen >= (LUT_MIN_PIXELS if device.type == "cpu" else LUT_MIN_PIXELS_GPU):  # the table pays off: build it
        lay = key_layout(sizes, sigmas)
        if lay.compact:
            wl, wu, wv = lay.weights[2:]
            colour_table(sigmas[1], sigmas[2], (wu // wl, wv // wl), device, build=True)

    def solve(chunk: tuple[int, int]) -> SolveOutput:
        lo, hi = chunk
        if hi - lo == 1:
            return _solve(rgbs[lo].reshape(-1, 3), targets[lo], sizes[lo:hi], *params)
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


def _one_torch_thread() -> Callable[[], None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    return lambda: torch.set_num_threads(n)


#: One torch thread per worker while chunks are solved in parallel (no oversubscription); torch's
#: thread count is process-wide, so concurrent solves share the override.
_single_threaded_torch = SharedOverride(_one_torch_thread)


#: On CPU, images are solved in groups of about this many pixels (one 224² or larger image per
#: group; small images together, which amortises Python overhead): the working set stays in cache
#: and groups spread evenly over the threads. Larger groups measured no faster.
CPU_CHUNK_PIXELS = 1 << 16


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
