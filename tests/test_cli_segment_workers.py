"""``found segment --workers N``: decoding ahead and writing behind the model in threads changes
nothing but the speed — same outputs byte for byte, same report, same stop/Ctrl-C behaviour —
and memory stays bounded (read-ahead and pending writes). No timing is asserted."""
from __future__ import annotations

import errno
import json
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from found.io import render
from found.io import sinks as writers
from found import engine
from found.cli import segment
from helpers import leftovers, noise_image, run_cli, tiny  # noqa: F401  (fixture)


def _mixed_folder(d: Path) -> tuple[list[Path], list[Path]]:
    """Good images of several sizes and kinds interleaved (by name) with bad ones."""
    d.mkdir(parents=True)
    good = []
    for i, (w, h) in enumerate([(24, 24), (40, 24), (24, 24), (80, 40), (32, 48), (24, 24), (56, 32), (24, 24)]):
        p = d / f"g{i}.png"
        noise_image(w, h, seed=i).save(p)
        good.append(p)
    noise_image(32, 24, "RGBA", seed=9).save(d / "g8_alpha.png")  # file alpha kept in the cut-out
    frames = [noise_image(32, 24, seed=s).convert("P") for s in range(3)]
    frames[0].save(d / "g9_anim.gif", save_all=True, append_images=frames[1:])  # a note in the report
    noise_image(48, 40, seed=11).save(d / "g10.jpg", quality=90)
    good += [d / "g8_alpha.png", d / "g9_anim.gif", d / "g10.jpg"]
    png = (d / "g0.png").read_bytes()
    jpg = (d / "g10.jpg").read_bytes()
    bad = [d / "b1_empty.png", d / "b3_trunc.png", d / "b5_trunc.jpg", d / "b7_garbage.jpg", d / "g4b_speck.png"]
    bad[0].write_bytes(b"")
    bad[1].write_bytes(png[: len(png) // 2])
    bad[2].write_bytes(jpg[: len(jpg) // 3])
    bad[3].write_bytes(b"\xff\xd8\xff garbage")
    noise_image(4, 4).save(bad[4])  # smaller than a patch
    return good, bad


def _tree(folder: Path) -> dict[str, bytes]:
    """Every output under ``folder`` (not the run journal, which also says when it was started)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".found-journal.jsonl"}


def _segment(inputs: list[str], out: Path, tiny, *extra: str):
    return run_cli(["segment", *inputs, "-o", str(out), *extra, *tiny.args()])


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", ["1", "3"])
def test_workers_give_byte_identical_outputs_and_report(tmp_path: Path, tiny, batch_size: str) -> None:
    good, bad = _mixed_folder(tmp_path / "in")
    opts = ["--all", "--max-side", "64", "--batch-size", batch_size]
    r0 = _segment([str(tmp_path / "in")], tmp_path / "w0", tiny, *opts, "--workers", "0")
    r3 = _segment([str(tmp_path / "in")], tmp_path / "w3", tiny, *opts, "--workers", "3")
    assert r0.code == r3.code == 1
    assert r3.counts == (len(good), 0, len(bad), 0)
    assert "Traceback" not in r3.err
    for p in bad:  # every bad file is reported, and the run went on past it
        assert any(line.startswith(f"  failed: {p}: ") for line in r3.err.splitlines()), (p, r3.err)
    assert "truncated" in r3.err and "g9_anim.gif: animated GIF" in r3.err and "downscaled:" in r3.err
    assert r3.err == r0.err  # the same report, in the same order
    t0, t3 = _tree(tmp_path / "w0"), _tree(tmp_path / "w3")
    assert t3 == t0  # masks, soft masks, cut-outs, overlays and boxes.json, byte for byte
    assert len(t3) == 4 * len(good) + 1 and leftovers(tmp_path / "w3") == []
    files = [e["file"] for e in json.loads(t3["boxes.json"])["images"]]
    assert files == sorted(str(p) for p in good)  # deterministic order
    # a rerun with threads skips everything and rewrites boxes.json identically
    r = _segment([str(tmp_path / "in")], tmp_path / "w3", tiny, *opts, "--workers", "3")
    assert r.counts == (0, len(good), len(bad), 0)
    assert _tree(tmp_path / "w3") == t0


def test_workers_decode_and_write_off_the_main_thread(tmp_path: Path, tiny, monkeypatch) -> None:
    good, _ = _mixed_folder(tmp_path / "in")
    threads: dict[str, set[str]] = {"read": set(), "write": set()}
    real_read, real_write = engine.read_image, writers.ImageOutputs.write

    def read_image(*a, **k):
        threads["read"].add(threading.current_thread().name)
        return real_read(*a, **k)

    def write_outputs(*a, **k):
        threads["write"].add(threading.current_thread().name)
        return real_write(*a, **k)

    monkeypatch.setattr(engine, "read_image", read_image)
    monkeypatch.setattr(writers.ImageOutputs, "write", write_outputs)
    filters = list(warnings.filters)
    r = _segment([str(p) for p in good], tmp_path / "out", tiny, "--workers", "2")
    assert r.code == 0, r.err
    main = threading.main_thread().name
    assert threads["read"] and main not in threads["read"] and all(n.startswith("found-read") for n in threads["read"])
    assert threads["write"] and all(n.startswith("found-write") for n in threads["write"])
    assert warnings.filters == filters  # the decoding threads' warning filters do not leak
    threads = {"read": set(), "write": set()}
    r = _segment([str(p) for p in good], tmp_path / "out0", tiny, "--workers", "0")
    assert r.code == 0 and threads == {"read": {main}, "write": {main}}


def test_write_failures_in_the_writer_thread_are_reported(tmp_path: Path, tiny, monkeypatch) -> None:
    good, _ = _mixed_folder(tmp_path / "in")
    real_save, real_overlay = Image.Image.save, render.overlay_image
    where: set[str] = set()

    def save(self, fp, *a, **k):
        if "g2_" in str(fp):
            where.add(threading.current_thread().name)
            raise OSError(errno.EIO, "Input/output error")
        return real_save(self, fp, *a, **k)

    def overlay(rgb, mask, box):
        if rgb.shape[:2] == (48, 32):  # g4 only
            raise ValueError("bug on an odd image")
        return real_overlay(rgb, mask, box)

    monkeypatch.setattr(Image.Image, "save", save)
    monkeypatch.setattr(render, "overlay_image", overlay)
    out = tmp_path / "out"
    r = _segment([str(p) for p in good], out, tiny, "--mask", "--overlay", "--boxes", "--batch-size", "2", "--workers", "3")
    assert r.code == 1 and "Traceback" not in r.err
    assert where and threading.main_thread().name not in where  # the failure happened in a worker thread
    assert r.counts == (len(good) - 2, 0, 2, 0)
    assert f"failed: {good[2]}: cannot write outputs: Input/output error (nothing written for this image)" in r.err
    assert f"failed: {good[4]}: unexpected error while writing outputs (ValueError: bug on an odd image)" in r.err
    assert "stopped:" not in r.err  # an ordinary write error does not stop the run
    assert not list(out.glob("g2_*")) and not list(out.glob("g4_*")) and leftovers(out) == []
    assert len(list(out.glob("*_mask.png"))) == len(good) - 2
    assert len(json.loads((out / "boxes.json").read_text())["images"]) == len(good) - 2
    with pytest.raises(ValueError, match="odd image"):  # --debug: the worker's exception, raised
        _segment([str(good[4])], tmp_path / "dbg", tiny, "--overlay", "--workers", "3", "--debug")


@pytest.mark.parametrize("batch_size", ["1", "2"])
def test_disk_full_in_the_writer_stops_like_a_sequential_run(tmp_path: Path, tiny, monkeypatch, batch_size: str) -> None:
    good, _ = _mixed_folder(tmp_path / "in")
    real_save = Image.Image.save
    full = {"on": True}

    def save(self, fp, *a, **k):
        if full["on"] and "g3_" in str(fp):
            Path(fp).write_bytes(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", save)
    runs = {}
    for w in ["0", "3"]:
        out = tmp_path / f"w{w}"
        r = _segment([str(p) for p in good], out, tiny, "--mask", "--soft", "--boxes", "--batch-size", batch_size, "--workers", w)
        runs[w] = (r.code, r.err.replace(str(out), "OUT"), _tree(out))
        assert leftovers(out) == []
    assert runs["3"] == runs["0"]
    code, err, tree = runs["3"]
    assert code == 1 and "Traceback" not in err
    assert f"3 ok, 0 skipped (outputs exist), 1 failed, {len(good) - 4} not processed" in err
    assert "stopped: No space left on device in OUT" in err
    assert sorted(tree) == sorted(["boxes.json"] + [f"g{i}_{k}.png" for i in range(3) for k in ("mask", "soft")])
    full["on"] = False  # space is back: a threaded rerun finishes the rest
    r = _segment([str(p) for p in good], tmp_path / "w3", tiny, "--mask", "--soft", "--boxes", "--workers", "3")
    assert r.code == 0 and r.counts == (len(good) - 3, 3, 0, 0)
    r = _segment([str(p) for p in good], tmp_path / "ref", tiny, "--mask", "--soft", "--boxes", "--workers", "0")
    ref = _tree(tmp_path / "ref")
    assert _tree(tmp_path / "w3") == ref


def test_ctrl_c_with_workers_writes_what_was_predicted(tmp_path: Path, tiny, monkeypatch) -> None:
    from found.predictor import Found

    good, _ = _mixed_folder(tmp_path / "in")
    real = Found.predict
    calls = {"n": 0}

    def predict(self, images, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, images, *a, **k)

    monkeypatch.setattr(Found, "predict", predict)
    out = tmp_path / "out"
    r = _segment([str(p) for p in good], out, tiny, "--mask", "--boxes", "--batch-size", "2", "--workers", "3")
    assert r.code == 130
    assert r.counts == (4, 0, 0, len(good) - 4)
    assert "stopped: interrupted" in r.err and "Traceback" not in r.err
    assert sorted(p.name for p in out.glob("*_mask.png")) == [f"g{i}_mask.png" for i in range(4)]
    assert leftovers(out) == []
    assert [e["file"] for e in json.loads((out / "boxes.json").read_text())["images"]] == sorted(str(p) for p in good[:4])


def test_read_ahead_and_pending_writes_stay_bounded(tmp_path: Path, tiny, monkeypatch) -> None:
    from found.predictor import Found

    d = tmp_path / "in"
    d.mkdir()
    paths = []
    for i in range(14):
        paths.append(d / f"i{i:02d}.png")
        noise_image(24, 24, seed=i).save(paths[-1])
    lock = threading.Lock()
    count = {"read": 0, "written": 0, "predicted": 0}
    seen: list[tuple[int, int, int]] = []
    real_read, real_write, real_predict = engine.read_image, writers.ImageOutputs.write, Found.predict

    def read_image(*a, **k):
        with lock:
            count["read"] += 1
        return real_read(*a, **k)

    def write_outputs(*a, **k):
        time.sleep(0.1)  # writes slower than the model: the bound on pending writes must hold
        rec = real_write(*a, **k)
        with lock:
            count["written"] += 1
        return rec

    def predict(self, images, *a, **k):
        with lock:
            seen.append((count["read"], count["predicted"], count["written"]))
        out = real_predict(self, images, *a, **k)
        count["predicted"] += len(images)
        return out

    monkeypatch.setattr(engine, "read_image", read_image)
    monkeypatch.setattr(writers.ImageOutputs, "write", write_outputs)
    monkeypatch.setattr(Found, "predict", predict)
    bs, workers = 2, 3
    r = _segment([str(p) for p in paths], tmp_path / "out", tiny, "--batch-size", str(bs), "--workers", str(workers))
    assert r.code == 0 and "14 ok" in r.err
    window = max(engine.READ_AHEAD_CHUNKS * bs, workers)
    for reads, predicted, written in seen:
        assert reads <= predicted + bs + window, seen  # decoded ahead: at most `window` beyond this chunk
        assert predicted - written <= segment.PENDING_WRITE_CHUNKS * bs, seen  # outputs waiting to be written


def test_workers_option_validation_and_help(tmp_path: Path, tiny) -> None:
    p = tmp_path / "a.png"
    noise_image(24, 24).save(p)
    r = _segment([str(p)], tmp_path / "out", tiny, "--workers", "-1")
    assert r.code == 2 and "--workers" in r.err
    r = run_cli(["segment", "--help"])
    assert r.code == 0 and "--workers N" in r.out
    assert 1 <= engine.default_workers() <= 4


def test_read_image_in_threads_stays_quiet_and_restores_filters(tmp_path: Path) -> None:
    """Images in Pillow's decompression-bomb warning range read from many threads at once: no
    warning gets through and the warning filters are the same afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    from found.io.images import read_image

    paths = []
    for i in range(6):
        paths.append(tmp_path / f"w{i}.png")
        Image.fromarray(np.full((200, 300), i * 40, np.uint8)).save(paths[-1])
    old = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 40000  # 60000 px: Pillow warns, read_image must not
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            before = list(warnings.filters)
            with ThreadPoolExecutor(6) as pool:
                sizes = list(pool.map(lambda p: read_image(p, max_side=100).size, paths * 20))
            after = list(warnings.filters)
        assert sizes == [(100, 67)] * len(sizes)
        assert caught == [] and after == before
    finally:
        Image.MAX_IMAGE_PIXELS = old
