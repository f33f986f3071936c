"""``studio stop``: end a run wherever it is, keeping what it captured.

One function for every caller (the CLI, a worker, the web page): ``stop_run`` looks at the run's
record and does what its state needs, and always leaves a stop request in the store
(``store/stops.py``) first, so that whoever holds the run next sees it:

- ``queued``: the record becomes ``stopped`` at once; it never starts (a worker that receives
  it later finds the request and skips it).
- ``running`` on this host, started by ``studio run``: SIGTERM to its runner, whose pid and
  start time are in the record (a pid alone may belong to another process by now). The runner stops the script's process
  group (SIGKILL after its ``stop_grace``), takes the final capture, records ``stopped``.
- ``running`` on another host, or on a worker (never signalled: a worker reads SIGTERM as
  "shut down"): the request alone; the runner looks for it every few seconds (``stopwatch.py``)
  and stops the same way.
- ``lost`` (its runner died): nothing runs; the request keeps a worker from taking it over.
- already final: nothing to do; said in one line.

With ``grace`` > 0 it waits that long for the record to become final, so the line it returns
can say how the run ended; ``grace=0`` returns at once (a web page).
"""

from __future__ import annotations

import os
import signal
import time

from ..origin import process_start_ticks
from ..store.records import TERMINAL, RunRecord, effective_status
from ..store.stops import request_stop
from ..store.store import Store

__all__ = ["stop_run"]

_WAIT_POLL = 0.25  # seconds between reads of the record while waiting for it to become final


def stop_run(store: Store, record: RunRecord, *, hostname: str, grace: float = 10.0) -> str:
    """Stop the run ``record`` names; returns one line saying what was done."""
    name = _name(record)
    status = effective_status(record, hostname)
    if status in TERMINAL:
        return f"{name} has already ended ({status}); nothing to stop"
    request_stop(store.storage, record.experiment, record.run_id)
    if status == "lost":
        return (f"{name} is lost (its runner on {record.host} died); nothing runs, and the stop request "
                "keeps it from being taken over")
    if status == "queued":
        record.status, record.ended_at = "stopped", time.time()
        store.records.write(record)
        return f"{name} was queued; it is stopped and will not start"
    how = _signal_runner(record, hostname)
    ended = _wait_final(store, record, grace)
    if ended is not None:
        return f"{name} {ended} ({how})"
    return f"stop requested for {name}: {how}; it ends with a final capture (see `studio list`)"


def _signal_runner(record: RunRecord, hostname: str) -> str:
    """SIGTERM to a runner on this host; says what was done.

    Never to a run a worker executes (``record.queue`` set): its pid is the worker's, which may
    hold other runs and reads SIGTERM as "shut down"; the worker's runner finds the request.
    """
    if record.host != hostname or not record.pid or record.queue:
        where = f"on {record.host or 'another host'}" + (f" (queue {record.queue})" if record.queue else "")
        return f"its runner {where} looks for the request every few seconds"
    started = process_start_ticks(record.pid)
    if record.pid_started is not None and started is not None and started != record.pid_started:
        return "its runner is gone"  # effective_status raced with the runner's end
    try:
        os.kill(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return "its runner is gone"
    except PermissionError:
        return f"its runner (pid {record.pid}) belongs to another user; it looks for the request every few seconds"
    return f"sent SIGTERM to its runner, pid {record.pid}"


def _wait_final(store: Store, record: RunRecord, grace: float) -> "str | None":
    """The run's final status once its record says one, or None after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        time.sleep(_WAIT_POLL)
        try:
            current = store.records.read(record.experiment, record.run_id)
        except Exception:  # noqa: BLE001 - a record being replaced or a store hiccup: look again
            continue
        if current.status in TERMINAL:
            return current.status
    return None


def _name(record: RunRecord) -> str:
    return f"{record.experiment} v{record.version}" if record.version else f"{record.experiment} ({record.run_id})"
