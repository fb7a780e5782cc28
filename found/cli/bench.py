"""``found bench``: throughput of FOUND's fast path against the eager float32 baseline.

Two measurements, each with the baseline run in the same process and interleaved with the
candidates (medians over repetitions, so that load from other jobs hits both alike):

* model: a normalised tensor in → binary mask out (backbone, head, upsampling), per image size and
  batch size; also the agreement of the outputs (max |Δ| of CLS attention and keys, mask IoU);
* folder: JPEG files in → PNG masks out through the engine and writers that ``found segment`` runs
  (:func:`segment_folder`), decoding and writing in worker threads, against the same engine with
  the eager model and everything in turn.

The backbone is a ViT-S/8 with random weights (same architecture, hence the same compute, as DINO
ViT-S/8; no download needed) and a random 1×1 head: the masks mean nothing, the timings do.
The baseline is DINO's code path as FOUND uses it: eager attention materialising the N×N map in
every block (``softmax(q kᵀ · scale) @ v``), the last block's full attention, keys from ``qkv``.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..model.backbone import FoundFeatures, VisionTransformer
from ..runtime.eager import eager_found_features
from ..errors import FoundError
from ..model.head import FoundHead
from ..predictor import PRECISIONS, Found, default_device
from ..hub.registry import DEFAULT_MODEL

WEIGHTS_NOTE = (
    "weights: random ViT-S/8 (patch 8, 384-d, 12 blocks, 6 heads) + random head: same compute as "
    "DINO ViT-S/8, masks not meaningful"
)
DEFAULT_SIZES = ((224, 224), (320, 480))
CPU_TARGETS = {"fp32_224": 1.5, "fp32_320x480": 2.0, "reduced_224": 2.5, "reduced_iou": 0.99, "matmul_share": 0.70}
CUDA_TARGETS = {"batched_224_img_s": 5000.0, "single_320x480_fps": 250.0, "folder_img_s": 1000.0}


# ---------------------------------------------------------------------------- models
def vit_s8(seed: int = 0) -> VisionTransformer:
    """DINO ViT-S/8's architecture with seeded random weights."""
    torch.manual_seed(seed)
    return VisionTransformer(patch_size=8, embed_dim=384, depth=12, num_heads=6).eval()


def registry_backbone(name: str, seed: int = 0) -> VisionTransformer:
    """A registered model's architecture (DINO or DINOv2) with seeded random weights: the same compute."""
    from ..hub.build import build_vit
    from ..hub.registry import get_model_spec

    try:
        arch = get_model_spec(name).arch
    except KeyError as e:
        raise FoundError(f"--backbones: {e.args[0]}") from None
    torch.manual_seed(seed)
    return build_vit(arch).eval().requires_grad_(False)


def bench_backbones(names: list[str], max_side: int | None, quick: bool = False, log: Callable[[str], None] = print) -> list[dict]:
    """One row per registered backbone at the working scale of a 1024×768 photo: tokens, backbone ms
    and GFLOP/s (found segment's default precision) and the whole mask of the photo (decode → PNG)."""
    from ..engine import DEFAULT_MAX_SIDE
    from ..bench.profiling import backbone_rate, photo_split, working_scale

    side = DEFAULT_MAX_SIDE if max_side is None else max_side
    reps = 2 if quick else 5
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photo = _synthetic_photo(Path(tmp), (1024, 768))
        for name in names:
            vit = registry_backbone(name)
            ph, pw, tokens = working_scale(vit, (1024, 768), side or None)
            model = Found(vit, random_head(vit.embed_dim), device="cpu")
            r = backbone_rate(model, ph, pw, reps=reps)
            split = photo_split(model, photo, side or None, reps=2 if quick else 3)
            log(f"  {name:20s} {pw}×{ph} ({tokens} tokens, {model.precision}): backbone {1000 * r['seconds']:7.1f} ms "
                f"({r['gflop']:.1f} GFLOP, {r['gflops']:.0f} GFLOP/s); 1024×768 JPEG → mask {1000 * split['total']:.0f} ms")
            rows.append({"bench": "backbones", "model": name, "size": f"{ph}x{pw}", "tokens": tokens, "path": model.precision,
                         **r, "photo_seconds": split["total"]})
    return rows


def random_head(dim: int = 384, seed: int = 1) -> FoundHead:
    torch.manual_seed(seed)
    return FoundHead(dim).eval()


class EagerFound(Found):
    """The baseline: the same predictor, but the backbone runs DINO's eager float32 path
    (:func:`found.runtime.eager.eager_found_features`)."""

    def _backbone_features(self, x: torch.Tensor) -> FoundFeatures:
        return eager_found_features(self.backbone, x)

    def _cpu_chunk(self, x: torch.Tensor) -> int:
        return x.shape[0]  # the whole batch in one call, as plain eager code does


# ---------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
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
        _sync(device)
        if min_rep_s <= 0:
            continue
        t0 = time.perf_counter()
        fn()
        _sync(device)
        one = time.perf_counter() - t0
        calls[name] = max(1, math.ceil(min_rep_s / one)) if one > 0 else 1
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            _sync(device)
            out[name].append((time.perf_counter() - t0) / calls[name])
    return out


def _rss_kib(field: str) -> int | None:
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


def _mask(model: Found, f: FoundFeatures) -> torch.Tensor:
    """The binary mask ``model.masks`` gives for these features (padded size)."""
    with torch.inference_mode():
        return model.soft_from_logits(model.logits_from_features(f)) > 0.5


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def mask_agreement(device: torch.device, precisions: list[str], paths: list[Path], nets: Nets = None,
                   max_side: int | None = None, log: Callable[[str], None] = print, onnx_files: list[str] = ()) -> list[dict]:
    """Mask agreement of each fast-path precision (and each ONNX file, ``onnx-<name>``, exported
    from the same weights) with the eager fp32 baseline on real images (each at its own size, longer
    side capped at ``max_side``, default the working scale): mean / minimum IoU and differing pixels.
    Meaningful with real weights (``--weights``); a random network's masks disagree for any change."""
    from ..engine import DEFAULT_MAX_SIDE
    from ..io.images import read_image

    max_side = DEFAULT_MAX_SIDE if max_side is None else max_side or None

    base, models = _baseline_and_fast(device, precisions, False, nets)
    fast: dict[str, Found] = {f"fast-{p}": m for p, m in models.items()}
    if onnx_files:
        from ..export.runtime import OnnxFound

        fast.update({f"onnx-{Path(f).stem}": OnnxFound(f, "cpu", coarse=base.coarse) for f in onnx_files})
    ious: dict[str, list[float]] = {p: [] for p in fast}
    differ: dict[str, int] = {p: 0 for p in fast}
    failed: list[tuple[str, str]] = []
    n_ok = 0
    for path in paths:
        try:
            rgb = read_image(path, max_side=max_side, min_side=base.patch_size).rgb()
        except Exception as e:  # a bad file is reported and skipped
            failed.append((str(path), " ".join(str(e).split())[:120]))
            continue
        x = base.input_batch([rgb])
        ref = base.masks(x)[1]
        for p, m in fast.items():
            mk = m.masks(x.to(m.device))[1].to(ref.device)
            ious[p].append(_iou(mk, ref))
            differ[p] += int((mk != ref).sum().item())
        n_ok += 1
    rows = []
    for p in fast:
        if not ious[p]:
            continue
        row = {"bench": "agreement", "device": device.type, "path": p, "images": n_ok,
               "mask_iou_mean": float(np.mean(ious[p])), "mask_iou_min": float(min(ious[p])),
               "mask_pixels_differing": differ[p]}
        rows.append(row)
        log(f"agree  {n_ok} images   {row['path']:11s} mask IoU vs eager fp32: mean {row['mask_iou_mean']:.4f}, "
            f"min {row['mask_iou_min']:.4f} ({row['mask_pixels_differing']} px differ)")
    for f, why in failed:
        log(f"agree  skipped {f}: {why}")
    return rows


def _synthetic_images(n: int, hw: tuple[int, int], seed: int) -> list[np.ndarray]:
    """Smooth backgrounds with one bright ellipse each, plus noise (decodes/encodes like photos)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        base = rng.uniform(40, 120, 3)[None, None] + (yy[..., None] / h) * rng.uniform(-40, 40, 3)
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        img = base + inside[..., None] * rng.uniform(80, 130, 3)[None, None] + rng.normal(0, 6, (h, w, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def baseline_fits(device: torch.device, batch: int, hw: tuple[int, int], patch: int = 8, heads: int = 6) -> bool:
    """Whether the eager baseline's N×N attention maps (≈3 live copies) fit in half the free GPU memory."""
    if device.type != "cuda":
        return True
    n = (hw[0] // patch) * (hw[1] // patch) + 1
    need = 3 * batch * heads * n * n * 4
    free, _ = torch.cuda.mem_get_info(device)
    return need < free / 2


#: (backbone, head) every benchmark uses; None = a random ViT-S/8 and head (see ``--weights``).
Nets = "tuple[VisionTransformer, FoundHead] | None"


def _baseline_and_fast(device: torch.device, precisions: list[str], compile_mode: bool | str,
                       nets: Nets = None) -> tuple[EagerFound, dict[str, Found]]:
    """The eager fp32 baseline and one fast model per precision, sharing one backbone and head
    (``nets``, default a random ViT-S/8 and head)."""
    vit, head = nets if nets is not None else (vit_s8(), random_head())
    compile_arg = compile_mode if device.type == "cuda" else False
    return EagerFound(vit, head, device=device, precision="fp32"), {p: Found(vit, head, device=device, precision=p, compile=compile_arg) for p in precisions}


# ---------------------------------------------------------------------------- benchmarks
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
    base, fast = _baseline_and_fast(device, precisions, compile_mode, nets)
    rows: list[dict] = []
    min_rep_s = 0.3 if device.type == "cuda" else 0.0
    for hw in sizes:
        for b in batches:
            if skip and (hw, b) in skip:
                continue
            x = base.input_batch(_synthetic_images(b, hw, seed=b))
            fns: dict[str, Callable[[], object]] = {f"fast-{p}": (lambda m=m: m.masks(x)) for p, m in fast.items()}
            with_base = baseline_fits(device, b, hw)
            if with_base:
                fns = {"eager-fp32": lambda: base.masks(x), **fns}
            # agreement, once (not timed)
            ref_f = base.features(x) if with_base else fast["fp32"].features(x) if "fp32" in fast else None
            ref_mask = _mask(base, ref_f) if with_base else None
            agree: dict[str, dict] = {}
            for p, m in fast.items():
                f = m.features(x)
                a: dict = {}
                if ref_f is not None:
                    a["max_abs_attention"] = (f.cls_attention - ref_f.cls_attention).abs().max().item()
                    a["max_abs_keys"] = (f.keys - ref_f.keys).abs().max().item()
                if ref_mask is not None:
                    mk = _mask(m, f)
                    a["mask_iou"] = _iou(mk, ref_mask)
                    a["mask_pixels_differing"] = int((mk != ref_mask).sum().item())
                agree[f"fast-{p}"] = a
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


def segment_folder(model: Found, files: list[Path], outdir: Path, batch_size: int, workers: int | None) -> int:
    """``found segment FILES -o OUTDIR --mask --max-side 0``: the engine and the mask writer that
    ``found segment`` runs, without its option handling; returns the number of masks written."""
    from ..engine import Engine
    from ..io.sinks import ImageOutputs, write_results

    engine = Engine(model, batch_size=batch_size, workers=workers, max_side=None)
    images = ImageOutputs(outdir, ["mask"])
    outdir.mkdir(parents=True, exist_ok=True)
    done: list[bool] = []
    write_results(engine.run(files), [f.stem for f in files], images.write, lambda o: done.append(o.ok),
                  threaded=engine.workers > 0, max_pending=2 * batch_size)
    return sum(done)


def _synthetic_photo(folder: Path, size: tuple[int, int]) -> Path:
    """One photo-like JPEG of ``size`` = (W, H) in ``folder`` (quality 90), for the profile's split."""
    from PIL import Image

    photo = folder / f"photo_{size[0]}x{size[1]}.jpg"
    Image.fromarray(_synthetic_images(1, (size[1], size[0]), seed=11)[0]).save(photo, quality=90)
    return photo


def _jpeg_folder(folder: Path, n: int, hw: tuple[int, int]) -> list[Path]:
    """``n`` JPEG files of size ``hw`` (at most 64 distinct pictures; the others are copies)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, a in enumerate(_synthetic_images(min(n, 64), hw, seed=7)):
        Image.fromarray(a).save(folder / f"img{i:04d}.jpg", quality=90)
    for i in range(n):  # more files than distinct pictures: copies (decoding cost is the same)
        f = folder / f"img{i:04d}.jpg"
        if not f.exists():
            f.write_bytes((folder / f"img{i % 64:04d}.jpg").read_bytes())
        files.append(f)
    return files


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
    base, fast = _baseline_and_fast(device, precisions, compile_mode, nets)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="found-bench-") as tmp:
        tmp_path = Path(tmp)
        for hw in sizes:
            n = n_images.get(hw, 16) if isinstance(n_images, dict) else n_images
            files = _jpeg_folder(tmp_path / f"jpeg-{hw[0]}x{hw[1]}", n, hw)
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


def _same_pngs(a: Path, b: Path, files: list[Path]) -> float:
    """Share of files whose two PNG masks are pixel-identical."""
    from PIL import Image

    same = 0
    for f in files:
        name = f.stem + "_mask.png"
        with Image.open(a / name) as x, Image.open(b / name) as y:
            same += bool(np.array_equal(np.asarray(x), np.asarray(y)))
    return same / max(1, len(files))


def default_cpu_precisions() -> list[str]:
    """fp32, bf16 where the CPU has bfloat16 units (``--precision auto`` picks it there), int8."""
    from ..model.backbone import cpu

    return ["fp32", "bf16", "int8"] if cpu.available() and cpu.native_bf16() else ["fp32", "int8"]


def bench_profile(precisions: list[str], nets: Nets, max_side: int | None, quick: bool = False,
                  log: Callable[[str], None] = print) -> list[dict]:
    """Where the time goes at the working scale: matmul GFLOP/s of this CPU, the backbone's achieved
    GFLOP/s in each float precision, and the split of one 1024×768 and one 4000×3000 JPEG."""
    from ..engine import DEFAULT_MAX_SIDE
    from ..bench.profiling import MASK_STAGES, backbone_rate, block_ops, matmul_rates, photo_split, working_scale

    side = DEFAULT_MAX_SIDE if max_side is None else max_side
    vit, head = nets if nets is not None else (vit_s8(), random_head())
    ph, pw, tokens = working_scale(vit, (1024, 768), side or None)
    reps = 2 if quick else 5
    rates = matmul_rates(tokens, vit.embed_dim, 4 * vit.embed_dim, reps=3 * reps)
    log(f"profile: working scale {pw}×{ph} ({tokens} tokens; --max-side {side}); matmul [{tokens}×{vit.embed_dim}]·"
        f"[{vit.embed_dim}×{4 * vit.embed_dim}]: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()))
    rows: list[dict] = [{"bench": "matmul", "size": f"{tokens}x{vit.embed_dim}x{4 * vit.embed_dim}", "gflops": rates}]
    for prec in [p for p in precisions if p in ("fp32", "bf16", "int8")]:
        model = Found(vit, head, device="cpu", precision=prec)
        r = backbone_rate(model, ph, pw, reps=reps)
        peak = rates.get("onednn-bf16" if prec == "bf16" else "onednn-fp32", rates["torch-fp32"])
        share = r["gflops"] / peak if prec != "int8" else None
        log(f"  backbone {prec:5s} {pw}×{ph}: {1000 * r['seconds']:7.1f} ms, {r['gflop']:.1f} GFLOP → {r['gflops']:6.0f} GFLOP/s"
            + (f" = {100 * share:.0f} % of the {prec} matmul rate" if share else ""))
        rows.append({"bench": "backbone", "size": f"{ph}x{pw}", "path": prec, **r, "matmul_share": share})
        ops = block_ops(vit, prec, tokens, reps=reps)
        log("    one block, op by op: " + ", ".join(
            f"{k} {v['ms']:.1f} ms" + (f" ({v['gflops']:.0f} GFLOP/s)" if v["gflops"] else "") for k, v in ops.items()))
        rows.append({"bench": "block-ops", "size": f"{tokens} tokens", "path": prec, "ops": ops})
    with tempfile.TemporaryDirectory() as tmp:
        for size in ((1024, 768), (4000, 3000)):
            photo = _synthetic_photo(Path(tmp), size)
            model = Found(vit, head, device="cpu")  # found segment's default precision
            split = photo_split(model, photo, side or None, reps=2 if quick else 3)
            log(f"  split {size[0]}×{size[1]} JPEG ({model.precision}; the mask): " + ", ".join(
                f"{k} {1000 * split[k]:.0f} ms" for k in MASK_STAGES) + f"; total {1000 * split['total']:.0f} ms"
                f" (+ edge upsampling {1000 * split['edge upsampling']:.0f} ms for a cut-out)")
            rows.append({"bench": "split", "size": f"{size[1]}x{size[0]}", "path": model.precision, "seconds": split})
    return rows


# ---------------------------------------------------------------------------- reporting
def format_row(r: dict) -> str:
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

    def pick(bench: str, size: str, path_prefix: str, key: str, batch_pred=lambda b: True) -> list[dict]:
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


def environment() -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "machine": platform.machine(), "processor": _cpu_name()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(OSError):
        env["loadavg"] = os.getloadavg()
    return env


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor()


# ---------------------------------------------------------------------------- CLI
def _list(text: str, conv) -> list:
    return [conv(t) for t in text.split(",") if t.strip()]


def parse_size(text: str) -> tuple[int, int]:
    """``"320x480"`` (height × width) or ``"224"`` → (h, w)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        hw = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else None
    except ValueError:
        hw = None
    if hw is None or min(hw) < 1:
        raise ValueError(f"size {text!r} is not HxW (e.g. 320x480) or a single side")
    return hw


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``found bench`` (shared by the scripts in benchmarks/)."""
    p.add_argument("--quick", action="store_true", help="a short run (fewer repetitions, smaller batches and folders)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: CUDA if available, else CPU)")
    p.add_argument("--precision", type=lambda s: _list(s, str), metavar="LIST",
                   help=f"fast-path precisions to measure, comma-separated from {', '.join(PRECISIONS)} (default: cpu fp32,bf16,int8 on a CPU with bf16 units, else fp32,int8; cuda fp32,bf16)")
    p.add_argument("--sizes", type=lambda s: _list(s, parse_size), metavar="LIST", help="HxW image sizes (default 224x224,320x480)")
    p.add_argument("--batch-sizes", type=lambda s: _list(s, int), metavar="LIST", help="batch sizes (default: cpu 1,8 (quick 1,4); cuda 1,64,256)")
    p.add_argument("--reps", type=int, help="timed repetitions per measurement (default: 5, quick 2)")
    p.add_argument("--model", dest="run_model", action=argparse.BooleanOptionalAction, default=True, help="model throughput (tensor in → mask out)")
    p.add_argument("--folder", dest="run_folder", action=argparse.BooleanOptionalAction, default=True, help="folder throughput (JPEG files in → PNG masks out)")
    p.add_argument("--folder-images", type=int, metavar="N", help="JPEGs in the generated folder (default: cpu 16, quick 4; cuda 1000)")
    p.add_argument("--workers", type=int, help="decoding threads of the engine in the folder benchmark (default: as found segment, min(4, CPUs))")
    p.add_argument("--profile", dest="run_profile", action=argparse.BooleanOptionalAction, default=True,
                   help="where the time goes: backbone GFLOP/s at the working scale against this CPU's matmul GFLOP/s, "
                        "and one photo's split (decode, resize, backbone, head, edge upsampling, encode/write)")
    p.add_argument("--backbones", type=lambda s: _list(s, str), metavar="LIST",
                   help="also compare registered backbones (random weights, same compute) at the working scale, one row "
                        "each, e.g. dino-vits8,dinov2-vits14-reg (CPU)")
    p.add_argument("--max-side", type=int, default=None, metavar="PX",
                   help="working scale of the profile (default: found segment's)")
    p.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                   help="torch.compile the backbone on CUDA (optional mode, e.g. reduce-overhead for CUDA graphs)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurement")
    p.add_argument("--json", metavar="PATH", help="also write all results (and the environment) as JSON")
    p.add_argument("--targets", action="store_true", help="compare with the project's performance targets (exit 1 if one is missed)")
    g = p.add_argument_group("real weights (default: a random ViT-S/8 and head, same compute)")
    g.add_argument("--weights", metavar="PATH", help="a DINO backbone checkpoint (its ViT size is read off the file)")
    g.add_argument("--head", metavar="PATH",
                   help="a FOUND head; default with --weights: the published head of the default model (384-d backbones)")
    g.add_argument("--num-heads", type=int, help="attention heads of the --weights backbone (default: embed dim / 64)")
    g.add_argument("--images", metavar="DIR",
                   help="also measure the mask agreement of every precision with the eager fp32 baseline on these images")
    g.add_argument("--onnx", action="append", metavar="FILE",
                   help="with --images: also the agreement of this ONNX file (from `found export onnx` of the same "
                        "weights; repeatable), e.g. to check an int8 file against the 0.99 IoU rule with --targets")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure throughput against the eager float32 baseline", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device) if args.device else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FoundError(f"--device {args.device}: CUDA is not available on this machine")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    precisions = args.precision or (["fp32", "bf16"] if cuda else default_cpu_precisions())
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise FoundError(f"unknown precision {bad[0]!r} (choose from {', '.join(PRECISIONS)})")
    if "int8" in precisions and device.type != "cpu":
        raise FoundError("precision int8 runs on the CPU only")
    sizes = args.sizes or list(DEFAULT_SIZES)
    batches = args.batch_sizes or ([1, 64, 256] if cuda else [1, 4] if args.quick else [1, 8])
    reps = args.reps or (2 if args.quick else 5)
    if reps < 1 or min(batches) < 1:
        raise FoundError("--reps and batch sizes must be at least 1")
    image_paths = _image_paths(args.images) if getattr(args, "images", None) else []
    nets, note = _nets_from_args(args)
    # a quick CPU run batches 224x224 only: the eager baseline at 320x480 costs seconds per image
    skip = {(hw, b) for hw in sizes for b in batches if b > 1 and hw[0] * hw[1] > 224 * 224} if (args.quick and not cuda) else set()
    print(f"found bench on {device} ({_cpu_name() if not cuda else torch.cuda.get_device_name(device)}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {note}")
    print("baseline 'eager-fp32': DINO's eager attention (N×N softmax) in every block, float32; "
          "ratio = median over interleaved rounds of baseline time / path time")
    rows: list[dict] = []
    if args.run_model:
        rows += bench_model(device, precisions, sizes, batches, reps, warmup=1, compile_mode=args.compile, memory=args.memory,
                            skip=skip, nets=nets)
    if args.run_folder:
        n = args.folder_images or (1000 if cuda else 4 if args.quick else 16)
        fb = [b for b in batches if b <= n]
        if args.quick and not cuda:
            fb = [min(batches), max(batches)] if len(batches) > 1 else batches
        n_per = {hw: (n if hw[0] * hw[1] <= 224 * 224 or cuda else max(1, n // 2)) for hw in sizes}
        fsizes = sizes[:1] if args.quick and not cuda else sizes
        rows += bench_folder(device, precisions, fsizes, sorted(set(fb)), n_per, reps=1 if args.quick or cuda else 2,
                             workers=args.workers, compile_mode=args.compile, nets=nets)
    if getattr(args, "run_profile", False) and not cuda:
        rows += bench_profile(precisions, nets, args.max_side, quick=args.quick)
    if getattr(args, "backbones", None) and not cuda:
        print(f"backbones at the working scale (--max-side {args.max_side or 'default'}; random weights):")
        rows += bench_backbones(args.backbones, args.max_side, quick=args.quick)
    if image_paths:
        rows += mask_agreement(device, precisions, image_paths, nets, max_side=args.max_side, onnx_files=args.onnx or [])
    status = 0
    if args.targets:
        print("targets:")
        for what, value, target, ok in check_targets(rows, device):
            v = "n/a" if value is None else f"{value:.2f}"
            print(f"  {'MET ' if ok else 'MISS'} {what}: {v} (target ≥ {target:g})")
            status |= 0 if ok else 1
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"environment": environment(), "note": note, "results": rows}, indent=1))
    return status


def _image_paths(folder: str) -> list[Path]:
    """The image files directly in ``folder`` (sorted); a clear error when there are none."""
    from ..io.images import IMAGE_SUFFIXES

    d = Path(folder)
    if not d.is_dir():
        raise FoundError(f"--images {folder}: not a folder")
    paths = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FoundError(f"--images {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


def _nets_from_args(args: argparse.Namespace) -> tuple[Nets, str]:
    """(backbone, head) from --weights/--head, or None for the random ViT-S/8; and the note printed."""
    weights, head = getattr(args, "weights", None), getattr(args, "head", None)
    if not weights and not head:
        return None, WEIGHTS_NOTE
    from ..hub.build import load_backbone, load_head

    vit = load_backbone("auto", weights, num_heads=getattr(args, "num_heads", None)) if weights else vit_s8()
    dim = vit.embed_dim
    if head is None and dim != 384:
        raise FoundError(f"the backbone is {dim}-d: the published head is for 384-d ViT-S/8; give --head PATH")
    fhead = load_head(head=head, in_dim=dim)
    what = f"backbone {weights}" if weights else "random ViT-S/8 backbone"
    return (vit, fhead.eval()), f"weights: {what} + head {head or 'published (' + DEFAULT_MODEL + ')'}"
