"""Remember which digest a file had, keyed by (device, inode) and checked by size and times.

Re-hashing an unchanged 1 GiB folder on every periodic capture would cost seconds; a stat walk
costs microseconds a file. An entry is trusted only while the file's size, mtime and ctime are
unchanged, and is never recorded for a file modified within ``_RACY_NS`` of being hashed: a write
in the same clock tick would not move the mtime, so such a file is hashed again next time (the
"racy git" rule). Losing any of it only costs a re-hash.

Two stores, for two questions:

- the **stat table** of a captured folder (git's index): every file of its last capture, by
  path, with the stat that vouched for its digest, read with one ``read`` and one ``marshal``
  load (C speed, ~30 ms for 100,000 files) and checked against a BLAKE3 digest of its bytes.
  An unchanged re-capture looks each walked file up in it: one dict lookup a file, no query;
- the SQLite file shared by every run on this machine, keyed by (device, inode), for files the
  table does not know (a folder captured for the first time, or files moved in from elsewhere).
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import struct
import threading
import time
from typing import Iterable, Optional

from ..objects.digest import hash_bytes

__all__ = ["StatCache", "StatKey", "TableMeta", "packed_stat", "stat_key", "table_row"]

StatKey = tuple[int, int, int, int, int]  # dev, ino, size, mtime_ns, ctime_ns
#: What a stat table says about the capture that wrote it (``snapshots.capture`` decides the fields).
TableMeta = tuple
_PACKED = struct.Struct("<QQqqq")  # dev, ino, size, mtime_ns, ctime_ns: 40 bytes
_RACY_NS = 50_000_000
_BATCH = 500
_TABLE_MAGIC = b"studio stat table 1\n"


def stat_key(st: os.stat_result) -> StatKey:
    """The stat fields that must all be unchanged for a cached digest to hold."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def packed_stat(st: os.stat_result) -> bytes:
    """``stat_key`` as the 40 bytes a stat-table row starts with (compact: 100,000 rows in ~15 MB)."""
    return _PACKED.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def table_row(key: StatKey, value: str) -> bytes:
    """A stat-table row: the packed stat, then the cache value (ASCII)."""
    return _PACKED.pack(*key) + value.encode("ascii")


class StatCache:
    """Digest lookups by stat; in memory for this process, persisted in SQLite when ``path`` is set."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._memory: dict[tuple[int, int], tuple[StatKey, str]] = {}
        self._pending: list[bytes] = []  # stat-table rows (``table_row``) not yet in SQLite, in order
        self._tables: dict[str, tuple[dict[str, bytes], TableMeta]] = {}  # without a file: this process's
        self._lock = threading.Lock()

    # -- stat tables ------------------------------------------------------------------------------
    def _table_path(self, root: str) -> Optional[str]:
        if not self.path:
            return None
        name = hash_bytes(os.fsencode(root))[:32]
        return os.path.join(os.path.dirname(self.path), "stat-tables", name)

    def load_table(self, root: str) -> tuple[dict[str, bytes], TableMeta]:
        """The stat table of ``root``'s last capture: ``(path -> row, meta)``; empty when there
        is none or it does not check out (damaged, written for another folder)."""
        path = self._table_path(root)
        if path is None:
            return self._tables.get(root, ({}, ()))
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return {}, ()
        head = len(_TABLE_MAGIC)
        body = data[head + 65:]
        if data[:head] != _TABLE_MAGIC or data[head:head + 64].decode("ascii", "replace") != hash_bytes(body):
            return {}, ()
        try:
            saved_root, rows, meta = marshal.loads(body)
        except (EOFError, ValueError, TypeError):
            return {}, ()
        if saved_root != root or not isinstance(rows, dict) or not isinstance(meta, tuple):
            return {}, ()
        return rows, meta

    def save_table(self, root: str, rows: dict[str, bytes], meta: TableMeta) -> None:
        """Replace ``root``'s stat table (atomically); a failure only costs re-hashing next time."""
        path = self._table_path(root)
        if path is None:
            self._tables[root] = (rows, meta)
            return
        body = marshal.dumps((root, rows, meta))
        tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(_TABLE_MAGIC + hash_bytes(body).encode() + b"\n" + body)
            os.replace(tmp, path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass

    # -- lookups by (device, inode) -----------------------------------------------------------------
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

    def put(self, key: StatKey, digest: str, hashed_at_ns: int) -> bool:
        """Remember a digest computed from a read that started at ``hashed_at_ns``; False when
        the file was modified too recently for its stat to vouch for it (not remembered)."""
        return bool(self.remember(key, digest, hashed_at_ns))

    def remember(self, key: StatKey, digest: str, hashed_at_ns: int) -> bytes:
        """``put``, returning the stat-table row it keeps until ``save`` (b"" when not remembered).

        A capture keeps the same row for its stat table, so 100,000 pending files cost one bytes
        object each, shared, instead of a tuple of five integers beside it (~35 MiB).
        """
        if hashed_at_ns - key[3] < _RACY_NS:
            return b""
        row = table_row(key, digest)
        with self._lock:
            if not self.path:  # with a file, stat tables answer this process's next captures
                self._memory[key[:2]] = (key, digest)
            self._pending.append(row)
        return row

    def save(self) -> None:
        """Write new entries to SQLite in one transaction; failures only cost future re-hashing."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending or not self.path:
            return
        rows = ((*_PACKED.unpack_from(row), row[_PACKED.size:].decode("ascii")) for row in pending)
        try:
            with self._connect() as db:  # rows streamed: no second table of every file in memory
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
