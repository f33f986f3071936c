"""Remember which digest a file had, keyed by (device, inode) and checked by size and times.

Re-hashing an unchanged 1 GiB folder on every periodic capture would cost seconds; a stat walk
costs microseconds a file. An entry is trusted only while the file's size, mtime and ctime are
unchanged, and is never recorded for a file modified within ``_RACY_NS`` of being hashed: a write
in the same clock tick would not move the mtime, so such a file is hashed again next time (the
"racy git" rule). The cache is a SQLite file shared by every run on this machine; losing it
only costs a re-hash.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Iterable

__all__ = ["StatCache", "StatKey", "stat_key"]

StatKey = tuple[int, int, int, int, int]  # dev, ino, size, mtime_ns, ctime_ns
_RACY_NS = 50_000_000
_BATCH = 500


def stat_key(st: os.stat_result) -> StatKey:
    """The stat fields that must all be unchanged for a cached digest to hold."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class StatCache:
    """Digest lookups by stat; in memory for this process, persisted in SQLite when ``path`` is set."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._memory: dict[tuple[int, int], tuple[StatKey, str]] = {}
        self._pending: dict[tuple[int, int], tuple[StatKey, str]] = {}
        self._lock = threading.Lock()

    def get_many(self, keys: Iterable[StatKey]) -> dict[StatKey, str]:
        """Digests for every key still valid, from memory first and SQLite for the rest."""
        found: dict[StatKey, str] = {}
        missing: list[StatKey] = []
        with self._lock:
            for key in keys:
                hit = self._memory.get(key[:2])
                if hit is not None and hit[0] == key:
                    found[key] = hit[1]
                else:
                    missing.append(key)
        if missing and self.path and os.path.exists(self.path):
            found.update(self._query(missing))
        return found

    def put(self, key: StatKey, digest: str, hashed_at_ns: int) -> None:
        """Remember a digest computed from a read that started at ``hashed_at_ns``."""
        if hashed_at_ns - key[3] < _RACY_NS:
            return
        with self._lock:
            self._memory[key[:2]] = (key, digest)
            self._pending[key[:2]] = (key, digest)

    def save(self) -> None:
        """Write new entries to SQLite in one transaction; failures only cost future re-hashing."""
        with self._lock:
            rows = [(*key, digest) for key, digest in self._pending.values()]
            self._pending.clear()
        if not rows or not self.path:
            return
        try:
            with self._connect() as db:
                db.executemany("INSERT OR REPLACE INTO stat VALUES (?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error:
            pass

    def _query(self, keys: list[StatKey]) -> dict[StatKey, str]:
        wanted = {key[:2]: key for key in keys}
        found: dict[StatKey, str] = {}
        try:
            db = self._connect()
        except sqlite3.Error:
            return found
        try:
            inodes = list(wanted)
            for start in range(0, len(inodes), _BATCH):
                chunk = inodes[start:start + _BATCH]
                marks = ",".join("(?,?)" for _ in chunk)
                flat = [v for pair in chunk for v in pair]
                sql = f"SELECT dev, ino, size, mtime_ns, ctime_ns, digest FROM stat WHERE (dev, ino) IN (VALUES {marks})"
                for dev, ino, size, mtime, ctime, digest in db.execute(sql, flat):
                    key = wanted.get((dev, ino))
                    if key == (dev, ino, size, mtime, ctime):
                        found[key] = digest
        except sqlite3.Error:
            pass
        finally:
            db.close()
        with self._lock:
            for key, digest in found.items():
                self._memory[key[:2]] = (key, digest)
        return found

    def _connect(self) -> sqlite3.Connection:
        assert self.path
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS stat (dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,"
            " ctime_ns INTEGER, digest TEXT, PRIMARY KEY (dev, ino)) WITHOUT ROWID"
        )
        return db


def now_ns() -> int:
    """Wall-clock nanoseconds, the clock file mtimes are compared against."""
    return time.time_ns()
