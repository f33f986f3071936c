"""An opened store: where captures are written, where records are published.

Captures always write into a repository on local disk (fast file copies, crash-safe renames).
With the default local store that repository *is* the store. With a remote store (S3, GCS,
SFTP) it is a staging area under ``$STUDIOML_HOME/staging/<store id>``, and ``publish`` hands the
record to the store's ``Syncer`` (``studio_run.store.sync``), which uploads objects, then
manifests, then the record: the pointer last, on every backend. ``open_store`` builds the parts
and hands them in; a ``Store`` only holds them.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from ..config import Config
from ..errors import StoreError
from ..objects.local import LocalRepository
from ..objects.repository import Repository
from ..storage import Storage
from ..storage.lazy import LazyStorage
from .holds import StagingHolds
from .journal import entry_name
from .records import RecordStore, RunRecord
from .sync import Syncer

__all__ = ["Store"]


@dataclass
class Store:
    """The target storage, the local repository captures go to, and the record store."""

    url: str  # redacted, safe to print and record
    storage: Storage
    repo: Repository  # where objects and manifests are read from (the target)
    local_repo: LocalRepository  # where captures write (the target itself when it is local)
    records: RecordStore
    config: Config
    connection: Optional[LazyStorage] = None  # the remote backend, opened on first use
    # Builds the uploader of a remote store (``open_store`` wires it); called on first use only,
    # so that commands that never publish open no journal.
    build_syncer: Optional[Callable[[], Syncer]] = None
    holds: Optional[StagingHolds] = None  # what gc must not prune from staging (a remote store only)
    _syncer: Optional[Syncer] = None

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
        self.syncer().submit(record)
        if final and self.holds is not None:  # the journal keeps its content from gc from now on
            self.holds.release_run(entry_name(record.experiment, record.run_id))

    @contextlib.contextmanager
    def capturing(self, record: RunRecord) -> Iterator[None]:
        """Around a capture of ``record``'s artifacts into ``local_repo``: on a remote store,
        ``studio gc`` on this machine waits, and what the record points at afterwards stays
        held until its final ``publish`` (its content is staged before its record is pending)."""
        if self.holds is None:
            yield
            return
        with self.holds.writing():
            try:
                yield
            finally:
                digests = [d for a in record.artifacts.values() for d in a.manifests()]
                self.holds.hold(f"{entry_name(record.experiment, record.run_id)}.capture", manifests=digests)

    def publish_environment(self, experiment: str, run_id: str, env: dict[str, Any]) -> None:
        """Store a run's environment (packages, git) beside its record."""
        if not self.is_remote:
            self.records.write_environment(experiment, run_id, env)
        else:
            self.syncer().submit_environment(experiment, run_id, env)

    def syncer(self) -> Syncer:
        """The background uploader for a remote store (built on first use)."""
        if self._syncer is None:
            if self.build_syncer is None:
                raise TypeError(f"{self.url} is written directly: it has no uploader")
            self._syncer = self.build_syncer()
        return self._syncer

    def connect(self, timeout: Optional[float] = None) -> bool:
        """Open the remote backend now, so that a wrong URL, bucket or credentials show at once.

        With ``timeout``, stop waiting after that many seconds and return False: the opening
        goes on in the background and the uploader uses the store once it answers. Errors of an
        opening that ended in time are raised.
        """
        connection = self.connection
        if connection is None or connection.connected:
            return True
        if timeout is None:
            connection.connect()
            return True
        failure: list[BaseException] = []

        def attempt() -> None:
            try:
                connection.connect()
            except BaseException as exc:  # handed to the waiting thread
                failure.append(exc)

        thread = threading.Thread(target=attempt, name="studio-connect", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            return False
        if failure:
            raise failure[0]
        return True

    def run_ids(self, experiment: str) -> list[str]:
        """An experiment's run ids, oldest first: those in the store and, on a remote store,
        those still waiting on this machine to be uploaded (they are versions all the same)."""
        if not self.is_remote:
            return self.records.run_ids(experiment)
        ids = set(self.syncer().pending_run_ids(experiment))
        if self.connection is None or self.connection.connected:
            try:
                ids.update(self.records.run_ids(experiment))
            except (StoreError, OSError):  # a store failing mid-run only leaves the count short
                pass
        return sorted(ids)

    def catch_up(self) -> None:
        """Publish what earlier commands left waiting for a remote store (before reading it)."""
        if self.is_remote:
            self.syncer().catch_up()

    def close(self) -> None:
        """Release connections (without waiting for uploads: ``syncer().finish`` does that)."""
        if self._syncer is not None:
            self._syncer.close()
        self.storage.close()
