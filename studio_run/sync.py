"""Upload staged captures to a remote store in the background; the record always last.

``Store.publish`` on a remote store only writes the run's newest record into the on-disk journal
(``studio_run.pending``) and wakes the ``Syncer``'s thread, so a capture never waits for the
network. For every pending run the thread uploads, in this order:

1. each artifact's objects that the store lacks (several at once: thousands of small files
   are bound by round trips, not bandwidth; and when many are not known to be stored, a
   listing of the store, a thousand keys a request, says which it lacks, instead of a request
   per object);
2. then the artifact's manifest;
3. then the environment, and the record last.

A reader of the store therefore never finds a record whose manifest or objects are missing, on
any backend. A key is checked or uploaded at most once: the store's answer is remembered in
``KnownKeys``, and a manifest found in the store vouches for all of its objects (they were
uploaded before it). A staged copy ``studio gc`` pruned after its upload is looked up in the
store instead; a run is called damaged only when neither has it.

When the script ends, ``finish`` waits for the journal to drain, up to ``upload_wait``, with a
progress bar; what is left stays on disk and is published by ``studio sync`` or by the next
studio command (``push_pending``). Nothing here ever raises into the run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional

from . import ui
from .errors import IntegrityError, StoreAuthError, StoreUnreachableError
from .metadata import RunRecord
from .objects.packs import PACK_BELOW, group
from .objects.repository import Repository
from .pending import Journal, KnownKeys, PendingRun, RunLock, entry_name
from .storage.local import LocalStorage
from .storage.retry import RetryingStorage

if TYPE_CHECKING:
    from .store import Store

__all__ = ["SyncReport", "Syncer", "describe_broken"]

log = logging.getLogger(__name__)

_WORKERS = 16  # objects uploaded at once: small ones are bound by round trips, not bandwidth
_LARGE_WORKERS = 4  # of which objects the backend sends in several parts at once (S3: 8 each)
_LARGE = 8 << 20  # S3's multipart threshold; studio stores larger files as 4 MiB chunks anyway
_PACK_FROM = 32  # small objects to upload from which they go in packs (fewer would be a pack each)
_LIST_FROM = 64  # objects not known to be stored above which the store is listed, not asked per object
_LIST_PAGE = 1000  # keys one listing request returns (S3, GCS)
_FAN_OUT = 256  # two-hex-character folders under objects/
_TRANSIENT = (StoreUnreachableError, ConnectionError, TimeoutError)
_RETRY_MIN, _RETRY_MAX = 0.5, 30.0  # seconds between rounds while the store fails
_REFUSED_RETRY = 60.0  # after an answer that retrying will not change (credentials, permission)


class _Broken(Exception):
    """A pending run whose staged copy is damaged: no retry can publish it."""


@dataclass
class SyncReport:
    """What ``push_pending`` did: runs published, bytes sent, runs left and why."""

    runs: int = 0
    uploaded: int = 0  # bytes actually sent
    busy: list[str] = field(default_factory=list)  # runs another live process is uploading
    broken: dict[str, str] = field(default_factory=dict)  # run -> why its staged copy is unusable


class Syncer:
    """The uploader of one remote store; one per process, created by ``Store.syncer()``."""

    def __init__(self, store: "Store", workers: int = _WORKERS) -> None:
        staging = store.local_repo.storage
        if not isinstance(staging, LocalStorage):
            raise TypeError("a remote store stages its captures on local disk")
        self.store = store
        self.staging = staging
        self.journal = Journal(staging)
        self.known = KnownKeys(os.path.join(staging.root, "remote.sqlite"))
        self.workers = workers
        self._cond = threading.Condition()
        self._held: dict[str, RunLock] = {}  # runs this process owns (it submits them) or took over
        self._owned: set[str] = set()
        self._broken: dict[str, str] = {}
        self._wake = True  # the first round also picks up runs left by earlier commands
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._sent = 0
        self._advance: Callable[[int], None] = lambda n: None

    # -- the producer's side (capture threads) -------------------------------------------------
    def submit(self, record: RunRecord) -> None:
        """Queue ``record`` for publishing (replacing any older pending record of the run)."""
        with self._cond:
            self._own(record.experiment, record.run_id)
            self.journal.write_record(record)
            self._wake = True
            self._cond.notify_all()
        self._start()

    def submit_environment(self, experiment: str, run_id: str, env: dict) -> None:
        """Queue the run's environment; it is published before the record that follows it."""
        with self._cond:
            self._own(experiment, run_id)
            self.journal.write_environment(experiment, run_id, env)
            self._wake = True
            self._cond.notify_all()
        self._start()

    def _own(self, experiment: str, run_id: str) -> None:
        name = entry_name(experiment, run_id)
        if name not in self._held:
            lock = self.journal.lock(name, wait=True)
            assert lock is not None
            self._held[name] = lock
        self._owned.add(name)

    def pending_run_ids(self, experiment: str) -> list[str]:
        """Run ids of ``experiment`` waiting on this machine to be published."""
        prefix = f"{experiment}--"
        return [n[len(prefix):] for n in self.journal.names() if n.startswith(prefix) and "--" not in n[len(prefix):]]

    # -- the background thread -----------------------------------------------------------------
    def _start(self) -> None:
        with self._cond:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._loop, name="studio-upload", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        delay = _RETRY_MIN
        while True:
            with self._cond:
                while not self._wake and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                self._wake = False
            try:
                self._round()
                error: Optional[BaseException] = None
            except BaseException as exc:  # never let the thread die: report it in finish
                error = exc
                if not isinstance(exc, _TRANSIENT + (StoreAuthError, PermissionError)):
                    log.debug("upload round failed", exc_info=True)
            with self._cond:
                self._error = error
                self._cond.notify_all()
                if error is None:
                    delay = _RETRY_MIN
                    continue
                pause = delay if isinstance(error, _TRANSIENT) else _REFUSED_RETRY
                delay = min(delay * 2, _RETRY_MAX)
                self._wake = True
                self._cond.wait(pause)  # finish() stops us at once through notify

    def _round(self) -> None:
        """Publish every run this process owns, then any run an earlier command left pending."""
        self._forget_if_swept()
        names = self.journal.names()  # runs with a pending record: a published one needs no lock again
        with self._cond:
            owned = sorted(self._owned.intersection(names))
        for name in owned + [n for n in names if n not in self._owned]:
            if name in self._broken:
                continue
            with self._cond:
                if self._stopping:
                    return
                lock = self._held.get(name)
                if lock is None:
                    lock = self.journal.lock(name, wait=False)
                    if lock is None:  # a live process is uploading it
                        continue
                    self._held[name] = lock
            try:
                done = self._push_run(name)
            except _Broken as exc:
                self._broken[name] = str(exc)
                continue
            with self._cond:
                taken = self._held.pop(name, None) if done and name not in self._owned else None
                if taken is not None:
                    taken.release(remove=True)
                self._cond.notify_all()

    # -- pushing one run -------------------------------------------------------------------------
    def _push_run(self, name: str) -> bool:
        """Publish one pending run; True when its entry is gone (no newer record came meanwhile)."""
        try:
            entry = self.journal.read(name)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _Broken(f"its pending record cannot be read ({exc})") from exc
        if entry is None:
            return True
        for art in entry.record.artifacts.values():
            if art.digest:
                self._push_snapshot(art.digest)
        if entry.environment is not None:
            self.store.records.write_environment(entry.record.experiment, entry.record.run_id, entry.environment)
            self.journal.remove_environment(name)
        self.store.records.write(entry.record)  # the pointer, last
        with self._cond:  # a submit cannot replace the entry between the compare and the delete
            return self.journal.remove(name, entry.data)

    def _push_snapshot(self, digest: str) -> None:
        manifest_key = Repository.manifest_key(digest)
        if not self.known.unknown([manifest_key]):
            return
        if not self.store.local_repo.has_manifest(digest) and self.store.repo.has_manifest(digest):
            self.known.add([manifest_key])  # `studio gc` pruned the staged copy once it was uploaded
            return
        try:
            manifest = self.store.local_repo.get_manifest(digest)
        except (IntegrityError, OSError, ValueError) as exc:
            raise _Broken(f"snapshot {digest[:12]}… is damaged in staging ({exc})") from exc
        object_keys = {d: Repository.object_key(d) for d in manifest.digests()}
        if self.store.repo.has_manifest(digest):  # published before: its objects went first
            self.known.add(list(object_keys.values()) + [manifest_key])
            self._advance(manifest.size)
            return
        sizes = manifest.objects()
        unknown = set(self.known.unknown(object_keys.values()))
        todo = [d for d, key in object_keys.items() if key in unknown]
        missing: set[str] = set()  # listed as absent: stored without asking again
        if len(todo) > _LIST_FROM:
            try:
                present, missing = self._list_stored(todo)
            except PermissionError:  # may read and write objects but not list them: ask each
                present = set()
            self.known.add(object_keys[d] for d in present)
            unknown.difference_update(object_keys[d] for d in present)
            todo = [d for d in todo if d not in present]
        todo = self._drop_pruned(todo, object_keys, unknown, missing)
        packs = self._pack_plan(todo, sizes, object_keys, unknown)
        packed = {d for batch in packs for d in batch}
        todo = [d for d in todo if d not in packed and object_keys[d] in unknown]
        self._advance(sum(sizes[d] for d, key in object_keys.items() if key not in unknown))
        stored: list[str] = []
        lock = threading.Lock()
        large = threading.Semaphore(_LARGE_WORKERS)

        def staged(batch: list[str]) -> Iterator[tuple[str, bytes]]:
            for digest in batch:
                try:
                    with open(self.staging.path_of(object_keys[digest]), "rb") as f:
                        yield digest, f.read()
                except FileNotFoundError:
                    raise _Broken(f"object {digest[:12]}… is missing from staging") from None

        def push_pack(index: str) -> None:
            batch = packs[int(index)]
            self.store.repo.packs.write(staged(batch))
            size = sum(sizes[d] for d in batch)
            with lock:
                self._sent += size
                stored.extend(object_keys[d] for d in batch)
            self._advance(size)

        def push(digest: str) -> None:
            path = self.staging.path_of(object_keys[digest])
            if not os.path.isfile(path):
                raise _Broken(f"object {digest[:12]}… is missing from staging")
            with large if sizes[digest] >= _LARGE else contextlib.nullcontext():
                sent = self.store.repo.put_object_file(digest, path, assume_absent=digest in missing)
            if sent:
                with lock:
                    self._sent += sizes[digest]
            with lock:
                stored.append(object_keys[digest])
            self._advance(sizes[digest])

        try:
            _parallel(push_pack, [str(i) for i in range(len(packs))], min(self.workers, _LARGE_WORKERS))
            _parallel(push, todo, self.workers)
        finally:
            self.known.add(stored)
        self.store.repo.put_manifest(manifest)
        self.known.add([manifest_key])

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
        gone = [d for d in todo if not os.path.isfile(self.staging.path_of(object_keys[d]))]
        if not gone:
            return todo
        repo = self.store.repo
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
            raise _Broken(f"object {lost[0][:12]}… is missing from staging")
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
        already = self.store.repo.packs.digests()
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
        repo = self.store.repo
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

    # -- the end of a run --------------------------------------------------------------------------
    def finish(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for this process's runs to be published, with a progress
        bar; say in one line what is left and why. True when nothing is left. Never raises."""
        try:
            return self._finish(timeout)
        except Exception as exc:  # the run's outcome must not depend on the uploader
            ui.warn(f"uploads to {self.store.url} did not finish ({type(exc).__name__}: {exc}); run `studio sync`")
            return False

    def _finish(self, timeout: float) -> bool:
        self._start()
        deadline = time.monotonic() + timeout
        with self._cond:
            self._wake = True
            self._cond.notify_all()
        total = self._plan(self._waiting())[1]
        with ui.progress(f"uploading to {self.store.url}", total or None) as advance:
            self._advance = advance
            try:
                with self._cond:
                    while True:
                        left = deadline - time.monotonic()
                        waiting = self._waiting()
                        refused = self._error is not None and not isinstance(self._error, _TRANSIENT)
                        if all(n in self._broken for n in waiting) or left <= 0 or refused:
                            break
                        self._cond.wait(min(left, 0.5))
            finally:
                self._advance = lambda n: None
        with self._cond:
            error = self._error
            if not waiting:
                for lock in self._held.values():
                    lock.release(remove=True)
                self._held.clear()
                return True
        ui.warn(f"{self._describe(waiting)} not uploaded yet ({self._reason(error, timeout, waiting)}); "
                f"they are kept in {self.staging.root} until `studio sync` (or the next studio command) uploads them")
        return False

    def _waiting(self) -> list[str]:
        """Runs this process holds whose entry is still in the journal."""
        names = set(self.journal.names())
        return [n for n in sorted(self._held) if n in names]

    def _reason(self, error: Optional[BaseException], timeout: float, waiting: list[str]) -> str:
        broken = [self._broken[n] for n in waiting if n in self._broken]
        if broken:
            return f"cannot be published: {broken[0]}"
        if error is None:  # no round has failed yet, but calls may be failing and retried
            connection, storage = self.store.connection, self.store.storage
            error = storage.last_failure if isinstance(storage, RetryingStorage) else None
            if error is None and connection is not None and not connection.connected:
                error = connection.last_error
                if error is None:
                    return "the store has not answered yet"
        if error is None:
            return f"still uploading after {timeout:g} s"
        if isinstance(error, _TRANSIENT):
            return f"store unreachable: {error}"
        if isinstance(error, StoreAuthError):
            return f"credentials refused: {error}"
        if isinstance(error, PermissionError):
            return f"permission denied: {error}"
        return str(error) or type(error).__name__

    def _describe(self, names: list[str]) -> str:
        """``3 snapshots of linreg (12.0 MiB) are`` or ``the record of linreg is``."""
        count, size = self._plan(names)
        experiments = sorted({n.rsplit("--", 1)[0] for n in names})
        which = ", ".join(experiments[:3]) + (f" and {len(experiments) - 3} more" if len(experiments) > 3 else "")
        if count == 0:
            return f"the record{'s' if len(names) > 1 else ''} of {which} {'are' if len(names) > 1 else 'is'}"
        noun = "snapshot" if count == 1 else "snapshots"
        return f"{count} {noun} of {which} ({ui.format_size(size)}) {'is' if count == 1 else 'are'}"

    def _plan(self, names: Iterable[str]) -> tuple[int, int]:
        """Snapshots not yet in the store, and the bytes of their objects not known to be there."""
        snapshots: set[str] = set()
        for name in names:
            try:
                entry: Optional[PendingRun] = self.journal.read(name)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if entry is not None:
                snapshots.update(a.digest for a in entry.record.artifacts.values() if a.digest)
        keys = {Repository.manifest_key(d): d for d in sorted(snapshots)}
        todo = self.known.unknown(keys)
        sizes: dict[str, int] = {}
        for key in todo:
            try:
                manifest = self.store.local_repo.get_manifest(keys[key])
            except (IntegrityError, OSError, ValueError):
                continue
            sizes.update((Repository.object_key(d), size) for d, size in manifest.objects().items())
        return len(todo), sum(sizes[k] for k in self.known.unknown(sizes))

    # -- studio sync, and the next command after an outage -----------------------------------------
    def _forget_if_swept(self) -> None:
        sweep = self.store.repo.last_sweep()
        self.known.forget_if_swept(sweep)
        self.store.repo.packs.forget_if_swept(sweep)

    def push_pending(self, progress: Optional[Callable[[int], None]] = None) -> SyncReport:
        """Publish every pending run no live process holds, now, in this thread.

        Store errors propagate (the caller prints them); runs published before the error stay
        published, the rest stay pending.
        """
        report = SyncReport()
        self._forget_if_swept()
        sent_before = self._sent
        self._advance = progress or (lambda n: None)
        try:
            for name in self.journal.names():
                lock = self.journal.lock(name, wait=False)
                if lock is None:
                    report.busy.append(name)
                    continue
                done = False
                try:
                    done = self._push_run(name)  # True: nobody else writes a run we hold
                    report.runs += 1
                except _Broken as exc:
                    report.broken[name] = str(exc)
                finally:
                    lock.release(remove=done)
        finally:
            self._advance = lambda n: None
            report.uploaded = self._sent - sent_before
        return report

    def catch_up(self) -> None:
        """Before a command reads the store: publish what earlier commands left pending."""
        names = self.journal.names()
        if not names:
            return
        count, size = self._plan(names)
        ui.info(f"uploading {len(names)} run{'s' if len(names) > 1 else ''} left pending by an earlier command "
                f"({ui.format_size(size)}) to {self.store.url}")
        with ui.progress(f"uploading to {self.store.url}", size or None) as advance:
            report = self.push_pending(advance)
        if report.broken:
            ui.warn(f"{describe_broken(report)}; it stays in {self.staging.root}")

    def close(self) -> None:
        """Stop the thread (without waiting for a transfer under way) and let go of the runs this
        process held, so that ``studio sync`` or the next command can publish what is left."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            for lock in self._held.values():
                lock.release(remove=False)
            self._held.clear()


def describe_broken(report: SyncReport) -> str:
    """One line naming the first run that cannot be published, and why."""
    name, why = next(iter(report.broken.items()))
    experiment, run_id = name.rsplit("--", 1)
    more = f" (and {len(report.broken) - 1} more)" if len(report.broken) > 1 else ""
    return f"run {run_id} of {experiment} cannot be published{more}: {why}"


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
