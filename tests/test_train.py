"""``found train``: config, augmentations, data order, the loop, checkpoints/resume and the CLI."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require
from found.model.backbone import VisionTransformer
from found.errors import FoundError, WeightsError
from found.hub.build import read_head
from found.model.head import FoundHead
from found.train import TrainConfig, extract_features, train
from found.train.augment import augment, blur_kernel_size, gaussian_blur, gaussian_kernel, shorter_side_size
from found.train.checkpoint import load_state
from found.train.config import load_config_file, parse_overrides
from found.train.data import EpochBatchSampler, Position, TrainImages, epoch_order, find_images
from found.train.step import crop_to_patch

AUTHORS_YAML = """\
model:
  arch: vit_small
  patch_size: 8
  pre_training: dino
found:
  bkg_th: 0.3
  feats: k
training:
  dataset: DUTS-TR
  dataset_set: null
  seed: 0
  max_iter: 500
  nb_epochs: 3
  batch_size: 50
  lr0: 5e-2
  step_lr_size: 50
  step_lr_gamma: 0.95
  w_bs_loss: 1.5
  w_self_loss: 4.0
  stop_bkg_loss: 100
  crop_size: 224
  scale_range: [0.1, 3.0]
  photometric_aug: gaussian_blur
  proba_photometric_aug: 0.5
  cropping_strategy: random_scale
evaluation:
  type: saliency
  datasets: [DUT-OMRON, ECSSD]
  freq: 50
"""


# ---------------------------------------------------------------------------------- fixtures
def _write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Random-sized RGB images with a bright rectangle on a noisy background."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(36, 80, size=2))
        a = rng.integers(0, 120, size=(h, w, 3), dtype=np.uint8)
        y0, x0 = int(rng.integers(0, h // 3)), int(rng.integers(0, w // 3))
        a[y0 : y0 + h // 2, x0 : x0 + w // 2] = (230, 40 + 20 * i % 200, 40)
        p = folder / f"img_{i:02d}.png"
        Image.fromarray(a).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("train_images")
    _write_images(d, 6)
    return d


def small_vit() -> VisionTransformer:
    torch.manual_seed(1234)
    return VisionTransformer(patch_size=8, embed_dim=64, depth=2, num_heads=2).eval()


def small_cfg(**kw) -> TrainConfig:
    base = dict(max_iter=5, batch_size=3, crop_size=40, stop_bkg_loss=2, num_workers=0,
                checkpoint_every=0, save_model_freq=0, visualize_every=0, eval_every=0)
    base.update(kw)
    return TrainConfig(**base)


def _same_head(a: FoundHead, b: FoundHead) -> bool:
    return torch.equal(a.decoder.weight, b.decoder.weight) and torch.equal(a.decoder.bias, b.decoder.bias)


# ---------------------------------------------------------------------------------- config
def test_defaults_are_the_authors_yaml(tmp_path):
    require("yaml", "yaml")
    p = tmp_path / "found_DUTS-TR.yaml"
    p.write_text(AUTHORS_YAML)
    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **load_config_file(p)})
    assert cfg == TrainConfig()
    assert (cfg.lr0, cfg.batch_size, cfg.max_iter, cfg.step_lr_size, cfg.step_lr_gamma) == (0.05, 50, 500, 50, 0.95)
    assert cfg.scale_range == (0.1, 3.0) and cfg.crop_size == 224 and cfg.photometric_aug == "gaussian_blur"
    assert cfg.eval_every == 50 and cfg.bkg_th == 0.3


def test_config_overrides_and_errors(tmp_path):
    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **parse_overrides(["lr0=0.01", "max-iter=7", "scale_range=0.5,2", "reweight=false"])})
    assert (cfg.lr0, cfg.max_iter, cfg.scale_range, cfg.reweight) == (0.01, 7, (0.5, 2.0), False)
    (tmp_path / "c.json").write_text(json.dumps({"batch_size": 4}))
    assert load_config_file(tmp_path / "c.json") == {"batch_size": 4}
    with pytest.raises(FoundError, match="unknown key"):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(FoundError, match="batch_size"):
        TrainConfig.from_dict({"batch_size": "many"})
    with pytest.raises(FoundError, match="cropping_strategy"):
        TrainConfig(cropping_strategy="zoom")
    with pytest.raises(FoundError, match="KEY=VALUE"):
        parse_overrides(["lr0"])


# ---------------------------------------------------------------------------------- augmentations
def test_shorter_side_resize_rule():
    assert shorter_side_size(300, 400, 224) == (224, 298)  # int(400/300·224) = 298
    assert shorter_side_size(500, 375, 224) == (298, 224)
    assert shorter_side_size(100, 100, 224) == (224, 224)
    assert blur_kernel_size(224, 224) == 23 and blur_kernel_size(40, 60) == 5


def test_gaussian_blur_matches_direct_reflect101_convolution():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(12, 9, 3), dtype=np.uint8)
    k = gaussian_kernel(5, 1.3)
    assert k.sum() == pytest.approx(1.0) and np.allclose(k, k[::-1])
    ref = np.zeros(img.shape)
    for y in range(12):
        for x in range(9):
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    yy, xx = abs(y + dy), abs(x + dx)  # reflect-101: -1 → 1, n → n-2
                    yy = 2 * 11 - yy if yy > 11 else yy
                    xx = 2 * 8 - xx if xx > 8 else xx
                    ref[y, x] += k[dy + 2] * k[dx + 2] * img[yy, xx]
    np.testing.assert_array_equal(gaussian_blur(img, 5, 1.3), np.clip(np.rint(ref), 0, 255).astype(np.uint8))
    flat = np.full((10, 10, 3), 77, np.uint8)
    np.testing.assert_array_equal(gaussian_blur(flat, 7, 2.0), flat)


def test_augment_is_seeded_and_sized():
    rng = np.random.default_rng(3)
    im = Image.fromarray(rng.integers(0, 256, size=(90, 60, 3), dtype=np.uint8))
    cfg = TrainConfig(crop_size=48)
    a = augment(im, np.random.default_rng([1, 2]), cfg)
    b = augment(im, np.random.default_rng([1, 2]), cfg)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8 and a.flags.writeable
    np.testing.assert_array_equal(a, b)
    others = [augment(im, np.random.default_rng([1, s]), cfg) for s in range(3, 8)]
    assert any(not np.array_equal(a, o) for o in others)
    for strategy in ("random_crop", "random_crop_and_hflip", "center_crop"):
        out = augment(im, np.random.default_rng(0), TrainConfig(crop_size=48, cropping_strategy=strategy))
        assert out.shape == (48, 48, 3)
    # without blur, random_scale is resize(shorter)→rescale→resize(crop): identity on a flat image
    flat = Image.new("RGB", (70, 50), (10, 200, 90))
    np.testing.assert_array_equal(augment(flat, np.random.default_rng(0), cfg), np.full((48, 48, 3), (10, 200, 90), np.uint8))


# ---------------------------------------------------------------------------------- data order
def test_batch_sampler_epochs_partial_batch_and_resume():
    s = EpochBatchSampler(n=7, batch_size=3, seed=5, epochs=2)
    batches = list(s)
    assert len(batches) == len(s) == 6 and [len(b) for b in batches] == [3, 3, 1, 3, 3, 1]
    for e in range(2):
        idx = [k[2] for b in batches[3 * e : 3 * e + 3] for k in b]
        assert sorted(idx) == list(range(7)) and all(k[0] == e for b in batches[3 * e : 3 * e + 3] for k in b)
        assert idx == list(epoch_order(7, 5, e))
    assert epoch_order(7, 5, 0).tolist() != epoch_order(7, 5, 1).tolist()
    tail = list(EpochBatchSampler(n=7, batch_size=3, seed=5, epochs=2, start=Position(0, 2)))
    assert tail == batches[2:]
    assert s.advance(Position(0, 2)) == Position(1, 0) and s.advance(Position(1, 0)) == Position(1, 1)
    assert len(list(EpochBatchSampler(n=7, batch_size=3, seed=5, epochs=1, drop_last=True))) == 2


def test_find_images_duts_layout_and_errors(tmp_path):
    _write_images(tmp_path / "DUTS" / "DUTS-TR-Image", 2)
    _write_images(tmp_path / "DUTS" / "DUTS-TR-Mask", 3, seed=1)
    (tmp_path / "DUTS" / "DUTS-TR-Image" / "._img_00.png").write_bytes(b"macOS resource fork")
    files = find_images(tmp_path)
    assert [f.parent.name for f in files] == ["DUTS-TR-Image"] * 2 and all(not f.name.startswith(".") for f in files)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FoundError, match="no images"):
        find_images(tmp_path / "empty")
    with pytest.raises(FoundError, match="not a folder"):
        find_images(tmp_path / "missing")


def test_dataset_sample_is_deterministic(image_dir):
    ds = TrainImages(find_images(image_dir), small_cfg())
    a, e, b, i = ds[(1, 0, 2)]
    assert a.dtype == torch.uint8 and a.shape == (3, 40, 40) and (e, b, i) == (1, 0, 2)
    assert torch.equal(a, ds[(1, 0, 2)][0])
    assert not torch.equal(a, ds[(2, 0, 2)][0])  # another epoch, another augmentation


# ---------------------------------------------------------------------------------- features
def test_training_path_crops_to_the_patch_grid():
    vit = small_vit()
    x = torch.randn(2, 3, 50, 43)
    assert crop_to_patch(x, 8).shape[-2:] == (48, 40)
    f = extract_features(vit, x)
    ref = vit.found_features(x[..., :48, :40])
    assert f.grid_hw == (6, 5) and f.keys.dtype == torch.float32 and not f.keys.requires_grad
    torch.testing.assert_close(f.keys, ref.keys)


# ---------------------------------------------------------------------------------- the loop
def test_train_end_to_end_outputs(image_dir, tmp_path):
    cfg = small_cfg(max_iter=4, checkpoint_every=2, save_model_freq=2, visualize_every=2)
    res = train(small_vit(), find_images(image_dir), cfg, tmp_path / "run", progress=False)
    out = tmp_path / "run"
    assert not res.interrupted and res.iterations_done == 5  # iterations 0…max_iter, as the authors
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 5 and rows[0].startswith("iter,")
    cols = [r.split(",") for r in rows[1:]]
    assert [int(c[0]) for c in cols] == list(range(5))
    assert [c[6] != "" for c in cols] == [True, True, False, False, False]  # coarse loss for n < stop_bkg_loss
    assert [c[7] != "" for c in cols] == [False, False, True, True, True]  # self loss afterwards
    head = read_head(res.head_path)
    assert _same_head(head, res.head)
    assert (out / "decoder_weights_niter2.pt").is_file() and (out / "decoder_weights_niter4.pt").is_file()
    raw = torch.load(res.head_path, weights_only=True)
    assert set(raw) == {"decoder"} and set(raw["decoder"]) == {"weight", "bias"}
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["iter_00000.png", "iter_00002.png", "iter_00004.png"]
    assert Image.open(out / "loss.png").size[0] > 100
    st = load_state(out / "checkpoint.pt")
    assert st.next_iter == 5 and st.position == Position(2, 1)  # 6 images / batch 3 = 2 batches per epoch
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 5
    with pytest.raises(FoundError, match="--resume"):
        train(small_vit(), find_images(image_dir), cfg, out, progress=False)


def test_training_takes_its_device_from_the_shared_helper(image_dir, tmp_path, monkeypatch):
    """``train(device=None)`` asks :mod:`found.runtime.device` (CUDA, then MPS, then CPU), as inference does."""
    import found.runtime.device as rt

    asked = []
    monkeypatch.setattr(rt, "default_device", lambda: asked.append(True) or torch.device("cpu"))
    train(small_vit(), find_images(image_dir), small_cfg(max_iter=0), tmp_path / "run", progress=False)
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    assert asked and info["device"] == "cpu" and info["precision"] == "fp32"


def test_resume_after_ctrl_c_is_bit_identical(image_dir, tmp_path):
    files = find_images(image_dir)
    cfg = small_cfg()
    full = train(small_vit(), files, cfg, tmp_path / "full", progress=False)

    def ctrl_c_at_2(res, stop):
        if res.n_iter == 2:
            os.kill(os.getpid(), signal.SIGINT)  # handled: finish the iteration, checkpoint, stop

    part = train(small_vit(), files, cfg, tmp_path / "cut", progress=False, on_step=ctrl_c_at_2)
    assert part.interrupted and part.iterations_done == 3 and part.head_path is None
    assert load_state(part.checkpoint_path).next_iter == 3
    assert not _same_head(part.head, full.head)
    resumed = train(small_vit(), files, cfg, tmp_path / "cut", progress=False, resume=True)
    assert not resumed.interrupted and resumed.iterations_done == full.iterations_done
    assert _same_head(resumed.head, full.head)
    assert _same_head(read_head(resumed.head_path), read_head(full.head_path))
    log_full = (tmp_path / "full" / "log.csv").read_text().splitlines()
    log_cut = (tmp_path / "cut" / "log.csv").read_text().splitlines()
    strip = lambda rows: [r.rsplit(",", 1)[0] for r in rows]  # drop the timing column
    assert strip(log_cut) == strip(log_full)


@pytest.mark.slow
def test_resume_after_crash_from_periodic_checkpoint_and_workers(image_dir, tmp_path):
    files = find_images(image_dir)
    cfg = small_cfg(checkpoint_every=2)
    full = train(small_vit(), files, cfg, tmp_path / "full", progress=False)

    def crash_at_3(res, stop):
        if res.n_iter == 3:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train(small_vit(), files, cfg, tmp_path / "crash", progress=False, on_step=crash_at_3)
    assert load_state(tmp_path / "crash" / "checkpoint.pt").next_iter == 2
    # resume in worker processes: the data stream does not depend on them
    resumed = train(small_vit(), files, cfg.replace(num_workers=2), tmp_path / "crash", progress=False, resume=True)
    assert _same_head(resumed.head, full.head)


def test_resume_refuses_other_settings_or_data(image_dir, tmp_path):
    files = find_images(image_dir)
    cfg = small_cfg(max_iter=1)
    train(small_vit(), files, cfg, tmp_path / "run", progress=False)
    with pytest.raises(FoundError, match="lr0"):
        train(small_vit(), files, cfg.replace(lr0=0.1), tmp_path / "run", progress=False, resume=True)
    with pytest.raises(FoundError, match="images changed"):
        train(small_vit(), files[:-1], cfg, tmp_path / "run", progress=False, resume=True)
    with pytest.raises(FoundError, match="no training checkpoint"):
        train(small_vit(), files, cfg, tmp_path / "nothing", progress=False, resume=True)
    # a longer schedule continues the finished run
    more = train(small_vit(), files, cfg.replace(max_iter=2), tmp_path / "run", progress=False, resume=True)
    assert more.iterations_done == 3


def test_unreadable_or_foreign_training_checkpoint_is_a_one_line_error(tmp_path):
    junk = tmp_path / "checkpoint.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint") as e:
        load_state(junk)
    assert isinstance(e.value, FoundError) and e.value.exit_code == 1  # the CLI words it, exit 1
    torch.save({"decoder": {"weight": torch.zeros(1, 4, 1, 1), "bias": torch.zeros(1)}}, junk)
    with pytest.raises(FoundError, match="not a `found train` checkpoint"):
        load_state(junk)


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_image_is_a_one_line_input_error(tmp_path, workers):
    from found.errors import InputError

    files = _write_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "img_01.png").write_bytes(b"not an image")
    with pytest.raises(InputError) as e:
        train(small_vit(), files, small_cfg(batch_size=3, num_workers=workers), tmp_path / "run", progress=False)
    assert "img_01.png" in str(e.value) and "\n" not in str(e.value)


def test_eval_hook_is_called_periodically(image_dir, tmp_path):
    seen = []

    def eval_fn(head, n_iter):
        assert not head.training
        seen.append(n_iter)
        return {"f_max": 0.5 + n_iter / 100}

    cfg = small_cfg(max_iter=4, eval_every=2, save_model_freq=2)
    train(small_vit(), find_images(image_dir), cfg, tmp_path / "run", progress=False, eval_fn=eval_fn)
    assert seen == [2, 4]
    lines = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines] == [2, 4] and lines[1]["f_max"] == pytest.approx(0.54)
    # --overwrite starts afresh: no stale evaluations or snapshots of the previous run remain
    train(small_vit(), find_images(image_dir), cfg.replace(max_iter=2), tmp_path / "run", progress=False, eval_fn=eval_fn, overwrite=True)
    lines = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines] == [2]
    assert sorted(p.name for p in (tmp_path / "run").glob("decoder_weights_*")) == ["decoder_weights_niter2.pt"]


# ---------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_train_then_segment(image_dir, tmp_path, capsys):
    from found.cli.main import main

    weights = tmp_path / "small.pth"
    torch.save(small_vit().state_dict(), weights)
    out = tmp_path / "run"
    args = ["train", "--data-dir", str(image_dir), "--out", str(out), "--weights", str(weights), "--model", "auto",
            "--num-heads", "2", "--device", "cpu", "--max-iter", "2", "--batch-size", "2", "--num-workers", "0",
            "--set", "crop_size=32", "--set", "stop_bkg_loss=1", "--no-progress"]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert (cfg["max_iter"], cfg["batch_size"], cfg["crop_size"], cfg["lr0"]) == (2, 2, 32, 0.05)
    head = out / "head.pt"
    assert head.is_file()
    assert main(args) == 2  # the run exists: refuse without --resume
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--resume", "--max-iter", "3"]) == 0
    assert load_state(out / "checkpoint.pt").next_iter == 4

    seg = tmp_path / "seg"
    rc = main(["segment", str(sorted(image_dir.iterdir())[0]), "-o", str(seg), "--weights", str(weights), "--model", "auto",
               "--num-heads", "2", "--head", str(head), "--device", "cpu", "--no-progress"])
    assert rc == 0 and any(seg.iterdir())


def test_cli_errors_are_one_line(tmp_path, capsys):
    from found.cli.main import main

    assert main(["train", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("found: error:") and "not a folder" in err and "\n" not in err
    assert main(["train", "--data-dir", str(tmp_path), "--set", "lr=3", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown key" in err and "\n" not in err


def test_cli_periodic_saliency_evaluation(image_dir, tmp_path):
    from found.cli.main import main

    ecssd = tmp_path / "sal" / "ECSSD"
    imgs = _write_images(ecssd / "images", 2, seed=7)
    (ecssd / "ground_truth_mask").mkdir()
    for p in imgs:
        w, h = Image.open(p).size
        m = np.zeros((h, w), np.uint8)
        m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
        Image.fromarray(m).save(ecssd / "ground_truth_mask" / p.name)
    weights = tmp_path / "small.pth"
    torch.save(small_vit().state_dict(), weights)
    out = tmp_path / "run"
    rc = main(["train", "--data-dir", str(image_dir), "--out", str(out), "--weights", str(weights), "--model", "auto",
               "--num-heads", "2", "--device", "cpu", "--max-iter", "2", "--batch-size", "2", "--num-workers", "0",
               "--set", "crop_size=32", "--set", "eval_every=2", "--eval-data-dir", str(tmp_path / "sal"), "--no-progress"])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [2] and 0.0 <= rows[0]["iou"] <= 1.0
