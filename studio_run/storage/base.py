"""The byte-level storage interface every backend fills in.

A store is a flat namespace of keys (``/``-separated, relative, no ``..``) holding bytes. It
knows nothing about experiments, manifests or digests: those live in ``studio_run.objects``.
A backend implements six primitives; everything else is derived here so that a new backend
stays small, and may be overridden where an SDK does better (streaming uploads, server-side
listing with a delimiter).

Promises every backend keeps (checked by ``tests/storage/contract.py``):

- ``write_bytes`` and ``put_file`` replace a key atomically: a reader sees the old bytes or the
  new bytes, never a mix or a prefix.
- ``exclusive=True`` creates the key only if it is absent and raises ``FileExistsError``
  otherwise, atomically with respect to other writers (used to claim names).
- A missing key raises ``FileNotFoundError``; a refused action raises ``PermissionError``.
- ``list`` yields every key under a prefix, recursively, in any order, across all pages.
"""

from __future__ import annotations

import abc
import builtins
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator

__all__ = ["KeyInfo", "Storage", "atomic_local_file", "check_key"]


@dataclass(frozen=True)
class KeyInfo:
    """Size in bytes and modification time (seconds since the epoch) of one stored key.

    Where the server knows them: ``etag`` (changes whenever the value does), and the whole
    value's ``md5`` / ``crc32c`` as lowercase hex, so a download can be checked end to end.
    """

    size: int
    mtime: float
    etag: str = ""
    md5: str = ""
    crc32c: str = ""


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise ``ValueError``.

    Keys come from our own layout code, but a bad one (absolute, ``..``) would let a local or
    SFTP backend write outside its root, so every backend checks at the boundary.
    """
    if not key or key.startswith("/") or "\\" in key:
        raise ValueError(f"invalid storage key {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Storage(abc.ABC):
    """Keys to bytes. Subclasses implement the abstract primitives; helpers are derived."""

    #: URL of this store, safe to print: never contains credentials.
    url: str = ""

    # -- primitives ---------------------------------------------------------------------
    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Return the whole value of ``key``; ``FileNotFoundError`` when absent."""

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        """Store ``data`` under ``key`` atomically; with ``exclusive``, only if absent."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a value."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; ``FileNotFoundError`` when absent."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key that starts with ``prefix`` (a folder-like prefix ends with ``/``)."""

    @abc.abstractmethod
    def info(self, key: str) -> KeyInfo:
        """Size and modification time of ``key``; ``FileNotFoundError`` when absent."""

    # -- derived helpers (override for speed) ---------------------------------------------
    def put_file(self, local_path: str, key: str, *, exclusive: bool = False) -> None:
        """Upload a local file to ``key`` atomically. The base reads it whole; backends stream."""
        with open(local_path, "rb") as f:
            data = f.read()
        self.write_bytes(key, data, exclusive=exclusive)

    def get_file(self, key: str, local_path: str) -> None:
        """Download ``key`` to ``local_path``, atomically: a temp file renamed into place."""
        data = self.read_bytes(key)
        with atomic_local_file(local_path) as f:
            f.write(data)

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        """Names one level below ``prefix`` (which ends with ``/``), sorted and unique."""
        names = {key[len(prefix):].split("/", 1)[0] for key in self.list(prefix)}
        return sorted(n for n in names if n)

    def delete_many(self, keys: builtins.list[str]) -> None:
        """Delete several keys, ignoring those already gone. Backends may batch."""
        for key in keys:
            try:
                self.delete(key)
            except FileNotFoundError:
                pass

    def touch(self, key: str) -> None:
        """Create ``key`` empty, or renew its modification time. Not made durable (a lock or
        a mark that a crash loses is harmless), and needs no free space where it exists."""
        self.write_bytes(key, b"")

    def flush(self) -> None:
        """Make every value written so far durable. Remote stores are durable on return: no-op."""

    def close(self) -> None:
        """Release connections. Safe to call twice."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


@contextmanager
def atomic_local_file(local_path: str) -> Iterator[BinaryIO]:
    """A temporary file beside ``local_path`` that replaces it when the block succeeds.

    Every backend's ``get_file`` downloads through this, so a failed or interrupted download
    never leaves a partial file under the real name (nor a temporary one behind).
    """
    folder = os.path.dirname(os.path.abspath(local_path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, local_path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
