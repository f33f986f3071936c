"""Store URLs as text: their scheme, their bucket, and a form safe to print.

A leaf module (it imports nothing of studio's but errors), so every backend, the registry and
the records can use it without importing one another.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError

__all__ = ["bucket_url", "redact_url", "scheme_of"]


def scheme_of(url: str) -> str:
    """The scheme of a store URL; a plain path (no ``scheme://``) is ``file``."""
    if "://" not in url:
        return "file"
    return url.split("://", 1)[0].lower()


def redact_url(url: str) -> str:
    """The URL without any password or token, safe for logs and records.

    A user name is kept (``sftp://alice@host`` says whose account, not how to log in).
    Query strings are dropped whole, since signed URLs carry secrets there.
    """
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{host}" if user else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def bucket_url(url: str, credentials_hint: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``scheme://bucket/prefix``; refuses URLs that carry credentials.

    ``credentials_hint`` tells the user where the SDK takes credentials from instead.
    """
    parts = urlsplit(url)
    if "@" in parts.netloc or parts.query:
        raise ConfigError(f"store URL {redact_url(url)!r} carries credentials or a query; {credentials_hint}")
    if not parts.netloc:
        scheme = url.split("://", 1)[0]
        raise ConfigError(f"store URL {url!r} names no bucket ({scheme}://bucket/prefix)")
    return parts.netloc, parts.path
