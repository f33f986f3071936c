"""One lazy registry from URL scheme to backend class, and the entry point that opens a URL.

Backends are named as ``"module:Class"`` strings so that ``studio --help`` never imports boto3,
google-cloud-storage or paramiko: a module is imported the first time its scheme is used. When
the SDK is missing, the user gets the pip command that installs it instead of an ImportError.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from ..errors import MissingDependencyError, UnknownSchemeError
from .base import Storage
from .urls import redact_url, scheme_of

__all__ = ["open_storage", "register", "registered_schemes"]

# scheme -> ("module:Class", pip extra that installs its SDK, or None)
_REGISTRY: dict[str, tuple[str, str | None]] = {
    "file": ("studio_run.storage.local:LocalStorage", None),
    "memory": ("studio_run.storage.memory:MemoryStorage", None),
    "s3": ("studio_run.storage.s3:S3Storage", "s3"),
    "gs": ("studio_run.storage.gcs:GCSStorage", "gcs"),
    "sftp": ("studio_run.storage.sftp:SFTPStorage", "sftp"),
}


def register(scheme: str, target: str, extra: str | None = None) -> None:
    """Add or replace a backend: ``target`` is ``"module:Class"``, imported on first use."""
    _REGISTRY[scheme] = (target, extra)


def registered_schemes() -> list[str]:
    """Schemes a store URL may use, sorted."""
    return sorted(_REGISTRY)


def open_storage(url: str, options: dict[str, Any] | None = None) -> Storage:
    """Turn a store URL into a ready ``Storage`` rooted at the URL's path.

    ``options`` carries backend settings that are not part of the URL (an S3 endpoint, a
    region); never credentials, which each SDK finds through its own standard chain.
    """
    scheme = scheme_of(url)
    if scheme == "file" and "://" not in url:
        url = "file://" + os.path.abspath(os.path.expanduser(url))
    try:
        target, extra = _REGISTRY[scheme]
    except KeyError:
        known = ", ".join(f"{s}://" for s in registered_schemes())
        raise UnknownSchemeError(
            f"store URL {redact_url(url)!r} has unknown scheme {scheme!r}; use one of {known} or a plain path"
        ) from None
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"pip install 'studio-run[{extra}]'" if extra else "reinstall studio-run"
        raise MissingDependencyError(
            f"the {scheme}:// store needs a package that is not installed ({exc.name}); run: {hint}"
        ) from exc
    cls = getattr(module, class_name)
    return cls.from_url(url, **(options or {}))
