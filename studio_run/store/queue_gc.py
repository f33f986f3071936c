"""The queue's share of ``studio gc``: index entries, claim heartbeats and worker keys nobody needs.

Workers retire a job's index entry when its run ends, but a worker killed at the wrong moment,
a run deleted while queued, or a worker machine switched off for good leaves keys behind
(``queue_keys.py`` lists them). gc removes:

- index entries (``queue/<NAME>/…``) of runs whose record is final or gone;
- every claim key of runs whose record is gone, and the heartbeats (``<N>.beat``) of final
  runs. The claims themselves (``<N>``, ``<N>.end``) of a final run are kept: they are its
  attempt history (``studio show``: which worker ran which attempt, which one was lost);
- worker heartbeats (``workers/<id>.json``) not rewritten for ``WORKER_STALE`` (a day). A live
  worker rewrites its key every few seconds, so the bound is thousands of heartbeats long and
  no clock skew between machines comes near it; it is judged, like the sweep judges an
  attempt, by a heartbeat that stopped changing, here through the key's modification time.

Nothing of a run that is queued or running is touched, and a damaged record keeps its keys.
The keys are listed *before* the records: a run's record is written before any of its queue
keys, so a run submitted during gc is in the record listing if its keys were seen; a run
missing from it is checked once more right before its keys go.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from ..errors import NotFoundError
from .queue_keys import CLAIMS, QUEUES, WORKERS, parse_index_key
from .records import TERMINAL, DamagedRecordError, RecordStore

__all__ = ["QueueTidy", "WORKER_STALE", "tidy_queue_keys"]

#: Seconds a worker's heartbeat key may go unchanged before gc removes it.
WORKER_STALE = 86400.0


@dataclass(frozen=True)
class QueueTidy:
    """How many queue keys gc removed (or would remove, in a dry run)."""

    index: int = 0
    claims: int = 0
    workers: int = 0

    @property
    def total(self) -> int:
        """All of them."""
        return self.index + self.claims + self.workers


def tidy_queue_keys(records: RecordStore, dry_run: bool = False, now: Optional[float] = None) -> QueueTidy:
    """Remove the queue keys described in the module docstring; returns the counts."""
    storage = records.storage
    now = time.time() if now is None else now
    index: dict[tuple[str, str], list[str]] = {}
    for key in storage.list(QUEUES):
        parsed = parse_index_key(key)
        if parsed is not None:
            index.setdefault((parsed[1], parsed[2]), []).append(key)
    claims: dict[tuple[str, str], list[str]] = {}
    for key in storage.list(CLAIMS):
        parts = key.split("/")
        if len(parts) == 4:
            claims.setdefault((parts[1], parts[2]), []).append(key)
    workers = [key for key in storage.list(WORKERS) if key.endswith(".json")]
    listed = {(exp, run_id) for exp, ids in records.all_runs().items() for run_id in ids}

    doomed_index: list[str] = []
    doomed_claims: list[str] = []
    for run in sorted(set(index) | set(claims)):
        status = _status(records, run, listed)
        if status == "gone":
            doomed_index += index.get(run, [])
            doomed_claims += claims.get(run, [])
        elif status in TERMINAL:
            doomed_index += index.get(run, [])
            doomed_claims += [k for k in claims.get(run, []) if k.endswith(".beat")]
    doomed_workers = []
    for key in workers:
        try:
            age = now - storage.info(key).mtime
        except FileNotFoundError:
            continue  # the worker stopped and removed it meanwhile
        if age > WORKER_STALE:
            doomed_workers.append(key)
    if not dry_run:
        storage.delete_many(doomed_index + doomed_claims + doomed_workers)
    return QueueTidy(len(doomed_index), len(doomed_claims), len(doomed_workers))


def _status(records: RecordStore, run: tuple[str, str], listed: set[tuple[str, str]]) -> str:
    """The run's status, ``gone`` when it has no record, "" when its record cannot be read."""
    experiment, run_id = run
    if run not in listed and not records.storage.exists(records.record_key(experiment, run_id)):
        return "gone"
    try:
        return records.read(experiment, run_id).status
    except NotFoundError:
        return "gone"
    except DamagedRecordError:
        return ""  # keep everything of a damaged run: `studio check` names it
