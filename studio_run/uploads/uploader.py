"""The background uploader: a bounded queue of staged files and worker threads feeding destinations.

How a file travels: ``upload_file`` makes one private copy in the copies folder (see
``copies``) and queues it; worker threads hand it to every destination; when the last one
is done the copy is deleted. The script's thread never waits for a network.

This module holds the threads and the promises to the script; the bookkeeping they share
lives beside it, guarded by the uploader's one lock: ``names`` (which names exist, the checks
made before a copy) and ``upload_queue`` (lanes in sequence order, so that the latest call
of a name wins, and the bounds).

Bounds: the staged bytes (``queue_bytes``) and the number of queued versions are capped. When
uploads fall behind, policy ``block`` makes ``upload_file`` wait for room; ``latest`` first
drops queued versions that a newer call of the same name supersedes (a version already being
sent is never cut short, and the newest version of a name is never dropped), then waits. A
file larger than the whole bound is admitted when nothing else is staged.

Failures: transient errors are retried with backoff; a final error fails that version of the
name for that destination. Failures are raised once, as ``UploadError``, at the script's next
``upload_file`` or ``flush``, and every name still undelivered at ``close`` is reported. A later
successful upload of the same name clears its failure.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat as statmod
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..background import yield_to_script
from ..errors import TRANSIENT, UploadError
from .copies import clone_or_copy, expand_name
from .destination import Destination
from .names import NameTable
from .upload_queue import UploadQueue, Version

__all__ = ["POLICIES", "Uploader"]

POLICIES = ("block", "latest")
_STATUS_INTERVAL = 0.2


@dataclass
class _Failure:
    error: BaseException
    label: str
    dest: int
    seq: int
    in_flush: bool = False
    reported: bool = False

    def describe(self) -> str:
        return f"{self.label}: {type(self.error).__name__}: {self.error}"


class Uploader:
    """Accepts files from any thread and delivers them to ``destinations`` in the background."""

    def __init__(
        self,
        destinations: list[Destination],
        copies_dir: str,
        *,
        values: Optional[dict[str, str]] = None,
        queue_bytes: int = 2 << 30,
        policy: str = "block",
        workers: int = 4,
        status_path: Optional[str] = None,
        attempts: int = 4,
        retry_delay: float = 0.5,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"upload policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        if not destinations:
            raise ValueError("an uploader needs at least one destination")
        self.destinations = list(destinations)
        self.copies_dir = copies_dir
        self.values = dict(values or {})
        self.policy = policy
        self.status_path = status_path
        self.attempts = max(1, attempts)
        self.retry_delay = retry_delay
        os.makedirs(copies_dir, exist_ok=True)

        self._cond = threading.Condition()
        self._file_ids = itertools.count()
        self._names = NameTable()
        self._queue = UploadQueue(self._cond, len(self.destinations), int(queue_bytes), self._status_changed)
        self._unflushed: list[set[str]] = [set() for _ in self.destinations]
        self._failures: dict[str, _Failure] = {}
        self._done_bytes = 0
        self._closed = False
        self._stop = threading.Event()
        self._local = threading.local()
        self._status_lock = threading.Lock()
        self._status_dirty = True
        self._status_written = 0.0
        self._threads = [
            threading.Thread(target=self._work, name=f"studio-upload-{i}", daemon=True) for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    # -- the script's side ------------------------------------------------------------------
    def upload_file(self, name: str, path: str, *, overwrite: bool = True) -> str:
        """Stage a copy of ``path`` and queue it as ``name``; returns the expanded name.

        Raises ``UploadError`` (doing nothing) when earlier uploads failed and were not yet
        reported, ``FileExistsError`` when ``overwrite`` is false and the name exists or is
        pending, ``FileNotFoundError``/``IsADirectoryError`` for a bad local path and
        ``ValueError`` for a bad name.
        """
        with self._cond:
            self._check_open()
        self._raise_failures()
        name = expand_name(name, self.values)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not statmod.S_ISREG(st.st_mode):
                raise IsADirectoryError(f"upload_file needs a file, and {path} is not a regular file")
            targets = self._targets_for(os.path.realpath(path))
            with self._cond:
                self._check_open()
                self._names.claim(name, overwrite)
                try:
                    if targets:
                        self._reserve(st.st_size, name)
                except BaseException:
                    self._names.unclaim(name)
                    raise
            staged = None
            if targets:
                staged = os.path.join(self.copies_dir, f"{next(self._file_ids):08d}")
                try:
                    clone_or_copy(fd, staged, st.st_size)
                except BaseException:
                    with self._cond:
                        self._queue.unreserve(st.st_size)
                        self._names.unclaim(name)
                    raise
                os.chmod(staged, (st.st_mode & 0o555) | 0o400)  # read-only: nothing may change it now
        finally:
            os.close(fd)
        with self._cond:
            self._names.accept(name)
            self._queue.commit(Version(name, 0, st.st_size, path=staged), targets, supersede=self.policy == "latest")
        return name

    def link(self, target: str, name: str, *, overwrite: bool = True) -> str:
        """Queue ``name`` as a link to the uploaded (or pending) name ``target``; returns ``name``."""
        with self._cond:
            self._check_open()
        self._raise_failures()
        target = expand_name(target, self.values)
        name = expand_name(name, self.values)
        if target == name:
            raise ValueError(f"cannot link {name!r} to itself")
        with self._cond:
            self._check_open()
            self._names.check_link(target, name)
            self._names.claim(name, overwrite)
            self._names.accept(name, target)
            current = getattr(self._local, "dest", None)
            dests = [i for i in range(len(self.destinations)) if i != current and target in self._queue.routed[i]]
            self._queue.commit(Version(name, 0, 0, target=target), dests, supersede=self.policy == "latest")
        return name

    def remove(self, name: str) -> list[str]:
        """Queue the removal of the uploaded (or pending) ``name`` and of the links that read as
        it; returns the names removed. ``FileNotFoundError`` for a name never uploaded."""
        with self._cond:
            self._check_open()
        self._raise_failures()
        name = expand_name(name, self.values)
        with self._cond:
            self._check_open()
            gone = self._names.remove(name)
            current = getattr(self._local, "dest", None)
            for dead in gone:  # each in its own lane: after every earlier call for that name
                dests = [i for i in range(len(self.destinations)) if i != current and dead in self._queue.routed[i]]
                self._queue.commit(Version(dead, 0, 0, removed=True), dests, supersede=self.policy == "latest")
        return gone

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until everything accepted before this call is delivered and made durable.

        Raises ``TimeoutError`` when ``timeout`` seconds pass first, and ``UploadError`` for
        failures not reported before.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            horizon = self._queue.seq
            while self._queue.live and min(self._queue.live) <= horizon:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    pending = sum(1 for s in self._queue.live if s <= horizon)
                    raise TimeoutError(f"{pending} uploads still pending after {timeout:g} s")
                self._cond.wait(left)
        for index in range(len(self.destinations)):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._flush_destination(index, left)
        self._write_status(force=True)
        self._raise_failures()

    # -- shutting down ----------------------------------------------------------------------
    def pending_bytes(self) -> tuple[int, int]:
        """``(bytes delivered so far, bytes still to deliver)`` counted once per destination."""
        with self._cond:
            return self._done_bytes, sum(v.size * v.refs for v in self._queue.live.values())

    def close(self, timeout: Optional[float] = None, progress: Optional[Callable[[int], None]] = None) -> dict[str, str]:
        """Wait up to ``timeout`` for pending uploads, close every destination, and return
        the undelivered names, each with why (an empty dict means everything arrived)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = self.pending_bytes()[0]
        with self._cond:
            while self._queue.live:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(0.2 if left is None else min(0.2, left))
                if progress is not None and self._done_bytes != last:
                    progress(self._done_bytes - last)
                    last = self._done_bytes
            self._closed = True
            self._stop.set()
            self._cond.notify_all()
        for index, dest in enumerate(self.destinations):
            self._flush_destination(index, None if deadline is None else max(0.0, deadline - time.monotonic()))
            try:
                dest.close()
            except Exception as exc:  # noqa: BLE001 - reported below, never raised at exit
                with self._cond:
                    for name in self._queue.routed[index]:
                        failure = _Failure(exc, dest.label, index, self._queue.seq, in_flush=True)
                        self._failures.setdefault(name, failure)
        undelivered = self.undelivered()
        self._write_status(force=True, final=True)
        shutil.rmtree(self.copies_dir, ignore_errors=True)
        return undelivered

    def undelivered(self) -> dict[str, str]:
        """Names whose latest version has not reached every destination, with the reason."""
        with self._cond:
            report = {name: f.describe() for name, f in self._failures.items()}
            for version in self._queue.live.values():
                report.setdefault(version.name, "still pending when studio stopped waiting")
            for name in self._names.being_staged():
                report.setdefault(name, "still being staged when studio stopped waiting")
            return dict(sorted(report.items()))

    # -- bookkeeping under the lock ---------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("uploads are closed (the process is exiting); nothing more can be uploaded")

    def _targets_for(self, real_path: str) -> list[int]:
        current = getattr(self._local, "dest", None)  # an upload made from inside a destination
        return [
            i for i, dest in enumerate(self.destinations)
            if i != current and not dest.owns(real_path)
        ]

    def _reserve(self, size: int, name: str) -> None:
        while True:
            self._check_open()
            if self._queue.try_reserve(size):
                return
            if self.policy == "latest" and self._queue.drop_superseded(name):
                continue
            self._cond.wait()

    def _status_changed(self) -> None:
        self._status_dirty = True

    def _raise_failures(self) -> None:
        with self._cond:
            fresh = {n: f for n, f in self._failures.items() if not f.reported}
            for failure in fresh.values():
                failure.reported = True
        if fresh:
            lines = "; ".join(f"{n} ({f.describe()})" for n, f in sorted(fresh.items()))
            raise UploadError(
                f"{len(fresh)} upload(s) failed: {lines}", {n: f.error for n, f in fresh.items()}
            )

    # -- the workers' side ----------------------------------------------------------------------
    def _work(self) -> None:
        yield_to_script()
        while True:
            with self._cond:
                job = None
                while not self._stop.is_set():
                    job = self._queue.next_job()
                    if job is not None:
                        break
                    self._cond.wait(_STATUS_INTERVAL)
                if job is None:
                    return
            self._write_status()
            index, version = job
            error = self._deliver(index, version)
            with self._cond:
                if error is None:
                    self._unflushed[index].add(version.name)
                    failure = self._failures.get(version.name)
                    if failure is not None and failure.dest == index and failure.seq <= version.seq:
                        del self._failures[version.name]
                    self._done_bytes += version.size
                else:
                    self._failures[version.name] = _Failure(error, self.destinations[index].label, index, version.seq)
                drained = self._queue.finish(index, version)
                idle = drained and bool(self._unflushed[index])
                self._status_dirty = True
                self._cond.notify_all()
            if idle:
                self._flush_destination(index, None)
            self._write_status()

    def _deliver(self, index: int, version: Version) -> Optional[BaseException]:
        dest = self.destinations[index]
        self._local.dest = index
        try:
            for attempt in range(self.attempts):
                try:
                    if version.removed:
                        dest.remove(version.name)
                    elif version.path is not None:
                        dest.upload_file(version.name, version.path)
                    else:
                        dest.link(version.target or "", version.name)
                    return None
                except TRANSIENT as exc:
                    if attempt + 1 == self.attempts or self._stop.wait(self.retry_delay * 2**attempt):
                        return exc
                except Exception as exc:  # noqa: BLE001 - any failure of a destination is reported
                    return exc
            return None  # pragma: no cover - the loop always returns
        finally:
            self._local.dest = None

    def _flush_destination(self, index: int, timeout: Optional[float]) -> None:
        with self._cond:
            names = set(self._unflushed[index])
        if not names:
            return
        dest = self.destinations[index]
        self._local.dest = index
        try:
            dest.flush(timeout)
        except Exception as exc:  # noqa: BLE001 - a failed flush fails what it should have published
            with self._cond:
                for name in names:
                    self._failures[name] = _Failure(exc, dest.label, index, self._queue.seq, in_flush=True)
                self._status_dirty = True
            return
        finally:
            self._local.dest = None
        with self._cond:
            self._unflushed[index] -= names
            for name in names:
                failure = self._failures.get(name)
                if failure is not None and failure.dest == index and failure.in_flush:
                    del self._failures[name]

    def _write_status(self, force: bool = False, final: bool = False) -> None:
        """Write ``status_path`` (pending and failed names) for the runner; cheap and debounced."""
        if self.status_path is None:
            return
        now = time.monotonic()
        if not force and (not self._status_dirty or now - self._status_written < _STATUS_INTERVAL):
            return
        with self._status_lock:
            with self._cond:
                self._status_dirty = False
                pending = sorted({v.name for v in self._queue.live.values()} | set(self._names.being_staged()))
                failed = {n: f.describe() for n, f in sorted(self._failures.items())}
            self._status_written = now
            doc = {"pid": os.getpid(), "final": final, "pending": pending, "failed": failed, "updated_at": time.time()}
            tmp = f"{self.status_path}.{threading.get_ident()}.tmp"
            with open(tmp, "w") as f:
                json.dump(doc, f, sort_keys=True)
            os.replace(tmp, self.status_path)
