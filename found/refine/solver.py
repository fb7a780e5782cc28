"""The bilateral solver's entry points (:func:`bilateral_solve`, :func:`solve_batch`): normalise the
inputs, pick the implementation the settings' backend asks for, and solve a batch in chunks.

* the torch solver (:mod:`found.refine.torch_solver`) runs on any device, the whole batch at once;
* on CPU (``backend="auto"``, the default, or ``"numpy"``) the batch is cut into cache-sized
  chunks, solved in parallel (one per torch thread) by the numpy/scipy form of the same solver
  (:mod:`found.refine.numpy_solver`), whose per-call cost on these small arrays is a fraction of
  torch's.

Both reproduce FOUND's ``bilateral_solver.py`` (docs/refinement.md). Solver parameters come as one
:class:`~found.refine.settings.RefineSettings`.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..io.override import SharedOverride
from . import numpy_solver, torch_solver
from .colour import clear_tables, colour_table
from .grid import key_layout
from .inputs import ImageLike, MaskLike, as_rgb_uint8, as_target
from .settings import RefineSettings, as_settings

__all__ = ["SolveOutput", "bilateral_solve", "solve_batch", "solve_normalised", "clear_caches"]

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
    numpy_solver._cached_spatial_map.cache_clear()
    _PIXELS_SOLVED.clear()


@dataclass
class SolveOutput:
    """Solver outputs for a batch: soft maps plus grid / CG diagnostics (per image)."""

    soft: list[torch.Tensor]  # [H, W] per image, solver dtype, on the solver device
    n_vertices: list[int]  # bilateral-grid vertices per image
    iterations: list[int]  # CG iterations run per image (0 when b = 0 or x0 already converged)


def _solve(rgb: torch.Tensor, target: torch.Tensor, sizes: Sequence[tuple[int, int]],
           settings: RefineSettings) -> SolveOutput:
    """One chunk on flat inputs (rgb [P, 3] uint8, target [P] float64, images concatenated), with the
    numpy solver or the torch solver as ``settings`` say."""
    if settings.uses_numpy(rgb.device):
        pix, n_vertices, iterations = numpy_solver.solve(rgb.numpy(), target.numpy(), sizes, settings)
        pix = torch.from_numpy(pix)
    else:
        pix, n_vertices, iterations = torch_solver.solve(rgb, target, sizes, settings)
    return SolveOutput(soft=_split(pix, sizes), n_vertices=n_vertices, iterations=iterations)


def _split(pix: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Per-pixel values of concatenated images → one [H, W] view per image."""
    soft, start = [], 0
    for h, w in sizes:
        soft.append(pix[start:start + h * w].view(h, w))
        start += h * w
    return soft


def solve_batch(images: Sequence[ImageLike], targets: Sequence[MaskLike], *, settings: RefineSettings | None = None,
                device: torch.device | str | None = None) -> SolveOutput:
    """Like :func:`bilateral_solve`, plus per-image grid sizes and CG iteration counts."""
    settings = as_settings(settings)
    images, targets = list(images), list(targets)
    if len(images) != len(targets):
        raise ValueError(f"got {len(images)} images but {len(targets)} masks")
    if not images:
        return SolveOutput([], [], [])
    device = resolve_device(device, [*images, *targets])
    settings.check_device(device)
    rgbs = [as_rgb_uint8(im, device) for im in images]
    tgts = [as_target(t, r.shape[:2], device, i, settings).reshape(-1) for i, (t, r) in enumerate(zip(targets, rgbs))]
    return solve_normalised(rgbs, tgts, settings)


def resolve_device(device: torch.device | str | None, inputs: Sequence[object]) -> torch.device:
    """``device`` if given, else the device of the first tensor among ``inputs``, else the CPU."""
    if device is None:
        first = next((x for x in inputs if isinstance(x, torch.Tensor)), None)
        return first.device if first is not None else torch.device("cpu")
    return torch.device(device)


def solve_normalised(rgbs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                     settings: RefineSettings) -> SolveOutput:
    """Solve normalised inputs (uint8 [H, W, 3] images, float64 [H·W] targets, one device) in chunks."""
    sizes = [(int(r.shape[0]), int(r.shape[1])) for r in rgbs]
    device = rgbs[0].device
    settings.check_device(device)
    seen_key = (settings.sigma_luma, settings.sigma_chroma, str(device))
    seen = _PIXELS_SOLVED[seen_key] = _PIXELS_SOLVED.get(seen_key, 0) + sum(h * w for h, w in sizes)
    if seen >= (LUT_MIN_PIXELS if device.type == "cpu" else LUT_MIN_PIXELS_GPU):  # the table pays off: build it
        lay = key_layout(sizes, settings)
        if lay.compact:
            wl, wu, wv = lay.weights[2:]
            colour_table(settings, (wu // wl, wv // wl), device, build=True)

    def solve(chunk: tuple[int, int]) -> SolveOutput:
        """Solve the images ``lo:hi`` of one chunk together (one image alone without concatenating)."""
        lo, hi = chunk
        if hi - lo == 1:
            return _solve(rgbs[lo].reshape(-1, 3), targets[lo], sizes[lo:hi], settings)
        rgb = torch.cat([r.reshape(-1, 3) for r in rgbs[lo:hi]])
        return _solve(rgb, torch.cat(list(targets[lo:hi])), sizes[lo:hi], settings)

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



def bilateral_solve(images: Sequence[ImageLike], targets: Sequence[MaskLike], *,
                    settings: RefineSettings | None = None,
                    device: torch.device | str | None = None) -> list[torch.Tensor]:
    """Bilateral-solver soft outputs [H, W] for a batch of images of any sizes (FOUND's ``output_solver``).

    ``images``: uint8 [H, W, 3] / [H, W, 1] / [H, W] arrays or tensors, float [3, H, W] in [0, 1], or
    PIL images; ``targets``: [H, W] masks (float or bool) of the same sizes. The solver runs on
    ``device`` (default: the device of the first tensor given, else CPU) with ``settings`` (default
    :class:`RefineSettings()`: FOUND's parameters in float64, which reproduces the authors' scipy
    solver to ~1e-14; ``dtype=torch.float32`` is faster on GPUs but may flip pixels within ~1e-6
    of 0.5). Returns one tensor per image on that device.
    """
    return solve_batch(images, targets, settings=settings, device=device).soft
