"""The background uploader: a bounded queue of staged files and worker threads feeding destinations.

How a file travels: ``upload_file`` makes one private copy in the staging folder (see
``staging``) and queues it; worker threads hand it to every destination; when the last one
is done the copy is deleted. The script's thread never waits for a network.

Ordering, so that the latest call wins even when uploads finish out of order: every accepted
call gets a sequence number. Each (destination, name) pair is a lane; a lane runs one job at a
time in sequence order, so a destination sees the versions of a name in the order they were
made, while different names (and destinations) proceed in parallel.

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

import heapq
import itertools
import json
import os
import shutil
import stat as statmod
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..errors import StoreUnreachableError, UploadError
from .destination import Destination
from .staging import clone_or_copy, expand_name

__all__ = ["POLICIES", "Uploader"]

POLICIES = ("block", "latest")
TRANSIENT: tuple[type[BaseException], ...] = (StoreUnreachableError, ConnectionError, TimeoutError)
_MAX_QUEUED = 100_000
_STATUS_INTERVAL = 0.2
_BACKGROUND_NICE = 10


@dataclass(eq=False)
class _Version:
    """One accepted call: a staged file (or a link) on its way to some destinations."""

    name: str
    seq: int
    size: int
    path: Optional[str] = None  # the staged copy; None for a link
    target: Optional[str] = None  # for a link: the name it points at
    refs: int = 0  # destinations still to deliver it to


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


@dataclass
class _Lane:
    queue: deque = field(default_factory=deque)
    busy: bool = False
    running: int = 0  # seq of the version being delivered while busy

    def holds_before(self, seq: int) -> bool:
        """Whether a version older than ``seq`` is still queued or running here."""
        return (self.busy and self.running < seq) or any(v.seq < seq for v in self.queue)


class Uploader:
    """Accepts files from any thread and delivers them to ``destinations`` in the background."""

    def __init__(
        self,
        destinations: list[Destination],
        staging_dir: str,
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
        self.staging_dir = staging_dir
        self.values = dict(values or {})
        self.queue_bytes = int(queue_bytes)
        self.policy = policy
        self.status_path = status_path
        self.attempts = max(1, attempts)
        self.retry_delay = retry_delay
        os.makedirs(staging_dir, exist_ok=True)

        self._cond = threading.Condition()
        self._seq = 0
        self._file_ids = itertools.count()
        self._kinds: dict[str, str] = {}  # name -> "file" | "link"
        self._links: dict[str, str] = {}  # link name -> target name
        self._claims: Counter[str] = Counter()  # names being staged right now
        self._dirs: Counter[str] = Counter()  # folder prefix -> names below it
        self._routed: list[set[str]] = [set() for _ in self.destinations]  # names queued to each
        self._lanes: dict[tuple[int, str], _Lane] = {}
        self._ready: list[tuple[int, int, str]] = []  # (seq, dest, name) of lane heads
        self._waiting: dict[tuple[int, str], list[tuple[int, str]]] = {}  # lane -> link lanes after it
        self._live: dict[int, _Version] = {}  # seq -> version not yet delivered everywhere
        self._load = [0] * len(self.destinations)  # queued + running jobs per destination
        self._unflushed: list[set[str]] = [set() for _ in self.destinations]
        self._used = 0  # staged bytes, including reservations for copies under way
        self._queued = 0
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
                self._claim(name, overwrite)
                try:
                    if targets:
                        self._reserve(st.st_size, name)
                except BaseException:
                    self._unclaim(name)
                    raise
            staged = None
            if targets:
                staged = os.path.join(self.staging_dir, f"{next(self._file_ids):08d}")
                try:
                    clone_or_copy(fd, staged, st.st_size)
                except BaseException:
                    with self._cond:
                        self._used -= st.st_size
                        self._unclaim(name)
                        self._cond.notify_all()
                    raise
                os.chmod(staged, (st.st_mode & 0o555) | 0o400)  # read-only: nothing may change it now
        finally:
            os.close(fd)
        with self._cond:
            self._claims[name] -= 1
            self._set_kind(name, "file")
            self._commit(_Version(name, 0, st.st_size, path=staged), targets)
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
            if target not in self._kinds:
                raise FileNotFoundError(f"cannot link {name!r} to {target!r}: no file of that name was uploaded")
            hop = target
            while self._kinds.get(hop) == "link":
                hop = self._links[hop]
                if hop == name:
                    raise ValueError(f"linking {name!r} to {target!r} would make a cycle")
            self._claim(name, overwrite)
            self._claims[name] -= 1
            self._set_kind(name, "link")
            self._links[name] = target
            current = getattr(self._local, "dest", None)
            dests = [i for i in range(len(self.destinations)) if i != current and target in self._routed[i]]
            self._commit(_Version(name, 0, 0, target=target), dests)
        return name

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until everything accepted before this call is delivered and made durable.

        Raises ``TimeoutError`` when ``timeout`` seconds pass first, and ``UploadError`` for
        failures not reported before.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            horizon = self._seq
            while self._live and min(self._live) <= horizon:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    pending = sum(1 for s in self._live if s <= horizon)
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
            return self._done_bytes, sum(v.size * v.refs for v in self._live.values())

    def close(self, timeout: Optional[float] = None, progress: Optional[Callable[[int], None]] = None) -> dict[str, str]:
        """Wait up to ``timeout`` for pending uploads, close every destination, and return
        the undelivered names, each with why (an empty dict means everything arrived)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = self.pending_bytes()[0]
        with self._cond:
            while self._live:
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
                    for name in self._routed[index]:
                        self._failures.setdefault(name, _Failure(exc, dest.label, index, self._seq, in_flush=True))
        undelivered = self.undelivered()
        self._write_status(force=True, final=True)
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        return undelivered

    def undelivered(self) -> dict[str, str]:
        """Names whose latest version has not reached every destination, with the reason."""
        with self._cond:
            report = {name: f.describe() for name, f in self._failures.items()}
            for version in self._live.values():
                report.setdefault(version.name, "still pending when studio stopped waiting")
            for name, count in self._claims.items():
                if count > 0:
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

    def _claim(self, name: str, overwrite: bool) -> None:
        known = name in self._kinds or self._claims[name] > 0
        if known and not overwrite:
            raise FileExistsError(f"{name!r} was already uploaded or is pending; pass overwrite=True to replace it")
        parts = name.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in self._kinds or self._claims[prefix] > 0:
                raise NotADirectoryError(f"cannot upload {name!r}: {prefix!r} is already a file name")
        if not known and self._dirs[name]:
            raise IsADirectoryError(f"cannot upload {name!r}: other names lie below it")
        if not known:
            for i in range(1, len(parts)):
                self._dirs["/".join(parts[:i])] += 1
        self._claims[name] += 1

    def _unclaim(self, name: str) -> None:
        self._claims[name] -= 1
        if self._claims[name] <= 0 and name not in self._kinds:
            del self._claims[name]
            parts = name.split("/")
            for i in range(1, len(parts)):
                self._dirs["/".join(parts[:i])] -= 1

    def _set_kind(self, name: str, kind: str) -> None:
        self._kinds[name] = kind
        if kind == "file":
            self._links.pop(name, None)
        if self._claims[name] <= 0:
            del self._claims[name]

    def _reserve(self, size: int, name: str) -> None:
        while True:
            self._check_open()
            fits = self._used + size <= self.queue_bytes or self._used == 0
            if fits and self._queued < _MAX_QUEUED:
                self._used += size
                return
            if self.policy == "latest" and self._drop_superseded(name):
                continue
            self._cond.wait()

    def _commit(self, version: _Version, dests: list[int]) -> None:
        self._seq += 1
        version.seq = self._seq
        version.refs = len(dests)
        if not dests:
            self._release(version)
            return
        self._live[version.seq] = version
        if self.policy == "latest":
            self._drop_superseded(version.name, before=version.seq)
        for index in dests:
            self._routed[index].add(version.name)
            lane = self._lanes.setdefault((index, version.name), _Lane())
            lane.queue.append(version)
            self._load[index] += 1
            self._queued += 1
            if not lane.busy and len(lane.queue) == 1:
                heapq.heappush(self._ready, (version.seq, index, version.name))
        self._status_dirty = True
        self._cond.notify_all()

    def _drop_superseded(self, name: str, before: Optional[int] = None) -> bool:
        """Drop queued (not running) file versions of ``name`` older than ``before`` (default: all)."""
        dropped = False
        for index in range(len(self.destinations)):
            lane = self._lanes.get((index, name))
            if lane is None or not lane.queue:
                continue
            # Before a new copy is staged (``before`` None) every queued version is about to be
            # superseded; at commit, everything older than the new version is.
            keep_from = before if before is not None else self._seq + 1
            stale = [v for v in lane.queue if v.seq < keep_from and v.path is not None]
            for version in stale:
                lane.queue.remove(version)
                self._load[index] -= 1
                self._queued -= 1
                version.refs -= 1
                if version.refs == 0:
                    self._release(version)
                dropped = True
            if stale and lane.queue and not lane.busy:
                heapq.heappush(self._ready, (lane.queue[0].seq, index, name))
            if stale:
                self._wake_waiters((index, name))
        if dropped:
            self._cond.notify_all()
        return dropped

    def _release(self, version: _Version) -> None:
        self._live.pop(version.seq, None)
        if version.path is not None:
            self._used -= version.size
            try:
                os.unlink(version.path)
            except FileNotFoundError:
                pass
        self._status_dirty = True
        self._cond.notify_all()

    def _next_job(self) -> Optional[tuple[int, _Version]]:
        while self._ready:
            seq, index, name = heapq.heappop(self._ready)
            lane = self._lanes.get((index, name))
            if lane is None or lane.busy or not lane.queue or lane.queue[0].seq != seq:
                continue  # a stale entry: the lane's head changed since it was pushed
            head = lane.queue[0]
            if head.target is not None:  # a link goes after what is queued for its target
                before = self._lanes.get((index, head.target))
                if before is not None and before.holds_before(seq):
                    self._waiting.setdefault((index, head.target), []).append((index, name))
                    continue
            lane.busy = True
            lane.running = seq
            self._queued -= 1
            return index, lane.queue.popleft()
        return None

    def _wake_waiters(self, key: tuple[int, str]) -> None:
        for waiting in self._waiting.pop(key, []):
            lane = self._lanes.get(waiting)
            if lane is not None and lane.queue and not lane.busy:
                heapq.heappush(self._ready, (lane.queue[0].seq, waiting[0], waiting[1]))

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
        try:  # background work yields to the script (Linux nice is per thread)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _BACKGROUND_NICE)
        except (OSError, AttributeError):
            pass
        while True:
            with self._cond:
                job = None
                while not self._stop.is_set():
                    job = self._next_job()
                    if job is not None:
                        break
                    self._cond.wait(_STATUS_INTERVAL)
                if job is None:
                    return
            self._write_status()
            index, version = job
            error = self._deliver(index, version)
            with self._cond:
                lane = self._lanes[(index, version.name)]
                lane.busy = False
                self._load[index] -= 1
                if error is None:
                    self._unflushed[index].add(version.name)
                    failure = self._failures.get(version.name)
                    if failure is not None and failure.dest == index and failure.seq <= version.seq:
                        del self._failures[version.name]
                    self._done_bytes += version.size
                else:
                    self._failures[version.name] = _Failure(error, self.destinations[index].label, index, version.seq)
                if lane.queue:
                    heapq.heappush(self._ready, (lane.queue[0].seq, index, version.name))
                else:
                    del self._lanes[(index, version.name)]
                self._wake_waiters((index, version.name))
                version.refs -= 1
                if version.refs == 0:
                    self._release(version)
                idle = self._load[index] == 0 and bool(self._unflushed[index])
                self._status_dirty = True
                self._cond.notify_all()
            if idle:
                self._flush_destination(index, None)
            self._write_status()

    def _deliver(self, index: int, version: _Version) -> Optional[BaseException]:
        dest = self.destinations[index]
        self._local.dest = index
        try:
            for attempt in range(self.attempts):
                try:
                    if version.path is not None:
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
                    self._failures[name] = _Failure(exc, dest.label, index, self._seq, in_flush=True)
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
                pending = sorted({v.name for v in self._live.values()} | {n for n, c in self._claims.items() if c > 0})
                failed = {n: f.describe() for n, f in sorted(self._failures.items())}
            self._status_written = now
            doc = {"pid": os.getpid(), "final": final, "pending": pending, "failed": failed, "updated_at": time.time()}
            tmp = f"{self.status_path}.{threading.get_ident()}.tmp"
            with open(tmp, "w") as f:
                json.dump(doc, f, sort_keys=True)
            os.replace(tmp, self.status_path)
