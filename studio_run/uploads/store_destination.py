"""The default destination: studio's own store, where uploaded files become the run's ``files`` artifact.

Each file becomes a content-addressed object, like any captured file, so a checkpoint uploaded
twice or also captured is stored once. On a local store the staged copy is hard-linked into
``objects/`` after it is hashed, so the whole trip costs the one copy made on the script's
thread; on a remote store it is uploaded with the backend's streaming ``put_file``.

What makes the files visible follows the store's rule, pointer last: objects, then a manifest
of every name (a link is a symlink entry with a relative target), then a pointer:

- under ``studio run``: ``<run_dir>/uploads/<process>/files.json``, which the runner (the
  parent) publishes in the run's record when the script ends (``collect``);
- outside it (``fs_tracker.init``): the record of the run this process created, written
  directly, so ``studio get EXP/files/NAME`` works while the script still runs.

Nothing is written until ``flush``, which the uploader calls when its queue drains: a burst of
100 files costs one manifest and one pointer, not 100.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import threading
import time
from typing import Optional

from ..objects.digest import hash_stream
from ..objects.manifest import LINK, Entry, Manifest
from ..store.records import ArtifactRecord, RunRecord
from ..store.store import Store
from .destination import Destination

__all__ = ["FILES_TAG", "StoreDestination", "write_json_atomic"]

FILES_TAG = "files"


class StoreDestination(Destination):
    """Uploads into ``store``; publishes through ``pointer_path`` or ``record`` (exactly one)."""

    label = "store"

    def __init__(
        self,
        store: Store,
        *,
        pointer_path: Optional[str] = None,
        record: Optional[RunRecord] = None,
        close_store: bool = False,
    ) -> None:
        if (pointer_path is None) == (record is None):
            raise ValueError("a StoreDestination publishes through a pointer file or a record, exactly one")
        self.store = store
        self.repo = store.repo
        self.pointer_path = pointer_path
        self.record = record
        self.close_store = close_store
        self._lock = threading.Lock()
        self._files: dict[str, Entry] = {}
        self._links: dict[str, str] = {}
        self._times: dict[str, float] = {}
        self._published = ""

    # -- Destination --------------------------------------------------------------------------
    def upload_file(self, name: str, path: str) -> None:
        st = os.stat(path)
        digest = self._store_object(path)
        entry = Entry(name, size=st.st_size, mode=(st.st_mode & 0o777) | 0o200, digest=digest)
        with self._lock:
            self._files[name] = entry
            self._links.pop(name, None)
            self._times[name] = time.time()

    def link(self, target: str, name: str) -> None:
        with self._lock:
            self._links[name] = target
            self._files.pop(name, None)
            self._times[name] = time.time()

    def flush(self, timeout: Optional[float] = None) -> None:
        with self._lock:
            manifest = self.manifest()
            if manifest.digest == self._published:
                return
            self.repo.put_manifest(manifest)
            if self.pointer_path is not None:
                write_json_atomic(self.pointer_path, {
                    "digest": manifest.digest,
                    "size": manifest.size,
                    "files": manifest.file_count,
                    "names": dict(sorted(self._times.items())),
                    "updated_at": time.time(),
                })
            else:
                self._publish_record(manifest)
            self._published = manifest.digest

    def close(self) -> None:
        self.flush()
        if self.record is not None:
            with self._lock:
                self.record.status = "finished"
                self.record.ended_at = time.time()
                if self._published:
                    self.store.records.write(self.record)
        if self.close_store:
            self.store.close()

    # -- helpers ------------------------------------------------------------------------------
    def manifest(self) -> Manifest:
        """The manifest of every name delivered so far (call with the lock held)."""
        entries = list(self._files.values())
        for name, target in self._links.items():
            rel = posixpath.relpath(target, posixpath.dirname(name) or ".")
            entries.append(Entry(name, type=LINK, target=rel))
        return Manifest.build(entries)

    def _publish_record(self, manifest: Manifest) -> None:
        assert self.record is not None
        previous = self.record.artifacts.get(FILES_TAG)
        self.record.artifacts[FILES_TAG] = ArtifactRecord(
            tag=FILES_TAG,
            kind=FILES_TAG,
            digest=manifest.digest,
            size=manifest.size,
            files=manifest.file_count,
            snapshots=(previous.snapshots if previous else 0) + 1,
            updated_at=time.time(),
        )
        self.store.records.write(self.record)

    def _store_object(self, path: str) -> str:
        """Store the staged file as an object and return its digest.

        The staged copy is private and read-only, so hashing it first and storing it after
        cannot tear. A local store adopts it with a hard link (fsynced first when the store
        is configured to fsync); a remote one gets it through ``put_object_file``.
        """
        with open(path, "rb") as f:
            digest = hash_stream(f)  # one thread: the script's training loop keeps the other cores
        if not self.repo.is_local:
            self.repo.put_object_file(digest, path)
            return digest
        storage = self.repo.storage
        target = storage.path_of(self.repo.object_key(digest))  # type: ignore[attr-defined]
        if os.path.exists(target):
            return digest
        os.makedirs(os.path.dirname(target), exist_ok=True)
        durable = bool(getattr(storage, "fsync", True))
        if durable:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(path, 0o444)
        try:
            os.link(path, target)
        except FileExistsError:
            return digest  # the same content arrived meanwhile
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            self.repo.put_object_file(digest, path)  # another filesystem: copy instead
            return digest
        if durable:
            _fsync_dir(os.path.dirname(target))
        return digest


def write_json_atomic(path: str, doc: dict) -> None:
    """Write a small JSON file by temp file and rename, so a reader never sees half of it."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, sort_keys=True)
    os.replace(tmp, path)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the object is still written
    finally:
        os.close(fd)
