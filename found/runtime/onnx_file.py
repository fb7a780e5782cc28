"""The FOUND ONNX file format, as both the exporter (:mod:`found.export.onnx`) and the runtime
(:mod:`found.runtime.onnx`) read it: input and output names, metadata keys, file checks.

A leaf: it needs the ``onnx`` package only in :func:`read_info`, imported there.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import FoundError, first_line
from ..extras import require
from ..model.preprocess import IMAGENET_MEAN, IMAGENET_STD

#: Value of the ``format`` metadata entry; a runtime refuses files of another format.
FORMAT = "found-onnx/1"
INPUT = "image"
OUTPUTS = ("logits", "cls_attention", "keys")
#: Metadata every FOUND ONNX file holds (``metadata_props``, all strings).
METADATA_KEYS = ("format", "found_version", "model", "patch_size", "embed_dim", "num_heads", "mean", "std",
                 "tau", "coarse", "head_sha256", "quantization")


class OnnxFileError(FoundError):
    """An ONNX file that cannot be used: missing, unreadable, not FOUND's, or not what was asked for."""

    exit_code = 1


@dataclass(frozen=True)
class OnnxInfo:
    """What a FOUND ONNX file says about itself."""

    path: Path
    metadata: dict[str, str]
    patch_size: int
    num_heads: int
    embed_dim: int
    model: str
    tau: float
    coarse: bool  # True: no head in the file (attention and keys only)
    head_sha256: str
    quantization: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


def info_from_metadata(path: Path, meta: dict[str, str], outputs: list[str], inputs: list[str]) -> OnnxInfo:
    """Check FOUND's metadata and graph signature; any problem is one :class:`OnnxFileError` line."""
    if meta.get("format") != FORMAT:
        found = f"format {meta['format']!r}" if "format" in meta else "no FOUND metadata"
        raise OnnxFileError(f"{path}: not a FOUND ONNX file ({found}; expected format {FORMAT!r}: export one with `found export onnx`)")
    missing = [k for k in METADATA_KEYS if k not in meta]
    if missing:
        raise OnnxFileError(f"{path}: FOUND ONNX metadata lacks {', '.join(missing)}")
    try:
        coarse = meta["coarse"] == "1"
        info = OnnxInfo(path, dict(meta), int(meta["patch_size"]), int(meta["num_heads"]), int(meta["embed_dim"]),
                        meta["model"], float(meta["tau"]), coarse, meta["head_sha256"], meta["quantization"],
                        tuple(map(float, json.loads(meta["mean"]))), tuple(map(float, json.loads(meta["std"]))))
    except (ValueError, TypeError) as e:
        raise OnnxFileError(f"{path}: unreadable FOUND ONNX metadata ({e})") from None
    want = list(OUTPUTS[1:] if coarse else OUTPUTS)
    if inputs != [INPUT] or sorted(outputs) != sorted(want):
        raise OnnxFileError(f"{path}: graph has inputs {inputs} and outputs {outputs}; a FOUND file has {[INPUT]} and {want}")
    if (info.mean, info.std) != (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)):
        raise OnnxFileError(f"{path}: file expects normalisation mean {info.mean} / std {info.std}, this version uses ImageNet's")
    return info


def read_info(path: str | os.PathLike) -> OnnxInfo:
    """Metadata of a FOUND ONNX file, read with the ``onnx`` package (no session is built)."""
    onnx = require("onnx", "onnx", "ONNX export")
    path = check_file(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError, among others
        raise OnnxFileError(f"{path}: not a readable ONNX file ({first_line(e)})") from None
    meta = {m.key: m.value for m in proto.metadata_props}
    return info_from_metadata(path, meta, [o.name for o in proto.graph.output], [i.name for i in proto.graph.input])


def check_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or one :class:`OnnxFileError` line when it is not a readable file."""
    path = Path(path)
    if not path.exists():
        raise OnnxFileError(f"{path}: ONNX file not found")
    if not path.is_file():
        raise OnnxFileError(f"{path}: not a file")
    return path


