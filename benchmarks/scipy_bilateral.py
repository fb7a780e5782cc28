"""Baseline: a straightforward numpy / scipy.sparse bilateral solver, one image at a time.

Same algorithm, parameters and formulation as FOUND's ``bilateral_solver.py`` (hash the 5-D grid
with ``np.unique``, a CSR splat matrix and one CSR neighbour matrix per grid dimension, blur as
``2·dim·x + Σ_d B_d x``, bistochastisation, ``A = λ(D_m − D_n·blur(D_n)) + diag(S w)``,
Jacobi-preconditioned ``scipy.sparse.linalg.cg``), written plainly (one image at a time) so that
``bench_bilateral.py`` can time ``found.refine`` against the usual CPU formulation in the same
run, and the tests can cross-check inputs the parity fixtures do not cover. Not used by the
package.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import cg

_RGB_TO_YUV = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_OFFSET = np.array([0.0, 128.0, 128.0])
_BASE = 255.0


def grid_matrices(image: np.ndarray, sigma_spatial: float = 16, sigma_luma: float = 16, sigma_chroma: float = 8):
    """Splat matrix S [V, P] and the 5 per-dimension neighbour matrices of the bilateral grid."""
    h, w = image.shape[:2]
    yuv = np.tensordot(image, _RGB_TO_YUV, ([2], [1])) + _OFFSET
    yy, xx = np.mgrid[:h, :w]
    coords = np.stack(
        [(xx / sigma_spatial).astype(int), (yy / sigma_spatial).astype(int),
         (yuv[..., 0] / sigma_luma).astype(int), (yuv[..., 1] / sigma_chroma).astype(int),
         (yuv[..., 2] / sigma_chroma).astype(int)], axis=-1).reshape(-1, 5)
    weights = _BASE ** np.arange(5)
    keys = coords @ weights
    uniq, inverse = np.unique(keys, return_inverse=True)
    nv, npix = len(uniq), h * w
    S = sparse.csr_matrix((np.ones(npix), (inverse.ravel(), np.arange(npix))), shape=(nv, npix))
    blurs = []
    for d in range(5):
        rows, cols = [], []
        for off in (-weights[d], weights[d]):
            pos = np.clip(np.searchsorted(uniq, uniq + off), 0, nv - 1)
            ok = np.flatnonzero(uniq[pos] == uniq + off)
            rows.append(ok)
            cols.append(pos[ok])
        r, c = np.concatenate(rows), np.concatenate(cols)
        blurs.append(sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(nv, nv)))
    return S, blurs


def _blur(blurs, x):
    """``2·dim·x + Σ_d B_d x``: the [1 2 1] blur, one neighbour matrix per dimension (as the reference)."""
    out = 2 * len(blurs) * x
    for bd in blurs:
        out = out + bd @ x
    return out


def solve(image: np.ndarray, target: np.ndarray, confidence: float = 0.999, *, sigma_spatial: float = 16,
          sigma_luma: float = 16, sigma_chroma: float = 8, lam: float = 256.0, max_iter: int = 25,
          tol: float = 1e-5, a_diag_min: float = 1e-5) -> tuple[np.ndarray, int]:
    """Soft solver output [H, W] (float64) and the number of grid vertices for one uint8 RGB image."""
    S, blurs = grid_matrices(image, sigma_spatial, sigma_luma, sigma_chroma)
    counts = S @ np.ones(S.shape[1])
    n = np.ones(S.shape[0])
    for _ in range(10):
        n = np.sqrt(n * counts / _blur(blurs, n))
    m = n * _blur(blurs, n)
    Dn = sparse.diags(n)
    t = target.reshape(-1).astype(np.float64)
    c = np.full(t.shape, float(confidence))
    w_splat = S @ c
    A = lam * (sparse.diags(m) - Dn @ _blur(blurs, Dn)) + sparse.diags(w_splat)
    b = S @ (t * c)
    precond = sparse.diags(1.0 / np.maximum(A.diagonal(), a_diag_min))
    y, _ = cg(A, b, x0=b / w_splat, M=precond, maxiter=max_iter, rtol=tol, atol=0.0)
    return (S.T @ y).reshape(target.shape), S.shape[0]
