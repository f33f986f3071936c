"""The object repository: write-once, content-addressed objects and manifests on any storage.

Layout on the storage (two-character fan-out keeps folders small on disk and SFTP)::

    objects/ab/cdef…     file contents, named by their BLAKE3 digest
    manifests/ab/cdef…   manifests (canonical JSON), named by their digest
    gc/last-sweep        a new random mark each time garbage collection deletes content

Nothing here is ever overwritten with different bytes: a key names its content. A snapshot
becomes visible only when a record pointing at its manifest is written (``studio_run.store.records``),
after every object and the manifest are in place, so a reader never meets a missing object.
Every byte read back is checked against its digest before it is handed out.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import threading
from typing import Iterator, Optional

from ..errors import IntegrityError
from ..storage.base import Storage
from ..storage.local import LocalStorage
from .digest import CHUNK, FILE_CHUNK, Hasher, chunk_list_digest, hash_bytes, is_digest
from .manifest import Entry, Manifest
from .packs import PackSet

__all__ = ["Repository", "copy_with_digest"]

_SWEEP_KEY = "gc/last-sweep"

_COUNTER = itertools.count()
_LOOK_FIRST_FROM = 1 << 20
#: Whether this kernel, file system and /proc can make unnamed files and link them (learned once).
_UNNAMED = [os.path.isdir("/proc/self/fd") and hasattr(os, "O_TMPFILE")]


class Repository:
    """Objects and manifests on one ``Storage``; fast file paths when that storage is local."""

    def __init__(self, storage: Storage, pack_index_cache: Optional[str] = None) -> None:
        self.storage = storage
        self._folders: set[str] = set()
        self._inflight: set[str] = set()
        self._lock = threading.Lock()
        self._dirty = False
        self.packs = PackSet(storage, pack_index_cache)

    def flush(self) -> None:
        """Make everything written through this repository durable (one ``syncfs``), if anything was."""
        if self._dirty:
            self._dirty = False
            self.storage.flush()

    @property
    def is_local(self) -> bool:
        """Whether objects are plain files on this machine (capture writes straight into them)."""
        return isinstance(self.storage, LocalStorage)

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
    def has_object(self, digest: str) -> bool:
        """Whether the object is stored, loose or in a pack."""
        return self.storage.exists(self.object_key(digest)) or (not self.is_local and self.packs.contains(digest))

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

    def ingest_file(self, path: str) -> tuple[str, int]:
        """Copy a file into a local repository and name it by the digest of the copy.

        Returns ``(digest, bytes_written)``; ``bytes_written`` is 0 when the content was already
        stored. The kernel copies the bytes (``copy_file_range``: no trip through Python), then
        the *copy* is hashed from the page cache, so an object's name is always the digest of
        the bytes it holds, even if the source changed mid-copy; the caller compares stats
        before and after to decide whether the copy is a consistent one.
        """
        out = self._open_unnamed()
        if out is None:
            return self._ingest_file_named(path)
        try:
            with open(path, "rb") as src:
                size = _copy_fd(src.fileno(), out)
            hasher = Hasher(size)
            if size:
                hasher.update_mmap(_fd_path(out))
            digest = hasher.hexdigest()
            return digest, self._link_into_place(out, digest, size)
        finally:
            os.close(out)

    def _ingest_file_named(self, path: str) -> tuple[str, int]:
        """``ingest_file`` where unnamed files are not available: a named temp file and a rename."""
        tmp = self._temp_path()
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            try:
                with open(path, "rb") as src:
                    size = _copy_fd(src.fileno(), out)
            finally:
                os.close(out)
            hasher = Hasher(size)
            if size:
                hasher.update_mmap(tmp)
            return self._commit_temp(tmp, hasher.hexdigest(), size)
        finally:
            _unlink_quiet(tmp)

    def ingest_file_chunked(self, path: str) -> tuple[str, tuple[tuple[str, int], ...], int]:
        """Store a large file as fixed-size chunks; ``(chunk-list digest, chunks, bytes_written)``.

        Each chunk is read once into memory, hashed, and written only if the store lacks it, so a
        partly rewritten checkpoint costs the chunks that changed. Every chunk object is named by
        the digest of the very bytes written, whatever the source does meanwhile.
        """
        chunks: list[tuple[str, int]] = []
        written = 0
        buf = bytearray(FILE_CHUNK)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as src:
            while True:
                n = _read_full(src, view)
                if not n:
                    break
                piece = view[:n]
                digest, stored = self.ingest_bytes(piece, hash_bytes(piece))
                chunks.append((digest, n))
                written += stored
        return chunk_list_digest(chunks), tuple(chunks), written

    def ingest_bytes(self, data: "bytes | memoryview", digest: str) -> tuple[str, int]:
        """Store in-memory content already hashed to ``digest``; ``(digest, bytes_written)``.

        Content of a megabyte or more is looked up first, to skip writing it again; smaller
        content is written straight away, since the link that names it fails on its own when
        the object exists, for less than a separate lookup costs.
        """
        if len(data) >= _LOOK_FIRST_FROM and os.path.exists(self._object_path(digest)):
            return digest, 0
        out = self._open_unnamed()
        if out is None:
            return self._ingest_bytes_named(data, digest)
        try:
            _write_all(out, data)
            return digest, self._link_into_place(out, digest, len(data))
        finally:
            os.close(out)

    def _ingest_bytes_named(self, data: "bytes | memoryview", digest: str) -> tuple[str, int]:
        tmp = self._temp_path()
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            try:
                _write_all(out, data)
            finally:
                os.close(out)
            return self._commit_temp(tmp, digest, len(data))
        finally:
            _unlink_quiet(tmp)

    def _open_unnamed(self) -> Optional[int]:
        """A new file with no name yet in the store (``O_TMPFILE``), or None where unsupported.

        Such a file is given its object name by ``link`` once complete, which fails when the
        object exists, so "already stored" costs no lookup, two writers of the same content
        settle it in the kernel, and a crash before the link leaves nothing behind to clean up.
        """
        if not _UNNAMED[0]:
            return None
        folder = os.path.join(self._local().root, ".tmp")
        try:
            return os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o444)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            return self._open_unnamed()
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                _UNNAMED[0] = False
                return None
            raise

    def _link_into_place(self, fd: int, digest: str, size: int) -> int:
        """Name an unnamed file as the object ``digest``; bytes written, 0 if it was stored already."""
        target = self._object_path(digest)
        folder = os.path.dirname(target)
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        try:
            # linkat(AT_SYMLINK_FOLLOW) through /proc: the one way to name an O_TMPFILE without
            # CAP_DAC_READ_SEARCH; a plain link() of "/proc/self/fd/N" would link the symlink.
            os.link(str(fd), target, src_dir_fd=_proc_fds(), follow_symlinks=True)
        except FileExistsError:
            return 0
        self._dirty = True
        return size

    def _temp_path(self) -> str:
        name = f"o-{os.getpid()}-{threading.get_ident()}-{next(_COUNTER)}"
        return os.path.join(self._local().root, ".tmp", name)

    def _commit_temp(self, tmp: str, digest: str, size: int) -> tuple[str, int]:
        """Rename a finished temp file onto its object name; ``(digest, 0)`` if it was stored already.

        Renaming over an existing object would be harmless (same bytes), so the existence check
        only keeps the byte count honest; an in-process set settles two threads storing the same
        content at once.
        """
        target = self._object_path(digest)
        with self._lock:
            if digest in self._inflight or os.path.exists(target):
                return digest, 0
            self._inflight.add(digest)
        try:
            self._rename_into_place(tmp, target)
        finally:
            with self._lock:
                self._inflight.discard(digest)
        return digest, size

    def _rename_into_place(self, tmp: str, target: str) -> None:
        """Move a finished temp file onto its name, creating its fan-out folder once."""
        folder = os.path.dirname(target)
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        os.rename(tmp, target)
        self._dirty = True

    def get_object_file(self, digest: str, dest: str) -> None:
        """Write the object to ``dest`` (atomically), raising ``IntegrityError`` if its bytes are wrong.

        The copy is hashed, not the source, so what lands at ``dest`` is exactly what was verified.
        """
        folder = os.path.dirname(os.path.abspath(dest)) or "."
        tmp = os.path.join(folder, f".tmp-studio-{os.getpid()}-{threading.get_ident()}-{next(_COUNTER)}")
        try:
            if self.is_local:
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    with open(self._object_path(digest), "rb") as src:
                        size = _copy_fd(src.fileno(), out)
                finally:
                    os.close(out)
            else:
                try:
                    self.storage.get_file(self.object_key(digest), tmp)
                except FileNotFoundError:
                    with open(tmp, "wb") as packed:
                        packed.write(self.packs.read(digest))
                size = os.path.getsize(tmp)
            hasher = Hasher(size)
            if size:
                hasher.update_mmap(tmp)
            actual = hasher.hexdigest()
            if actual != digest:
                raise IntegrityError(
                    f"object {digest[:12]}… is corrupted in the store (its bytes hash to {actual[:12]}…); "
                    "delete the damaged run or re-capture the artifact"
                )
            os.replace(tmp, dest)
        except FileNotFoundError as exc:
            if exc.filename == tmp or os.path.dirname(str(exc.filename)) == folder:
                raise
            raise IntegrityError(f"object {digest[:12]}… is missing from the store") from exc
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

    def write_entry_to(self, entry: Entry, out: int) -> None:
        """Append one entry's content to the open file ``out``, verifying each object it copies.

        Local repositories only. A small object is read once, hashed and written from the same
        buffer; a large one is copied in the kernel (``copy_file_range``) and then hashed from
        the page cache the copy just filled, so no byte crosses into Python twice. A missing or
        corrupted object raises ``IntegrityError`` after part of it may have been written, so
        ``out`` must be a file the caller throws away on error.
        """
        for digest, size in entry.chunks or ((entry.digest, entry.size),):
            path = self._object_path(digest)
            try:
                src = os.open(path, os.O_RDONLY)
            except FileNotFoundError as exc:
                raise IntegrityError(f"object {digest[:12]}… is missing from the store") from exc
            try:
                if size < _COPY_IN_KERNEL_FROM:  # the manifest's size bounds this one read
                    data = os.read(src, size)
                    actual = hash_bytes(data)
                    _write_all(out, data)
                else:
                    _copy_fd(src, out)
                    hasher = Hasher(size)
                    hasher.update_mmap(path)
                    actual = hasher.hexdigest()
            finally:
                os.close(src)
            if actual != digest:
                raise IntegrityError(
                    f"object {digest[:12]}… is corrupted in the store (its bytes hash to {actual[:12]}…); "
                    "delete the damaged run or re-capture the artifact"
                )

    def read_object(self, digest: str) -> bytes:
        """An object's bytes, verified; ``IntegrityError`` when missing or corrupted."""
        try:
            data = self.storage.read_bytes(self.object_key(digest))
        except FileNotFoundError:
            try:
                data = self.packs.read(digest)
            except FileNotFoundError as exc:
                raise IntegrityError(f"object {digest[:12]}… is missing from the store") from exc
        actual = hash_bytes(data)
        if actual != digest:
            raise IntegrityError(
                f"object {digest[:12]}… is corrupted in the store (its bytes hash to {actual[:12]}…); "
                "delete the damaged run or re-capture the artifact"
            )
        return data

    def iter_objects(self, fan: str = "") -> Iterator[str]:
        """Digests of every stored object, or of those in one fan-out folder (``fan``: ``"ab"``)."""
        for key in self.storage.list(f"objects/{fan}/" if fan else "objects/"):
            _, head, rest = key.split("/", 2)
            yield head + rest

    def delete_object(self, digest: str) -> None:
        """Remove an object (garbage collection only)."""
        self.storage.delete(self.object_key(digest))

    # -- manifests --------------------------------------------------------------------------------
    def put_manifest(self, manifest: Manifest) -> str:
        """Store a manifest (once) and return its digest.

        On local disk it is written like an object (temp file and rename, no fsync of its own):
        like objects, it becomes durable with the ``flush`` that precedes the record pointing
        at it. Remote stores are durable on return.
        """
        digest = manifest.digest
        key = self.manifest_key(digest)
        if self.is_local:
            target = self._local().path_of(key)
            if not os.path.exists(target):
                tmp = self._temp_path()
                try:
                    with open(tmp, "wb") as out:
                        out.write(manifest.to_bytes())
                    self._rename_into_place(tmp, target)
                finally:
                    _unlink_quiet(tmp)
        elif not self.storage.exists(key):
            self.storage.write_bytes(key, manifest.to_bytes())
        return digest

    def get_manifest(self, digest: str) -> Manifest:
        """Read, verify and validate a manifest."""
        try:
            data = self.storage.read_bytes(self.manifest_key(digest))
        except FileNotFoundError as exc:
            raise IntegrityError(f"manifest {digest[:12]}… is missing from the store") from exc
        if hash_bytes(data) != digest:
            raise IntegrityError(f"manifest {digest[:12]}… is corrupted in the store")
        return Manifest.from_bytes(data)

    def has_manifest(self, digest: str) -> bool:
        """Whether the manifest is stored."""
        return self.storage.exists(self.manifest_key(digest))

    def iter_manifests(self) -> Iterator[str]:
        """Digests of every stored manifest."""
        for key in self.storage.list("manifests/"):
            _, fan, rest = key.split("/", 2)
            yield fan + rest

    def delete_manifest(self, digest: str) -> None:
        """Remove a manifest (garbage collection only)."""
        self.storage.delete(self.manifest_key(digest))

    # -- sweeps ------------------------------------------------------------------------------
    def mark_sweep(self) -> None:
        """Say that content is about to be deleted: whoever remembers which objects the store
        holds (an uploader skipping known objects) must forget, or it would point at deleted ones."""
        self.storage.write_bytes(_SWEEP_KEY, secrets.token_hex(8).encode())

    def last_sweep(self) -> str:
        """The mark of the last sweep that deleted content, ``""`` when there was none."""
        try:
            return self.storage.read_bytes(_SWEEP_KEY).decode()
        except FileNotFoundError:
            return ""

    def _object_path(self, digest: str) -> str:
        """The file of an object in a local repository (a digest check, cheaper than the general
        key check of ``path_of``, keeps it inside the store: this runs once per file copied)."""
        if not is_digest(digest):
            raise IntegrityError(f"{digest!r} is not an object digest")
        return os.path.join(self._local().root, self.object_key(digest))

    def _local(self) -> LocalStorage:
        if not isinstance(self.storage, LocalStorage):
            raise TypeError("this operation needs a repository on local disk")
        return self.storage


def _copy_fd(src: int, out: int) -> int:
    """Copy all of ``src`` to ``out`` in the kernel where possible; returns bytes copied."""
    total = 0
    try:
        while True:
            n = os.copy_file_range(src, out, 1 << 30)
            if not n:
                return total
            total += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP) or total:
            raise
    while True:
        chunk = os.read(src, CHUNK)
        if not chunk:
            return total
        view = memoryview(chunk)
        while view:
            view = view[os.write(out, view):]
        total += len(chunk)


def _fd_path(fd: int) -> str:
    """A path that opens (or links) the file behind an open descriptor, unnamed ones included."""
    return f"/proc/self/fd/{fd}"


_PROC_FDS: list[tuple[int, int]] = []


def _proc_fds() -> int:
    """A descriptor of this process's ``/proc/self/fd`` folder (reopened after a fork)."""
    pid = os.getpid()
    if not _PROC_FDS or _PROC_FDS[0][0] != pid:
        _PROC_FDS[:] = [(pid, os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY))]
    return _PROC_FDS[0][1]


_COPY_IN_KERNEL_FROM = 1 << 20  # objects from this size are copied by copy_file_range, then hashed


def _write_all(out: int, data: "bytes | memoryview") -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(out, view):]


def _read_full(src, view: memoryview) -> int:  # type: ignore[no-untyped-def]
    """Fill ``view`` from ``src`` unless the file ends first; returns the bytes read."""
    total = 0
    while total < len(view):
        n = src.readinto(view[total:])
        if not n:
            break
        total += n
    return total


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
