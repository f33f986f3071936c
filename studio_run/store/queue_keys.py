"""Where the job queue keeps its state in the store, and removing a deleted run's share of it.

The queue (``studio_run.queue``) writes three kinds of keys beside the records:

- ``queue/<NAME>/<exp>--<run_id>.json``: the index of a queue's jobs that are not final yet;
- ``claims/<exp>/<run_id>/<N>`` (and ``<N>.beat``, ``<N>.end``): the attempts of a run;
- ``workers/<worker id>.json``: each worker's own heartbeat.

The layout lives here, in the store layer, because ``studio delete`` (``RecordStore``) and
``studio gc`` (``queue_gc.py``) must remove these keys and may not import the queue layer,
which sits above the store. The queue uses the same functions, so the two never disagree.
"""

from __future__ import annotations

from typing import Iterable, Optional

from ..storage.base import Storage

__all__ = [
    "CLAIMS",
    "QUEUES",
    "WORKERS",
    "claims_prefix",
    "forget_runs",
    "index_key",
    "index_prefix",
    "parse_index_key",
    "worker_key",
]

QUEUES = "queue/"
CLAIMS = "claims/"
WORKERS = "workers/"


def index_prefix(queue: str) -> str:
    """Prefix of a queue's index of jobs not final yet."""
    return f"{QUEUES}{queue}/"


def index_key(queue: str, experiment: str, run_id: str) -> str:
    """Key of one job in its queue's index."""
    return f"{index_prefix(queue)}{experiment}--{run_id}.json"


def parse_index_key(key: str) -> Optional[tuple[str, str, str]]:
    """``(queue, experiment, run_id)`` of an index key, or None for anything else."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "queue" or not parts[2].endswith(".json"):
        return None
    experiment, sep, run_id = parts[2][:-5].rpartition("--")
    return (parts[1], experiment, run_id) if sep and experiment else None


def claims_prefix(experiment: str, run_id: str) -> str:
    """Prefix of a run's claims (one per attempt) and their heartbeats."""
    return f"{CLAIMS}{experiment}/{run_id}/"


def worker_key(worker_id: str) -> str:
    """Key of a worker's heartbeat."""
    return f"{WORKERS}{worker_id}.json"


def forget_runs(storage: Storage, experiment: str, run_ids: Optional[Iterable[str]] = None) -> int:
    """Remove the queue's keys of runs being deleted: their claims and their queue index entries
    (of every run of ``experiment`` when ``run_ids`` is None). Returns how many keys went.

    Called by ``studio delete`` after the records are gone, so a worker that still receives the
    job finds no record and drops it; keys that vanish meanwhile are what was wanted.
    """
    wanted = None if run_ids is None else set(run_ids)
    keys = []
    if wanted is None:
        keys += list(storage.list(f"{CLAIMS}{experiment}/"))
    else:
        for run_id in sorted(wanted):
            keys += list(storage.list(claims_prefix(experiment, run_id)))
    for key in storage.list(QUEUES):
        parsed = parse_index_key(key)
        if parsed is not None and parsed[1] == experiment and (wanted is None or parsed[2] in wanted):
            keys.append(key)
    if keys:
        storage.delete_many(keys)
    return len(keys)
