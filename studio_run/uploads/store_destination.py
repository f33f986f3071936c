"""The default destination: studio's own store, where uploaded files become the run's ``files`` artifact.

Each file becomes a content-addressed object, like any captured file, so a checkpoint uploaded
twice or also captured is stored once. The private copy is hard-linked into the repository that
captures write to after it is hashed, so the whole trip to disk costs the one copy made on the
script's thread: the store itself when it is local; this machine's staging folder of the store
when it is remote, from where ``flush`` sends it (``studio_run.store.transfer``).

A remote store that does not answer loses nothing and fails nothing: the files stay staged
(held from ``studio gc``, ``studio_run.store.holds``) and reach the store with the run's record,
through the journal that captures go through (the background uploader, ``studio sync``).

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

from ..errors import TRANSIENT
from ..objects.digest import hash_stream
from ..objects.manifest import LINK, Entry, Manifest
from ..store.journal import entry_name
from ..store.records import ArtifactRecord, RunRecord
from ..store.store import Store
from .destination import Destination

__all__ = ["FILES_TAG", "StoreDestination", "write_json_atomic"]

FILES_TAG = "files"


class StoreDestination(Destination):
    """Uploads into ``store``; publishes through ``pointer_path`` or ``record`` (exactly one).

    ``run`` (``(experiment, run_id)``, taken from ``record`` when given) names what the files
    of a remote store are held for in staging until the run's record is pending.
    """

    label = "store"

    def __init__(
        self,
        store: Store,
        *,
        pointer_path: Optional[str] = None,
        record: Optional[RunRecord] = None,
        close_store: bool = False,
        run: tuple[str, str] = ("", ""),
    ) -> None:
        if (pointer_path is None) == (record is None):
            raise ValueError("a StoreDestination publishes through a pointer file or a record, exactly one")
        self.store = store
        self.repo = store.local_repo  # the store itself when local, this machine's staging when remote
        if record is not None:
            run = (record.experiment, record.run_id)
        self._hold = f"{entry_name(*run)}.files-{os.getpid()}-{id(self):x}"
        self._loose: set[str] = set()  # objects staged since the last manifest (remote store)
        self._journaled = False  # the record went through the journal once: it always does then
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
        if self.store.holds is None:
            digest = self._store_object(path)
        else:
            with self.store.holds.writing():  # staged, and held before gc may look
                digest = self._store_object(path)
                with self._lock:
                    self._loose.add(digest)
                    self.store.holds.hold(self._hold, [self._published] if self._published else [], self._loose)
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

    def remove(self, name: str) -> None:
        with self._lock:
            self._files.pop(name, None)
            self._links.pop(name, None)
            self._times.pop(name, None)

    def flush(self, timeout: Optional[float] = None) -> None:
        with self._lock:
            manifest = self.manifest()
            if manifest.digest == self._published:
                return
            self._stage_manifest(manifest)
            sent = self._send(manifest.digest)
            if self.pointer_path is not None:
                write_json_atomic(self.pointer_path, {
                    "digest": manifest.digest,
                    "size": manifest.size,
                    "files": manifest.file_count,
                    "names": dict(sorted(self._times.items())),
                    "updated_at": time.time(),
                })
            else:
                self._publish_record(manifest, sent)
            self._published = manifest.digest
            if sent and self.store.holds is not None:
                self.store.holds.release(self._hold)  # the store has it all

    def close(self) -> None:
        self.flush()
        if self.record is not None:
            with self._lock:
                self.record.status = "finished"
                self.record.ended_at = time.time()
                if self._published:
                    self._write_record(final=True)
                    if self.store.is_remote:  # wait for the journal as `studio run` does; say what is left
                        self.store.syncer().finish(self.store.config.upload_wait)
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

    def _stage_manifest(self, manifest: Manifest) -> None:
        """Write the manifest where the objects went; on a remote store, held in place of them."""
        if self.store.holds is None:
            self.repo.put_manifest(manifest)
            return
        with self.store.holds.writing():
            self.repo.put_manifest(manifest)
            self._loose.clear()
            self.store.holds.hold(self._hold, [manifest.digest])

    def _send(self, digest: str) -> bool:
        """Send a staged snapshot to a remote store now: True once the store has it (always on a
        local one). A store that does not answer leaves it staged for the journal: False."""
        if not self.store.is_remote:
            return True
        connection = self.store.connection
        try:
            self.store.syncer().transfer.send(digest)
        except TRANSIENT:
            return False
        except RuntimeError:  # no SDK can open a connection at interpreter exit: the journal sends it
            if connection is None or connection.connected or self.record is not None:
                raise
            return False
        return True

    def _write_record(self, final: bool = False, sent: bool = True) -> None:
        """Write the record directly while the store answers; through the journal (as captures
        are) once it did not, so that an older pending record never lands after a newer one."""
        assert self.record is not None
        if not self.store.is_remote:
            self.store.records.write(self.record)
            return
        if sent and not self._journaled and not final:
            try:
                self.store.records.write(self.record)
                return
            except TRANSIENT:
                pass
        self._journaled = True
        self.store.publish(self.record, final=final)

    def _publish_record(self, manifest: Manifest, sent: bool) -> None:
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
        self._write_record(sent=sent)

    def _store_object(self, path: str) -> str:
        """Store the staged file as an object and return its digest.

        The staged copy is private and read-only, so hashing it first and storing it after
        cannot tear. A local store adopts it with a hard link (fsynced first when the store
        is configured to fsync); a remote one gets it through ``put_object_file``.
        """
        with open(path, "rb") as f:
            digest = hash_stream(f)  # one thread: the script's training loop keeps the other cores
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
