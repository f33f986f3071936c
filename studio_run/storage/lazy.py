"""Open a backend on first use instead of at construction, outside the backend's own code.

Opening a remote store talks to it (S3 checks the bucket, SFTP logs in). ``studio run`` must not
fail or wait because the store is down, so it opens the store with a bounded wait and goes on
without it; ``LazyStorage`` lets the rest of the code hold a ``Storage`` all the same. The first
call that needs the backend opens it; a failed open is tried again by the next call, so an
uploader that retries its calls also retries the connection::

    store = RetryingStorage(LazyStorage(url, lambda: open_storage(url, options)))
"""

from __future__ import annotations

import builtins
import threading
from typing import Callable, Iterator, Optional

from .base import KeyInfo, Storage

__all__ = ["LazyStorage"]


class LazyStorage(Storage):
    """Delegates every call to the backend ``opener`` returns, calling it the first time only."""

    def __init__(self, url: str, opener: Callable[[], Storage]) -> None:
        self.url = url  # already redacted by the caller: printed before the backend exists
        self._opener = opener
        self._inner: Optional[Storage] = None
        self._lock = threading.Lock()
        #: Why the last opening failed (None once open): says why uploads wait.
        self.last_error: Optional[BaseException] = None

    @property
    def connected(self) -> bool:
        """Whether the backend has been opened (calls will not wait for a connection)."""
        return self._inner is not None

    def connect(self) -> Storage:
        """The opened backend, opening it now if needed; the backend's errors propagate."""
        inner = self._inner
        if inner is not None:
            return inner
        with self._lock:
            if self._inner is None:
                try:
                    self._inner = self._opener()
                except Exception as exc:
                    self.last_error = exc
                    raise
                self.last_error = None
            return self._inner

    # -- primitives -------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        return self.connect().read_bytes(key)

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        self.connect().write_bytes(key, data, exclusive=exclusive)

    def exists(self, key: str) -> bool:
        return self.connect().exists(key)

    def delete(self, key: str) -> None:
        self.connect().delete(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.connect().list(prefix)

    def info(self, key: str) -> KeyInfo:
        return self.connect().info(key)

    # -- derived: delegated, so the backend's faster versions are kept -----------------------
    def put_file(self, local_path: str, key: str, *, exclusive: bool = False) -> None:
        self.connect().put_file(local_path, key, exclusive=exclusive)

    def get_file(self, key: str, local_path: str) -> None:
        self.connect().get_file(key, local_path)

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        return self.connect().list_dirs(prefix)

    def delete_many(self, keys: builtins.list[str]) -> None:
        self.connect().delete_many(keys)

    def flush(self) -> None:
        if self._inner is not None:
            self._inner.flush()

    def close(self) -> None:
        # Never waits for an open under way (the runner may be leaving while one hangs).
        inner, self._inner = self._inner, None
        if inner is not None:
            inner.close()

    def __repr__(self) -> str:
        return f"LazyStorage({self._inner!r})" if self._inner is not None else f"LazyStorage({self.url!r})"
