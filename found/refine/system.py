"""Pieces of the solver's linear system that the torch solver (any device) and the numpy solver
(:mod:`found.refine.numpy_solver`) share: they take torch tensors and numpy arrays alike."""
from __future__ import annotations

import numpy as np
import torch

from .grid import GRID_DIM


def sequential_sums(value: float, kmax: int) -> np.ndarray:
    """``[0, value, value + value, …]`` (``kmax + 1`` entries, each summed left to right): what
    scipy's CSR splat gives for a constant per-pixel value over k pixels, bit for bit (float64)."""
    return np.concatenate([[0.0], np.cumsum(np.full(int(kmax), float(value)))])  # add.accumulate: sequential


def bistochastize(blur, counts, iters: int):
    """The authors' bistochastisation: ``n ← sqrt(n·m / blur(n))`` ``iters`` times from ``n = 1``,
    then ``m ← n·blur(n)``; ``blur`` is any operator with ``@``. Returns (n, m)."""
    xp = torch if isinstance(counts, torch.Tensor) else np
    m = counts
    n = xp.ones_like(m)
    for _ in range(iters):
        n = xp.sqrt(n * m / (blur @ n))
    return n, n * (blur @ n)


def a_diagonal(m, n, w_splat, lam: float):
    """Diagonal of ``A = λ (D_m − D_n B D_n) + diag(S w)`` with the authors' expression
    ``λ (m − n·(2·dim·n)) + S w``: exactly ``S w`` for a vertex without neighbours."""
    return lam * (m - n * ((2 * GRID_DIM) * n)) + w_splat
