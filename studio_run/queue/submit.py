"""``studio run --queue NAME``: everything a local run checks and stores, then a job instead of the script.

The submitting machine does what ``studio run`` does before the script starts (``prepare``:
check the request, resolve reuses, snapshot the workspace and ``--capture-once`` inputs), then:

1. records the run as ``queued`` (queue name, hyper-parameters) and, on a remote store, waits
   until the inputs and that record are uploaded: a worker elsewhere must find both;
2. writes the job into the queue's index in the store (``jobs.py``), which is what lets a
   worker's sweep find a job whose message a broker lost;
3. publishes the job (JSON) through Celery. If the broker refuses, the index entry and the
   record are removed again (the inputs stay until ``studio gc``): nothing half-queued remains.

Refused before anything is stored: a store on this machine while the broker is elsewhere
(workers could not read it), a script outside the working folder (only the workspace travels)
and a secret in the script's arguments (a message must never carry one).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from typing import Any, Optional
from urllib.parse import urlsplit

from .. import console
from ..config import Config
from ..errors import StoreError, StudioError, UsageError
from ..hyperparams import describe
from ..redact import redact_args
from ..runner.prepare import check_request, generated_name, prepare
from ..runner.request import RunRequest
from ..store.open import open_store
from ..store.records import RunRecord, new_run_id
from ..store.store import Store
from .brokers import broker_kind, celery_app, check_queue_name, display_url, ensure_reachable, publish, resolve_broker
from .jobs import TASK_NAME, Job, index_key

__all__ = ["broker_is_local", "portable_request", "submit"]

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", ""}


def submit(
    config: Config,
    request: RunRequest,
    *,
    queue: str,
    broker: Optional[str] = None,
    retries: int = 2,
    points: Optional[list[dict[str, Any]]] = None,
) -> int:
    """Queue one run (or one per hyper-parameter point, all of one experiment) on ``queue``;
    returns the exit code. ``request.lifetime`` bounds how long a job may wait to start."""
    check_request(request)
    check_queue_name(queue)
    request = portable_request(request)
    if retries < 0:
        raise UsageError(f"--retries {retries}: give 0 or more")
    url = resolve_broker(broker, config, config.home)
    store = open_store(config, connect=False)
    try:
        if not store.is_remote and not broker_is_local(url):
            raise UsageError(
                f"the store {store.url} is on this machine, but the broker {display_url(url)} is not: workers "
                "elsewhere could not read the inputs; set `store:` in config.yaml (or --store) to an s3://, gs:// "
                "or sftp:// URL that the workers can reach")
        ensure_reachable(url)
        if store.is_remote:
            store.connect()  # workers must find the inputs: a store that does not answer fails now
        app = celery_app(url)
        if points:
            request = replace(request, experiment=request.experiment or generated_name(new_run_id()))
        for point in points or [{}]:
            _submit_one(config, store, app, request.with_point(point) if point else request, queue, retries)
    finally:
        store.close()
    return 0


def _submit_one(config: Config, store: Store, app: Any, request: RunRequest, queue: str, retries: int) -> None:
    prepared = prepare(config, store, request, publish=False)
    record = prepared.record
    point = dict(request.hyperparameters)
    record.status, record.queue, record.hyperparameters = "queued", queue, point
    record.pid = record.pid_started = None  # nothing runs it yet: never shown as lost
    try:
        store.publish(record)
    finally:
        if prepared.store_lock is not None:
            prepared.store_lock.release()
    if store.is_remote and not store.syncer().finish(config.upload_wait):
        _forget(store, record, None)
        raise StoreError(f"the inputs of {record.experiment} did not reach {store.url}; nothing was queued; "
                         "check the store and try again")
    now = time.time()
    job = Job(
        experiment=record.experiment, run_id=record.run_id, queue=queue, store=store.url,
        request=request.to_dict(), inputs={t: a.restore_digest for t, a in record.artifacts.items()},
        hyperparameters=dict(point), retries=retries, submitted_at=now,
        expires_at=None if request.lifetime is None else now + request.lifetime,
    )
    key = index_key(queue, record.experiment, record.run_id)
    store.storage.write_bytes(key, job.encode())
    try:
        publish(app, queue, TASK_NAME, job.to_dict())
    except Exception as exc:  # noqa: BLE001 - any broker failure: undo, then one line
        _forget(store, record, key)
        if isinstance(exc, StudioError):
            raise
        raise StudioError(f"could not queue {record.experiment} on {queue!r} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); nothing was queued") from None
    ids = store.records.run_ids(record.experiment)
    version = ids.index(record.run_id) + 1 if record.run_id in ids else len(ids)
    values = describe(point) if point else ""
    sys.stdout.write(f"{record.experiment} v{version} run {record.run_id} queued on {queue}"
                     f"{' (' + values + ')' if values else ''}\n")
    sys.stdout.flush()


def _forget(store: Store, record: RunRecord, key: Optional[str]) -> None:
    """Undo a submission that could not be completed: index entry, then the record."""
    for name in ([key] if key else []) + [store.records.record_key(record.experiment, record.run_id),
                                          store.records.env_key(record.experiment, record.run_id)]:
        try:
            store.storage.delete(name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            console.warn(f"could not remove {name} after a failed submission: {exc}")


def portable_request(request: RunRequest) -> RunRequest:
    """The request as a worker can run it: the script relative to the working folder (only the
    workspace travels), and no secret in the script's arguments (messages never carry one)."""
    if redact_args(request.args) != list(request.args):
        raise UsageError("a script argument holds a secret (a --*key/--*token/--*password value or a URL "
                         "password); a queued job never carries one: give it to the workers through their "
                         "environment or config and read it there")
    if request.module is not None or not request.script:
        return request
    path = os.path.normpath(os.path.join(request.cwd, request.script))
    rel = os.path.relpath(path, request.cwd)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise UsageError(f"script {request.script} is outside the working folder {request.cwd}; only that "
                         "folder travels to a worker: run studio from a folder that holds the script")
    return replace(request, script=rel)



def broker_is_local(url: str) -> bool:
    """Whether the broker lives on this machine (a file transport, or a server on loopback)."""
    if broker_kind(url) == "sqlite" or url.lower().startswith(("filesystem:", "memory:")):
        return True
    return (urlsplit(url).hostname or "") in _LOCAL_HOSTS
