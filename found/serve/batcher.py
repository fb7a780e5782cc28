"""Dynamic batching: requests that arrive together share one forward pass of the engine.

Each request holds a :class:`Ticket` from admission to answer (at most ``queue_size`` at once; the
next one gets :class:`Overloaded`, which the app answers with 503). Its upload is decoded by
:meth:`Engine.load` in a thread pool, then :meth:`Batcher.predict` queues the decoded image. One
collector task takes the oldest queued image and every queued image with the same options (mode,
refine), up to ``max_batch``; while fewer are queued and more admitted requests are still on their
way (being read or decoded) it waits for them, at most ``max_wait_ms`` after the oldest arrived.
The batch then runs through :meth:`Engine.infer` (the same path as ``found segment``) on the one
model thread, and each caller's future gets its own prediction. The event loop never decodes,
runs the model or encodes.
"""
from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, TypeVar

from ..engine import Engine
from ..errors import FoundError, describe
from ..io.images import LoadedImage

T = TypeVar("T")
#: Options that must agree for requests to share a forward pass: (mode, refine).
Key = tuple[str, bool]


class Overloaded(Exception):
    """The server already holds ``queue_size`` requests (answered with 503 and Retry-After)."""


@dataclass
class QueuedOutcome:
    """What the model made of one queued image, with where the time went."""

    prediction: object  # Prediction | ScaledPrediction | FoundError
    queue_ms: float  # from being queued to the start of its forward pass
    model_ms: float  # the forward pass (shared by the whole batch)
    batch_size: int  # images in that forward pass


@dataclass
class _Job:
    key: Key
    image: LoadedImage
    future: asyncio.Future
    queued: float  # loop.time() when queued


class Ticket:
    """A request's place in the server, from admission to answer (a context manager)."""

    def __init__(self, batcher: "Batcher") -> None:
        self._batcher, self.on_the_way = batcher, True

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, *exc) -> None:
        self._batcher._release(self)


class Batcher:
    """Groups concurrent requests into forward passes of ``engine_for(key)`` (see the module docstring)."""

    def __init__(self, engine_for: Callable[[Key], Engine], *, max_batch: int, max_wait_ms: float,
                 queue_size: int, workers: int) -> None:
        self.engine_for, self.max_batch, self.max_wait = engine_for, max_batch, max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.admitted = 0  # requests holding a ticket
        self.on_the_way = 0  # admitted, not queued yet (being read or decoded)
        self.batches = 0  # forward passes run (for tests and logs)
        self._queue: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._io = ThreadPoolExecutor(workers, thread_name_prefix="found-serve-io")
        self._model = ThreadPoolExecutor(1, thread_name_prefix="found-serve-model")
        self._task: asyncio.Task | None = None

    # -------------------------------------------------------------- admission
    def ticket(self) -> Ticket:
        """Admit a request, or raise :class:`Overloaded` when ``queue_size`` are already in."""
        if self.admitted >= self.queue_size:
            raise Overloaded(f"server busy: {self.admitted} requests in progress (queue size {self.queue_size})")
        self.admitted += 1
        self.on_the_way += 1
        return Ticket(self)

    def _release(self, ticket: Ticket) -> None:
        self.admitted -= 1
        if ticket.on_the_way:
            ticket.on_the_way = False
            self.on_the_way -= 1
        self._wake.set()  # the collector may stop waiting for this one

    # -------------------------------------------------------------- work off the event loop
    async def in_pool(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` on a decode/encode thread."""
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def in_model_thread(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` on the model's own thread (e.g. a warm-up pass)."""
        return await asyncio.get_running_loop().run_in_executor(self._model, fn, *args)

    async def predict(self, ticket: Ticket, key: Key, image: LoadedImage) -> QueuedOutcome:
        """Queue a decoded image for the next forward pass with options ``key``; its outcome."""
        if self._task is None:
            raise RuntimeError("the batcher is not running")
        loop = asyncio.get_running_loop()
        job = _Job(key, image, loop.create_future(), loop.time())
        self._queue.append(job)
        if ticket.on_the_way:
            ticket.on_the_way = False
            self.on_the_way -= 1
        self._wake.set()
        return await job.future

    # -------------------------------------------------------------- the collector
    def start(self) -> None:
        """Start the collector task on the running event loop (once; a second call does nothing)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._collect(), name="found-batcher")

    async def stop(self) -> None:
        """Stop collecting; queued requests fail; threads are shut down."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(Overloaded("server shutting down"))
        self._io.shutdown(wait=False, cancel_futures=True)
        self._model.shutdown(wait=True, cancel_futures=True)

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_abandoned()
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            deadline = self._queue[0].queued + self.max_wait
            while self._same_key_count() < self.max_batch and self.on_the_way > 0:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take_batch()
            if batch:
                await self._run(batch)

    def _drop_abandoned(self) -> None:
        """Forget queued jobs whose caller gave up (timed out or disconnected)."""
        if any(j.future.done() for j in self._queue):
            self._queue = deque(j for j in self._queue if not j.future.done())

    def _same_key_count(self) -> int:
        key = self._queue[0].key
        return sum(1 for j in self._queue if j.key == key and not j.future.done())

    def _take_batch(self) -> list[_Job]:
        """Up to ``max_batch`` live jobs with the oldest job's options, oldest first."""
        self._drop_abandoned()
        if not self._queue:
            return []
        key, batch, rest = self._queue[0].key, [], deque()
        for job in self._queue:
            (batch if job.key == key and len(batch) < self.max_batch else rest).append(job)
        self._queue = rest
        return batch

    async def _run(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            engine = self.engine_for(batch[0].key)
            preds = await loop.run_in_executor(self._model, engine.infer, [j.image for j in batch])
        except Exception as e:  # infer returns errors as values; anything else fails the whole batch
            preds = [e if isinstance(e, FoundError) else FoundError(f"inference failed ({describe(e)})")] * len(batch)
        end = loop.time()
        self.batches += 1
        for job, pred in zip(batch, preds):
            if not job.future.done():
                job.future.set_result(QueuedOutcome(pred, (start - job.queued) * 1000, (end - start) * 1000, len(batch)))
