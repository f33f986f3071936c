"""Each worker's sweep of its queue's index: what a broker lost or a dead worker left is found again.

Celery's redelivery depends on the broker (a Redis visibility timeout, RabbitMQ's connection
loss, nothing at all for an embedded transport killed with -9), and a timeout short enough to
redeliver quickly also redelivers long jobs that are still running. So studio does not rely
on it: every ``sweep`` seconds each worker reads the queue's index (``queue/<NAME>/``) and

- retires jobs whose run is final (or gone);
- ends as ``expired`` a job never started within its ``--lifetime``;
- republishes as a takeover a job whose newest attempt's heartbeat has not changed for
  ``stale`` seconds of this worker's clock (the worker running it died): the first worker to
  claim the next attempt restarts it from the last capture;
- republishes a job that waits unclaimed while this worker has had an idle slot for a whole
  sweep (its message was lost: with a message, the idle slot would have received it).

Duplicated messages cost nothing: a delivery is only a request, decided by the claims.
"""

from __future__ import annotations

import time
from typing import Callable

from .. import console
from ..errors import NotFoundError, StudioError
from ..store.records import TERMINAL
from ..store.store import Store
from .claims import Claims, StaleWatch
from .dispatch import retire, settle
from .jobs import Job, index_prefix
from .timing import Timing

__all__ = ["Sweep"]


class Sweep:
    """The sweep of one queue, keeping what it observed between rounds."""

    def __init__(self, store: Store, queue: str, timing: Timing, republish: Callable[[Job], None],
                 idle_for: Callable[[], float]) -> None:
        self.store, self.queue, self.timing = store, queue, timing
        self.republish, self.idle_for = republish, idle_for
        self.watch = StaleWatch(timing.stale)
        self.waiting: dict[str, float] = {}  # job name -> when first seen unclaimed (or last republished)
        self.worker_id = "sweep"

    def run_once(self) -> None:
        """One round over the index; a failure of the store only postpones it."""
        prefix = index_prefix(self.queue)
        try:
            keys = sorted(self.store.storage.list(prefix))
        except (OSError, StudioError) as exc:
            console.warn(f"sweep of queue {self.queue!r} postponed: {exc}")
            return
        for key in keys:
            try:
                self._look(key)
            except (OSError, StudioError, ValueError) as exc:
                console.warn(f"sweep: skipped {key}: {exc}")

    def _look(self, key: str) -> None:
        try:
            job = Job.decode(self.store.storage.read_bytes(key))
        except FileNotFoundError:
            return  # retired meanwhile
        try:
            record = self.store.records.read(job.experiment, job.run_id)
        except NotFoundError:
            retire(self.store, job)
            return
        if record.status in TERMINAL:
            retire(self.store, job)
            self.waiting.pop(job.name, None)
            return
        claims = Claims(self.store.storage, job.experiment, job.run_id)
        newest = claims.newest()
        now = time.monotonic()
        if newest == 0 and job.expired():
            if claims.claim(1, f"{self.worker_id}-expire"):
                settle(self.store, job, record, "expired")
            return
        if newest == 0 or claims.ending(newest) == "released":
            first = self.waiting.setdefault(job.name, now)
            if now - first >= 2 * self.timing.sweep and self.idle_for() >= self.timing.sweep:
                console.info(f"sweep: {job.name} waits without a message; republished")
                self.republish(job.taking_over(0))
                self.waiting[job.name] = now
            return
        self.waiting.pop(job.name, None)
        watched = f"{job.name}/{newest}"
        if claims.ending(newest):
            return  # ended (lost or fenced) and a newer attempt is being claimed
        if self.watch.stale(watched, claims.heartbeat(newest)):
            console.info(f"sweep: {job.name} attempt {newest} stopped beating; republished to take it over")
            self.republish(job.taking_over(newest))
            self.watch.forget(watched)
