"""The Queue page: the jobs not final yet and the workers seen, refreshed in place every few
seconds (the page's table asks for itself again with htmx, as the log box does).

Everything is read from the store through ``queue.status``, the same as ``studio queue``: no
broker connection, so the page needs neither the broker nor the ``[queue]`` extra (``status``
imports no Celery). Only the parsing and the rows the template shows are done here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..errors import StudioError
from ..queue.status import JobState, queue_jobs, workers_seen
from .context import Context, context_of, render

__all__ = ["JobRow", "REFRESH_SECONDS", "job_rows", "queue_page"]

REFRESH_SECONDS = 3
# What `studio run --queue` accepts as a queue name (queue.brokers.check_queue_name): a URL
# naming anything else cannot name a queue, so it is refused before the store is listed.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class JobRow:
    """One job as the page shows it: the job as ``queue.status`` reads it, with its version."""

    job: JobState
    version: Optional[int]  # None when the run is in neither the index nor its experiment's listing

    @property
    def attempt(self) -> int:
        """The number of its latest attempt; 0 before any worker claimed it."""
        return self.job.attempts[-1].number if self.job.attempts else 0

    @property
    def lost(self) -> int:
        """How many of its attempts were lost (their worker died)."""
        return sum(1 for a in self.job.attempts if a.end == "lost")


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
        rows.append(JobRow(job, version))
    return rows


def queue_page(request: Request) -> HTMLResponse:
    """``/queue`` (``?name=QUEUE`` for one queue); just its tables for htmx's refresh."""
    context = context_of(request)
    name = request.query_params.get("name", "").strip()
    if name and not _QUEUE_NAME.fullmatch(name):
        raise HTTPException(400, "not a queue name: use letters, digits, '_', '.' and '-'")
    jobs = job_rows(context, queue_jobs(context.store, name or None))
    workers = workers_seen(context.store, name or None)  # shown as they are, runs and all
    fragment = request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == "queue"
    return render(request, "_queue_tables.html" if fragment else "queue.html", queue_name=name, jobs=jobs,
                  workers=workers, refresh=REFRESH_SECONDS)
