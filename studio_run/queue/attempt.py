"""One attempt of a queued run, inside the runner process a worker starts for it.

The worker (``perform.py``) materialises the job's folders and writes an *attempt file*:
the job, the attempt number, and where each artifact lives on this machine (the workspace as
the working folder, each ``--capture`` tag's worker-local folder, each ``--capture-once`` input
in the blob cache). ``run_attempt`` turns that into the ``PreparedRun`` a local ``studio run``
would have made and hands it to the same ``execute``: output tee, periodic and final captures,
uploads from ``fs_tracker.upload_file``, the record. Only the paths differ, so
``fs_tracker.get_artifact('weights')`` returns the worker's folder for that tag.

It runs as a child process (``python -m studio_run _queue-run FILE``) in its own session, so
that the script's whole process tree belongs to it and dies with it, and a worker killed with
-9 takes its runner down (``PR_SET_PDEATHSIG``) instead of leaving a run nobody heartbeats.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import Config
from ..refs import CaptureSpec
from ..runner.execute import execute
from ..runner.prepare import PreparedRun
from ..runner.request import RunRequest
from ..store.open import open_store
from .jobs import Job

__all__ = ["AttemptFile", "run_attempt"]


@dataclass(frozen=True)
class AttemptFile:
    """What the worker hands its runner process: the job and this machine's paths for it."""

    job: Job
    attempt: int
    cwd: str  # the materialised workspace: the script's working folder
    captures: dict[str, str] = field(default_factory=dict)  # --capture tag -> worker-local path
    captures_once: dict[str, str] = field(default_factory=dict)  # --capture-once tag -> blob cache path

    def write(self, path: str) -> None:
        """Write it (JSON) where the runner process will read it."""
        data = {"job": self.job.to_dict(), "attempt": self.attempt, "cwd": self.cwd,
                "captures": self.captures, "captures_once": self.captures_once}
        with open(path, "w") as f:
            json.dump(data, f)

    @classmethod
    def read(cls, path: str) -> "AttemptFile":
        """Inverse of ``write``."""
        with open(path) as f:
            data: dict[str, Any] = json.load(f)
        return cls(Job.from_dict(data["job"]), int(data["attempt"]), str(data["cwd"]),
                   dict(data.get("captures") or {}), dict(data.get("captures_once") or {}))

    def request(self) -> RunRequest:
        """The job's request with this machine's paths."""
        request = RunRequest.from_dict(self.job.request)
        captures = tuple(CaptureSpec(self.captures.get(c.tag, c.path), c.tag, given=c.given) for c in request.captures)
        once = tuple(c if c.is_url else CaptureSpec(self.captures_once.get(c.tag, c.path), c.tag, given=c.given)
                     for c in request.captures_once)
        return replace(request, cwd=self.cwd, captures=captures, captures_once=once)


def run_attempt(config: Config, path: str) -> int:
    """Run the attempt described in ``path`` as ``studio run`` would; returns its exit code."""
    spec = AttemptFile.read(path)
    job = spec.job
    store = open_store(config)
    try:
        record = store.records.read(job.experiment, job.run_id)
        record.status, record.attempt, record.started_at = "running", spec.attempt, time.time()
        record.ended_at = record.exit_code = None
        prepared = PreparedRun(spec.request(), record, list(record.reuses))
        os.chdir(spec.cwd)
        return execute(config, store, prepared)
    finally:
        store.close()
