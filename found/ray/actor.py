"""The worker side: :class:`SegmentActor` builds the model once and runs the engine on chunks of inputs."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from ..engine import Engine, Result
from ..errors import FoundError, one_line
from ..options import RunOptions
from .sources import Item, is_uri, read_bytes
from .stores import open_store
from .table import result_row, table_schema


@dataclass(frozen=True)
class RunConfig:
    """What every actor needs (pickled once per actor): model options, where outputs go, and the run's
    :class:`~found.options.RunOptions` (``options.workers``: decoding threads inside an actor, default 0).
    The run options' fields read through (``config.max_side`` is ``config.options.max_side``)."""

    model_options: dict
    outdir: str
    kinds: tuple[str, ...] = ("mask",)
    options: RunOptions = field(default_factory=lambda: RunOptions(workers=0))
    threads: int = 1  # torch threads per actor (its CPUs)

    def __getattr__(self, name: str) -> Any:
        if name in _RUN_FIELDS and "options" in self.__dict__:
            return getattr(self.__dict__["options"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


_RUN_FIELDS = frozenset(f.name for f in fields(RunOptions))


class SegmentActor:
    """A Ray Data callable class: the model is built once per actor; each call runs the engine on
    chunks of inputs, writes their outputs and returns their rows (a pyarrow Table).

    Subclass it (``segment_with_ray(actor_class=…)``) to add columns or hooks; keep :meth:`write`
    atomic so a retried chunk never leaves half an output.
    """

    def __init__(self, config: RunConfig) -> None:
        import torch

        from ..hub.build import build_found

        torch.set_num_threads(max(1, config.threads))
        self.config = config
        model = build_found(**{**config.model_options, "progress": False})
        self.engine = Engine(model, config.options)
        self.store = open_store(config.outdir, list(config.kinds))

    def __call__(self, batch: dict) -> Any:
        """The rows of a Ray Data batch of chunks, as a pyarrow Table."""
        import pyarrow as pa

        rows: list[dict] = []
        for chunk in batch["items"]:
            rows.extend(self.segment([Item(*x) for x in json.loads(str(chunk))]))
        return pa.Table.from_pylist(rows, schema=table_schema())

    def segment(self, items: list[Item]) -> list[dict]:
        """Rows of one chunk (at most ``batch_size`` inputs: one engine chunk, as ``found segment`` forms it)."""
        sources: list[Any] = []
        read_errors: dict[int, str] = {}
        for i, it in enumerate(items):
            if is_uri(it.source):
                try:
                    sources.append(read_bytes(it.source))
                except (OSError, FoundError) as e:
                    read_errors[i] = f"cannot read ({one_line(e)})"
            else:
                sources.append(it.source)
        results = iter(self.engine.run(sources))
        rows = []
        for i, it in enumerate(items):
            if i in read_errors:
                rows.append(result_row(it, None, read_errors[i]))
                continue
            result = next(results)
            error = None
            if result.ok:
                try:
                    self.write(result, it.stem)
                except OSError as e:
                    error = f"cannot write outputs: {e.strerror or one_line(e)} (nothing written for this image)"
            rows.append(result_row(it, result, error))
        return rows

    def write(self, result: Result, stem: str) -> None:
        """All outputs of one input, atomically (a rerun of the chunk writes the same bytes)."""
        self.store.write(result, stem)
