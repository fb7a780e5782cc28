"""``found serve``: an HTTP API and a web page for FOUND (needs the ``serve`` extra).

The model loads once, before the server starts; requests that arrive together share a forward
pass (dynamic batching). Binds 127.0.0.1 unless --host says otherwise. See docs/serve.md.
"""
from __future__ import annotations

import argparse
import sys

from ..engine import DEFAULT_MAX_SIDE, EDGES, MODES
from ..errors import FoundError
from ..extras import require
from .common import add_model_args, check_model_args, model_from_args, run_options_from_args

MiB = 1 << 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``found serve``: address, default run options, batching and limits, access and model flags."""
    from ..serve.settings import ENV_API_KEY, Settings

    d = Settings()
    p = sub.add_parser("serve", help="serve FOUND over HTTP (API + web page)", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--mode", choices=MODES, default="multi", help="default mask mode of requests")
    p.add_argument("--refine", action="store_true", help="refine masks by default (requests can still choose)")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, metavar="PX",
                   help=f"process images whose longer side exceeds PX at that size; answers stay at full size (default {DEFAULT_MAX_SIDE}; 0 = never)")
    p.add_argument("--edges", choices=EDGES, default="guided",
                   help="cut-outs of reduced images: guided = follow the full-size image's edges (default), bilinear = stretched")
    b = p.add_argument_group("batching and limits")
    b.add_argument("--max-batch", type=int, default=d.max_batch, help=f"requests per forward pass (default {d.max_batch}; 1 = no batching)")
    b.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, help=f"longest wait for more requests to join a batch (default {d.max_wait_ms:g})")
    b.add_argument("--queue-size", type=int, default=d.queue_size, help=f"requests in progress at once; more get 503 (default {d.queue_size})")
    b.add_argument("--timeout", type=float, default=d.timeout_s, metavar="S", help=f"request timeout in seconds (503 after it; default {d.timeout_s:g})")
    b.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / MiB, metavar="MB", help=f"largest upload, MiB (413 above; default {d.max_upload_bytes / MiB:g})")
    b.add_argument("--max-pixels", type=float, default=d.max_pixels / 1e6, metavar="MPX", help=f"largest image, megapixels, read from its header (413 above; default {d.max_pixels / 1e6:g})")
    b.add_argument("--workers", type=int, default=d.workers, help=f"threads that decode uploads and encode answers (default {d.workers})")
    s = p.add_argument_group("access")
    s.add_argument("--api-key", help=f"require this key on /v1/ (Authorization: Bearer KEY or X-API-Key); default ${ENV_API_KEY}")
    s.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN", help="allow this origin by CORS (repeatable; default: CORS off)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"], help="server log level")
    add_model_args(p)
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace):
    """The server's :class:`~found.serve.Settings` (holding its RunOptions) from the flags; a bad value
    is the library's OptionsError naming the field (worded with the flag by ``found``'s error handler)."""
    from ..serve.settings import Settings

    if not 0 <= args.port <= 65535:
        raise FoundError(f"--port must be 0..65535, got {args.port}")
    options = run_options_from_args(args, workers=0)  # --workers: the server's threads; batch size: --max-batch
    return Settings(max_upload_bytes=int(args.max_upload_mb * MiB), max_pixels=int(args.max_pixels * 1e6),
                    max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
                    timeout_s=args.timeout, api_key=args.api_key or Settings.env_api_key(),
                    cors_origins=tuple(args.cors_origin), workers=args.workers, options=options)


def run(args: argparse.Namespace) -> int:
    """``found serve``: load the model once, serve it with uvicorn until stopped (warns if open without a key)."""
    uvicorn = require("uvicorn", "serve", "found serve")
    create_app = require("found.serve.app", "serve", "found serve").create_app
    settings = settings_from_args(args)
    check_model_args(args)
    app = create_app(model_from_args(args), settings)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        print(f"found serve: warning: listening on {args.host} without an API key: anyone who can reach it can use it",
              file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.log_level == "debug",
                server_header=False)
    return 0
