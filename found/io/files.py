"""Atomic file writes: outputs appear whole or not at all.

Every file is written under a hidden temporary name in its destination folder
(``.found-tmp.NAME.XXXX.part``) and renamed onto its final name only once complete, so a crash,
Ctrl-C or a full disk never leaves a half-written output under the real name; the temporary file is
removed on any error. What a ``kill -9`` leaves behind carries the recognisable ``TEMP_PREFIX``, and
:func:`remove_stale_temporaries` removes it on the next run.

Every temporary is ``fsync``ed before its rename and the folder after it, so an output that exists
under its final name has its bytes on disk even after a power loss (what the run journal relies on:
an input's record is appended only once its outputs are durable).
"""
from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

#: errno values meaning "the output location itself is unusable": a batch should stop, not go on.
FATAL_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Permissions of new outputs: what ``open(path, "w")`` would give (mkstemp alone gives 0600).
_FILE_MODE = 0o666 & ~_current_umask()


#: Start of every temporary file or folder name this package writes beside an output.
TEMP_PREFIX = ".found-tmp."
TEMP_SUFFIX = ".part"


def _tmp_beside(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
    finally:
        os.close(fd)
    return Path(tmp)


def fsync_file(path: str | os.PathLike) -> None:
    """Make a written file's bytes durable (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a folder's new or renamed entries durable (skipped where a folder cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """Make every file under ``folder``, and the folders themselves, durable."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fsync_file(os.path.join(root, name))
        fsync_dir(root)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is made durable and renamed onto
    ``path``, on error removed."""
    path = Path(path)
    tmp_path = _tmp_beside(path)
    try:
        yield tmp_path
        fsync_file(tmp_path)
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


class AtomicGroup:
    """Several outputs of one item, committed together: all temporaries are written first and only
    renamed when every one succeeded; on error none of them appears (used for an image's outputs)."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def path(self, final: str | os.PathLike) -> Path:
        """A temporary path that will become ``final`` on commit (creates the parent folder)."""
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_beside(final)
        self._pending.append((tmp, final))
        return tmp

    def commit(self) -> None:
        """Make every temporary durable, rename them all onto their final names, then make the renames durable."""
        for tmp, _ in self._pending:
            fsync_file(tmp)
        for tmp, final in self._pending:
            os.replace(tmp, final)
        for folder in dict.fromkeys(final.parent for _, final in self._pending):
            fsync_dir(folder)
        self._pending.clear()

    def abort(self) -> None:
        """Remove every temporary written so far (none of the outputs appears), and forget them."""
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending.clear()


@contextlib.contextmanager
def atomic_group() -> Iterator[AtomicGroup]:
    """``with atomic_group() as g: write(g.path(a)); write(g.path(b))`` — both appear, or neither."""
    group = AtomicGroup()
    try:
        yield group
        group.commit()
    except BaseException:
        group.abort()
        raise


def check_writable(folder: str | os.PathLike) -> None:
    """Raise the OSError a real write would (permissions, read-only or full file system) by creating
    and removing a temporary file; ``os.access`` alone is wrong for root and for read-only mounts."""
    tmp = _tmp_beside(Path(folder) / "write-test")
    tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: the old content stays if the write fails."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically: the old content stays if the write fails."""
    atomic_write_bytes(path, text.encode("utf-8"))


def temp_dir_beside(final: str | os.PathLike) -> Path:
    """A new temporary folder beside ``final`` (same file system, so it can be renamed onto it)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{final.name}.", suffix=TEMP_SUFFIX, dir=final.parent))


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the finished folder ``tmp`` onto ``final``; an older ``final`` is moved aside, then removed."""
    tmp, final = Path(tmp), Path(final)
    fsync_tree(tmp)
    if final.is_dir() and not final.is_symlink():
        old = temp_dir_beside(final)
        os.replace(final, old / "old")
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


def temp_name(name: str) -> str:
    """A fresh temporary file name for ``name`` in the same folder (for stores that are not local paths)."""
    return f"{TEMP_PREFIX}{name}.{os.urandom(4).hex()}{TEMP_SUFFIX}"


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a temporary file or folder of this package."""
    name = Path(path).name
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def remove_stale_temporaries(folder: str | os.PathLike, older_than: float, recursive: bool = True,
                             of: str | None = None) -> int:
    """Remove this package's temporaries under ``folder`` (only those of the file named ``of``, when
    given) last modified before ``older_than`` (a ``time.time()``), i.e. left by a killed earlier run,
    never a live run's; returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    pattern = f"{TEMP_PREFIX}{glob.escape(of) + '.' if of else ''}*{TEMP_SUFFIX}"
    found = folder.rglob(pattern) if recursive else folder.glob(pattern)
    removed = 0
    for path in sorted(found, key=lambda p: len(p.parts)):
        try:
            if path.lstat().st_mtime >= older_than:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
        except FileNotFoundError:  # inside a folder removed a moment ago, or removed by another run
            continue
    return removed
