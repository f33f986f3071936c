"""Amazon S3 (and S3-compatible: MinIO, Ceph, moto) backend on boto3.

Why it looks the way it does:

- boto3 is imported when a store is opened, never when ``studio_run.storage`` is imported.
- Credentials come only from boto3's standard chain (environment, profile, SSO, instance role):
  a URL or option never carries a key, so none can leak into ``url``, logs or records.
- A single PUT is atomic on S3, so ``write_bytes`` needs no temp key. ``exclusive=True`` is a
  conditional PUT (``If-None-Match: *``), which S3 refuses with 412 when the key exists.
- Large files go through boto3's managed transfer (multipart, several parts at once). S3 only
  supports ``If-None-Match`` on single PUTs and multipart completion, and boto3's transfer manager
  does not pass it through, so an exclusive ``put_file`` is one streamed PUT (up to 5 GiB).
- botocore's adaptive mode paces requests after throttling (503 SlowDown) but does not retry:
  connection failures and throttling surface at once as ``StoreUnreachableError`` for the
  ``RetryingStorage`` wrapper to retry. Retrying in both layers multiplied the waits (five
  botocore attempts a call made a down endpoint take 20 s to report) and hid from the uploader
  that the store was failing.
- SDK errors become ``FileNotFoundError``/``PermissionError``/``Store*Error`` through one table,
  keeping the SDK exception as ``__cause__``.
"""

from __future__ import annotations

import builtins
import os
from contextlib import contextmanager
from typing import Any, Iterator

from ..errors import StoreAuthError, StoreError, StorePermissionError, StoreUnreachableError
from .base import KeyInfo, Storage, atomic_local_file, check_key
from .urls import bucket_url, redact_url

__all__ = ["S3Storage"]

_MiB = 1024 * 1024
_MAX_SINGLE_PUT = 5 * 1024 * _MiB  # S3's limit for one PUT
_DELETE_BATCH = 1000  # S3's limit for one DeleteObjects call
# Connections kept open must cover the requests in flight, or urllib3 drops the surplus (with a
# warning) and reconnects: the uploader (studio_run.store.transfer) sends 16 objects at once,
# up to 4 of them multipart with ``max_concurrency`` parts each.
_UPLOADS_AT_ONCE, _MULTIPART_AT_ONCE = 16, 4

# Error code (ClientError) or botocore class name -> what callers see.
_ERROR_TABLE: dict[str, type[Exception]] = {
    "NoSuchKey": FileNotFoundError,
    "404": FileNotFoundError,
    "NotFound": FileNotFoundError,
    "AccessDenied": PermissionError,
    "403": PermissionError,
    "Forbidden": PermissionError,
    "AllAccessDisabled": PermissionError,
    "PreconditionFailed": FileExistsError,  # If-None-Match: * on an existing key
    "412": FileExistsError,
    "ConditionalRequestConflict": FileExistsError,  # a racing conditional write won
    "NoSuchBucket": StoreError,
    "InvalidAccessKeyId": StoreAuthError,
    "SignatureDoesNotMatch": StoreAuthError,
    "ExpiredToken": StoreAuthError,
    "InvalidToken": StoreAuthError,
    "TokenRefreshRequired": StoreAuthError,
    "NoCredentialsError": StoreAuthError,
    "PartialCredentialsError": StoreAuthError,
    "CredentialRetrievalError": StoreAuthError,
    "SlowDown": StoreUnreachableError,
    "ServiceUnavailable": StoreUnreachableError,
    "InternalError": StoreUnreachableError,
    "500": StoreUnreachableError,
    "503": StoreUnreachableError,
    "EndpointConnectionError": StoreUnreachableError,
    "ConnectTimeoutError": StoreUnreachableError,
    "ReadTimeoutError": StoreUnreachableError,
    "ConnectionClosedError": StoreUnreachableError,
}


class S3Storage(Storage):
    """Keys as objects under ``s3://bucket/prefix/``; the bucket is created if missing."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        max_attempts: int = 1,
        multipart_threshold: int = 8 * _MiB,
        max_concurrency: int = 8,
        create: bool = True,
    ) -> None:
        import boto3  # type: ignore[import-untyped]
        from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint = endpoint
        config = Config(
            retries={"mode": "adaptive", "max_attempts": int(max_attempts)},
            max_pool_connections=_UPLOADS_AT_ONCE + _MULTIPART_AT_ONCE * int(max_concurrency),
            connect_timeout=10,
            read_timeout=60,
        )
        with self._mapped("open"):
            self._client: Any = boto3.session.Session().client(
                "s3", endpoint_url=endpoint, region_name=region, config=config
            )
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_threshold,
            max_concurrency=int(max_concurrency),
        )
        self._create = create  # False: a missing bucket is FileNotFoundError (reading inputs)
        self._ensure_bucket()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "S3Storage":
        """``s3://bucket/prefix``; options ``endpoint``, ``region``, ``max_attempts``."""
        bucket, prefix = bucket_url(url, "S3 credentials come from the AWS environment, profile or role")
        return cls(bucket, prefix, **options)

    # -- helpers ----------------------------------------------------------------------------
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

    def _ensure_bucket(self) -> None:
        """HEAD the bucket (no probe objects); create it when it does not exist."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except Exception as exc:
            mapped = _translate(exc, f"cannot open bucket {self.bucket!r}", self.endpoint)
            if isinstance(mapped, PermissionError):
                # HEAD has no body, so refused credentials, a missing permission and (on some
                # servers) a missing bucket all look alike: ask again with a read that says why.
                mapped = self._why_refused()
                if mapped is None:
                    return
            if not isinstance(mapped, FileNotFoundError):
                raise (mapped or StoreError(f"cannot use bucket {self.bucket!r}: {exc}")) from exc
            if not self._create:
                raise FileNotFoundError(f"bucket {self.bucket!r} does not exist") from exc
        region = self._client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**kwargs)
        except Exception as exc:
            code = _error_code(exc)
            if code == "BucketAlreadyOwnedByYou":  # another opener won the race
                return
            mapped = _translate(exc, "", self.endpoint)
            kind = type(mapped) if isinstance(mapped, StoreError) else StoreError
            if isinstance(mapped, PermissionError):
                kind = StorePermissionError
            if code == "BucketAlreadyExists":
                reason = "the name is taken by another account"
            else:
                reason = _one_line(exc)
            raise kind(f"cannot create bucket {self.bucket!r}: {reason}") from exc

    def _why_refused(self) -> Exception | None:
        """After a 403 on HEAD: list zero keys, whose error has a code. ``None`` if that works."""
        try:
            self._client.list_objects_v2(Bucket=self.bucket, MaxKeys=0)
            return None
        except Exception as exc:
            code = _error_code(exc)
            if code == "NoSuchBucket":
                return FileNotFoundError(self.bucket)
            where = f"cannot open bucket {self.bucket!r}"
            mapped = _translate(exc, where, self.endpoint)
            if isinstance(mapped, StoreAuthError):
                return StoreAuthError(f"{where}: credentials refused: {_one_line(exc)}")
            if isinstance(mapped, PermissionError) or mapped is None:
                return StorePermissionError(
                    f"{where}: access denied (no s3:ListBucket permission on it): {_one_line(exc)}"
                )
            return mapped

    # -- primitives -------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        full = self._key(key)
        with self._mapped(key):
            return bytes(self._client.get_object(Bucket=self.bucket, Key=full)["Body"].read())

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        full = self._key(key)
        extra = {"IfNoneMatch": "*"} if exclusive else {}
        with self._mapped(key):
            self._client.put_object(Bucket=self.bucket, Key=full, Body=data, **extra)

    def exists(self, key: str) -> bool:
        try:
            self.info(key)
        except FileNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        # S3 answers 204 for a missing key too; the contract wants FileNotFoundError, so HEAD
        # first. A racing deleter can slip in between: then both succeed, which is harmless.
        self.info(key)
        with self._mapped(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        if prefix:
            check_key(prefix.rstrip("/"))
        root = f"{self.prefix}/" if self.prefix else ""
        paginator = self._client.get_paginator("list_objects_v2")
        with self._mapped(f"list {prefix!r}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=root + prefix):
                for item in page.get("Contents", ()):
                    yield item["Key"][len(root):]

    def info(self, key: str) -> KeyInfo:
        full = self._key(key)
        with self._mapped(key):
            head = self._client.head_object(Bucket=self.bucket, Key=full)
        etag = str(head.get("ETag", "")).strip('"')
        # A single-part upload's ETag is its MD5, unless SSE-KMS/SSE-C encrypted it.
        plain = "-" not in etag and head.get("ServerSideEncryption") != "aws:kms" and "SSECustomerAlgorithm" not in head
        return KeyInfo(size=int(head["ContentLength"]), mtime=head["LastModified"].timestamp(),
                       etag=etag, md5=etag.lower() if plain and len(etag) == 32 else "")

    # -- faster derived operations ----------------------------------------------------------
    def put_file(self, local_path: str, key: str, *, exclusive: bool = False) -> None:
        full = self._key(key)
        if exclusive:
            size = os.path.getsize(local_path)
            if size > _MAX_SINGLE_PUT:
                raise ValueError(f"exclusive upload of {size} bytes exceeds S3's 5 GiB single PUT")
            with open(local_path, "rb") as f, self._mapped(key):
                self._client.put_object(Bucket=self.bucket, Key=full, Body=f, IfNoneMatch="*")
            return
        if os.path.getsize(local_path) < self._transfer.multipart_threshold:
            # One plain PUT: the managed transfer would start a thread pool for each small file,
            # which costs more than the upload itself for thousands of 4 KiB files.
            with open(local_path, "rb") as f, self._mapped(key):
                self._client.put_object(Bucket=self.bucket, Key=full, Body=f)
            return
        with self._mapped(key):
            self._client.upload_file(local_path, self.bucket, full, Config=self._transfer)

    def get_file(self, key: str, local_path: str) -> None:
        full = self._key(key)
        with atomic_local_file(local_path) as f, self._mapped(key):
            self._client.download_fileobj(self.bucket, full, f, Config=self._transfer)

    def delete_many(self, keys: builtins.list[str]) -> None:
        """Delete in batches of 1,000 with one DeleteObjects call each; missing keys are fine."""
        full = [self._key(k) for k in keys]
        for start in range(0, len(full), _DELETE_BATCH):
            batch = [{"Key": k} for k in full[start:start + _DELETE_BATCH]]
            with self._mapped("delete_many"):
                result = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            errors = result.get("Errors") or []
            if errors:
                first = errors[0]
                kind = _ERROR_TABLE.get(first.get("Code", ""), StoreError)
                raise kind(
                    f"{self.url}: could not delete {len(errors)} key(s), first {first.get('Key')!r}: "
                    f"{first.get('Code')} {first.get('Message', '')}".rstrip()
                )

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _translate(exc: BaseException, where: str, endpoint: str | None) -> Exception | None:
    """The storage-tree exception for an SDK exception, or ``None`` when it is not an SDK error."""
    code = _error_code(exc)
    if code:  # a ClientError: the service answered with an error code and an HTTP status
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")  # type: ignore[attr-defined]
        kind = _ERROR_TABLE.get(code) or _ERROR_TABLE.get(str(status), StoreError)
    else:  # raised by botocore itself (no credentials, no connection): look up its class
        names = [k.__name__ for k in type(exc).__mro__ if k.__module__.startswith("botocore")]
        found = [_ERROR_TABLE[n] for n in names if n in _ERROR_TABLE]
        if not found:
            return None
        kind = found[0]
    message = f"{where}: {_one_line(exc)}" if where else _one_line(exc)
    if kind is StoreUnreachableError and endpoint and endpoint not in message:
        message += f" (endpoint {redact_url(endpoint)})"
    return kind(message)
