"""The run journal (found.io.journal): CRC-checked JSON lines, torn tails ignored and cut off, batches
fsynced, reopen and append, other settings refused, one writer at a time, and a real kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from found.io.journal import (JOURNAL_FILE, Journal, JournalBusy, JournalMismatch, decode_line, encode_line,
                              journal_path, read_journal)

REPO = Path(__file__).resolve().parents[1]
CRASH = Path(__file__).resolve().parent / "crash"
OPTIONS = {"mode": "multi", "max_side": 1024, "kinds": ["mask", "soft"], "model": "vit_small/8"}


def _rec(i: int) -> dict:
    return {"file": f"img{i}.png", "width": 24 + i, "height": 24, "score": 0.5 + i / 100, "box_xyxy": [1, 2, 3, 4]}


def _journal_with(path: Path, n: int) -> list[bytes]:
    """A journal holding records 0..n-1; returns its lines."""
    with Journal(path, OPTIONS) as j:
        for i in range(n):
            j.append(f"img{i}.png", _rec(i))
    return path.read_bytes().splitlines(keepends=True)


def test_a_line_is_json_with_its_crc_last(tmp_path: Path) -> None:
    line = encode_line({"key": "a.png", "record": {"x": [1, 2], "name": "é\udcff"}})
    assert line.endswith(b"}\n") and b'"crc32":"' in line and line.isascii()
    assert json.loads(line)["key"] == "a.png"  # still a JSON Lines file for jq and friends
    assert decode_line(line) == {"key": "a.png", "record": {"x": [1, 2], "name": "é\udcff"}}
    for i in range(len(line) - 1):  # any altered byte (newline aside) is caught
        bad = bytearray(line)
        bad[i] = ord("#") if bad[i] != ord("#") else ord("$")
        assert decode_line(bytes(bad)) is None, i
    with pytest.raises(ValueError):
        encode_line({})


def test_reopen_appends_and_the_last_record_per_key_wins(tmp_path: Path) -> None:
    path = journal_path(tmp_path)
    assert path.name == JOURNAL_FILE and path.name.startswith(".")
    _journal_with(path, 3)
    with Journal(path, OPTIONS) as j:
        assert sorted(j.records) == ["img0.png", "img1.png", "img2.png"] and j.has("img1.png")
        j.append("img1.png", {"changed": True})
        j.append("img3.png", _rec(3))
    got = read_journal(path)
    assert got.version == 1 and got.options == json.loads(json.dumps(OPTIONS)) and got.ignored_bytes == 0
    with Journal(path, OPTIONS) as j:
        assert got.created and j.created == got.created  # kept across reopenings
        assert [k for k, _ in j] == sorted(got.records)
    assert got.records["img1.png"] == {"changed": True} and len(got.records) == 4


def test_a_torn_last_line_is_ignored_at_every_byte_offset_and_cut_before_appending(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    lines = _journal_with(path, 3)
    whole = b"".join(lines)
    start = len(whole) - len(lines[-1])
    for cut in range(len(lines[-1])):
        path.write_bytes(whole[: start + cut])
        got = read_journal(path)
        assert sorted(got.records) == ["img0.png", "img1.png"] and got.ignored_bytes == cut, cut
        with Journal(path, OPTIONS) as j:
            assert j.discarded_bytes == cut and sorted(j.records) == ["img0.png", "img1.png"]
            j.append("img9.png", _rec(9))
        assert path.read_bytes() == whole[:start] + encode_line({"key": "img9.png", "record": _rec(9)})
        got = read_journal(path)
        assert sorted(got.records) == ["img0.png", "img1.png", "img9.png"] and got.ignored_bytes == 0, cut


def test_a_torn_header_starts_afresh_and_a_bad_middle_line_ends_the_journal(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    lines = _journal_with(path, 3)
    for cut in range(len(lines[0])):
        path.write_bytes(lines[0][:cut])
        with Journal(path, OPTIONS) as j:
            assert j.records == {}
        assert read_journal(path).version == 1
    # a power loss may leave zeros where lines were never written: nothing from there on counts
    path.write_bytes(lines[0] + lines[1] + b"\0" * 40 + b"\n" + lines[3])
    assert sorted(read_journal(path).records) == ["img0.png"]
    with Journal(path, OPTIONS) as j:
        assert sorted(j.records) == ["img0.png"]
    assert path.read_bytes() == lines[0] + lines[1]


def test_lines_reach_the_os_at_once_and_are_fsynced_in_batches(tmp_path: Path, monkeypatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    now = [0.0]
    path = tmp_path / JOURNAL_FILE
    j = Journal(path, OPTIONS, sync_every=4, sync_seconds=10.0, clock=lambda: now[0])
    synced.clear()  # the header is fsynced on creation
    for i in range(10):
        j.append(f"k{i}", _rec(i))
        assert len(read_journal(path).records) == i + 1  # written through, not held in a buffer
    assert len(synced) == 2  # after the 4th and the 8th
    now[0] = 11.0  # a slow trickle is synced by time
    j.append("k10", _rec(10))
    assert len(synced) == 3
    j.append("k11", _rec(11))
    j.close()
    assert len(synced) == 4  # on close
    j.close()
    assert len(synced) == 4
    with pytest.raises(ValueError):
        j.append("k12", _rec(12))


def test_other_settings_are_refused_and_fresh_starts_over(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    _journal_with(path, 2)
    before = path.read_bytes()
    with pytest.raises(JournalMismatch) as e:
        Journal(path, {**OPTIONS, "mode": "single", "refine": True})
    assert e.value.changed == {"mode": ("multi", "single"), "refine": (None, True)}
    assert "mode: 'multi' → 'single'" in str(e.value) and "\n" not in str(e.value)
    assert path.read_bytes() == before  # untouched
    with Journal(path, {**OPTIONS, "kinds": ("mask", "soft")}) as j:  # the same after a JSON round trip
        assert len(j.records) == 2
    with Journal(path, {**OPTIONS, "mode": "single"}, fresh=True) as j:
        assert j.records == {}
    got = read_journal(path)
    assert got.records == {} and got.options["mode"] == "single"


def test_a_journal_of_another_format_version_is_refused_not_cut(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    future = encode_line({"format": "found-journal", "version": 2, "options": {}, "layout": "new"})
    path.write_bytes(future + b"something newer\n")
    with pytest.raises(JournalMismatch) as e:
        Journal(path, OPTIONS)
    assert e.value.changed == {"version": (2, 1)}
    assert path.read_bytes().startswith(future)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    with Journal(path, OPTIONS):
        with pytest.raises(JournalBusy):
            Journal(path, OPTIONS)
    with Journal(path, OPTIONS):  # released on close
        pass


_APPENDER = """
import sys
from found.io.journal import Journal
with Journal(sys.argv[1], {"mode": "multi"}) as j:
    for i in range(20):
        j.append(f"img{i}.png", {"i": i, "pad": "x" * 300})
"""


@pytest.mark.parametrize("point,kept", [("journal-append:6", 5), ("journal-torn:6", 5), ("journal-torn:1", 0)])
def test_a_process_killed_while_appending_loses_only_the_line_in_flight(tmp_path: Path, point: str, kept: int) -> None:
    path = tmp_path / JOURNAL_FILE
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CRASH), str(REPO)]), "FOUND_CRASH_AT": point}
    p = subprocess.run([sys.executable, "-c", _APPENDER, str(path)], env=env, capture_output=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()
    got = read_journal(path)
    assert sorted(got.records, key=lambda k: int(k[3:-4])) == [f"img{i}.png" for i in range(kept)]
    assert (got.ignored_bytes > 0) == point.startswith("journal-torn")
    with Journal(path, {"mode": "multi"}) as j:
        j.append("again.png", {"i": -1})
    assert len(read_journal(path).records) == kept + 1 and read_journal(path).ignored_bytes == 0


def test_records_go_through_the_one_records_module(tmp_path: Path) -> None:
    """found segment stores each record as record_to_json writes it; one of another schema version ends the journal."""
    from found.io.journal import record_line
    from found.io.records import SCHEMA_VERSION, record_from_json, record_to_json

    path = tmp_path / JOURNAL_FILE
    with Journal(path, OPTIONS, encode=record_to_json, decode=record_from_json) as j:
        j.append("img0.png", _rec(0))
        j.append("img1.png", _rec(1))
    lines = path.read_bytes().splitlines(keepends=True)
    assert json.loads(lines[1])["record"]["schema_version"] == SCHEMA_VERSION
    assert read_journal(path, record_from_json).records == {"img0.png": _rec(0), "img1.png": _rec(1)}
    foreign = record_line("img2.png", json.dumps({"schema_version": SCHEMA_VERSION + 1, **_rec(2)}))
    path.write_bytes(lines[0] + foreign + lines[2])
    assert read_journal(path, record_from_json).records == {}
    with Journal(path, OPTIONS, encode=record_to_json, decode=record_from_json) as j:
        assert j.records == {} and j.discarded_bytes == len(foreign) + len(lines[2])


def test_a_journal_without_records_can_be_discarded_on_close(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    Journal(path, OPTIONS).close(discard_empty=True)
    assert not path.exists()
    with Journal(path, OPTIONS) as j:
        j.append("a.png", _rec(0))
    j = Journal(path, OPTIONS)
    j.close(discard_empty=True)
    assert list(read_journal(path).records) == ["a.png"]
