"""Packs on the local store: small objects gathered in memory and written as a few large files.

A folder of 100,000 small files stored one object per file costs 100,000 file creations and
links, whose system time alone is several times what the copy of the bytes costs. Gathered into
packs of ``PACK_SIZE`` bytes, the same content is a few dozen files. The format is the remote
stores' (``objects.packs``: the bytes one after another, a JSON index named by its digest), so
``studio gc``, ``studio check`` and ``PackSet`` read both alike. What differs on local disk:

- objects are gathered as a capture reads them, and a pack is written when ``PACK_SIZE`` bytes
  are waiting or when the repository is flushed (before any record can point at them);
- a pack is written and fsynced before its index (``LocalStorage.write_bytes`` with its store's
  ``fsync``), so a kill at any moment leaves at worst a pack without index: invisible to readers,
  garbage for ``studio gc``, never an index naming bytes that are not there;
- reads take one object's bytes with ``pread`` from a pack file kept open (a few at a time),
  instead of reading the whole pack into memory as a remote reader must; restores ask for
  objects in pack order (``location``), so each pack is opened once and read front to back.

Every object read from a pack is verified by the caller against its digest, as for loose ones.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
import threading
from typing import Iterable, Optional

from ..storage.local import LocalStorage
from .digest import hash_bytes
from .packs import PACK_SIZE, PackSet, index_key, pack_key

__all__ = ["LOCAL_PACK_BELOW", "LocalPackSet"]

#: Objects smaller than this are packed on the local store. Measured on 100,000 files of
#: 0.5-4 KiB (2 shared cores): a first capture spent 30.2 CPU-seconds with one loose object per
#: file and 14.0 packed, ~160 us of mostly system time per file creation and link saved; that
#: cost is per file, so from 1 MiB on the bytes dominate either way, and a loose object is then
#: restored by a kernel copy a packed one cannot use. 1 MiB is also the size below which a
#: capture reads a file into memory, so packing costs no extra read.
LOCAL_PACK_BELOW = 1 << 20
_OPEN_PACKS = 16  # pack files kept open by a reader (a restore walks them in order)


class LocalPackSet(PackSet):
    """``PackSet`` for a store on local disk: gathers small objects, reads them with ``pread``."""

    storage: LocalStorage

    def __init__(self, storage: LocalStorage, index_cache: Optional[str] = None) -> None:
        super().__init__(storage, index_cache)
        self._waiting: dict[str, bytes] = {}  # digest -> bytes gathered for the next pack
        self._waiting_size = 0
        self._writing: dict[str, bytes] = {}  # handed to a writer, readable until its index is written
        self._write_lock = threading.Lock()  # one pack written at a time, in the order gathered
        self._fds: "collections.OrderedDict[str, int]" = collections.OrderedDict()
        self._retired: list[int] = []  # descriptors out of the cache, closed a while later

    # -- writing ----------------------------------------------------------------------------------
    def add(self, digest: str, data: "bytes | memoryview") -> int:
        """Gather an object for the next pack; returns the bytes it will add (0: stored already).

        A pack is written as soon as ``PACK_SIZE`` bytes are waiting (by the thread that filled
        it); the rest waits for ``seal``. Until then the object counts as stored for this
        process (``contains``, ``read``), and for no other: nothing points at it yet.
        """
        full: Optional[list[tuple[str, bytes]]] = None
        with self._lock:
            if digest in self._waiting or digest in self._writing or digest in self._where:
                return 0
            self._waiting[digest] = bytes(data)
            self._waiting_size += len(data)
            if self._waiting_size >= PACK_SIZE:
                full = self._take()
        if full:
            self._write(full)
        return len(data)

    def seal(self) -> Optional[str]:
        """Write what is waiting as one pack (pack, then index); its name, None if nothing waited."""
        with self._lock:
            batch = self._take()
        return self._write(batch) if batch else None

    def _take(self) -> list[tuple[str, bytes]]:
        """Hand the waiting objects to a writer (caller holds ``_lock``); they stay readable."""
        batch = list(self._waiting.items())
        self._writing.update(self._waiting)
        self._waiting.clear()
        self._waiting_size = 0
        return batch

    def write(self, objects: Iterable[tuple[str, bytes]]) -> str:
        """Store ``(digest, bytes)`` pairs as one pack, index last; returns the pack's name.

        The same format as ``PackSet.write``, streamed: the objects go to the file one after
        another (no second copy of the pack in memory), the file is fsynced and renamed into
        place, its folder fsynced, and only then is the index written (``write_bytes``: fsynced).
        """
        pieces: list[bytes] = []
        entries: list[tuple[str, int, int]] = []
        offset = 0
        for digest, data in objects:
            entries.append((digest, offset, len(data)))
            pieces.append(data)
            offset += len(data)
        index = json.dumps(entries, separators=(",", ":")).encode()
        name = hash_bytes(index)
        target = self.storage.path_of(pack_key(name))
        temp_folder = os.path.join(self.storage.root, ".tmp")
        os.makedirs(temp_folder, exist_ok=True)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=temp_folder, prefix="pack-")
        try:
            with os.fdopen(fd, "wb") as f:
                for piece in pieces:
                    f.write(piece)
                if self.storage.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        if self.storage.fsync:
            _fsync_folder(os.path.dirname(target))  # the pack's name is durable before its index
        self.storage.write_bytes(index_key(name), index)
        self._register(name, entries)
        return name

    def _write(self, batch: list[tuple[str, bytes]]) -> str:
        try:
            with self._write_lock:
                return self.write(batch)  # registers the members, so they are found from now on
        finally:
            with self._lock:
                for digest, _data in batch:
                    self._writing.pop(digest, None)

    # -- reading ----------------------------------------------------------------------------------
    def contains(self, digest: str) -> bool:
        """Whether a pack holds the object, or it waits for the next one."""
        return digest in self._waiting or digest in self._writing or super().contains(digest)

    def holds(self, digest: str, size: Optional[int] = None) -> bool:
        """Whether the object is packed (or waits for a pack), with ``size`` bytes when given."""
        if digest in self._waiting or digest in self._writing:
            return True
        found = self.location(digest)
        return found is not None and (size is None or found[2] == size)

    def location(self, digest: str) -> Optional[tuple[str, int, int]]:
        """``(pack, offset, length)`` of a packed object, None when it is not in a pack.

        Indexes are read on first need; a digest not found does not re-list the store (on
        local disk every pack written by this process is known, and a restore asks for loose
        objects too).
        """
        self._loaded_once()
        return self._where.get(digest)

    def read(self, digest: str) -> bytes:
        """The bytes stored for ``digest`` (unverified: the caller checks them), by one ``pread``.

        Raises ``FileNotFoundError`` when no pack holds it.
        """
        waiting = self._waiting.get(digest)
        if waiting is None:
            waiting = self._writing.get(digest)
        if waiting is not None:
            return waiting
        found = self._locate(digest)
        if found is None:
            raise FileNotFoundError(digest)
        name, offset, length = found
        fd = self._open(name)
        data = os.pread(fd, length, offset)
        if len(data) != length:  # a truncated pack: what is there is not the object
            return data + b"\0"
        return data

    def _open(self, name: str) -> int:
        """A descriptor of the pack's file, kept open for the next objects of the same pack."""
        with self._lock:
            fd = self._fds.get(name)
            if fd is not None:
                self._fds.move_to_end(name)
                return fd
        fd = os.open(self.storage.path_of(pack_key(name)), os.O_RDONLY)
        with self._lock:
            if name in self._fds:  # another thread opened it meanwhile
                os.close(fd)
                return self._fds[name]
            self._fds[name] = fd
            while len(self._fds) > _OPEN_PACKS:
                # Another thread may have just taken the oldest descriptor for one pread: it is
                # closed only after many more packs were opened, long after that read.
                self._retired.append(self._fds.popitem(last=False)[1])
            retired = self._retired[:-_OPEN_PACKS] if len(self._retired) > 4 * _OPEN_PACKS else []
            del self._retired[:len(retired)]
        for old in retired:
            os.close(old)
        return fd

    def close(self) -> None:
        """Close every pack file this reader opened."""
        with self._lock:
            fds = list(self._fds.values()) + self._retired
            self._fds.clear()
            self._retired.clear()
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    # -- damage -----------------------------------------------------------------------------------
    def salvage(self, name: str) -> list[str]:
        """Move a damaged pack aside, keeping its sound objects: they are written into a new pack
        first, then the damaged pack goes to ``quarantine/`` (index first). Returns the digests
        lost (those whose bytes were wrong), which then count as missing, so the next capture
        of the same content stores them again."""
        members = self.packs().get(name)
        if members is None:
            return []
        try:
            body = self.storage.read_bytes(pack_key(name))
        except FileNotFoundError:
            body = b""
        good: list[tuple[str, bytes]] = []
        lost: list[str] = []
        for digest in members:
            found = self._where.get(digest)
            if found is None or found[0] != name:
                continue
            _name, offset, length = found
            data = body[offset:offset + length]
            if len(data) == length and hash_bytes(data) == digest:
                good.append((digest, data))
            else:
                lost.append(digest)
        self._drop_fd(name)
        self._forget(name)  # so that the sound objects are written again, into a new pack
        if good:
            self._write(good)
        self.quarantine(name)
        return lost

    def delete(self, name: str) -> None:
        """Remove a pack, index first (garbage collection only)."""
        self._drop_fd(name)
        super().delete(name)

    def _drop_fd(self, name: str) -> None:
        with self._lock:
            fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)
