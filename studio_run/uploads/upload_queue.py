"""The uploader's queue: versions of names waiting for destinations, in lanes, within a bound.

Why a module of its own: ordering, bounds and superseding are the delicate part of the
uploader, and they are plain bookkeeping: no threads, no copies, no destinations called. The
``Uploader`` (``uploader``) owns the lock that guards this queue, calls every method with it
held and does all the waiting; the queue wakes the waiters through that same condition
whenever it frees room or work.

Ordering, so that the latest call wins even when uploads finish out of order: every accepted
call gets a sequence number. Each (destination, name) pair is a lane; a lane runs one job at a
time in sequence order, so a destination sees the versions of a name in the order they were
made, while different names (and destinations) proceed in parallel. A link waits until
nothing older is queued or running for its target on that destination.

Bounds: the staged bytes (``queue_bytes``) and the number of queued versions are capped; a
file larger than the whole bound is admitted when nothing else is staged. Superseding drops
queued versions of a name that a newer call replaces: a version already being sent is never
cut short, the newest version of a name is never dropped, and links are never dropped.
"""

from __future__ import annotations

import heapq
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

__all__ = ["UploadQueue", "Version"]

_MAX_QUEUED = 100_000


@dataclass(eq=False)
class Version:
    """One accepted call: a staged file, a link or a removal on its way to some destinations."""

    name: str
    seq: int
    size: int
    path: Optional[str] = None  # the staged copy; None for a link
    target: Optional[str] = None  # for a link: the name it points at
    removed: bool = False  # a removal of the name (no path, no target)
    refs: int = 0  # destinations still to deliver it to


@dataclass
class _Lane:
    queue: deque = field(default_factory=deque)
    busy: bool = False
    running: int = 0  # seq of the version being delivered while busy

    def holds_before(self, seq: int) -> bool:
        """Whether a version older than ``seq`` is still queued or running here."""
        return (self.busy and self.running < seq) or any(v.seq < seq for v in self.queue)


class UploadQueue:
    """The versions on their way to ``destinations`` destinations (known by index).

    Not thread-safe by itself: every method must be called with ``cond`` held. ``on_change``
    is called (under it) whenever a version joins the queue or leaves it for good, so that
    the owner knows its report of pending names is stale. ``seq``, ``live``, ``routed`` and
    ``used`` are for the owner to read; only the queue changes them.
    """

    def __init__(
        self, cond: threading.Condition, destinations: int, queue_bytes: int, on_change: Callable[[], None]
    ) -> None:
        self.queue_bytes = queue_bytes
        self.seq = 0  # the last sequence number given
        self.live: dict[int, Version] = {}  # seq -> version not yet delivered everywhere
        self.routed: list[set[str]] = [set() for _ in range(destinations)]  # names queued to each
        self.used = 0  # staged bytes, including reservations for copies under way
        self._cond = cond
        self._on_change = on_change
        self._lanes: dict[tuple[int, str], _Lane] = {}
        self._ready: list[tuple[int, int, str]] = []  # (seq, dest, name) of lane heads
        self._waiting: dict[tuple[int, str], list[tuple[int, str]]] = {}  # lane -> link lanes after it
        self._load = [0] * destinations  # queued + running jobs per destination
        self._queued = 0

    def try_reserve(self, size: int) -> bool:
        """Count ``size`` more staged bytes if they fit the bounds; returns whether they did."""
        fits = self.used + size <= self.queue_bytes or self.used == 0
        if fits and self._queued < _MAX_QUEUED:
            self.used += size
            return True
        return False

    def unreserve(self, size: int) -> None:
        """Give back bytes reserved for a copy that failed, waking whoever waits for room."""
        self.used -= size
        self._cond.notify_all()

    def commit(self, version: Version, dests: list[int], *, supersede: bool) -> None:
        """Give ``version`` the next sequence number and queue it for ``dests``.

        With ``supersede``, queued file versions of the same name that it replaces are dropped.
        A version with no destination is released at once (its staged copy deleted).
        """
        self.seq += 1
        version.seq = self.seq
        version.refs = len(dests)
        if not dests:
            self._release(version)
            return
        self.live[version.seq] = version
        if supersede:
            self.drop_superseded(version.name, before=version.seq)
        for index in dests:
            self.routed[index].add(version.name)
            lane = self._lanes.setdefault((index, version.name), _Lane())
            lane.queue.append(version)
            self._load[index] += 1
            self._queued += 1
            if not lane.busy and len(lane.queue) == 1:
                heapq.heappush(self._ready, (version.seq, index, version.name))
        self._on_change()
        self._cond.notify_all()

    def drop_superseded(self, name: str, before: Optional[int] = None) -> bool:
        """Drop queued (not running) file versions of ``name`` older than ``before`` (default: all)."""
        dropped = False
        for index in range(len(self._load)):
            lane = self._lanes.get((index, name))
            if lane is None or not lane.queue:
                continue
            # Before a new copy is staged (``before`` None) every queued version is about to be
            # superseded; at commit, everything older than the new version is.
            keep_from = before if before is not None else self.seq + 1
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

    def next_job(self) -> Optional[tuple[int, Version]]:
        """The oldest version whose lane is free and whose link target is not behind: ``(dest, version)``.

        Its lane is marked busy until ``finish``; ``None`` when nothing can start now.
        """
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

    def finish(self, index: int, version: Version) -> bool:
        """End the job ``next_job`` gave for destination ``index``, delivered or failed.

        Frees the lane for the name's next version and the links waiting on it, and releases
        ``version`` once every destination is done with it. Returns whether destination
        ``index`` has nothing left queued or running.
        """
        lane = self._lanes[(index, version.name)]
        lane.busy = False
        self._load[index] -= 1
        if lane.queue:
            heapq.heappush(self._ready, (lane.queue[0].seq, index, version.name))
        else:
            del self._lanes[(index, version.name)]
        self._wake_waiters((index, version.name))
        version.refs -= 1
        if version.refs == 0:
            self._release(version)
        return self._load[index] == 0

    def _release(self, version: Version) -> None:
        self.live.pop(version.seq, None)
        if version.path is not None:
            self.used -= version.size
            try:
                os.unlink(version.path)
            except FileNotFoundError:
                pass
        self._on_change()
        self._cond.notify_all()

    def _wake_waiters(self, key: tuple[int, str]) -> None:
        for waiting in self._waiting.pop(key, []):
            lane = self._lanes.get(waiting)
            if lane is not None and lane.queue and not lane.busy:
                heapq.heappush(self._ready, (lane.queue[0].seq, waiting[0], waiting[1]))
