"""Watching a run: per-iteration CSV log, loss-curve PNG, sample-prediction grids, TensorBoard.

Everything here is drawn with Pillow, so no plotting library is needed; TensorBoard is used only
when asked for and installed (``pip install found[tensorboard]``).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..extras import require
from ..io.files import atomic_path, atomic_write_text
from ..io.images import to_rgb_array

LOG_FIELDS = (
    "iter", "epoch", "batch", "lr", "loss", "loss_refined_pred", "loss_coarse", "loss_self",
    "accepted_pred", "accepted_coarse", "fg_fraction", "step_s",
)


class CsvLog:
    """``log.csv``: one row per iteration; on resume, rows at or after the resume point are dropped."""

    def __init__(self, path: Path, resume_from: int | None = None) -> None:
        self.path = path
        rows: list[dict[str, str]] = []
        if resume_from is not None and path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if r.get("iter", "").isdigit() and int(r["iter"]) < resume_from]
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            w.writeheader()
            w.writerows({k: r.get(k, "") for k in LOG_FIELDS} for r in rows)
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=LOG_FIELDS)
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows]

    def write(self, row: dict[str, Any]) -> None:
        """Append one iteration's row (known fields only, formatted) and flush it, so the log survives a crash."""
        clean = {k: _fmt(row.get(k)) for k in LOG_FIELDS}
        self._writer.writerow(clean)
        self._file.flush()
        self.rows.append(clean)

    def close(self) -> None:
        """Close the log file."""
        self._file.close()


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.8g}"
    return str(v)


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    it, val = [], []
    for r in rows:
        v = r.get(key, "")
        if v not in ("", None):
            it.append(float(r["iter"]))
            val.append(float(v))
    return np.asarray(it), np.asarray(val)


_COLORS = {"loss": (20, 20, 20), "loss_refined_pred": (31, 119, 180), "loss_coarse": (44, 160, 44), "loss_self": (214, 39, 40)}


def plot_losses(rows: Sequence[dict[str, Any]], path: Path, size: tuple[int, int] = (720, 400)) -> bool:
    """Draw the loss curves of ``rows`` (CSV log rows) into a PNG; False when there is nothing to plot."""
    series = {k: _series(rows, k) for k in _COLORS}
    series = {k: v for k, v in series.items() if len(v[0])}
    if not series:
        return False
    W, H = size
    left, right, top, bottom = 60, 170, 20, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    xs = np.concatenate([v[0] for v in series.values()])
    ys = np.concatenate([v[1] for v in series.values()])
    x0, x1 = float(xs.min()), float(max(xs.max(), xs.min() + 1))
    y0, y1 = 0.0, float(max(ys.max(), 1e-6)) * 1.05

    def px(x: float, y: float) -> tuple[float, float]:
        """Pixel position of the data point (x, y) inside the plot's margins."""
        return (left + (x - x0) / (x1 - x0) * (W - left - right), H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom))

    d.rectangle([left, top, W - right, H - bottom], outline=(0, 0, 0))
    for i in range(6):
        y = y0 + (y1 - y0) * i / 5
        _, yy = px(x0, y)
        d.line([left - 4, yy, left, yy], fill=(0, 0, 0))
        d.text((4, yy - 6), f"{y:.3g}", fill=(0, 0, 0))
        x = x0 + (x1 - x0) * i / 5
        xx, _ = px(x, y0)
        d.line([xx, H - bottom, xx, H - bottom + 4], fill=(0, 0, 0))
        d.text((xx - 10, H - bottom + 8), f"{x:.0f}", fill=(0, 0, 0))
    d.text(((W - right) // 2 - 20, H - 16), "iteration", fill=(0, 0, 0))
    for n, (key, (it, val)) in enumerate(series.items()):
        pts = [px(a, b) for a, b in zip(it, val)]
        if len(pts) > 1:
            d.line(pts, fill=_COLORS[key], width=2 if key == "loss" else 1)
        else:
            x, y = pts[0]
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=_COLORS[key])
        ly = top + 10 + 18 * n
        d.line([W - right + 10, ly + 6, W - right + 30, ly + 6], fill=_COLORS[key], width=2)
        d.text((W - right + 36, ly), key, fill=(0, 0, 0))
    _save_png(img, path)
    return True


def _save_png(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _mask_tile(mask: torch.Tensor, size: int) -> Image.Image:
    m = Image.fromarray(mask.detach().cpu().numpy().astype(np.uint8) * 255)
    return m.resize((size, size), Image.NEAREST).convert("RGB")


def save_sample_grid(images: torch.Tensor, rows: Sequence[torch.Tensor], path: Path, max_images: int = 5, tile: int = 160) -> None:
    """Columns = samples; first row the uint8 images [B,3,H,W], then one row per [B,h,w] mask."""
    n = min(max_images, images.shape[0])
    pad = 4
    grid = Image.new("RGB", (n * (tile + pad) + pad, (1 + len(rows)) * (tile + pad) + pad), (128, 128, 128))
    for i in range(n):
        x = pad + i * (tile + pad)
        im = Image.fromarray(images[i].permute(1, 2, 0).cpu().numpy()).resize((tile, tile), Image.BILINEAR)
        grid.paste(im, (x, pad))
        for r, masks in enumerate(rows):
            grid.paste(_mask_tile(masks[i], tile), (x, pad + (r + 1) * (tile + pad)))
    _save_png(grid, path)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically (non-JSON values as strings)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def append_jsonl(path: Path, obj: Any) -> None:
    """Append ``obj`` to ``path`` as one JSON line (non-JSON values as strings)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, sort_keys=True, default=str) + "\n")


class TensorBoard:
    """Thin optional wrapper; the authors' scalar names (``Loss/self_bs``, ``Loss/loss`` …)."""

    def __init__(self, log_dir: Path) -> None:
        require("tensorboard", "tensorboard", "--tensorboard")  # named in the message, not torch's wrapper
        writer_module = require("torch.utils.tensorboard", "tensorboard", "--tensorboard")
        self.writer = writer_module.SummaryWriter(os.fspath(log_dir))

    def log_step(self, n_iter: int, res) -> None:
        """Log one iteration's losses and learning rate under the authors' scalar names."""
        w = self.writer
        w.add_scalar("Loss/self_bs", res.loss_refined_pred, n_iter)
        if res.loss_coarse is not None:
            w.add_scalar("Loss/loss", res.loss_coarse, n_iter)
        if res.loss_self is not None:
            w.add_scalar("Loss/self_loss", res.loss_self, n_iter)
        w.add_scalar("Loss/total_loss", res.loss, n_iter)
        w.add_scalar("params/lr", res.lr, n_iter)

    def log_eval(self, n_iter: int, metrics: dict[str, float]) -> None:
        """Log the numeric evaluation metrics under ``eval/``."""
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.writer.add_scalar(f"eval/{k}", v, n_iter)

    def log_image(self, tag: str, path: Path, n_iter: int) -> None:
        """Log the PNG at ``path`` (e.g. a sample grid) as image ``tag``."""
        arr = to_rgb_array(path)
        self.writer.add_image(tag, arr, n_iter, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        self.writer.close()
