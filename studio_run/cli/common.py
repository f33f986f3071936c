"""What every command needs first: the settings in force and the opened store.

Commands call ``config_of`` and ``open_store`` instead of building either themselves, so the
precedence of ``--config``/``--store``, the config's warnings (printed once) and the catch-up of
earlier uploads are decided once. A read-only command never creates a local store that does not
exist yet: it reads an empty one instead.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

import click

if TYPE_CHECKING:
    from ..config import Config
    from ..store.store import Store

__all__ = ["config_of", "open_store"]

_warned: set[str] = set()


def config_of(ctx: click.Context, store: Optional[str] = None) -> "Config":
    """The settings for this command: ``studio --config/--store`` (or a command's own ``--store``)."""
    from .. import console
    from ..config import load_config

    root = ctx.find_root().params
    config = load_config(root.get("config_path"), store=store or root.get("store"))
    for line in config.warnings:
        if line not in _warned:
            _warned.add(line)
            console.warn(line)
    return config


def open_store(ctx: click.Context, *, catch_up: bool = True, read_only: bool = False) -> "Store":
    """The configured store, opened; with ``catch_up``, runs an earlier command left waiting for
    upload are published first, so what the command reads is complete. With ``read_only``, a
    local store that does not exist yet is read as an empty one and not created."""
    from ..store.open import open_store as open_configured

    config = config_of(ctx)
    if read_only:
        absent = _absent_local_store(config.store)
        if absent:
            return _empty_store(absent, config)
    store = open_configured(config)
    if catch_up:
        store.catch_up()
    return store


def _absent_local_store(url: str) -> Optional[str]:
    """The folder of a local store that does not exist, else None."""
    if "://" in url and not url.lower().startswith("file://"):
        return None
    path = url[len("file://"):] if url.lower().startswith("file://") else url
    return None if os.path.lexists(path) else os.path.abspath(path)


def _empty_store(path: str, config: "Config") -> "Store":
    """An empty, in-memory store standing for the local store at ``path`` that is not there."""
    import uuid

    from ..objects.repository import Repository
    from ..storage.memory import MemoryStorage
    from ..store.records import RecordStore
    from ..store.store import Store

    storage = MemoryStorage(f"absent-{uuid.uuid4().hex}")
    repo = Repository(storage)
    # read-only commands never capture into it, so the in-memory repository stands in for both
    return Store("file://" + path, storage, repo, repo, RecordStore(storage), config)  # type: ignore[arg-type]
