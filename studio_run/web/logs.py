"""The log of a run, live while it runs: an htmx fragment that asks for itself again every
second until the run has ended.

Where the bytes come from: for a run on this machine, the runner's own ``output.log`` under
``$STUDIOML_HOME/runs`` (what the script wrote a moment ago, the same live file ``studio logs
-f`` follows); for any other run, the latest capture of its ``output`` artifact, read through
the store (a worker's periodic captures). Only the last ``TAIL`` bytes are shown; the whole log
is a download away.
"""

from __future__ import annotations

import os
from typing import Optional

from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..errors import NotFoundError
from ..store.archive import iter_file
from ..store.browse import LOG_NAME, LOG_TAG
from ..store.records import RunRecord, effective_status
from .context import Context, render, run_of

__all__ = ["TAIL", "live_log_path", "log_fragment", "log_tail"]

TAIL = 256 * 1024


def live_log_path(context: Context, record: RunRecord) -> Optional[str]:
    """The runner's live log file, when the run is on this machine and it is there."""
    if record.host != context.hostname:
        return None
    path = os.path.join(context.store.config.runs_dir, record.experiment, record.run_id, LOG_TAG, LOG_NAME)
    return path if os.path.isfile(path) else None


def log_tail(context: Context, record: RunRecord, running: bool) -> tuple[str, bool]:
    """The last ``TAIL`` bytes of the run's log as text, and whether earlier bytes were left out."""
    live = live_log_path(context, record) if running else None
    if live is not None:
        with open(live, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL))
            data = f.read(TAIL)
        return data.decode("utf-8", "replace"), size > TAIL
    art = record.artifacts.get(LOG_TAG)
    if art is None or not art.digest:
        return "", False
    tail = bytearray()
    cut = False
    try:
        for chunk in iter_file(context.store, record, LOG_TAG, LOG_NAME):
            tail += chunk
            if len(tail) > TAIL:
                del tail[:-TAIL]
                cut = True
    except NotFoundError:
        return "", False
    return tail.decode("utf-8", "replace"), cut


def log_fragment(request: Request) -> HTMLResponse:
    """``/runs/{experiment}/{run_id}/log``: the log box, polling itself while the run runs."""
    context, record = run_of(request)
    status = effective_status(record, context.hostname)
    running = status in ("running", "queued")
    text, cut = log_tail(context, record, running)
    return render(request, "_log.html", record=record, status=status, running=running, text=text, cut=cut,
                  log_tag=LOG_TAG, log_name=LOG_NAME)
