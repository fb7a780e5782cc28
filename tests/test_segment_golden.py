"""``found segment`` on the engine writes, byte for byte, what it wrote before the engine existed
(tests/fixtures/segment_golden.json, recorded at commit 4e69a19), for images under --max-side,
whatever the number of workers and the batch size."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run_cli, write_tiny_checkpoint

GOLDEN = Path(__file__).parent / "fixtures" / "segment_golden.json"


def golden_inputs(images: Path, dst: Path) -> Path:
    """The bundled photos plus a JPEG crop, an RGBA image and an odd-sized grey image."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(images.glob("*.png")):
        shutil.copy(p, dst / p.name)
    a = np.array(Image.open(images / "coffee.png").convert("RGB"))
    Image.fromarray(a[40:240, 60:333]).save(dst / "coffee_crop.jpg", quality=90)
    rgba = np.dstack([a[:120, :160], np.tile(np.linspace(0, 255, 160, dtype=np.uint8), (120, 1))])
    Image.fromarray(rgba, "RGBA").save(dst / "alpha.png")
    Image.fromarray(a[:97, :131]).convert("L").save(dst / "grey_odd.png")
    return dst


@pytest.fixture(scope="module")
def setup(tmp_path_factory, images_dir):
    root = tmp_path_factory.mktemp("golden")
    return write_tiny_checkpoint(root / "ckpt"), golden_inputs(images_dir, root / "in")


@pytest.mark.parametrize("workers,batch_size", [("0", "1"), ("0", "4"), ("3", "1"), ("3", "4")])
def test_outputs_are_byte_identical_to_before_the_engine(setup, tmp_path, workers, batch_size):
    tiny, inputs = setup
    golden = json.loads(GOLDEN.read_text())
    out = tmp_path / "out"
    r = run_cli(["segment", str(inputs), "-o", str(out), "--all", "--workers", workers, "--batch-size", batch_size, *tiny.args()])
    assert r.code == 0, r.err
    written = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir()) if p.name != "boxes.json"}
    assert written == golden["outputs"]
    boxes = json.loads((out / "boxes.json").read_text().replace(str(inputs), "IN"))
    assert boxes == golden["boxes_json"]
