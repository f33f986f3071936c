"""Uploading single files from training code: a background uploader with pluggable destinations.

``fs_tracker.upload_file(name, path)`` stages one copy of the file and returns; worker threads
deliver it to every destination (studio's store by default, W&B, or any ``Destination``).
Modules, in the order a file travels: ``copies`` (names, the one private copy), ``uploader`` (workers,
retries, failures) with its bookkeeping ``names`` (which names exist) and ``upload_queue``
(ordering, bounds, superseding), ``destination`` (the interface), ``store_destination`` and
``wandb_destination`` (the two shipped), ``api`` (the process-wide uploader, exit handling) and
``collect`` (the runner turning uploads into the run's ``files`` artifact).

Importing this package imports no SDK; ``WandbDestination`` and ``StoreDestination`` are loaded
on first access.
"""

from __future__ import annotations

from typing import Any

from .destination import Destination
from .uploader import POLICIES, Uploader

__all__ = ["Destination", "POLICIES", "StoreDestination", "Uploader", "WandbDestination"]

_LAZY = {
    "StoreDestination": "studio_run.uploads.store_destination",
    "WandbDestination": "studio_run.uploads.wandb_destination",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
