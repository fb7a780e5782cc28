"""How ``found segment`` resumes: the run journal it opens in its output folder, the settings its
header holds (worded back as flags when a rerun differs), and the sweep of stale temporaries.

The journal (:mod:`found.io.journal`, ``OUTDIR/.found-journal.jsonl``) gets one record per finished
input, appended once the input's outputs are committed; an input counts as done when it has a record
and all its outputs exist. The journal is kept after every run (it is the run files' source: each run
assembles ``boxes.json`` and the COCO file from it); ``--overwrite`` starts it afresh. See
docs/records.md (*The run journal*) and docs/robustness.md (*Crash safety*).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from ..errors import FoundError
from ..hub.weights import ENV_BACKBONE, ENV_HEAD
from ..io.files import remove_stale_temporaries
from ..io.journal import Journal, JournalMismatch, journal_path
from ..io.records import SCHEMA_VERSION, record_from_json, record_to_json
from ..options import RunOptions
from .common import FIELD_FLAGS

#: journal settings that are no flag, as the refusal words them
NOT_FLAGS = {"schema_version": "the record schema version", "version": "the journal format version"}


def _file_setting(value: str | None, env: str | None = None) -> str | None:
    """A weight file as the run names it: absolute, so `a.pth` and `./a.pth` are one setting."""
    value = value or (os.environ.get(env) if env else None)
    return os.path.abspath(value) if value else None


#: RunOptions fields that change a run's records or outputs (not batch_size, workers or debug)
OUTPUT_FIELDS = ("mode", "refine", "max_side", "edges", "max_instances", "min_area", "min_score", "every", "smooth")


def journal_settings(options: RunOptions, args: argparse.Namespace) -> dict:
    """The settings that change a run's records or outputs (the journal header's ``options``): those of
    ``options`` and the model flags; not the output kinds (an input missing one is redone), the
    device, batch size or workers."""
    settings: dict = {"schema_version": SCHEMA_VERSION, **{f: getattr(options, f) for f in OUTPUT_FIELDS}}
    settings["max_side"] = options.max_side or 0  # 0 = native resolution, as the flag says it
    settings.update(model=args.model, weights=_file_setting(args.weights, ENV_BACKBONE),
                    head=_file_setting(getattr(args, "head", None), ENV_HEAD), coarse=bool(getattr(args, "coarse", False)),
                    num_heads=args.num_heads, runtime=getattr(args, "runtime", None),
                    onnx=_file_setting(getattr(args, "onnx", None)), precision=args.precision)
    return settings


def _flag_value(value: object) -> str:
    return "none" if value is None else str(value)


def open_journal(outdir: Path, options: RunOptions, args: argparse.Namespace) -> Journal:
    """The run journal of ``outdir`` (started afresh with --overwrite); another run's settings are a
    one-line usage error naming the flags that differ and --overwrite."""
    try:
        return Journal(journal_path(outdir), journal_settings(options, args), fresh=args.overwrite, encode=record_to_json,
                       decode=record_from_json)
    except JournalMismatch as e:
        what = ", ".join(f"{NOT_FLAGS.get(k) or FIELD_FLAGS.get(k, k)} {_flag_value(old)} → {_flag_value(new)}"
                         for k, (old, new) in e.changed.items())
        raise FoundError(f"{outdir} holds the outputs of a run with other settings ({what}); rerun with the same "
                         f"options to resume, or add --overwrite to start afresh") from None
    except OSError as e:
        raise FoundError(f"output folder {outdir} is not usable: cannot open its journal ({e.strerror or e})") from None


def sweep_temporaries(outdir: Path, coco: str | None, started: float) -> int:
    """Remove the temporaries a killed earlier run left in ``outdir`` (and beside the --coco file),
    only those older than this run's start; returns how many (a line on stderr when any)."""
    removed = 0
    with contextlib.suppress(OSError):  # a folder we may not clean (permissions): its leftovers stay
        removed += remove_stale_temporaries(outdir, older_than=started)
        if coco:
            path = Path(coco)
            removed += remove_stale_temporaries(path.parent, older_than=started, recursive=False, of=path.name)
    if removed:
        print(f"found segment: removed {removed} temporary file{'s' if removed > 1 else ''} left by an interrupted "
              f"run", file=sys.stderr)
    return removed
