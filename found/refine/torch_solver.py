"""The batched fast bilateral solver (Barron & Poole, 2016) in torch, for any device.

The algorithm follows FOUND's ``bilateral_solver.py`` (itself adapted from TokenCut) step by step,
so that a float64 run reproduces it to ~1e-14 (docs/refinement.md): grid colour coordinates
(:mod:`found.refine.colour`), the 5-D bilateral grid (:mod:`found.refine.grid`), splat (per-vertex
sums in pixel order, as scipy's CSR product), 10 bistochastisation iterations,
``A = λ (D_m − D_n B D_n) + diag(S w)``, ``b = S (w·t)``, and Jacobi-preconditioned CG from
``S(w·t) / S w`` with scipy's stopping rule (``‖r‖ < tol·‖b‖`` tested at the start of each of at
most ``max_iter`` iterations; ``b = 0`` returns zeros); slice.

Several images are solved at once: their vertices form a padded ``[B, V_max]`` block-diagonal
system (images never share a vertex), and CG runs for all of them with per-image scalars and a
per-image convergence mask — no Python loop over images or vertices in the hot path.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .grid import GRID_DIM, Grid, build_grid
from .settings import RefineSettings
from .system import a_diagonal, bistochastize, sequential_sums

__all__ = ["solve"]


def _sequential_sums(value: float, counts: torch.Tensor) -> torch.Tensor:
    """``0 + value + value + …`` (k terms, left to right) for every k in ``counts``: what scipy's
    CSR splat gives for a constant per-pixel value (zeros in between change nothing), bit for bit
    and independent of the summation order of the device."""
    table = sequential_sums(value, int(counts.max()))
    return torch.from_numpy(table).to(counts.device).index_select(0, counts.long())



def _system_torch(grid: Grid, w_splat: torch.Tensor, b: torch.Tensor, settings: RefineSettings,
                  n_img: int) -> tuple[torch.Tensor, list[int]]:
    """Bistochastise, assemble ``A`` and run the batched CG with torch (any device): vertex values
    [B, V_max] and CG iterations per image."""
    device = b.device
    lam, tol, dtype = settings.lam, settings.tol, settings.dtype
    v_max = grid.v_max
    # bistochastisation; blur = 2·dim·I + Σ_d (shift_−d + shift_+d)
    unit = torch.ones(grid.col.shape, dtype=torch.float64, device=device)
    unit[grid.diag_pos] = 2 * GRID_DIM
    n, m = bistochastize(grid.matrix(unit), grid.counts, settings.bistochastize_iters)

    # A = λ (D_m − D_n B D_n) + diag(S w), the authors' expression entry by entry
    diag = a_diagonal(m, n, w_splat, lam)
    entries = -(lam * (n.index_select(0, grid.row) * n.index_select(0, grid.col)))
    entries[grid.diag_pos] = diag
    A = grid.matrix(entries.to(dtype))
    inv_diag = (1.0 / torch.clamp(diag, min=settings.a_diag_min)).to(dtype).view(n_img, v_max)
    x = (b / w_splat).to(dtype).view(n_img, v_max)  # flat initialisation
    b = b.to(dtype).view(n_img, v_max)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        """A·v for every image's system at once, on [B, V_max] vectors."""
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
    for _ in range(settings.max_iter):
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


def solve(rgb: torch.Tensor, target: torch.Tensor, sizes: Sequence[tuple[int, int]],
          settings: RefineSettings) -> tuple[torch.Tensor, list[int], list[int]]:
    """Solve a batch with torch on any device: rgb [P, 3] uint8 and target [P] float64 with images
    concatenated → (soft value of every pixel [P], vertices per image, CG iterations per image)."""
    device = rgb.device
    confidence = settings.confidence
    grid = build_grid(rgb, sizes, settings)
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

    x, iterations = _system_torch(grid, w_splat, b, settings, n_img)
    pix = x.reshape(-1).index_select(0, slot)  # slice
    return pix, grid.n_vertices.tolist(), [int(i) for i in iterations]
