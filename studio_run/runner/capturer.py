"""Capture artifacts into the store and keep their run record pointing at the newest snapshots.

Every snapshot records file times, and becomes two manifests: the content one (no times; its digest
is the artifact's identity, so equal content has one digest wherever and whenever it was captured)
and the same entries with each file's mtime (``ArtifactRecord.times``, what restores read). Both
name the same objects, so times cost one small manifest; when nothing changed, not even that.

``Capturer`` owns a run's record while the script runs. ``capture`` snapshots a set of tags and
publishes the record only when some digest changed, so an idle interval costs a stat walk and
nothing else. ``start`` runs that every interval on a background thread with a lowered CPU
priority (Linux nice is per thread and inherited by the hashing threads it starts), so the
script keeps the cores it needs.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import nullcontext
from dataclasses import replace
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

_NAMED = 3  # paths named in one reason; the rest are counted


def _missed(result: SnapshotResult, target_path: str) -> tuple[list[str], list[str]]:
    """Why a snapshot does not hold everything (one line per kind of problem), and the symlinks
    it left out on purpose (to a folder outside, or dangling): those are named, not missing."""
    root = target_path if os.path.isdir(target_path) else os.path.dirname(target_path)
    links = tuple(p for p in result.skipped if os.path.islink(os.path.join(root, p)))
    lost = tuple(p for p in result.skipped if p not in links)
    reasons = []
    if lost:
        reasons.append(f"{_count(lost)} not captured (unreadable or vanished): {_names(lost)}")
    if result.unstable:
        reasons.append(f"{_count(result.unstable)} kept changing, previous version kept: {_names(result.unstable)}")
    return reasons, list(links)


def _count(paths: tuple[str, ...]) -> str:
    return f"{len(paths)} file" + ("s" if len(paths) != 1 else "")


def _names(paths: tuple[str, ...]) -> str:
    shown = ", ".join(repr(p) for p in paths[:_NAMED])
    return shown + (f" and {len(paths) - _NAMED} more" if len(paths) > _NAMED else "")


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
        self.manifest: Optional[Manifest] = None  # the latest snapshot, with file times
        self.content = ""  # the digest of ``manifest`` without times (the artifact's identity)


def _without_times(manifest: Manifest) -> Manifest:
    """The content manifest: the same entries without their mtimes."""
    return Manifest.build((replace(e, mtime_ns=None) for e in manifest.entries), manifest.single_file)


class Capturer:
    """Snapshots targets and publishes the record; thread-safe."""

    def __init__(
        self, store: Store, record: RunRecord, stat_cache: StatCache, store_lock: Optional[StoreLock] = None
    ) -> None:
        self.store = store
        self.record = record
        self.stat_cache = stat_cache
        self.errors: list[str] = []
        self.unstable: set[str] = set()
        self.problems: dict[str, list[str]] = {}  # per tag, what its latest capture missed
        self.links_skipped: set[str] = set()  # symlinks not followed (outside folders, dangling)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._pending = False  # a capture changed the record and it is not published yet
        self._thread: Optional[threading.Thread] = None
        # Held from a capture until the record naming what it found is written (gc waits). A
        # lock taken over from an earlier capturer (the inputs', before the first record) is
        # released by this one's first publish.
        self._store_lock = store_lock or StoreLock(store.local_repo.storage, SHARED)

    @property
    def store_lock(self) -> StoreLock:
        """The shared store lock; held while a capture waits for its record to be written."""
        return self._store_lock

    def capture(
        self,
        targets: list[Target],
        *,
        retries: int = 3,
        progress: Optional[Callable[[int], None]] = None,
        publish: bool = True,
    ) -> list[SnapshotResult]:
        """Snapshot each target; publish the record if any artifact changed.

        Errors are kept, not raised: a capture that fails (a full disk, a file-size limit, a
        damaged cache) must not end the run or the captures of the other targets. What each
        target's latest capture missed is in ``problems`` (one short line per reason). A shared
        store lock is held from the first capture until the record naming it is published, so
        gc never deletes what a capture found already stored.
        """
        results: list[SnapshotResult] = []
        changed = False
        with self._lock, self.store.capturing(self.record):  # staging gc waits, then keeps it
            if not self._store_lock.held:
                try:
                    self._store_lock.acquire(on_wait=console.info)
                except OSError as exc:
                    self.errors.append(f"store lock: {exc.strerror or exc}")
                    return results
            for target in targets:
                result = self._snapshot(target, retries, progress)
                if result is None:
                    continue
                results.append(result)
                self.unstable.update(f"{target.tag}/{p}" for p in result.unstable)
                timed = result.manifest
                art = self.record.artifacts.get(target.tag)
                if art is None or art.digest != target.content or art.times != timed.digest:
                    changed = True
                    self.record.artifacts[target.tag] = ArtifactRecord(
                        tag=target.tag,
                        kind=target.kind,
                        digest=target.content,
                        size=timed.size,
                        files=timed.file_count,
                        snapshots=(art.snapshots if art else 0) + 1,
                        updated_at=time.time(),
                        single_file=timed.single_file,
                        times=timed.digest,
                    )
            try:
                self.store.local_repo.flush()  # objects and manifests durable before any record
            except OSError as exc:
                changed = False  # never publish a record pointing at what may not be on disk
                for target in targets:
                    self.problems[target.tag] = [f"not made durable: {exc.strerror or exc}"]
            if changed and publish:
                self.store.publish(self.record)
                self._pending = False
            elif changed:
                self._pending = True
            if publish and not self._pending:
                self._store_lock.release()
        return results

    def _snapshot(
        self, target: Target, retries: int, progress: Optional[Callable[[int], None]]
    ) -> Optional[SnapshotResult]:
        guard: ContextManager[object] = target.lock if target.lock is not None else nullcontext()
        try:
            with guard:
                result = snapshot(
                    target.path, self.store.local_repo, self.stat_cache, ignore=target.ignore,
                    previous=target.manifest, retries=retries, progress=progress, flush=False,
                    times=True,
                )
            if target.manifest is None or result.manifest.digest != target.manifest.digest:
                target.content = result.content or self.store.local_repo.put_manifest(_without_times(result.manifest))
            target.manifest = result.manifest  # unchanged: the content manifest is the one stored before
        except OSError as exc:
            problem = f"capture failed: {exc.strerror or exc} ({exc.filename or target.path})"
        except Exception as exc:  # noqa: BLE001 - e.g. sqlite's "disk is full": kept, never a lost run
            problem = f"capture failed: {type(exc).__name__}: {exc}"
        else:
            self.problems[target.tag], links = _missed(result, target.path)
            self.links_skipped.update(f"{target.tag}/{p}" for p in links)
            return result
        self.errors.append(f"{target.tag}: {problem.removeprefix('capture failed: ')}")
        self.problems[target.tag] = [problem]
        return None

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
