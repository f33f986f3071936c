"""In-memory backend for fast unit tests: a dict behind a lock, gone when the process ends.

``memory://name`` opens a process-wide store shared by every caller using the same name, so a
test can write through one handle and read through another as two clients would.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

from .base import KeyInfo, Storage, check_key

__all__ = ["MemoryStorage"]

_STORES: dict[str, dict[str, tuple[bytes, float]]] = {}
_LOCK = threading.Lock()


class MemoryStorage(Storage):
    """Keys in a dict; honours the same contract as the real backends."""

    def __init__(self, name: str = "default") -> None:
        self.url = f"memory://{name}"
        with _LOCK:
            self._data = _STORES.setdefault(name, {})

    @classmethod
    def from_url(cls, url: str, **_options: object) -> "MemoryStorage":
        """``memory://name``."""
        return cls(url.split("://", 1)[1].strip("/") or "default")

    def read_bytes(self, key: str) -> bytes:
        with _LOCK:
            try:
                return self._data[check_key(key)][0]
            except KeyError:
                raise FileNotFoundError(key) from None

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        with _LOCK:
            if exclusive and check_key(key) in self._data:
                raise FileExistsError(key)
            self._data[check_key(key)] = (bytes(data), time.time())

    def exists(self, key: str) -> bool:
        with _LOCK:
            return check_key(key) in self._data

    def delete(self, key: str) -> None:
        with _LOCK:
            try:
                del self._data[check_key(key)]
            except KeyError:
                raise FileNotFoundError(key) from None

    def list(self, prefix: str = "") -> Iterator[str]:
        with _LOCK:
            keys = [k for k in self._data if k.startswith(prefix)]
        yield from keys

    def info(self, key: str) -> KeyInfo:
        with _LOCK:
            try:
                data, mtime = self._data[check_key(key)]
            except KeyError:
                raise FileNotFoundError(key) from None
        return KeyInfo(size=len(data), mtime=mtime)

    @staticmethod
    def reset(name: str | None = None) -> None:
        """Forget one named store, or all of them (tests)."""
        with _LOCK:
            if name is None:
                _STORES.clear()
            else:
                _STORES.pop(name, None)
