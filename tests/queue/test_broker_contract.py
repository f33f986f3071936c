"""What studio needs from a broker, checked on Redis, RabbitMQ and the embedded default alike.

Every test goes through ``brokers.celery_app`` / ``brokers.publish`` and real consumer processes
(``tests/queue/consumer.py``: a Celery worker with studio's settings), and asserts on the journal
the consumers write (``start ID PID`` / ``done ID PID``). Each test has a queue of its own, so
the session's brokers are shared without one test seeing another's jobs.

Redelivery after a consumer's ``kill -9``, per broker (the README states the same bounds):
Redis: once the job's lease is older than the lease timeout (``LEASE_TIMEOUT``, 5 s in this suite)
plus one restore sweep of a live consumer (``RESTORE_INTERVAL``); RabbitMQ: at once, when the
dead consumer's connection closes; the embedded broker: never (the job stays invisible in its
SQLite file; studio's sweep re-publishes such runs from their records).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from studio_run.errors import UsageError
from studio_run.queue import brokers
from tests.queue.consumer import TASK
from tests.servers import RABBITMQ_SECRET, RabbitMQServer, RedisServer, free_port

pytestmark = [pytest.mark.servers, pytest.mark.faults]

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 120.0  # generous: the suite runs twice side by side on two busy cores
LEASE = 5.0  # the Redis lease timeout of this suite's consumers (studio's default is 40 s)
REDIS_SECRET = "redis-secret-for-studio-tests"


@dataclass
class Broker:
    """One broker under test: its URL, how to crash and restart it, and the files it keeps."""

    kind: str
    url: str
    server: Optional[object] = None
    files: list[Path] = field(default_factory=list)

    def crash_and_restart(self) -> None:
        """``kill -9`` of the broker, then a start on the same port and data. The embedded broker
        has no process: its queue is the SQLite file, which every process opens anew."""
        if isinstance(self.server, (RedisServer, RabbitMQServer)):
            self.server.kill9()
            self.server.start()

    def stored_bytes(self) -> bytes:
        """Everything the broker keeps on disk (Redis AOF, the embedded SQLite file and journal)."""
        out = b""
        for root in self.files:
            paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for path in paths:
                out += path.read_bytes()
        return out


@pytest.fixture(params=["redis", "rabbitmq", "embedded"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Broker:
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        return Broker("redis", server.url, server, [server.workdir])
    if request.param == "rabbitmq":
        server = request.getfixturevalue("rabbitmq_server")
        return Broker("rabbitmq", server.url, server)
    url = brokers.embedded_url(str(tmp_path / "home"))
    return Broker("embedded", url, None, [tmp_path / "home" / "queue"])


@pytest.fixture
def queue() -> str:
    return "contract-" + uuid.uuid4().hex[:8]


class Consumers:
    """Consumer processes of one test (each in its own process group), killed at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.journal = tmp_path / "journal.txt"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, url: str, queue: str, *, slots: int = 1, lease: bool = True) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(REPO), STUDIO_LEASE_TIMEOUT=str(LEASE))
        argv = [sys.executable, "-m", "tests.queue.consumer", url, queue, str(self.journal), "--slots", str(slots)]
        if not lease:
            argv.append("--no-lease")
        with open(self.tmp_path / f"consumer-{len(self.procs)}.log", "wb") as log:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def events(self, kind: str, job: str) -> list[int]:
        """PIDs of the consumers that wrote ``kind`` (start/done) for ``job``, in order."""
        try:
            lines = self.journal.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [int(pid) for k, j, pid in (line.split() for line in lines) if k == kind and j == job]

    def wait(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + DEADLINE
        while not condition():
            if time.monotonic() > deadline:
                logs = " | ".join(p.read_text(errors="replace")[-400:] for p in self.tmp_path.glob("consumer-*.log"))
                journal = self.journal.read_text() if self.journal.exists() else "(no journal)"
                pytest.fail(f"timed out waiting for {what}; journal: {journal!r}; logs: {logs}")
            time.sleep(0.1)

    def close(self) -> None:
        for proc in self.procs:
            self.kill9(proc)


@pytest.fixture
def consumers(tmp_path: Path) -> Iterator[Consumers]:
    group = Consumers(tmp_path)
    try:
        yield group
    finally:
        group.close()


def test_a_queued_job_survives_a_broker_crash(broker: Broker, queue: str, consumers: Consumers) -> None:
    brokers.publish(brokers.celery_app(broker.url), queue, TASK, {"id": "kept"})
    broker.crash_and_restart()
    consumers.start(broker.url, queue)
    consumers.wait("the job queued before the crash to run", lambda: consumers.events("done", "kept") != [])
    assert len(consumers.events("start", "kept")) == 1


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"], indirect=True)
def test_a_job_whose_consumer_is_killed_runs_again_elsewhere(broker: Broker, queue: str, consumers: Consumers) -> None:
    first = consumers.start(broker.url, queue)
    second = consumers.start(broker.url, queue)
    brokers.publish(brokers.celery_app(broker.url), queue, TASK, {"id": "job", "seconds": 600, "again": 0})
    consumers.wait("the job to start", lambda: consumers.events("start", "job") != [])
    holder = consumers.events("start", "job")[0]
    killed, survivor = (first, second) if holder == first.pid else (second, first)
    consumers.kill9(killed)
    consumers.wait("the job to run again on the other consumer", lambda: consumers.events("done", "job") != [])
    assert consumers.events("start", "job") == [killed.pid, survivor.pid]
    assert consumers.events("done", "job") == [survivor.pid]


@pytest.mark.parametrize("broker", ["embedded"], indirect=True)
def test_the_embedded_broker_never_hands_out_a_killed_consumers_job_again(
    broker: Broker, queue: str, consumers: Consumers
) -> None:
    # Documented behaviour, relied on by the sweep that re-publishes runs from their records: the
    # row stays invisible in the SQLite file, so the job is not run twice by the broker either.
    app = brokers.celery_app(broker.url)
    first = consumers.start(broker.url, queue)
    brokers.publish(app, queue, TASK, {"id": "taken", "seconds": 600})
    consumers.wait("the job to start", lambda: consumers.events("start", "taken") != [])
    consumers.kill9(first)
    brokers.publish(app, queue, TASK, {"id": "later"})
    consumers.start(broker.url, queue)
    # FIFO: "taken" would be handed out before "later" if the broker had put it back.
    consumers.wait("the later job to run", lambda: consumers.events("done", "later") != [])
    assert consumers.events("start", "taken") == [first.pid]
    # kombu keeps both delivered rows forever; pruning them is safe while consumers run.
    assert brokers.prune_embedded(broker.url) == 2
    assert brokers.prune_embedded(broker.url) == 0
    brokers.publish(app, queue, TASK, {"id": "after-prune"})
    consumers.wait("a job queued after pruning to run", lambda: consumers.events("done", "after-prune") != [])


def test_a_busy_slot_is_not_handed_a_second_job(broker: Broker, queue: str, consumers: Consumers) -> None:
    app = brokers.celery_app(broker.url)
    busy = consumers.start(broker.url, queue)
    brokers.publish(app, queue, TASK, {"id": "long", "seconds": 600})
    consumers.wait("the long job to start", lambda: consumers.events("start", "long") != [])
    brokers.publish(app, queue, TASK, {"id": "short"})
    idle = consumers.start(broker.url, queue)
    # Had the busy consumer prefetched "short", it would sit there until "long" ends.
    consumers.wait("the short job to run on the idle consumer", lambda: consumers.events("done", "short") != [])
    assert consumers.events("start", "short") == [idle.pid]
    assert consumers.events("start", "long") == [busy.pid]


class _Exploit:
    """Unpickling this creates a file: proof that a pickle message was deserialized."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def test_a_pickle_message_is_refused_never_unpickled(
    broker: Broker, queue: str, consumers: Consumers, tmp_path: Path
) -> None:
    from kombu import Connection, Producer

    marker = tmp_path / "unpickled"
    target = brokers.job_queue(queue)
    app = brokers.celery_app(broker.url)
    with Connection(broker.url) as conn:
        producer = Producer(conn.default_channel)
        body = pickle.dumps(((_Exploit(str(marker)),), {}, {"callbacks": None, "errbacks": None,
                                                            "chain": None, "chord": None}))
        producer.publish(body, exchange=target.exchange, routing_key=target.routing_key, declare=[target],
                         content_type="application/x-python-serialize", content_encoding="binary",
                         headers={"lang": "py", "task": TASK, "id": "pickled", "argsrepr": "", "kwargsrepr": ""})
    brokers.publish(app, queue, TASK, {"id": "after"})
    consumers.start(broker.url, queue)
    consumers.wait("the JSON job behind the pickle one to run", lambda: consumers.events("done", "after") != [])
    assert not marker.exists()
    assert consumers.events("start", "pickled") == []


def test_publish_to_a_down_broker_fails_fast_with_one_line(broker: Broker, tmp_path: Path) -> None:
    down = {
        "redis": f"redis://:{REDIS_SECRET}@127.0.0.1:{free_port()}/0",
        "rabbitmq": f"amqp://studio:{RABBITMQ_SECRET}@127.0.0.1:{free_port()}//",
        "embedded": brokers.embedded_url(str(tmp_path / "a-file")),
    }[broker.kind]
    (tmp_path / "a-file").write_text("not a folder")  # the embedded broker's folder cannot be made
    for attempt in (lambda: brokers.publish(brokers.celery_app(down), "q", TASK, {"id": "x"}),
                    lambda: brokers.ensure_reachable(down, timeout=2)):
        with pytest.raises(brokers.BrokerUnreachableError) as caught:
            attempt()
        message = str(caught.value)
        assert "\n" not in message
        assert brokers.display_url(down) in message
        assert REDIS_SECRET not in message and RABBITMQ_SECRET not in message
        assert ("--broker" in message) or ("permissions" in message)


def _secret_url(broker: Broker) -> str:
    """The broker's URL with a password in it (Redis: an ACL user made for this test)."""
    if broker.kind == "redis":
        import redis

        client = redis.Redis.from_url(broker.url)
        client.acl_setuser("studio", enabled=True, passwords=[f"+{REDIS_SECRET}"], keys=["*"],
                           channels=["*"], commands=["+@all"])
        client.close()
        return broker.url.replace("redis://", f"redis://studio:{REDIS_SECRET}@")
    return broker.url  # RabbitMQ: the fixture's node has a password; the embedded broker has none


def test_no_password_lands_in_a_stored_message(broker: Broker, queue: str) -> None:
    from kombu import Connection

    url = _secret_url(broker)
    app = brokers.celery_app(url)
    payload = {"id": "clean", "store": "s3://bucket/prefix", "args": ["--lr", "0.1"]}
    brokers.publish(app, queue, TASK, payload)
    with pytest.raises(UsageError, match="password"):
        brokers.publish(app, queue, TASK, {"id": "dirty", "store": f"sftp://me:{REDIS_SECRET}@host/x"})
    with Connection(url) as conn:
        message = brokers.job_queue(queue)(conn.default_channel).get(no_ack=False)
        assert message is not None
        raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        raw += json.dumps([message.headers, message.properties], default=str).encode()
        message.ack()
        assert brokers.job_queue(queue)(conn.default_channel).get(no_ack=True) is None  # "dirty" never queued
    assert b'"clean"' in raw
    stored = raw + broker.stored_bytes()
    for secret in (REDIS_SECRET, RABBITMQ_SECRET):
        assert secret.encode() not in stored


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
@pytest.mark.parametrize("renewed", [True, False], ids=["leased", "unleased"])
def test_redis_runs_a_job_longer_than_its_lease_timeout_once_while_leased(
    broker: Broker, queue: str, consumers: Consumers, renewed: bool
) -> None:
    # The unleased case shows what the lease prevents: kombu hands the job to the idle consumer
    # while the first still runs it (celery#5935).
    consumers.start(broker.url, queue, lease=renewed)
    consumers.start(broker.url, queue, lease=renewed)
    seconds = 2 * LEASE + brokers.RESTORE_INTERVAL  # two lease timeouts and a restore sweep
    brokers.publish(brokers.celery_app(broker.url), queue, TASK, {"id": "long", "seconds": seconds})
    if renewed:
        consumers.wait("the long job to end", lambda: consumers.events("done", "long") != [])
        assert len(consumers.events("start", "long")) == 1
    else:
        consumers.wait("the long job to be started twice", lambda: len(consumers.events("start", "long")) == 2)
