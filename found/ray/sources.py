"""Where inputs come from: local paths, URIs (pyarrow filesystems) and .txt/.csv/.parquet lists of them."""
from __future__ import annotations

import csv
import fnmatch
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import FoundError, one_line
from ..extras import require
from ..io.images import IMAGE_SUFFIXES
from ..io.sources import collect_inputs, dataset_name, path_key, unique_stems

#: Input arguments read as lists of paths or URIs (one per line / a ``path`` column).
LIST_SUFFIXES = (".txt", ".csv", ".parquet")


@dataclass(frozen=True)
class Item:
    """One input: ``path`` as given (row key), ``source`` as a worker reads it, ``stem`` of its outputs."""

    path: str
    source: str
    stem: str

    @property
    def name(self) -> str:
        """How a dataset names the input (a COCO ``file_name``), as ``found segment`` names it."""
        return dataset_name(self.path, self.stem)


def require_pyarrow() -> Any:
    """pyarrow, or a one-line error naming the extra."""
    pyarrow = require("pyarrow", "ray", "the Ray path")
    for name in ("pyarrow.fs", "pyarrow.parquet"):
        require(name, "ray", "the Ray path")
    return pyarrow


def is_uri(s: str) -> bool:
    """``scheme://…`` (s3://, gs://, file://, …); plain paths and Windows drives are not."""
    head, sep, _ = s.partition("://")
    return bool(sep) and len(head) > 1 and head.replace("+", "").replace("-", "").isalnum()


def filesystem(uri: str) -> tuple[Any, str]:
    """``(filesystem, path)`` of a URI; a bad one is a FoundError."""
    require_pyarrow()
    from pyarrow import fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:  # ArrowInvalid, ArrowNotImplementedError, …
        raise FoundError(f"{uri}: not a usable URI ({one_line(e)})") from None


def _uri_of(uri: str, path: str) -> str:
    """The URI of ``path`` on the filesystem of ``uri`` (same scheme)."""
    scheme = uri[: uri.index("://") + 3]
    return scheme + (path if scheme != "file://" or path.startswith("/") else "/" + path)


def read_bytes(source: str) -> bytes:
    """The bytes of a local path or URI (an OSError / FoundError on failure)."""
    if not is_uri(source):
        return Path(source).read_bytes()
    fs, p = filesystem(source)
    with fs.open_input_stream(p) as f:
        return f.read()


def read_list(arg: str) -> list[str]:
    """Paths or URIs listed in a .txt (one per line, # comments), .csv or .parquet (a ``path`` column)."""
    suffix = Path(arg.split("?")[0]).suffix.lower()
    try:
        data = read_bytes(arg)
    except (OSError, FoundError) as e:
        raise FoundError(f"{arg}: cannot read the input list ({one_line(e)})") from None
    if suffix == ".txt":
        lines = (ln.strip() for ln in data.decode("utf-8-sig").splitlines())
        entries = [ln for ln in lines if ln and not ln.startswith("#")]
    elif suffix == ".csv":
        rows = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
        if "path" not in (rows.fieldnames or []):
            raise FoundError(f"{arg}: no 'path' column in this CSV list")
        entries = [r["path"].strip() for r in rows if (r.get("path") or "").strip()]
    else:
        import pyarrow.parquet as pq

        try:
            t = pq.read_table(io.BytesIO(data))
        except Exception as e:
            raise FoundError(f"{arg}: not a readable Parquet list ({one_line(e)})") from None
        if "path" not in t.column_names:
            raise FoundError(f"{arg}: no 'path' column in this Parquet list")
        entries = [str(p).strip() for p in t.column("path").to_pylist() if p is not None and str(p).strip()]
    if is_uri(arg):
        return entries
    base = Path(arg).parent  # relative entries are relative to the list's folder
    return [e if is_uri(e) or Path(e).is_absolute() else str(base / e) for e in entries]


def _uri_files(uri: str, recursive: bool) -> list[tuple[str, str]]:
    """``(uri, stem)`` of the image(s) a URI names: a file, a folder (prefix) or a glob pattern."""
    from pyarrow import fs as pafs

    fs, p = filesystem(uri)
    wild = next((i for i, ch in enumerate(p) if ch in "*?["), None)
    if wild is None:
        info = fs.get_file_info(p)
        if info.type == pafs.FileType.File:
            return [(uri, Path(p).stem)]
        if info.type != pafs.FileType.Directory:
            raise FoundError(f"{uri}: no such file or folder")
        base, pattern = p.rstrip("/"), None
    else:
        base, pattern = p[:wild].rsplit("/", 1)[0], p
    sel = pafs.FileSelector(base, recursive=recursive or (pattern is not None and "**" in pattern), allow_not_found=True)
    out = []
    for f in sorted(fs.get_file_info(sel), key=lambda f: f.path):
        name = f.base_name
        if f.type != pafs.FileType.File or name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if pattern is not None and not fnmatch.fnmatchcase(f.path, pattern.replace("**/", "*")):
            continue
        rel = f.path[len(base):].lstrip("/") if pattern is None else name
        out.append((_uri_of(uri, f.path), str(Path(rel).with_suffix(""))))
    if not out:
        raise FoundError(f"{uri}: no images found" + (" (add -r for sub-folders)" if pattern is None and not recursive else ""))
    return out


def _listed(args: list[str], recursive: bool, failures: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(path or URI, stem)`` of the entries of lists and URIs; unusable arguments go to ``failures``."""
    out: list[tuple[str, str]] = []
    for arg in args:
        try:
            if arg.lower().split("?")[0].endswith(LIST_SUFFIXES):
                out.extend((e, Path(e.split("?")[0]).stem) for e in read_list(arg))
            else:
                out.extend(_uri_files(arg, recursive))
        except FoundError as e:
            failures.append((arg, one_line(e).removeprefix(f"{arg}: ")))
    return out


def collect(inputs: Iterable[str], recursive: bool = False, outdir: Path | None = None) -> tuple[list[Item], list[tuple[str, str]]]:
    """Items for a run and the unusable arguments (``(arg, why)``).

    Local files, folders and globs are collected by :func:`found.io.sources.collect_inputs` (the same
    inputs, order and output names as ``found segment``); lists and URIs are added after them.
    Listed entries are not checked here (a missing one becomes an error row), so a list of
    millions of URIs costs no request on the driver.
    """
    inputs = list(inputs)
    local = [a for a in inputs if not is_uri(a) and not a.lower().endswith(LIST_SUFFIXES)]
    jobs, failures = collect_inputs(local, recursive, outdir) if local else ([], [])
    items = [Item(str(j.path), str(j.path.absolute()), j.stem) for j in jobs]
    seen = {path_key(j.path) for j in jobs}
    extra: list[tuple[str, str]] = []
    for path, stem in _listed([a for a in inputs if a not in local], recursive, failures):
        key = path if is_uri(path) else path_key(Path(path))
        if key not in seen:
            seen.add(key)
            extra.append((path, stem))
    stems = unique_stems([stem for _, stem in extra], taken=[it.stem for it in items])
    items += [Item(path, path if is_uri(path) else str(Path(path).absolute()), stem) for (path, _), stem in zip(extra, stems)]
    return items, failures
