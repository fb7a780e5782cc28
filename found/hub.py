"""Weights on disk: download into the torch hub cache, verify, and load safely.

Files land in ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``), are written to a
temporary name and renamed only when complete and verified, and are loaded with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import torch

from .fileio import atomic_path
from .registry import Arch, Weights

#: Environment variables that point at local weight files (same role as --weights / --head).
ENV_BACKBONE = "FOUND_BACKBONE_WEIGHTS"
ENV_HEAD = "FOUND_HEAD_WEIGHTS"
DOWNLOAD_TIMEOUT_S = 15


class WeightsError(RuntimeError):
    """A weight file is missing, unreachable, corrupt, unsafe or of the wrong architecture."""


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(weights: Weights, dest: Path, progress: bool = True, hint: str = "") -> Path:
    """Download ``weights.url`` to ``dest`` (temporary file, sha256 check, then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(dest) as tmp:
            req = urllib.request.Request(weights.url, headers={"User-Agent": "found"})
            with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                from tqdm.auto import tqdm

                with tqdm(total=total, unit="B", unit_scale=True, desc=weights.filename, disable=not progress) as bar:
                    while block := resp.read(1 << 20):
                        out.write(block)
                        bar.update(len(block))
            if weights.sha256 is not None:
                got = sha256_of(tmp)
                if got != weights.sha256:
                    raise WeightsError(
                        f"downloaded {weights.filename} has sha256 {got[:12]}…, expected {weights.sha256[:12]}…; "
                        "the file was removed — try again or fetch it by hand"
                    )
    except WeightsError:
        raise
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise WeightsError(
            f"cannot download {weights.url} ({reason}); fetch it by hand and {hint or 'pass its path'}, "
            f"or place it at {dest}"
        ) from None
    return dest


def resolve(weights: Weights, local: str | os.PathLike | None, env_var: str, flag: str, progress: bool = True) -> Path:
    """Path of a weight file: explicit path, else ``$env_var``, else the cache (downloading once)."""
    hint = f"pass {flag} PATH or set {env_var}=PATH"
    explicit = local if local is not None else os.environ.get(env_var) or None
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsError(f"weight file {path} does not exist ({weights.filename} expected; {hint})")
        return path
    dest = cache_dir() / weights.filename
    if dest.is_file():
        if weights.sha256 is not None and sha256_of(dest) != weights.sha256:
            dest.unlink()
            raise WeightsError(f"cached {dest} did not match its sha256 and was removed; run again to re-download")
        return dest
    return download(weights, dest, progress=progress, hint=hint)


def load_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)`` on CPU, with one-line errors for unsafe or broken files."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: refused, the file needs more than weights_only=True to load ({first[:160]})") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: not a readable checkpoint (corrupt or truncated?): {msg[:160]}") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj


def backbone_state(obj: dict) -> dict[str, torch.Tensor]:
    """The ViT state dict inside a DINO checkpoint (plain, or ``teacher``/``student`` with prefixes)."""
    for key in ("teacher", "state_dict", "model"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        k = k.removeprefix("module.").removeprefix("backbone.")
        if k.startswith("head."):  # DINO projection head, not part of the backbone
            continue
        out[k] = v
    return out


def infer_arch(state: dict[str, torch.Tensor], num_heads: int | None = None) -> Arch:
    """Read a ViT's size off its state dict (heads are not stored: default head dim 64)."""
    try:
        w = state["patch_embed.proj.weight"]
        pos = state["pos_embed"]
        fc1 = state["blocks.0.mlp.fc1.weight"]
    except KeyError as e:
        raise WeightsError(f"not a DINO ViT checkpoint: missing {e.args[0]!r}") from None
    dim, patch = int(w.shape[0]), int(w.shape[-1])
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    heads = num_heads or max(1, dim // 64)
    return Arch(patch, dim, depth, heads, mlp_ratio=fc1.shape[0] / dim, img_size=grid * patch)


def load_backbone_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a short list of what is missing, unexpected or mis-shaped."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)}≠{tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                parts.append(f"{label}: {', '.join(items[:3])}{' …' if len(items) > 3 else ''} ({len(items)})")
        raise WeightsError(f"{source} does not fit this architecture — " + "; ".join(parts))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def copy_into_cache(path: Path, weights: Weights) -> Path:
    """Install a file fetched by hand into the cache under its expected name (sha256-checked)."""
    if weights.sha256 is not None and sha256_of(path) != weights.sha256:
        raise WeightsError(f"{path} does not match the published sha256 of {weights.filename}")
    dest = cache_dir() / weights.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(path, tmp)
    return dest


def atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
