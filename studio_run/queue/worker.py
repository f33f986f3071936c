"""``studio worker``: take jobs from a queue, one per slot, and see each through to a final record.

The life of a job on a worker, as the verbs below name it:

- **receive**: each slot holds its own broker connection and consumes with Celery's safe
  settings (``celery_app``: JSON only, late acknowledgement, prefetch 1), through kombu, so any
  broker Celery supports works. A slot holds at most one unacknowledged message.
- **decide** (``dispatch.py``): the store, not the broker, says whether to run. A final run, or one
  whose newest attempt is alive elsewhere, is dropped; a run never started is claimed as attempt
  1; a run released by a stopped worker, or republished by a sweep that found its worker dead
  (``job.takeover``), is claimed as the next attempt. Claims are exclusive (``claims.py``).
- **perform** (``perform.py``), then **acknowledge**: only once the record is final, given back,
  or taken over. A delivery that was dropped is acknowledged at once: the store remembers the job.
- **sweep** (``sweep.py``) and **heartbeat** beside them: the worker's own heartbeat under
  ``workers/`` (for ``studio queue``), and a sweep of the queue's index every few seconds.

Signals: the first SIGTERM or Ctrl-C stops taking jobs and lets running ones finish; a second
stops them (final capture) and gives them back to the queue.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from .. import console
from ..config import Config
from ..errors import StudioError
from ..store.open import open_store
from ..store.store import Store
from .brokers import (
    celery_app,
    display_url,
    ensure_reachable,
    job_queue,
    lease_interval,
    poll_often,
    prune_embedded,
    publish,
    renew_lease,
)
from .claims import Claims
from .dispatch import decide, retire
from .jobs import TASK_NAME, Job, job_from_message, worker_key
from .perform import perform
from .sweep import Sweep
from .timing import Timing

__all__ = ["Worker"]


@dataclass
class _Current:
    """What a slot is doing, for the worker's heartbeat."""

    experiment: str
    run_id: str
    attempt: int
    since: float = field(default_factory=time.time)


class Worker:
    """A worker process: ``slots`` consumers of ``queue`` sharing one config and store."""

    def __init__(self, config: Config, broker_url: str, queue: str, slots: int,
                 gpus: Optional[list[str]] = None, timing: Optional[Timing] = None) -> None:
        self.config, self.broker_url, self.queue, self.slots = config, broker_url, queue, slots
        self.gpus = gpus
        self.timing = timing or Timing.from_env()
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.stopping = threading.Event()
        self.hard_stop = threading.Event()
        self.current: dict[int, _Current] = {}
        self.idle_since: dict[int, float] = {}
        self.started_at = time.time()

    # the worker's life
    def run(self) -> int:
        """Serve until stopped by signals; returns the exit code."""
        ensure_reachable(self.broker_url)
        prune_embedded(self.broker_url)  # the embedded broker's file keeps delivered rows otherwise
        self.app = celery_app(self.broker_url)
        self.beat_every = min(self.timing.heartbeat, lease_interval(self.app))
        store = open_store(self.config)
        try:
            self._install_signals()
            threads = [threading.Thread(target=self._slot, args=(i,), name=f"studio-slot-{i}", daemon=True)
                       for i in range(self.slots)]
            for thread in threads:
                thread.start()
            console.info(f"worker {self.id} on queue {self.queue!r} ({self.slots} slot(s)) via "
                         f"{display_url(self.broker_url)}, store {store.url}")
            sweep = Sweep(store, self.queue, self.timing, self._republish, self._idle_for)
            next_sweep = 0.0
            while any(t.is_alive() for t in threads):
                self._heartbeat(store)
                if time.monotonic() >= next_sweep and not self.stopping.is_set():
                    sweep.run_once()
                    next_sweep = time.monotonic() + self.timing.sweep
                for thread in threads:
                    thread.join(self.timing.heartbeat / max(len(threads), 1))
            try:
                store.storage.delete(worker_key(self.id))
            except OSError:
                pass
            console.info(f"worker {self.id} stopped")
            return 0
        finally:
            store.close()

    def _install_signals(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            if not self.stopping.is_set():
                self.stopping.set()
                busy = len(self.current)
                console.info(f"stopping: no new jobs; {busy} running job(s) finish first "
                             "(send the signal again to stop them and give them back to the queue)")
            else:
                self.hard_stop.set()
                console.info("stopping the running jobs (final capture); they go back to the queue")

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _heartbeat(self, store: Store) -> None:
        data = {
            "worker": self.id, "host": socket.gethostname(), "pid": os.getpid(), "queue": self.queue,
            "slots": self.slots, "at": time.time(), "started_at": self.started_at,
            "stopping": self.stopping.is_set(),
            "runs": [{"experiment": c.experiment, "run_id": c.run_id, "attempt": c.attempt, "slot": slot,
                      "since": c.since} for slot, c in sorted(self.current.items())],
        }
        try:
            store.storage.write_bytes(worker_key(self.id), json.dumps(data, sort_keys=True).encode())
        except (OSError, StudioError) as exc:
            console.warn(f"worker heartbeat failed: {exc}")

    def _idle_for(self) -> float:
        """How long some slot of this worker has been waiting for a job (0 when all are busy)."""
        now = time.monotonic()
        waits = [now - since for slot, since in self.idle_since.items() if slot not in self.current]
        return max(waits) if waits and not self.stopping.is_set() else 0.0

    def _renew(self, message: Any) -> None:
        """Keep a Redis broker from handing the running job out again (a lease; see ``brokers``)."""
        try:
            renew_lease(self.app, getattr(message, "delivery_tag", None))
        except Exception as exc:  # noqa: BLE001 - a redelivery would only be dropped by the claims
            console.warn(f"could not renew the job's lease ({type(exc).__name__})")

    def _republish(self, job: Job) -> None:
        publish(self.app, self.queue, TASK_NAME, job.to_dict())

    # one slot
    def _slot(self, slot: int) -> None:
        from kombu.exceptions import KombuError

        store = open_store(self.config)
        gpus = _slot_gpus(self.gpus, slot, self.slots)
        try:
            while not self.stopping.is_set():
                try:
                    self._consume(store, slot, gpus)
                except (OSError, KombuError, StudioError) as exc:
                    console.warn(f"slot {slot}: {type(exc).__name__}: {exc}; reconnecting to the broker")
                    self.stopping.wait(2.0)
                except Exception as exc:  # noqa: BLE001 - a slot must outlive one job's surprise
                    console.warn(f"slot {slot}: unexpected {type(exc).__name__}: {exc}; the job's claim goes "
                                 "stale and another attempt takes it over")
                    self.stopping.wait(2.0)
        finally:
            store.close()

    def _consume(self, store: Store, slot: int, gpus: Optional[str]) -> None:
        inbox: list[Any] = []
        queue = job_queue(self.queue)
        with self.app.connection_for_read(heartbeat=0) as conn:
            conn.ensure_connection(max_retries=1)
            poll_often(conn)
            with conn.Consumer([queue], accept=["json"], prefetch_count=1,
                               callbacks=[lambda body, message: inbox.append((body, message))],
                               on_decode_error=_drop_undecodable):
                self.idle_since[slot] = time.monotonic()
                while not self.stopping.is_set():
                    try:
                        conn.drain_events(timeout=1.0)
                    except socket.timeout:
                        continue
                    while inbox:
                        body, message = inbox.pop(0)
                        if self.stopping.is_set():  # arrived as the worker began to stop: not taken
                            _requeue(message)
                            continue
                        self._receive(store, slot, gpus, body, message)
                        self.idle_since[slot] = time.monotonic()

    def _receive(self, store: Store, slot: int, gpus: Optional[str], body: Any, message: Any) -> None:
        try:
            job = job_from_message(body)
        except ValueError as exc:
            console.warn(f"dropped a message that is not a studio job ({exc})")
            _ack(message)
            return
        try:
            self._handle(store, slot, gpus, job, message)
        finally:
            self.current.pop(slot, None)
            _ack(message)

    def _handle(self, store: Store, slot: int, gpus: Optional[str], job: Job, message: Any) -> None:
        decision = decide(store, job, self.id)
        attempt, record = decision.attempt, decision.record
        if not attempt or record is None:
            console.info(f"slot {slot}: {job.name}: {decision.why}; delivery dropped")
            return
        self.current[slot] = _Current(job.experiment, job.run_id, attempt)
        console.info(f"slot {slot}: {job.name} attempt {attempt} starting")
        outcome = perform(self.config, store, job, attempt, record, worker_id=self.id, gpus=gpus,
                          beat_every=self.beat_every, hard_stop=self.hard_stop,
                          on_beat=lambda: self._renew(message))
        claims = Claims(store.storage, job.experiment, job.run_id)
        if outcome.how != "lost":  # what the store now holds: the folders on this machine go
            shutil.rmtree(os.path.join(self.config.home, "worker", job.experiment, job.run_id), ignore_errors=True)
        if outcome.how == "final":
            retire(store, job)
            status = outcome.record.status if outcome.record else "?"
            console.info(f"slot {slot}: {job.name} attempt {attempt} {status}")
        elif outcome.how == "released" and outcome.record is not None:
            back = outcome.record
            back.status, back.ended_at, back.exit_code, back.pid, back.pid_started = "queued", None, None, None, None
            store.records.write(back)
            claims.end(attempt, "released")
            self._republish(job.taking_over(0))
            console.info(f"slot {slot}: {job.name} attempt {attempt} given back to the queue")
        elif outcome.how == "lost":
            self._republish(job.taking_over(attempt))


def _slot_gpus(gpus: Optional[list[str]], slot: int, slots: int) -> Optional[str]:
    """``CUDA_VISIBLE_DEVICES`` of one slot: the GPUs split evenly between slots."""
    if gpus is None:
        return None
    per = len(gpus) // slots
    return ",".join(gpus[slot * per:(slot + 1) * per])


def _ack(message: Any) -> None:
    try:
        message.ack()
    except Exception as exc:  # noqa: BLE001 - a channel the broker closed: it redelivers, the store fences
        console.warn(f"could not acknowledge a message ({type(exc).__name__}); a redelivery will be dropped")


def _requeue(message: Any) -> None:
    try:
        message.requeue()
    except Exception as exc:  # noqa: BLE001 - unacknowledged, it comes back when the connection closes
        console.warn(f"could not hand a message back ({type(exc).__name__})")


def _drop_undecodable(message: Any, exc: Exception) -> None:
    console.warn(f"dropped a message that is not JSON ({type(exc).__name__}); studio never accepts pickle")
    _ack(message)
