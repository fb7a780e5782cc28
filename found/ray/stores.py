"""Where outputs go: one :class:`Store` protocol, a local folder (:class:`LocalStore`) or a URI (:class:`UriStore`)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Protocol

from ..engine import Result
from ..errors import FoundError, one_line
from ..io.files import temp_name
from ..io.sources import path_key
from ..io.sinks import ImageOutputs
from .sources import Item, filesystem, is_uri


class Store(Protocol):
    """A run's output location: each input's image outputs (atomic groups) and named files (the table)."""

    @property
    def location(self) -> str:
        """The location as the actors open it again (an absolute folder or the URI as given)."""

    @property
    def local_dir(self) -> Path | None:
        """The local output folder, or None when outputs go to a URI."""

    def prepare(self) -> None:
        """Create the location, or a FoundError saying why it is not usable."""

    def existing(self, stems: list[str]) -> set[str]:
        """The stems whose image outputs all exist."""

    def write(self, result: Result, stem: str) -> None:
        """All image outputs of one input, each file whole or absent."""

    def refuse_overwriting(self, items: list[Item], table: str) -> None:
        """A FoundError when an output or the table would overwrite one of the inputs."""

    def file(self, name: str) -> str:
        """Where the file ``name`` is, as a path or URI for messages and readers."""

    def read(self, name: str) -> bytes | None:
        """The bytes of the file ``name``, or None when absent or unreadable."""

    def write_file(self, name: str, data: bytes) -> None:
        """Write the file ``name`` whole (temporary name, then rename where the file system has one)."""

    def list(self, folder: str) -> list[str]:
        """The names of the .parquet files in ``folder``, sorted."""

    def remove(self, name: str) -> None:
        """Delete the file or folder ``name`` (nothing when absent)."""


class LocalStore:
    """Outputs in a local folder: :class:`ImageOutputs` (atomic groups) and the table beside them."""

    def __init__(self, outdir: str | Path, kinds: list[str]) -> None:
        self.outdir = Path(outdir)
        self.images = ImageOutputs(self.outdir, kinds)

    @property
    def location(self) -> str:
        """The output folder as a string."""
        return str(self.outdir)

    @property
    def local_dir(self) -> Path | None:
        """The output folder."""
        return self.outdir

    def prepare(self) -> None:
        """Create the folder, or a FoundError saying why it is not usable."""
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FoundError(f"output folder {self.outdir} is not usable: {e.strerror or e}") from None
        if not self.outdir.is_dir():
            raise FoundError(f"output {self.outdir} exists and is not a folder")

    def existing(self, stems: list[str]) -> set[str]:
        """The stems whose image outputs all exist."""
        return {s for s in stems if self.images.exist(s)}

    def write(self, result: Result, stem: str) -> None:
        """All image outputs of one input, atomically."""
        self.images.write(result, stem)

    def refuse_overwriting(self, items: list[Item], table: str) -> None:
        """A FoundError when an output or the table would overwrite one of the (local) inputs."""
        inputs = {path_key(Path(it.source)) for it in items if not is_uri(it.source)}
        if path_key(self.outdir / table) in inputs:
            raise FoundError(f"{self.outdir / table} is an input; choose another output folder")
        for it in items:
            for out in self.images.paths(it.stem):
                if path_key(out) in inputs:
                    raise FoundError(f"output {out} would overwrite an input; choose another output folder")

    def file(self, name: str) -> str:
        """The path of the file ``name``."""
        return str(self.outdir / name)

    def read(self, name: str) -> bytes | None:
        """The bytes of the file ``name``, or None when it is not a file."""
        p = self.outdir / name
        return p.read_bytes() if p.is_file() else None

    def write_file(self, name: str, data: bytes) -> None:
        """Write the file ``name`` atomically (its folder created)."""
        from ..io.files import atomic_write_bytes

        (self.outdir / name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.outdir / name, data)

    def list(self, folder: str) -> list[str]:
        """The names of the .parquet files in ``folder``, sorted."""
        d = self.outdir / folder
        return sorted(f"{folder}/{p.name}" for p in d.iterdir() if p.suffix == ".parquet") if d.is_dir() else []

    def remove(self, name: str) -> None:
        """Delete the file or folder ``name``."""
        p = self.outdir / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


class UriStore:
    """Outputs under a URI (``s3://bucket/run``, ``file:///…``): each input's PNGs are made in a local
    temporary folder by :class:`ImageOutputs`, then uploaded, each file under its final name (an
    object store shows an object whole or not at all; a local file system gets a rename)."""

    def __init__(self, uri: str, kinds: list[str]) -> None:
        self.given, self.uri, self.kinds = uri, uri.rstrip("/"), list(kinds)
        self.fs, self.base = filesystem(self.uri)
        self.images = ImageOutputs(Path("."), kinds)  # for the output names only

    @property
    def location(self) -> str:
        """The URI as given."""
        return self.given

    @property
    def local_dir(self) -> Path | None:
        """None: the outputs are not in a local folder."""
        return None

    def prepare(self) -> None:
        """Create the prefix, or a FoundError saying why it is not usable."""
        try:
            self.fs.create_dir(self.base, recursive=True)
        except OSError as e:
            raise FoundError(f"output {self.uri} is not usable: {one_line(e)}") from None

    def _key(self, name: str) -> str:
        """The filesystem path of the file ``name``."""
        return f"{self.base}/{name}"

    def existing(self, stems: list[str]) -> set[str]:
        """The stems whose image outputs all exist (one listing of the prefix)."""
        from pyarrow import fs as pafs

        files = {f.path for f in self.fs.get_file_info(pafs.FileSelector(self.base, recursive=True, allow_not_found=True))}
        return {s for s in stems if all(self._key(str(p)) in files for p in self.images.paths(s))}

    def write(self, result: Result, stem: str) -> None:
        """All image outputs of one input, made locally, then uploaded file by file."""
        with tempfile.TemporaryDirectory(prefix="found-out-") as tmp:
            ImageOutputs(Path(tmp), self.kinds).write(result, stem)
            for p in ImageOutputs(Path(tmp), self.kinds).paths(stem):
                self.write_file(str(p.relative_to(tmp)), p.read_bytes())

    def refuse_overwriting(self, items: list[Item], table: str) -> None:
        """Nothing: inputs are not checked against outputs under a URI."""

    def file(self, name: str) -> str:
        """The URI of the file ``name``."""
        return f"{self.uri}/{name}"

    def read(self, name: str) -> bytes | None:
        """The bytes of the file ``name``, or None when it cannot be read."""
        try:
            with self.fs.open_input_stream(self._key(name)) as f:
                return f.read()
        except (FileNotFoundError, OSError):
            return None

    def write_file(self, name: str, data: bytes) -> None:
        """Write the file ``name`` whole (a temporary name and a rename on a local file system)."""
        key = self._key(name)
        self.fs.create_dir(key.rsplit("/", 1)[0], recursive=True)
        local = self.fs.type_name == "local"
        folder, _, leaf = key.rpartition("/")
        tmp = f"{folder}/{temp_name(leaf)}" if local else key
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        if local:
            self.fs.move(tmp, key)

    def list(self, folder: str) -> list[str]:
        """The names of the .parquet files in ``folder``, sorted."""
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self._key(folder), allow_not_found=True))
        return sorted(f"{folder}/{f.base_name}" for f in infos if f.base_name.endswith(".parquet"))

    def remove(self, name: str) -> None:
        """Delete the file or folder ``name``."""
        from pyarrow import fs as pafs

        info = self.fs.get_file_info(self._key(name))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self._key(name))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self._key(name))


def open_store(outdir: str | Path, kinds: list[str]) -> Store:
    """The output location: a local folder, or any URI pyarrow knows (s3://, gs://, hdfs://, file://)."""
    return UriStore(str(outdir), kinds) if is_uri(str(outdir)) else LocalStore(Path(outdir).absolute(), kinds)
