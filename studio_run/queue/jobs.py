"""A queued job as one JSON value, and where the queue keeps its state in the store.

A job is what travels through the broker: ids, the store's URL (redacted), the run request
(``RunRequest.to_dict``), the digests of the inputs snapshotted at submit time and the retry
budget. It never holds a credential (workers use their own) and is never pickled: Celery is
told to accept JSON only, and ``Job.from_dict`` refuses anything that is not one of ours.

The broker is only a wake-up: what a job *is* lives in the store, beside its record, so that a
message lost by a broker (an embedded transport killed with -9, a visibility timeout) is found
again by a worker's sweep, and a message delivered twice is recognised by the run's claims:

- ``queue/<NAME>/<exp>--<run_id>.json``: the index of the queue's jobs that are not final yet
  (its value is the job itself), so workers never scan every record.
- ``claims/<exp>/<run_id>/<N>``: attempt N of the run, created exclusively by the worker that
  runs it (``claims.py``); ``<N>.beat`` its heartbeat, ``<N>.end`` how that attempt ended.
- ``workers/<worker id>.json``: each worker's own heartbeat (host, slots, current runs).

The key layout is defined in ``store/queue_keys.py`` (``studio delete`` and ``gc`` remove these
keys from the store layer) and offered here too, where the queue's modules look for it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

from ..store.queue_keys import claims_prefix, index_key, index_prefix, parse_index_key, worker_key

__all__ = [
    "FORMAT",
    "Job",
    "TASK_NAME",
    "claims_prefix",
    "index_key",
    "index_prefix",
    "job_from_message",
    "parse_index_key",
    "worker_key",
]

FORMAT = 1  # bumped when a key changes meaning; ``from_dict`` refuses newer jobs
TASK_NAME = "studio.run"  # the Celery task name studio's jobs are published under


@dataclass(frozen=True)
class Job:
    """One queued run: everything a worker needs besides its own config and credentials."""

    experiment: str
    run_id: str
    queue: str
    store: str  # the store's URL, redacted: a worker opens it with its own config's options
    request: dict[str, Any]  # ``RunRequest.to_dict()``: script, args, captures, reuses, cwd
    inputs: dict[str, str] = field(default_factory=dict)  # tag -> manifest digest (workspace, capture-once)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    retries: int = 2  # how many times a run whose worker died is taken over
    submitted_at: float = 0.0
    expires_at: Optional[float] = None  # ``--lifetime``: not started by then -> ``expired``
    takeover: int = 0  # N when a sweep found attempt N's worker dead and republished the job

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values only."""
        return {
            "format": FORMAT, "kind": TASK_NAME, "experiment": self.experiment, "run_id": self.run_id,
            "queue": self.queue, "store": self.store, "request": dict(self.request),
            "inputs": dict(self.inputs), "hyperparameters": dict(self.hyperparameters),
            "retries": self.retries, "submitted_at": self.submitted_at, "expires_at": self.expires_at,
            "takeover": self.takeover,
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Job":
        """Inverse of ``to_dict``; ``ValueError`` for anything that is not a studio job this
        version understands (a foreign task on the same queue, a newer format)."""
        if not isinstance(data, Mapping) or data.get("kind") != TASK_NAME:
            raise ValueError("not a studio job")
        if int(data.get("format", FORMAT)) > FORMAT:
            raise ValueError(f"job format {data['format']} is newer than this studio understands; upgrade the worker")
        try:
            expires = data.get("expires_at")
            job = cls(
                experiment=str(data["experiment"]), run_id=str(data["run_id"]), queue=str(data["queue"]),
                store=str(data["store"]), request=dict(data["request"]), inputs=dict(data.get("inputs") or {}),
                hyperparameters=dict(data.get("hyperparameters") or {}), retries=int(data.get("retries", 2)),
                submitted_at=float(data.get("submitted_at") or 0.0),
                expires_at=None if expires is None else float(expires), takeover=int(data.get("takeover") or 0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed studio job: {exc}") from None
        return job

    def encode(self) -> bytes:
        """The job as stored in the queue index (canonical JSON)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> "Job":
        """Inverse of ``encode``; ``ValueError`` when the bytes are not a job."""
        try:
            parsed = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("not valid JSON") from None
        return cls.from_dict(parsed)

    def taking_over(self, attempt: int) -> "Job":
        """This job, republished to take over ``attempt`` whose worker stopped beating."""
        return replace(self, takeover=attempt)

    def expired(self, now: Optional[float] = None) -> bool:
        """Whether ``--lifetime`` has passed (a job never started by then is dropped)."""
        return self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at

    @property
    def name(self) -> str:
        """``<exp>--<run_id>``: the job's name in the queue index."""
        return f"{self.experiment}--{self.run_id}"


def job_from_message(body: Any) -> Job:
    """The job in a Celery message body (protocol 2: ``[args, kwargs, embed]``, JSON-decoded).

    The job is the task's single argument, positional or ``job=``; ``ValueError`` otherwise.
    """
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            raise ValueError("message body is not JSON") from None
    if isinstance(body, (list, tuple)) and len(body) >= 2:
        args, kwargs = body[0], body[1]
        if isinstance(args, (list, tuple)) and args:
            return Job.from_dict(args[0])
        if isinstance(kwargs, Mapping):
            for value in kwargs.values():
                return Job.from_dict(value)
    if isinstance(body, Mapping):  # a bare job (a publisher that did not wrap it)
        return Job.from_dict(body)
    raise ValueError("message holds no studio job")
