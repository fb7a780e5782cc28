"""A tiny DINOv2-with-registers model through every CLI surface: step 1, train, segment with the
trained head, ONNX export and segmenting with the ONNX file."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require
from dinov2_support import REPO_DINOV2, load_cases, model_state
from found.hub.build import load_head
from helpers import run_cli


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("dinov2_e2e")
    weights = d / "dinov2_tiny_reg4.pth"
    torch.save(model_state(load_cases(REPO_DINOV2 / "dinov2_tiny_reg4_cases.npz")), weights)
    images = d / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(60, 75), (90, 64), (70, 70)]):
        a = rng.integers(0, 120, size=(h, w, 3), dtype=np.uint8)
        a[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (230, 60, 40)
        Image.fromarray(a).save(images / f"im{i}.png")
    return d, weights, images


MODEL = ["--model", "auto", "--num-heads", "6", "--device", "cpu", "--no-progress"]


@pytest.mark.slow
def test_tiny_dinov2_reg_segment_train_export_onnx(data, tmp_path):
    from found.cli.main import main

    d, weights, images = data
    coarse = run_cli(["segment", str(images), "-o", str(tmp_path / "coarse"), "--coarse", "--weights", str(weights), *MODEL])
    assert coarse.code == 0, coarse.err
    assert len(list((tmp_path / "coarse").rglob("*.png"))) >= 3

    run = tmp_path / "run"
    args = ["train", "--data-dir", str(images), "--out", str(run), "--weights", str(weights), *MODEL,
            "--max-iter", "2", "--batch-size", "2", "--num-workers", "0", "--set", "crop_size=42", "--set", "stop_bkg_loss=1"]
    assert main(args) == 0
    head = load_head("auto", run / "head.pt", in_dim=96)
    assert sum(p.numel() for p in head.parameters()) == 97  # 1×1 conv over the 96-d keys + bias
    assert json.loads((run / "config.json").read_text())["config"]["max_iter"] == 2

    seg = run_cli(["segment", str(images), "-o", str(tmp_path / "seg"), "--weights", str(weights), "--head", str(run / "head.pt"),
                   "--mask", "--soft", *MODEL])
    assert seg.code == 0, seg.err

    require("onnxruntime", "onnx")
    onnx_file = tmp_path / "tiny_reg.onnx"
    exp = run_cli(["export", "onnx", "-o", str(onnx_file), "--weights", str(weights), "--head", str(run / "head.pt"), *MODEL])
    assert exp.code == 0, exp.err
    via_onnx = run_cli(["segment", str(images), "-o", str(tmp_path / "onnx"), "--mask", "--soft", "--onnx", str(onnx_file),
                        "--device", "cpu", "--no-progress"])
    assert via_onnx.code == 0, via_onnx.err
    pngs = sorted((tmp_path / "seg").rglob("*.png"))
    assert len(pngs) >= 6  # mask + soft per image
    for p in pngs:
        q = tmp_path / "onnx" / p.relative_to(tmp_path / "seg")
        a, b = np.asarray(Image.open(p)).astype(int), np.asarray(Image.open(q)).astype(int)
        assert a.shape == b.shape and np.abs(a - b).max() <= 2 if "soft" in p.name else (a != b).mean() <= 0.01, p.name


def test_transformers_folder_runs_step_one(tmp_path, data):
    require("safetensors", "hf")
    _, _, images = data
    r = run_cli(["segment", str(images), "-o", str(tmp_path / "hf"), "--coarse", "--model", "auto",
                 "--weights", str(REPO_DINOV2 / "hf_tiny_reg4"), "--device", "cpu", "--no-progress"])
    assert r.code == 0, r.err
    assert len(list((tmp_path / "hf").rglob("*.png"))) >= 3
