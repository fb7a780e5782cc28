"""The run journal: an append-only file of JSON records beside a run's outputs, so that a run killed
at any moment (``kill -9``, a crash) loses at most the inputs in flight; after a power loss, at most
the records not yet synced (their outputs are made durable before a record is appended: io/files.py).

File ``<outdir>/.found-journal.jsonl`` (:data:`JOURNAL_FILE`), JSON Lines, UTF-8 (ASCII in practice):

* line 1, the header: ``{"format":"found-journal","version":1,"created":"…","options":{...},"crc32":"…"}``,
  where ``created`` is when the journal was started (UTC, ISO 8601) and ``options`` the run's settings
  that change records or outputs (the caller decides which);
* then one line per finished input: ``{"key":"<input>","record":{...},"crc32":"…"}``; a later line
  for the same key replaces an earlier one.

A record is stored as its ``encode`` gives it (``found segment``: :func:`found.io.records.record_to_json`,
so each record carries its ``schema_version``) and read back by ``decode``. ``crc32`` is the CRC-32
(8 lowercase hex digits) of the line's bytes without it: the bytes up to the ``,"crc32":`` that ends
the line, followed by ``}``. A line counts only if it ends in ``\\n``, its CRC matches and it parses;
the first line that does not (a write torn by a kill, blocks never written before a power loss) ends
the journal, and it and everything after it is cut off before the next append. Each line is handed
to the operating system as soon as it is appended (a killed process loses nothing already appended)
and made durable with ``os.fsync`` in batches: every :data:`SYNC_EVERY` lines or :data:`SYNC_SECONDS`
seconds, and on close.

A journal whose header holds other options (or another format version) is never mixed with:
:class:`Journal` raises :class:`JournalMismatch` naming the fields that differ, and the caller
decides (``found segment`` refuses with a one-line error naming ``--overwrite``). The header keeps
its layout in every format version, so a journal of another version is recognised and refused,
never cut. ``fresh=True`` starts afresh (the file is truncated). One process at a time: a second one
gets :class:`JournalBusy`. Pure file code: no torch, no engine.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import FoundError
from .files import fsync_dir

try:  # POSIX: one writer per journal
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: The journal's file name inside the output folder (hidden: a folder scan never takes it as an input).
JOURNAL_FILE = ".found-journal.jsonl"
JOURNAL_FORMAT = "found-journal"
#: The journal format's version (a change of the line layout, not of the records it holds).
JOURNAL_VERSION = 1
#: Lines appended between two ``os.fsync`` calls, at most.
SYNC_EVERY = 32
#: Seconds between two ``os.fsync`` calls while lines are being appended, at most.
SYNC_SECONDS = 2.0

_LINE = re.compile(rb"(\{.+),\"crc32\":\"([0-9a-f]{8})\"\}\n", re.S)


class JournalMismatch(FoundError):
    """The journal on disk was written by a run with other options or another format version."""

    def __init__(self, path: Path, changed: dict[str, tuple[Any, Any]]) -> None:
        self.path, self.changed = Path(path), changed
        what = ", ".join(f"{k}: {old!r} → {new!r}" for k, (old, new) in sorted(changed.items()))
        super().__init__(f"{path} was written with other settings ({what})")


class JournalBusy(FoundError):
    """Another process holds the journal (two runs into one output folder at once)."""


def journal_path(outdir: str | os.PathLike) -> Path:
    """Where the journal of the outputs in ``outdir`` lives."""
    return Path(outdir) / JOURNAL_FILE


def _with_crc(body: bytes) -> bytes:
    if not (body.startswith(b"{") and body.endswith(b"}") and len(body) > 2):
        raise ValueError("a journal entry is a non-empty JSON object")
    return body[:-1] + b',"crc32":"%08x"}\n' % zlib.crc32(body)


def encode_line(entry: dict) -> bytes:
    """One journal line for ``entry`` (a non-empty JSON object): the JSON, its CRC-32 last, ``\\n``."""
    return _with_crc(json.dumps(entry, separators=(",", ":"), ensure_ascii=True).encode("ascii"))


def compact_json(record: dict) -> str:
    """A record as compact JSON text (the default record encoding of a journal)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True)


def record_line(key: str, record_text: str) -> bytes:
    """The journal line of a record already encoded as JSON text (e.g. by ``record_to_json``)."""
    return _with_crc(b'{"key":' + json.dumps(key).encode("ascii") + b',"record":' + record_text.encode("utf-8") + b"}")


def _checked_body(line: bytes) -> bytes | None:
    """The JSON of a complete line whose CRC matches, else None."""
    m = _LINE.fullmatch(line)
    if m is None:
        return None
    body = m[1] + b"}"
    return body if zlib.crc32(body) == int(m[2], 16) else None


def decode_line(line: bytes) -> dict | None:
    """The entry of a complete, intact journal line, else None (torn, altered, not JSON)."""
    body = _checked_body(line)
    try:
        entry = None if body is None else json.loads(body)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def decode_record_line(line: bytes, decode: Callable[[str], dict] = json.loads) -> tuple[str, dict] | None:
    """``(key, record)`` of an intact record line, the record's text read by ``decode`` (e.g.
    ``record_from_json``), else None (torn, altered, or a record ``decode`` refuses)."""
    body = _checked_body(line)
    if body is None:
        return None
    try:
        text = body.decode("utf-8")
        if not text.startswith('{"key":'):
            return None
        key, end = json.JSONDecoder().raw_decode(text, 7)
        if not isinstance(key, str) or not text.startswith(',"record":', end):
            return None
        record = decode(text[end + 10:-1])
    except ValueError:  # also UnicodeDecodeError and a codec's own errors (RecordError)
        return None
    return (key, record) if isinstance(record, dict) else None


def _normalised(options: dict) -> dict:
    """``options`` as they read back from JSON (tuples become lists), to compare with a header's."""
    return json.loads(json.dumps(options, sort_keys=True))


@dataclass
class JournalContents:
    """What a journal file holds: its header's version and options (None without a valid header), the
    last record per key, the length of its valid part and the bytes after it (ignored)."""

    version: int | None = None
    options: dict | None = None
    created: str = ""
    records: dict[str, dict] = field(default_factory=dict)
    valid_bytes: int = 0
    ignored_bytes: int = 0


def _is_header(entry: dict | None) -> bool:
    return (entry is not None and entry.get("format") == JOURNAL_FORMAT and isinstance(entry.get("version"), int)
            and isinstance(entry.get("options"), dict))


def _other_version(line: bytes) -> int | None:
    """The version of a first line that is a journal header of another format version, else None."""
    with contextlib.suppress(ValueError):
        entry = json.loads(line)
        if isinstance(entry, dict) and entry.get("format") == JOURNAL_FORMAT and entry.get("version") != JOURNAL_VERSION:
            return entry.get("version")
    return None


def read_journal(path: str | os.PathLike, decode: Callable[[str], dict] = json.loads) -> JournalContents:
    """Read the journal at ``path`` up to its first bad line (a missing file reads as empty); each
    record's JSON text is read by ``decode``."""
    out = JournalContents()
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return out
    with f:
        size = os.fstat(f.fileno()).st_size
        for line in f:
            if out.version is None:
                entry = decode_line(line)
                if not _is_header(entry):
                    out.version = _other_version(line)
                    break
                out.version, out.options, out.created = entry["version"], entry["options"], str(entry.get("created", ""))
            else:
                pair = decode_record_line(line, decode)
                if pair is None:
                    break
                out.records[pair[0]] = pair[1]
            out.valid_bytes += len(line)
    out.ignored_bytes = size - out.valid_bytes
    return out


class Journal:
    """The journal at ``path`` opened for appending, after checking its header against ``options``
    (or truncated, with ``fresh``); :attr:`records` holds the last record per key, old and new."""

    def __init__(self, path: str | os.PathLike, options: dict, *, fresh: bool = False, sync_every: int = SYNC_EVERY,
                 sync_seconds: float = SYNC_SECONDS, clock: Callable[[], float] = time.monotonic,
                 encode: Callable[[dict], str] = compact_json, decode: Callable[[str], dict] = json.loads) -> None:
        self.path, self.options = Path(path), _normalised(options)
        self.encode, self.decode = encode, decode
        self.sync_every, self.sync_seconds, self._clock = max(1, sync_every), sync_seconds, clock
        self._lock = threading.Lock()
        self._unsynced, self._last_sync = 0, clock()
        self.records: dict[str, dict] = {}
        self.created = ""  # when the journal was started (UTC, ISO 8601, seconds)
        self.discarded_bytes = 0  # a torn or corrupt tail cut off on opening
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            self._take_lock()
            self._start(fresh)
        except BaseException:
            self._release()
            raise

    def _take_lock(self) -> None:
        if fcntl is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalBusy(f"{self.path} is in use by another run into the same folder") from None

    def _start(self, fresh: bool) -> None:
        """Check or write the header, cut a torn tail off, load the records."""
        old = JournalContents() if fresh else read_journal(self.path, self.decode)
        if old.version is None:
            os.ftruncate(self._fd, 0)
            self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self._write(encode_line({"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, "created": self.created,
                                     "options": self.options}))
            os.fsync(self._fd)
            fsync_dir(self.path.parent)
            self.discarded_bytes = old.ignored_bytes
            return
        if old.version != JOURNAL_VERSION:
            raise JournalMismatch(self.path, {"version": (old.version, JOURNAL_VERSION)})
        changed = {k: (old.options.get(k), self.options.get(k)) for k in sorted(set(old.options) | set(self.options))
                   if old.options.get(k) != self.options.get(k)}
        if changed:
            raise JournalMismatch(self.path, changed)
        if old.ignored_bytes:
            os.ftruncate(self._fd, old.valid_bytes)
            os.fsync(self._fd)
            self.discarded_bytes = old.ignored_bytes
        self.records, self.created = old.records, old.created

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def has(self, key: str) -> bool:
        """Whether ``key`` has a record (written by this run or an earlier one)."""
        return key in self.records

    def append(self, key: str, record: dict) -> None:
        """Append ``record`` for ``key`` (handed to the OS now; fsynced with its batch)."""
        line = record_line(key, self.encode(record))
        with self._lock:
            if self._fd is None:
                raise ValueError(f"{self.path} is closed")
            self._write(line)
            self.records[key] = record
            self._unsynced += 1
            if self._unsynced >= self.sync_every or self._clock() - self._last_sync >= self.sync_seconds:
                self._sync()

    def _sync(self) -> None:
        if self._unsynced:
            os.fsync(self._fd)
        self._unsynced, self._last_sync = 0, self._clock()

    def sync(self) -> None:
        """Make every appended line durable now."""
        with self._lock:
            if self._fd is not None:
                self._sync()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also releases the lock
            self._fd = None

    def close(self, discard_empty: bool = False) -> None:
        """Sync what is pending and close (idempotent); with ``discard_empty`` a journal that holds no
        record is removed instead (a run that finished nothing leaves no journal behind)."""
        with self._lock:
            if self._fd is not None:
                try:
                    if discard_empty and not self.records:
                        self.path.unlink(missing_ok=True)  # still locked: no other run has it open
                    else:
                        self._sync()
                finally:
                    self._release()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        """``(key, record)`` pairs, sorted by key."""
        return iter(sorted(self.records.items()))
