"""What a delivery of a job means, decided from the store: run attempt N here, or drop it.

Shared by the worker's slots (a delivery) and its sweep (``--lifetime`` of a job nobody took).
The broker only says "look at this job"; the run's record and claims (``claims.py``) say what
to do, so a duplicate delivery, a redelivery after a broker timeout and a republished takeover
are all safe: at most one worker wins each attempt's exclusive claim.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from .. import console
from ..errors import NotFoundError
from ..store.records import TERMINAL, RunRecord
from ..store.stops import stop_requested
from ..store.store import Store
from .claims import Claims
from .jobs import Job, index_key

__all__ = ["Decision", "decide", "retire", "settle"]


@dataclass(frozen=True)
class Decision:
    """What to do with a delivery: run ``attempt`` (0: drop it) of the run ``record``; ``why`` not."""

    attempt: int
    record: Optional[RunRecord] = None
    why: str = ""


def decide(store: Store, job: Job, worker_id: str) -> Decision:
    """Which attempt of ``job`` this worker now holds (0: none, drop the delivery) and its record.

    Settles on the way what needs no script: a final run leaves the index; a run never started
    that was stopped or outlived ``--lifetime`` becomes ``stopped``/``expired``; a run whose
    takeovers exceed ``--retries`` becomes ``failed``.
    """
    try:
        record = store.records.read(job.experiment, job.run_id)
    except NotFoundError:
        retire(store, job)  # the submission was undone, or the experiment deleted
        return Decision(0, why="its record is gone")
    if record.status in TERMINAL:
        retire(store, job)
        return Decision(0, record, f"already {record.status}")
    claims = Claims(store.storage, job.experiment, job.run_id)
    newest = claims.newest()
    taking_over = newest > 0 and job.takeover == newest
    if newest and not taking_over and claims.ending(newest) != "released":
        # alive elsewhere, or a sweep will find it dead and republish it as a takeover
        return Decision(0, record, f"attempt {newest} is running elsewhere")
    attempt = newest + 1
    if not claims.claim(attempt, worker_id):
        return Decision(0, record, f"another worker claimed attempt {attempt} first")
    record.attempt = attempt  # this attempt owns the record now: the record store's guard drops older ones
    if taking_over:
        claims.end(newest, "lost")
    if newest == 0 and job.expired():
        settle(store, job, record, "expired")
        return Decision(0, record, "expired: not started within its --lifetime")
    if stop_requested(store.storage, job.experiment, job.run_id):
        settle(store, job, record, "stopped")
        return Decision(0, record, "stopped by `studio stop` before it started")
    if claims.lost() > job.retries:
        console.warn(f"{job.name}: its worker died {claims.lost()} times (--retries {job.retries}); failed")
        settle(store, job, record, "failed")
        return Decision(0, record, f"failed: its workers died {claims.lost()} times")
    return Decision(attempt, record)


def settle(store: Store, job: Job, record: RunRecord, status: str) -> None:
    """End a run that no script will run (``expired``, ``stopped``, ``failed``) and retire its job."""
    record.status, record.ended_at = status, time.time()
    record.pid = record.pid_started = None
    store.records.write(record)
    retire(store, job)


def retire(store: Store, job: Job) -> None:
    """Remove a job from its queue's index (its run is final, or gone)."""
    try:
        store.storage.delete(index_key(job.queue, job.experiment, job.run_id))
    except FileNotFoundError:
        pass
