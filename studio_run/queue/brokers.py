"""Which broker carries studio's jobs, and the one place where Celery is configured.

Celery and kombu do the delivery; this module pins the settings that make it safe for jobs
that run for hours and must never be lost or run twice (each measured with celery and kombu 5.7,
redis-server 7 and RabbitMQ 3.10), and nothing else in studio sets a Celery option:

- late acknowledgement, requeue when a worker dies, one unacknowledged job per slot;
- JSON only: a pickle message is refused, never unpickled;
- durable queues and persistent messages (RabbitMQ), ``studio.NAME`` queues so that studio's
  queues never mix with another Celery application's on a shared broker;
- publishing to a broker that is down fails within seconds with one line naming it;
- Redis: a job is *leased*. kombu hands an unacknowledged message back to the queue once it is
  older than ``visibility_timeout`` (here ``LEASE_TIMEOUT``), whether or not its worker still
  runs it (a days-long job would be started again, and again). The worker holding a job calls
  ``renew_lease`` every ``LEASE_RENEW`` seconds, which moves the job's delivery time forward in
  kombu's own unacked index, so a live job is never handed out again, and a dead worker's job
  is back in the queue ``LEASE_TIMEOUT`` + ``RESTORE_INTERVAL`` seconds after its last renewal;
- RabbitMQ requeues a dead worker's jobs itself (its connection closes). Its ``consumer_timeout``
  (30 minutes by default; on 3.10 only settable node-wide in ``rabbitmq.conf``) closes the channel
  of a job that runs longer and redelivers it while it still runs: studio copes through the run
  record (a delivery of a run that is running with a fresh heartbeat elsewhere is not started),
  and the README asks for ``consumer_timeout`` above the longest job.

The embedded default, used when no broker is configured, is kombu's SQLAlchemy transport on a
SQLite file under the studio home (``sqla+sqlite:///HOME/queue/broker.sqlite``): nothing to start,
one machine, many workers. A message survives every restart, but one taken by a consumer that
is then killed with ``-9`` stays invisible in the file forever (kombu puts unacknowledged
messages back only on a clean close); the queue's sweep re-publishes such runs from their
records in the store. kombu never deletes a delivered row either: ``prune_embedded`` does.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Optional

from ..config import Config, parse_duration
from ..errors import MissingDependencyError, StudioError, UsageError
from ..redact import redact_text

if TYPE_CHECKING:  # pragma: no cover - typing only
    import celery
    import kombu

__all__ = [
    "BROKER_ENV",
    "BrokerUnreachableError",
    "EMBEDDED_POLL",
    "LEASE_ENV",
    "LEASE_RENEW",
    "LEASE_TIMEOUT",
    "PUBLISH_TIMEOUT",
    "QUEUE_PREFIX",
    "RESTORE_INTERVAL",
    "broker_kind",
    "celery_app",
    "check_queue_name",
    "display_url",
    "embedded_url",
    "ensure_reachable",
    "job_queue",
    "lease_interval",
    "poll_often",
    "prune_embedded",
    "publish",
    "renew_lease",
    "resolve_broker",
    "worker_options",
]

BROKER_ENV = "STUDIO_BROKER"
QUEUE_PREFIX = "studio."
# Redis: an unacknowledged job whose lease was not renewed for this long goes back to the queue.
LEASE_TIMEOUT = 40.0
# How often the worker holding a job renews its lease (several renewals fit in one timeout).
LEASE_RENEW = 5.0
LEASE_ENV = "STUDIO_LEASE_TIMEOUT"
# How often each live Redis worker looks for expired leases (kombu's restore sweep, unthrottled).
RESTORE_INTERVAL = 5.0
# Seconds a publish (connect + send, with its retries) may take before it fails.
PUBLISH_TIMEOUT = 3.0
# Seconds between the embedded broker's polls of its SQLite file, per slot (kombu's default: 1).
EMBEDDED_POLL = 0.2
_HEARTBEAT = 30  # seconds: AMQP heartbeat, so a dead peer is noticed within a minute
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
_INSTALL = "pip install 'studio-run[queue]'"


class BrokerUnreachableError(StudioError):
    """The broker did not answer (down, wrong address, refused credentials)."""


def embedded_url(home: str) -> str:
    """The broker used when none is configured: a SQLite file under the studio home."""
    return "sqla+sqlite:///" + os.path.join(os.path.abspath(home), "queue", "broker.sqlite")


def resolve_broker(option: Optional[str], config: Config, home: str) -> str:
    """``--broker URL``, else ``$STUDIO_BROKER``, else ``queue.broker`` in config.yaml, else the
    embedded default under ``home``. A value without ``scheme://`` is refused (a bare path or
    host name would be guessed at, and a guess sends jobs nowhere)."""
    for value, what in ((option, "--broker"), (os.environ.get(BROKER_ENV), BROKER_ENV),
                        (config.broker, f"{config.source}: queue.broker")):
        if value:
            if "://" not in value:
                shown = "...@" + value.rsplit("@", 1)[1] if "@" in value else value  # no password shown
                raise UsageError(f"{what} {shown!r} is not a broker URL; write e.g. "
                                 "redis://HOST:6379/0 or amqp://USER@HOST:5672//")
            return value
    return embedded_url(home)


def display_url(url: str) -> str:
    """``url`` safe to print or store: any password replaced by ``***``."""
    return redact_text(url)


def broker_kind(url: str) -> str:
    """``redis``, ``amqp``, ``sqs``, ``gcpubsub``, ``sqlite`` (the embedded kind) or the scheme."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "redis+socket", "sentinel"):
        return "redis"
    if scheme in ("amqp", "amqps", "pyamqp", "librabbitmq"):
        return "amqp"
    if scheme.startswith("sqla+") or scheme in ("sqlalchemy",):
        return "sqlite" if "sqlite" in scheme else "sql"
    return scheme


def check_queue_name(name: str) -> str:
    """``name`` when it can name a queue on every broker (letters, digits, ``_.-``; SQS and
    Pub/Sub refuse the rest), else a ``UsageError`` saying so."""
    if not _QUEUE_NAME.match(name or ""):
        raise UsageError(f"queue name {name!r} is not allowed; use letters, digits, '_', '.' and '-' "
                         "(at most 100, starting with a letter or digit)")
    return name


def _lease_timeout(value: Optional[float]) -> float:
    if value is None:
        text = os.environ.get(LEASE_ENV)
        if not text:
            return LEASE_TIMEOUT
        value = parse_duration(text, LEASE_ENV)
    if value <= 0:
        raise UsageError(f"lease timeout must be positive, not {value}")
    return float(value)


def _transport_options(url: str, lease_timeout: float = LEASE_TIMEOUT) -> dict[str, Any]:
    kind = broker_kind(url)
    if kind == "redis":
        return {
            "visibility_timeout": lease_timeout,
            "unacked_restore_interval": RESTORE_INTERVAL,
            "unacked_restore_throttle": 1,  # sweep on every interval, not one in ten
            "socket_connect_timeout": PUBLISH_TIMEOUT,
            "socket_timeout": 30.0,  # above kombu's 1 s BRPOP wait; a hung server still fails
            "max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 1,
        }
    if kind == "amqp":
        return {"confirm_publish": True}  # the broker has the message on disk when publish returns
    if kind == "sqs":
        # SQS cannot be leased by kombu: the longest visibility (12 h) keeps a running job from being
        # handed out again for that long; the run records cover a dead worker's job sooner.
        return {"visibility_timeout": 43200, "wait_time_seconds": 10}
    if kind == "sqlite":
        # Everything here goes to SQLAlchemy's create_engine: SQLite waits for another process's
        # write lock instead of failing at once. (How often it is polled: ``poll_often``.)
        return {"connect_args": {"timeout": 30}}
    return {}


def celery_app(broker_url: str, *, name: str = "studio", lease_timeout: Optional[float] = None) -> "celery.Celery":
    """A Celery application on ``broker_url`` with studio's delivery settings (module docstring).

    ``lease_timeout`` (Redis; default ``$STUDIO_LEASE_TIMEOUT``, else ``LEASE_TIMEOUT``) is how long
    a job whose worker stopped renewing it waits before it is handed out again; tests shorten it."""
    try:
        from celery import Celery
    except ImportError as exc:
        raise MissingDependencyError(f"the job queue needs Celery ({exc}): {_INSTALL}") from None
    if broker_kind(broker_url) in ("sqlite", "sql"):
        _require("sqlalchemy", "the embedded broker needs SQLAlchemy")
        _ensure_folder(broker_url)
    app = Celery(name, broker=broker_url, set_as_current=False)
    app.conf.update(
        accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        result_accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,  # a failed job is a result (the record says so)
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,  # a broker blip never kills a run
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,  # a worker waits for its broker to come back
        broker_connection_timeout=PUBLISH_TIMEOUT,
        broker_heartbeat=_HEARTBEAT,
        broker_transport_options=_transport_options(broker_url, _lease_timeout(lease_timeout)),
        broker_pool_limit=2,
        task_default_delivery_mode="persistent",
        task_create_missing_queues=True,
        task_publish_retry=True,
        # Two connection attempts of PUBLISH_TIMEOUT each at most: a down broker fails the submit fast.
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5,
                                   "interval_max": 1},
        task_send_sent_event=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,  # studio stops runs through the store, not Celery's revoke
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        enable_utc=True,
    )
    return app


def job_queue(name: str) -> "kombu.Queue":
    """The durable broker queue behind studio queue ``name`` (``studio.NAME``, direct exchange)."""
    from kombu import Exchange, Queue

    full = QUEUE_PREFIX + check_queue_name(name)
    return Queue(full, Exchange(full, type="direct", durable=True), routing_key=full, durable=True)


def publish(app: "celery.Celery", queue: str, task_name: str, payload: dict) -> str:
    """Send one job (``payload``, JSON, the task's single argument) to ``queue``; its message id.

    Raises ``BrokerUnreachableError`` (one line, password redacted) when the broker does not take
    it within about ``PUBLISH_TIMEOUT`` seconds; the caller then records nothing as queued."""
    import json

    try:
        text = json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"job payload is not JSON ({exc})") from None
    if redact_text(text) != text:  # a URL with a password: the worker must use its own credentials
        raise UsageError("a job would carry a password inside a URL; give workers their own credentials "
                         "(environment, config or SSH keys) and leave the password out of the URL")
    target = job_queue(queue)
    try:
        result = app.send_task(task_name, args=[payload], queue=target, routing_key=target.routing_key,
                               exchange=target.exchange, serializer="json")
    except Exception as exc:  # kombu/redis/amqp each raise their own connection errors
        if isinstance(exc, StudioError):
            raise
        raise _unreachable(app.conf.broker_url, exc) from None
    return str(result.id)


def ensure_reachable(broker_url: str, timeout: float = 5.0) -> None:
    """Connect to the broker once; ``BrokerUnreachableError`` with a one-line fix if it fails."""
    kind = broker_kind(broker_url)
    if kind in ("sqlite", "sql"):
        _require("sqlalchemy", "the embedded broker needs SQLAlchemy")
        _ensure_folder(broker_url)
    try:
        from kombu import Connection
    except ImportError as exc:
        raise MissingDependencyError(f"the job queue needs Celery ({exc}): {_INSTALL}") from None
    options = _transport_options(broker_url)
    if kind == "redis":
        options["socket_connect_timeout"] = timeout
        options["socket_timeout"] = timeout
    try:
        with Connection(broker_url, connect_timeout=timeout, heartbeat=0, transport_options=options) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
            conn.channel().close()  # the virtual transports (SQLite) connect only here
    except Exception as exc:
        if isinstance(exc, StudioError):
            raise
        raise _unreachable(broker_url, exc) from None


def renew_lease(app: "celery.Celery", delivery_tag: Optional[str]) -> bool:
    """Keep the job with ``delivery_tag`` (the task request's ``properties['delivery_tag']``) from
    being handed out again while its worker still runs it; call every ``LEASE_RENEW`` seconds.

    Only Redis needs it (RabbitMQ and the embedded broker never hand out a held job; SQS and
    Pub/Sub: see the README). False means the lease was already lost: the job went back to the
    queue (the run record keeps a second delivery from starting while this one lives)."""
    if broker_kind(app.conf.broker_url) != "redis" or not delivery_tag:
        return True
    import time

    options = app.conf.broker_transport_options or {}
    index = options.get("unacked_index_key", "unacked_index")
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        # XX: only an entry that still exists (an acked or restored job must not come back).
        changed = client.zadd(index, {delivery_tag: time.time()}, xx=True, ch=True)
    return bool(changed)


def poll_often(conn: "kombu.Connection") -> None:
    """Make a consumer's connection poll every ``EMBEDDED_POLL`` seconds when its transport polls.

    The embedded broker has no push: kombu's SQLAlchemy transport polls the file once a second
    by default, which was half a second of every job's start on an idle worker, on average. A
    poll is one indexed SELECT on a local file (an idle one-slot worker measured 1.5 % of a core). The
    transport hands its options to ``create_engine``, so the interval is set on the transport.
    """
    if broker_kind(conn.as_uri()) == "sqlite":
        conn.transport.polling_interval = EMBEDDED_POLL


def lease_interval(app: "celery.Celery") -> float:
    """Seconds between two ``renew_lease`` calls for a job of ``app``: ``LEASE_RENEW``, or an
    eighth of a shortened lease timeout (so several renewals may fail before the lease expires)."""
    timeout = (app.conf.broker_transport_options or {}).get("visibility_timeout", LEASE_TIMEOUT)
    return max(0.25, min(LEASE_RENEW, float(timeout) / 8))


def prune_embedded(broker_url: str) -> int:
    """Delete the rows of delivered messages from the embedded broker's SQLite file; how many.

    kombu marks a delivered message invisible and never reads or deletes it again (an ack or a
    requeue works on the consumer's in-memory copy), so the file only grows. Deleting invisible
    rows is safe at any time, with consumers running; a worker calls this when it starts. Any
    other broker: 0, nothing done."""
    if broker_kind(broker_url) != "sqlite":
        return 0
    import sqlite3
    from contextlib import closing

    path = broker_url.split("://", 1)[1][1:]
    if not os.path.isfile(path):
        return 0
    with closing(sqlite3.connect(path, timeout=30)) as db, db:
        try:
            return int(db.execute("DELETE FROM kombu_message WHERE visible = 0").rowcount)
        except sqlite3.OperationalError:  # no table yet: nothing was ever queued
            return 0


def worker_options(queue: str, slots: int) -> dict[str, Any]:
    """Keyword arguments for ``app.Worker(**...)``: consume ``studio.QUEUE`` with ``slots`` jobs
    at a time (one unacknowledged job per slot), threads as slots (each waits on its script),
    no gossip, mingle or event chatter."""
    if slots < 1:
        raise UsageError(f"--concurrency must be at least 1, not {slots}")
    return {
        "queues": [QUEUE_PREFIX + check_queue_name(queue)],
        "concurrency": slots,
        "pool": "threads",
        "prefetch_multiplier": 1,
        "without_gossip": True,
        "without_mingle": True,
        "without_heartbeat": True,
        "optimization": "fair",
        "loglevel": "WARNING",
    }


def _unreachable(url: str, exc: BaseException) -> BrokerUnreachableError:
    reason = redact_text(" ".join(str(exc).split()) or type(exc).__name__)
    if re.search(r"ACCESS_REFUSED|password|auth|NOPERM|NOAUTH", reason, re.IGNORECASE):
        fix = "check the user and password in the broker URL, and the user's permissions on the broker"
    else:
        fix = f"start it, or point --broker, {BROKER_ENV} or queue.broker in config.yaml at a running one"
    return BrokerUnreachableError(f"broker {display_url(url)} is not reachable ({reason}); {fix}")


def _require(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(f"{what}: {_INSTALL}")


def _ensure_folder(url: str) -> None:
    """The embedded broker's folder exists (SQLite creates the file, not its parents)."""
    path = url.split("://", 1)[1]
    path = path[1:] if path.startswith("/") else path  # sqla+sqlite:///relative, sqla+sqlite:////absolute
    if path and path != ":memory:":
        folder = os.path.dirname(path.split("?", 1)[0])
        try:
            os.makedirs(folder or ".", exist_ok=True)
        except OSError as exc:
            raise BrokerUnreachableError(
                f"broker {display_url(url)} is not reachable: its folder {folder} cannot be created "
                f"({exc.strerror}); fix the folder's permissions, or point --broker, {BROKER_ENV} or "
                "queue.broker in config.yaml at another broker") from None
