"""Pack files: many small objects stored as one key, so a remote store sees one request per pack.

Twenty thousand 4 KiB files cost twenty thousand PUTs as loose objects, bound by round trips (and,
on a local S3 server, by its per-request CPU); packed, they are a handful of PUTs of a few MiB.
The uploader packs objects below ``PACK_BELOW`` for remote stores; captures into the local store
pack those below ``local_packs.LOCAL_PACK_BELOW`` as they read them (``LocalPackSet``). A remote
store's staging folder keeps loose objects (its uploader reads them as files). Layout next to
``objects/``::

    packs/ab/cdef….pack    the objects' bytes one after another
    packs/ab/cdef….index   JSON: [[digest, offset, length], ...]; the pack is named by its digest

The pack is written first and its index last, so an index never names a pack that is not all
there (the pointer-last rule of records, one level down); a pack without an index is invisible.
Like objects, a pack is never rewritten: its name is the digest of its index, which names the
digest of every object in it. Readers fetch a whole pack (a few MiB at most) and verify each
object they take from it against its digest, as for loose objects.
"""

from __future__ import annotations

import collections
import json
import os
import threading
from typing import Iterable, Iterator, Optional

from ..storage.base import Storage, atomic_local_file
from .digest import hash_bytes

__all__ = ["PACK_BELOW", "PACK_SIZE", "PackSet", "group", "index_key", "pack_key"]

#: Objects smaller than this are packed when uploaded (larger ones are bound by bandwidth anyway).
PACK_BELOW = 256 << 10
#: A pack is closed once it holds this many bytes.
PACK_SIZE = 8 << 20
_CACHED_PACKS = 8  # whole packs kept in memory by a reader (restores read objects in pack order)


def pack_key(name: str) -> str:
    """Storage key of a pack's bytes."""
    return f"packs/{name[:2]}/{name[2:]}.pack"


def index_key(name: str) -> str:
    """Storage key of a pack's index (written last)."""
    return f"packs/{name[:2]}/{name[2:]}.index"


class PackSet:
    """The packs of one store: which object is in which pack, and reading objects out of them.

    Indexes are listed and read on first need and then only re-listed when an object is not
    found in the ones known (a pack uploaded meanwhile by another machine); they never change.
    """

    def __init__(self, storage: Storage, index_cache: Optional[str] = None) -> None:
        self.storage = storage
        self.index_cache = index_cache  # a local folder keeping indexes read (they never change)
        self._where: dict[str, tuple[str, int, int]] = {}  # object digest -> (pack, offset, length)
        self._members: dict[str, list[str]] = {}  # pack name -> object digests
        self._loaded = False
        self._lock = threading.Lock()
        self._packs: "collections.OrderedDict[str, bytes]" = collections.OrderedDict()
        self._fetching: dict[str, threading.Lock] = {}
        self._sweep: Optional[str] = None

    def forget_if_swept(self, sweep: str) -> None:
        """Drop what is known of the packs when garbage collection has deleted content since
        (its mark changed): an uploader must never skip an object on the word of a swept pack."""
        with self._lock:
            if sweep == self._sweep:
                return
            self._sweep = sweep
            self._where.clear()
            self._members.clear()
            self._packs.clear()
            self._loaded = False

    # -- reading ----------------------------------------------------------------------------------
    def _listed(self) -> list[str]:
        """Names of the packs whose index the store lists (a pack without one is invisible)."""
        return [key[len("packs/"):-len(".index")].replace("/", "") for key in self.storage.list("packs/")
                if key.endswith(".index")]

    def refresh(self) -> None:
        """List the store's indexes and read those not known yet."""
        for name in self._listed():
            if name in self._members:
                continue
            data = self._read_index(name)
            if data is None:
                continue
            entries = json.loads(data)
            with self._lock:
                self._members[name] = [digest for digest, _offset, _length in entries]
                for digest, offset, length in entries:
                    self._where.setdefault(digest, (name, offset, length))
        self._loaded = True

    def _read_index(self, name: str) -> Optional[bytes]:
        """An index's verified bytes, from the local copy when there is one; None if gone or damaged."""
        local = os.path.join(self.index_cache, name) if self.index_cache else None
        if local:
            try:
                with open(local, "rb") as f:
                    data = f.read()
                if hash_bytes(data) == name:
                    return data
            except FileNotFoundError:
                pass
        try:
            data = self.storage.read_bytes(index_key(name))
        except FileNotFoundError:  # swept since the listing
            return None
        if hash_bytes(data) != name:  # damaged: its objects count as missing
            return None
        if local:
            os.makedirs(self.index_cache, exist_ok=True)  # type: ignore[arg-type]
            with atomic_local_file(local) as f:
                f.write(data)
        return data

    def _loaded_once(self) -> bool:
        """Read the indexes if never done; True when this call just read them."""
        if self._loaded:
            return False
        self.refresh()
        return True

    def _locate(self, digest: str) -> Optional[tuple[str, int, int]]:
        fresh = self._loaded_once()
        found = self._where.get(digest)
        if found is None and not fresh:  # packed since the last listing, perhaps by another machine
            self.refresh()
            found = self._where.get(digest)
        return found

    def contains(self, digest: str) -> bool:
        """Whether a pack of the store holds the object (indexes read on first need)."""
        self._loaded_once()
        return digest in self._where

    def digests(self) -> set[str]:
        """Every packed object's digest."""
        self._loaded_once()
        return set(self._where)

    def packs(self) -> dict[str, list[str]]:
        """Pack name -> the digests it holds."""
        self._loaded_once()
        return dict(self._members)

    def read(self, digest: str) -> bytes:
        """The bytes stored for ``digest`` in a pack (unverified: the caller checks them).

        Raises ``FileNotFoundError`` when no pack holds it.
        """
        found = self._locate(digest)
        if found is None:
            raise FileNotFoundError(digest)
        name, offset, length = found
        return self._pack(name)[offset:offset + length]

    def _pack(self, name: str) -> bytes:
        with self._lock:
            data = self._packs.get(name)
            if data is not None:
                self._packs.move_to_end(name)
                return data
            fetching = self._fetching.setdefault(name, threading.Lock())
        with fetching:  # one download per pack, however many threads want it
            with self._lock:
                data = self._packs.get(name)
            if data is None:
                data = self.storage.read_bytes(pack_key(name))
                with self._lock:
                    self._packs[name] = data
                    while len(self._packs) > _CACHED_PACKS:
                        self._packs.popitem(last=False)
        return data

    def prune_index_cache(self, swept: Iterable[str] = (), dry_run: bool = False) -> int:
        """Delete the locally cached indexes of packs the store no longer lists, or of ``swept``
        (those a dry-run sweep would delete); returns how many went (or would).

        Cached indexes never go stale (a pack is never rewritten), only orphaned when garbage
        collection deletes their pack. The cache is read before the store is listed, so an
        index cached meanwhile belongs to a pack the listing shows, and is kept.
        """
        if not self.index_cache:
            return 0
        try:
            cached = [n for n in os.listdir(self.index_cache) if not n.startswith(".")]  # .tmp-: being written
        except FileNotFoundError:
            return 0
        gone = set(cached) - (set(self._listed()) - set(swept))
        if dry_run:
            return len(gone)
        count = 0
        for name in gone:
            try:
                os.unlink(os.path.join(self.index_cache, name))
                count += 1
            except FileNotFoundError:  # another gc on this machine removed it
                pass
        return count

    # -- writing ----------------------------------------------------------------------------------
    def write(self, objects: Iterable[tuple[str, bytes]]) -> str:
        """Store ``(digest, bytes)`` pairs as one pack, index last; returns the pack's name."""
        body = bytearray()
        entries: list[tuple[str, int, int]] = []
        for digest, data in objects:
            entries.append((digest, len(body), len(data)))
            body += data
        index = json.dumps(entries, separators=(",", ":")).encode()
        name = hash_bytes(index)
        self.storage.write_bytes(pack_key(name), bytes(body))
        self.storage.write_bytes(index_key(name), index)
        self._register(name, entries)
        return name

    def _register(self, name: str, entries: list[tuple[str, int, int]]) -> None:
        """Know a pack just written (its objects are found from now on)."""
        with self._lock:
            self._members[name] = [digest for digest, _offset, _length in entries]
            for digest, offset, length in entries:
                self._where.setdefault(digest, (name, offset, length))

    def quarantine(self, name: str) -> None:
        """Move a damaged pack under ``quarantine/``, index first (its objects then count as
        missing, so the next upload of the same content stores them again)."""
        for key in (index_key(name), pack_key(name)):
            try:
                data = self.storage.read_bytes(key)
            except FileNotFoundError:
                continue
            self.storage.write_bytes("quarantine/" + key, data)
            self.storage.delete(key)
        self._forget(name)

    def delete(self, name: str) -> None:
        """Remove a pack, index first (garbage collection only)."""
        self.storage.delete(index_key(name))
        self.storage.delete(pack_key(name))
        self._forget(name)

    def orphans(self) -> Iterator[str]:
        """Names of pack files without an index: left by a writer killed between the two."""
        indexed: set[str] = set()
        packs: list[str] = []
        for key in self.storage.list("packs/"):
            if key.endswith(".index"):
                indexed.add(key)
            elif key.endswith(".pack"):
                packs.append(key)
        for key in packs:
            name = key[len("packs/"):-len(".pack")].replace("/", "")
            if index_key(name) not in indexed:
                yield name

    def _forget(self, name: str) -> None:
        with self._lock:
            for digest in self._members.pop(name, []):
                if self._where.get(digest, (None,))[0] == name:
                    del self._where[digest]
            self._packs.pop(name, None)


def group(sizes: dict[str, int], digests: Iterable[str]) -> Iterator[list[str]]:
    """Split ``digests`` into packs of at most ``PACK_SIZE`` bytes, in the order given."""
    batch: list[str] = []
    total = 0
    for digest in digests:
        if batch and total + sizes[digest] > PACK_SIZE:
            yield batch
            batch, total = [], 0
        batch.append(digest)
        total += sizes[digest]
    if batch:
        yield batch
