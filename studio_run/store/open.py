"""Open the configured store: the one place that builds and wires a ``Store``.

A local store is its own repository. A remote one gets retries, a lazy connection (so ``studio
run`` never waits on the network to start), a staging repository on this machine, a cache of
the remote's pack indexes, and the parts of its uploader: the journal of pending runs and the
keys known to be stored, handed to a ``Syncer`` built on first use.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Optional

from ..config import Config
from ..objects.local import LocalRepository
from ..objects.repository import Repository
from ..storage import open_storage, redact_url
from ..storage.lazy import LazyStorage
from ..storage.local import LocalStorage
from ..storage.retry import RetryingStorage
from .holds import StagingHolds
from .journal import Journal, KnownKeys
from .records import RecordStore
from .store import Store
from .sync import Syncer

__all__ = ["open_store"]


def open_store(config: Config, connect: bool = True) -> Store:
    """Open the configured store, wrapped in retries when it is remote.

    A remote store is reached when ``connect`` is true; otherwise on first use or through
    ``Store.connect`` (``studio run`` must not depend on the store answering).
    """
    if _is_local(config.store):
        storage = open_storage(config.store, dict(config.store_options, fsync=config.fsync))
        local = LocalRepository(storage)  # type: ignore[arg-type]  # a file URL opens a LocalStorage
        return Store(storage.url, storage, local, local, RecordStore(storage), config)
    url = redact_url(config.store)
    connection = LazyStorage(url, lambda: open_storage(config.store, config.store_options))
    storage = RetryingStorage(connection)
    store_id = hashlib.sha256(url.encode()).hexdigest()[:16]
    staging = LocalStorage(os.path.join(config.home, "staging", store_id), fsync=config.fsync)
    repo = Repository(storage, pack_index_cache=os.path.join(config.home, "packindex", store_id))
    staging_repo = LocalRepository(staging, packed=False)  # the uploader reads staged objects as files
    records = RecordStore(storage)
    store = Store(url, storage, repo, staging_repo, records, config, connection,
                  build_syncer=_syncer_builder(url, repo, staging_repo, staging, records, connection),
                  holds=StagingHolds(staging))
    if connect:
        store.connect()
    return store


def _syncer_builder(
    url: str, repo: Repository, staging_repo: Repository, staging: LocalStorage, records: RecordStore,
    connection: Optional[LazyStorage],
) -> Callable[[], Syncer]:
    """How a remote store's ``Syncer`` is built from its parts, once a command needs it."""

    def build() -> Syncer:
        known = KnownKeys(os.path.join(staging.root, "remote.sqlite"))
        return Syncer(repo, staging_repo, records, Journal(staging), known, url, connection)

    return build


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")
