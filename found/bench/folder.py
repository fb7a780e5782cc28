"""The folder section: JPEG files in → PNG masks out through the engine and writers of ``found segment``."""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..predictor import Found
from .models import Nets, baseline_fits, baseline_and_fast
from .report import format_row
from .synthetic import jpeg_folder
from .timing import peak_memory_mib, ratios, time_interleaved


def segment_folder(model: Found, files: list[Path], outdir: Path, batch_size: int, workers: int | None) -> int:
    """``found segment FILES -o OUTDIR --mask --max-side 0``: the engine and the mask writer that
    ``found segment`` runs, without its option handling; returns the number of masks written."""
    from ..engine import Engine
    from ..io.sinks import ImageOutputs, write_results

    engine = Engine(model, batch_size=batch_size, workers=workers, max_side=None)
    images = ImageOutputs(outdir, ["mask"])
    outdir.mkdir(parents=True, exist_ok=True)
    writes = write_results(engine.run(files), [f.stem for f in files], images.write,
                           threaded=engine.workers > 0, max_pending=2 * batch_size)
    return sum(o.ok for o in writes)


def _same_pngs(a: Path, b: Path, files: list[Path]) -> float:
    """Share of files whose two PNG masks are pixel-identical."""
    from PIL import Image

    same = 0
    for f in files:
        name = f.stem + "_mask.png"
        with Image.open(a / name) as x, Image.open(b / name) as y:
            same += bool(np.array_equal(np.asarray(x), np.asarray(y)))
    return same / max(1, len(files))


def folder_plan(device: torch.device, sizes: list[tuple[int, int]], batches: list[int], n_images: int | None,
                quick: bool) -> dict:
    """``found bench``'s sizes, batches, images per size and rounds of the folder section (keywords of :func:`bench_folder`)."""
    cuda = device.type == "cuda"
    n = n_images or (1000 if cuda else 4 if quick else 16)
    fb = [b for b in batches if b <= n]
    if quick and not cuda:
        fb = [min(batches), max(batches)] if len(batches) > 1 else batches
    n_per = {hw: (n if hw[0] * hw[1] <= 224 * 224 or cuda else max(1, n // 2)) for hw in sizes}
    fsizes = sizes[:1] if quick and not cuda else sizes
    return {"sizes": fsizes, "batches": sorted(set(fb)), "n_images": n_per, "reps": 1 if quick or cuda else 2}


def bench_folder(
    device: torch.device,
    precisions: list[str],
    sizes: list[tuple[int, int]],
    batches: list[int],
    n_images: int | dict,
    reps: int = 1,
    workers: int | None = None,
    compile_mode: bool | str = False,
    log: Callable[[str], None] = print,
    nets: Nets = None,
) -> list[dict]:
    """JPEG files in → PNG masks out through the engine of ``found segment`` (:func:`segment_folder`):
    the fast model with decoding/writing threads vs the eager model with everything in turn."""
    base, fast = baseline_and_fast(device, precisions, compile_mode, nets)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="found-bench-") as tmp:
        tmp_path = Path(tmp)
        for hw in sizes:
            n = n_images.get(hw, 16) if isinstance(n_images, dict) else n_images
            files = jpeg_folder(tmp_path / f"jpeg-{hw[0]}x{hw[1]}", n, hw)
            for b in batches:
                models = {"eager-fp32": (base, 0)} if baseline_fits(device, b, hw) else {}
                models.update({f"fast-{p}": (m, workers) for p, m in fast.items()})
                outs = {name: tmp_path / f"out-{name}-{b}" for name in models}
                fns = {name: (lambda m=m, w=w, o=outs[name]: segment_folder(m, files, o, b, w)) for name, (m, w) in models.items()}
                for m, _ in models.values():  # warm up on a few files (compilation, caches)
                    segment_folder(m, files[: min(n, b)], tmp_path / "warm", b, 0)
                times = time_interleaved(fns, device, reps, warmup=0)
                mem = {k: peak_memory_mib(fn, device) if device.type == "cpu" else (None, None) for k, fn in fns.items()}
                for name, ts in times.items():
                    med = statistics.median(ts)
                    row = {
                        "bench": "folder", "device": device.type, "size": f"{hw[0]}x{hw[1]}", "batch": b, "path": name,
                        "images": n, "ms_per_img": 1e3 * med / n, "img_per_s": n / med, **ratios(times.get("eager-fp32"), ts),
                        "peak_mib": mem[name][0], "extra_mib": mem[name][1], "reps": len(ts),
                        "workers": models[name][1] if models[name][1] is not None else "default",
                    }
                    if "eager-fp32" in outs and name != "eager-fp32":
                        row["masks_identical"] = _same_pngs(outs["eager-fp32"], outs[name], files)
                    rows.append(row)
                    log(format_row(row))
    return rows
