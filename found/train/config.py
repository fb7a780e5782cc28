"""Training configuration: the authors' ``configs/found_DUTS-TR.yaml`` as a dataclass.

Values can be overridden from a JSON or YAML file (flat keys of :class:`TrainConfig`, or the
authors' nested layout with ``training:``/``found:``/``evaluation:`` sections) and from the
command line (``--set KEY=VALUE``).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import FoundError

CROPPING_STRATEGIES = ("random_scale", "random_crop", "random_crop_and_hflip", "center_crop")
PHOTOMETRIC_AUGS = ("gaussian_blur", "none")
KEEP_MODES = ("all", "largest")

#: Keys that decide the data order, the augmentations or the updates: a resumed run must keep them.
SCHEDULE_KEYS = (
    "seed", "batch_size", "lr0", "step_lr_size", "step_lr_gamma", "w_bs_loss", "w_self_loss",
    "stop_bkg_loss", "crop_size", "scale_range", "photometric_aug", "proba_photometric_aug",
    "cropping_strategy", "bkg_th", "reweight", "keep", "drop_last",
)


@dataclass
class TrainConfig:
    """Self-training hyper-parameters; the defaults are the authors' DUTS-TR run."""

    # optimisation (training: section of found_DUTS-TR.yaml)
    seed: int = 0
    max_iter: int = 500  # last iteration index, as the authors: iterations 0…max_iter are all trained
    nb_epochs: int = 3  # the authors' cap on passes over the data (never binds on DUTS-TR)
    batch_size: int = 50
    lr0: float = 5e-2
    step_lr_size: int = 50
    step_lr_gamma: float = 0.95
    w_bs_loss: float = 1.5  # weight of BCE(pred, solver-refined own prediction), all iterations
    w_self_loss: float = 4.0  # weight of BCE(pred, own binarised prediction), from stop_bkg_loss on
    stop_bkg_loss: int = 100  # the coarse-mask loss is used for iterations < this
    drop_last: bool = False  # the authors keep the last, partial batch of every epoch
    # augmentations
    crop_size: int = 224
    scale_range: tuple[float, float] = (0.1, 3.0)
    photometric_aug: str = "gaussian_blur"
    proba_photometric_aug: float = 0.5
    cropping_strategy: str = "random_scale"
    # FOUND step 1 and the bilateral solver
    bkg_th: float = 0.3
    reweight: bool = True  # β-reweighting of heads in background discovery (authors: apply_weights=True)
    keep: str = "all"  # components kept by the solver; training always uses get_all_cc=True
    # running the loop (no effect on the result)
    num_workers: int = 2
    checkpoint_every: int = 50  # full training state (resumable), atomically
    save_model_freq: int = 250  # head snapshots decoder_weights_niter{n}.pt (authors' default)
    visualize_every: int = 50  # sample-prediction grids (authors' --visualization-freq)
    eval_every: int = 50  # periodic saliency evaluation when an evaluation set is given
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes stored with the run

    def __post_init__(self) -> None:
        self.scale_range = tuple(float(v) for v in self.scale_range)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise :class:`FoundError` on values the loop cannot use."""
        def need(ok: bool, msg: str) -> None:
            """Raise a FoundError naming the training config unless ``ok``."""
            if not ok:
                raise FoundError(f"training config: {msg}")

        need(self.max_iter >= 0, f"max_iter must be ≥ 0, got {self.max_iter}")
        need(self.nb_epochs >= 1, f"nb_epochs must be ≥ 1, got {self.nb_epochs}")
        need(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        need(self.lr0 > 0, f"lr0 must be > 0, got {self.lr0}")
        need(self.step_lr_size >= 1, f"step_lr_size must be ≥ 1, got {self.step_lr_size}")
        need(self.crop_size >= 8, f"crop_size must be ≥ 8, got {self.crop_size}")
        need(len(self.scale_range) == 2 and 0 < self.scale_range[0] <= self.scale_range[1],
             f"scale_range must be (lo, hi) with 0 < lo ≤ hi, got {self.scale_range}")
        need(self.cropping_strategy in CROPPING_STRATEGIES,
             f"cropping_strategy {self.cropping_strategy!r} not supported (choose from {', '.join(CROPPING_STRATEGIES)})")
        need(self.photometric_aug in PHOTOMETRIC_AUGS,
             f"photometric_aug {self.photometric_aug!r} not supported (choose from {', '.join(PHOTOMETRIC_AUGS)})")
        need(0.0 <= self.proba_photometric_aug <= 1.0, "proba_photometric_aug must be in [0, 1]")
        need(self.keep in KEEP_MODES, f"keep must be one of {KEEP_MODES}, got {self.keep!r}")
        need(self.num_workers >= 0, "num_workers must be ≥ 0")
        for k in ("checkpoint_every", "save_model_freq", "visualize_every", "eval_every"):
            need(getattr(self, k) >= 0, f"{k} must be ≥ 0 (0 turns it off)")

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        """The config as flat JSON-ready keys (``scale_range`` as a list)."""
        d = dataclasses.asdict(self)
        d["scale_range"] = list(self.scale_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from flat keys (unknown keys are an error, so typos do not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FoundError(f"training config: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**{k: _coerce(k, v) for k, v in d.items()})

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied, validated again."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def _field_types() -> dict[str, Any]:
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory() for f in fields(TrainConfig)}


def _coerce(key: str, value: Any) -> Any:
    """Convert a value (possibly a command-line string) to the type of the field's default."""
    default = _field_types()[key]
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return low in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, int):
            f = float(value)
            if f != int(f):
                raise ValueError(value)
            return int(f)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = [v for v in value.replace("[", "").replace("]", "").replace("(", "").replace(")", "").split(",") if v.strip()]
            return tuple(float(v) for v in value)
        if isinstance(default, dict):
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return value
        return str(value)
    except (TypeError, ValueError, json.JSONDecodeError):
        raise FoundError(f"training config: {key}={value!r} is not a valid {type(default).__name__}") from None


#: The authors' nested YAML keys that map onto TrainConfig fields.
_NESTED = {("found", "bkg_th"): "bkg_th", ("evaluation", "freq"): "eval_every"}
_IGNORED_SECTIONS = {"model"}  # the backbone is chosen with --model/--weights
_IGNORED_KEYS = {("training", "dataset"), ("training", "dataset_set"), ("found", "feats"),
                 ("evaluation", "type"), ("evaluation", "datasets")}


def flatten_authors_config(d: dict[str, Any]) -> dict[str, Any]:
    """Map the authors' ``{model:, found:, training:, evaluation:}`` layout onto flat keys."""
    flat: dict[str, Any] = {}
    for section, body in d.items():
        if not isinstance(body, dict):
            flat[section] = body
            continue
        if section in _IGNORED_SECTIONS:
            continue
        for k, v in body.items():
            if (section, k) in _IGNORED_KEYS:
                continue
            if (section, k) in _NESTED:
                flat[_NESTED[(section, k)]] = v
            elif section == "training":
                flat[k] = v
            else:
                flat[f"{section}.{k}"] = v  # reported as unknown by from_dict
    return flat


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read overrides from a ``.json`` or ``.yaml``/``.yml`` file (flat or the authors' layout)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise FoundError(f"cannot read config {p}: {e.strerror or e}") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ModuleNotFoundError:
            raise FoundError(f"{p}: reading YAML needs PyYAML (pip install pyyaml), or use a JSON file") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise FoundError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise FoundError(f"{p}: not valid JSON ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FoundError(f"{p}: expected a mapping of config keys")
    if any(isinstance(v, dict) for k, v in data.items() if k != "extra"):
        data = flatten_authors_config(data)
    return data


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr0=0.01", "max_iter=10"]`` → ``{"lr0": "0.01", "max_iter": "10"}`` (typed later)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise FoundError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out
