"""Upsampling FOUND's soft mask to full size: bilinear (current) vs guided (``found.model.edges``) vs OpenCV ximgproc.

    python benchmarks/bench_edges.py                         # 1024x768 and 4000x3000, all cases, table
    python benchmarks/bench_edges.py --quick                 # 1024x768 only, fewer repetitions
    python benchmarks/bench_edges.py --cv-python /tmp/venv-cv/bin/python   # + ximgproc rows from that interpreter
    python benchmarks/bench_edges.py --tune                  # radius × eps grid on other seeds (1024x768, 2000x1500)

Synthetic photos with known sharp shapes at full size (cases below), textured and noisy. FOUND's
output is simulated as the engine makes it: the image is reduced so that its longer side is
``--work-side`` (400), the true mask at that size (area average ≥ 0.5) is averaged on the 8×8
patch grid, turned into logits 8·(f − 0.5), scaled ×8 bilinearly (``found.model.masks.upsample_logits``)
and passed through a sigmoid: a soft mask at the working size whose 0.5 contour is blocky at the
patches. It is then scaled to full size by each method and thresholded at 0.5:

* bilinear       ``found.model.edges.bilinear_upsample`` (Pillow BILINEAR, what ``ScaledPrediction.soft`` does);
* guided         ``found.model.edges.guided_upsample`` (fast guided filter in torch, coefficients at the working size);
* guided-u8      the same with ``out_dtype=np.uint8`` (probability × 255: no full-size float array);
* ximgproc       bilinear to full size, then ``cv2.ximgproc.guidedFilter`` at full size (radius × scale);
* ximgproc-fast  the same with its ``scale`` = working/full (its own fast guided filter; radius in reduced pixels).

Metrics at full size against the true mask: IoU, and the boundary F-measure (precision/recall of
boundary pixels within 0.0075 × the image diagonal, and within 0.002 × the diagonal, a stricter
tolerance that sees the few-pixel snapping the loose one cannot). Time: median of ``--repeat`` calls
on the "ellipse" case with ``--threads`` threads (torch and OpenCV alike). Memory: peak RSS above the
inputs, in a fresh process per method and size (a warm-up call at 1/4 size, then the peak is reset
through /proc/self/clear_refs and VmHWM after one call is compared with VmRSS before it; the output
array is included: 48 MB float32 at 12 MP).

The ximgproc methods need ``opencv-contrib-python-headless``, which must not be installed next to
``opencv-python-headless``: put it in a separate venv (``python3 -m venv /tmp/venv-cv &&
/tmp/venv-cv/bin/pip install numpy scipy pillow opencv-contrib-python-headless``) and pass its
interpreter with ``--cv-python``; that part imports neither torch nor ``found``.

Why radius 8 / eps 1e-2 (``found.model.edges.DEFAULT_RADIUS`` / ``DEFAULT_EPS``; ``--tune``, seeds 101-102 at
1024x768 and 2000x1500, none of them in the report): the 0.5 contour of a patch-level mask is off the
true edge by up to about half a patch, and a window must hold clean foreground and background on both
sides of the true edge to fit the colour → mask line, so the radius is about one patch. Radius 4 fits
too locally (mean IoU 0.985 vs 0.987 at 8); 12-16 snap star corners better (IoU up to 0.989) but pass
more full-size noise where colours are close (the "close" case grows speckles: strict boundary F 0.92
at 12 MP vs 0.99 at radius 8). eps is the colour variance under which a window is taken as flat:
1e-4 to 1e-3 let sensor noise through a·I (strict boundary F 0.85-0.91), 3e-2 gives blocks back
(polygon IoU −0.007); 1e-2 (σ ≈ 25 grey levels) had the best strict boundary F and an IoU within
0.001 of the best eps at radius 8.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PATCH = 8
CASES = ("ellipse", "polygon", "thin", "close", "clutter")
METHODS = ("bilinear", "guided", "guided-u8", "ximgproc", "ximgproc-fast")
CV_METHODS = ("ximgproc", "ximgproc-fast")
TIMED_CASE = "ellipse"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1024x768,4000x3000", help="comma-separated full sizes WxH")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--work-side", type=int, default=400, help="longer side of the reduced image (engine's max_side)")
    ap.add_argument("--radius", type=int, default=None, help="guided radius in reduced pixels (default: found.model.edges')")
    ap.add_argument("--eps", type=float, default=None, help="guided eps in [0,1]² colour units (default: found.model.edges')")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per method at ≤ 2 MP (3 above)")
    ap.add_argument("--threads", type=int, default=1, help="torch / OpenCV threads (default 1: the CPU is shared)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cv-python", default=None, help="interpreter with cv2.ximgproc (default: this one, if it has it)")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-method memory subprocesses")
    ap.add_argument("--quick", action="store_true", help="1024x768 only, 3 repetitions")
    ap.add_argument("--tune", action="store_true", help="radius × eps grid of the guided method on tuning seeds")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # run | mem: internal
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    return ap.parse_args()


# ----------------------------------------------------------------------------- synthetic data

def working_size(W: int, H: int, side: int) -> tuple[int, int]:
    """(w, h) with the longer side capped at ``side`` (``found.io.images.capped_size`` with min_side 1)."""
    if max(W, H) <= side:
        return W, H
    s = side / max(W, H)
    return max(round(W * s), 1), max(round(H * s), 1)


def _field(rng: np.random.Generator, H: int, W: int, cell: int) -> np.ndarray:
    """Smooth noise, float32 [H, W], std ≈ 1, with features of about ``cell`` px (bicubic from a coarse grid)."""
    g = rng.standard_normal((max(2, H // cell + 2), max(2, W // cell + 2))).astype(np.float32)
    f = np.asarray(Image.fromarray(g, mode="F").resize((W, H), Image.Resampling.BICUBIC), dtype=np.float32)
    return f / max(float(f.std()), 1e-6)


def _shape(name: str, W: int, H: int, rng: np.random.Generator) -> np.ndarray:
    """The true mask (bool [H, W]) of case ``name``, in coordinates relative to the image, jittered by ``rng``."""
    L = max(W, H)
    im = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(im)
    cx, cy = W * rng.uniform(0.45, 0.55), H * rng.uniform(0.45, 0.55)
    if name in ("ellipse", "close", "clutter"):
        a, b, t = L * rng.uniform(0.22, 0.28), L * rng.uniform(0.13, 0.18), rng.uniform(0, np.pi)
        s = np.linspace(0, 2 * np.pi, 720, endpoint=False)
        pts = np.stack([cx + a * np.cos(s) * np.cos(t) - b * np.sin(s) * np.sin(t),
                        cy + a * np.cos(s) * np.sin(t) + b * np.sin(s) * np.cos(t)], 1)
        d.polygon([tuple(p) for p in pts], fill=255)
    elif name == "polygon":  # a non-convex star-like polygon with sharp corners
        n = 9
        ang = np.sort(rng.uniform(0, 2 * np.pi, n * 2))
        outer = np.arange(n * 2) % 2 == 0
        rad = np.where(outer, rng.uniform(0.26, 0.34, n * 2), rng.uniform(0.12, 0.2, n * 2)) * min(W, H)
        d.polygon([(cx + r * np.cos(u), cy + r * np.sin(u)) for r, u in zip(rad, ang)], fill=255)
    elif name == "thin":  # a disc on a stick one patch wide, and an antenna under half a patch wide
        r = min(W, H) * rng.uniform(0.16, 0.2)
        d.ellipse([cx - r, cy - r - H * 0.12, cx + r, cy + r - H * 0.12], fill=255)
        d.line([(cx, cy), (cx + L * 0.05, cy + H * 0.4)], fill=255, width=max(1, round(L * 0.02)))
        d.line([(cx - r * 0.7, cy - H * 0.12), (cx - r * 1.9, cy - H * 0.45)], fill=255, width=max(1, round(L * 0.008)))
    else:
        raise ValueError(name)
    return np.asarray(im) > 127


#: (foreground RGB, background RGB, texture amplitude, noise std) per case, in grey levels.
LOOKS = {
    "ellipse": ((190, 70, 50), (60, 110, 170), 14.0, 6.0),
    "polygon": ((225, 200, 60), (80, 85, 95), 14.0, 6.0),
    "thin": ((40, 150, 60), (200, 190, 170), 14.0, 6.0),
    "close": ((122, 112, 100), (112, 112, 106), 10.0, 6.0),  # fg/bg 6-10 levels apart: guidance is mostly noise
    "clutter": ((190, 70, 50), (60, 110, 170), 14.0, 6.0),  # + strong stripes in the background
}


def make_case(name: str, W: int, H: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [H, W, 3], true mask bool [H, W]) of a case; edges anti-aliased (σ = 0.7 px) like a lens."""
    rng = np.random.default_rng([seed, CASES.index(name), W, H])
    gt = _shape(name, W, H, rng)
    L = max(W, H)
    alpha = ndimage.gaussian_filter(gt.astype(np.float32), 0.7)
    fg, bg, tex, noise = LOOKS[name]
    img = np.empty((H, W, 3), np.uint8)
    coarse, fine = _field(rng, H, W, max(4, L // 20)), _field(rng, H, W, max(2, L // 200))
    stripes = None
    if name == "clutter":  # high-contrast stripes of another colour, period ~ L/12, in the background only
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        stripes = (np.sin((xx * 0.8 + yy * 0.6) * (2 * np.pi / (L / 12))) > 0.3).astype(np.float32)
        stripes = ndimage.gaussian_filter(stripes, 0.7)
        del yy, xx
    for c in range(3):
        bgc = np.float32(bg[c]) + tex * (0.7 * coarse + 0.3 * fine)
        if stripes is not None:
            bgc += stripes * np.float32((235, 225, 120)[c] - bg[c])
        fgc = np.float32(fg[c]) + tex * (0.6 * fine - 0.7 * coarse)
        ch = bgc + alpha * (fgc - bgc) + rng.standard_normal((H, W), dtype=np.float32) * np.float32(noise)
        img[..., c] = np.clip(ch + 0.5, 0, 255).astype(np.uint8)
    return img, gt


def simulate_soft(gt: np.ndarray, work: tuple[int, int]) -> np.ndarray:
    """FOUND-like soft mask (float32 [h, w]) at the working size: patch fractions, logits, ×8 bilinear, sigmoid."""
    w, h = work
    small = np.asarray(Image.fromarray(gt.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BOX)) >= 128
    ph, pw = -(-h // PATCH), -(-w // PATCH)
    pad = np.zeros((ph * PATCH, pw * PATCH), np.float32)
    valid = np.zeros_like(pad)
    pad[:h, :w], valid[:h, :w] = small, 1
    frac = pad.reshape(ph, PATCH, pw, PATCH).sum((1, 3)) / np.maximum(valid.reshape(ph, PATCH, pw, PATCH).sum((1, 3)), 1)
    logits = (8.0 * (frac - 0.5)).astype(np.float32)
    up = Image.fromarray(logits, mode="F").resize((pw * PATCH, ph * PATCH), Image.Resampling.BILINEAR)
    return (1 / (1 + np.exp(-np.asarray(up, dtype=np.float32)[:h, :w]))).astype(np.float32)


# ----------------------------------------------------------------------------- metrics

def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two bool masks (1 when both are empty)."""
    u = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / u) if u else 1.0


def _boundary(m: np.ndarray) -> np.ndarray:
    """Pixels of ``m`` with a 4-neighbour outside it (the image border counts as outside)."""
    return m & ~ndimage.binary_erosion(m, border_value=0)


def boundary_f(pred: np.ndarray, gt: np.ndarray, tols: tuple[float, ...]) -> list[float]:
    """Boundary F-measure at each tolerance (px): boundary pixels of one mask within tol of the other's."""
    bp, bg = _boundary(pred), _boundary(gt)
    if not bp.any() or not bg.any():
        return [float(bp.any() == bg.any())] * len(tols)
    ys, xs = np.nonzero(bp | bg)
    m = int(max(tols)) + 2  # crop to the boundaries ± the tolerance: same distances, less work
    y0, y1, x0, x1 = max(0, ys.min() - m), ys.max() + m + 1, max(0, xs.min() - m), xs.max() + m + 1
    bp, bg = bp[y0:y1, x0:x1], bg[y0:y1, x0:x1]
    d_to_gt = ndimage.distance_transform_edt(~bg)[bp]
    d_to_pred = ndimage.distance_transform_edt(~bp)[bg]
    out = []
    for t in tols:
        p, r = float((d_to_gt <= t).mean()), float((d_to_pred <= t).mean())
        out.append(2 * p * r / (p + r) if p + r else 0.0)
    return out


# ----------------------------------------------------------------------------- methods

def _pil_bilinear(soft: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Same as found.model.edges.bilinear_upsample, without importing found (the ximgproc venv has no torch)."""
    im = Image.fromarray(np.asarray(soft, dtype=np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
    return np.clip(np.asarray(im, dtype=np.float32), 0, 1)


def make_method(method: str, radius: int, eps: float, threads: int):
    """fn(soft, guide) → float32 [H, W] (uint8 × 255 for guided-u8) for ``method``; imports what it needs."""
    if method in ("bilinear", "guided", "guided-u8"):
        import torch
        torch.set_num_threads(threads)
        sys.path.insert(0, str(REPO))
        from found.model.edges import bilinear_upsample, guided_upsample
        if method == "bilinear":
            return lambda soft, guide: bilinear_upsample(soft, (guide.shape[1], guide.shape[0]))
        if method == "guided-u8":
            return lambda soft, guide: guided_upsample(soft, guide, radius=radius, eps=eps, out_dtype=np.uint8)
        return lambda soft, guide: guided_upsample(soft, guide, radius=radius, eps=eps)
    import cv2
    cv2.setNumThreads(threads)

    def run(soft: np.ndarray, guide: np.ndarray) -> np.ndarray:
        w, (H, W) = soft.shape[1], guide.shape[:2]
        up = _pil_bilinear(soft, (W, H))
        # a uint8 guide takes eps in [0, 255]² units (checked against a reference implementation)
        if method == "ximgproc":
            q = cv2.ximgproc.guidedFilter(guide, up, round(radius * W / w), eps * 255.0 ** 2, dDepth=-1)
        else:  # its scale subsamples inside the filter; the radius then counts subsampled pixels
            q = cv2.ximgproc.guidedFilter(guide, up, radius, eps * 255.0 ** 2, dDepth=-1, scale=w / W)
        return np.clip(q, 0, 1, out=q)
    return run


def defaults() -> tuple[int, float]:
    """found.model.edges' default radius and eps (read from the source, so the torch-less venv can use them)."""
    ns: dict = {}
    for line in (REPO / "found" / "edges.py").read_text().splitlines():
        if line.startswith(("PATCH =", "DEFAULT_RADIUS =", "DEFAULT_EPS =")):
            exec(line, ns)
    return int(ns["DEFAULT_RADIUS"]), float(ns["DEFAULT_EPS"])


# ----------------------------------------------------------------------------- child processes

def _status_kb(key: str) -> int | None:
    """A VmRSS / VmHWM line of /proc/self/status in kB (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_reset() -> int:
    """Current RSS (kB) after resetting the peak (clear_refs 5: the imports' transient peaks do not count);
    where that is not possible, the peak so far (ru_maxrss), which can only under-report."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS")
    except (OSError, TypeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss() -> int:
    """Peak RSS (kB) since the last reset."""
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(args: argparse.Namespace) -> None:
    """--child run: metrics (+ times) of one method over the saved cases of one size; --child mem: its peak RSS."""
    spec = json.loads(args.data)
    fn = make_method(spec["method"], spec["radius"], spec["eps"], args.threads)
    d = Path(spec["dir"])
    if args.child == "mem":
        guide, soft = np.load(d / f"{TIMED_CASE}_guide.npy"), np.load(d / f"{TIMED_CASE}_soft.npy")
        (h, w), (H, W) = soft.shape, guide.shape[:2]  # a warm-up call at 1/4 size pages the libraries' code in
        fn(np.asarray(Image.fromarray(soft, mode="F").resize((w // 4, h // 4))),
           np.asarray(Image.fromarray(guide).resize((W // 4, H // 4))))
        before = _rss_reset()
        out = fn(soft, guide)
        print(json.dumps({"mem_mb": (_peak_rss() - before) / 1024, "out_mb": out.nbytes / 2 ** 20}))
        return
    res = {}
    for case in spec["cases"]:
        guide, soft, gt = (np.load(d / f"{case}_{k}.npy") for k in ("guide", "soft", "gt"))
        out = fn(soft, guide)
        pred = out >= 128 if out.dtype == np.uint8 else out > 0.5  # round(255·q) ≥ 128 ⇔ q ≥ 0.5
        diag = float(np.hypot(*gt.shape))
        f_loose, f_tight = boundary_f(pred, gt, (0.0075 * diag, 0.002 * diag))
        res[case] = {"iou": iou(pred, gt), "bf": f_loose, "bf_tight": f_tight}
        if case == TIMED_CASE:
            times = []
            for _ in range(spec["repeat"]):
                t = time.perf_counter()
                fn(soft, guide)
                times.append(time.perf_counter() - t)
            res["ms"] = 1e3 * float(np.median(times))
        del out, pred, guide, soft, gt
    print(json.dumps(res))


def spawn(python: str, mode: str, spec: dict, threads: int) -> dict:
    """Runs this script as a child (``mode`` = run | mem) and returns its JSON line."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [python, str(Path(__file__).resolve()), "--child", mode, "--threads", str(threads), "--data", json.dumps(spec)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        raise RuntimeError(f"{spec['method']} {mode} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def has_ximgproc(python: str) -> bool:
    """Whether ``python`` can import cv2.ximgproc."""
    p = subprocess.run([python, "-c", "import cv2; cv2.ximgproc.guidedFilter"], capture_output=True)
    return p.returncode == 0


# ----------------------------------------------------------------------------- main

def machine_line(argv: list[str]) -> str:
    """CPU model, cores, date, versions and the command."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import PIL
    import scipy
    return (f"{cpu}, {os.cpu_count()} CPUs, {datetime.datetime.now().isoformat(timespec='minutes')}, Python "
            f"{platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, Pillow {PIL.__version__}; "
            f"`python {' '.join(['benchmarks/bench_edges.py', *argv])}`")


def tune(args: argparse.Namespace) -> None:
    """Mean IoU / boundary F of the guided method over a radius × eps grid, on seeds the report does not use."""
    import torch
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO))
    from found.model.edges import bilinear_upsample, guided_upsample
    sizes = [(1024, 768), (2000, 1500)]
    radii, epss = (4, 6, 8, 12, 16), (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    cases = [c.strip() for c in args.cases.split(",")]
    scores: dict = {}
    for W, H in sizes:
        for case in cases:
            for seed in (101, 102):
                img, gt = make_case(case, W, H, seed)
                soft = simulate_soft(gt, working_size(W, H, args.work_side))
                diag = float(np.hypot(H, W))
                tols = (0.0075 * diag, 0.002 * diag)

                def score(out):
                    return (iou(out > 0.5, gt), *boundary_f(out > 0.5, gt, tols))
                scores.setdefault("bilinear", []).append(score(bilinear_upsample(soft, (W, H))))
                for r in radii:
                    for e in epss:
                        scores.setdefault((r, e), []).append(score(guided_upsample(soft, img, radius=r, eps=e)))
    print(f"tuning: sizes {sizes}, cases {cases}, seeds 101-102; mean over them (min IoU in brackets)\n")
    print("| setting | IoU | boundary F (0.0075 d) | boundary F (0.002 d) |\n|---|---|---|---|")
    for k, v in scores.items():
        a = np.array(v)
        name = k if isinstance(k, str) else f"r={k[0]} eps={k[1]:g}"
        print(f"| {name} | {a[:, 0].mean():.4f} ({a[:, 0].min():.3f}) | {a[:, 1].mean():.4f} | {a[:, 2].mean():.4f} |")


def main() -> None:
    args = parse()
    if args.child:
        return child(args)
    if args.tune:
        return tune(args)
    r0, e0 = defaults()
    radius = r0 if args.radius is None else args.radius
    eps = e0 if args.eps is None else args.eps
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in ("1024x768" if args.quick else args.sizes).split(",")]
    cases = [c.strip() for c in args.cases.split(",")]
    methods = [m.strip() for m in args.methods.split(",")]
    cv_python = args.cv_python or sys.executable
    if any(m in CV_METHODS for m in methods) and not has_ximgproc(cv_python):
        print(f"(no cv2.ximgproc in {cv_python}: ximgproc rows skipped; see --cv-python)\n", file=sys.stderr)
        methods = [m for m in methods if m not in CV_METHODS]
    tmp = Path(tempfile.mkdtemp(prefix="bench_edges_"))
    rows = []
    try:
        for W, H in sizes:
            d = tmp / f"{W}x{H}"
            d.mkdir()
            work = working_size(W, H, args.work_side)
            for case in cases:
                img, gt = make_case(case, W, H, args.seed)
                np.save(d / f"{case}_guide.npy", img)
                np.save(d / f"{case}_gt.npy", gt)
                np.save(d / f"{case}_soft.npy", simulate_soft(gt, work))
                del img, gt
            repeat = 3 if args.quick or W * H > 2_000_000 else args.repeat
            for m in methods:
                py = cv_python if m in CV_METHODS else sys.executable
                spec = {"method": m, "radius": radius, "eps": eps, "dir": str(d), "cases": cases, "repeat": repeat}
                res = spawn(py, "run", spec, args.threads)
                mem = None if args.no_memory else spawn(py, "mem", spec, args.threads)["mem_mb"]
                rows.append(((W, H), work, m, res, mem))
                print(f"  {W}x{H} {m}: done", file=sys.stderr)
            shutil.rmtree(d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(machine_line(sys.argv[1:]))
    if any(m in CV_METHODS for m in methods):
        v = subprocess.run([cv_python, "-c", "import cv2; print(cv2.__version__)"], capture_output=True, text=True)
        print(f"ximgproc: OpenCV {v.stdout.strip()} (opencv-contrib-python-headless) in {cv_python}, without torch")
    print(f"\nguided radius {radius} (reduced px), eps {eps:g}; working size: longer side {args.work_side}; "
          f"threads {args.threads}; time: median, '{TIMED_CASE}' case; memory: peak RSS above the inputs\n")
    print("| size | method | mean IoU | mean BF 0.0075d | mean BF 0.002d | " + " | ".join(f"IoU / BF {c}" for c in cases)
          + " | ms | peak MB |")
    print("|" + "---|" * (7 + len(cases)))
    for (W, H), work, m, res, mem in rows:
        per = [res[c] for c in cases]
        cells = " | ".join(f"{p['iou']:.4f} / {p['bf']:.3f}" for p in per)
        ms = f"{res['ms']:.1f}" if "ms" in res else "-"
        print(f"| {W}x{H} ({work[0]}x{work[1]}) | {m} | {np.mean([p['iou'] for p in per]):.4f} | "
              f"{np.mean([p['bf'] for p in per]):.4f} | {np.mean([p['bf_tight'] for p in per]):.4f} | {cells} | "
              f"{ms} | {'-' if mem is None else f'{mem:.0f}'} |")


if __name__ == "__main__":
    main()
