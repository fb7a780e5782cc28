"""``found download``: fetch a model's published weights into the cache for offline use."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..hub import weights as hub
from ..hub.registry import DEFAULT_MODEL, MODELS, get_model_spec


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``found download`` (pre-fetch weights, or install files fetched by hand) to the sub-commands."""
    p = sub.add_parser("download", help="pre-fetch published weights into the torch hub cache")
    p.add_argument("models", nargs="*", default=[DEFAULT_MODEL], help=f"models to fetch (default {DEFAULT_MODEL}; known: {', '.join(MODELS)})")
    p.add_argument("--from-file", nargs=2, action="append", metavar=("NAME", "PATH"), default=[],
                   help="install a file fetched by hand: NAME is 'backbone' or 'head' of the first model")
    p.add_argument("--list", action="store_true", help="list the registry with URLs and cache state")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fetch, install (``--from-file``) or list (``--list``) the models' weights, so later runs work offline."""
    from ..errors import FoundError

    try:
        specs = [get_model_spec(m) for m in args.models]
    except KeyError as e:
        raise FoundError(e.args[0]) from None
    if args.list:
        for spec in MODELS.values():
            for label, w in (("backbone", spec.backbone), ("head", spec.head)):
                if w is None:
                    continue
                state = "cached" if (hub.cache_dir() / w.filename).is_file() else "not cached"
                print(f"{spec.name:20s} {label:8s} {state:10s} {w.url}")
        return 0
    for kind, path in args.from_file:
        w = specs[0].backbone if kind == "backbone" else specs[0].head
        if kind not in ("backbone", "head") or w is None:
            raise FoundError(f"--from-file NAME must be 'backbone' or 'head' of a model that has one, got {kind!r}")
        print(f"installed {hub.copy_into_cache(Path(path), w)}")
    if args.from_file:
        return 0
    for spec in specs:
        for label, w, env, param in (("backbone", spec.backbone, hub.ENV_BACKBONE, "weights"), ("head", spec.head, hub.ENV_HEAD, "head")):
            if w is not None:
                print(f"{spec.name} {label}: {hub.resolve(w, None, env, param, progress=args.progress)}")
    return 0
