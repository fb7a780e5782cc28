"""The bilateral grid of a batch of images: vertices, pixel → vertex map and ±1 neighbours.

5-D grid (x, y, luma, u, v) keyed like the authors' ``Σ coord_d · 255^d``: vertices are the sorted
unique keys of each image, the blur links vertices whose keys differ by ``±w_d``. A compact
mixed-radix key with the same order and neighbours is used when every coordinate is ≤ 253, else
the authors' key itself (collisions included). Images of a batch are laid out in a padded
``[B, V_max]`` block-diagonal system (images never share a vertex).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ._cpu import numpy_ok
from .colour import colour_coords, colour_index, colour_table

#: Base of the authors' coordinate hash (``MAX_VAL``).
HASH_BASE = 255
GRID_DIM = 5


@dataclass
class Grid:
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
class Layout:
    """How the 5-D integer coordinates are packed into one sortable key."""

    weights: tuple[int, int, int, int, int]  # key step of +1 along x, y, luma, u, v
    stride: int  # key offset between consecutive images
    compact: bool  # mixed radix (True) or the authors' base-255 hash (False)


def key_layout(sizes: Sequence[tuple[int, int]], sigmas: tuple[float, float, float]) -> Layout:
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
    return Layout(tuple(weights), stride, compact)


def _spatial_key(sizes: Sequence[tuple[int, int]], s_spatial: float, lay: Layout, device: torch.device,
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


def colour_key(rgb: torch.Tensor, s_luma: float, s_chroma: float, lay: Layout, dtype: torch.dtype) -> torch.Tensor:
    """Per-pixel key part of the colour coordinates (luma, u, v), bit-exact with the authors' numpy."""
    wl, wu, wv = lay.weights[2:]
    if not lay.compact:
        c = colour_coords(rgb, s_luma, s_chroma)
        return c[0].to(dtype) * wl + c[1].to(dtype) * wu + c[2].to(dtype) * wv
    radix = (wu // wl, wv // wl)
    lut = colour_table(s_luma, s_chroma, radix, rgb.device, build=False)
    if lut is not None:
        r, g, b = (rgb[:, i].int() for i in range(3))
        cell = lut.index_select(0, torch.add(torch.add(r, g, alpha=256), b, alpha=65536))
    else:
        cell = colour_index(colour_coords(rgb, s_luma, s_chroma), *radix)
    return cell.to(dtype).mul_(wl)


# --------------------------------------------------------------------------- index helpers
def _masked(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``t[mask]`` (numpy's boolean indexing is several times faster on CPU)."""
    if numpy_ok(t):
        return torch.from_numpy(np.ascontiguousarray(t.numpy()[mask.numpy()]))
    return t[mask]


def _search(sorted_keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """``searchsorted`` (numpy's is ~2× faster on CPU)."""
    if numpy_ok(sorted_keys):
        return torch.from_numpy(np.searchsorted(sorted_keys.numpy(), queries.numpy()))
    return torch.searchsorted(sorted_keys, queries)


def _repeat(values: torch.Tensor, counts: torch.Tensor, total: int) -> torch.Tensor:
    """``repeat_interleave`` (numpy's ``repeat`` is ~5× faster on CPU)."""
    if numpy_ok(values):
        return torch.from_numpy(np.repeat(values.numpy(), counts.numpy()))
    return torch.repeat_interleave(values, counts, output_size=total)


# --------------------------------------------------------------------------- grid construction
def _unique_runs(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runs of equal consecutive keys (key, length) and the sorted unique keys with each run's index."""
    if numpy_ok(key):
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


def build_grid(rgb: torch.Tensor, sizes: Sequence[tuple[int, int]], sigmas: tuple[float, float, float]) -> Grid:
    """Vertices (sorted unique keys per image), pixel → vertex map and ±1 neighbours of a batch."""
    device = rgb.device
    lay = key_layout(sizes, sigmas)
    n_img = len(sizes)
    kdt = torch.int32 if lay.stride * (n_img + 1) < 2**31 else torch.int64
    key = colour_key(rgb, sigmas[1], sigmas[2], lay, kdt)
    key += _spatial_key(sizes, sigmas[0], lay, device, kdt)

    # unique over runs of equal consecutive keys (≈ 1/3 of the pixels): a smaller sort
    n_pix = key.numel()
    run_keys, run_len, keys, run_vertex = _unique_runs(key)
    del key
    n_vert = keys.numel()
    if numpy_ok(keys):
        return _vertices_numpy(keys.numpy(), run_vertex.numpy(), run_len.numpy(), n_img, lay)

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
    return Grid(pixel_slot=pixel_slot, n_vertices=n_vertices, v_max=v_max, counts=counts,
                 crow=crow, col=col, row=row, diag_pos=diag_pos)


def _vertices_numpy(keys: np.ndarray, run_vertex: np.ndarray, run_len: np.ndarray, n_img: int, lay: Layout) -> Grid:
    """The vertex part of :func:`build_grid` (slots, counts, neighbours, CSR pattern) in numpy, for
    CPU tensors: the same arrays, built with a fraction of torch's per-call cost on these sizes."""
    n_vert = keys.size
    k = 2 * GRID_DIM + 1
    v_img = keys // lay.stride
    n_vertices = np.bincount(v_img, minlength=n_img)
    v_max = int(n_vertices.max())
    total = n_img * v_max
    slot = v_img.astype(np.int64) * v_max + (np.arange(n_vert) - (np.cumsum(n_vertices) - n_vertices)[v_img])
    pixel_slot = np.repeat(slot[run_vertex], run_len)
    counts = np.ones(total)
    counts[slot] = np.bincount(run_vertex, weights=run_len, minlength=n_vert)  # exact: integer sums

    # neighbours as in build_grid: +w_d searched (+1 along x is the next key), −w_d mirrored
    want = keys[None, :] + np.array(lay.weights, dtype=keys.dtype)[:, None]  # [5, V]
    pos = np.empty(want.shape, dtype=np.int64)
    pos[0] = np.arange(1, n_vert + 1)
    pos[1:] = np.searchsorted(keys, want[1:].reshape(-1)).reshape(GRID_DIM - 1, n_vert)
    np.minimum(pos, n_vert - 1, out=pos)
    d_hit, v_hit = np.nonzero(keys[pos] == want)
    src, dst = slot[v_hit], slot[pos[d_hit, v_hit]]
    columns = np.full((total, k), -1, dtype=np.int64)
    columns[:, GRID_DIM] = np.arange(total)
    flat = columns.reshape(-1)
    flat[src * k + (GRID_DIM + 1) + d_hit] = dst
    flat[dst * k + (GRID_DIM - 1) - d_hit] = src
    valid = columns >= 0
    per_row = valid.sum(1)
    nnz = int(per_row.sum())
    idt = np.int32 if nnz < 2**31 - 1 else np.int64
    crow = np.zeros(total + 1, dtype=idt)
    np.cumsum(per_row, out=crow[1:])
    return Grid(pixel_slot=torch.from_numpy(pixel_slot), n_vertices=torch.from_numpy(n_vertices), v_max=v_max,
                counts=torch.from_numpy(counts), crow=torch.from_numpy(crow),
                col=torch.from_numpy(columns[valid].astype(idt)),
                row=torch.from_numpy(np.repeat(np.arange(total), per_row)),
                diag_pos=torch.from_numpy(crow[:-1].astype(np.int64) + valid[:, :GRID_DIM].sum(1)))
