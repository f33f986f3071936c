"""Ends a run from outside the script: ``--max-duration`` and stop requests in the store.

A ``StopWatch`` runs beside the script on one daemon thread. Every ``poll`` seconds it looks
whether the run's time is up (status ``timed-out``) or whether ``studio stop`` asked, from this
machine or any other, through the store (``store/stops.py``; status ``stopped``), and then
stops the script exactly as a SIGTERM would: the whole process group, SIGKILL after the grace
period, the final capture kept.

Its own thread and not the capture loop, since captures may be minutes apart and a look at the
store must never wait behind one (nor the other way round). A look is one ``exists`` call: on a
remote store once every few seconds, and never while the store is not connected yet (opening a
connection is the uploader's job); a look that fails is tried again at the next interval.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from ..storage.base import Storage
from ..storage.lazy import LazyStorage
from ..store.stops import stop_requested

__all__ = ["LOCAL_POLL", "REMOTE_POLL", "StopWatch"]

LOCAL_POLL = 1.0  # seconds between looks on a local store (a stat)
REMOTE_POLL = 5.0  # seconds between looks on a remote store (one HEAD or equivalent)


class StopWatch:
    """Calls ``stop(status)`` once, when the time is up or a stop request is found."""

    def __init__(
        self,
        storage: Storage,
        experiment: str,
        run_id: str,
        stop: Callable[[str], bool],
        *,
        max_duration: Optional[float] = None,
        poll: float = LOCAL_POLL,
        connection: Optional[LazyStorage] = None,
    ) -> None:
        self.storage, self.experiment, self.run_id = storage, experiment, run_id
        self.max_duration, self.poll, self.connection = max_duration, poll, connection
        self._stop = stop
        self._closed = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.requested = False  # a stop request was found in the store

    def start(self) -> None:
        """Start watching (call when the script starts: ``max_duration`` counts from now)."""
        deadline = None if self.max_duration is None else time.monotonic() + self.max_duration
        self._thread = threading.Thread(target=self._loop, args=(deadline,), name="studio-stopwatch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching. A look under way is not waited for: it only sets ``requested``."""
        self._closed.set()

    def look(self) -> bool:
        """Look for a stop request now; False when the store cannot say (unreachable)."""
        if self.connection is not None and not self.connection.connected:
            return False
        try:
            found = stop_requested(self.storage, self.experiment, self.run_id)
        except Exception:  # noqa: BLE001 - an unreachable store only delays the stop to the next look
            return False
        self.requested = self.requested or found
        return found

    def confirm(self, timeout: float = 5.0) -> bool:
        """Whether a stop was requested, looking once more for at most ``timeout`` seconds (the
        runner got a SIGTERM: from ``studio stop`` on this machine, or from someone else)."""
        if self.requested:
            return True
        done = threading.Event()

        def look() -> None:
            self.look()
            done.set()

        threading.Thread(target=look, name="studio-stop-confirm", daemon=True).start()
        done.wait(timeout)
        return self.requested

    def _loop(self, deadline: Optional[float]) -> None:
        while True:
            wait = self.poll if deadline is None else max(0.0, min(self.poll, deadline - time.monotonic()))
            if self._closed.wait(wait):
                return
            if deadline is not None and time.monotonic() >= deadline:
                self._stop("timed-out")
                return
            if self.look():
                self._stop("stopped")
                return
