"""Perform one claimed attempt on this worker: materialise, run the runner process, heartbeat, fence.

The life of an attempt, after ``worker.py`` has claimed it:

1. **Materialise** under ``$STUDIOML_HOME/worker/<exp>/<run_id>/``: the workspace snapshot as
   the working folder (writable, as on the submitting machine), each ``--capture-once`` input
   from the blob cache, and one folder per ``--capture`` tag. An attempt that takes over a
   dead one first restores that attempt's last snapshots of ``--capture`` tags and of
   ``output``/``modeldir``/``tb``, so a script resuming from its latest checkpoint loses at
   most one capture interval (and its log goes on where it stopped).
2. **Run** ``python -m studio_run _queue-run FILE`` (``attempt.py``) in its own session, killed
   with the worker (``PR_SET_PDEATHSIG``); per-slot ``CUDA_VISIBLE_DEVICES``.
3. **Heartbeat** the claim every few seconds and watch the fence: a newer claim means another
   worker judged this one dead and took the run over, so the runner is killed at once and
   nothing more is written. A hard stop of the worker sends the runner SIGTERM (its final
   capture runs) and the run is *released*: back to ``queued`` and republished.
4. **Finish**: the record must be final (the runner waited for its uploads; what it could not
   upload this worker's journal publishes now). A runner that died without a final record is
   republished as a takeover of this attempt. Only then is the message acknowledged.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .. import console
from ..config import Config
from ..errors import StudioError
from ..refs import CaptureSpec
from ..runner.prepare import run_dir_of
from ..runner.request import RunRequest
from ..snapshots.blobcache import BlobCache
from ..snapshots.restore import materialize
from ..store.records import TERMINAL, RunRecord
from ..store.store import Store
from .attempt import AttemptFile
from .claims import Claims
from .jobs import Job

__all__ = ["Outcome", "perform"]

_PR_SET_PDEATHSIG = 1
_CONTINUOUS = ("output", "modeldir", "tb")
_READ_WAITS = (2.0, 5.0, 10.0, 20.0, 30.0)  # seconds between reads of the final record


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended on this worker: ``final`` (the record is), ``released`` (given back
    after a hard stop), ``fenced`` (another worker took it over) or ``lost`` (the runner died)."""

    how: str
    record: Optional[RunRecord] = None


def perform(
    config: Config,
    store: Store,
    job: Job,
    attempt: int,
    record: RunRecord,
    *,
    worker_id: str,
    gpus: Optional[str],
    beat_every: float,
    hard_stop: threading.Event,
    on_beat: Callable[[], None] = lambda: None,
) -> Outcome:
    """Run attempt ``attempt`` of ``job`` here until its record is final (or it is taken away)."""
    base = os.path.join(config.home, "worker", job.experiment, job.run_id)
    spec = _materialise(config, store, job, attempt, record, base)
    spec_path = os.path.join(base, "attempt.json")
    spec.write(spec_path)
    env = dict(os.environ, STUDIO_STORE=config.store)  # the worker's store, also when given by --store
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    config_flag = ["--config", config.source] if os.path.isfile(config.source) else []  # the worker's --config
    log_path = os.path.join(base, "runner.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "studio_run", *config_flag, "_queue-run", spec_path], cwd=spec.cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, preexec_fn=_die_with_parent,
        )
    claims = Claims(store.storage, job.experiment, job.run_id)
    fenced = released = False
    counter = 0
    while proc.poll() is None:
        counter += 1
        try:
            claims.beat(attempt, worker_id, counter)
            fenced = claims.newest() > attempt
        except (OSError, StudioError) as exc:  # a store blip: the next beat may pass
            console.warn(f"heartbeat of {job.name} attempt {attempt} failed: {exc}")
        on_beat()
        if fenced:
            console.warn(f"{job.name}: attempt {attempt} was taken over by another worker; stopping it here")
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
            return Outcome("fenced")
        if hard_stop.is_set() and not released:
            released = True
            _signal(proc.pid, signal.SIGTERM)  # the runner stops the script and makes its final capture
        try:
            proc.wait(beat_every)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(proc.pid, signal.SIGKILL)  # anything the runner left in its session
    final = _final_record(store, job)
    if claims.newest() > attempt:
        return Outcome("fenced")
    if released:
        return Outcome("released", final)
    if final.status in TERMINAL:
        return Outcome("final", final)
    console.warn(f"{job.name}: the runner of attempt {attempt} ended without a final record "
                 f"(exit {proc.returncode}); see {log_path}")
    return Outcome("lost", final)


def _final_record(store: Store, job: Job) -> RunRecord:
    """The run's record once this machine's uploads are through; a store that does not answer is
    asked again for a while (the message stays unacknowledged meanwhile)."""
    for wait in _READ_WAITS:
        try:
            store.catch_up()  # what the runner could not upload in time, from this machine's journal
            return store.records.read(job.experiment, job.run_id)
        except (OSError, StudioError) as exc:
            console.warn(f"{job.name}: reading its record failed ({exc}); trying again in {wait:g} s")
            time.sleep(wait)
    store.catch_up()
    return store.records.read(job.experiment, job.run_id)


def _materialise(config: Config, store: Store, job: Job, attempt: int, record: RunRecord, base: str) -> AttemptFile:
    """The attempt's folders on this machine, filled from the store (see the module docstring)."""
    run_dir = run_dir_of(config, job.experiment, job.run_id)
    for folder in (base, run_dir):
        if os.path.lexists(folder):
            shutil.rmtree(folder)  # an earlier attempt on this machine: start from the store's state
    workspace = os.path.join(base, "workspace")
    os.makedirs(workspace)
    art = record.artifacts.get("workspace")
    if art is not None and art.kind == "workspace" and art.digest:
        materialize(store.repo, store.repo.get_manifest(art.restore_digest), workspace)
    request = RunRequest.from_dict(job.request)
    cache = BlobCache(config.blobcache)
    once: dict[str, str] = {}
    for spec in request.captures_once:
        art = record.artifacts.get(spec.tag)
        if spec.is_url or art is None or not art.digest:
            continue
        path, _ = cache.ensure(store.repo, art.restore_digest, store.repo.get_manifest(art.restore_digest))
        once[spec.tag] = path
    captures = {spec.tag: _restore_capture(store, record, spec, base) for spec in request.captures}
    for tag in _CONTINUOUS:
        art = record.artifacts.get(tag)
        if attempt > 1 and art is not None and art.digest and art.kind == tag:
            materialize(store.repo, store.repo.get_manifest(art.restore_digest), os.path.join(run_dir, tag))
    return AttemptFile(job, attempt, workspace, captures, once)


def _restore_capture(store: Store, record: RunRecord, spec: CaptureSpec, base: str) -> str:
    """The worker-local folder of a ``--capture`` tag, holding the previous attempt's last snapshot."""
    folder = os.path.join(base, "captures", spec.tag)
    os.makedirs(folder, exist_ok=True)
    art = record.artifacts.get(spec.tag)
    if art is None or not art.digest:
        return folder
    path = materialize(store.repo, store.repo.get_manifest(art.restore_digest), folder)
    return path if art.single_file else folder


def _die_with_parent() -> None:
    """In the runner, before exec: SIGKILL when the worker dies (its script tree follows it)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the heartbeat fence still hands the run over
        pass


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _kill_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
