"""Where the time goes at the working scale (the profile section), and registered backbones compared there."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from ..predictor import Found
from .models import Nets, default_nets, random_head, registry_backbone
from .profiling import MASK_STAGES, backbone_rate, block_ops, matmul_rates, photo_split, working_scale
from .synthetic import synthetic_photo


def bench_profile(precisions: list[str], nets: Nets, max_side: int | None, quick: bool = False,
                  log: Callable[[str], None] = print) -> list[dict]:
    """Where the time goes at the working scale: matmul GFLOP/s of this CPU, the backbone's achieved
    GFLOP/s in each float precision, and the split of one 1024×768 and one 4000×3000 JPEG."""
    from ..engine import DEFAULT_MAX_SIDE

    side = DEFAULT_MAX_SIDE if max_side is None else max_side
    vit, head = default_nets(nets)
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
            photo = synthetic_photo(Path(tmp), size)
            model = Found(vit, head, device="cpu")  # found segment's default precision
            split = photo_split(model, photo, side or None, reps=2 if quick else 3)
            log(f"  split {size[0]}×{size[1]} JPEG ({model.precision}; the mask): " + ", ".join(
                f"{k} {1000 * split[k]:.0f} ms" for k in MASK_STAGES) + f"; total {1000 * split['total']:.0f} ms"
                f" (+ edge upsampling {1000 * split['edge upsampling']:.0f} ms for a cut-out)")
            rows.append({"bench": "split", "size": f"{size[1]}x{size[0]}", "path": model.precision, "seconds": split})
    return rows


def bench_backbones(names: list[str], max_side: int | None, quick: bool = False, log: Callable[[str], None] = print) -> list[dict]:
    """One row per registered backbone at the working scale of a 1024×768 photo: tokens, backbone ms
    and GFLOP/s (found segment's default precision) and the whole mask of the photo (decode → PNG)."""
    from ..engine import DEFAULT_MAX_SIDE

    side = DEFAULT_MAX_SIDE if max_side is None else max_side
    reps = 2 if quick else 5
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photo = synthetic_photo(Path(tmp), (1024, 768))
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
