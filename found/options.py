"""Run options: what one run of the engine does, validated once, in one frozen object.

:class:`RunOptions` is shared by every surface: the library (``Engine(model, options)``,
``found.segment(inputs, model, **options)``), ``found segment`` (its flags build one), the server
(:class:`found.serve.Settings` holds one: the defaults a request may change) and Ray (each actor
gets it pickled inside :class:`found.ray.RunConfig`). A bad value raises an
:class:`~found.errors.OptionsError` whose message names the field (``batch_size must be at least
1, got 0``); the CLI words the same error with its flag (``--batch-size must be …``).

Each rule lives here once, in :data:`RULES`; :func:`check` applies one rule where a single value is
taken outside a RunOptions (``Found.predict``'s ``mode`` and ``batch_size``, a video's ``every``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from numbers import Integral, Real
from typing import Any, Callable

import numpy as np

from .errors import OptionsError
from .model.instances import InstanceFilter

#: Mask modes: ``multi`` keeps the whole mask, ``single`` its main component (the authors' rule).
MODES = ("multi", "single")
#: How a mask made at the working scale is brought to full size for cut-outs: ``guided`` follows the
#: full-size image's edges (fast guided filter, :mod:`found.model.edges`), ``bilinear`` stretches it.
EDGES = ("guided", "bilinear")
#: The working scale: images whose longer side exceeds this are processed reduced to it (``max_side``;
#: 0 or None = native). 400 px is the scale at which the paper measured its masks (ECSSD, DUTS-TE and
#: DUT-OMRON images have a longer side of at most 400 px; VOC's is 500, COCO's 640, and the head was
#: trained on 224² crops): inside the evaluated regime, and ~10× fewer tokens than 1024 px.
DEFAULT_MAX_SIDE = 400


def _integer(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    """A rule: the value is one of ``choices``."""
    return lambda v: None if isinstance(v, str) and v in choices else f"must be one of {choices}, got {v!r}"


def _flag(v: Any) -> str | None:
    return None if isinstance(v, (bool, np.bool_)) else f"must be True or False, got {v!r}"


def _at_least_one(v: Any) -> str | None:
    return None if _integer(v) and v >= 1 else f"must be at least 1, got {v!r}"


def _max_side(v: Any) -> str | None:
    ok = v is None or (_integer(v) and v >= 0)
    return None if ok else f"must be 0 (no cap) or a positive number of pixels, got {v!r}"


def _workers(v: Any) -> str | None:
    ok = v is None or (_integer(v) and v >= 0)
    return None if ok else f"must be 0 (no threads) or a positive number, got {v!r}"


def _smooth(v: Any) -> str | None:
    ok = v is None or (isinstance(v, Real) and not isinstance(v, bool) and not math.isnan(v) and 0 < v <= 1)
    return None if ok else f"must be in (0, 1] (1 = no smoothing), got {v!r}"


#: field → its rule: None when the value is fine, else what is wrong (worded after the field's name).
RULES: dict[str, Callable[[Any], str | None]] = {
    "mode": _one_of(MODES),
    "refine": _flag,
    "batch_size": _at_least_one,
    "max_side": _max_side,
    "edges": _one_of(EDGES),
    "workers": _workers,
    "every": _at_least_one,
    "smooth": _smooth,
    "debug": _flag,
}


def check(field: str, value: Any, name: str | None = None) -> Any:
    """``value`` if it passes ``field``'s rule, else an OptionsError naming ``name`` (default: the field)."""
    why = RULES[field](value)
    if why is not None:
        raise OptionsError(name or field, why)
    return value


@dataclass(frozen=True)
class RunOptions:
    """How a run segments its inputs (validated on creation; frozen, so safe to share and pickle).

    * ``mode``: ``"multi"`` (whole mask) or ``"single"`` (its main component); ``refine``: bilateral solver;
    * ``batch_size``: inputs per forward pass (same-size images batched); ``workers``: decoding threads
      (None: min(4, CPUs); 0: decode in the caller's thread);
    * ``max_side``: the working scale (None or 0: native resolution); ``edges``: how cut-outs of reduced
      images reach full size (:data:`EDGES`);
    * ``max_instances`` / ``min_area`` / ``min_score``: the instance filter
      (:class:`~found.model.instances.InstanceFilter`);
    * ``every`` / ``smooth``: videos: the model runs on one frame in ``every``; ``smooth`` (alpha in
      (0, 1]) averages the logits over frames;
    * ``debug``: raise an inference error instead of returning it as the input's result.
    """

    mode: str = "multi"
    refine: bool = False
    batch_size: int = 8
    max_side: int | None = DEFAULT_MAX_SIDE
    edges: str = "guided"
    workers: int | None = None
    max_instances: int | None = None
    min_area: float = 0.0
    min_score: float = 0.0
    every: int = 1
    smooth: float | None = None
    debug: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in RULES:
                check(f.name, getattr(self, f.name))
        if self.max_side == 0:
            object.__setattr__(self, "max_side", None)
        flt = InstanceFilter(self.max_instances, self.min_area, self.min_score)  # its own rules, fields named
        object.__setattr__(self, "_filter", None if flt == InstanceFilter() else flt)

    @property
    def instance_filter(self) -> InstanceFilter | None:
        """The instance filter of ``max_instances`` / ``min_area`` / ``min_score`` (None: keep every instance)."""
        return self._filter  # type: ignore[attr-defined]

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with ``changes`` (validated as a new RunOptions)."""
        return replace(self, **changes)

    @classmethod
    def from_keywords(cls, instance_filter: InstanceFilter | None = None, **keywords: Any) -> RunOptions:
        """RunOptions of keyword arguments, taking the filter as an :class:`InstanceFilter` too."""
        unknown = sorted(set(keywords) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown run option {unknown[0]!r} (run options: {', '.join(f.name for f in fields(cls))})")
        if instance_filter is not None:
            keywords.update(max_instances=instance_filter.max_instances, min_area=instance_filter.min_area,
                            min_score=instance_filter.min_score)
        return cls(**keywords)
