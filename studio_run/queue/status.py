"""What ``studio queue`` shows: the jobs not final yet, and the workers seen, read from the store.

Everything comes from the store (the queue index, records, claims and worker heartbeats), never
from the broker: it is the same on every machine that shares the store, whatever the broker,
and needs no broker connection.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import NotFoundError, StudioError
from ..store.records import RunRecord
from ..store.store import Store
from .claims import Attempt, Claims
from .jobs import Job, parse_index_key

__all__ = ["JobState", "WorkerState", "attempt_rows", "queue_jobs", "workers_seen"]


@dataclass(frozen=True)
class JobState:
    """One job of a queue as ``studio queue`` shows it."""

    queue: str
    experiment: str
    run_id: str
    status: str  # the record's (queued, running, or final when not yet retired)
    host: str
    attempts: list[Attempt] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    submitted_at: float = 0.0


@dataclass(frozen=True)
class WorkerState:
    """A worker's last heartbeat."""

    worker: str
    host: str
    queue: str
    slots: int
    runs: list[dict[str, Any]]
    at: float
    stopping: bool

    @property
    def age(self) -> float:
        """Seconds since its last heartbeat (by this machine's clock)."""
        return max(0.0, time.time() - self.at)


def queue_jobs(store: Store, queue: Optional[str] = None) -> list[JobState]:
    """Jobs in the index of ``queue`` (of every queue when None), oldest first."""
    prefix = f"queue/{queue}/" if queue else "queue/"
    states = []
    for key in sorted(store.storage.list(prefix)):
        parsed = parse_index_key(key)
        if parsed is None:
            continue
        name, experiment, run_id = parsed
        try:
            job = Job.decode(store.storage.read_bytes(key))
            record = store.records.read(experiment, run_id)
        except (FileNotFoundError, NotFoundError, ValueError, StudioError):
            continue  # retired meanwhile, or damaged: `studio check` reports records
        attempts = Claims(store.storage, experiment, run_id).history()
        host = attempts[-1].host if attempts and record.status == "running" else ""
        states.append(JobState(name, experiment, run_id, record.status, host, attempts,
                               dict(record.hyperparameters), job.submitted_at))
    states.sort(key=lambda s: (s.submitted_at, s.run_id))
    return states


def workers_seen(store: Store, queue: Optional[str] = None) -> list[WorkerState]:
    """Every worker heartbeat in the store (of ``queue`` only when given), most recent first."""
    seen = []
    for key in store.storage.list("workers/"):
        try:
            data = json.loads(store.storage.read_bytes(key))
        except (FileNotFoundError, ValueError):
            continue
        if not isinstance(data, dict) or (queue and data.get("queue") != queue):
            continue
        seen.append(WorkerState(str(data.get("worker", "")), str(data.get("host", "")), str(data.get("queue", "")),
                                int(data.get("slots") or 0), list(data.get("runs") or []),
                                float(data.get("at") or 0.0), bool(data.get("stopping"))))
    seen.sort(key=lambda w: -w.at)
    return seen


def attempt_rows(store: Store, record: RunRecord) -> list[list[str]]:
    """A queued run's attempts for ``studio show``: number, host, worker and how each ended
    (``lost`` when its worker died and another took the run over)."""
    history = Claims(store.storage, record.experiment, record.run_id).history()
    rows = []
    for attempt in history:
        ended = attempt.end or (record.status if attempt.number == record.attempt else "")
        rows.append([str(attempt.number), attempt.host, attempt.worker, ended or "-"])
    return rows
