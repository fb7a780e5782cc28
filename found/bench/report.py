"""Reporting: the printed rows, the project's performance targets, the environment and the JSON file."""
from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path
from typing import Callable

import torch

CPU_TARGETS = {"fp32_224": 1.5, "fp32_320x480": 2.0, "reduced_224": 2.5, "reduced_iou": 0.99, "matmul_share": 0.70}
CUDA_TARGETS = {"batched_224_img_s": 5000.0, "single_320x480_fps": 250.0, "folder_img_s": 1000.0}


def format_row(r: dict) -> str:
    """One printed line of a model or folder row: timings, ratio, memory and agreement."""
    ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else "  -  "
    best = f"(medians {r['ratio_median']:.2f}x, best {r['ratio_best']:.2f}x)" if r.get("ratio_best") else ""
    mem = f"peak {r['peak_mib']:.0f} MiB (+{r['extra_mib']:.0f})" if r.get("peak_mib") is not None else ""
    extra = []
    if "max_abs_attention" in r:
        extra.append(f"|Δatt| {r['max_abs_attention']:.1e} |Δk| {r['max_abs_keys']:.1e}")
    if "mask_iou" in r:
        extra.append(f"mask IoU {r['mask_iou']:.4f} ({r['mask_pixels_differing']} px differ)")
    if "masks_identical" in r:
        extra.append(f"identical masks {100 * r['masks_identical']:.0f}%")
    n = f" n={r['images']}" if "images" in r else ""
    return (f"{r['bench']:6s} {r['size']:>9s} b={r['batch']:<3d}{n} {r['path']:11s} {r['ms_per_img']:9.2f} ms/img "
            f"{r['img_per_s']:9.1f} img/s  {ratio:>6s} {best:32s} {mem}  {'; '.join(extra)}").rstrip()


def check_targets(rows: list[dict], device: torch.device) -> list[tuple[str, float | None, float, bool]]:
    """(what, measured, target, met) for the project's performance targets that these rows cover."""
    out: list[tuple[str, float | None, float, bool]] = []

    def pick(bench: str, size: str, path_prefix: str, key: str,
             batch_pred: Callable[[int], bool] = lambda b: True) -> list[dict]:
        """The rows of one bench, size and path prefix (with a batch ``batch_pred`` accepts) that measured ``key``."""
        return [r for r in rows if r["bench"] == bench and r["size"] == size and r["path"].startswith(path_prefix)
                and batch_pred(r["batch"]) and r.get(key) is not None]

    if device.type == "cpu":
        for size, key in (("224x224", "fp32_224"), ("320x480", "fp32_320x480")):
            for r in pick("model", size, "fast-fp32", "ratio"):
                ok = r["ratio"] >= CPU_TARGETS[key] and r.get("mask_pixels_differing", 0) == 0
                out.append((f"CPU fp32 {size} b={r['batch']}: ratio (identical masks)", r["ratio"], CPU_TARGETS[key], ok))
        for r in rows:  # the backbone at the working scale against this CPU's matmul rate (profile)
            if r["bench"] == "backbone" and r.get("matmul_share") is not None:
                out.append((f"CPU backbone {r['path']} {r['size']}: share of the {r['path']} matmul rate", r["matmul_share"],
                            CPU_TARGETS["matmul_share"], r["matmul_share"] >= CPU_TARGETS["matmul_share"]))
        for p in ("int8", "bf16", "fp16"):
            for r in pick("model", "224x224", f"fast-{p}", "ratio"):
                out.append((f"CPU {p} 224x224 b={r['batch']}: ratio", r["ratio"], CPU_TARGETS["reduced_224"], r["ratio"] >= CPU_TARGETS["reduced_224"]))
    elif device.type == "cuda":
        checks = (
            ("CUDA batched 224x224 img/s", pick("model", "224x224", "fast-", "img_per_s", lambda b: b > 1), "batched_224_img_s"),
            ("CUDA single 320x480 FPS", pick("model", "320x480", "fast-", "img_per_s", lambda b: b == 1), "single_320x480_fps"),
            ("CUDA folder img/s", [r for r in rows if r["bench"] == "folder" and r["path"].startswith("fast-")], "folder_img_s"),
        )
        for what, found_rows, key in checks:
            if found_rows:  # only the measurements this run made
                best = max(r["img_per_s"] for r in found_rows)
                out.append((what, best, CUDA_TARGETS[key], best >= CUDA_TARGETS[key]))
    for r in rows:  # mask agreement on real images (--images), any device
        if r["bench"] == "agreement" and r["path"] != "fast-fp32":
            out.append((f"{r['path'][5:]} mask IoU vs fp32 on {r['images']} images (minimum)", r["mask_iou_min"],
                        CPU_TARGETS["reduced_iou"], r["mask_iou_min"] >= CPU_TARGETS["reduced_iou"]))
    return out


def report_targets(rows: list[dict], device: torch.device, log: Callable[[str], None] = print) -> int:
    """Log each target these rows cover as MET or MISS; 1 if one is missed, else 0."""
    status = 0
    log("targets:")
    for what, value, target, ok in check_targets(rows, device):
        v = "n/a" if value is None else f"{value:.2f}"
        log(f"  {'MET ' if ok else 'MISS'} {what}: {v} (target ≥ {target:g})")
        status |= 0 if ok else 1
    return status


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor()


def environment() -> dict:
    """Python, torch, threads, CPU (and GPU) and load average of this run."""
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "machine": platform.machine(), "processor": cpu_name()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(OSError):
        env["loadavg"] = os.getloadavg()
    return env


def write_bench_json(path: str | Path, note: str, rows: list[dict]) -> None:
    """All results with the environment and the weights note, as ``found bench --json`` writes them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": environment(), "note": note, "results": rows}, indent=1))
