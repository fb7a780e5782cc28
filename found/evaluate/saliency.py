"""Unsupervised saliency detection (ECSSD, DUTS-TE, DUT-OMRON) with the paper's protocol.

Protocol (FOUND's ``evaluate_saliency`` with ``im_fullsize=True``): every image at full
resolution, batch size 1; the map that is scored is

* ``multi`` mode: the soft map ``sigmoid(bilinear×patch(logits))`` cropped to the image;
* ``single`` mode: the binary main component of ``soft > 0.5`` (:func:`found.model.masks.single_component`);
* with ``refine`` (bilateral solver): the refined binary mask.

Ground truth = grey level == 255 (authors). Each metric is computed per image and averaged over
images (:mod:`found.evaluate.metrics`). The standard SOD metrics (pysodmetrics, β² = 0.3) get the
same map as an 8-bit image and the raw grey-level mask (thresholded at 128 by pysodmetrics).
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import FoundError
from ..extras import install_hint
from ..io.files import atomic_path, atomic_write_text
from .metrics import (
    AuthorsMeter,
    StandardSaliencyMetrics,
    authors_saliency_metrics,
    authors_thresholds,
    pysodmetrics_available,
    to_uint8_map,
)


@dataclass
class SaliencyReport:
    """A saliency evaluation: the authors' and the standard metrics, per-image scores and curves."""

    dataset: str
    mode: str
    refine: bool
    authors: dict
    standard: dict | None
    per_image: list[dict]
    authors_f_curve: np.ndarray
    curves: dict | None
    notes: list[str] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        """Images evaluated."""
        return len(self.per_image)

    def to_json(self, extra: dict | None = None) -> dict:
        """The report's summary as JSON-safe data (``results.json``), with ``extra`` keys merged in."""
        d = {
            "task": "saliency",
            "dataset": self.dataset,
            "mode": self.mode,
            "refine": self.refine,
            "n_images": self.n_images,
            "authors_protocol": self.authors,
            "standard_pysodmetrics_beta2_0.3": self.standard,
            "notes": self.notes,
        }
        if extra:
            d.update(extra)
        return json_safe(d)


def json_safe(o):
    """NaN/inf → None, numpy scalars → Python (JSON has no NaN)."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, np.ndarray):
        return json_safe(o.tolist())
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def scored_map(pred, mode: str, refine: bool) -> np.ndarray:
    """The map the authors score: soft in 'multi' mode without refinement, else the binary mask."""
    if mode == "multi" and not refine:
        return np.asarray(pred.soft, dtype=np.float32)
    return np.asarray(pred.mask, dtype=np.float32)


def evaluate_saliency(
    model,
    samples: Sequence,
    dataset: str = "custom",
    mode: str = "multi",
    refine: bool = False,
    standard: bool = True,
    progress: bool = True,
) -> SaliencyReport:
    """Score ``model`` (:class:`found.Found`) on ``samples`` (``SaliencySample``), one image at a time."""
    from tqdm.auto import tqdm

    from ..options import check
    from .datasets import authors_gt, read_gray, read_rgb

    check("mode", mode)  # the run options' rule (found.options)
    notes: list[str] = []
    std = None
    if standard:
        if pysodmetrics_available():
            std = StandardSaliencyMetrics()
        else:
            notes.append(f"pysodmetrics not installed: standard metrics skipped ({install_hint('eval')})")
    meter = AuthorsMeter()
    rows: list[dict] = []
    bar = tqdm(samples, desc=f"{dataset} {mode}{' +BS' if refine else ''}", disable=not progress, unit="img")
    for s in bar:
        image = read_rgb(s.image)
        gray = read_gray(s.mask)
        if gray.shape != image.shape[:2]:
            raise FoundError(f"{s.name}: mask {s.mask.name} is {gray.shape[1]}x{gray.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}")
        pred = model.predict([image], mode=mode, refine=refine, batch_size=1)[0]
        m = scored_map(pred, mode, refine)
        sc = authors_saliency_metrics(m, authors_gt(gray))
        meter.update(sc)
        row = {
            "name": s.name,
            "acc": sc.pixel_acc,
            "iou": sc.iou,
            "maxF_beta2_0.09_authors": sc.f_max,
            "F_at_0.5_beta2_0.09_authors": sc.f_measure,
            "meanF_adaptive_beta2_0.09_authors": sc.f_mean,
            "mae_binary_authors": sc.mae,
            "s_measure_authors": sc.s_measure,
        }
        if refine:
            row["refined"] = bool(getattr(pred, "refined", False))
        if std is not None:
            row.update(std.step(to_uint8_map(m), gray))
        rows.append(row)
        bar.set_postfix_str(f"IoU {meter.summary()['iou']:.3f}")
    bar.close()
    if not rows:
        raise FoundError("no image to evaluate")
    authors = meter.summary()
    if refine:
        authors["refined_images"] = int(sum(r["refined"] for r in rows))
    standard_res, curves = None, None
    if std is not None:
        r = std.results()
        standard_res, curves = r["metrics"], r["curves"]
    if authors["s_measure_nan_images"]:
        notes.append(f"S-measure (authors' code) is NaN on {authors['s_measure_nan_images']} image(s); averaged over the others")
    return SaliencyReport(dataset, mode, refine, authors, standard_res, rows, meter.mean_f_curve(), curves, notes)


# ---------------------------------------------------------------------------- outputs
def format_table(title: str, metrics: dict, digits: int = 4) -> str:
    """Two aligned columns (metric, value) under a title."""
    items = [(k, v) for k, v in metrics.items()]
    width = max([len(k) for k, _ in items] + [6])
    lines = [title, "-" * len(title.splitlines()[-1])]
    for k, v in items:
        if isinstance(v, (float, np.floating)):
            s = "nan" if math.isnan(v) else f"{v:.{digits}f}"
        else:
            s = str(v)
        lines.append(f"{k:<{width}}  {s}")
    return "\n".join(lines)


def report_text(rep: SaliencyReport) -> str:
    """The report as printed: the authors' table, the standard one when computed, and the notes."""
    head = f"{rep.dataset} — {rep.mode} mode{' + bilateral solver' if rep.refine else ''} — {rep.n_images} images"
    parts = [format_table(f"{head}\nauthors' protocol (paper: Acc, IoU, maxFβ)", rep.authors)]
    if rep.standard is not None:
        parts.append(format_table("standard SOD metrics (pysodmetrics, β² = 0.3)", rep.standard))
    parts += [f"note: {n}" for n in rep.notes]
    return "\n\n".join(parts)


def write_csv(path: Path, rows: list[dict]) -> None:
    """Per-image rows as CSV (atomic); the header is the union of keys in first-seen order."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def plot_curves(path: Path, rep: SaliencyReport) -> str | None:
    """Precision–recall and F-vs-threshold PNG; returns a note instead when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return f"matplotlib not installed: curves plot skipped ({install_hint('eval')})"
    fig = Figure(figsize=(10, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax_pr, ax_f = fig.subplots(1, 2)
    title = f"{rep.dataset} ({rep.mode}{', BS' if rep.refine else ''}, {rep.n_images} images)"
    if rep.curves is not None:
        ax_pr.plot(rep.curves["recall"], rep.curves["precision"], color="C0")
        ax_pr.set_xlabel("recall")
        ax_pr.set_ylabel("precision")
        ax_pr.set_xlim(0, 1.01)
        ax_pr.set_ylim(0, 1.01)
        ax_pr.set_title("precision–recall (pysodmetrics)")
        thr = np.arange(len(rep.curves["f"]))[::-1] / 255.0  # pysodmetrics curves run from threshold 255 down to 0
        ax_f.plot(thr, rep.curves["f"], color="C0", label="F, β²=0.3 (pysodmetrics; min–max normalised map)")
    else:
        ax_pr.text(0.5, 0.5, "pysodmetrics not installed", ha="center", va="center")
        ax_pr.set_axis_off()
    ax_f.plot(authors_thresholds(), rep.authors_f_curve, color="C1", label="F, β²=0.09 (authors' code)")
    ax_f.set_xlabel("threshold")
    ax_f.set_ylabel("mean F over images")
    ax_f.set_xlim(0, 1)
    ax_f.set_ylim(0, 1.01)
    ax_f.legend(loc="lower center", fontsize=8)
    ax_f.set_title("F-measure vs threshold")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png")
    return None


def write_saliency_outputs(rep: SaliencyReport, out_dir: Path, extra: dict | None = None, plot: bool = True) -> dict[str, Path]:
    """``results.json``, ``per_image.csv``, ``curves.png`` (and the curves as JSON) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "csv": out_dir / "per_image.csv"}
    if plot:
        note = plot_curves(out_dir / "curves.png", rep)
        if note:
            rep.notes.append(note)
        else:
            paths["plot"] = out_dir / "curves.png"
    curves = {"authors_thresholds": authors_thresholds(), "authors_mean_f_beta2_0.09": rep.authors_f_curve}
    if rep.curves is not None:
        curves.update({f"pysodmetrics_{k}": v for k, v in rep.curves.items()})
    paths["curves"] = out_dir / "curves.json"
    atomic_write_text(paths["curves"], json.dumps(json_safe(curves)))
    write_csv(paths["csv"], rep.per_image)
    atomic_write_text(paths["json"], json.dumps(rep.to_json(extra), indent=2) + "\n")
    return paths

