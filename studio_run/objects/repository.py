"""The object repository: write-once, content-addressed objects and manifests on any storage.

Layout on the storage (two-character fan-out keeps folders small on disk and SFTP)::

    objects/ab/cdef…         file contents, named by their BLAKE3 digest
    manifests/ab/cdef…       manifests (canonical JSON), named by their digest
    gc/last-sweep            a new random mark each time garbage collection deletes content
    quarantine/<key>         objects and manifests found damaged, moved aside (never read again)

Nothing here is ever overwritten with different bytes: a key names its content. A snapshot
becomes visible only when a record pointing at its manifest is written (``studio_run.store.records``),
after every object and the manifest are in place, so a reader never meets a missing object.
Every byte read back is checked against its digest before it is handed out; a loose object or
manifest that fails the check is moved to ``quarantine/``, so it counts as absent and the next
capture of the same content stores it again (a damaged copy is never trusted twice).

``Repository(storage)`` builds the type that fits the storage: a ``LocalStorage`` gets a
``LocalRepository`` (``studio_run.objects.local``), which adds what only local disk can do.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import threading
from typing import Any, Callable, ClassVar, Iterator, Optional

from ..errors import IntegrityError
from ..storage.base import Storage
from .digest import CHUNK, Hasher, hash_bytes, is_digest
from .manifest import Entry, Manifest
from .packs import PackSet

__all__ = ["QUARANTINE", "Repository", "copy_with_digest", "corrupted"]

QUARANTINE = "quarantine/"
_SWEEP_KEY = "gc/last-sweep"
_COUNTER = itertools.count()


def corrupted(kind: str, digest: str, actual: str, moved: bool = False) -> IntegrityError:
    """The one message for stored bytes that do not match their name (``moved``: to quarantine)."""
    where = "; it was moved to quarantine" if moved else ""
    return IntegrityError(
        f"{kind} {digest[:12]}… is corrupted in the store (its bytes hash to {actual[:12]}…){where}; "
        "re-capture the artifact to store it again, or delete the damaged run"
    )


class Repository:
    """Objects and manifests on one ``Storage``, every read verified."""

    #: Whether objects are plain files on this machine (captures write straight into them).
    is_local: ClassVar[bool] = False
    _by_storage: ClassVar[dict[type, type["Repository"]]] = {}

    def __init_subclass__(cls, storage: Optional[type] = None, **kwargs: Any) -> None:
        """A subclass declared with ``storage=SomeStorage`` is what ``Repository(SomeStorage(...))`` builds."""
        super().__init_subclass__(**kwargs)
        if storage is not None:
            Repository._by_storage[storage] = cls

    def __new__(cls, storage: Storage, *args: Any, **kwargs: Any) -> "Repository":
        if cls is Repository:
            cls = Repository._by_storage.get(type(storage), cls)
        return super().__new__(cls)

    def __init__(self, storage: Storage, pack_index_cache: Optional[str] = None) -> None:
        self.storage = storage
        self._dirty = False
        self.packs = PackSet(storage, pack_index_cache)

    def flush(self) -> None:
        """Make everything written through this repository durable (one ``syncfs``), if anything was."""
        if self._dirty:
            self._dirty = False
            self.storage.flush()

    # -- keys ---------------------------------------------------------------------------------
    @staticmethod
    def object_key(digest: str) -> str:
        """Storage key of an object."""
        return f"objects/{digest[:2]}/{digest[2:]}"

    @staticmethod
    def manifest_key(digest: str) -> str:
        """Storage key of a manifest."""
        return f"manifests/{digest[:2]}/{digest[2:]}"

    # -- objects ----------------------------------------------------------------------------------
    def has_object(self, digest: str, size: Optional[int] = None) -> bool:
        """Whether the object is stored, loose or in a pack (``size``: see ``LocalRepository``)."""
        return self.storage.exists(self.object_key(digest)) or self.packs.contains(digest)

    def put_object_file(self, digest: str, path: str, *, assume_absent: bool = False) -> bool:
        """Store a file already known to hash to ``digest``; False when it was there already.

        ``assume_absent`` skips the existence check (a round trip) for a caller that has just
        listed the store; should the object have arrived since, it is stored again with the
        same bytes, which is harmless.
        """
        key = self.object_key(digest)
        if not assume_absent and self.storage.exists(key):
            return False
        self.storage.put_file(path, key)
        return True

    def get_object_file(self, digest: str, dest: str) -> None:
        """Write the object to ``dest`` (atomically), raising ``IntegrityError`` if its bytes are wrong.

        The copy is hashed, not the source, so what lands at ``dest`` is exactly what was verified.
        """
        folder = os.path.dirname(os.path.abspath(dest)) or "."
        tmp = os.path.join(folder, f".tmp-studio-{os.getpid()}-{threading.get_ident()}-{next(_COUNTER)}")
        try:
            try:
                self.storage.get_file(self.object_key(digest), tmp)
            except FileNotFoundError:
                try:
                    data = self.packs.read(digest)
                except FileNotFoundError as exc:
                    raise IntegrityError(f"object {digest[:12]}… is missing from the store") from exc
                with open(tmp, "wb") as packed:
                    packed.write(data)
            size = os.path.getsize(tmp)
            hasher = Hasher(size)
            if size:
                hasher.update_mmap(tmp)
            actual = hasher.hexdigest()
            if actual != digest:
                raise corrupted("object", digest, actual, self.quarantine_object(digest))
            os.replace(tmp, dest)
        finally:
            _unlink_quiet(tmp)

    def get_entry_file(self, entry: Entry, dest: str) -> None:
        """Write one manifest entry's file to ``dest``, whole or reassembled from its chunks."""
        if not entry.chunks:
            self.get_object_file(entry.digest, dest)
            return
        folder = os.path.dirname(os.path.abspath(dest)) or "."
        tmp = os.path.join(folder, f".tmp-studio-{os.getpid()}-{threading.get_ident()}-{next(_COUNTER)}")
        try:
            with open(tmp, "wb") as out:
                for digest, _size in entry.chunks:
                    out.write(self.read_object(digest))
            os.replace(tmp, dest)
        finally:
            _unlink_quiet(tmp)

    def read_object(self, digest: str) -> bytes:
        """An object's bytes, verified; ``IntegrityError`` when missing or corrupted."""
        try:
            data = self.storage.read_bytes(self.object_key(digest))
        except FileNotFoundError:
            return self._read_packed(digest)
        return self._verified(digest, data)

    def _read_packed(self, digest: str) -> bytes:
        """A packed object's bytes, verified; ``IntegrityError`` when missing or corrupted."""
        try:
            data = self.packs.read(digest)
        except FileNotFoundError as exc:
            raise IntegrityError(f"object {digest[:12]}… is missing from the store") from exc
        return self._verified(digest, data)

    def _verified(self, digest: str, data: bytes) -> bytes:
        """``data`` when it hashes to ``digest``; otherwise the object is quarantined and
        ``IntegrityError`` says so."""
        actual = hash_bytes(data)
        if actual != digest:
            raise corrupted("object", digest, actual, self.quarantine_object(digest))
        return data

    def iter_objects(self, fan: str = "", on_stray: Optional[Callable[[str], None]] = None) -> Iterator[str]:
        """Digests of every stored object, or of those in one fan-out folder (``fan``: ``"ab"``).

        A key that is not an object's name (a stray file) is skipped and handed to ``on_stray``.
        """
        yield from _digests(self.storage.list(f"objects/{fan}/" if fan else "objects/"), on_stray)

    def delete_object(self, digest: str) -> None:
        """Remove an object (garbage collection only)."""
        self.storage.delete(self.object_key(digest))

    # -- manifests --------------------------------------------------------------------------------
    def put_manifest(self, manifest: Manifest) -> str:
        """Store a manifest (once) and return its digest; remote stores are durable on return.

        One existing of another size is damaged and is replaced (a same-size one is caught by
        the digest check of ``get_manifest``, which quarantines it).
        """
        data = manifest.encode()
        return self.put_manifest_bytes(data, manifest.digest)

    def put_manifest_bytes(self, data: bytes, digest: str = "") -> str:
        """``put_manifest`` of bytes a ``Manifest.to_bytes`` made (e.g. without times); its digest."""
        digest = digest or hash_bytes(data)
        key = self.manifest_key(digest)
        try:
            if self.storage.info(key).size == len(data):
                return digest
        except FileNotFoundError:
            pass
        self.storage.write_bytes(key, data)
        return digest

    def get_manifest(self, digest: str) -> Manifest:
        """Read, verify and validate a manifest."""
        try:
            data = self.storage.read_bytes(self.manifest_key(digest))
        except FileNotFoundError as exc:
            raise IntegrityError(f"manifest {digest[:12]}… is missing from the store") from exc
        actual = hash_bytes(data)
        if actual != digest:
            raise corrupted("manifest", digest, actual, self.quarantine_manifest(digest))
        return Manifest.from_bytes(data)

    def has_manifest(self, digest: str) -> bool:
        """Whether the manifest is stored."""
        return self.storage.exists(self.manifest_key(digest))

    def iter_manifests(self, on_stray: Optional[Callable[[str], None]] = None) -> Iterator[str]:
        """Digests of every stored manifest (stray keys go to ``on_stray``, as in ``iter_objects``)."""
        yield from _digests(self.storage.list("manifests/"), on_stray)

    def delete_manifest(self, digest: str) -> None:
        """Remove a manifest (garbage collection only)."""
        self.storage.delete(self.manifest_key(digest))

    # -- quarantine ------------------------------------------------------------------------------
    def quarantine_object(self, digest: str) -> bool:
        """Move a loose object whose bytes do not match its name to ``quarantine/``; True if moved.

        It then counts as absent, so the next capture of the same content stores it again
        instead of trusting it. A packed object cannot be moved alone (``studio check --repair``
        moves its whole pack). Failures to move are ignored: the read that found the damage
        still raises.
        """
        return self._quarantine(self.object_key(digest), digest)

    def quarantine_manifest(self, digest: str) -> bool:
        """``quarantine_object`` for a manifest."""
        return self._quarantine(self.manifest_key(digest), digest)

    def _quarantine(self, key: str, digest: str) -> bool:
        try:
            moved = self._move_to_quarantine(key, digest)
        except OSError:
            return False
        if moved:
            self.mark_sweep()  # whoever remembers what the store holds must look again
        return moved

    def _move_to_quarantine(self, key: str, digest: str) -> bool:
        """Copy the key's bytes under ``quarantine/`` and delete it, if they are still damaged."""
        try:
            data = self.storage.read_bytes(key)
        except FileNotFoundError:
            return False
        if hash_bytes(data) == digest:
            return False  # repaired meanwhile
        self.storage.write_bytes(QUARANTINE + key, data)
        self.storage.delete(key)
        return True

    # -- sweeps ------------------------------------------------------------------------------
    def mark_sweep(self) -> None:
        """Say that content is about to be deleted: whoever remembers which objects the store
        holds (an uploader skipping known objects) must forget, or it would point at deleted ones.

        On a full disk (where garbage collection most needs to run) the old mark is deleted to
        make room, and if even that is not enough the mark is an empty key, told apart by its
        modification time.
        """
        token = secrets.token_hex(8).encode()
        for attempt in range(3):
            try:
                self.storage.write_bytes(_SWEEP_KEY, token if attempt < 2 else b"")
                return
            except OSError as exc:
                if exc.errno != errno.ENOSPC or attempt == 2:
                    raise
                if attempt == 0:
                    try:
                        self.storage.delete(_SWEEP_KEY)
                    except FileNotFoundError:
                        pass

    def last_sweep(self) -> str:
        """The mark of the last sweep that deleted content, ``""`` when there was none."""
        try:
            mark = self.storage.read_bytes(_SWEEP_KEY).decode()
            return mark or f"empty-{self.storage.info(_SWEEP_KEY).mtime}"
        except FileNotFoundError:
            return ""


def _digests(keys: Iterator[str], on_stray: Optional[Callable[[str], None]]) -> Iterator[str]:
    for key in keys:
        parts = key.split("/")
        digest = "".join(parts[1:]) if len(parts) == 3 and len(parts[1]) == 2 else ""
        if is_digest(digest):
            yield digest
        elif on_stray is not None:
            on_stray(key)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def copy_with_digest(src, out, size_hint: int = 0) -> str:  # type: ignore[no-untyped-def]
    """Copy ``src`` to ``out`` in chunks and return the digest of exactly the bytes copied."""
    hasher = Hasher(size_hint)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while True:
        n = src.readinto(buf)
        if not n:
            break
        hasher.update(view[:n])
        out.write(view[:n])
    return hasher.hexdigest()
