"""Retry transient storage failures around any backend, outside the backend's own code.

A network store fails now and then for reasons that go away: a dropped connection, an
endpoint restarting, a timeout. ``RetryingStorage`` wraps any ``Storage`` and tries such calls
again with exponential backoff and jitter (so many clients do not retry in step). It never
retries an answer: a missing or existing key, a refusal or bad credentials will not change by
asking again, and retrying them would only delay the error.

``open_storage`` does not wrap: the caller decides (the runner wraps its store; a one-shot
command may prefer to fail fast)::

    store = RetryingStorage(open_storage(url, options))

One limit to know: when a write's reply is lost, the retry cannot tell whether the first
attempt landed, so an ``exclusive`` write that did land is reported as ``FileExistsError``.
"""

from __future__ import annotations

import builtins
import logging
import random
import time
from typing import Callable, Iterator, TypeVar

from ..errors import TRANSIENT, StoreAuthError
from .base import KeyInfo, Storage

__all__ = ["RetryingStorage"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Answers, never retried even when they subclass a transient type.
_FINAL: tuple[type[BaseException], ...] = (
    FileNotFoundError, FileExistsError, PermissionError, StoreAuthError,
)


class RetryingStorage(Storage):
    """Delegates every call to ``inner``, retrying transient failures up to ``attempts`` times."""

    def __init__(
        self,
        inner: Storage,
        attempts: int = 5,
        base_delay: float = 0.2,
        max_delay: float = 5.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.inner = inner
        self.url = inner.url
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        #: The transient failure of the last call that needed retrying, cleared by a success:
        #: says why work waits while calls are still being retried.
        self.last_failure: BaseException | None = None

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential,
        capped at ``max_delay``, then jittered down to between half and all of it."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                result = fn()
            except _FINAL:
                self.last_failure = None  # the store answered
                raise
            except TRANSIENT as exc:
                self.last_failure = exc
                if attempt == self.attempts:
                    raise
                wait = self.delay(attempt)
                log.info(  # expected while a store blips; the caller reports what finally fails
                    "%s: %s failed (%s), attempt %d of %d; retrying in %.2f s",
                    self.url, what, exc, attempt, self.attempts, wait,
                )
                self._sleep(wait)
                continue
            self.last_failure = None
            return result
        raise AssertionError("unreachable")

    # -- primitives ---------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        return self._call(f"read {key}", lambda: self.inner.read_bytes(key))

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        self._call(f"write {key}", lambda: self.inner.write_bytes(key, data, exclusive=exclusive))

    def exists(self, key: str) -> bool:
        return self._call(f"exists {key}", lambda: self.inner.exists(key))

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", lambda: self.inner.delete(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        # Gathered whole inside the retry: a listing that fails halfway restarts cleanly
        # instead of yielding some keys twice.
        yield from self._call(f"list {prefix}", lambda: list(self.inner.list(prefix)))

    def info(self, key: str) -> KeyInfo:
        return self._call(f"info {key}", lambda: self.inner.info(key))

    # -- derived: delegated, so the backend's faster versions are kept ---------------------------
    def put_file(self, local_path: str, key: str, *, exclusive: bool = False) -> None:
        self._call(f"put {key}", lambda: self.inner.put_file(local_path, key, exclusive=exclusive))

    def get_file(self, key: str, local_path: str) -> None:
        self._call(f"get {key}", lambda: self.inner.get_file(key, local_path))

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        return self._call(f"list {prefix}", lambda: self.inner.list_dirs(prefix))

    def delete_many(self, keys: builtins.list[str]) -> None:
        self._call(f"delete {len(keys)} keys", lambda: self.inner.delete_many(keys))

    def flush(self) -> None:
        self._call("flush", self.inner.flush)

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"RetryingStorage({self.inner!r})"
