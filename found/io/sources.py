"""Input collection for batch runs: files, folders and glob patterns → jobs with output stems.

Unusable arguments come back as failures (never exceptions), so a run can report them and go on.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .images import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from .sinks import OUTPUT_SUFFIXES, VIDEO_OUTPUT_ENDINGS


#: Suffixes taken when scanning folders, and the names of this command's own outputs (never inputs).
_SCANNED = IMAGE_SUFFIXES | VIDEO_SUFFIXES
_OWN_OUTPUTS = tuple(OUTPUT_SUFFIXES.values()) + VIDEO_OUTPUT_ENDINGS


@dataclass
class Job:
    """One input file and the stem of its outputs (a path relative to the output folder, no suffix)."""

    path: Path
    stem: str

    @property
    def name(self) -> str:
        """The file as a dataset names it (see :func:`dataset_name`)."""
        return dataset_name(str(self.path), self.stem)


def dataset_name(path: str, stem: str) -> str:
    """How a dataset names the input ``path`` whose outputs are named ``stem``: its path relative to
    the folder it was found in (the image root), or its file name when it was given as a file or
    matched by a pattern (a local path or a URI)."""
    base = path.split("?")[0].rstrip("/").rsplit("/", 1)[-1] if "://" in path else Path(path).name
    folder = Path(stem).parent
    return str(folder / base) if folder != Path(".") else base


def path_key(path: Path) -> Path:
    """Identity of an input for de-duplication (a symlink loop cannot be resolved: keep it as is)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def collect_inputs(inputs: list[str], recursive: bool, outdir: Path | None = None) -> tuple[list[Job], list[tuple[str, str]]]:
    """Expand files, folders and globs into jobs; unusable arguments are returned as failures.

    Folders are scanned for files with an image or video suffix (hidden files skipped; sub-folders only with
    ``recursive``, symbolic links to folders never followed, so link loops cannot recurse).
    Files inside ``outdir`` named like this command's outputs are never taken as inputs, so a run
    whose output folder is (inside) an input folder can be repeated.
    """
    out_key = path_key(outdir) if outdir is not None and outdir.exists() else None

    def own_output(f: Path) -> bool:
        """True for a file inside the output folder named like this command's outputs (never an input)."""
        return out_key is not None and out_key in path_key(f).parents and f.name.endswith(_OWN_OUTPUTS)

    jobs: list[Job] = []
    failures: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path, rel: Path) -> None:
        """Queue ``path`` as a job whose outputs are named after ``rel``, unless the same file is already queued."""
        key = path_key(path)
        if key not in seen:
            seen.add(key)
            jobs.append(Job(path, str(rel)))

    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            errors: list[OSError] = []
            if recursive:
                walker = os.walk(p, followlinks=False, onerror=errors.append)
            else:
                try:
                    walker = [(str(p), [], os.listdir(p))]
                except OSError as e:
                    errors.append(e)
                    walker = []
            n_before = len(jobs)
            for root, dirs, files in walker:
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    f = Path(root) / name
                    if name.startswith(".") or f.suffix.lower() not in _SCANNED or f.is_dir() or own_output(f):
                        continue
                    add(f, f.relative_to(p).with_suffix(""))
            for e in errors:
                failures.append((str(e.filename or p), f"cannot list folder ({e.strerror or e})"))
            if len(jobs) == n_before and not errors:
                hint = " (add -r for sub-folders)" if not recursive and any(c.is_dir() for c in p.iterdir()) else ""
                failures.append((arg, f"no images found in this folder{hint}"))
        elif p.exists() or p.is_symlink():
            add(p, Path(p.stem))
        elif any(ch in arg for ch in "*?["):
            matches = sorted(glob.glob(arg, recursive=recursive))
            if not matches:
                failures.append((arg, "no file matches this pattern"))
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    failures.append((m, "is a directory, not an image (give the folder itself to scan it)"))
                else:
                    add(mp, Path(mp.stem))
        else:
            failures.append((arg, "no such file or folder"))
    # Disambiguate equal output stems (e.g. a/x.jpg and b/x.png given as files).
    for j, stem in zip(jobs, unique_stems([j.stem for j in jobs])):
        j.stem = stem
    return jobs, failures


def unique_stems(stems: list[str], taken: Iterable[str] = ()) -> list[str]:
    """Output stems in order, the n-th repeat of a stem (or of one in ``taken``) renamed ``<stem>_<n>``,
    counting on past any name another input or ``taken`` already has (so no two inputs share outputs)."""
    norm = os.path.normcase  # compared as Path compares them (case-blind on Windows)
    used = {norm(s) for s in taken}
    reserved = used | {norm(s) for s in stems}  # names of the inputs themselves: never given to a repeat
    counts = {key: 1 for key in used}
    out = []
    for stem in stems:
        key = norm(stem)
        if key not in used:
            name = stem
        else:
            n = counts.get(key, 1)
            while norm(f"{stem}_{n}") in reserved or norm(f"{stem}_{n}") in used:
                n += 1
            counts[key] = n + 1
            name = f"{stem}_{n}"
        used.add(norm(name))
        out.append(name)
    return out
