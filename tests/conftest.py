"""Session-wide test servers on loopback, started by the suite itself (see ``tests/servers.py``).

A server that cannot start fails every test that asked for it, with the reason: a skip would
read as green while the backend went untested.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.servers import FakeGCSServer, MotoAuthS3Server, MotoS3Server, RabbitMQServer, RedisServer, ServerStartError, SSHServer

# Fake but recognisable: tests assert that the secret never shows up in a URL, repr or message.
FAKE_AWS_SECRET = "fake-secret-for-studio-tests"

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": FAKE_AWS_SECRET,
    "AWS_DEFAULT_REGION": "us-east-1",
    # No profile, config file or instance metadata: nothing real can be picked up.
    "AWS_CONFIG_FILE": "/nonexistent/studio-tests/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/studio-tests/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_UNSET_AWS_ENV = ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]


def _start(server) -> None:
    try:
        server.start()
        return
    except ServerStartError as exc:
        reason = str(exc)
    pytest.fail(reason, pytrace=False)  # outside the except: one clear message, no chained trace


def _serve(server):  # type: ignore[no-untyped-def]
    """Start ``server`` (failing loudly if it cannot), yield it, stop it by its own PID."""
    _start(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fake_aws_env() -> Iterator[None]:
    """Fake AWS credentials and region for the whole session, so real ones are never used."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in FAKE_AWS_ENV.items():
            mp.setenv(name, value)
        for name in _UNSET_AWS_ENV:
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def s3_server(fake_aws_env) -> Iterator[MotoS3Server]:
    """moto's S3 on 127.0.0.1; ``.endpoint`` is its URL, ``.reset()`` empties it."""
    yield from _serve(MotoS3Server())


@pytest.fixture(scope="session")
def s3_auth_server(tmp_path_factory) -> Iterator[MotoAuthS3Server]:
    """moto checking signatures and IAM policies, in its own process; ``.reader`` may only read."""
    yield from _serve(MotoAuthS3Server(tmp_path_factory.mktemp("moto-auth")))


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory) -> Iterator[FakeGCSServer]:
    """fake-gcs-server on 127.0.0.1 (in memory); ``.endpoint`` is its URL."""
    yield from _serve(FakeGCSServer(tmp_path_factory.mktemp("gcs")))


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory) -> Iterator[SSHServer]:
    """OpenSSH sshd on 127.0.0.1; ``.url(path)`` and ``.options()`` open a store on it."""
    yield from _serve(SSHServer(tmp_path_factory.mktemp("sshd")))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """redis-server on 127.0.0.1 with an append-only file (jobs survive ``kill9()`` + ``start()``);
    ``.url`` is ``redis://127.0.0.1:PORT/0``."""
    yield from _serve(RedisServer(tmp_path_factory.mktemp("redis"), durable=True))


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory) -> Iterator[RabbitMQServer]:
    """One user-level RabbitMQ node for the session (it takes 5-25 s to start); ``.url`` is
    ``amqp://guest:guest@127.0.0.1:PORT//``; ``kill9()`` + ``start()`` restart it with its queues.
    Stopped by its PID at the end, then its epmd (``epmd -port EP -kill``)."""
    server = RabbitMQServer(tmp_path_factory.mktemp("rabbitmq"))
    try:
        _start(server)
        yield server
    finally:
        server.close()
