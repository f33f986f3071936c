"""Local-disk backend: one file per key under a root folder, written by temp file + rename.

Temp files live in ``<root>/.tmp`` (same filesystem, so the rename is atomic). Exclusive
creation uses ``link()``, which fails atomically when the name exists. Small values (records,
pointers) are fsynced with their folder before they count as written; bulk object files are
made durable together by ``flush()`` (one ``syncfs``), which callers run before writing the
pointer that makes them visible.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from typing import Iterator
from urllib.parse import unquote, urlsplit

from .base import KeyInfo, Storage, check_key

__all__ = ["LocalStorage"]

_TMP = ".tmp"


class LocalStorage(Storage):
    """Keys as files below ``root``; the default store, with nothing to set up."""

    def __init__(self, root: str, *, fsync: bool = True) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = "file://" + self.root
        self.fsync = fsync
        os.makedirs(os.path.join(self.root, _TMP), exist_ok=True)

    @classmethod
    def from_url(cls, url: str, **options: object) -> "LocalStorage":
        """``file:///abs/path`` (or a plain path, turned into one by the registry)."""
        path = unquote(urlsplit(url).path) if url.startswith("file://") else url
        fsync = options.get("fsync", True)
        return cls(path, fsync=bool(fsync))

    # -- helpers ----------------------------------------------------------------------------
    def path_of(self, key: str) -> str:
        """Absolute file path holding ``key`` (lets local-only callers copy without reading)."""
        return os.path.join(self.root, *check_key(key).split("/"))

    def _tempfile(self) -> tuple[int, str]:
        return tempfile.mkstemp(dir=os.path.join(self.root, _TMP), prefix="w-")

    def _commit(self, tmp: str, key: str, exclusive: bool, durable: bool) -> None:
        target = self.path_of(key)
        folder = os.path.dirname(target)
        os.makedirs(folder, exist_ok=True)
        try:
            if exclusive:
                os.link(tmp, target)  # fails with FileExistsError if the key exists
            else:
                os.replace(tmp, target)
        finally:
            if exclusive:
                _unlink_quiet(tmp)
        if durable:
            _fsync_dir(folder)

    # -- primitives -------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        with open(self.path_of(key), "rb") as f:
            return f.read()

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        fd, tmp = self._tempfile()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            self._commit(tmp, key, exclusive, durable=self.fsync)
        except BaseException:
            _unlink_quiet(tmp)
            raise

    def exists(self, key: str) -> bool:
        return os.path.isfile(self.path_of(key))

    def delete(self, key: str) -> None:
        os.unlink(self.path_of(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        if prefix:
            check_key(prefix.rstrip("/"))
        folder, _, stem = prefix.rpartition("/")
        base = os.path.join(self.root, *folder.split("/")) if folder else self.root
        if not os.path.isdir(base):
            return
        for name in os.listdir(base):
            if not name.startswith(stem) or (not folder and name == _TMP):
                continue
            rel = f"{folder}/{name}" if folder else name
            full = os.path.join(base, name)
            if os.path.isdir(full):
                yield from _walk(full, rel)
            else:
                yield rel

    def touch(self, key: str) -> None:
        path = self.path_of(key)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.utime(fd)
        finally:
            os.close(fd)

    def info(self, key: str) -> KeyInfo:
        st = os.stat(self.path_of(key))
        return KeyInfo(size=st.st_size, mtime=st.st_mtime)

    # -- faster derived operations ---------------------------------------------------------------
    def put_file(self, local_path: str, key: str, *, exclusive: bool = False) -> None:
        fd, tmp = self._tempfile()
        os.close(fd)
        try:
            shutil.copyfile(local_path, tmp)  # sendfile/copy_file_range in the kernel
            self._commit(tmp, key, exclusive, durable=False)
        except BaseException:
            _unlink_quiet(tmp)
            raise

    def get_file(self, key: str, local_path: str) -> None:
        src = self.path_of(key)
        if not os.path.isfile(src):
            raise FileNotFoundError(key)
        folder = os.path.dirname(os.path.abspath(local_path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, local_path)
        except BaseException:
            _unlink_quiet(tmp)
            raise

    def flush(self) -> None:
        """Make every file written so far durable with one ``syncfs`` of the store's filesystem."""
        if not self.fsync:
            return
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)


def _walk(full: str, rel: str) -> Iterator[str]:
    for dirpath, _dirs, files in os.walk(full):
        sub = os.path.relpath(dirpath, full)
        prefix = rel if sub == "." else f"{rel}/{sub.replace(os.sep, '/')}"
        for name in files:
            yield f"{prefix}/{name}"


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


_libc = None


def _syncfs(fd: int) -> int:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            return -1
    func = getattr(_libc, "syncfs", None)
    return int(func(fd)) if func is not None else -1
