"""Google Cloud Storage backend on google-cloud-storage.

Why it looks the way it does:

- The SDK is imported when a store is opened, never when ``studio_run.storage`` is imported.
- Credentials: against an emulator (``STORAGE_EMULATOR_HOST``) or an explicit ``endpoint``
  the client is anonymous; otherwise Application Default Credentials, nothing else. The
  project (only needed to create a bucket) is the ``project`` option, else
  ``GOOGLE_CLOUD_PROJECT``, else the ADC project, else ``"studio"``.
- An object upload is atomic on GCS (a new generation appears whole), so writes need no temp
  object. ``exclusive=True`` is the precondition ``if_generation_match=0``: "only if no live
  generation exists", refused with 412.
- Files over 8 MiB go through a resumable upload sent in ``chunk_size`` pieces, so a dropped
  connection costs one chunk, not the file.
- The SDK retries transient failures itself for up to ``retry_deadline`` seconds (its own
  default is 120 s, far too long to learn that an endpoint is down; 5 s rides out a blip);
  after that they surface as ``StoreUnreachableError`` and ``RetryingStorage`` retries longer
  outages where waiting is worth it (the background uploader).
- SDK errors become ``FileNotFoundError``/``PermissionError``/``Store*Error`` through one table,
  keeping the SDK exception as ``__cause__``.
"""

from __future__ import annotations

import base64
import builtins
import os
from contextlib import contextmanager
from typing import Any, Iterator

from ..errors import ConfigError, StoreAuthError, StoreError, StorePermissionError, StoreUnreachableError
from .base import KeyInfo, Storage, atomic_local_file, check_key
from .urls import bucket_url, redact_url

__all__ = ["GCSStorage"]

_MiB = 1024 * 1024
_DEFAULT_PROJECT = "studio"
# Connections kept open must cover the requests in flight, or urllib3 drops the surplus (with a
# warning) and reconnects: the uploader (studio_run.store.transfer) sends 16 objects at once,
# and requests keeps 10 connections by default.
_POOL_CONNECTIONS = 32

# SDK exception class name (looked up along the MRO) or HTTP status -> what callers see.
_ERROR_TABLE: dict[str, type[Exception]] = {
    "NotFound": FileNotFoundError,
    "Forbidden": PermissionError,
    "PreconditionFailed": FileExistsError,
    "Unauthorized": StoreAuthError,
    "DefaultCredentialsError": StoreAuthError,
    "RefreshError": StoreAuthError,
    "TooManyRequests": StoreUnreachableError,
    "ServerError": StoreUnreachableError,  # every 5xx
    "TransportError": StoreUnreachableError,  # google.auth, wrapping a connection failure
    "ConnectionError": StoreUnreachableError,  # requests
    "Timeout": StoreUnreachableError,  # requests
    "RetryError": StoreUnreachableError,  # the SDK's retry deadline ran out
    "GoogleAPICallError": StoreError,
    "401": StoreAuthError,
    "403": PermissionError,
    "404": FileNotFoundError,
    "412": FileExistsError,
    "429": StoreUnreachableError,
}
_SDK_MODULES = ("google.", "requests.", "urllib3.")


class GCSStorage(Storage):
    """Keys as objects under ``gs://bucket/prefix/``; the bucket is created if missing."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        project: str | None = None,
        location: str | None = None,
        chunk_size: int = 8 * _MiB,
        retry_deadline: float = 5.0,
        create: bool = True,
    ) -> None:
        from google.api_core.retry import Retry
        from google.cloud import storage  # type: ignore[import-untyped]
        from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped]

        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.url = f"gs://{bucket}/{self.prefix}" if self.prefix else f"gs://{bucket}"
        if chunk_size % (256 * 1024):
            raise ConfigError(f"GCS chunk_size must be a multiple of 256 KiB, not {chunk_size}")
        self._chunk_size = int(chunk_size)
        self.endpoint = endpoint or os.environ.get("STORAGE_EMULATOR_HOST") or None
        self._retry: Retry | None = DEFAULT_RETRY.with_timeout(retry_deadline) if retry_deadline > 0 else None
        project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        with self._mapped("open"):
            if self.endpoint:
                from google.auth.credentials import AnonymousCredentials

                options = {"api_endpoint": endpoint} if endpoint else None
                self._client: Any = storage.Client(
                    project=project or _DEFAULT_PROJECT,
                    credentials=AnonymousCredentials(),
                    client_options=options,
                )
            else:
                import google.auth

                credentials, adc_project = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
                )
                self._client = storage.Client(
                    project=project or adc_project or _DEFAULT_PROJECT, credentials=credentials
                )
        self._widen_pool()
        self._bucket = self._client.bucket(bucket)
        self._ensure_bucket(location, create)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "GCSStorage":
        """``gs://bucket/prefix``; options ``endpoint``, ``project``, ``location``, ``chunk_size``."""
        bucket, prefix = bucket_url(url, "GCS credentials come from Application Default Credentials")
        return cls(bucket, prefix, **options)

    # -- helpers ----------------------------------------------------------------------------
    def _widen_pool(self) -> None:
        """Keep ``_POOL_CONNECTIONS`` connections in the SDK's session (its mTLS adapter, when
        one is configured, is left as it is)."""
        from requests.adapters import HTTPAdapter

        session = self._client._http
        for scheme in ("https://", "http://"):
            if type(session.adapters.get(scheme)) is HTTPAdapter:
                session.mount(scheme, HTTPAdapter(pool_maxsize=_POOL_CONNECTIONS))

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        """Turn SDK errors raised inside the block into the storage error tree."""
        try:
            yield
        except Exception as exc:
            mapped = _translate(exc, f"{self.url}: {what}", self.endpoint)
            if mapped is None:
                raise
            raise mapped from exc

    def _ensure_bucket(self, location: str | None, create: bool) -> None:
        """Look the bucket up (no probe objects); create it when it does not exist (unless not
        ``create``: reading inputs, a missing bucket is ``FileNotFoundError``)."""
        where = f"cannot open bucket {self.bucket_name!r}"
        try:
            if self._client.lookup_bucket(self.bucket_name, retry=self._retry) is not None:
                return
            if not create:
                raise FileNotFoundError(f"bucket {self.bucket_name!r} does not exist")
            self._client.create_bucket(self._bucket, location=location, retry=self._retry)
        except Exception as exc:
            if type(exc).__name__ == "Conflict":  # created meanwhile, by us or another project
                return
            mapped = _translate(exc, where, self.endpoint)
            if mapped is None:
                raise
            if not isinstance(mapped, StoreError):
                mapped = StorePermissionError(str(mapped)) if isinstance(mapped, PermissionError) else (
                    StoreError(str(mapped))
                )
            raise mapped from exc

    # -- primitives -------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        blob = self._bucket.blob(self._key(key))
        with self._mapped(key):
            return bytes(blob.download_as_bytes(retry=self._retry))

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        blob = self._bucket.blob(self._key(key))
        with self._mapped(key):
            blob.upload_from_string(
                data,
                content_type="application/octet-stream",
                if_generation_match=0 if exclusive else None,
                retry=self._retry,
            )

    def exists(self, key: str) -> bool:
        blob = self._bucket.blob(self._key(key))
        with self._mapped(key):
            return bool(blob.exists(retry=self._retry))

    def delete(self, key: str) -> None:
        blob = self._bucket.blob(self._key(key))
        with self._mapped(key):
            blob.delete(retry=self._retry)

    def list(self, prefix: str = "") -> Iterator[str]:
        if prefix:
            check_key(prefix.rstrip("/"))
        root = f"{self.prefix}/" if self.prefix else ""
        with self._mapped(f"list {prefix!r}"):
            for blob in self._client.list_blobs(self._bucket, prefix=root + prefix, retry=self._retry):
                yield blob.name[len(root):]

    def info(self, key: str) -> KeyInfo:
        with self._mapped(key):
            blob = self._bucket.get_blob(self._key(key), retry=self._retry)
        if blob is None:
            raise FileNotFoundError(f"{self.url}: {key}")
        return KeyInfo(size=int(blob.size or 0), mtime=blob.updated.timestamp(), etag=str(blob.etag or ""),
                       md5=_hex(blob.md5_hash), crc32c=_hex(blob.crc32c))

    # -- faster derived operations ----------------------------------------------------------
    def put_file(self, local_path: str, key: str, *, exclusive: bool = False) -> None:
        blob = self._bucket.blob(self._key(key), chunk_size=self._chunk_size)
        with self._mapped(key):
            blob.upload_from_filename(
                local_path,
                content_type="application/octet-stream",
                if_generation_match=0 if exclusive else None,
                retry=self._retry,
            )

    def get_file(self, key: str, local_path: str) -> None:
        blob = self._bucket.blob(self._key(key))
        with atomic_local_file(local_path) as f, self._mapped(key):
            blob.download_to_file(f, retry=self._retry)

    def delete_many(self, keys: builtins.list[str]) -> None:
        blobs = [self._bucket.blob(self._key(k)) for k in keys]
        with self._mapped("delete_many"):
            self._bucket.delete_blobs(blobs, on_error=lambda blob: None, retry=self._retry)

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()


def _translate(exc: BaseException, where: str, endpoint: str | None) -> Exception | None:
    """The storage-tree exception for an SDK exception, or ``None`` when it is not an SDK error."""
    sdk = [k.__name__ for k in type(exc).__mro__ if k.__module__.startswith(_SDK_MODULES)]
    if not sdk:
        return None
    kinds = [_ERROR_TABLE[n] for n in sdk if n in _ERROR_TABLE]
    status = getattr(getattr(exc, "response", None), "status_code", None)  # resumable-media errors
    kind = kinds[0] if kinds else _ERROR_TABLE.get(str(status), StoreError)
    if kind is StoreError and status and int(status) >= 500:
        kind = StoreUnreachableError
    message = f"{where}: {_one_line(exc)}"
    if kind is StoreUnreachableError and endpoint and endpoint not in message:
        message += f" (endpoint {redact_url(endpoint)})"
    return kind(message)


def _hex(value: str | None) -> str:
    """GCS gives checksums in base64; ``KeyInfo`` holds hex."""
    return base64.b64decode(value).hex() if value else ""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
