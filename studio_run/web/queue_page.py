"""The Queue page: the jobs not final yet and the workers seen, refreshed in place every few
seconds (the page's table asks for itself again with htmx, as the log box does).

Everything is read from the store through ``queue.status``, the same as ``studio queue``: no
broker connection, so the page needs neither the broker nor the ``[queue]`` extra (``status``
imports no Celery). Only the parsing and the rows the template shows are done here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..errors import StudioError
from ..queue.status import JobState, WorkerState, queue_jobs, workers_seen
from .context import Context, context_of, render

__all__ = ["JobRow", "REFRESH_SECONDS", "WorkerRow", "job_rows", "queue_page", "worker_rows"]

REFRESH_SECONDS = 3
# What `studio run --queue` accepts as a queue name (queue.brokers.check_queue_name): a URL
# naming anything else cannot name a queue, so it is refused before the store is listed.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class JobRow:
    """One job as the page shows it."""

    queue: str
    experiment: str
    run_id: str
    version: Optional[int]  # None when the run is in neither the index nor its experiment's listing
    status: str
    host: str
    attempt: int  # 0 before any worker claimed it
    lost: int
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    submitted_at: float = 0.0


@dataclass(frozen=True)
class WorkerRow:
    """One worker's last heartbeat as the page shows it."""

    host: str
    worker: str
    queue: str
    slots: int
    runs: list[tuple[str, str]]  # (experiment, run id) of each run it holds
    age: float
    stopping: bool


def job_rows(context: Context, jobs: list[JobState]) -> list[JobRow]:
    """The rows of ``jobs``, each with its version: from the run index, else (a run queued since
    the index last looked) from one listing of its experiment per page."""
    listed: dict[str, list[str]] = {}
    rows = []
    for job in jobs:
        indexed = context.index.run(job.experiment, job.run_id)
        version = indexed.version if indexed is not None else None
        if version is None:
            if job.experiment not in listed:
                try:
                    listed[job.experiment] = context.store.records.run_ids(job.experiment)
                except (OSError, StudioError):  # a version is a nicety: the row stands without it
                    listed[job.experiment] = []
            ids = listed[job.experiment]
            version = ids.index(job.run_id) + 1 if job.run_id in ids else None
        rows.append(JobRow(job.queue, job.experiment, job.run_id, version, job.status, job.host,
                           job.attempts[-1].number if job.attempts else 0,
                           sum(1 for a in job.attempts if a.end == "lost"), dict(job.hyperparameters),
                           job.submitted_at))
    return rows


def worker_rows(workers: list[WorkerState]) -> list[WorkerRow]:
    """The rows of ``workers``, most recent heartbeat first."""
    return [WorkerRow(w.host, w.worker, w.queue, w.slots,
                      [(str(r.get("experiment", "")), str(r.get("run_id", ""))) for r in w.runs if isinstance(r, dict)],
                      w.age, w.stopping) for w in workers]


def queue_page(request: Request) -> HTMLResponse:
    """``/queue`` (``?name=QUEUE`` for one queue); just its tables for htmx's refresh."""
    context = context_of(request)
    name = request.query_params.get("name", "").strip()
    if name and not _QUEUE_NAME.fullmatch(name):
        raise HTTPException(400, "not a queue name: use letters, digits, '_', '.' and '-'")
    jobs = job_rows(context, queue_jobs(context.store, name or None))
    workers = worker_rows(workers_seen(context.store, name or None))
    fragment = request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == "queue"
    return render(request, "_queue_tables.html" if fragment else "queue.html", queue_name=name, jobs=jobs,
                  workers=workers, refresh=REFRESH_SECONDS)
