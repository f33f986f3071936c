"""Upload one snapshot from a remote store's staging: the objects the store lacks, then the manifest.

The ``Syncer`` (``studio_run.store.sync``) decides which runs to publish, when, and in what order;
this module sends one snapshot of a run, asking the store as little as possible, because
thousands of small files are bound by round trips, not bandwidth:

- a key is checked or uploaded at most once: the store's answer is remembered in
  ``KnownKeys``, and a manifest found in the store vouches for all of its objects (they were
  uploaded before it);
- when many objects are not known to be stored, a listing of the store, a thousand keys a
  request, says which it lacks, instead of a request per object;
- many small objects go up in packs (``studio_run.objects.packs``), the rest several at once;
- the manifest goes last, so a manifest in the store always has all of its objects;
- a staged copy ``studio gc`` pruned after its upload is looked up in the store instead: a run
  is called damaged only when neither has it.

A staged copy found damaged raises ``StagingDamaged``: no retry can publish its run.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from ..errors import IntegrityError
from ..objects.manifest import Manifest
from ..objects.packs import PACK_BELOW, group
from ..objects.repository import Repository
from ..storage.local import LocalStorage
from .journal import KnownKeys

__all__ = ["SnapshotTransfer", "StagingDamaged", "UPLOAD_WORKERS"]

UPLOAD_WORKERS = 16  # objects uploaded at once: small ones are bound by round trips, not bandwidth
_LARGE_WORKERS = 4  # of which objects the backend sends in several parts at once (S3: 8 each)
_LARGE = 8 << 20  # S3's multipart threshold; studio stores larger files as 4 MiB chunks anyway
_PACK_FROM = 32  # small objects to upload from which they go in packs (fewer would be a pack each)
_LIST_FROM = 64  # objects not known to be stored above which the store is listed, not asked per object
_LIST_PAGE = 1000  # keys one listing request returns (S3, GCS)
_FAN_OUT = 256  # two-hex-character folders under objects/


class StagingDamaged(Exception):
    """A pending run whose staged copy is damaged: no retry can publish it."""


@dataclass
class _Plan:
    """How one snapshot's objects go up: what ``SnapshotTransfer._plan`` learnt about them."""

    keys: dict[str, str]  # digest -> object key, every object of the manifest
    sizes: dict[str, int]  # digest -> bytes
    unknown: set[str]  # keys not known to be stored (after listing and the packs)
    todo: list[str]  # digests sent one by one
    packs: list[list[str]]  # digests sent in packs
    absent: set[str]  # digests a listing showed absent: stored without asking again


class SnapshotTransfer:
    """Sends snapshots from a remote store's staging to the store; one per ``Syncer``.

    (Not to be confused with ``studio_run.uploads``, which delivers the single files a script
    hands to ``fs_tracker.upload_file``: this sends captured snapshots, whole.)

    It is handed the parts it needs, not the whole store: ``remote`` (the store's repository),
    ``staging`` (the repository captures write to) with ``files``, the same staging folder read
    as plain files, and ``known``, the keys the store is known to hold.
    """

    def __init__(
        self, remote: Repository, staging: Repository, files: LocalStorage, known: KnownKeys,
        workers: int = UPLOAD_WORKERS,
    ) -> None:
        self.remote = remote
        self.staging = staging
        self.files = files
        self.known = known
        self.workers = workers
        self.sent = 0  # bytes actually sent, over this transfer's life
        self._lock = threading.Lock()  # guards ``sent`` and the keys stored, for the worker threads
        self._large = threading.Semaphore(_LARGE_WORKERS)
        # Called with the bytes of objects as they are sent or found stored. Read at each call,
        # so a progress bar the Syncer puts here also counts a snapshot already under way.
        self.progress: Callable[[int], None] = lambda n: None

    def send(self, digest: str) -> None:
        """Store snapshot ``digest``'s objects that the store lacks, then its manifest.

        Returns at once when the manifest is known or found to be stored. Raises
        ``StagingDamaged`` when the staged manifest or an object is missing or unreadable;
        store errors propagate, and objects stored before one are remembered.
        """
        manifest = self._manifest_to_send(digest)
        if manifest is None:
            return
        plan = self._plan(manifest)
        self.progress(sum(size for d, size in plan.sizes.items() if plan.keys[d] not in plan.unknown))
        stored: list[str] = []
        try:
            _parallel(lambda i: self._send_pack(plan, plan.packs[int(i)], stored),
                      [str(i) for i in range(len(plan.packs))], min(self.workers, _LARGE_WORKERS))
            _parallel(lambda d: self._send_object(plan, d, stored), plan.todo, self.workers)
        finally:
            self.known.add(stored)
        self.remote.put_manifest(manifest)
        self.known.add([Repository.manifest_key(digest)])

    def _manifest_to_send(self, digest: str) -> Optional[Manifest]:
        """The staged manifest of ``digest``, or None when the store is known or found to hold it."""
        manifest_key = Repository.manifest_key(digest)
        if not self.known.unknown([manifest_key]):
            return None
        if not self.staging.has_manifest(digest) and self.remote.has_manifest(digest):
            self.known.add([manifest_key])  # `studio gc` pruned the staged copy once it was uploaded
            return None
        try:
            manifest = self.staging.get_manifest(digest)
        except (IntegrityError, OSError, ValueError) as exc:
            raise StagingDamaged(f"snapshot {digest[:12]}… is damaged in staging ({exc})") from exc
        if self.remote.has_manifest(digest):  # published before: its objects went first
            self.known.add([Repository.object_key(d) for d in manifest.digests()] + [manifest_key])
            self.progress(manifest.size)
            return None
        return manifest

    def _plan(self, manifest: Manifest) -> "_Plan":
        """Which of the manifest's objects to send, and how: learnt from ``known``, a listing of
        the store when many are unknown, the staged copies ``studio gc`` pruned, and the packs."""
        keys = {d: Repository.object_key(d) for d in manifest.digests()}
        sizes = manifest.objects()
        unknown = set(self.known.unknown(keys.values()))
        todo = [d for d, key in keys.items() if key in unknown]
        absent: set[str] = set()
        if len(todo) > _LIST_FROM:
            try:
                present, absent = self._list_stored(todo)
            except PermissionError:  # may read and write objects but not list them: ask each
                present = set()
            self.known.add(keys[d] for d in present)
            unknown.difference_update(keys[d] for d in present)
            todo = [d for d in todo if d not in present]
        todo = self._drop_pruned(todo, keys, unknown, absent)
        packs = self._pack_plan(todo, sizes, keys, unknown)
        packed = {d for batch in packs for d in batch}
        todo = [d for d in todo if d not in packed and keys[d] in unknown]
        return _Plan(keys, sizes, unknown, todo, packs, absent)

    def _staged(self, plan: "_Plan", batch: list[str]) -> Iterator[tuple[str, bytes]]:
        """The staged bytes of each digest of ``batch``, for a pack."""
        for digest in batch:
            try:
                with open(self.files.path_of(plan.keys[digest]), "rb") as f:
                    yield digest, f.read()
            except FileNotFoundError:
                raise StagingDamaged(f"object {digest[:12]}… is missing from staging") from None

    def _send_pack(self, plan: "_Plan", batch: list[str], stored: list[str]) -> None:
        """Send ``batch`` as one pack (from a worker thread); its keys go to ``stored``."""
        self.remote.packs.write(self._staged(plan, batch))
        size = sum(plan.sizes[d] for d in batch)
        with self._lock:
            self.sent += size
            stored.extend(plan.keys[d] for d in batch)
        self.progress(size)

    def _send_object(self, plan: "_Plan", digest: str, stored: list[str]) -> None:
        """Send one object (from a worker thread; large ones a few at a time); its key goes to ``stored``."""
        path = self.files.path_of(plan.keys[digest])
        if not os.path.isfile(path):
            raise StagingDamaged(f"object {digest[:12]}… is missing from staging")
        size = plan.sizes[digest]
        with self._large if size >= _LARGE else contextlib.nullcontext():
            sent = self.remote.put_object_file(digest, path, assume_absent=digest in plan.absent)
        with self._lock:
            if sent:
                self.sent += size
            stored.append(plan.keys[digest])
        self.progress(size)

    def _drop_pruned(
        self, todo: list[str], object_keys: dict[str, str], unknown: set[str], listed_absent: set[str]
    ) -> list[str]:
        """``todo`` less the objects missing from staging that the store holds, marked known.

        ``studio gc`` prunes staged copies no pending run refers to. A live run may still point
        at one: its next snapshot takes unchanged files from the previous snapshot without
        looking in staging, and after a sweep (which clears ``known``) the uploader asks about
        them again. The store has them (they went up with the previous snapshot), so this asks
        it rather than calling the run damaged; only an object neither has is.
        """
        gone = [d for d in todo if not os.path.isfile(self.files.path_of(object_keys[d]))]
        if not gone:
            return todo
        repo = self.remote
        held: set[str] = set()
        lock = threading.Lock()

        def check(digest: str) -> None:
            if digest not in listed_absent and repo.storage.exists(object_keys[digest]):
                with lock:
                    held.add(digest)

        _parallel(check, gone, self.workers)
        if len(held) < len(gone):
            repo.packs.refresh()  # packed since this process last listed the packs, perhaps elsewhere
            held.update(d for d in gone if repo.packs.contains(d))
        lost = [d for d in gone if d not in held]
        if lost:
            raise StagingDamaged(f"object {lost[0][:12]}… is missing from staging")
        self.known.add(object_keys[d] for d in held)
        unknown.difference_update(object_keys[d] for d in held)
        return [d for d in todo if d not in held]

    def _pack_plan(
        self, todo: list[str], sizes: dict[str, int], object_keys: dict[str, str], unknown: set[str]
    ) -> list[list[str]]:
        """Which of ``todo`` go up in packs (``PACK_BELOW`` or smaller, at least ``_PACK_FROM`` of
        them); objects some pack already holds are marked known and dropped from ``unknown``."""
        small = [d for d in todo if sizes[d] < PACK_BELOW]
        if len(small) < _PACK_FROM:
            return []
        already = self.remote.packs.digests()
        present = [d for d in small if d in already]
        self.known.add(object_keys[d] for d in present)
        unknown.difference_update(object_keys[d] for d in present)
        return list(group(sizes, (d for d in small if d not in already)))

    def _list_stored(self, digests: list[str]) -> tuple[set[str], set[str]]:
        """Learn which of ``digests`` (many, none known) the store holds by listing it, not by a
        request per object: ``(present, absent)``; a digest in neither is left to be asked about.

        One listing request answers for up to a thousand keys. The first fan-out folder needed
        is listed; digests spread evenly over the 256 folders, so its size tells the store's,
        and the rest is learnt in the fewest rounds of requests: the whole ``objects/`` in one
        paged listing (a small store: its pages come one after another), each folder still
        needed (a large store: ``workers`` folders at once), or one question per object (a
        large store and few objects). A store of millions of objects is never listed whole:
        past about 16,000 objects, the folders win.
        """
        repo = self.remote
        wanted = set(digests)
        folders = sorted({d[:2] for d in digests})
        listed = set(repo.iter_objects(folders[0]))
        present = listed & wanted
        done = {d for d in digests if d[:2] == folders[0]}
        rest, others = folders[1:], len(digests) - len(done)
        if not rest:
            return present, done - present
        folder_pages = max(1, math.ceil(len(listed) / _LIST_PAGE))
        whole = max(1, math.ceil(len(listed) * _FAN_OUT / _LIST_PAGE))
        by_folder = math.ceil(len(rest) * folder_pages / self.workers)
        by_object = math.ceil(others / self.workers)
        if whole <= min(by_folder, by_object):
            present.update(d for d in repo.iter_objects() if d in wanted)
        elif by_folder <= by_object:
            lock = threading.Lock()

            def list_folder(fan: str) -> None:
                found = [d for d in repo.iter_objects(fan) if d in wanted]
                with lock:
                    present.update(found)

            _parallel(list_folder, rest, self.workers)
        else:
            return present, done - present
        return present, wanted - present


def _parallel(fn: Callable[[str], None], items: list[str], workers: int) -> None:
    """Call ``fn`` on every item from up to ``workers`` daemon threads; raise the first error.

    Not a ``ThreadPoolExecutor``: Python joins its threads at exit, so one upload stuck on a dead
    store would hold ``studio run`` open after the script ended. Daemon threads are dropped.
    """
    if not items:
        return
    pending = iter(items)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                item = None if errors else next(pending, None)
            if item is None:
                return
            try:
                fn(item)
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                return

    threads = [threading.Thread(target=work, daemon=True, name="studio-put") for _ in range(min(workers, len(items)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
