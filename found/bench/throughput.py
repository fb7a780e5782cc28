"""The model section: a normalised tensor in → binary mask out, the fast path against the eager baseline."""
from __future__ import annotations

import statistics
from typing import Callable

import torch

from .agreement import feature_agreement, predicted_mask
from .models import Nets, baseline_fits, baseline_and_fast
from .report import format_row
from .synthetic import synthetic_images
from .timing import peak_memory_mib, ratios, time_interleaved

DEFAULT_SIZES = ((224, 224), (320, 480))


def default_batches(device: torch.device, quick: bool) -> list[int]:
    """The batch sizes ``found bench`` measures on ``device`` by default."""
    return [1, 64, 256] if device.type == "cuda" else [1, 4] if quick else [1, 8]


def quick_skip(device: torch.device, sizes: list[tuple[int, int]], batches: list[int], quick: bool) -> set[tuple[tuple[int, int], int]]:
    """(size, batch) left out of a quick CPU run: batches above 224², where the eager baseline costs seconds per image."""
    if not quick or device.type == "cuda":
        return set()
    return {(hw, b) for hw in sizes for b in batches if b > 1 and hw[0] * hw[1] > 224 * 224}


def bench_model(
    device: torch.device,
    precisions: list[str],
    sizes: list[tuple[int, int]],
    batches: list[int],
    reps: int,
    warmup: int = 1,
    compile_mode: bool | str = False,
    memory: bool = True,
    skip: set[tuple[tuple[int, int], int]] | None = None,
    log: Callable[[str], None] = print,
    nets: Nets = None,
) -> list[dict]:
    """Tensor in → mask out, eager fp32 baseline vs the fast path in each of ``precisions``."""
    base, fast = baseline_and_fast(device, precisions, compile_mode, nets)
    rows: list[dict] = []
    min_rep_s = 0.3 if device.type == "cuda" else 0.0
    for hw in sizes:
        for b in batches:
            if skip and (hw, b) in skip:
                continue
            x = base.input_batch(synthetic_images(b, hw, seed=b))
            fns: dict[str, Callable[[], object]] = {f"fast-{p}": (lambda m=m: m.masks(x)) for p, m in fast.items()}
            with_base = baseline_fits(device, b, hw)
            if with_base:
                fns = {"eager-fp32": lambda: base.masks(x), **fns}
            # agreement, once (not timed)
            ref_f = base.features(x) if with_base else fast["fp32"].features(x) if "fp32" in fast else None
            ref_mask = predicted_mask(base, ref_f) if with_base else None
            agree = {f"fast-{p}": feature_agreement(m, m.features(x), ref_f, ref_mask) for p, m in fast.items()}
            times = time_interleaved(fns, device, reps, warmup, min_rep_s)
            mem = {k: peak_memory_mib(fn, device) if memory else (None, None) for k, fn in fns.items()}
            for name, ts in times.items():
                med = statistics.median(ts)
                row = {
                    "bench": "model", "device": device.type, "size": f"{hw[0]}x{hw[1]}", "batch": b, "path": name,
                    "ms_per_img": 1e3 * med / b, "img_per_s": b / med, "ms_per_img_best": 1e3 * min(ts) / b,
                    **ratios(times.get("eager-fp32"), ts),
                    "peak_mib": mem[name][0], "extra_mib": mem[name][1], "reps": len(ts), **agree.get(name, {}),
                }
                rows.append(row)
                log(format_row(row))
            if not with_base:
                log(f"  (eager baseline skipped at {hw[0]}x{hw[1]} batch {b}: its N×N attention would not fit in GPU memory)")
    return rows
