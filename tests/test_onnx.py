"""ONNX export and the ONNX Runtime model (:mod:`found.export`) against the PyTorch model.

One exported file (parity tiny ViT + a seeded random head) serves every size; ONNX Runtime's
logits must be within 1e-4 of PyTorch's, and its binary masks identical except at ties: pixels
whose PyTorch probability is within ``TIE`` of 0.5, where a 1e-4 logit difference may flip the
``> 0.5`` decision (the coarse masks likewise at cosine ≈ τ).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agreement import assert_masks_agree, assert_same_box
from conftest import require, structured_head, tiny_vit

require("onnx", "onnx")
require("onnxruntime", "onnx")

from helpers import noise_image, run_cli, tiny  # noqa: E402,F401  (fixture)

from found import Found, FoundHead, OnnxFound, discover_background, load_onnx  # noqa: E402
from found.errors import FoundError  # noqa: E402
from found.hub.build import save_head  # noqa: E402
from found.export.onnx import (  # noqa: E402
    FORMAT, OPSET, FoundOnnxGraph, OnnxFileError, export_onnx, head_sha256, quantize_onnx_int8, read_info,
)

LOGIT_ATOL = 1e-4
COS_TIE = 1e-4  # |cos − τ| below this is a tie of the coarse masks: the patch may go either way
pytestmark = pytest.mark.slow
#: (height, width) of the inputs: the native 224² grid, a wide one, odd sizes (padded), a single patch.
SIZES = [(224, 224), (320, 480), (200, 333), (97, 61), (8, 8)]


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


@pytest.fixture(scope="module")
def head():
    torch.manual_seed(3)
    h = FoundHead(96).eval()
    with torch.no_grad():  # a head whose logits straddle 0 on these keys (masks with both classes)
        h.decoder.weight.mul_(4.0)
    return h


@pytest.fixture(scope="module")
def files(tmp_path_factory, vit, head) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    return {
        "head": export_onnx(vit, head, d / "tiny.onnx", model="parity-tiny", tau=0.3),
        "coarse": export_onnx(vit, None, d / "tiny-coarse.onnx", model="parity-tiny", tau=0.25),
    }


@pytest.fixture(scope="module")
def torch_model(vit, head) -> Found:
    return Found(vit, head, device="cpu", precision="fp32")  # the export is fp32


@pytest.fixture(scope="module")
def ort_model(files) -> OnnxFound:
    return load_onnx(files["head"], "cpu")


@pytest.fixture(scope="module")
def photos(images_dir) -> list[np.ndarray]:
    """The bundled photos, longer side 320 px (the CPU time of the tests stays small)."""
    from found.io.images import read_image

    return [read_image(p, max_side=320).rgb() for p in sorted(images_dir.glob("*.png"))]


def _images(hw: tuple[int, int], n: int = 2) -> list[np.ndarray]:
    return [np.array(noise_image(hw[1], hw[0], seed=s)) for s in range(n)]


def _assert_masks_equal_except_ties(ref, got) -> None:
    """Binary masks identical except where the reference probability is a tie at 0.5; patch masks
    and boxes likewise (tests/agreement.py); soft masks within 1e-4."""
    assert_masks_agree(got.mask, ref.mask, ref.soft, "ONNX mask")
    assert_masks_agree(got.patch_mask, ref.patch_mask, ref.patch_probs, "ONNX patch mask", max_ties=1.0)
    assert_same_box(got.box, ref.box, ref.patch_probs, ref.mask.shape, ref.patch, "ONNX box")
    assert np.abs(ref.soft - got.soft).max() < 1e-4


def _coarse_ties(model: Found, im: np.ndarray, tau: float) -> tuple[torch.Tensor, np.ndarray]:
    """Patches (grid) and pixels (image) of ``im`` whose cosine to the seed is a tie with τ."""
    f = model.features(model.input_batch([im]))
    cos = discover_background(f.cls_attention, f.keys, f.grid_hw, tau=tau).cos_to_seed.reshape(f.grid_hw)
    ties = (cos - tau).abs() <= COS_TIE
    p = model.patch_size
    pixels = np.repeat(np.repeat(ties.numpy(), p, axis=0), p, axis=1)[: im.shape[0], : im.shape[1]]
    return ties, pixels


def _assert_coarse_agree(ref_model: Found, got_model, im: np.ndarray, tau: float) -> None:
    """Coarse logits and masks identical except at patches whose cosine is a tie with τ."""
    patch_ties, pixel_ties = _coarse_ties(ref_model, im, tau)
    x = ref_model.input_batch([im])
    ref, got = ref_model.patch_logits(x)[0, 0], got_model.patch_logits(x)[0, 0]
    assert set(got.unique().tolist()) <= {-1.0, 1.0} and 0 < (got > 0).float().mean() < 1
    assert not ((ref != got) & ~patch_ties).any(), "coarse masks differ away from cos = tau"
    differ = ref_model.predict(im)[0].mask != got_model.predict(im)[0].mask
    assert not (differ & ~pixel_ties).any(), "coarse pixel masks differ away from cos = tau"


# ---------------------------------------------------------------------- the graph
@pytest.mark.numerics
@pytest.mark.parametrize("hw", [(28, 28), (29, 28), (30, 40), (25, 42), (1, 1), (2, 50), (60, 17)])
def test_traceable_position_encoding_matches_the_backbone(vit, hw) -> None:
    graph = FoundOnnxGraph(vit)
    with torch.no_grad():
        ref = vit.interpolate_pos_encoding(*hw)
        got = graph.pos_encoding(*hw)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=5e-6, rtol=0)
    if hw == (28, 28):  # the native grid is the embedding itself, not a resampling of it
        assert torch.equal(got, vit.pos_embed)


def test_export_metadata_and_opset(files, head) -> None:
    import onnx

    info = read_info(files["head"])
    assert (info.patch_size, info.embed_dim, info.num_heads, info.model) == (8, 96, 6, "parity-tiny")
    assert info.metadata["format"] == FORMAT and not info.coarse and info.tau == 0.3
    assert info.head_sha256 == head_sha256(head) and len(info.head_sha256) == 64
    assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)
    coarse = read_info(files["coarse"])
    assert coarse.coarse and coarse.head_sha256 == "" and coarse.tau == 0.25
    proto = onnx.load(str(files["head"]))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= OPSET
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]


# ---------------------------------------------------------------------- parity with torch
@pytest.mark.numerics
@pytest.mark.parametrize("hw", SIZES)
def test_onnx_runtime_logits_and_features_match_torch(torch_model, ort_model, hw) -> None:
    x = torch_model.input_batch(_images(hw))
    ref_f, got_f = torch_model.features(x), ort_model.features(x)
    assert got_f.grid_hw == ref_f.grid_hw
    torch.testing.assert_close(got_f.cls_attention, ref_f.cls_attention, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_f.keys, ref_f.keys, atol=1e-4, rtol=1e-4)
    ref, got = torch_model.patch_logits(x), ort_model.patch_logits(x)
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert (got - ref).abs().max().item() <= LOGIT_ATOL


@pytest.mark.numerics
@pytest.mark.parametrize("hw", SIZES)
def test_onnx_runtime_masks_match_torch(torch_model, ort_model, hw) -> None:
    images = _images(hw, 3)
    for ref, got in zip(torch_model.predict(images), ort_model.predict(images)):
        _assert_masks_equal_except_ties(ref, got)
        assert np.array_equal(ref.patch_mask, got.patch_mask)
        assert (ref.box is None) == (got.box is None) and (ref.box is None or np.array_equal(ref.box, got.box))


@pytest.mark.numerics
def test_onnx_runtime_masks_match_torch_on_the_photos(torch_model, ort_model, photos) -> None:
    refs, gots = torch_model.predict(photos), ort_model.predict(photos)
    assert any(0 < r.mask.mean() < 1 for r in refs), "the test head should give masks with both classes"
    for ref, got in zip(refs, gots):
        _assert_masks_equal_except_ties(ref, got)


@pytest.mark.numerics
def test_attention_slices_do_not_change_the_numbers(vit, head, ort_model, tmp_path) -> None:
    one = load_onnx(export_onnx(vit, head, tmp_path / "one.onnx", attention_chunks=1), "cpu")
    assert read_info(one.core.path).metadata["attention_chunks"] == "1"
    assert read_info(ort_model.core.path).metadata["attention_chunks"] == "8"
    for hw in [(320, 480), (16, 8)]:  # 2 patches in 8 slices: most slices are empty
        x = ort_model.input_batch(_images(hw, 1))
        torch.testing.assert_close(one.patch_logits(x), ort_model.patch_logits(x), atol=1e-5, rtol=0)


@pytest.mark.numerics
def test_batch_size_does_not_change_onnx_results(ort_model) -> None:
    images = _images((120, 160), 3)
    one = ort_model.patch_logits(ort_model.input_batch(images[:1]))
    three = ort_model.patch_logits(ort_model.input_batch(images))
    torch.testing.assert_close(three[:1], one, atol=1e-5, rtol=0)


@pytest.mark.numerics
def test_coarse_file_gives_the_torch_coarse_masks(vit, files, photos) -> None:
    ref_model = Found(vit, None, device="cpu", tau=0.25)
    got_model = load_onnx(files["coarse"], "cpu")
    assert got_model.coarse and got_model.tau == 0.25
    for im in photos + _images((200, 333), 1):
        _assert_coarse_agree(ref_model, got_model, im, 0.25)


@pytest.mark.numerics
def test_headed_file_also_runs_coarse(vit, files, photos) -> None:
    got = load_onnx(files["head"], "cpu", coarse=True)
    ref = Found(vit, None, device="cpu")
    assert got.coarse and got.tau == 0.3
    for im in photos:
        _assert_coarse_agree(ref, got, im, 0.3)


# ---------------------------------------------------------------------- int8
@pytest.fixture(scope="module")
def structured(vit, photos, tmp_path_factory) -> tuple[Found, Path]:
    """A head along the coarse masks' object/background key direction (masks follow image content,
    as a trained head's do; see tests/test_precision.py), and its fp32 ONNX export."""
    head = structured_head(vit, photos)
    path = export_onnx(vit, head, tmp_path_factory.mktemp("int8") / "structured.onnx")
    return Found(vit, head, device="cpu", precision="fp32"), path


@pytest.mark.numerics
def test_int8_file_masks_reach_iou_099_against_fp32(structured, photos) -> None:
    from found.export.runtime import int8_accepted, predictor_agreement

    torch_fp32, fp32 = structured
    int8 = quantize_onnx_int8(fp32, fp32.with_name("structured.int8.onnx"))
    info = read_info(int8)
    assert info.quantization == "int8-dynamic-mlp" and info.head_sha256 == read_info(fp32).head_sha256
    q = load_onnx(int8, "cpu")
    assert q.precision == "int8"
    x = q.input_batch(photos[:1])
    assert not torch.equal(q.patch_logits(x), load_onnx(fp32, "cpu").patch_logits(x)), "int8 should change the numbers"
    agree = predictor_agreement(load_onnx(fp32, "cpu"), q, photos)
    assert agree["images"] == 3 and agree["mask_iou_min"] >= 0.99 and int8_accepted(agree)
    assert predictor_agreement(torch_fp32, load_onnx(fp32, "cpu"), photos)["mask_iou_min"] >= 0.999


def test_quantising_a_quantised_file_is_refused(structured, tmp_path) -> None:
    _, fp32 = structured
    once = quantize_onnx_int8(fp32, tmp_path / "q.onnx")
    with pytest.raises(OnnxFileError, match="already quantised"):
        quantize_onnx_int8(once, tmp_path / "qq.onnx")
    assert not (tmp_path / "qq.onnx").exists()


# ---------------------------------------------------------------------- bad files
def _one_line_error(fn, match: str) -> str:
    with pytest.raises(OnnxFileError, match=match) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, FoundError)
    return msg


def test_missing_file_is_a_one_line_error(tmp_path) -> None:
    msg = _one_line_error(lambda: load_onnx(tmp_path / "nope.onnx", "cpu"), "not found")
    assert "nope.onnx" in msg


def test_corrupt_file_is_a_one_line_error(tmp_path, files) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a protobuf at all" * 50)
    _one_line_error(lambda: load_onnx(garbage, "cpu"), "garbage.onnx: not a usable ONNX file")
    cut = tmp_path / "truncated.onnx"
    cut.write_bytes(files["head"].read_bytes()[:5000])
    _one_line_error(lambda: load_onnx(cut, "cpu"), "truncated.onnx: not a usable ONNX file")
    _one_line_error(lambda: load_onnx(tmp_path, "cpu"), "not a file")


def test_onnx_file_without_found_metadata_is_refused(tmp_path) -> None:
    other = tmp_path / "other.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 1, 1), (torch.zeros(1, 3, 8, 8),), str(other), dynamo=False,
                      input_names=["image"], output_names=["logits"])
    _one_line_error(lambda: load_onnx(other, "cpu"), "not a FOUND ONNX file")
    _one_line_error(lambda: read_info(other), "not a FOUND ONNX file")


def test_file_signature_must_match_its_metadata(tmp_path, files) -> None:
    import onnx

    from found.export.onnx import set_metadata

    proto = onnx.load(str(files["coarse"]))
    set_metadata(proto, {"coarse": "0"})  # claims a head, but has no logits output
    bad = tmp_path / "liar.onnx"
    onnx.save(proto, str(bad))
    _one_line_error(lambda: load_onnx(bad, "cpu"), "graph has inputs")


def test_mismatched_requests_are_one_line_errors(files, head) -> None:
    _one_line_error(lambda: load_onnx(files["head"], "cpu", expect_patch_size=16), "patch size 8 in the file, 16 requested")
    _one_line_error(lambda: load_onnx(files["head"], "cpu", expect_model="dino-vits8"), "exported from model 'parity-tiny'")
    _one_line_error(lambda: load_onnx(files["coarse"], "cpu", coarse=False), "exported without a head")
    other = FoundHead(96)
    _one_line_error(lambda: load_onnx(files["head"], "cpu", expect_head_sha256=head_sha256(other)), "another head")
    assert load_onnx(files["head"], "cpu", expect_patch_size=8, expect_head_sha256=head_sha256(head)).patch_size == 8


def test_unpadded_input_is_refused(ort_model) -> None:
    with pytest.raises(ValueError, match="multiples of 8"):
        ort_model.patch_logits(torch.zeros(1, 3, 20, 24))


# ---------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def cli_file(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "found.onnx"
    r = run_cli(["export", "onnx", "-o", str(out), *tiny.args()])
    assert r.code == 0, r.err
    assert "wrote" in r.out and out.is_file()
    return out


def test_cli_export_writes_a_file_for_the_given_model(cli_file, tiny) -> None:
    from found.hub.build import load_head

    info = read_info(cli_file)
    assert (info.model, info.patch_size, info.embed_dim, info.coarse) == ("auto", 8, 64, False)
    assert info.head_sha256 == head_sha256(load_head("auto", tiny.head, in_dim=64))
    assert not list(cli_file.parent.glob("*.part"))


@pytest.mark.numerics
def test_cli_segment_with_onnx_runtime_matches_torch(cli_file, tiny, images_dir, tmp_path) -> None:
    r_torch = run_cli(["segment", str(images_dir), "-o", str(tmp_path / "torch"), "--mask", "--soft", *tiny.args()])
    r_onnx = run_cli(["segment", str(images_dir), "-o", str(tmp_path / "onnx"), "--mask", "--soft", "--onnx", str(cli_file),
                      "--head", str(tiny.head), "--no-progress", "--device", "cpu"])
    assert r_torch.code == 0 and r_onnx.code == 0, r_onnx.err
    masks = sorted((tmp_path / "torch").glob("*_mask.png"))
    assert len(masks) == 3
    for m in masks:
        a = np.array(Image.open(m))
        b = np.array(Image.open(tmp_path / "onnx" / m.name))
        soft = np.array(Image.open(tmp_path / "torch" / m.name.replace("_mask", "_soft"))).astype(np.float32)
        soft = soft / (65535.0 if soft.max() > 255 else 255.0)
        assert not ((a != b) & (np.abs(soft - 0.5) > 2 / 255)).any(), m.name


def test_cli_runtime_onnx_errors_are_one_line(cli_file, tiny, images_dir, tmp_path) -> None:
    out = str(tmp_path / "out")
    bad = tmp_path / "bad.onnx"
    bad.write_text("not onnx")
    cases = [
        (["--onnx", str(tmp_path / "missing.onnx")], "ONNX file not found"),
        (["--onnx", str(bad)], "not a usable ONNX file"),
        (["--runtime", "onnx"], "needs --onnx FILE"),
        (["--onnx", str(cli_file), "--model", "dino-vits16"], "patch size 8 in the file, 16 requested"),
        (["--onnx", str(cli_file), "--weights", str(tiny.vit)], "--weights is not used with --runtime onnx"),
        (["--onnx", str(cli_file), "--precision", "int8"], "--precision is for the torch runtime"),
        (["--onnx", str(cli_file), "--runtime", "torch"], "drop --runtime torch"),
    ]
    for extra, match in cases:
        r = run_cli(["segment", str(images_dir), "-o", out, "--no-progress", "--device", "cpu", *extra])
        assert r.code != 0 and match in r.err, (extra, r.err)
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    other = tmp_path / "other_head.pt"
    save_head(FoundHead(64), other)
    r = run_cli(["segment", str(images_dir), "-o", out, "--no-progress", "--onnx", str(cli_file), "--head", str(other)])
    assert r.code == 1 and "another head" in r.err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_cli_int8_export_is_checked_against_fp32(tiny, images_dir, tmp_path, monkeypatch) -> None:
    out = tmp_path / "m.onnx"
    r = run_cli(["export", "onnx", "-o", str(out), "--int8", "--check-images", str(images_dir), *tiny.args()])
    assert r.code == 0, r.err
    assert "mask IoU vs fp32 on 3 images" in r.out and (tmp_path / "m.int8.onnx").is_file()
    assert read_info(tmp_path / "m.int8.onnx").quantization == "int8-dynamic-mlp"
    import found.export.runtime as runtime

    monkeypatch.setattr(runtime, "MIN_INT8_IOU", 1.01)  # no file can pass: the rule must reject it
    r = run_cli(["export", "onnx", "-o", str(tmp_path / "n.onnx"), "--int8", str(tmp_path / "n8.onnx"),
                 "--check-images", str(images_dir), *tiny.args()])
    assert r.code == 2 and "int8 rejected" in r.err and len(r.err.strip().splitlines()) == 1
    assert (tmp_path / "n.onnx").is_file() and not (tmp_path / "n8.onnx").exists()


def test_cli_export_usage_errors(tiny, tmp_path) -> None:
    r = run_cli(["export", "onnx", "-o", str(tmp_path / "no" / "such" / "dir.onnx"), *tiny.args()])
    assert r.code == 2 and "output folder does not exist" in r.err
    r = run_cli(["export", "onnx", "-o", str(tmp_path / "a.onnx"), "--check-images", str(tmp_path), *tiny.args()])
    assert r.code == 2 and "add --int8" in r.err
    r = run_cli(["export", "onnx", "-o", str(tmp_path / "a.onnx"), "--precision", "bf16", *tiny.args()])
    assert r.code == 2 and "fp32" in r.err
    assert not list(tmp_path.glob("*.onnx"))
    assert run_cli(["export"]).code == 2


@pytest.mark.numerics
def test_cli_coarse_export_runs_only_coarse(tiny, images_dir, tmp_path) -> None:
    f = tmp_path / "coarse.onnx"
    assert run_cli(["export", "onnx", "-o", str(f), "--coarse", *tiny.args()]).code == 0
    assert read_info(f).coarse
    base = ["segment", str(images_dir), "--no-progress", "--device", "cpu", "--onnx", str(f)]
    r = run_cli([*base, "-o", str(tmp_path / "a")])
    assert r.code == 1 and "exported without a head" in r.err
    r = run_cli([*base, "-o", str(tmp_path / "b"), "--coarse"])
    assert r.code == 0, r.err
    r_torch = run_cli(["segment", str(images_dir), "-o", str(tmp_path / "c"), "--coarse", *tiny.args()])
    assert r_torch.code == 0
    from found import build_found

    ref_model = build_found("auto", weights=tiny.vit, coarse=True, device="cpu", progress=False)
    masks = sorted((tmp_path / "c").glob("*_mask.png"))
    assert len(masks) == 3
    for m in masks:
        im = np.array(Image.open(images_dir / m.name.replace("_mask", "")).convert("RGB"))
        _, ties = _coarse_ties(ref_model, im, ref_model.tau)
        differ = np.array(Image.open(m)) != np.array(Image.open(tmp_path / "b" / m.name))
        assert not (differ & ~ties).any(), m.name


def test_found_bench_images_measures_an_onnx_files_agreement(cli_file, tiny, images_dir, tmp_path, capsys) -> None:
    """``found bench --images DIR --onnx FILE`` puts the file's mask agreement with the eager fp32
    baseline of the same weights beside the torch paths' (the check int8 files must pass)."""
    import json

    from found.cli.main import main

    out = tmp_path / "r.json"
    # --no-profile: the profile's matmul-share target depends on the machine's load, not on agreement
    args = ["bench", "--device", "cpu", "--precision", "fp32", "--no-model", "--no-folder", "--no-profile", "--weights", str(tiny.vit),
            "--head", str(tiny.head), "--images", str(images_dir), "--onnx", str(cli_file), "--json", str(out), "--targets"]
    assert main(args) == 0, capsys.readouterr()
    rows = {r["path"]: r for r in json.loads(out.read_text())["results"] if r["bench"] == "agreement"}
    assert set(rows) == {"fast-fp32", f"onnx-{cli_file.stem}"}
    onnx_row = rows[f"onnx-{cli_file.stem}"]
    assert onnx_row["images"] == 3 and onnx_row["mask_iou_min"] >= 0.99
    assert "mask IoU vs fp32" in capsys.readouterr().out
