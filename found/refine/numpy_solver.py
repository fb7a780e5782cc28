"""The bilateral solver on CPU, in numpy and scipy: the same arithmetic as the torch solver, at a
fraction of torch's per-call cost on these small arrays.

Pixels are handled as runs of equal consecutive grid keys (a few pixels each): the grid is built,
splatted and sliced per run. Vertices of all images of a batch are concatenated without padding
(images never share a vertex, so ``A`` is block-diagonal) and CG runs on them with per-image
scalars. The grid is :func:`found.refine.grid.build_grid`'s (same vertices, neighbours and values,
each CSR row in the same order) with the vertices renumbered for speed; the tests check both
against each other.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .colour import colour_coords_numpy, colour_table
from .grid import GRID_DIM, Layout, key_layout
from .settings import RefineSettings
from .system import a_diagonal, bistochastize, sequential_sums


@dataclass
class FlatGrid:
    """Bilateral grids of a batch of images, vertices concatenated image by image (within an image:
    by number of neighbours, then by key)."""

    run_start: np.ndarray  # [R] first pixel of each run of equal consecutive keys (images concatenated)
    run_len: np.ndarray  # [R] its length
    run_vertex: np.ndarray  # [R] its vertex
    order: np.ndarray  # [V] index of each vertex among the batch's vertices sorted by key
    n_vertices: list[int]  # per image
    counts: np.ndarray  # [V] float64 pixels per vertex
    indptr: np.ndarray  # [V + 1] CSR row pointers of the ±1 neighbour graph plus the diagonal
    indices: np.ndarray  # [nnz] columns, in key order within each row
    diag_pos: np.ndarray  # [V] position of each row's diagonal entry
    links: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # per dimension: (src, dst, pos of
    # entry (dst, src), pos of entry (src, dst)) for every pair of neighbours key(dst) = key(src) + w_d

    def values(self, diag: np.ndarray, pair: Sequence[np.ndarray] | float) -> np.ndarray:
        """CSR values: ``diag`` on the diagonal and, for dimension d, ``pair[d]`` (one value per link,
        or one scalar for all) on both entries of each link."""
        out = np.empty(self.indices.size, dtype=np.float64)
        out[self.diag_pos] = diag
        for d, (_, _, back, fwd) in enumerate(self.links):
            v = pair if isinstance(pair, float) else pair[d]
            out[back] = v
            out[fwd] = v
        return out

    def matrix(self, values: np.ndarray) -> "Matrix":
        """The matrix with this pattern and the given values."""
        return Matrix(self.indptr, self.indices, values)


def _find_kernel():
    """scipy's compiled CSR mat-vec (``y += A x``), if this scipy has it where it has been for a decade
    and it computes a known product correctly; else None."""
    try:
        from scipy.sparse._sparsetools import csr_matvec
        y = np.zeros(2)
        csr_matvec(2, 2, np.array([0, 1, 3], np.int32), np.array([1, 0, 1], np.int32), np.array([2.0, 3.0, 4.0]),
                   np.array([1.0, 10.0]), y)
    except Exception:  # noqa: BLE001 - a private entry point: any failure means "use the public operator"
        return None
    return csr_matvec if y.tolist() == [20.0, 43.0] else None


#: scipy's CSR product kernel, called directly: the public ``A @ x`` spends ~10 µs per call on
#: dispatch, a third of a 224² grid's product and ~10 % of the CPU solver. None → ``A @ x``.
KERNEL = _find_kernel()


class Matrix:
    """A square CSR matrix (scipy's layout) and its product with a vector."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray):
        self.indptr, self.indices, self.data = indptr, indices, data
        self.n = indptr.size - 1

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        if KERNEL is not None and x.dtype == self.data.dtype and x.ndim == 1 and x.flags.c_contiguous:
            y = np.zeros(self.n, dtype=x.dtype)
            KERNEL(self.n, self.n, self.indptr, self.indices, self.data, x, y)
            return y
        return self.scipy() @ x

    def scipy(self):
        """The same matrix as a scipy.sparse CSR matrix (no copy)."""
        from scipy import sparse

        return sparse.csr_matrix((self.data, self.indices, self.indptr), shape=(self.n, self.n), copy=False)


# --------------------------------------------------------------------------- per-pixel keys
def _rgb_index(rgb: np.ndarray) -> np.ndarray:
    """``r + 256·g + 65536·b`` of [P, 3] uint8 pixels (uint32), read as one unaligned little-endian
    word per pixel instead of three strided channels."""
    p = rgb.shape[0]
    buf = np.empty(3 * p + 1, dtype=np.uint8)
    buf[:-1] = rgb.reshape(-1)
    buf[-1] = 0
    words = np.ndarray((p,), dtype="<u4", buffer=buf, strides=(3,))
    return np.bitwise_and(words, 0xFFFFFF)


def colour_cells(rgb: np.ndarray, settings: RefineSettings, radix: tuple[int, int]) -> np.ndarray:
    """Mixed-radix colour cell ``L + radix_l·U + radix_lu·V`` of each [P, 3] uint8 pixel, bit-exact with
    the authors' numpy: from the cached colour table when one is built, else computed."""
    lut = colour_table(settings, radix, torch.device("cpu"), build=False)
    if lut is not None:
        return lut.numpy().take(_rgb_index(rgb))
    lum, u, v = colour_coords_numpy(rgb, settings)
    u *= radix[0]
    v *= radix[1]
    lum += u
    lum += v
    return lum


def _spatial_map(h: int, w: int, s_spatial: float, wx: int, wy: int, dtype: str) -> np.ndarray:
    """Per-pixel key part of (x, y) for an h×w image: ``trunc(ix/σ)·w_x + trunc(iy/σ)·w_y`` (read-only;
    cached for images of up to ``SPATIAL_CACHE_PIXELS`` pixels)."""
    if h * w <= SPATIAL_CACHE_PIXELS:
        return _cached_spatial_map(h, w, s_spatial, wx, wy, dtype)
    return _compute_spatial_map(h, w, s_spatial, wx, wy, dtype)


def _compute_spatial_map(h: int, w: int, s_spatial: float, wx: int, wy: int, dtype: str) -> np.ndarray:
    ys = np.trunc(np.arange(h, dtype=np.float64) / s_spatial).astype(dtype) * wy
    xs = np.trunc(np.arange(w, dtype=np.float64) / s_spatial).astype(dtype) * wx
    out = (ys[:, None] + xs[None, :]).reshape(-1)
    out.flags.writeable = False
    return out


#: Spatial key maps of images up to this size are kept (8 of them at most: ≤ 32 MiB).
SPATIAL_CACHE_PIXELS = 1 << 20
_cached_spatial_map = functools.lru_cache(maxsize=8)(_compute_spatial_map)


def pixel_keys(rgb: np.ndarray, sizes: Sequence[tuple[int, int]], settings: RefineSettings,
               lay: Layout) -> np.ndarray:
    """Grid key of every pixel (images concatenated; image ``i`` offset by ``i·stride``)."""
    kdt = np.int32 if lay.stride * (len(sizes) + 1) < 2**31 else np.int64
    wx, wy, wl, wu, wv = lay.weights
    if lay.compact:
        key = np.multiply(colour_cells(rgb, settings, (wu // wl, wv // wl)), wl, dtype=kdt)
    else:
        c = colour_coords_numpy(rgb, settings)
        key = c[0].astype(kdt) * wl + c[1].astype(kdt) * wu + c[2].astype(kdt) * wv
    lo = 0
    for i, (h, w) in enumerate(sizes):
        part = key[lo:lo + h * w]
        part += _spatial_map(h, w, settings.sigma_spatial, wx, wy, np.dtype(kdt).name)
        if i:
            part += kdt(i * lay.stride)
        lo += h * w
    return key


# --------------------------------------------------------------------------- grid
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
    return sorted_values[first].astype(values.dtype), inverse


def _unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique values and the index of each value among them."""
    bits = max(int(values.size).bit_length(), 1)
    if values.size and values.size <= PACKED_SORT_MAX and int(values.max()) < 2 ** (62 - bits) and int(values.min()) >= 0:
        return _packed_unique(values, bits)
    keys, inverse = torch.unique(torch.from_numpy(values), sorted=True, return_inverse=True)
    return keys.numpy(), inverse.numpy()


#: Largest lookup table (entries) :func:`dense_index` builds; beyond it the keys are sorted and searched.
DENSE_LOOKUP_MAX = 1 << 22


def dense_index(run_keys: np.ndarray, lay: Layout):
    """Vertices, run → vertex and neighbour pairs through a dense table over (occupied colour cell,
    spatial cell): (image of each vertex, vertex of each run, :func:`neighbour_pairs`' pairs), with
    vertices in key order, or None
    when the layout is not compact or the table would exceed ``DENSE_LOOKUP_MAX`` entries.

    A compact key is ``spatial cell + s_cells · (colour cell + image · colours)``; a 320×480 image
    occupies a few hundred colour cells, so the table has a few hundred thousand entries and stays
    in cache. Marking, numbering and looking up keys in it replaces the sort of the runs' keys
    and the binary searches of the neighbours, at ~half their cost."""
    if not lay.compact:
        return None
    s_cells = lay.weights[2]
    cc = run_keys // s_cells
    sp = run_keys - cc * s_cells
    lo = int(cc.min())
    cc_range = int(cc.max()) - lo + 1 + lay.weights[4] // s_cells  # room for the largest colour step
    if cc_range > DENSE_LOOKUP_MAX:
        return None
    occupied = np.zeros(cc_range, dtype=bool)
    occupied[cc - lo] = True
    cells = np.flatnonzero(occupied)  # occupied colour cells − lo, increasing
    n_cells = cells.size
    if n_cells * s_cells > DENSE_LOOKUP_MAX:
        return None
    cmap = np.full(cc_range, -1, dtype=np.int64)  # colour cell − lo → compact index
    cmap[cells] = np.arange(n_cells)
    ck = cmap.take(cc - lo) * s_cells + sp  # compact key of each run: same order as the key
    present = np.zeros(n_cells * s_cells, dtype=bool)
    present[ck] = True
    vk = np.flatnonzero(present)  # compact keys of the vertices, increasing
    n_vert = vk.size
    table = np.full(n_cells * s_cells, -1, dtype=np.int32 if n_vert >= 2**15 else np.int16)
    table[vk] = np.arange(n_vert, dtype=table.dtype)
    run_vertex = table.take(ck).astype(np.int64)
    ci = vk // s_cells
    sp_v = vk - ci * s_cells
    cell_v = cells.take(ci)
    image = (cell_v + lo) // (lay.stride // s_cells)  # image of each vertex

    # neighbours: +1 along x is the next compact key (x + 1 never leaves the spatial row of cells, so
    # consecutive compact keys are consecutive keys); +1 along y stays in the colour cell
    # (s + w_y < s_cells); a colour step moves to another colour cell, present or not
    src = np.flatnonzero((vk[1:] - vk[:-1]) == lay.weights[0])
    pairs = [(src, src + 1)]
    dst = table.take(vk + lay.weights[1])
    src = np.flatnonzero(dst >= 0)
    pairs.append((src, dst.take(src).astype(np.int64)))
    for wd in lay.weights[2:]:
        nc = cmap.take(cell_v + wd // s_cells)
        src = np.flatnonzero(nc >= 0)
        dst = table.take(nc.take(src) * s_cells + sp_v.take(src))
        hit = dst >= 0
        pairs.append((src[hit], dst[hit].astype(np.int64)))
    return image, run_vertex, pairs


def neighbour_pairs(keys: np.ndarray, lay: Layout) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each dimension d, the vertex pairs (src, dst) with ``keys[dst] = keys[src] + w_d`` (sorted
    unique keys; src increasing): +w_0 (x) is the next key when it exists, the others are searched."""
    n_vert = keys.size
    src = np.flatnonzero((keys[1:] - keys[:-1]) == lay.weights[0])
    pairs = [(src, src + 1)]
    for wd in lay.weights[1:]:
        want = keys + keys.dtype.type(wd)
        pos = np.searchsorted(keys, want)
        np.minimum(pos, n_vert - 1, out=pos)
        src = np.flatnonzero(keys[pos] == want)
        pairs.append((src, pos[src]))
    return pairs


def build_flat_grid(rgb: np.ndarray, sizes: Sequence[tuple[int, int]], settings: RefineSettings,
               labels: np.ndarray | None = None) -> FlatGrid:
    """Vertices (the unique keys of each image), runs of pixels → vertex, and the neighbour CSR pattern.

    Runs also end where ``labels`` [P] changes, so that each run has one label (the splat of a
    binary target is then one value per run)."""
    lay = key_layout(sizes, settings)
    key = pixel_keys(rgb, sizes, settings, lay)
    n_pix = key.size
    change = np.empty(n_pix, dtype=bool)
    change[0] = True
    np.not_equal(key[1:], key[:-1], out=change[1:])
    if labels is not None:
        change[1:] |= labels[1:] != labels[:-1]
    run_start = np.flatnonzero(change)
    run_len = np.diff(run_start, append=n_pix)
    run_keys = key[run_start]  # runs (≈ 1/2 of the pixels): fewer keys to number
    del key, change
    dense = dense_index(run_keys, lay)
    if dense is None:
        keys, run_vertex = _unique(run_keys)
        pairs = neighbour_pairs(keys, lay)
        image = keys // lay.stride
    else:
        image, run_vertex, pairs = dense
    n_vert = image.size
    if len(sizes) == 1:
        n_vertices = [n_vert]
    else:
        n_vertices = np.bincount(image, minlength=len(sizes)).tolist()
    counts = np.bincount(run_vertex, weights=run_len, minlength=n_vert)  # exact: integer sums

    # Vertices are numbered by (image, number of neighbours), in key order within each group: scipy's
    # CSR mat-vec then meets rows of one length in long stretches (its inner loop's branch is
    # predicted), which makes it ~2× faster on grids of more than a few thousand vertices.
    deg = np.bincount(np.concatenate([a for pr in pairs for a in pr]), minlength=n_vert) + 1  # ≤ 11
    group = deg.astype(np.uint8) if len(n_vertices) == 1 else (
        np.repeat(np.arange(len(n_vertices), dtype=np.int64) * 16, n_vertices) + deg)
    order = np.argsort(group, kind="stable")
    rank = np.empty(n_vert, dtype=np.int64)
    rank[order] = np.arange(n_vert)
    run_vertex = rank.take(run_vertex)
    counts = counts.take(order)
    deg = deg.take(order)
    pairs = [(rank.take(src), rank.take(dst)) for src, dst in pairs]

    # CSR; each row holds key − w_4 … key − w_0, self, key + w_0 … key + w_4 in this order
    nnz = int(deg.sum())
    idt = np.int32 if nnz < 2**31 - 1 else np.int64
    indptr = np.zeros(n_vert + 1, dtype=idt)
    np.cumsum(deg, out=indptr[1:])
    indices = np.empty(nnz, dtype=idt)
    fill = indptr[:-1].astype(np.int64)  # next free position of each row
    back = [None] * GRID_DIM
    for d in reversed(range(GRID_DIM)):
        src, dst = pairs[d]
        back[d] = fill[dst]
        indices[back[d]] = src
        fill[dst] = back[d] + 1
    diag_pos = fill.copy()
    indices[diag_pos] = np.arange(n_vert)
    fill += 1
    links = []
    for d in range(GRID_DIM):
        src, dst = pairs[d]
        fwd = fill[src]
        indices[fwd] = dst
        fill[src] = fwd + 1
        links.append((src, dst, back[d], fwd))
    return FlatGrid(run_start=run_start, run_len=run_len, run_vertex=run_vertex, n_vertices=n_vertices, order=order,
                    counts=counts, indptr=indptr, indices=indices, diag_pos=diag_pos, links=links)


# --------------------------------------------------------------------------- solver
def _sequential_sums(value: float, counts: np.ndarray) -> np.ndarray:
    """:func:`found.refine.system.sequential_sums` for every count (integer-valued floats)."""
    k = counts.astype(np.int64)
    return sequential_sums(value, k.max(initial=0)).take(k)


def solve(rgb: np.ndarray, target: np.ndarray, sizes: Sequence[tuple[int, int]],
          settings: RefineSettings) -> tuple[np.ndarray, list[int], list[int]]:
    """Solve a batch on CPU: rgb [P, 3] uint8 and target [P] float64 with images concatenated →
    (soft value of every pixel [P], vertices per image, CG iterations per image)."""
    confidence, lam, tol, max_iter = settings.confidence, settings.lam, settings.tol, settings.max_iter
    nd = np.dtype("float64") if settings.dtype == torch.float64 else np.dtype("float32")
    binary = bool(np.all((target == 0) | (target == 1)))
    grid = build_flat_grid(rgb, sizes, settings, labels=target if binary else None)
    n_vert = grid.counts.size

    # splat, in pixel order per vertex as scipy's CSR product
    w_splat = _sequential_sums(confidence, grid.counts)
    if binary:  # b from exact foreground counts (every run is all foreground or all background)
        fg = np.bincount(grid.run_vertex, weights=grid.run_len * target.take(grid.run_start), minlength=n_vert)
        b = _sequential_sums(confidence, fg)
    else:  # bincount adds in input (pixel) order
        b = np.bincount(np.repeat(grid.run_vertex, grid.run_len), weights=target * confidence, minlength=n_vert)

    # bistochastisation; blur = 2·dim·I + Σ_d (shift_−d + shift_+d)
    n, m = bistochastize(grid.matrix(grid.values(float(2 * GRID_DIM), 1.0)), grid.counts, settings.bistochastize_iters)

    # A = λ (D_m − D_n B D_n) + diag(S w), the authors' expression entry by entry
    diag = a_diagonal(m, n, w_splat, lam)
    pair = [-(lam * (n[src] * n[dst])) for src, dst, _, _ in grid.links]
    A = grid.matrix(grid.values(diag, pair).astype(nd, copy=False))
    inv_diag = (1.0 / np.maximum(diag, settings.a_diag_min)).astype(nd, copy=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        x0 = (b / w_splat).astype(nd, copy=False)  # flat initialisation
        b = b.astype(nd, copy=False)
        if len(sizes) == 1:
            x, it = cg_single(A, b, x0, inv_diag, tol, max_iter)
            iterations = [it]
        else:
            x, iterations = cg_ragged(A, grid.n_vertices, b, x0, inv_diag, tol, max_iter)
    soft = np.repeat(x.take(grid.run_vertex), grid.run_len)  # slice
    return soft, grid.n_vertices, iterations


# --------------------------------------------------------------------------- conjugate gradient
#: OpenBLAS runs dot / axpy on all its threads above 10 000 entries, and its idle threads then spin:
#: level-1 calls are cut into pieces below that (the sum order barely changes, the result not at all).
_BLAS_PIECE = 8192


@functools.lru_cache(maxsize=None)
def _blas(dtype: np.dtype):
    """BLAS dot and axpy for float32 / float64 vectors."""
    from scipy.linalg import blas

    return blas.get_blas_funcs(("dot", "axpy"), dtype=dtype)


def cg_single(A, b: np.ndarray, x: np.ndarray, inv_diag: np.ndarray, tol: float,
              max_iter: int) -> tuple[np.ndarray, int]:
    """Jacobi-preconditioned CG for one system, step for step as ``scipy.sparse.linalg.cg(A, b, x0=x,
    M=diag(inv_diag), rtol=tol, atol=0, maxiter=max_iter)``: solution and iterations run."""
    bdot, baxpy = _blas(b.dtype)
    pieces = [(lo, min(b.size - lo, _BLAS_PIECE)) for lo in range(0, b.size, _BLAS_PIECE)]

    if len(pieces) == 1:
        dot = bdot

        def axpy(a: float, u: np.ndarray, v: np.ndarray) -> None:  # v += a·u, in place
            """v += a·u in place: one BLAS call (the vectors fit in one piece)."""
            baxpy(u, v, a=a)
    else:
        def dot(u: np.ndarray, v: np.ndarray) -> float:
            """u·v summed over pieces small enough that OpenBLAS stays on one thread (see ``_BLAS_PIECE``)."""
            return sum(bdot(u, v, n=k, offx=lo, offy=lo) for lo, k in pieces)

        def axpy(a: float, u: np.ndarray, v: np.ndarray) -> None:  # v += a·u, in place
            """v += a·u in place, piece by piece so that OpenBLAS stays on one thread (see ``_BLAS_PIECE``)."""
            for lo, k in pieces:
                baxpy(u, v, n=k, a=a, offx=lo, offy=lo)

    b_norm = math.sqrt(dot(b, b))
    if b_norm == 0:  # scipy returns b itself (zeros)
        return b.copy(), 0
    atol = tol * b_norm
    x = x.copy()
    r = b - A @ x
    z = np.empty_like(r)
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
        axpy(alpha, p, x)
        axpy(-alpha, q, r)
        rho_prev = rho
    return x, int(max_iter)


def cg_ragged(A, n_vert: Sequence[int], b: np.ndarray, x0: np.ndarray, inv_diag: np.ndarray, tol: float,
              max_iter: int) -> tuple[np.ndarray, list[int]]:
    """CG for several images at once on their concatenated (block-diagonal) system: per-image dot
    products (``np.add.reduceat``), scalars and convergence mask — the numpy form of the torch
    solver's batched CG. Fewer, larger array operations than one CG per image; numpy releases the
    GIL while they run, so chunks solved on parallel threads overlap."""
    nv = np.asarray(n_vert, dtype=np.int64)
    n_img = nv.size
    starts = np.concatenate([[0], np.cumsum(nv)[:-1]])

    def dot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Per-image dot products of two stacked vectors (one sum per image's slice)."""
        return np.add.reduceat(u * v, starts)

    b_norm = np.sqrt(dot(b, b))
    atol = tol * b_norm
    active = b_norm > 0  # scipy returns b itself (zeros) when ‖b‖ = 0
    x = np.where(np.repeat(active, nv), x0, b)
    r = b - A @ x
    p = np.zeros_like(r)
    rho_prev = np.ones(n_img, dtype=r.dtype)
    iterations = np.zeros(n_img, dtype=np.int64)
    for _ in range(int(max_iter)):
        active &= ~(np.sqrt(dot(r, r)) < atol)  # scipy: stop when ‖r‖ < atol, tested first
        if not active.any():
            break
        iterations += active
        z = inv_diag * r
        rho = dot(r, z)
        p = z + np.repeat(np.where(active, rho / rho_prev, 0.0), nv) * p
        q = A @ p
        alpha = np.repeat(np.where(active, rho / dot(p, q), 0.0), nv)  # 0 freezes a converged image
        x += alpha * p
        r -= alpha * q
        rho_prev = np.where(active, rho, rho_prev)
    return x, iterations.tolist()
