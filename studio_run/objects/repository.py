"""The object repository: write-once, content-addressed objects and manifests on any storage.

Layout on the storage (two-character fan-out keeps folders small on disk and SFTP)::

    objects/ab/cdef…     file contents, named by their BLAKE3 digest
    manifests/ab/cdef…   manifests (canonical JSON), named by their digest

Nothing here is ever overwritten with different bytes: a key names its content. A snapshot
becomes visible only when a record pointing at its manifest is written (``studio_run.metadata``),
after every object and the manifest are in place, so a reader never meets a missing object.
Every byte read back is checked against its digest before it is handed out.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterator

from ..errors import IntegrityError
from ..storage.base import Storage
from ..storage.local import LocalStorage
from .digest import CHUNK, Hasher, hash_bytes, hash_file
from .manifest import Manifest

__all__ = ["Repository", "copy_with_digest"]


class Repository:
    """Objects and manifests on one ``Storage``; fast file paths when that storage is local."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

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
        """Whether the object is stored."""
        return self.storage.exists(self.object_key(digest))

    def put_object_file(self, digest: str, path: str) -> bool:
        """Store a file already known to hash to ``digest``; False when it was there already."""
        key = self.object_key(digest)
        if self.storage.exists(key):
            return False
        self.storage.put_file(path, key)
        return True

    def ingest_file(self, path: str) -> tuple[str, int]:
        """Copy a file into a local repository in one pass, hashing what is copied.

        Returns ``(digest, bytes_written)``; ``bytes_written`` is 0 when the content was already
        stored (the temporary copy is dropped). The digest is of the bytes actually copied, so a
        file that changes mid-copy can never be stored under the wrong name; the caller compares
        stats before and after to decide whether the copy is a consistent one.
        """
        storage = self._local()
        fd, tmp = tempfile.mkstemp(dir=os.path.join(storage.root, ".tmp"), prefix="o-")
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                digest = copy_with_digest(src, out, os.fstat(src.fileno()).st_size)
            key = self.object_key(digest)
            target = storage.path_of(key)
            if os.path.exists(target):
                return digest, 0
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, target)
            except FileExistsError:  # a concurrent capture stored the same content
                return digest, 0
            return digest, os.path.getsize(target)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def ingest_bytes(self, data: bytes, digest: str) -> tuple[str, int]:
        """Store in-memory content already hashed to ``digest``; ``(digest, bytes_written)``."""
        storage = self._local()
        target = storage.path_of(self.object_key(digest))
        if os.path.exists(target):
            return digest, 0
        fd, tmp = tempfile.mkstemp(dir=os.path.join(storage.root, ".tmp"), prefix="o-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o444)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                os.link(tmp, target)
            except FileExistsError:
                return digest, 0
            return digest, len(data)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def get_object_file(self, digest: str, dest: str) -> None:
        """Write the object to ``dest`` (atomically), raising ``IntegrityError`` if its bytes are wrong."""
        folder = os.path.dirname(os.path.abspath(dest)) or "."
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            if self.is_local:
                with os.fdopen(fd, "wb") as out, open(self._local().path_of(self.object_key(digest)), "rb") as src:
                    actual = copy_with_digest(src, out, os.fstat(src.fileno()).st_size)
            else:
                os.close(fd)
                self.storage.get_file(self.object_key(digest), tmp)
                actual = hash_file(tmp)
            if actual != digest:
                raise IntegrityError(
                    f"object {digest[:12]}… is corrupted in the store (its bytes hash to {actual[:12]}…); "
                    "run `studio verify` and re-capture the artifact"
                )
            os.replace(tmp, dest)
        except FileNotFoundError as exc:
            raise IntegrityError(f"object {digest[:12]}… is missing from the store") from exc
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def iter_objects(self) -> Iterator[str]:
        """Digests of every stored object."""
        for key in self.storage.list("objects/"):
            _, fan, rest = key.split("/", 2)
            yield fan + rest

    def delete_object(self, digest: str) -> None:
        """Remove an object (garbage collection only)."""
        self.storage.delete(self.object_key(digest))

    # -- manifests --------------------------------------------------------------------------------
    def put_manifest(self, manifest: Manifest) -> str:
        """Store a manifest (once) and return its digest."""
        digest = manifest.digest
        key = self.manifest_key(digest)
        if not self.storage.exists(key):
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

    def _local(self) -> LocalStorage:
        if not isinstance(self.storage, LocalStorage):
            raise TypeError("this operation needs a repository on local disk")
        return self.storage


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
