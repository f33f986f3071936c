"""Capture artifacts into the store and keep their run record pointing at the newest snapshots.

``Capturer`` owns a run's record while the script runs. ``capture`` snapshots a set of tags and
publishes the record only when some digest changed, so an idle interval costs a stat walk and
nothing else. ``start`` runs that every interval on a background thread with a lowered CPU
priority (Linux nice is per thread and inherited by the hashing threads it starts), so the
script keeps the cores it needs.
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from typing import Callable, ContextManager, Optional

from .. import console
from ..background import yield_to_script
from ..objects.manifest import Manifest
from ..snapshots.capture import SnapshotResult, snapshot
from ..snapshots.statcache import StatCache
from ..store.locks import SHARED, StoreLock
from ..store.records import ArtifactRecord, RunRecord
from ..store.store import Store

__all__ = ["Capturer", "Target"]



class Target:
    """One artifact to capture: its tag, local path, kind and optional ignore rules and lock."""

    def __init__(
        self,
        tag: str,
        path: str,
        kind: str,
        ignore: object | None = None,
        lock: Optional[threading.Lock] = None,
    ) -> None:
        self.tag, self.path, self.kind, self.ignore, self.lock = tag, path, kind, ignore, lock
        self.manifest: Optional[Manifest] = None


class Capturer:
    """Snapshots targets and publishes the record; thread-safe."""

    def __init__(self, store: Store, record: RunRecord, stat_cache: StatCache) -> None:
        self.store = store
        self.record = record
        self.stat_cache = stat_cache
        self.errors: list[str] = []
        self.unstable: set[str] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._pending = False  # a capture changed the record and it is not published yet
        self._thread: Optional[threading.Thread] = None
        # Held from a capture until the record naming what it found is written (gc waits).
        self._store_lock = StoreLock(store.local_repo.storage, SHARED)

    def capture(
        self,
        targets: list[Target],
        *,
        retries: int = 3,
        progress: Optional[Callable[[int], None]] = None,
        publish: bool = True,
    ) -> list[SnapshotResult]:
        """Snapshot each target; publish the record if any artifact changed. Errors are kept, not raised."""
        results: list[SnapshotResult] = []
        changed = False
        with self._lock:
            if not self._store_lock.held:
                try:
                    self._store_lock.acquire(on_wait=console.info)
                except OSError as exc:
                    self.errors.append(f"store lock: {exc.strerror or exc}")
                    return results
            for target in targets:
                guard: ContextManager[object] = target.lock if target.lock is not None else nullcontext()
                try:
                    with guard:
                        result = snapshot(
                            target.path, self.store.local_repo, self.stat_cache, ignore=target.ignore,
                            previous=target.manifest, retries=retries, progress=progress, flush=False,
                        )
                except OSError as exc:
                    self.errors.append(f"{target.tag}: {exc.strerror or exc} ({exc.filename or target.path})")
                    continue
                results.append(result)
                self.unstable.update(f"{target.tag}/{p}" for p in result.unstable)
                art = self.record.artifacts.get(target.tag)
                if art is None or art.digest != result.digest:
                    changed = True
                    manifest = result.manifest
                    self.record.artifacts[target.tag] = ArtifactRecord(
                        tag=target.tag,
                        kind=target.kind,
                        digest=result.digest,
                        size=manifest.size,
                        files=manifest.file_count,
                        snapshots=(art.snapshots if art else 0) + 1,
                        updated_at=time.time(),
                        single_file=manifest.single_file,
                    )
                target.manifest = result.manifest
            self.store.local_repo.flush()  # objects and manifests durable before any record
            if changed and publish:
                self.store.publish(self.record)
                self._pending = False
            elif changed:
                self._pending = True
            if publish and not self._pending:
                self._store_lock.release()
        return results

    def publish(self, final: bool = False) -> None:
        """Write the record now (status changes)."""
        with self._lock:
            self.store.publish(self.record, final=final)
            self._pending = False
            self._store_lock.release()

    def start(self, targets: list[Target], interval: float) -> None:
        """Capture ``targets`` every ``interval`` seconds on a background thread until ``stop``."""

        def loop() -> None:
            yield_to_script()
            while not self._stop.wait(interval):
                self.capture(targets)

        self._thread = threading.Thread(target=loop, name="studio-capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop periodic captures, waiting for one under way to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
