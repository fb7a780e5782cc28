"""Weights on disk: download into the torch hub cache, verify, and load safely.

Files land in ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``), are written to a
temporary name and renamed only when complete and verified, and are loaded with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import pickle
import re
import shutil
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import WeightsError, first_line
from ..io.files import atomic_path
from .registry import Arch, Weights

#: Environment variables that point at local weight files (same role as the ``weights`` / ``head`` parameters).
ENV_BACKBONE = "FOUND_BACKBONE_WEIGHTS"
ENV_HEAD = "FOUND_HEAD_WEIGHTS"
#: Set to 1 to never touch the network: a missing file fails at once with where to put it.
ENV_OFFLINE = "FOUND_OFFLINE"
#: Seconds for connecting and for each read (so an unreachable host fails within seconds).
DOWNLOAD_TIMEOUT_S = 10


def cache_dir() -> Path:
    """The folder downloaded weights are cached in: torch hub's ``checkpoints`` (shared with torch.hub)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The file's SHA-256 hex digest, read ``chunk`` bytes at a time (weights files are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def download(weights: Weights, dest: Path, progress: bool = True, hint: str = "") -> Path:
    """Download ``weights.url`` to ``dest``: temporary file, size/sha256 (or loadability) check,
    then rename — an interrupted or bad download never leaves a file under ``dest``."""
    hint = hint or "pass its path"
    if _offline():
        raise WeightsError(f"{weights.filename} is not cached and {ENV_OFFLINE} is set; fetch {weights.url} by hand and {hint}, or place it at {dest}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            req = urllib.request.Request(weights.url, headers={"User-Agent": "found"})
            with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                from tqdm.auto import tqdm

                got = 0
                with tqdm(total=total, unit="B", unit_scale=True, desc=weights.filename, disable=not progress) as bar:
                    while block := resp.read(1 << 20):
                        out.write(block)
                        got += len(block)
                        bar.update(len(block))
                if total is not None and got != total:
                    raise ConnectionError(f"download interrupted: got {got} of {total} bytes")
            if weights.sha256 is not None:
                digest = sha256_of(tmp)
                if digest != weights.sha256:
                    raise WeightsError(
                        f"downloaded {weights.url} has sha256 {digest[:12]}…, expected {weights.sha256[:12]}…; "
                        f"the file was removed (nothing kept at {dest}) — try again, or fetch it by hand and {hint}"
                    )
            else:  # no published hash: at least make sure it is a checkpoint, not an error page
                try:
                    load_checkpoint(tmp)
                except WeightsError as e:
                    raise WeightsError(f"downloaded {weights.url} is not a usable checkpoint and was removed: {str(e).split(': ', 1)[-1]}") from None
    except WeightsError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        local = isinstance(e, OSError) and not isinstance(e, urllib.error.URLError) and (
            e.filename is not None or e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM))
        if local:
            raise WeightsError(
                f"cannot save {weights.filename} to {dest.parent} ({e.strerror or e}); nothing was kept — "
                f"free space or set TORCH_HOME to a writable folder, or fetch {weights.url} by hand and {hint}"
            ) from None
        if isinstance(e, http.client.IncompleteRead):
            reason = "download interrupted: the connection closed before the end"
        else:
            reason = getattr(e, "reason", None) or e
        raise WeightsError(
            f"cannot download {weights.url} ({reason}); fetch it by hand and {hint}, or place it at {dest}"
        ) from None
    return dest


def resolve(weights: Weights, local: str | os.PathLike | None, env_var: str, param: str, progress: bool = True) -> Path:
    """Path of a weight file: explicit path, else ``$env_var``, else the cache (downloading once);
    messages name the parameter ``param`` that takes a local file (``weights=PATH``)."""
    hint = f"pass {param}=PATH or set {env_var}=PATH"
    explicit = local if local is not None else os.environ.get(env_var) or None
    if explicit is not None:
        return existing_file(explicit, f"{weights.filename} expected; {hint}", allow_hf_dir=True)
    dest = cache_dir() / weights.filename
    if dest.is_file():
        if weights.sha256 is not None and sha256_of(dest) != weights.sha256:
            dest.unlink()
            raise WeightsError(f"cached {dest} did not match its sha256 and was removed; run again to download {weights.url}")
        return dest
    return download(weights, dest, progress=progress, hint=hint)


def existing_file(path: str | os.PathLike, hint: str = "", allow_hf_dir: bool = False) -> Path:
    """``path`` as a Path if it is a regular file (or, with ``allow_hf_dir``, a ``transformers``
    ``save_pretrained`` directory), else a one-line WeightsError saying what it is."""
    p = Path(path).expanduser()
    if allow_hf_dir and p.is_dir() and (p / "config.json").is_file():
        return p
    what = "is a directory" if p.is_dir() else "does not exist" if not p.exists() else "is not a regular file" if not p.is_file() else ""
    if what:
        raise WeightsError(f"weight file {p} {what}" + (f" ({hint})" if hint else ""))
    return p


def _is_safetensors(path: Path, head: bytes) -> bool:
    """A ``.safetensors`` file: 8-byte little-endian header length, then a JSON header."""
    return Path(path).suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 28)


def load_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)`` on CPU (``.safetensors`` through the optional extra),
    with one-line errors for unsafe or broken files."""
    in_cache = Path(path).parent == cache_dir() and not Path(path).name.endswith(".part")
    fix = "; delete it to download it again" if in_cache else ""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from None
    magic = head[:4]
    if magic and _is_safetensors(path, head):
        from .hf import load_safetensors

        return load_safetensors(Path(path))
    if not magic:
        raise WeightsError(f"{path}: empty file (0 bytes), not a checkpoint{fix}")
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        raise WeightsError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle){fix}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).split("WeightsUnpickler error:", 1)[-1].strip()
        first = detail.splitlines()[0].strip() if detail else first_line(e)
        if "global" in first.lower():
            raise WeightsError(f"{path}: refused, the file needs more than weights_only=True to load, i.e. it "
                               f"would run code from the file ({first[:160]}); only plain tensors are accepted") from None
        raise WeightsError(f"{path}: refused, cannot be loaded with weights_only=True (corrupt, or a pickle of "
                           f"arbitrary Python objects: {first[:120]}){fix}") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError, KeyError, AttributeError, TypeError) as e:
        raise WeightsError(f"{path}: not a readable checkpoint (corrupt or truncated?): {first_line(e)}{fix}") from None
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


def read_backbone(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The backbone state dict (official key names) and, for a ``transformers`` checkpoint, its
    ``config.json`` ({} otherwise): a DINO/DINOv2 file, or a ``transformers`` file or directory."""
    from . import hf

    path = Path(path)
    config: dict = {}
    if path.is_dir():
        config = hf.read_config(path)
        path = hf.weight_file(path)
    elif path.parent.joinpath("config.json").is_file() and path.name in hf.HF_WEIGHT_FILES:
        config = hf.read_config(path.parent)
    state = backbone_state(load_checkpoint(path))
    if hf.is_hf_state(state):
        state = hf.convert_hf_state(state)
    else:
        config = {}
    return unchunk_blocks(state), config


_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")


def unchunk_blocks(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DINOv2 ``block_chunks > 0`` keys (``blocks.<chunk>.<i>.…``, ``i`` the global block index) → ``blocks.<i>.…``."""
    if not any(_CHUNKED.match(k) for k in state):
        return state
    return {_CHUNKED.sub(r"blocks.\1.", k): v for k, v in state.items()}


def is_dinov2_state(state: dict[str, torch.Tensor]) -> bool:
    """DINOv2 layout: LayerScale (``ls1``/``ls2``), ``register_tokens`` or ``mask_token``."""
    return "mask_token" in state or "register_tokens" in state or any(".ls1." in k for k in state)


def infer_arch(state: dict[str, torch.Tensor], num_heads: int | None = None, config: dict | None = None) -> Arch:
    """Read a ViT's size off its state dict: DINO, or DINOv2 (patch 14, LayerScale, registers, SwiGLU)
    recognised by its keys. Heads are not stored: ``config`` (``num_attention_heads``), else head dim 64."""
    from ..model.backbone.layers.swiglu import swiglu_hidden

    config = config or {}
    dinov2 = is_dinov2_state(state)
    swiglu = "blocks.0.mlp.w12.weight" in state
    try:
        w = state["patch_embed.proj.weight"]
        pos = state["pos_embed"]
        fc1 = state["blocks.0.mlp.w12.weight" if swiglu else "blocks.0.mlp.fc1.weight"]
    except KeyError as e:
        found = ", ".join(list(state)[:4]) or "no tensors"
        raise WeightsError(f"not a DINO ViT checkpoint: missing {e.args[0]!r} (found {found}{' …' if len(state) > 4 else ''})") from None
    try:
        dim, patch = int(w.shape[0]), int(w.shape[-1])
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        grid = int(round((pos.shape[1] - 1) ** 0.5))
        mlp_ratio = fc1.shape[0] / dim
        if swiglu:  # DINOv2's hidden width is 2/3 of dim·ratio rounded to 8: ViT-g/14 has ratio 4
            hidden = fc1.shape[0] // 2
            mlp_ratio = 4.0 if swiglu_hidden(dim, 4.0) == hidden else hidden * 1.5 / dim
        registers = int(state["register_tokens"].shape[1]) if "register_tokens" in state else 0
    except (IndexError, ValueError, ZeroDivisionError) as e:
        raise WeightsError(f"not a DINO ViT checkpoint: unexpected tensor shapes ({first_line(e)})") from None
    heads = num_heads or int(config.get("num_attention_heads") or 0) or max(1, dim // 64)
    if dim % heads:
        raise WeightsError(f"the checkpoint's embed dim {dim} is not divisible by {heads} attention heads (num_heads=N)")
    if not dinov2:
        return Arch(patch, dim, depth, heads, mlp_ratio=mlp_ratio, img_size=grid * patch)
    return Arch(patch, dim, depth, heads, mlp_ratio=mlp_ratio, img_size=grid * patch, family="dinov2",
                num_register_tokens=registers, ffn="swiglu" if swiglu else "mlp",
                layer_scale=any(k.endswith(".ls1.gamma") for k in state))


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
    # assign: the checkpoint's tensors become the parameters (the model may be built on the meta device)
    model.load_state_dict({k: v.float().contiguous() for k, v in state.items()}, strict=True, assign=True)


def copy_into_cache(path: Path, weights: Weights) -> Path:
    """Install a file fetched by hand into the cache under its expected name (sha256-checked when
    a hash is published, else checked to load as a weights-only checkpoint)."""
    path = existing_file(path)
    if weights.sha256 is not None:
        if sha256_of(path) != weights.sha256:
            raise WeightsError(f"{path} does not match the published sha256 of {weights.filename} ({weights.url}); nothing installed")
    else:
        load_checkpoint(path)
    dest = cache_dir() / weights.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(path, tmp)
    return dest


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` to ``path`` atomically (parents created): a crash never leaves a partial file there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
