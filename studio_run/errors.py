"""Every exception studio raises on purpose, in one tree.

The CLI turns any ``StudioError`` into a one-line message and an exit code; anything else
is a bug and keeps its traceback. Storage backends raise the built-in ``FileNotFoundError``,
``FileExistsError`` and ``PermissionError`` (mapped from each SDK, keeping ``__cause__``) so
that code above the storage layer never has to know which SDK is underneath::

    StudioError                      exit code 1 unless the subclass says otherwise
    ├── UsageError                   bad flags, specs or config (exit 2)
    │   ├── ConfigError              config.yaml or environment is wrong
    │   └── UnknownSchemeError       a store URL whose scheme no backend serves
    ├── MissingDependencyError       a backend's SDK is not installed (says what to pip install)
    ├── NotFoundError                an experiment, tag or version that does not exist (exit 2)
    ├── IntegrityError               stored bytes do not match their digest, or a manifest is unsafe
    │   └── UnsafePathError          a manifest path escapes its destination
    ├── StoreError                   the store cannot be used (unreachable, auth, bucket)
    │   ├── StoreUnreachableError    network or endpoint failure (transient: retried first)
    │   ├── StoreAuthError           credentials missing or refused
    │   └── StorePermissionError     credentials accepted but the action is not allowed
    └── UploadError                  files handed to the uploader could not be delivered
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "IntegrityError",
    "MissingDependencyError",
    "NotFoundError",
    "StoreAuthError",
    "StoreError",
    "StorePermissionError",
    "StoreUnreachableError",
    "StudioError",
    "TRANSIENT",
    "UnknownSchemeError",
    "UnsafePathError",
    "UploadError",
    "UsageError",
]


class StudioError(Exception):
    """Base of every expected failure; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(StudioError):
    """The user asked for something malformed; fixing the command line fixes it."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file, config key or environment variable holds a bad value."""


class UnknownSchemeError(UsageError):
    """A store URL names a scheme no backend is registered for."""


class MissingDependencyError(StudioError):
    """An optional SDK is missing; the message carries the pip command that installs it."""


class NotFoundError(StudioError):
    """An experiment, artifact tag or version the user named does not exist in the store."""

    exit_code = 2


class IntegrityError(StudioError):
    """Stored bytes or manifests fail verification; nothing is written from them."""


class UnsafePathError(IntegrityError):
    """A manifest entry would write outside its destination (absolute, ``..`` or outward link)."""


class StoreError(StudioError):
    """The store cannot be used as configured."""


class StoreUnreachableError(StoreError):
    """The endpoint did not answer; transient, so the retry wrapper tries again first."""


class StoreAuthError(StoreError):
    """Credentials are missing or were refused by the store."""


class StorePermissionError(StoreError):
    """Credentials were accepted, but the store does not allow this action."""


class UploadError(StudioError):
    """Files handed to a background uploader could not be delivered; ``failures`` names them."""

    def __init__(self, message: str, failures: dict[str, BaseException] | None = None) -> None:
        super().__init__(message)
        self.failures = dict(failures or {})


TRANSIENT: tuple[type[BaseException], ...] = (StoreUnreachableError, ConnectionError, TimeoutError)
"""Failures that waiting may cure: retried by the storage wrapper and the background uploaders."""
