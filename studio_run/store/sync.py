"""Upload staged captures to a remote store in the background; the record always last.

``Store.publish`` on a remote store only writes the run's newest record into the on-disk journal
(``studio_run.store.journal``) and wakes the ``Syncer``'s thread, so a capture never waits for the
network. For every pending run the thread uploads, in this order:

1. each artifact's snapshot: the objects the store lacks, then the manifest, then the
   manifest with file times (``ArtifactRecord.times``: the same objects, so only that small
   file goes up) (``studio_run.store.transfer``, which also sees that a key is checked or
   uploaded at most once);
2. then the environment, and the record last.

A reader of the store therefore never finds a record whose manifest or objects are missing, on
any backend. This module keeps the rest: the journal as a queue, the thread that retries while
the store fails, which process publishes which run, and what the user is told.

When the script ends, ``finish`` waits for the journal to drain, up to ``upload_wait``, with a
progress bar; what is left stays on disk and is published by ``studio sync`` or by the next
studio command (``push_pending``). Nothing here ever raises into the run.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from .. import console
from ..errors import TRANSIENT, IntegrityError, StoreAuthError
from ..objects.repository import Repository
from ..storage.lazy import LazyStorage
from ..storage.retry import RetryingStorage
from .journal import Journal, KnownKeys, PendingRun, RunLock, entry_name, split_entry_name
from .locks import SHARED, store_lock
from .records import RecordStore, RunRecord
from .transfer import UPLOAD_WORKERS, SnapshotTransfer, StagingDamaged

__all__ = ["SyncReport", "Syncer", "describe_broken"]

log = logging.getLogger(__name__)

_RETRY_MIN, _RETRY_MAX = 0.5, 30.0  # seconds between rounds while the store fails
_REFUSED_RETRY = 60.0  # after an answer that retrying will not change (credentials, permission)
# Rounds in a row whose connection was refused (nothing listens there: a wrong port, a store that
# is down) after which ``finish`` stops waiting: a refusal that persists is not worth the rest of
# ``upload_wait``. The thread keeps trying while the process lives; ``studio sync`` does the rest.
_REFUSED_ROUNDS = 2


@dataclass
class SyncReport:
    """What ``push_pending`` did: runs published, bytes sent, runs left and why."""

    runs: int = 0
    uploaded: int = 0  # bytes actually sent
    busy: list[str] = field(default_factory=list)  # runs another live process is uploading
    broken: dict[str, str] = field(default_factory=dict)  # run -> why its staged copy is unusable


class Syncer:
    """The uploader of one remote store; one per process, built by ``open_store`` on first use
    (``Store.syncer()``)."""

    def __init__(
        self,
        remote: Repository,
        staging: Repository,
        records: RecordStore,
        journal: Journal,
        known: KnownKeys,
        url: str,
        connection: Optional[LazyStorage] = None,
        workers: int = UPLOAD_WORKERS,
    ) -> None:
        """Handed its parts by ``open_store``: the store's repository (``remote``) and record
        store, the repository captures are staged in and its journal, the keys known to be
        stored, the redacted ``url`` (for messages) and the lazy ``connection`` (for why the
        store has not answered)."""
        self.remote = remote
        self.staging = staging
        self.records = records
        self.journal = journal
        self.files = journal.staging  # the staging folder, named in messages
        self.url = url
        self.connection = connection
        self.known = known
        self.transfer = SnapshotTransfer(remote, staging, journal.staging, known, workers)
        self._cond = threading.Condition()
        self._held: dict[str, RunLock] = {}  # runs this process owns (it submits them) or took over
        self._owned: set[str] = set()
        self._broken: dict[str, str] = {}
        self._wake = True  # the first round also picks up runs left by earlier commands
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._refusals = 0  # rounds in a row that failed on a refused connection

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
        runs = (split_entry_name(n) for n in self.journal.names())
        return [run_id for exp, run_id in runs if exp == experiment]

    # -- the background thread -----------------------------------------------------------------
    def _start(self) -> None:
        with self._cond:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._loop, name="studio-sync", daemon=True)
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
                if not isinstance(exc, TRANSIENT + (StoreAuthError, PermissionError)):
                    log.debug("upload round failed", exc_info=True)
            with self._cond:
                self._error = error
                self._refusals = self._refusals + 1 if error is not None and _refused(error) else 0
                self._cond.notify_all()
                if error is None:
                    delay = _RETRY_MIN
                    continue
                pause = delay if isinstance(error, TRANSIENT) else _REFUSED_RETRY
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
            except StagingDamaged as exc:
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
            raise StagingDamaged(f"its pending record cannot be read ({exc})") from exc
        if entry is None:
            return True
        with store_lock(self.remote.storage, SHARED) as lock:  # gc waits until the pointer is written
            self._forget_if_swept()
            for art in entry.record.artifacts.values():
                for digest in art.manifests():  # the content manifest, then the one with file times
                    self.transfer.send(digest)
            if entry.environment is not None:
                self.records.write_environment(entry.record.experiment, entry.record.run_id, entry.environment)
                self.journal.remove_environment(name)
            lock.check()  # a lock taken for dead meanwhile: the next round uploads again
            self.records.write(entry.record)  # the pointer, last
        with self._cond:  # a submit cannot replace the entry between the compare and the delete
            return self.journal.remove(name, entry.data)

    # -- the end of a run --------------------------------------------------------------------------
    def finish(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for this process's runs to be published, with a progress
        bar; say in one line what is left and why. True when nothing is left. Never raises."""
        try:
            return self._finish(timeout)
        except Exception as exc:  # the run's outcome must not depend on the uploader
            console.warn(f"uploads to {self.url} did not finish ({type(exc).__name__}: {exc}); run `studio sync`")
            return False

    def _finish(self, timeout: float) -> bool:
        self._start()
        deadline = time.monotonic() + timeout
        with self._cond:
            self._wake = True
            self._cond.notify_all()
        total = self._plan(self._waiting())[1]
        with console.progress(f"uploading to {self.url}", total or None) as advance:
            self.transfer.progress = advance
            try:
                with self._cond:
                    while True:
                        left = deadline - time.monotonic()
                        waiting = self._waiting()
                        refused = self._error is not None and not isinstance(self._error, TRANSIENT)
                        refused = refused or self._refusals >= _REFUSED_ROUNDS
                        if all(n in self._broken for n in waiting) or left <= 0 or refused:
                            break
                        self._cond.wait(min(left, 0.5))
            finally:
                self.transfer.progress = lambda n: None
        with self._cond:
            error = self._error
            if not waiting:
                for lock in self._held.values():
                    lock.release(remove=True)
                self._held.clear()
                return True
        console.warn(f"{self._describe(waiting)} not uploaded yet ({self._reason(error, timeout, waiting)}); "
                f"they are kept in {self.files.root} until `studio sync` (or the next studio command) uploads them")
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
            connection, storage = self.connection, self.remote.storage
            error = storage.last_failure if isinstance(storage, RetryingStorage) else None
            if error is None and connection is not None and not connection.connected:
                error = connection.last_error
                if error is None:
                    return "the store has not answered yet"
        if error is None:
            return f"still uploading after {timeout:g} s"
        if isinstance(error, TRANSIENT) and self._refusals >= _REFUSED_ROUNDS:
            return f"store unreachable, it refuses connections: {error}; not waiting for it"
        if isinstance(error, TRANSIENT):
            return f"store unreachable: {error}"
        if isinstance(error, StoreAuthError):
            return f"credentials refused: {error}"
        if isinstance(error, PermissionError):
            return f"permission denied: {error}"
        return str(error) or type(error).__name__

    def _describe(self, names: list[str]) -> str:
        """``3 snapshots of linreg (12.0 MiB) are`` or ``the record of linreg is``."""
        count, size = self._plan(names)
        experiments = sorted({split_entry_name(n)[0] for n in names})
        which = ", ".join(experiments[:3]) + (f" and {len(experiments) - 3} more" if len(experiments) > 3 else "")
        if count == 0:
            return f"the record{'s' if len(names) > 1 else ''} of {which} {'are' if len(names) > 1 else 'is'}"
        noun = "snapshot" if count == 1 else "snapshots"
        return f"{count} {noun} of {which} ({console.format_size(size)}) {'is' if count == 1 else 'are'}"

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
                manifest = self.staging.get_manifest(keys[key])
            except (IntegrityError, OSError, ValueError):
                continue
            sizes.update((Repository.object_key(d), size) for d, size in manifest.objects().items())
        return len(todo), sum(sizes[k] for k in self.known.unknown(sizes))

    # -- studio sync, and the next command after an outage -----------------------------------------
    def _forget_if_swept(self) -> None:
        sweep = self.remote.last_sweep()
        self.known.forget_if_swept(sweep)
        self.remote.packs.forget_if_swept(sweep)

    def push_pending(self, progress: Optional[Callable[[int], None]] = None) -> SyncReport:
        """Publish every pending run no live process holds, now, in this thread.

        Store errors propagate (the caller prints them); runs published before the error stay
        published, the rest stay pending.
        """
        report = SyncReport()
        self._forget_if_swept()
        sent_before = self.transfer.sent
        self.transfer.progress = progress or (lambda n: None)
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
                except StagingDamaged as exc:
                    report.broken[name] = str(exc)
                finally:
                    lock.release(remove=done)
        finally:
            self.transfer.progress = lambda n: None
            report.uploaded = self.transfer.sent - sent_before
        return report

    def catch_up(self) -> None:
        """Before a command reads the store: publish what earlier commands left pending."""
        names = self.journal.names()
        if not names:
            return
        count, size = self._plan(names)
        console.info(f"uploading {len(names)} run{'s' if len(names) > 1 else ''} left pending by an earlier command "
                f"({console.format_size(size)}) to {self.url}")
        with console.progress(f"uploading to {self.url}", size or None) as advance:
            report = self.push_pending(advance)
        if report.broken:
            console.warn(f"{describe_broken(report)}; it stays in {self.files.root}")

    def close(self) -> None:
        """Stop the thread (without waiting for a transfer under way) and let go of the runs this
        process held, so that ``studio sync`` or the next command can publish what is left."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            for lock in self._held.values():
                lock.release(remove=False)
            self._held.clear()


def _refused(error: BaseException) -> bool:
    """Whether ``error`` comes from a refused connection (ECONNREFUSED anywhere in its chain).

    Backends wrap the socket's error in their own (botocore, urllib3, requests, paramiko) and
    studio's ``StoreUnreachableError`` keeps it as the cause, so the chain is followed.
    """
    seen = 0
    current: Optional[BaseException] = error
    while current is not None and seen < 16:
        if isinstance(current, ConnectionRefusedError) or getattr(current, "errno", None) == errno.ECONNREFUSED:
            return True
        current, seen = current.__cause__ or current.__context__, seen + 1
    return False


def describe_broken(report: SyncReport) -> str:
    """One line naming the first run that cannot be published, and why."""
    name, why = next(iter(report.broken.items()))
    experiment, run_id = split_entry_name(name)
    more = f" (and {len(report.broken) - 1} more)" if len(report.broken) > 1 else ""
    return f"run {run_id} of {experiment} cannot be published{more}: {why}"
