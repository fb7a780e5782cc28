"""Resumable training state: head, optimizer, scheduler, RNG states and data position.

Saved atomically (temporary file, then rename) and read back with ``weights_only=True``, so the
file holds tensors and plain Python values only (NumPy/Python RNG states are converted).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import FoundError
from ..hub.weights import atomic_torch_save, load_checkpoint
from .config import SCHEDULE_KEYS, TrainConfig
from .data import Position

FORMAT = "found-train-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """All global RNG states (torch CPU/CUDA, NumPy, Python) in a ``weights_only``-loadable form."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [int(version), torch.tensor(internal, dtype=torch.int64), gauss_next],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNG states saved by :func:`rng_state`, so a resumed run draws the same numbers."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainState:
    """The part of a run that is not re-derived from the config and the data."""

    next_iter: int
    position: Position
    head: dict
    optimizer: dict
    scheduler: dict
    config: dict
    data: dict  # {"n": image count, "digest": file-list hash}
    model: dict  # {"embed_dim", "patch_size"}: the backbone the head belongs to
    epoch_loss: tuple[float, int] = (0.0, 0)  # running loss of the current epoch (progress bar)
    rng: dict | None = None
    elapsed_s: float = 0.0


def save_state(path: Path, st: TrainState) -> None:
    """Write the training state ``st`` to ``path`` atomically (the current RNG states unless ``st`` holds them)."""
    atomic_torch_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "next_iter": st.next_iter,
            "position": [st.position.epoch, st.position.batch],
            "head": st.head,
            "optimizer": st.optimizer,
            "scheduler": st.scheduler,
            "config": st.config,
            "data": st.data,
            "model": st.model,
            "epoch_loss": [float(st.epoch_loss[0]), int(st.epoch_loss[1])],
            "rng": st.rng if st.rng is not None else rng_state(),
            "elapsed_s": float(st.elapsed_s),
        },
        path,
    )


def load_state(path: Path) -> TrainState:
    """Read a checkpoint written by :func:`save_state`; one-line :class:`FoundError` otherwise
    (an unreadable file: its :class:`~found.errors.WeightsError`)."""
    if not path.is_file():
        raise FoundError(f"no training checkpoint at {path}")
    obj = load_checkpoint(path)
    if obj.get("format") != FORMAT:
        raise FoundError(f"{path} is not a `found train` checkpoint (a head file? those cannot be resumed)")
    if int(obj.get("version", 0)) > VERSION:
        raise FoundError(f"{path} was written by a newer version of found (checkpoint v{obj['version']})")
    return TrainState(
        next_iter=int(obj["next_iter"]),
        position=Position(*[int(v) for v in obj["position"]]),
        head=obj["head"],
        optimizer=obj["optimizer"],
        scheduler=obj["scheduler"],
        config=obj["config"],
        data=obj["data"],
        model=obj["model"],
        epoch_loss=(float(obj["epoch_loss"][0]), int(obj["epoch_loss"][1])),
        rng=obj.get("rng"),
        elapsed_s=float(obj.get("elapsed_s", 0.0)),
    )


def check_compatible(st: TrainState, cfg: TrainConfig, data: dict, model: dict, path: Path) -> None:
    """Refuse to resume with another dataset, backbone or schedule (the result would not be the run's)."""
    saved = TrainConfig.from_dict(st.config).to_dict()
    now = cfg.to_dict()
    changed = [f"{k} {saved[k]!r}→{now[k]!r}" for k in SCHEDULE_KEYS if saved[k] != now[k]]
    if changed:
        raise FoundError(f"cannot resume {path}: the run used other settings ({'; '.join(changed)})")
    if st.data != data:
        raise FoundError(
            f"cannot resume {path}: the training images changed ({st.data.get('n')} images, list {st.data.get('digest')} "
            f"in the checkpoint; now {data.get('n')}, {data.get('digest')})"
        )
    if st.model != model:
        raise FoundError(f"cannot resume {path}: it was trained on another backbone ({st.model} vs {model})")
