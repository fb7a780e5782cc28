"""The other surfaces on a tiny DINOv2-with-registers model: int8/bf16 precisions, found evaluate,
found serve, videos and Ray."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch

from conftest import require
from dinov2_support import REPO_DINOV2, load_cases, model_state
from helpers import noise_image, run_cli

MODEL = ["--model", "auto", "--num-heads", "6", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from found.hub.build import save_head
    from found.model.head import FoundHead

    d = tmp_path_factory.mktemp("dinov2_surfaces")
    torch.save(model_state(load_cases(REPO_DINOV2 / "dinov2_tiny_reg4_cases.npz")), d / "vit.pth")
    torch.manual_seed(3)
    save_head(FoundHead(96), d / "head.pt")
    return d / "vit.pth", d / "head.pt"


@pytest.fixture(scope="module")
def model(files):
    from found import build_found

    return build_found("auto", weights=files[0], head=files[1], num_heads=6, device="cpu", precision="fp32", progress=False)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_other_cpu_precisions_run_and_keep_most_of_the_mask(files, model, precision):
    from found import build_found
    from found.model.backbone.quantize import int8_supported

    if precision == "int8" and not int8_supported():
        pytest.skip("no quantized CPU engine")
    other = build_found("auto", weights=files[0], head=files[1], num_heads=6, device="cpu", precision=precision, progress=False)
    im = np.asarray(noise_image(150, 110, seed=1))
    a, b = model.predict(im)[0], other.predict(im)[0]
    assert a.mask.shape == b.mask.shape == im.shape[:2]
    assert (a.mask == b.mask).mean() > 0.9


def test_evaluate_saliency_runs(files, tmp_path):
    from PIL import Image

    from found.cli.main import main

    (tmp_path / "imgs").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(2):
        noise_image(90, 70, seed=i).save(tmp_path / "imgs" / f"im{i}.png")
        gt = np.zeros((70, 90), np.uint8)
        gt[20:50, 30:60] = 255
        Image.fromarray(gt).save(tmp_path / "masks" / f"im{i}.png")
    out = tmp_path / "out"
    rc = main(["evaluate", "saliency", "--images", str(tmp_path / "imgs"), "--masks", str(tmp_path / "masks"),
               "--output-dir", str(out), "--no-plot", "--weights", str(files[0]), "--head", str(files[1]), *MODEL])
    assert rc == 0 and json.loads((out / "results.json").read_text())["n_images"] == 2


def test_serve_answers_with_patch_14(model):
    require("fastapi", "serve")
    require("httpx", "test")
    from found.serve import create_app
    from serve_support import asgi_client, png

    app = create_app(model)

    async def go():
        async with asgi_client(app) as c:
            ready = await c.get("/readyz")
            seg = await c.post("/v1/segment", content=png(noise_image(80, 60, seed=2)))
            return ready, seg

    ready, seg = asyncio.run(go())
    assert ready.status_code == 200 and ready.json()["patch_size"] == 14
    assert seg.status_code == 200, seg.text


def test_video_is_segmented_frame_by_frame(files, tmp_path):
    av = require("av", "video")
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv444p"
        for i in range(4):
            img = np.asarray(noise_image(64, 48, seed=i))
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    r = run_cli(["segment", str(path), "-o", str(tmp_path / "out"), "--weights", str(files[0]), "--head", str(files[1]), *MODEL])
    assert r.code == 0, r.err
    assert any((tmp_path / "out").rglob("*"))


@pytest.mark.slow
def test_ray_output_equals_found_segment(files, tmp_path):
    ray = require("ray", "ray")
    from found.ray import segment_with_ray

    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        noise_image(64 + 8 * i, 48, seed=i).save(images / f"im{i}.png")
    ref = run_cli(["segment", str(images), "-o", str(tmp_path / "ref"), "--weights", str(files[0]), "--head", str(files[1]), *MODEL])
    assert ref.code == 0, ref.err
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        opts = {"model": "auto", "weights": str(files[0]), "head": str(files[1]), "num_heads": 6, "device": "cpu"}
        segment_with_ray([str(images)], tmp_path / "ray", opts, workers=1, batch_size=2, kinds=["mask"], chunks_per_task=1)
    finally:
        ray.shutdown()
    want = {p.name: p.read_bytes() for p in (tmp_path / "ref").rglob("*.png")}
    got = {p.name: p.read_bytes() for p in (tmp_path / "ray").rglob("*.png")}
    assert want and got == want
