"""Folder pipeline (files in → PNG masks out) and the ``found bench`` plumbing, on the tiny ViT."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_vit
from found import Found, FoundHead
from found.errors import InputError
from found.pipeline import load_for_model, map_ahead, parse_size, segment_files


@pytest.fixture(scope="module")
def model() -> Found:
    torch.manual_seed(5)
    head = FoundHead(96)
    with torch.no_grad():
        head.decoder.weight.normal_(0, 0.1)
    return Found(tiny_vit(), head, device="cpu")


@pytest.fixture()
def folder(tmp_path, images_dir):
    src = tmp_path / "in"
    src.mkdir()
    photos = {p.stem: np.array(Image.open(p).convert("RGB")) for p in sorted(images_dir.glob("*.png"))}
    Image.fromarray(photos["astronaut"][:150, :200]).save(src / "a.png")
    Image.fromarray(photos["coffee"][:150, :200]).save(src / "b.png")
    Image.fromarray(photos["retina"][:97, :131]).save(src / "c.png")
    Image.fromarray(photos["coffee"][50:200, 100:300]).save(src / "d.jpg", quality=92)
    (src / "broken.jpg").write_bytes(b"not an image")
    return src


@pytest.mark.parametrize("workers", [0, 3])
def test_masks_equal_predict_at_native_size(model, folder, tmp_path, workers):
    files = sorted(folder.iterdir())
    out = tmp_path / f"out{workers}"
    res = segment_files(model, files, out, batch_size=2, workers=workers)
    assert [f for f, _ in res.failures] == [str(folder / "broken.jpg")]
    assert len(res.written) == 4 and res.images_per_s > 0
    for f in files:
        if f.name == "broken.jpg":
            assert not (out / "broken_mask.png").exists()
            continue
        rgb, _ = load_for_model(f)
        expected = model.predict(rgb)[0].mask
        with Image.open(out / f"{f.stem}_mask.png") as im:
            written = np.asarray(im)
        assert written.shape == rgb.shape[:2]
        np.testing.assert_array_equal(written > 127, expected)
        assert set(np.unique(written)) <= {0, 255}


def test_resized_inference_writes_masks_at_original_size(model, folder, tmp_path):
    files = [folder / "a.png", folder / "c.png"]
    out = tmp_path / "out"
    res = segment_files(model, files, out, size=(64, 96), batch_size=8, workers=2, mode="single")
    assert not res.failures and len(res.written) == 2
    for f in files:
        rgb, orig = load_for_model(f, size=(64, 96))
        assert rgb.shape == (64, 96, 3)
        expected = model.predict(rgb, mode="single")[0].mask
        with Image.open(out / f"{f.stem}_mask.png") as im:
            written = np.asarray(im) > 127
        assert written.shape == orig
        small = np.asarray(Image.fromarray(written.astype(np.uint8)).resize((96, 64), Image.NEAREST)) > 0
        assert (small != expected).mean() < 0.02  # nearest up then down: equal up to boundary pixels


@pytest.mark.parametrize("threads", [0, 3])
def test_map_ahead_keeps_order_bounds_the_window_and_cancels_on_close(threads):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock()
    started: list[int] = []

    def fn(x: int) -> int:
        with lock:
            started.append(x)
        if x % 4 == 3:
            raise InputError(f"bad {x}")
        if x == 10:
            raise ZeroDivisionError("a bug is raised, not yielded")
        return x * x

    pool = ThreadPoolExecutor(threads) if threads else None
    try:
        gen = map_ahead(fn, range(20), pool, window=3)
        got = []
        for x, r in gen:
            with lock:
                ahead = len(started) - (x + 1)
            assert ahead <= (3 if pool else 0)  # never more than `window` calls beyond the consumer
            got.append((x, r if isinstance(r, int) else str(r)))
            if x == 5:
                break
        gen.close()
        assert got == [(0, 0), (1, 1), (2, 4), (3, "bad 3"), (4, 16), (5, 25)]
        if pool is not None:
            pool.shutdown(wait=True)
        assert max(started) <= 5 + 3  # closing cancelled what had not started
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    pool = ThreadPoolExecutor(threads) if threads else None
    try:
        with pytest.raises(ZeroDivisionError):
            list(map_ahead(fn, range(8, 14), pool, window=3))
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def test_parse_size_and_argument_errors(model, tmp_path):
    assert parse_size("320x480") == (320, 480)
    assert parse_size("224") == (224, 224)
    for bad in ("x", "0x5", "1x2x3", "axb"):
        with pytest.raises(ValueError):
            parse_size(bad)
    with pytest.raises(ValueError, match="batch_size"):
        segment_files(model, [], tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="mode"):
        segment_files(model, [], tmp_path, mode="all")


def test_bench_model_rows_compare_fast_and_eager_paths(monkeypatch):
    from found.cli import bench

    monkeypatch.setattr(bench, "vit_s8", lambda seed=0: tiny_vit())
    monkeypatch.setattr(bench, "random_head", lambda dim=384, seed=1: FoundHead(96))
    lines: list[str] = []
    rows = bench.bench_model(torch.device("cpu"), ["fp32"], [(48, 64)], [1, 2], reps=1, log=lines.append)
    assert {(r["batch"], r["path"]) for r in rows} == {(b, p) for b in (1, 2) for p in ("eager-fp32", "fast-fp32")}
    for r in rows:
        assert r["ms_per_img"] > 0 and r["img_per_s"] > 0 and r["ratio"] > 0
        if r["path"] == "fast-fp32":
            assert r["max_abs_attention"] < 1e-5 and r["max_abs_keys"] < 5e-5
            assert r["mask_pixels_differing"] == 0 and r["mask_iou"] == 1.0
    assert len(lines) == len(rows)


def test_found_bench_cli_writes_json(tmp_path, monkeypatch, capsys):
    from found.cli import bench
    from found.cli.main import main

    monkeypatch.setattr(bench, "vit_s8", lambda seed=0: tiny_vit())
    monkeypatch.setattr(bench, "random_head", lambda dim=384, seed=1: FoundHead(96))
    out = tmp_path / "r.json"
    rc = main(["bench", "--device", "cpu", "--precision", "fp32", "--sizes", "32x48", "--batch-sizes", "1",
               "--reps", "1", "--folder-images", "2", "--workers", "1", "--json", str(out), "--targets"])
    text = capsys.readouterr().out
    assert "eager-fp32" in text and "fast-fp32" in text and "random ViT-S/8" in text
    data = json.loads(out.read_text())
    benches = {r["bench"] for r in data["results"]}
    assert benches == {"model", "folder"}
    assert all(r.get("masks_identical", 1.0) == 1.0 for r in data["results"])
    assert rc in (0, 1)  # 1 when a ratio target is missed on this tiny model; the run itself worked
    assert main(["bench", "--device", "cpu", "--precision", "fp64"]) == 2


@pytest.mark.slow
def test_found_bench_real_weights_and_image_agreement(tmp_path, capsys):
    """--weights/--head load local checkpoints for every path, and --images measures each
    precision's mask agreement with the eager baseline on real photos (bad files skipped)."""
    from found.cli.main import main

    vit = tiny_vit()
    ckpt = tmp_path / "backbone.pth"
    torch.save(vit.state_dict(), ckpt)
    torch.manual_seed(0)
    head_file = tmp_path / "head.pt"
    torch.save({"decoder": {"weight": torch.randn(1, 96, 1, 1) * 0.1, "bias": torch.zeros(1)}}, head_file)
    images = tmp_path / "images"
    images.mkdir()
    for src in sorted((Path(__file__).parent / "data" / "images").glob("*.png"))[:2]:
        (images / src.name).write_bytes(src.read_bytes())
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "r.json"
    args = ["bench", "--device", "cpu", "--precision", "fp32", "--sizes", "32x48", "--batch-sizes", "1", "--reps", "1",
            "--no-folder", "--no-memory", "--weights", str(ckpt), "--num-heads", "6", "--head", str(head_file),
            "--images", str(images), "--json", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"backbone {ckpt}" in text and "broken.jpg" in text
    data = json.loads(out.read_text())
    agree = [r for r in data["results"] if r["bench"] == "agreement"]
    assert [(r["path"], r["images"]) for r in agree] == [("fast-fp32", 2)]
    # fast fp32 vs eager fp32 differ only in float summation order: a pixel may flip where a logit is ~0
    assert 0.999 < agree[0]["mask_iou_min"] <= agree[0]["mask_iou_mean"] <= 1.0
    assert agree[0]["mask_pixels_differing"] <= 20
    assert f"backbone {ckpt}" in data["note"]
    # clear usage errors, no traceback
    assert main(["bench", "--no-folder", "--images", str(tmp_path / "nothing-here")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["bench", "--no-folder", "--weights", str(ckpt), "--num-heads", "6"]) == 2
    assert "give --head" in capsys.readouterr().err
