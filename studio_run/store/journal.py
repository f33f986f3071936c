"""What is waiting to be uploaded to a remote store, kept on disk so that nothing is ever lost.

A remote store is written through a staging folder on this machine. Captures land there first
(fast, crash-safe); ``studio_run.store.sync`` then uploads them. This module is the durable state that
the uploading needs, beside the staged objects::

    $STUDIOML_HOME/staging/<store id>/
        objects/ab/…, manifests/ab/…    captures, exactly as in a local store
        pending/<exp>--<run>.json       the newest record of a run, until it is published
        pending/<exp>--<run>.env.json   the run's environment, until it is published
        pending/<exp>--<run>.lock       flock-ed by the process that uploads that run
        remote.sqlite                   keys known to be in the remote store

Why these shapes:

- A pending entry holds only the *newest* record of a run: the remote store, like a local one,
  keeps the newest snapshot of each artifact, so records published while an upload is under way
  are merged into one, and a slow store never builds up a backlog of stale records.
- The lock lets one process own a run's entry (the ``studio run`` producing it, or whoever
  picks up an entry whose owner died: the kernel drops an flock with its process, even on
  ``kill -9``), so two processes never publish the same run out of order.
- Staged objects and manifests outlive their upload (a re-capture of an unchanged file needs no
  re-read while its staged copy exists) until ``studio gc`` prunes those no pending record
  refers to (``studio_run.store.staging_gc``); it never touches ``pending/`` or ``remote.sqlite``.
- ``remote.sqlite`` is why an object is never uploaded twice and never checked twice: a key is
  added only after the store confirmed it. ``forget_if_swept`` clears it when garbage collection
  has deleted content since, so it never vouches for a deleted object.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from ..storage.local import LocalStorage
from .records import RunRecord

__all__ = ["Journal", "KnownKeys", "PendingRun", "RunLock", "entry_name", "split_entry_name"]

_PREFIX = "pending/"
_BATCH = 500  # SQLite's default limit on parameters is 999


def entry_name(experiment: str, run_id: str) -> str:
    """The journal name of a run (run ids never contain ``--``, so the split is unambiguous)."""
    return f"{experiment}--{run_id}"


def split_entry_name(name: str) -> tuple[str, str]:
    """``(experiment, run_id)`` of a journal name: the inverse of ``entry_name``."""
    experiment, _, run_id = name.rpartition("--")
    return experiment, run_id


@dataclass(frozen=True)
class PendingRun:
    """One journal entry as read: its exact bytes (to tell whether it was replaced since)."""

    name: str
    data: bytes
    record: RunRecord
    environment: Optional[dict[str, Any]]


class RunLock:
    """An exclusive flock on one run's entry, held until ``release``."""

    def __init__(self, path: str, fd: int) -> None:
        self.path, self._fd = path, fd

    def release(self, remove: bool) -> None:
        """Drop the lock; ``remove`` deletes the lock file first (the entry is gone)."""
        if self._fd < 0:
            return
        if remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self._fd)
        self._fd = -1


class Journal:
    """The pending entries of one staging folder."""

    def __init__(self, staging: LocalStorage) -> None:
        self.staging = staging
        self.folder = staging.path_of(_PREFIX.rstrip("/"))

    def names(self) -> list[str]:
        """Every run with a pending record, oldest run first."""
        try:
            files = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        names = {f[: -len(".json")] for f in files if f.endswith(".json") and not f.endswith(".env.json")}
        return sorted(names, key=lambda n: split_entry_name(n)[1])

    def write_record(self, record: RunRecord) -> str:
        """Replace the run's pending record atomically (and durably, as the staging folder is)."""
        name = entry_name(record.experiment, record.run_id)
        data = json.dumps({"record": record.to_dict()}, sort_keys=True).encode()
        self.staging.write_bytes(f"{_PREFIX}{name}.json", data)
        return name

    def write_environment(self, experiment: str, run_id: str, env: dict[str, Any]) -> str:
        """Keep the run's environment until it is published."""
        name = entry_name(experiment, run_id)
        self.staging.write_bytes(f"{_PREFIX}{name}.env.json", json.dumps(env, sort_keys=True).encode())
        return name

    def read(self, name: str) -> Optional[PendingRun]:
        """The entry, or None when it has been published meanwhile. Damaged files raise ValueError."""
        try:
            data = self.staging.read_bytes(f"{_PREFIX}{name}.json")
        except FileNotFoundError:
            return None
        parsed = json.loads(data)
        try:
            env = json.loads(self.staging.read_bytes(f"{_PREFIX}{name}.env.json"))
        except FileNotFoundError:
            env = None
        return PendingRun(name, data, RunRecord.from_dict(parsed["record"]), env)

    def remove(self, name: str, data: bytes) -> bool:
        """Delete the entry if it still holds ``data``; False when a newer record replaced it.

        The caller makes sure nobody writes the entry meanwhile (it holds the run's lock, and
        the writer's thread lock when the writer is in the same process).
        """
        try:
            if self.staging.read_bytes(f"{_PREFIX}{name}.json") != data:
                return False
            self.staging.delete(f"{_PREFIX}{name}.json")
        except FileNotFoundError:
            pass
        return True

    def remove_environment(self, name: str) -> None:
        """Forget the environment once it is published."""
        try:
            self.staging.delete(f"{_PREFIX}{name}.env.json")
        except FileNotFoundError:
            pass

    def lock(self, name: str, wait: bool) -> Optional[RunLock]:
        """Take the run's lock; None if another process holds it and ``wait`` is False."""
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"{name}.lock")
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return RunLock(path, fd)
            except FileNotFoundError:
                pass
            os.close(fd)  # the holder removed the file as we waited: lock the new one


class KnownKeys:
    """Keys (``objects/…``, ``manifests/…``) the remote store is known to hold; safe across threads."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS known (key TEXT PRIMARY KEY) WITHOUT ROWID")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")

    def unknown(self, keys: Iterable[str]) -> list[str]:
        """The keys not known to be stored, in their given order, without duplicates."""
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(wanted), _BATCH):
                batch = wanted[start:start + _BATCH]
                marks = ",".join("?" * len(batch))
                rows = self._db.execute(f"SELECT key FROM known WHERE key IN ({marks})", batch)
                found.update(row[0] for row in rows)
        return [k for k in wanted if k not in found]

    def add(self, keys: Iterable[str]) -> None:
        """Remember keys the store has confirmed."""
        rows = [(k,) for k in keys]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO known (key) VALUES (?)", rows)
            self._db.execute("COMMIT")

    def forget_if_swept(self, sweep: str) -> None:
        """Forget every key when the store's garbage-collection mark differs from the last one seen."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'sweep'").fetchone()
            if (row[0] if row else "") == sweep:
                return
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM known")
            self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('sweep', ?)", (sweep,))
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
