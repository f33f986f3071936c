"""An opened store: where captures are written, where records are published.

Captures always write into a repository on local disk (fast file copies, crash-safe renames).
With the default local store that repository *is* the store. With a remote store (S3, GCS,
SFTP) it is a staging area under ``$STUDIOML_HOME/staging/<store id>``, and ``publish`` hands the
record to ``studio_run.sync``, which uploads objects, then manifests, then the record: the
pointer last, on every backend.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Optional

from .config import Config
from .metadata import RecordStore, RunRecord
from .objects.repository import Repository
from .storage import Storage, open_storage, redact_url
from .storage.local import LocalStorage

__all__ = ["Store", "open_store"]


@dataclass
class Store:
    """The target storage, the local repository captures go to, and the record store."""

    url: str  # redacted, safe to print and record
    storage: Storage
    repo: Repository  # where objects and manifests are read from (the target)
    local_repo: Repository  # where captures write (the target itself when it is local)
    records: RecordStore
    config: Config
    _syncer: Optional[object] = None

    @property
    def is_remote(self) -> bool:
        """Whether captures are staged locally and uploaded."""
        return self.local_repo is not self.repo

    def publish(self, record: RunRecord, final: bool = False) -> None:
        """Make the record visible once everything it points at is stored.

        Local stores write it at once. Remote stores queue it for the background uploader so
        that a slow or unreachable store never blocks the script.
        """
        if not self.is_remote:
            self.records.write(record)
            return
        self.syncer().submit(record, final=final)

    def publish_environment(self, experiment: str, run_id: str, env: dict[str, Any]) -> None:
        """Store a run's environment (packages, git) beside its record."""
        if not self.is_remote:
            self.records.write_environment(experiment, run_id, env)
        else:
            self.syncer().submit_environment(experiment, run_id, env)

    def syncer(self):  # type: ignore[no-untyped-def]
        """The background uploader for a remote store (started on first use)."""
        if self._syncer is None:
            from .sync import Syncer

            self._syncer = Syncer(self)
        return self._syncer

    def close(self) -> None:
        """Release connections."""
        self.storage.close()


def open_store(config: Config) -> Store:
    """Open the configured store, wrapped in retries when it is remote."""
    storage = open_storage(config.store, dict(config.store_options, fsync=config.fsync)
                           if _is_local(config.store) else config.store_options)
    if isinstance(storage, LocalStorage):
        repo = Repository(storage)
        return Store(storage.url, storage, repo, repo, RecordStore(storage), config)
    from .storage.retry import RetryingStorage

    storage = RetryingStorage(storage)
    url = redact_url(config.store)
    store_id = hashlib.sha256(url.encode()).hexdigest()[:16]
    staging = LocalStorage(os.path.join(config.home, "staging", store_id), fsync=config.fsync)
    return Store(url, storage, Repository(storage), Repository(staging), RecordStore(storage), config)


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")
