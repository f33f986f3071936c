"""Store locks: garbage collection never deletes what a capture is about to publish.

A capture decides that content is "already stored" and then, later, writes the record that
points at it. Were ``studio gc`` to delete that content in between (it is unreferenced until
the record lands, and may be older than the grace period), the run would say ``finished`` and
could not be read back. So, as in restic, the two take locks in the store itself, under
``locks/``, seen by every machine sharing it:

- a writer (capture, upload of a run) holds a **shared** lock from before its first "is it
  stored?" until its record is written; any number may be held at once;
- ``studio gc`` holds an **exclusive** lock while it marks and sweeps.

Both write their own lock first and list the others after, so of two that start together at
least one sees the other: gc backs off (removes its lock and waits, or gives up) when it sees a
shared lock; a writer that sees an exclusive lock waits for it to go. A second gc refuses.

A lock is an empty key carrying its data in its *name* (``locks/<kind>-<host>-<pid>-<random>``),
so it can be written on a full disk, where gc must still run. Its holder rewrites it every
``REFRESH_EVERY`` seconds; one not rewritten for ``STALE_AFTER`` seconds (its holder died
with its machine) is dead and removed, as is one of a process gone on this same host. Ages are
measured on the store's clock (the modification time of one's own lock, just written), so
machines whose clocks disagree still agree on which lock is stale. A holder that could not
refresh its lock for most of ``STALE_AFTER`` has lost it (``StoreLock.check``).
"""

from __future__ import annotations

import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from .. import console
from ..errors import StoreError
from ..origin import process_alive
from ..storage.base import Storage

__all__ = ["EXCLUSIVE", "LockInfo", "REFRESH_EVERY", "SHARED", "STALE_AFTER", "StoreBusy", "StoreLock", "hold",
           "list_locks", "store_lock"]

SHARED = "shared"
EXCLUSIVE = "exclusive"
REFRESH_EVERY = 60.0
STALE_AFTER = 600.0
_PREFIX = "locks/"
_POLL = 1.0
_NAME = re.compile(r"^(shared|exclusive)-(.+)-(\d+)-([0-9a-f]+)\Z")


class StoreBusy(StoreError):
    """The store is locked by someone else (gc, or a capture in progress), or a lock was lost."""


@dataclass(frozen=True)
class LockInfo:
    """Another holder's lock, as seen from here."""

    key: str
    kind: str
    host: str
    pid: int
    age: float  # seconds since its last refresh, on the store's clock

    def describe(self) -> str:
        """``studio gc on HOST (pid N)`` / ``a capture on HOST (pid N)``, for messages."""
        who = "studio gc" if self.kind == EXCLUSIVE else "a capture"
        return f"{who} on {self.host} (pid {self.pid}, refreshed {self.age:.0f}s ago)"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", os.uname().nodename) or "host"


class StoreLock:
    """One lock of ``kind`` on ``storage``; ``acquire``/``release``, or use ``store_lock``."""

    def __init__(
        self,
        storage: Storage,
        kind: str,
        *,
        stale_after: float = STALE_AFTER,
        refresh_every: float = REFRESH_EVERY,
        poll: float = _POLL,
    ) -> None:
        if kind not in (SHARED, EXCLUSIVE):
            raise ValueError(f"lock kind {kind!r}")
        self.storage, self.kind = storage, kind
        self.stale_after, self.refresh_every, self.poll = stale_after, refresh_every, poll
        self.key = f"{_PREFIX}{kind}-{_host()}-{os.getpid()}-{os.urandom(6).hex()}"
        self._server_time = 0.0  # the store's clock when our lock was last written...
        self._written_at = 0.0  # ...and this machine's monotonic clock at that moment
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.held = False

    # -- taking and giving back ---------------------------------------------------------------
    def acquire(self, wait: Optional[float] = None, on_wait: Optional[Callable[[str], None]] = None) -> None:
        """Take the lock, waiting up to ``wait`` seconds (None: as long as it takes) for those in
        the way; ``on_wait`` is told once why we wait. Raises ``StoreBusy`` when it gives up."""
        deadline = None if wait is None else time.monotonic() + wait
        told = False
        while True:
            self._write()
            try:
                others = self.others()
            except PermissionError:
                if self.kind == EXCLUSIVE:
                    self._remove()
                    raise
                others = []  # credentials that may not list: no gc can run with them either
            if self.kind == EXCLUSIVE and any(o.kind == EXCLUSIVE for o in others):
                self._remove()
                holder = next(o for o in others if o.kind == EXCLUSIVE)
                raise StoreBusy(f"another {holder.describe()} is running on this store; run gc again when it is done")
            blocking = [o for o in others if o.kind != self.kind or self.kind == EXCLUSIVE]
            if not blocking:
                self._start_refresher()
                self.held = True
                return
            if self.kind == EXCLUSIVE:
                self._remove()  # back off: a capture that saw us must not wait for us
            if deadline is not None and time.monotonic() >= deadline:
                self._remove()
                raise StoreBusy(self._busy_message(blocking))
            if not told and on_wait is not None:
                on_wait(f"waiting for {', '.join(o.describe() for o in blocking[:3])} to finish")
                told = True
            time.sleep(self.poll)

    def release(self) -> None:
        """Give the lock back (safe to call twice)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        self._remove()
        self.held = False

    def check(self) -> None:
        """Raise ``StoreBusy`` if the lock may have been taken for dead (not refreshed for most of
        ``STALE_AFTER``): what was checked under it must be checked again."""
        if self.held and time.monotonic() - self._written_at > self.stale_after * 0.8:
            raise StoreBusy(f"the store lock was not refreshed for {time.monotonic() - self._written_at:.0f}s "
                            "and may have been taken for dead")

    def __enter__(self) -> "StoreLock":
        if not self.held:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- seeing the others --------------------------------------------------------------------
    def others(self) -> list[LockInfo]:
        """The live locks of other holders; dead ones (stale, or of a process gone from this
        host) are removed on the way."""
        now = self._server_time + (time.monotonic() - self._written_at)
        live = []
        for info in list_locks(self.storage, now):
            if info.key == self.key:
                continue
            if info.age > self.stale_after or _dead_here(info):
                try:
                    self.storage.delete(info.key)
                except FileNotFoundError:
                    pass
                continue
            live.append(info)
        return live

    def _busy_message(self, blocking: list[LockInfo]) -> str:
        names = ", ".join(o.describe() for o in blocking[:3])
        more = f" and {len(blocking) - 3} more" if len(blocking) > 3 else ""
        if self.kind == EXCLUSIVE:
            return (f"the store is in use by {names}{more}: gc never runs while a capture is publishing; "
                    f"run it again later (a lock of a machine that died expires after {self.stale_after:.0f}s)")
        return f"the store is locked by {names}{more}; try again when it is done"

    # -- writing our own ----------------------------------------------------------------------
    def _write(self) -> None:
        self.storage.touch(self.key)
        written_at = time.monotonic()
        try:
            self._server_time = self.storage.info(self.key).mtime
        except FileNotFoundError:  # removed by someone who took us for dead: write again next time
            self._server_time = time.time()
        self._written_at = written_at

    def _remove(self) -> None:
        try:
            self.storage.delete(self.key)
        except FileNotFoundError:
            pass
        except OSError:
            pass  # unreachable store: the lock goes stale on its own

    def _start_refresher(self) -> None:
        self._stop.clear()

        def refresh() -> None:
            while not self._stop.wait(self.refresh_every):
                try:
                    self._write()
                except Exception:  # noqa: BLE001  (kept trying; ``check`` says when it is lost)
                    continue

        self._thread = threading.Thread(target=refresh, name=f"studio-lock-{self.kind}", daemon=True)
        self._thread.start()


def list_locks(storage: Storage, now: Optional[float] = None) -> list[LockInfo]:
    """Every lock in the store (``now``: the store's clock, for ages; this machine's by default).
    Keys under ``locks/`` that are not locks are ignored."""
    now = time.time() if now is None else now
    found = []
    for key in storage.list(_PREFIX):
        match = _NAME.match(key[len(_PREFIX):])
        if match is None:
            continue
        try:
            mtime = storage.info(key).mtime
        except FileNotFoundError:
            continue  # released while we listed
        found.append(LockInfo(key, match.group(1), match.group(2), int(match.group(3)), max(0.0, now - mtime)))
    return found


def _dead_here(info: LockInfo) -> bool:
    """Whether the lock's holder was a process of this host that no longer exists."""
    if info.host != _host() or info.pid == os.getpid():
        return False
    return not process_alive(info.pid)


class _Held:
    """``store_lock``'s context manager."""

    def __init__(self, lock: StoreLock, wait: Optional[float], on_wait: Optional[Callable[[str], None]]) -> None:
        self.lock, self.wait, self.on_wait = lock, wait, on_wait

    def __enter__(self) -> StoreLock:
        self.lock.acquire(self.wait, self.on_wait)
        return self.lock

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def store_lock(
    storage: Storage,
    kind: str,
    *,
    wait: Optional[float] = None,
    on_wait: Optional[Callable[[str], None]] = None,
    stale_after: float = STALE_AFTER,
    refresh_every: float = REFRESH_EVERY,
    poll: float = _POLL,
) -> _Held:
    """``with store_lock(storage, SHARED):`` holds a lock for the block (see the module docstring)."""
    lock = StoreLock(storage, kind, stale_after=stale_after, refresh_every=refresh_every, poll=poll)
    return _Held(lock, wait, on_wait)


@contextmanager
def hold(
    storage: Storage, kind: str, *, wait: Optional[float], note: Callable[[str], None]
) -> Iterator[Optional[StoreLock]]:
    """Hold a lock for a maintenance command (gc, check); where it cannot even be written
    (read-only credentials, a store refusing writes), go on without it unless another holder's
    lock is seen that this one would have had to wait for, and say so through ``note``."""
    lock = StoreLock(storage, kind)
    try:
        lock.acquire(wait, on_wait=console.info)
    except StoreBusy:
        raise
    except (OSError, StoreError) as exc:
        seen = [i for i in list_locks(storage) if i.age < lock.stale_after and (kind == EXCLUSIVE or i.kind == EXCLUSIVE)]
        if seen:
            raise StoreBusy(f"the store is in use by {seen[0].describe()}; try again later") from exc
        note(f"could not write a lock to the store ({exc}); went on without it, as no other holder's lock was seen")
        yield None
        return
    try:
        yield lock
    finally:
        lock.release()
