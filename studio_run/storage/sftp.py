"""SFTP backend on paramiko: one file per key under a folder on any SSH server.

Why it looks the way it does:

- paramiko is imported when a store is opened, never when ``studio_run.storage`` is imported.
- Logging in uses what ``ssh`` would: the SSH agent, ``~/.ssh`` keys, or the ``key_filename``
  option. A password in the URL is accepted for old servers but kept out of ``url``.
- Host keys come from ``~/.ssh/known_hosts`` plus the ``known_hosts`` option; an unknown host is
  refused, never added (the policy behaves as paramiko's ``RejectPolicy``, with a message that
  says how to trust the host).
- Writes go to a temp file in ``<root>/.tmp/`` and are then renamed: ``posix-rename@openssh.com``
  replaces atomically; for ``exclusive=True`` the plain SFTPv3 rename is used, which refuses an
  existing target (OpenSSH implements it with ``link()``), so claiming a name is atomic.
  Parent folders are created on demand: the rename is tried first, and only a missing parent
  costs the extra ``mkdir`` round trips.
- One SFTP channel, used under a lock: paramiko's ``SFTPClient`` must not be used by two threads
  at once, and sshd caps channels per connection (``MaxSessions``, 10 by default).
- A dropped connection (server restart, idle timeout, network blip) is reopened once and the
  operation retried; if that fails too, ``StoreUnreachableError`` goes to the retry wrapper.
"""

from __future__ import annotations

import builtins
import logging
import os
import posixpath
import socket
import stat
import threading
import uuid
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError, StoreAuthError, StoreUnreachableError
from .base import KeyInfo, Storage, atomic_local_file, check_key
from .urls import redact_url

__all__ = ["SFTPStorage"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_TMP = ".tmp"
_PREFETCH_OVER = 64 * 1024  # reads larger than this are pipelined


class _UnknownHostKey(Exception):
    """Raised by ``_RejectUnknownHost`` inside paramiko's connect."""


class _RejectUnknownHost:
    """paramiko's ``RejectPolicy``, raising an exception we can tell apart from other failures."""

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        raise _UnknownHostKey(f"{hostname} ({key.get_name()} {key.fingerprint})")


class SFTPStorage(Storage):
    """Keys as files under a folder reached over SFTP; the folder is created if missing."""

    def __init__(
        self,
        host: str,
        root: str,
        *,
        user: str | None = None,
        port: int = 22,
        password: str | None = None,
        key_filename: str | None = None,
        known_hosts: str | None = None,
        timeout: float = 30.0,
        allow_agent: bool = True,
        look_for_keys: bool = True,
        create: bool = True,
    ) -> None:
        if not root.strip("/") or root.strip("/") == "~":
            raise ConfigError("an sftp:// store needs a folder: sftp://user@host/path (or /~/path)")
        for path, what in ((key_filename, "key_filename"), (known_hosts, "known_hosts")):
            if path is not None and not os.path.isfile(os.path.expanduser(path)):
                raise ConfigError(f"sftp option {what}: no such file {path!r}")
        self.host, self.port, self.user = host, int(port), user
        netloc = f"{user}@{host}" if user else host
        netloc += f":{self.port}" if self.port != 22 else ""
        self.url = redact_url(f"sftp://{netloc}/{root.lstrip('/')}")
        self._path_in_url = root
        self._root = ""  # absolute, known after the first login
        self._password = password  # only to log in again after a drop; never in url or repr
        self._key_filename = os.path.expanduser(key_filename) if key_filename else None
        self._known_hosts = os.path.expanduser(known_hosts) if known_hosts else None
        self._timeout = float(timeout)
        self._allow_agent, self._look_for_keys = bool(allow_agent), bool(look_for_keys)
        self._lock = threading.RLock()
        self._ssh: Any = None
        self._sftp: Any = None
        if create:
            self._run(lambda sftp: self._makedirs(sftp, posixpath.join(self._root, _TMP)))
        else:  # reading inputs: the folder must exist, and nothing is written
            self._run(lambda sftp: sftp.stat(self._root))

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "SFTPStorage":
        """``sftp://user@host[:port]/abs/path`` or ``.../~/path`` (under the login's home)."""
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigError(f"store URL {redact_url(url)!r} names no host (sftp://user@host/path)")
        return cls(
            parts.hostname,
            unquote(parts.path),
            user=unquote(parts.username) if parts.username else None,
            port=parts.port or 22,
            password=unquote(parts.password) if parts.password else None,
            **options,
        )

    # -- connection ---------------------------------------------------------------------------
    def _connect(self) -> None:
        import paramiko  # type: ignore[import-untyped]

        ssh = paramiko.SSHClient()
        where = self.url
        try:
            ssh.load_system_host_keys()  # ~/.ssh/known_hosts, when there is one
            if self._known_hosts:
                ssh.load_system_host_keys(self._known_hosts)
            ssh.set_missing_host_key_policy(_RejectUnknownHost())
            ssh.connect(
                self.host, port=self.port, username=self.user, password=self._password,
                key_filename=self._key_filename, timeout=self._timeout,
                banner_timeout=self._timeout, auth_timeout=self._timeout,
                allow_agent=self._allow_agent, look_for_keys=self._look_for_keys,
            )
            sftp = ssh.open_sftp()
            sftp.get_channel().settimeout(self._timeout)
        except _UnknownHostKey as exc:
            ssh.close()
            raise StoreAuthError(
                f"{where}: host key of {exc} is not in known_hosts; check its fingerprint, then add "
                f"it (ssh-keyscan -p {self.port} {self.host} >> ~/.ssh/known_hosts) or pass known_hosts"
            ) from exc
        except paramiko.BadHostKeyException as exc:
            ssh.close()
            raise StoreAuthError(f"{where}: host key does not match known_hosts: {exc}") from exc
        except paramiko.AuthenticationException as exc:
            ssh.close()
            raise StoreAuthError(f"{where}: login refused: {exc}") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            ssh.close()
            raise StoreUnreachableError(f"{where}: cannot connect: {_one_line(exc)}") from exc
        self._ssh, self._sftp = ssh, sftp
        if not self._root:
            path = self._path_in_url.rstrip("/")
            if path == "/~" or path.startswith("/~/"):  # relative to the login's home folder
                path = posixpath.join(sftp.normalize("."), path[3:])
            self._root = path

    def _alive(self) -> bool:
        transport = self._ssh.get_transport() if self._ssh is not None else None
        return bool(
            transport is not None and transport.is_active()
            and self._sftp is not None and not self._sftp.get_channel().closed
        )

    def _drop(self) -> None:
        ssh, self._ssh, self._sftp = self._ssh, None, None
        if ssh is not None:
            try:
                ssh.close()
            except Exception:  # closing a dead connection may fail in many ways; it is gone anyway
                pass

    def _run(self, op: Callable[[Any], T], key: str = "") -> T:
        """Run ``op(sftp)`` under the lock; reconnect once if the connection dropped under it."""
        import paramiko  # type: ignore[import-untyped]

        with self._lock:
            for attempt in (1, 2):
                if self._sftp is None:
                    self._connect()
                try:
                    return op(self._sftp)
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    if isinstance(exc, socket.timeout):  # a late answer would desync the channel
                        self._drop()
                        raise StoreUnreachableError(f"{self.url}: no answer in {self._timeout:g} s") from exc
                    if self._alive():  # the server answered: a real error (missing file, refused, ...)
                        if isinstance(exc, (FileNotFoundError, PermissionError)) and exc.filename is None:
                            # paramiko's message names no path: name the key
                            raise type(exc)(exc.errno, exc.strerror, f"{self.url}/{key}") from exc
                        raise
                    self._drop()
                    if attempt == 2:
                        raise StoreUnreachableError(f"{self.url}: connection lost: {_one_line(exc)}") from exc
                    log.info("%s: connection lost (%s); reconnecting", self.url, _one_line(exc))
        raise AssertionError("unreachable")

    # -- helpers ------------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        return posixpath.join(self._root, check_key(key))

    def _makedirs(self, sftp: Any, path: str) -> None:
        """``mkdir -p``: one round trip when the parent exists, walking up only when it does not."""
        try:
            sftp.mkdir(path)
            return
        except FileNotFoundError:  # the parent is missing: make it, then this one
            self._makedirs(sftp, posixpath.dirname(path))
            try:
                sftp.mkdir(path)
                return
            except OSError as exc:
                error = exc
        except OSError as exc:  # OpenSSH says only "Failure" when the folder exists
            error = exc
        try:
            is_dir = stat.S_ISDIR(sftp.stat(path).st_mode or 0)  # another writer may have made it
        except FileNotFoundError:
            raise error from None
        if not is_dir:
            raise NotADirectoryError(f"{self.url}: {path} exists and is not a folder")

    def _write(self, key: str, fill: Callable[[Any, str], None], exclusive: bool) -> None:
        """Fill a temp file in ``.tmp/``, then rename it onto the key."""
        target = self._path(key)

        def op(sftp: Any) -> None:
            tmp = posixpath.join(self._root, _TMP, uuid.uuid4().hex)
            try:
                try:
                    fill(sftp, tmp)
                except FileNotFoundError:  # .tmp/ was removed under us
                    self._makedirs(sftp, posixpath.dirname(tmp))
                    fill(sftp, tmp)
                self._rename(sftp, tmp, target, exclusive)
            except BaseException:
                if self._alive():
                    try:
                        sftp.remove(tmp)
                    except OSError:
                        pass
                raise

        self._run(op, key)

    def _rename(self, sftp: Any, tmp: str, target: str, exclusive: bool) -> None:
        rename = sftp.rename if exclusive else sftp.posix_rename
        for attempt in (1, 2):
            try:
                rename(tmp, target)
                return
            except FileNotFoundError:  # the key's folder does not exist yet
                if attempt == 2:
                    raise
                self._makedirs(sftp, posixpath.dirname(target))
            except OSError as exc:  # SFTPv3 rename onto an existing file: a bare "Failure"
                if exclusive and self._alive() and _is_file(sftp, target):
                    raise FileExistsError(f"{self.url}: {target[len(self._root) + 1:]} exists") from exc
                raise

    # -- primitives ---------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)

        def op(sftp: Any) -> bytes:
            with sftp.open(path, "rb") as f:
                size = f.stat().st_size or 0
                if size > _PREFETCH_OVER:
                    f.prefetch(size)
                return bytes(f.read())

        return self._run(op, key)

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        def fill(sftp: Any, tmp: str) -> None:
            with sftp.open(tmp, "wb") as f:
                f.set_pipelined(True)
                f.write(data)

        self._write(key, fill, exclusive)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        return self._run(lambda sftp: _is_file(sftp, path), key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        self._run(lambda sftp: sftp.remove(path), key)

    def list(self, prefix: str = "") -> Iterator[str]:
        if prefix:
            check_key(prefix.rstrip("/"))
        yield from self._run(lambda sftp: self._walk(sftp, prefix))

    def _walk(self, sftp: Any, prefix: str) -> builtins.list[str]:
        """Every key under ``prefix``, gathered before yielding so the lock is not held outside."""
        folder, _, stem = prefix.rpartition("/")
        try:
            entries = sftp.listdir_attr(posixpath.join(self._root, folder) if folder else self._root)
        except FileNotFoundError:
            return []
        keys: builtins.list[str] = []
        pending: builtins.list[tuple[str, Any]] = [
            (f"{folder}/{e.filename}" if folder else e.filename, e)
            for e in entries
            if e.filename.startswith(stem) and (folder or e.filename != _TMP)
        ]
        while pending:
            rel, entry = pending.pop()
            if stat.S_ISDIR(entry.st_mode or 0):
                pending.extend((f"{rel}/{e.filename}", e) for e in sftp.listdir_attr(self._path(rel)))
            elif stat.S_ISREG(entry.st_mode or 0):
                keys.append(rel)
        return keys

    def info(self, key: str) -> KeyInfo:
        path = self._path(key)
        st = self._run(lambda sftp: sftp.stat(path), key)
        if not stat.S_ISREG(st.st_mode or 0):
            raise FileNotFoundError(f"{self.url}: {key} is not a file")
        return KeyInfo(size=int(st.st_size or 0), mtime=float(st.st_mtime or 0))

    # -- faster derived operations ------------------------------------------------------------
    def put_file(self, local_path: str, key: str, *, exclusive: bool = False) -> None:
        def fill(sftp: Any, tmp: str) -> None:
            with open(local_path, "rb") as f:
                sftp.putfo(f, tmp, confirm=True)  # pipelined writes, then a size check

        self._write(key, fill, exclusive)

    def get_file(self, key: str, local_path: str) -> None:
        path = self._path(key)
        with atomic_local_file(local_path) as f:

            def op(sftp: Any) -> None:
                f.seek(0)
                f.truncate()
                sftp.getfo(path, f)  # prefetches: many reads in flight

            self._run(op, key)

    def close(self) -> None:
        with self._lock:
            self._drop()


def _is_file(sftp: Any, path: str) -> bool:
    try:
        return stat.S_ISREG(sftp.stat(path).st_mode or 0)
    except FileNotFoundError:
        return False


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
