"""Measuring: interleaved timing rounds, peak memory, and speed-ups over the baseline."""
from __future__ import annotations

import contextlib
import ctypes
import math
import statistics
import sys
import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, reps: int, warmup: int = 1, min_rep_s: float = 0.0
) -> dict[str, list[float]]:
    """Seconds per call of each function: ``reps`` rounds, each round calls every function once
    (or ``n`` times in a row when one call is shorter than ``min_rep_s``), in turn."""
    calls: dict[str, int] = {k: 1 for k in fns}
    for name, fn in fns.items():
        if warmup < 1:
            continue
        for _ in range(warmup):
            fn()  # first calls: compilation, caches, allocator
        sync(device)
        if min_rep_s <= 0:
            continue
        t0 = time.perf_counter()
        fn()
        sync(device)
        one = time.perf_counter() - t0
        calls[name] = max(1, math.ceil(min_rep_s / one)) if one > 0 else 1
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            sync(device)
            out[name].append((time.perf_counter() - t0) / calls[name])
    return out


def _rss_kib(field: str) -> int | None:
    """A memory field of /proc/self/status in KiB (VmRSS, VmHWM), None where unreadable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> tuple[float | None, float | None]:
    """(peak, peak − before) in MiB while ``fn`` runs once: CUDA ``max_memory_allocated``; on CPU
    the process's peak RSS (VmHWM, reset through /proc/self/clear_refs after returning freed heap
    memory to the system, so that the working memory of ``fn`` shows). None where unavailable."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return peak / 2**20, (peak - before) / 2**20
    if device.type != "cpu" or not sys.platform.startswith("linux"):
        fn()
        return None, None
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        fn()
        return None, None
    before = _rss_kib("VmRSS")
    fn()
    peak = _rss_kib("VmHWM")
    if before is None or peak is None:
        return None, None
    return peak / 1024, (peak - before) / 1024


def ratios(base: list[float] | None, ts: list[float]) -> dict:
    """Speed-up over the baseline: ``ratio`` = median of the per-round ratios (each round times the
    baseline and the candidate back to back, so a burst of load from other jobs mostly hits both),
    ``ratio_median`` = ratio of the medians, ``ratio_best`` = ratio of the fastest runs."""
    if not base:
        return {"ratio": None, "ratio_median": None, "ratio_best": None}
    return {
        "ratio": statistics.median(b / t for b, t in zip(base, ts)),
        "ratio_median": statistics.median(base) / statistics.median(ts),
        "ratio_best": min(base) / min(ts),
    }
