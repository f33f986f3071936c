"""Read a file or a prefix from a URL, streamed to local files and checked on arrival.

``--capture-once URL:TAG`` takes its input from ``http(s)://``, ``s3://``, ``gs://`` or
``sftp://``. Each scheme is a ``Source`` that lists what the URL names (one file, or every key
under a prefix) with the validators that say whether it changed since last time, and fetches
one file into a local path:

- ``s3://``, ``gs://``, ``sftp://`` reuse the storage backends (``open_storage``) opened with
  ``create=False``, so a missing bucket or folder is an error and never created. The URL
  names a file when that key exists, else the prefix below it (``s3://b/data`` and
  ``s3://b/data/`` alike); each file is checked by its size and, where the server keeps one,
  its MD5 (S3's ETag of a single-part upload, GCS's ``md5Hash``) or CRC32C.
- ``http(s)://`` is one file, fetched with urllib (no new dependency), checked by
  ``Content-Length`` and ``Content-MD5`` when given. A user and password in the URL are sent
  as Basic auth, never kept in any text studio writes.

Failures the user can fix (nothing there, credentials refused, a missing bucket) raise
``UsageError``: one line, exit 2, raised before anything is stored. Messages name the URL
through ``redact_url`` only: no password, no query string (it may carry a signature).
"""

from __future__ import annotations

import abc
import base64
import hashlib
import http.client
import posixpath
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, Optional
from urllib.parse import unquote, urlsplit, urlunsplit

from ..errors import IntegrityError, StoreAuthError, StorePermissionError, StoreUnreachableError, UsageError
from ..storage import Storage, open_storage
from ..storage.base import atomic_local_file
from ..storage.urls import redact_url, scheme_of

__all__ = ["RemoteFile", "Source", "open_source"]

_CHUNK = 1024 * 1024
_HTTP_TIMEOUT = 60.0


@dataclass(frozen=True)
class RemoteFile:
    """One file a URL names: where it goes under the input (``name``), and how to check it.

    ``size`` is -1 when the server does not say. ``validator`` changes whenever the content
    may have (an ETag, else size and modification time); ``md5``/``crc32c`` are lowercase hex.
    """

    name: str
    size: int
    validator: str
    md5: str = ""
    crc32c: str = ""


class Source(abc.ABC):
    """What one input URL names, and a way to fetch each of its files."""

    url: str  # redacted: safe to print and record
    single: bool = False  # the URL names one file (known after ``listing``), not a prefix

    @abc.abstractmethod
    def listing(self) -> list[RemoteFile]:
        """Every file the URL names, sorted by name; ``UsageError`` when there is none."""

    @abc.abstractmethod
    def fetch(self, item: RemoteFile, dest: str, progress: Optional[Callable[[int], None]] = None) -> None:
        """Stream ``item`` into the local file ``dest`` (atomically), checked against ``item``."""

    def close(self) -> None:
        """Release connections."""


def open_source(url: str, options: dict[str, Any]) -> Source:
    """The ``Source`` for ``url``; ``options`` go to a storage backend (an endpoint, a region)."""
    scheme = scheme_of(url)
    if scheme in ("http", "https"):
        return HttpSource(url)
    return StorageSource(url, options)


class StorageSource(Source):
    """A file or prefix in a bucket or on an SSH server, read through a storage backend."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.url = redact_url(url)
        parts = urlsplit(url)
        parent, name = posixpath.split(parts.path.rstrip("/")) if parts.path.strip("/") else ("", "")
        base = urlunsplit((parts.scheme, parts.netloc, parent, parts.query, ""))
        self.name = name  # the last segment: a file, or the folder every key sits under
        with _explained(self.url):
            self.storage: Storage = open_storage(base, {**options, "create": False})
        self._keys: dict[str, str] = {}  # RemoteFile.name -> storage key

    def listing(self) -> list[RemoteFile]:
        with _explained(self.url):
            if self.name:
                try:
                    found = [self._describe(self.name, self.name)]
                    self.single = True
                    return found
                except FileNotFoundError:
                    pass  # not a file: the prefix below it
            prefix = f"{self.name}/" if self.name else ""
            found = [self._describe(key, _name_in(self.url, key[len(prefix):]))
                     for key in sorted(self.storage.list(prefix)) if not key.endswith("/")]  # "dir/" markers
        if not found:
            raise UsageError(f"--capture-once {self.url}: nothing there (no file, no keys under it); check the URL")
        return found

    def _describe(self, key: str, name: str) -> RemoteFile:
        info = self.storage.info(key)
        self._keys[name] = key
        validator = info.etag or f"{info.size}:{info.mtime:.6f}"
        return RemoteFile(name, info.size, validator, info.md5, info.crc32c)

    def fetch(self, item: RemoteFile, dest: str, progress: Optional[Callable[[int], None]] = None) -> None:
        with _explained(self.url):
            self.storage.get_file(self._keys[item.name], dest)
        with open(dest, "rb") as f:
            _check(self.url, item, _Hashing(f, progress).drain(), dest)

    def close(self) -> None:
        self.storage.close()


def _name_in(url: str, name: str) -> str:
    """``name`` if it is a safe relative path to write under the input's folder."""
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
        raise UsageError(f"--capture-once {url}: key {name!r} is not a usable file path; fetch a prefix without it")
    return name


class HttpSource(Source):
    """One file over http(s): a GET, made conditional when a previous copy's validators are known."""

    single = True

    def __init__(self, url: str) -> None:
        self.url = redact_url(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        self._target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        self._auth = ""
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(pair.encode()).decode()
        self.name = posixpath.basename(unquote(parts.path)) or "index"
        self._response: Any = None

    def validators(self, previous: Optional[str]) -> Optional[RemoteFile]:
        """GET the URL; ``None`` when the server says ``previous`` (a validator) is still current.

        The response is kept open for ``fetch``, so a changed file costs one request too.
        """
        headers = {}
        if previous:
            etag, _sep, modified = previous.partition("\n")
            if etag:
                headers["If-None-Match"] = etag
            if modified:
                headers["If-Modified-Since"] = modified
        request = urllib.request.Request(self._target, headers=headers)
        if self._auth:  # never sent on to another host a redirect names
            request.add_unredirected_header("Authorization", self._auth)
        try:
            response = urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT)  # noqa: S310 - scheme checked
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 304:
                return None
            raise _http_error(self.url, exc.code, exc.reason) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreUnreachableError(f"--capture-once {self.url}: cannot connect: {reason}") from None
        self._response = response
        length = response.headers.get("Content-Length")
        etag, modified = response.headers.get("ETag", ""), response.headers.get("Last-Modified", "")
        md5 = response.headers.get("Content-MD5", "")
        validator = f"{etag}\n{modified}" if (etag or modified) else ""
        return RemoteFile(self.name, int(length) if length and length.isdigit() else -1, validator,
                          md5=base64.b64decode(md5).hex() if md5 else "")

    def listing(self) -> list[RemoteFile]:
        found = self.validators(None)
        assert found is not None  # an unconditional GET is never answered 304
        return [found]

    def fetch(self, item: RemoteFile, dest: str, progress: Optional[Callable[[int], None]] = None) -> None:
        response, self._response = self._response, None
        if response is None:
            raise RuntimeError("HttpSource.fetch before validators")  # a bug, not a user error
        with response, atomic_local_file(dest) as out:
            counted = _Hashing(response, progress)
            try:
                digest = counted.drain(out)
            except http.client.IncompleteRead as exc:  # the connection closed before Content-Length
                got = counted.size + len(exc.partial)
                raise IntegrityError(f"--capture-once {self.url}: {item.name} arrived damaged "
                                     f"(got {got} bytes, the server announced {item.size}); try again") from None
            except (OSError, http.client.HTTPException) as exc:
                raise StoreUnreachableError(f"--capture-once {self.url}: download broke off: {exc}") from None
            _check(self.url, item, digest, dest)

    def close(self) -> None:
        if self._response is not None:
            self._response.close()


class _Hashing:
    """Reads a stream in chunks, counting bytes and hashing them (MD5 and, if installed, CRC32C)."""

    def __init__(self, stream: BinaryIO, progress: Optional[Callable[[int], None]]) -> None:
        self.stream, self.progress = stream, progress
        self.size = 0  # bytes read so far

    def drain(self, out: Optional[BinaryIO] = None) -> tuple[int, str, str]:
        """``(size, md5 hex, crc32c hex or "")`` of the rest of the stream, copied to ``out``."""
        md5, crc = hashlib.md5(usedforsecurity=False), _crc32c()
        for chunk in iter(lambda: self.stream.read(_CHUNK), b""):
            md5.update(chunk)
            if crc is not None:
                crc.update(chunk)
            if out is not None:
                out.write(chunk)
            self.size += len(chunk)
            if self.progress is not None:
                self.progress(len(chunk))
        return self.size, md5.hexdigest(), crc.digest().hex() if crc is not None else ""


def _crc32c() -> Any:
    """A CRC32C hasher from google-crc32c (installed with the gcs extra), else ``None``."""
    try:
        import google_crc32c  # type: ignore[import-untyped]
    except ImportError:
        return None
    return google_crc32c.Checksum()


def _check(url: str, item: RemoteFile, got: tuple[int, str, str], dest: str) -> None:
    """Refuse a download whose length or checksum differs from what the server announced."""
    size, md5, crc = got
    problem = ""
    if item.size >= 0 and size != item.size:
        problem = f"got {size} bytes, the server announced {item.size}"
    elif item.md5 and md5 != item.md5:
        problem = f"MD5 {md5} differs from the server's {item.md5}"
    elif item.crc32c and crc and crc != item.crc32c:
        problem = f"CRC32C {crc} differs from the server's {item.crc32c}"
    if problem:
        raise IntegrityError(f"--capture-once {url}: {item.name} arrived damaged ({problem}); try again")


def _http_error(url: str, code: int, reason: object) -> Exception:
    if code in (401, 403):
        return UsageError(f"--capture-once {url}: credentials refused (HTTP {code} {reason}); "
                          "check the user and password or the link's signature")
    if code in (404, 410):
        return UsageError(f"--capture-once {url}: not found (HTTP {code} {reason}); check the URL")
    if code >= 500 or code == 429:
        return StoreUnreachableError(f"--capture-once {url}: the server failed (HTTP {code} {reason}); try again")
    return UsageError(f"--capture-once {url}: the server refused it (HTTP {code} {reason})")


@contextmanager
def _explained(url: str) -> Iterator[None]:
    """Turn storage errors raised inside the block into one line naming the input URL (redacted)."""
    where = f"--capture-once {url}"
    try:
        yield
    except StoreAuthError as exc:
        raise UsageError(f"{where}: credentials refused: {_detail(exc)}") from exc
    except (StorePermissionError, PermissionError) as exc:
        raise UsageError(f"{where}: access denied: {_detail(exc)}") from exc
    except FileNotFoundError as exc:
        raise UsageError(f"{where}: not found ({_detail(exc)}); check the URL") from exc


def _detail(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

