"""The bilateral grid of a batch of images: vertices, pixel → vertex map and ±1 neighbours.

5-D grid (x, y, luma, u, v) keyed like the authors' ``Σ coord_d · 255^d``: vertices are the sorted
unique keys of each image, the blur links vertices whose keys differ by ``±w_d``. A compact
mixed-radix key with the same order and neighbours is used when every coordinate is ≤ 253, else
the authors' key itself (collisions included). Images of a batch are laid out in a padded
``[B, V_max]`` block-diagonal system (images never share a vertex).

This is the torch construction, for any device; on CPU the solver builds the same grid with
numpy (:mod:`found.refine.numpy_solver`), and the tests check that the two agree.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

from .colour import colour_coords, colour_index, colour_table
from .settings import RefineSettings

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


def key_layout(sizes: Sequence[tuple[int, int]], settings: RefineSettings) -> Layout:
    """Choose the key packing from static upper bounds of the coordinates (no device sync).

    The authors' key is ``Σ c_d·255^d``; as long as every coordinate is ≤ 253 it is a bijection
    whose ±1 neighbour lookups never hit a real vertex by wrapping around, so a mixed-radix key
    with digits ``bound_d + 2`` gives the same vertices, the same sorted order and the same
    neighbours with far fewer bits. Otherwise (images wider/taller than 253·σ_spatial pixels, or
    σ_luma/σ_chroma ≈ 1) the authors' hash itself is used, collisions included.
    """
    s_spatial, s_luma, s_chroma = sigmas = settings.sigmas
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


def colour_key(rgb: torch.Tensor, settings: RefineSettings, lay: Layout, dtype: torch.dtype) -> torch.Tensor:
    """Per-pixel key part of the colour coordinates (luma, u, v), bit-exact with the authors' numpy."""
    wl, wu, wv = lay.weights[2:]
    if not lay.compact:
        c = colour_coords(rgb, settings)
        return c[0].to(dtype) * wl + c[1].to(dtype) * wu + c[2].to(dtype) * wv
    radix = (wu // wl, wv // wl)
    lut = colour_table(settings, radix, rgb.device, build=False)
    if lut is not None:
        r, g, b = (rgb[:, i].int() for i in range(3))
        cell = lut.index_select(0, torch.add(torch.add(r, g, alpha=256), b, alpha=65536))
    else:
        cell = colour_index(colour_coords(rgb, settings), *radix)
    return cell.to(dtype).mul_(wl)


# --------------------------------------------------------------------------- grid construction
def build_grid(rgb: torch.Tensor, sizes: Sequence[tuple[int, int]], settings: RefineSettings) -> Grid:
    """Vertices (sorted unique keys per image), pixel → vertex map and ±1 neighbours of a batch."""
    device = rgb.device
    lay = key_layout(sizes, settings)
    n_img = len(sizes)
    kdt = torch.int32 if lay.stride * (n_img + 1) < 2**31 else torch.int64
    key = colour_key(rgb, settings, lay, kdt)
    key += _spatial_key(sizes, settings.sigma_spatial, lay, device, kdt)

    # unique over runs of equal consecutive keys (≈ 1/3 of the pixels): a smaller sort
    n_pix = key.numel()
    run_keys, run_len = torch.unique_consecutive(key, return_counts=True)
    keys, run_vertex = torch.unique(run_keys, sorted=True, return_inverse=True)
    del key
    n_vert = keys.numel()

    v_img = torch.div(keys, lay.stride, rounding_mode="floor").long()
    n_vertices = torch.bincount(v_img, minlength=n_img)
    v_max = int(n_vertices.max())
    total = n_img * v_max
    slot = v_img * v_max + (torch.arange(n_vert, device=device) - (torch.cumsum(n_vertices, 0) - n_vertices)[v_img])
    run_slot = slot.index_select(0, run_vertex)
    pixel_slot = torch.repeat_interleave(run_slot, run_len, output_size=n_pix)
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
    pos[1:] = torch.searchsorted(keys, want[1:].reshape(-1)).view(GRID_DIM - 1, n_vert)
    pos.clamp_(max=n_vert - 1)
    hit = keys.index_select(0, pos.view(-1)).view(pos.shape) == want
    dims = torch.arange(GRID_DIM, device=device).unsqueeze(1).expand(GRID_DIM, n_vert)
    src = slot.unsqueeze(0).expand(GRID_DIM, n_vert)[hit]
    dst = slot.index_select(0, pos.view(-1)).view(pos.shape)[hit]
    d_hit = dims[hit]
    flat = columns.view(-1)
    flat.index_put_((src * (2 * GRID_DIM + 1) + (GRID_DIM + 1) + d_hit,), dst)
    flat.index_put_((dst * (2 * GRID_DIM + 1) + (GRID_DIM - 1) - d_hit,), src)
    valid = columns >= 0
    per_row = valid.sum(1, dtype=torch.int32)
    nnz = int(per_row.sum())
    idt = torch.int32 if nnz < 2**31 - 1 else torch.int64
    crow = torch.zeros(total + 1, dtype=idt, device=device)
    crow[1:] = torch.cumsum(per_row, 0)
    col = columns[valid].to(idt)
    row = torch.zeros(nnz, dtype=torch.long, device=device)  # every row has its diagonal: crow increases
    row[crow[1:-1].long()] = 1
    row = torch.cumsum(row, 0)
    diag_pos = crow[:-1].long() + valid[:, :GRID_DIM].sum(1)
    return Grid(pixel_slot=pixel_slot, n_vertices=n_vertices, v_max=v_max, counts=counts,
                 crow=crow, col=col, row=row, diag_pos=diag_pos)
