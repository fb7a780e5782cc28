"""The server's limits and options, as one frozen dataclass (no web framework imported here)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import OptionsError
from ..options import RunOptions, check

#: Environment variable read for the API key when ``--api-key`` is not given.
ENV_API_KEY = "FOUND_API_KEY"
MiB = 1 << 20


@dataclass(frozen=True)
class Settings:
    """What a server accepts and how it batches.

    * ``max_upload_bytes``: larger request bodies get 413 (checked on ``Content-Length`` and while reading);
    * ``max_pixels``: images whose header declares more pixels get 413, before any decoding;
    * ``max_batch`` / ``max_wait_ms``: a forward pass takes up to ``max_batch`` requests, waiting at most
      ``max_wait_ms`` for more once the first has arrived (``max_batch=1``: no batching);
    * ``queue_size``: requests admitted at once (being read, decoded, waiting or in the model); more get
      503 with ``Retry-After``;
    * ``timeout_s``: a request not answered in time gets 503 (its work is dropped);
    * ``api_key``: when set, ``/v1/`` routes need ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``;
    * ``cors_origins``: origins allowed by CORS (empty: CORS off);
    * ``workers``: threads that decode uploads and encode answers (the model has its own single thread);
    * ``options``: the :class:`~found.options.RunOptions` of the server's runs: mode and refine are the
      defaults a request may change; ``batch_size`` is ``max_batch`` and ``workers`` 0 (decoding runs
      on the server's own threads), whatever was given.

    A bad value raises an :class:`~found.errors.OptionsError` naming the field.
    """

    max_upload_bytes: int = 20 * MiB
    max_pixels: int = 50_000_000
    max_batch: int = 8
    max_wait_ms: float = 10.0
    queue_size: int = 64
    timeout_s: float = 60.0
    api_key: str | None = None
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    workers: int = 2
    retry_after_s: int = 1
    options: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "queue_size", "workers", "retry_after_s"):
            if int(getattr(self, name)) < 1:
                raise OptionsError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise OptionsError("max_wait_ms", f"must be 0 or more, got {self.max_wait_ms}")
        if self.timeout_s <= 0:
            raise OptionsError("timeout_s", f"must be positive, got {self.timeout_s}")
        if self.api_key is not None and not self.api_key.strip():
            raise OptionsError("api_key", "must not be empty (leave it unset to serve without a key)")
        if not isinstance(self.options, RunOptions):
            raise TypeError(f"options must be a RunOptions, got {type(self.options).__name__}")
        check("batch_size", self.max_batch, name="max_batch")  # the engine's batch size: the same rule
        object.__setattr__(self, "options", self.options.replace(batch_size=self.max_batch, workers=0))
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))

    @staticmethod
    def env_api_key() -> str | None:
        """The key from ``$FOUND_API_KEY`` (None when unset or empty)."""
        return os.environ.get(ENV_API_KEY) or None
