"""The ASGI app: ``create_app(engine or model, settings)`` → FastAPI app.

Routes: ``GET /`` (the web page, from ``static/``), ``GET /healthz`` (alive), ``GET /readyz`` (model
loaded and warmed up), ``POST /v1/segment`` (an image as a multipart ``file`` or as the raw body →
JSON or PNG), ``/docs`` and ``/openapi.json``. Every error is JSON ``{"detail": one line}``.
Requests go through :class:`~found.serve.batcher.Batcher`; uploads are only ever bytes, so a client
can never name a file on the server.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Literal

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from ..engine import Engine, Result
from ..errors import FoundError, InputError, OptionsError, one_line
from ..io.images import LoadedImage
from ..options import MODES, RunOptions
from .answers import TooManyPixels, choose_output, decode, json_answer, parse_include, reason, result_png
from .batcher import Batcher, Key, Overloaded
from .live import register_live
from .settings import Settings

STATIC = Path(__file__).with_name("static")
#: Extra bytes allowed over ``max_upload_bytes`` for multipart framing (boundaries, part headers).
MULTIPART_SLACK = 64 * 1024
#: The page may load its own files, data: and blob: images, and call this server; nothing else.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
log = logging.getLogger("found.serve")


class HttpError(Exception):
    """An answer other than 200, raised from deep in a request: status, one-line detail, headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


class InstanceAnswer(BaseModel):
    """One object of a JSON answer: its boxes (xyxy, COCO xywh), area in pixels and score."""

    box_xyxy: list[int]
    box_xywh: list[int]
    area: int
    score: float


class SegmentAnswer(BaseModel):
    """The JSON answer of ``POST /v1/segment``: a record (docs/records.md) and the server's extras
    (documents the schema; answers are built directly by :func:`found.serve.answers.json_answer`)."""

    schema_version: int
    width: int
    height: int
    score: float
    refined: bool
    downscaled: bool
    processed_size: list[int] | None
    box_xyxy: list[int] | None
    box_xywh: list[int] | None
    notes: list[str]
    instances: list[InstanceAnswer]
    mask_fraction: float
    batch_size: int
    timings: dict[str, float]
    images: dict[str, str] | None = None


class ErrorAnswer(BaseModel):
    """Every answer other than 200: one line saying what went wrong."""

    detail: str


UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def create_app(model_or_engine, settings: Settings | None = None) -> FastAPI:
    """The app serving ``model_or_engine``: a :class:`found.Found` run with ``settings.options``, or an
    :class:`Engine` whose options are used instead (its mode and refine are then the defaults).
    The model is used as given: load it once, before."""
    settings = settings or Settings()
    if isinstance(model_or_engine, Engine):
        base, options = model_or_engine, model_or_engine.options.replace(batch_size=settings.max_batch, workers=0)
    else:
        options = settings.options
        base = Engine(model_or_engine, options)
    engines: dict[Key, Engine] = {}

    def engine_for(key: Key) -> Engine:
        """The engine for one (mode, refine) key, built on first use around the one loaded model."""
        if key not in engines:
            engines[key] = Engine(base.model, options.replace(mode=key[0], refine=key[1]))
        return engines[key]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Start the batcher and warm the model up before serving (then ready); stop the batcher at shutdown."""
        batcher = Batcher(engine_for, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                          queue_size=settings.queue_size, workers=settings.workers)
        app.state.batcher = batcher
        batcher.start()
        warm = LoadedImage(None, _grey(base.model.patch_size * 4), (base.model.patch_size * 4,) * 2, name="<warm-up>")
        await batcher.in_model_thread(engine_for((options.mode, options.refine)).infer, [warm])
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            await batcher.stop()

    app = FastAPI(title="found serve", version="1", lifespan=lifespan,
                  description="FOUND unsupervised object localisation over HTTP: masks, cut-outs and boxes.")
    app.state.ready, app.state.settings, app.state.engine = False, settings, base
    _add_error_handlers(app)
    _add_page(app)
    register_live(app, base, call=lambda fn, *a: app.state.batcher.in_model_thread(fn, *a), api_key=settings.api_key)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "Accept"])

    _add_routes(app, settings, base, options)
    return app


def _request_key(options: RunOptions, mode: str | None, refine: bool | None) -> Key:
    """A request's (mode, refine): the server's options with the request's changes, checked by their rules."""
    changes = {k: v for k, v in (("mode", mode), ("refine", refine)) if v is not None}
    chosen = options.replace(**changes) if changes else options
    return chosen.mode, chosen.refine


def _add_routes(app: FastAPI, settings: Settings, base: Engine, options: RunOptions) -> None:
    """``/healthz``, ``/readyz`` and ``POST /v1/segment``."""

    @app.get("/healthz", summary="the process is alive")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="the model is loaded and warmed up", responses={503: {"model": ErrorAnswer}})
    async def readyz() -> JSONResponse:
        if not app.state.ready:
            return JSONResponse({"detail": "model not loaded yet"}, status_code=503)
        b = app.state.batcher
        return JSONResponse({"status": "ready", "patch_size": base.model.patch_size, "mode": options.mode,
                             "refine": options.refine, "max_batch": settings.max_batch, "in_progress": b.admitted})

    @app.post("/v1/segment", summary="segment the main object(s) of one image", dependencies=[Depends(_key_check(settings))],
              openapi_extra={"requestBody": UPLOAD_BODY},
              responses={200: {"model": SegmentAnswer, "content": {"image/png": {}}, "description": "JSON, or one PNG"},
                         401: {"model": ErrorAnswer}, 413: {"model": ErrorAnswer}, 422: {"model": ErrorAnswer},
                         500: {"model": ErrorAnswer}, 503: {"model": ErrorAnswer}})
    async def segment(
        request: Request,
        mode: str | None = Query(None, json_schema_extra={"enum": list(MODES)},
                                 description="'multi' keeps the whole mask, 'single' its main component (default: the server's)"),
        refine: bool | None = Query(None, description="bilateral-solver refinement (default: the server's)"),
        output: Literal["json", "mask", "soft", "cutout", "overlay"] | None = Query(
            None, description="json, or one PNG: mask, soft, cutout, overlay (default: from Accept, else json)"),
        include: str | None = Query(None, description="PNGs to embed in a JSON answer as data URLs, e.g. 'mask,cutout'"),
    ) -> Response:
        started = time.perf_counter()
        if not app.state.ready:
            raise HttpError(503, "model not loaded yet", {"Retry-After": str(settings.retry_after_s)})
        kind = choose_output(output, request.headers.get("accept"))
        try:
            embed = parse_include(include) if kind == "json" else []
        except ValueError as e:
            raise HttpError(422, str(e)) from None
        try:
            key = _request_key(options, mode, refine)  # the run options' rules: a bad value is a 422 naming the field
        except OptionsError as e:
            raise HttpError(422, one_line(e)) from None
        batcher: Batcher = app.state.batcher
        try:
            ticket = batcher.ticket()
        except Overloaded as e:
            raise HttpError(503, str(e), {"Retry-After": str(settings.retry_after_s)}) from None
        with ticket:
            work = _answer(request, settings, batcher, ticket, key, kind, embed, started)
            try:
                return await asyncio.wait_for(work, settings.timeout_s)
            except TimeoutError:
                raise HttpError(503, f"request timed out after {settings.timeout_s:g} s (server busy)",
                                {"Retry-After": str(settings.retry_after_s)}) from None


async def _answer(request: Request, settings: Settings, batcher: Batcher, ticket, key: Key, kind: str,
                  embed: list[str], started: float) -> Response:
    """Read, decode, predict (batched), encode: one request's work once admitted."""
    data = await _read_upload(request, settings.max_upload_bytes)
    t0 = time.perf_counter()
    engine: Engine = request.app.state.engine
    try:
        image = await batcher.in_pool(decode, engine, data, settings.max_pixels)
    except TooManyPixels as e:
        raise HttpError(413, reason(e)) from None
    except InputError as e:
        raise HttpError(422, reason(e)) from None
    decode_ms = (time.perf_counter() - t0) * 1000
    outcome = await batcher.predict(ticket, key, image)
    if isinstance(outcome.prediction, BaseException):
        raise HttpError(500, reason(outcome.prediction))
    result = Result(0, data, "<upload>", prediction=outcome.prediction, image=image)
    timings = {"read": (t0 - started) * 1000, "decode": decode_ms, "queue": outcome.queue_ms, "model": outcome.model_ms}
    if kind == "json":
        body = await batcher.in_pool(json_answer, result, timings, outcome.batch_size, embed, started)
        return Response(body, media_type="application/json")
    t1 = time.perf_counter()
    png = await batcher.in_pool(result_png, kind, result)
    timings["encode"] = (time.perf_counter() - t1) * 1000
    headers = {"Server-Timing": ", ".join(f"{k};dur={v:.1f}" for k, v in timings.items()),
               "X-Found-Size": "{}x{}".format(*image.original_size), "X-Found-Score": f"{float(result.prediction.score):.6f}",
               "X-Found-Batch-Size": str(outcome.batch_size)}
    if result.prediction.box is not None:
        headers["X-Found-Box"] = ",".join(str(int(v)) for v in result.prediction.box)
    return Response(png, media_type="image/png", headers=headers)


async def _read_upload(request: Request, limit: int) -> bytes:
    """The image bytes: the ``file`` part of a multipart form, or the whole body; over ``limit`` → 413."""
    multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
    cap = limit + MULTIPART_SLACK if multipart else limit
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise HttpError(413, f"upload is {int(declared)} bytes, over this server's limit of {limit} bytes")
    stream = _limited(request.stream(), cap, limit)
    try:
        if not multipart:
            return b"".join([chunk async for chunk in stream])
        form = await MultiPartParser(request.headers, stream, max_files=1, max_fields=8).parse()
    except MultiPartException as e:
        raise HttpError(422, f"malformed multipart upload ({e.message})") from None
    except ClientDisconnect:
        raise HttpError(400, "client disconnected during the upload") from None
    try:
        part = form.get("file") or form.get("image")
        if part is None or isinstance(part, str):
            raise HttpError(422, "multipart upload needs a 'file' part holding the image")
        data = await part.read()
    finally:
        await form.close()
    if len(data) > limit:
        raise HttpError(413, f"upload is {len(data)} bytes, over this server's limit of {limit} bytes")
    return data


async def _limited(stream, cap: int, limit: int):
    """``stream``'s chunks, raising 413 once more than ``cap`` bytes came."""
    n = 0
    async for chunk in stream:
        n += len(chunk)
        if n > cap:
            raise HttpError(413, f"upload is over this server's limit of {limit} bytes")
        yield chunk


def _key_check(settings: Settings):
    """A dependency that checks the API key in constant time (nothing to check when none is set)."""
    expected = hashlib.sha256(settings.api_key.encode()).digest() if settings.api_key else None

    async def check(request: Request) -> None:
        """Refuse the request (401) unless it carries the API key, compared by hash in constant time."""
        if expected is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(hashlib.sha256(given.encode()).digest(), expected):
            raise HttpError(401, "missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')",
                            {"WWW-Authenticate": "Bearer"})

    return check


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"detail": one line}``."""

    @app.exception_handler(HttpError)
    async def http_error(request: Request, e: HttpError) -> JSONResponse:
        """An HttpError as its status, one-line detail and headers."""
        return JSONResponse({"detail": e.detail}, status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        """A request FastAPI could not validate as one 422 line naming each bad field."""
        parts = []
        for err in e.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(FoundError)
    async def found_error(request: Request, e: FoundError) -> JSONResponse:
        """A library error: 422 for a bad input or option, else 500, with its one-line reason."""
        return JSONResponse({"detail": reason(e)}, status_code=422 if isinstance(e, (InputError, OptionsError)) else 500)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        """Any other error: logged with its traceback, answered 500 naming only its type (no internals leak)."""
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": f"internal server error ({type(e).__name__})"}, status_code=500)


def _add_page(app: FastAPI) -> None:
    """``/`` and ``/static/…``: the page, with a Content-Security-Policy that allows no other origin."""
    page_headers = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The web page, with its Content-Security-Policy and no caching."""
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=page_headers)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _grey(side: int):
    """A flat grey RGB image (the warm-up input)."""
    from PIL import Image

    return Image.fromarray(np.full((side, side, 3), 128, np.uint8))
