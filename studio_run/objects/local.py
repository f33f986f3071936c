"""``LocalRepository``: what only a repository on this machine's disk can do.

Captures always write into a local repository (the store itself, or a remote store's staging
folder), so the fast paths live here, chosen once at construction (``Repository(LocalStorage)``
gives one) instead of ``isinstance`` branches inside the generic class:

- unnamed-file ingest: a file made with ``O_TMPFILE`` gets its object name by ``link`` once
  complete, so "already stored" costs no lookup and a crash leaves nothing to clean up;
- kernel copies (``copy_file_range``) into and out of objects, hashed from the page cache;
- the object's file path, for hard links and direct reads;
- small objects gathered into packs (``local_packs``): a capture of 100,000 small files writes a
  few dozen pack files instead of 100,000 objects. Loose objects (older stores, large files)
  are read as before; every read tries the place the object's size says is likelier first.

An existing object is trusted only when its size is right (one ``stat``, paid only when the
content was already there): a truncated or extended object is moved to quarantine and written
again, so the next capture of the same content heals it. A same-size corruption is found by the
digest check of every read, which quarantines it too (see ``Repository.quarantine_object``).
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
from typing import Optional

from ..errors import IntegrityError
from ..storage.local import LocalStorage
from .digest import CHUNK, FILE_CHUNK, Hasher, chunk_list_digest, hash_bytes, hash_file, is_digest
from .local_packs import LOCAL_PACK_BELOW, LocalPackSet
from .manifest import Entry, Manifest
from .repository import QUARANTINE, Repository, corrupted

__all__ = ["LocalRepository"]

_COUNTER = itertools.count()
_LOOK_FIRST_FROM = 1 << 20
_COPY_IN_KERNEL_FROM = 1 << 20  # objects from this size are copied by copy_file_range, then hashed
#: Whether this kernel, file system and /proc can make unnamed files and link them (learned once).
_UNNAMED = [os.path.isdir("/proc/self/fd") and hasattr(os, "O_TMPFILE")]


class LocalRepository(Repository, storage=LocalStorage):
    """Objects and manifests as files under a ``LocalStorage`` root, with the local fast paths."""

    storage: LocalStorage
    packs: LocalPackSet
    is_local = True

    def __init__(self, storage: LocalStorage, pack_index_cache: Optional[str] = None, *, packed: bool = True) -> None:
        """``packed``: gather small objects into packs (the local store); False keeps every
        object loose (a remote store's staging folder, whose uploader reads staged files)."""
        super().__init__(storage, pack_index_cache)
        self.packs = LocalPackSet(storage, pack_index_cache)
        self.pack_below = LOCAL_PACK_BELOW if packed else 0
        self.root = storage.root
        self._folders: set[str] = set()
        self._inflight: set[str] = set()
        self._lock = threading.Lock()

    def has_object(self, digest: str, size: Optional[int] = None) -> bool:
        """Whether the object is stored, packed or loose; with ``size``, only when it has that
        size, so a truncated loose object counts as absent and is rewritten."""
        if self.packs.holds(digest, size):
            return True
        try:
            st = os.stat(self._object_path(digest))
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def seal(self) -> None:
        """Write the small objects gathered so far as a pack (pack fsynced, then its index).

        A capture calls it before storing its manifest, so a manifest never names an object
        that only this process's memory holds."""
        if self.packs.seal() is not None:
            self._dirty = True

    def flush(self) -> None:
        """Seal the gathered objects into a pack, then make everything durable (one ``syncfs``)."""
        self.seal()
        super().flush()

    # -- ingest -------------------------------------------------------------------------------
    def ingest_file(self, path: str) -> tuple[str, int]:
        """Copy a file into the repository and name it by the digest of the copy.

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
        if len(data) < self.pack_below:
            written = self.packs.add(digest, data)
            if written:
                self._dirty = True
            return digest, written
        if len(data) >= _LOOK_FIRST_FROM and self.has_object(digest, len(data)):
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
        folder = os.path.join(self.root, ".tmp")
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
        """Name an unnamed file as the object ``digest``; bytes written, 0 if it was stored already
        (with the right size: a damaged one is quarantined and replaced by this copy)."""
        target = self._object_path(digest)
        self._make_folder(os.path.dirname(target))
        for _attempt in range(3):
            try:
                # linkat(AT_SYMLINK_FOLLOW) through /proc: the one way to name an O_TMPFILE without
                # CAP_DAC_READ_SEARCH; a plain link() of "/proc/self/fd/N" would link the symlink.
                os.link(str(fd), target, src_dir_fd=_proc_fds(), follow_symlinks=True)
            except FileExistsError:
                if self.has_object(digest, size) or not self._quarantine_if_damaged(digest, size):
                    return 0
                continue
            self._dirty = True
            return size
        return 0  # another writer keeps replacing it: theirs has the same name, and is checked on read

    def _temp_path(self) -> str:
        name = f"o-{os.getpid()}-{threading.get_ident()}-{next(_COUNTER)}"
        return os.path.join(self.root, ".tmp", name)

    def _commit_temp(self, tmp: str, digest: str, size: int) -> tuple[str, int]:
        """Rename a finished temp file onto its object name; ``(digest, 0)`` if it was stored already.

        Renaming over an existing object would be harmless (same bytes), so the existence check
        only keeps the byte count honest; an in-process set settles two threads storing the same
        content at once. An existing object of the wrong size is replaced.
        """
        target = self._object_path(digest)
        with self._lock:
            if digest in self._inflight or self.has_object(digest, size):
                return digest, 0
            self._inflight.add(digest)
        try:
            if os.path.exists(target):
                self._quarantine_if_damaged(digest, size)
            self._rename_into_place(tmp, target)
        finally:
            with self._lock:
                self._inflight.discard(digest)
        return digest, size

    def _make_folder(self, folder: str) -> None:
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)

    def _rename_into_place(self, tmp: str, target: str) -> None:
        """Move a finished temp file onto its name, creating its fan-out folder once."""
        self._make_folder(os.path.dirname(target))
        os.rename(tmp, target)
        self._dirty = True

    # -- reading ------------------------------------------------------------------------------
    def get_object_file(self, digest: str, dest: str) -> None:
        """Copy the object to ``dest`` in the kernel (atomically), verifying the copy."""
        folder = os.path.dirname(os.path.abspath(dest)) or "."
        tmp = os.path.join(folder, f".tmp-studio-{os.getpid()}-{threading.get_ident()}-{next(_COUNTER)}")
        try:
            try:
                src = os.open(self._object_path(digest), os.O_RDONLY)
            except FileNotFoundError:
                data = self._read_packed(digest)
                with open(tmp, "wb") as packed:
                    packed.write(data)
                os.replace(tmp, dest)
                return
            try:
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    size = _copy_fd(src, out)
                finally:
                    os.close(out)
            finally:
                os.close(src)
            self._verify_copy(digest, tmp, size)
            os.replace(tmp, dest)
        finally:
            _unlink_quiet(tmp)

    def write_entry_to(self, entry: Entry, out: int) -> None:
        """Append one entry's content to the open file ``out``, verifying each object it copies.

        A small object is read once, hashed and written from the same buffer; a large one is
        copied in the kernel (``copy_file_range``) and then hashed from the page cache the copy
        just filled, so no byte crosses into Python twice. A missing or corrupted object raises
        ``IntegrityError`` after part of it may have been written, so ``out`` must be a file the
        caller throws away on error.
        """
        for digest, size in entry.chunks or ((entry.digest, entry.size),):
            path = self._object_path(digest)
            if size < self.pack_below_read and self.packs.location(digest) is not None:
                _write_all(out, self._read_packed(digest))  # one pread from a pack kept open
                continue
            try:
                src = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                _write_all(out, self._read_packed(digest))
                continue
            try:
                if size < _COPY_IN_KERNEL_FROM:  # the manifest's size bounds this one read
                    data = os.read(src, size + 1)
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
                raise corrupted("object", digest, actual, self.quarantine_object(digest))

    #: Objects below this size are looked for in the packs first (whatever this repository packs).
    pack_below_read = LOCAL_PACK_BELOW

    def read_order(self, digest: str) -> tuple[str, int]:
        """Sort key that reads packed objects pack by pack, front to back (loose ones first)."""
        found = self.packs.location(digest)
        return (found[0], found[1]) if found else ("", 0)

    def _verify_copy(self, digest: str, copy: str, size: int) -> None:
        hasher = Hasher(size)
        if size:
            hasher.update_mmap(copy)
        actual = hasher.hexdigest()
        if actual != digest:
            raise corrupted("object", digest, actual, self.quarantine_object(digest))

    # -- manifests ----------------------------------------------------------------------------
    def put_manifest(self, manifest: Manifest) -> str:
        """Store a manifest (once) and return its digest.

        Written like an object (temp file and rename, no fsync of its own): like objects, it
        becomes durable with the ``flush`` that precedes the record pointing at it. An existing
        manifest of the wrong size is replaced (a same-size corruption is caught on read).
        """
        data = manifest.encode()
        return self.put_manifest_bytes(data, manifest.digest)

    def put_manifest_bytes(self, data: bytes, digest: str = "") -> str:
        """``put_manifest`` of bytes a ``Manifest.to_bytes`` made (e.g. without times); its digest."""
        digest = digest or hash_bytes(data)
        target = self.storage.path_of(self.manifest_key(digest))
        try:
            if os.stat(target).st_size == len(data):
                return digest
        except FileNotFoundError:
            pass
        tmp = self._temp_path()
        try:
            with open(tmp, "wb") as out:
                out.write(data)
            self._rename_into_place(tmp, target)
        finally:
            _unlink_quiet(tmp)
        return digest

    # -- quarantine ---------------------------------------------------------------------------
    def quarantine_object(self, digest: str) -> bool:
        """Move a damaged object aside: a loose one alone; a packed one with its pack, whose
        sound objects are first written into a new pack (``LocalPackSet.salvage``). True when
        the damaged bytes were moved, so the object now counts as absent."""
        if super().quarantine_object(digest):
            return True
        found = self.packs.location(digest)
        if found is None:
            return False
        try:
            lost = self.packs.salvage(found[0])
        except OSError:
            return False  # the read that found the damage still raises
        self.mark_sweep()
        return digest in lost

    def _quarantine_if_damaged(self, digest: str, size: int) -> bool:
        """Move an existing object of the wrong size out of the way; True when it was moved."""
        try:
            if os.stat(self._object_path(digest)).st_size == size:
                return False
        except FileNotFoundError:
            return True  # gone meanwhile: the caller writes it
        return self._move_to_quarantine(self.object_key(digest), digest, check=False)

    def _move_to_quarantine(self, key: str, digest: str, check: bool = True) -> bool:
        """Rename the file of ``key`` into ``quarantine/`` (no copy: works on a full disk).

        The rename comes first and the check after, on the moved file: a writer that put good
        bytes in place meanwhile gets them moved back, so a good object is never lost.
        """
        source = self.storage.path_of(key)
        target = self.storage.path_of(f"{QUARANTINE}{key}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.replace(source, target)
        except FileNotFoundError:
            return False
        if check and _file_digest(target) == digest:
            try:
                os.link(target, source)
            except FileExistsError:
                pass
            _unlink_quiet(target)
            return False
        return True

    def _object_path(self, digest: str) -> str:
        """The file of an object (a digest check, cheaper than the general key check of
        ``path_of``, keeps it inside the store: this runs once per file copied)."""
        if not is_digest(digest):
            raise IntegrityError(f"{digest!r} is not an object digest")
        return os.path.join(self.root, "objects", digest[:2], digest[2:])


def _file_digest(path: str) -> str:
    try:
        return hash_file(path)
    except OSError:
        return ""


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
        _write_all(out, chunk)
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
