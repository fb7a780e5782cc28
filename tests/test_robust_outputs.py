"""Outputs: atomic writes, a full disk or unwritable folder, outputs that would replace inputs, skip/overwrite."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import time

from found.io.files import (TEMP_PREFIX, atomic_group, atomic_path, check_writable, is_temporary,
                            remove_stale_temporaries, temp_dir_beside)
from found.io.journal import read_journal
from helpers import leftovers, noise_image, run_cli, tiny  # noqa: F401  (fixture)


def _images(folder: Path, n: int, size: int = 24) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        noise_image(size, size, seed=i).save(p)
        paths.append(p)
    return paths


# ---------------------------------------------------------------- fileio

def test_atomic_path_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not target.exists() and leftovers(tmp_path) == []


def test_atomic_path_keeps_old_content_on_error(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new but partial")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_atomic_group_all_or_nothing(tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "sub" / "b.png"
    with pytest.raises(OSError):
        with atomic_group() as g:
            g.path(a).write_bytes(b"complete")
            g.path(b).write_bytes(b"part")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not a.exists() and not b.exists() and leftovers(tmp_path) == []
    with atomic_group() as g:
        g.path(a).write_bytes(b"A")
        g.path(b).write_bytes(b"B")
    assert a.read_bytes() == b"A" and b.read_bytes() == b"B" and leftovers(tmp_path) == []


def test_temporaries_carry_the_recognisable_prefix(tmp_path: Path) -> None:
    seen = []
    with atomic_path(tmp_path / "a.png") as tmp:
        seen.append(tmp)
        tmp.write_bytes(b"x")
    seen.append(temp_dir_beside(tmp_path / "frames"))
    assert all(p.name.startswith(TEMP_PREFIX) and is_temporary(p) for p in seen), seen
    assert not is_temporary(tmp_path / "a.png") and not is_temporary(tmp_path / ".a.png.part")


def _log_durability(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record ("fsync", path) and ("replace", final) in the order they happen."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", str(Path(dst))))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads file descriptors' paths from /proc")
def test_outputs_are_durable_before_they_appear_under_their_final_names(tmp_path: Path, monkeypatch) -> None:
    events = _log_durability(monkeypatch)
    with atomic_group() as g:
        for name in ("a_mask.png", "a_soft.png"):
            g.path(tmp_path / name).write_bytes(b"png")
    synced = [p for kind, p in events[:2] if kind == "fsync"]
    assert len(synced) == 2 and all(Path(p).name.startswith(TEMP_PREFIX) for p in synced), events
    assert [e for e in events[2:4]] == [("replace", str(tmp_path / "a_mask.png")), ("replace", str(tmp_path / "a_soft.png"))]
    assert events[4:] == [("fsync", str(tmp_path))], events  # the renames themselves made durable
    events.clear()
    with atomic_path(tmp_path / "boxes.json") as tmp:
        tmp.write_text("{}")
    assert [k for k, _ in events] == ["fsync", "replace", "fsync"] and events[-1][1] == str(tmp_path), events


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads file descriptors' paths from /proc")
def test_a_record_is_journaled_only_after_its_outputs_are_durable(tmp_path: Path, tiny, monkeypatch) -> None:
    from found.io.journal import Journal

    events = _log_durability(monkeypatch)
    real_append = Journal.append

    def append(self, key, record):
        events.append(("record", key))
        real_append(self, key, record)

    monkeypatch.setattr(Journal, "append", append)
    noise_image(24, 16).save(tmp_path / "a.png")
    r = run_cli(["segment", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--mask", "--soft", *tiny.args()])
    assert r.code == 0, r.err
    at = events.index(("record", str(tmp_path / "a.png")))
    before = events[:at]
    for final in ("a_mask.png", "a_soft.png"):
        renamed = before.index(("replace", str(tmp_path / "out" / final)))
        assert any(k == "fsync" and Path(p).name.startswith(f"{TEMP_PREFIX}{final}.") for k, p in before[:renamed]), before
    assert ("fsync", str(tmp_path / "out")) in before[renamed:], before


def test_only_stale_temporaries_of_this_package_are_removed(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    stale_file = tmp_path / "sub" / f"{TEMP_PREFIX}x_mask.png.abcd.part"
    stale_file.write_bytes(b"half")
    stale_dir = temp_dir_beside(tmp_path / "clip_frames")
    (stale_dir / "000001_mask.png").write_bytes(b"half")
    foreign = tmp_path / ".x_mask.png.abcd.part"      # not our pattern: a user's file
    foreign.write_bytes(b"keep")
    old = time.time() - 60
    for p in (stale_file, stale_dir, foreign):
        os.utime(p, (old, old))
    live = tmp_path / f"{TEMP_PREFIX}y_mask.png.efgh.part"  # written by a run in progress
    live.write_bytes(b"live")
    start = time.time() - 30
    assert remove_stale_temporaries(tmp_path, older_than=start) == 2
    assert not stale_file.exists() and not stale_dir.exists()
    assert foreign.exists() and live.exists()
    assert remove_stale_temporaries(tmp_path / "missing", older_than=start) == 0
    # of=NAME: only that file's temporaries, e.g. beside a --coco file in a folder that is not ours
    mine, other = (tmp_path / f"{TEMP_PREFIX}{n}.json.abcd.part" for n in ("coco[1]", "coco"))
    for p in (mine, other):
        p.write_bytes(b"half")
        os.utime(p, (old, old))
    assert remove_stale_temporaries(tmp_path, older_than=start, recursive=False, of="coco[1].json") == 1
    assert not mine.exists() and other.exists()


def test_check_writable_raises_the_real_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []

    def deny(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("found.io.files.tempfile.mkstemp", deny)
    with pytest.raises(PermissionError):
        check_writable(tmp_path)


# ---------------------------------------------------------------- the CLI

def test_disk_full_stops_cleanly_without_partial_files(tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    imgs = _images(tmp_path / "in", 4)
    out = tmp_path / "out"
    real_save = Image.Image.save
    calls = {"n": 0}

    def save(self, fp, *a, **k):
        calls["n"] += 1
        if calls["n"] >= 3:  # image 0: mask+soft fine; image 1: disk fills during its first file
            Path(fp).write_bytes(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", save)
    r = run_cli(["segment", *map(str, imgs), "-o", str(out), "--mask", "--soft", "--batch-size", "1", *tiny.args()])
    assert r.code == 1
    assert r.counts == (1, 0, 1, 2)
    assert f"failed: {imgs[1]}: cannot write outputs: No space left on device (nothing written for this image)" in r.err
    assert "stopped: No space left on device" in r.err and "Traceback" not in r.err
    assert sorted(p.name for p in out.iterdir()) == [".found-journal.jsonl", "img0_mask.png", "img0_soft.png"]
    assert list(read_journal(out / ".found-journal.jsonl").records) == [str(imgs[0])]  # the finished image only
    assert leftovers(out) == []
    # once space is back, a rerun finishes the rest and skips what is done
    monkeypatch.setattr(Image.Image, "save", real_save)
    r = run_cli(["segment", *map(str, imgs), "-o", str(out), "--mask", "--soft", *tiny.args()])
    assert r.code == 0 and r.counts == (3, 1, 0, 0)


def test_one_image_failing_to_write_does_not_stop_the_batch(tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    imgs = _images(tmp_path / "in", 3)
    out = tmp_path / "out"
    real_save = Image.Image.save

    def save(self, fp, *a, **k):
        if "img1" in str(fp):
            raise OSError(errno.EIO, "Input/output error")
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", save)
    r = run_cli(["segment", *map(str, imgs), "-o", str(out), "--mask", "--overlay", *tiny.args()])
    assert r.code == 1 and r.counts == (2, 0, 1, 0)
    assert not list(out.glob("img1*")) and leftovers(out) == []


def test_unwritable_output_folder_is_a_clear_error(tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    imgs = _images(tmp_path / "in", 1)
    out = tmp_path / "ro"
    out.mkdir()
    real = __import__("tempfile").mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and Path(dir) == out:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr("found.io.files.tempfile.mkstemp", mkstemp)
    r = run_cli(["segment", str(imgs[0]), "-o", str(out), *tiny.args()])
    assert r.code == 2
    assert r.err.strip() == f"found: error: output folder {out} is not usable: Permission denied"
    assert list(out.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a mode-555 folder; simulated in the test above")
def test_unwritable_output_folder_real_chmod(tmp_path: Path, tiny) -> None:
    imgs = _images(tmp_path / "in", 1)
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        r = run_cli(["segment", str(imgs[0]), "-o", str(out), *tiny.args()])
    finally:
        out.chmod(0o755)
    assert r.code == 2 and "is not usable" in r.err


def test_output_that_is_a_file_or_under_a_file(tmp_path: Path, tiny) -> None:
    imgs = _images(tmp_path / "in", 1)
    r = run_cli(["segment", str(imgs[0]), "-o", str(imgs[0]), *tiny.args()])
    assert r.code == 2 and "exists and is not a folder" in r.err and "Traceback" not in r.err
    r = run_cli(["segment", str(imgs[0]), "-o", str(imgs[0] / "sub"), *tiny.args()])
    assert r.code == 2 and "is not usable" in r.err


def test_output_equal_to_an_input_is_refused(tmp_path: Path, tiny) -> None:
    d = tmp_path / "in"
    imgs = _images(d, 1)
    victim = d / "img0_mask.png"
    noise_image(24, 24, seed=9).save(victim)
    before = victim.read_bytes()
    r = run_cli(["segment", str(imgs[0]), str(victim), "-o", str(d), *tiny.args()])
    assert r.code == 2
    assert f"output {victim} would overwrite an input" in r.err
    assert victim.read_bytes() == before and sorted(p.name for p in d.iterdir()) == ["img0.png", "img0_mask.png"]


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path: Path, tiny) -> None:
    imgs = _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    r = run_cli(["segment", *map(str, imgs), "-o", str(out), "--boxes", *tiny.args()])
    assert r.code == 0 and r.counts[:2] == (2, 0)
    (out / "img0_mask.png").write_bytes(b"sentinel")
    r = run_cli(["segment", *map(str, imgs), "-o", str(out), "--boxes", *tiny.args()])
    assert r.code == 0 and r.counts == (0, 2, 0, 0)
    assert (out / "img0_mask.png").read_bytes() == b"sentinel"
    assert len(json.loads((out / "boxes.json").read_text())["images"]) == 2
    r = run_cli(["segment", *map(str, imgs), "-o", str(out), "--overwrite", *tiny.args()])
    assert r.code == 0 and r.counts[:2] == (2, 0)
    assert Image.open(out / "img0_mask.png").size == (24, 24)


def test_downscaled_outputs_masks_full_size_box_in_file_pixels(tmp_path: Path, tiny) -> None:
    p = tmp_path / "wide.png"
    noise_image(200, 100).save(p)
    out = tmp_path / "out"
    r = run_cli(["segment", str(p), "-o", str(out), "--all", "--max-side", "64", *tiny.args()])
    assert r.code == 0, r.err
    assert "1 image larger than --max-side 64 processed at reduced size" in r.err
    assert f"downscaled: {p} (200×100 → 64×32)" in r.err
    assert Image.open(out / "wide_mask.png").size == (200, 100)
    assert Image.open(out / "wide_soft.png").size == (200, 100)
    assert Image.open(out / "wide_cutout.png").size == (200, 100)  # every output at the input's full size
    assert Image.open(out / "wide_overlay.png").size == (200, 100)
    cut = np.asarray(Image.open(out / "wide_cutout.png"))
    assert np.array_equal(cut[..., :3], np.asarray(Image.open(p).convert("RGB")))  # the file's own pixels
    # the cut-out's alpha follows the full-size image's edges: the engine's guided cut-out mask
    from found import build_found
    from found.engine import Engine

    model = build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu", progress=False)
    [res] = list(Engine(model, max_side=64, workers=0).run([p]))
    assert np.array_equal(cut[..., 3] > 0, res.prediction.cutout_mask(res.rgb()))
    # --edges bilinear: the cut-out's alpha is the mask itself
    r = run_cli(["segment", str(p), "-o", str(tmp_path / "bilinear"), "--cutout", "--mask", "--max-side", "64",
                 "--edges", "bilinear", *tiny.args()])
    assert r.code == 0, r.err
    bil = np.asarray(Image.open(tmp_path / "bilinear" / "wide_cutout.png"))
    assert np.array_equal(bil[..., 3] > 0, np.asarray(Image.open(out / "wide_mask.png")) > 0)
    rec = json.loads((out / "boxes.json").read_text())["images"][0]
    assert rec["width"] == 200 and rec["height"] == 100 and rec["downscaled"] and rec["processed_size"] == [64, 32]
    if rec["box_xyxy"] is not None:
        x1, y1, x2, y2 = rec["box_xyxy"]
        assert 0 <= x1 < x2 <= 200 and 0 <= y1 < y2 <= 100
    mask = np.asarray(Image.open(out / "wide_mask.png"))
    assert set(np.unique(mask)) <= {0, 255}


def test_outputs_get_ordinary_file_permissions(tmp_path) -> None:
    """Atomic writes give what a plain open() would (umask applied), not mkstemp's owner-only 0600."""
    import os
    import stat

    from found.io.files import atomic_write_text

    umask = os.umask(0)
    os.umask(umask)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask
    assert umask & 0o044 == 0  # under the usual umask the output is readable by others
