"""An index of every run in a store, so that a page of runs never reads every record.

StudioML's web page read every experiment on each request and stopped loading after a few
thousand. Here a SQLite file under the studio home (one per store URL) holds one row per run:
what the runs table shows, sorts and filters on, plus hyper-parameters and lineage. A page is
one indexed query, whatever the backend.

The index is refreshed incrementally: one listing of ``experiments/`` (``RecordStore.all_runs``,
the same listing and numbering as ``studio list``), then only the records it has not seen, and
the ones it saw in a state that can still change (``running``, ``queued``) are read again. A
final record never changes except by being deleted, which the listing shows. The storage
interface lists keys without their metadata, so a changed record is found by its status, not by
a modification time: a store-wide listing with times would cost a ``HEAD`` per key on S3.

Records are read newest first and committed in batches, so the first page of a store never
indexed before shows once its newest hundred runs are in (``indexing`` says how far the rest
is). A record that cannot be read (``DamagedRecordError``) is left out and remembered
(``damaged``), and read again at the next refresh in case it was restored.

Refreshes happen on demand (``refresh``, synchronous) and, for every read, when the last one
is older than ``max_age`` seconds: in a background thread that the read waits for up to
``wait`` seconds, so a page never waits long on a slow listing (it then shows the runs as of
the previous refresh, at most a few seconds old). A store that does not answer leaves the last
known rows in place (``last_error`` says why).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional

from ..errors import NotFoundError, StudioError, UsageError
from .records import TERMINAL, DamagedRecordError, RunRecord, effective_status
from .store import Store

__all__ = ["RunIndex", "RunRow", "SORTS"]

#: What ``RunIndex.page`` sorts by: its ``sort`` argument -> the columns ordered on.
SORTS = {
    "started": ("started_at",),
    "duration": ("duration IS NULL", "duration"),
    "experiment": ("experiment", "version"),
    "status": ("status", "started_at"),
}
_SCHEMA = "1"
_READERS = 8  # records read at once during a refresh (round trips on a remote store)
_FIRST_BATCH = 100  # records read and committed before the first page of an empty index is shown
_BATCH = 2000
_HOST = socket.gethostname()
_COLUMNS = "experiment, run_id, version, status, exit_code, started_at, ended_at, duration, host, artifacts, hyper"
_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    experiment TEXT NOT NULL, run_id TEXT NOT NULL, version INTEGER NOT NULL,
    stored TEXT NOT NULL,              -- the status in the record
    status TEXT NOT NULL,              -- what to show: ``lost`` for a dead runner on this host
    exit_code INTEGER, started_at REAL NOT NULL, ended_at REAL, duration REAL,
    host TEXT NOT NULL, pid INTEGER, pid_started INTEGER, artifacts INTEGER NOT NULL, hyper TEXT NOT NULL,
    PRIMARY KEY (experiment, run_id));
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS hyper (
    experiment TEXT NOT NULL, run_id TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, number REAL,
    PRIMARY KEY (experiment, run_id, name));
CREATE INDEX IF NOT EXISTS hyper_value ON hyper (name, value);
CREATE TABLE IF NOT EXISTS reuses (
    experiment TEXT NOT NULL, run_id TEXT NOT NULL, source_experiment TEXT NOT NULL, source_run_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reuses_run ON reuses (experiment, run_id);
CREATE INDEX IF NOT EXISTS reuses_source ON reuses (source_experiment, source_run_id);
CREATE TABLE IF NOT EXISTS damaged (experiment TEXT NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY (experiment, run_id));
"""


@dataclass(frozen=True)
class RunRow:
    """One run as the runs table shows it (``status`` is the effective one, ``lost`` included)."""

    experiment: str
    run_id: str
    version: int
    status: str
    exit_code: Optional[int]
    started_at: float
    ended_at: Optional[float]
    duration: Optional[float]  # seconds; None while running
    host: str
    artifacts: int  # artifacts with a snapshot
    hyperparameters: dict[str, Any] = field(default_factory=dict, hash=False)


def _hyper_text(value: Any) -> tuple[str, Optional[float]]:
    """A hyper-parameter value as filters compare it: its text, and its number when it is one."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    else:
        text = str(value) if isinstance(value, (int, float)) else json.dumps(value, sort_keys=True)
    try:
        number: Optional[float] = float(text) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    return text, number


class _Refresh:
    """One refresh under way in the background, as pages waiting on it see it."""

    def __init__(self) -> None:
        self.first_batch = threading.Event()  # its newest records are in the index (or it ended)
        self.done = threading.Event()
        self.read = 0
        self.total = 0


def _batches(count: int) -> Iterator[int]:
    """Sizes of the batches a refresh reads and commits: a small first one, then larger."""
    done, size = 0, _FIRST_BATCH
    while done < count:
        yield min(size, count - done)
        done += size
        size = _BATCH


class RunIndex:
    """The runs of one store, indexed in ``cache_dir`` (a SQLite file named after the store URL)."""

    def __init__(self, store: Store, cache_dir: str, *, max_age: float = 5.0, wait: float = 0.5) -> None:
        self.store = store
        self.max_age = max_age
        self.wait = wait
        self.last_error = ""  # why the last automatic refresh failed ("" when it did not)
        os.makedirs(cache_dir, exist_ok=True)
        name = hashlib.sha256(store.url.encode()).hexdigest()[:16]
        self.path = os.path.join(cache_dir, f"runs-{name}.sqlite")
        self._lock = threading.RLock()  # the connection, and what refreshes share with pages
        self._refreshing = threading.Lock()  # one refresh at a time
        self._current: Optional[_Refresh] = None  # the last refresh started in the background
        self._closing = False
        self._refreshed = -float("inf")  # monotonic time at which the last complete refresh started
        self._db = self._open()

    # -- the file -------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        """The index file, rebuilt empty when it is damaged or of another schema (it is a cache)."""
        for attempt in range(2):
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                found = db.execute("SELECT name FROM sqlite_master WHERE name='meta'").fetchone()
                schema = found and db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if found and (schema is None or schema[0] != _SCHEMA):
                    db.executescript("DROP TABLE IF EXISTS meta; DROP TABLE IF EXISTS runs; DROP TABLE IF EXISTS hyper;"
                                     "DROP TABLE IF EXISTS reuses; DROP TABLE IF EXISTS damaged;")
                db.executescript(_TABLES)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (_SCHEMA,))
                return db
            except sqlite3.DatabaseError:
                db.close()
                if attempt:
                    raise
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(self.path + suffix):
                        os.unlink(self.path + suffix)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop a background refresh (after its current batch) and close the index file."""
        self._closing = True
        with self._refreshing, self._lock:
            self._db.close()

    # -- refreshing --------------------------------------------------------------------------
    def refresh(self) -> int:
        """Bring the index up to date with the store now; returns how many records were read.

        Store errors (unreachable, refused) are raised; the index keeps what it had.
        """
        with self._refreshing:
            return self._refresh(None)

    def _refresh(self, run: Optional["_Refresh"]) -> int:
        """One listing, then the records to read, newest first, committed in batches: the newest
        runs are on a page long before the ten-thousandth record of a first build is read."""
        started = time.monotonic()
        listed = self.store.records.all_runs()
        wanted = {(name, rid): version for name, ids in listed.items() for version, rid in enumerate(ids, 1)}
        with self._lock:
            known = {(e, r): (stored, version) for e, r, stored, version in
                     self._db.execute("SELECT experiment, run_id, stored, version FROM runs")}
            damaged = {(e, r) for e, r in self._db.execute("SELECT experiment, run_id FROM damaged")}
        to_read = sorted((key for key in wanted if key not in known or known[key][0] not in TERMINAL),
                         key=lambda key: (key[1], key[0]), reverse=True)  # run ids sort by start time
        gone = [key for key in known if key not in wanted] + [key for key in damaged if key not in wanted]
        moved = [(version, *key) for key, version in wanted.items()
                 if key in known and key not in to_read and known[key][1] != version]
        self._write({}, gone, moved, set(), [])
        if run is not None:
            run.total = len(to_read)
        done = 0
        for size in _batches(len(to_read)):
            batch = to_read[done:done + size]
            records, broken = self._read(batch, wanted)
            self._write(records, [], [], broken, [k for k in batch if k not in records and k not in broken])
            done += size
            if run is not None:
                run.read = done
                run.first_batch.set()
                if self._closing:
                    return done
        self._refreshed = started
        self.last_error = ""
        return len(to_read)

    def _read(
        self, keys: list[tuple[str, str]], versions: dict[tuple[str, str], int]
    ) -> tuple[dict[tuple[str, str], RunRecord], set[tuple[str, str]]]:
        """Read records; on a remote store several at once (each one is a round trip)."""

        def one(key: tuple[str, str]) -> Any:
            try:
                return self.store.records.read(key[0], key[1], versions[key])
            except DamagedRecordError:
                return "damaged"
            except NotFoundError:  # deleted since the listing
                return None

        if self.store.is_remote and len(keys) > 1:
            with ThreadPoolExecutor(_READERS, thread_name_prefix="studio-runindex") as pool:
                results = list(pool.map(one, keys))
        else:  # local reads are bound by parsing (the GIL): threads would only add switching
            results = [one(key) for key in keys]
        records = {key: r for key, r in zip(keys, results) if isinstance(r, RunRecord)}
        broken = {key for key, r in zip(keys, results) if r == "damaged"}
        return records, broken

    def _write(
        self,
        records: dict[tuple[str, str], RunRecord],
        gone: list[tuple[str, str]],
        moved: list[tuple[int, str, str]],
        broken: set[tuple[str, str]],
        missing: list[tuple[str, str]],
    ) -> None:
        """Apply part of a refresh in one transaction (readers see the index before or after)."""
        drop = gone + missing + list(broken) + list(records)
        if not drop and not moved:
            return
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for table in ("runs", "hyper", "reuses"):
                    db.executemany(f"DELETE FROM {table} WHERE experiment=? AND run_id=?", drop)
                db.executemany("DELETE FROM damaged WHERE experiment=? AND run_id=?", gone + missing + list(records))
                db.executemany("INSERT OR IGNORE INTO damaged VALUES (?, ?)", list(broken))
                db.executemany("UPDATE runs SET version=? WHERE experiment=? AND run_id=?", moved)
                db.executemany("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                               [_row(r) for r in records.values()])
                db.executemany("INSERT OR REPLACE INTO hyper VALUES (?,?,?,?,?)",
                               [(r.experiment, r.run_id, str(name), *_hyper_text(value))
                                for r in records.values() for name, value in r.hyperparameters.items()])
                db.executemany("INSERT INTO reuses VALUES (?,?,?,?)",
                               [(r.experiment, r.run_id, u.experiment, u.run_id) for r in records.values()
                                for u in r.reuses])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def refresh_if_stale(self) -> None:
        """What every read does first: when the last refresh is older than ``max_age``, start one
        in the background and wait for it up to ``wait`` seconds (a first build of an empty index:
        until its newest records are in). A store that fails to answer leaves the index as it
        was; ``last_error`` says why."""
        with self._lock:
            if time.monotonic() - self._refreshed < self.max_age:
                return
            run = self._current
            if run is None or run.done.is_set():
                run = self._current = _Refresh()
                threading.Thread(target=self._background, args=(run,), name="studio-runindex-refresh",
                                 daemon=True).start()
            empty = self._db.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is None
        if empty:
            run.first_batch.wait()
        run.done.wait(self.wait)

    def _background(self, run: "_Refresh") -> None:
        try:
            with self._refreshing:
                if time.monotonic() - self._refreshed >= self.max_age:  # not refreshed while waiting
                    self._refresh(run)
        except (StudioError, OSError, sqlite3.Error) as exc:
            self.last_error = str(exc)
            with self._lock:
                self._refreshed = time.monotonic()  # try again after max_age, not on every page
        finally:
            run.first_batch.set()
            run.done.set()

    def indexing(self) -> Optional[tuple[int, int]]:
        """``(read, to read)`` while a refresh is reading records (a page may then be partial)."""
        run = self._current
        if run is None or run.done.is_set() or not run.total:
            return None
        return run.read, run.total

    # -- reading --------------------------------------------------------------------------------
    def page(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        sort: str = "started",
        descending: bool = True,
        experiment: str = "",
        status: str = "",
        host: str = "",
        hyper: Optional[Mapping[str, str]] = None,
    ) -> tuple[list[RunRow], int]:
        """One page of runs and how many match in all.

        ``experiment`` matches a substring of the name (any case); ``status`` (the effective
        one: ``lost`` too) and ``host`` match whole; ``hyper`` maps names to values that must
        all match, as text or as numbers (``0.010`` matches ``0.01``).
        """
        if sort not in SORTS:
            raise UsageError(f"cannot sort runs by {sort!r}; use one of {', '.join(SORTS)}")
        if offset < 0 or limit < 1:
            raise UsageError(f"a page needs offset >= 0 and limit >= 1, not {offset} and {limit}")
        where, params = _filters(experiment, status, host, hyper or {})
        way = "DESC" if descending else "ASC"
        order = ", ".join(f"{column} {way}" if "IS NULL" not in column else column for column in SORTS[sort])
        self.refresh_if_stale()
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM runs {where}", params).fetchone()[0]
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM runs {where} ORDER BY {order}, started_at {way}, experiment, run_id "
                "LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
        return [_run_row(row) for row in rows], total

    def run(self, experiment: str, run_id: str) -> Optional[RunRow]:
        """One run's row, or None when the index does not know it."""
        self.refresh_if_stale()
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM runs WHERE experiment=? AND run_id=?",
                                   (experiment, run_id)).fetchone()
        return _run_row(row) if row else None

    def versions(self, experiment: str) -> list[RunRow]:
        """Every run of one experiment (exactly that name), oldest first."""
        self.refresh_if_stale()
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM runs WHERE experiment=? ORDER BY version",
                                    (experiment,)).fetchall()
        return [_run_row(row) for row in rows]

    def lineage(self, experiment: str, run_id: str) -> tuple[list[RunRow], list[RunRow]]:
        """The runs this one reused, and the runs that reused it (each oldest first)."""
        self.refresh_if_stale()
        columns = ", ".join(f"runs.{c.strip()}" for c in _COLUMNS.split(","))
        with self._lock:
            used = self._db.execute(
                f"SELECT DISTINCT {columns} FROM reuses JOIN runs ON runs.experiment = reuses.source_experiment "
                "AND runs.run_id = reuses.source_run_id WHERE reuses.experiment=? AND reuses.run_id=? "
                "ORDER BY runs.started_at", (experiment, run_id)).fetchall()
            users = self._db.execute(
                f"SELECT DISTINCT {columns} FROM reuses JOIN runs ON runs.experiment = reuses.experiment "
                "AND runs.run_id = reuses.run_id WHERE reuses.source_experiment=? AND reuses.source_run_id=? "
                "ORDER BY runs.started_at", (experiment, run_id)).fetchall()
        return [_run_row(r) for r in used], [_run_row(r) for r in users]

    def choices(self) -> dict[str, list[str]]:
        """What the filters can pick from: ``status``, ``host`` and hyper-parameter ``names``, sorted."""
        self.refresh_if_stale()
        with self._lock:
            statuses = [s for (s,) in self._db.execute("SELECT DISTINCT status FROM runs ORDER BY status")]
            hosts = [h for (h,) in self._db.execute("SELECT DISTINCT host FROM runs ORDER BY host")]
            names = [n for (n,) in self._db.execute("SELECT DISTINCT name FROM hyper ORDER BY name")]
        return {"status": statuses, "host": hosts, "names": names}

    def damaged(self) -> list[str]:
        """Keys of the records left out because they could not be read."""
        with self._lock:
            rows = self._db.execute("SELECT experiment, run_id FROM damaged ORDER BY experiment, run_id").fetchall()
        return [self.store.records.record_key(e, r) for e, r in rows]


def _row(record: RunRecord) -> tuple[Any, ...]:
    ended = record.ended_at
    duration = ended - record.started_at if ended else None
    shown = effective_status(record, _HOST)
    artifacts = sum(1 for a in record.artifacts.values() if a.digest)
    return (record.experiment, record.run_id, record.version, record.status, shown, record.exit_code,
            record.started_at, ended, duration, record.host, record.pid, record.pid_started, artifacts,
            json.dumps(record.hyperparameters, sort_keys=True, default=str))


def _run_row(row: tuple[Any, ...]) -> RunRow:
    experiment, run_id, version, status, exit_code, started, ended, duration, host, artifacts, hyper = row
    return RunRow(experiment, run_id, version, status, exit_code, started, ended, duration, host, artifacts,
                  json.loads(hyper))


def _filters(experiment: str, status: str, host: str, hyper: Mapping[str, str]) -> tuple[str, list[Any]]:
    """The WHERE clause and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if experiment:
        clauses.append("instr(lower(experiment), lower(?)) > 0")
        params.append(experiment)
    if status:
        clauses.append("status = ?")
        params.append(status)
    if host:
        clauses.append("host = ?")
        params.append(host)
    for name, value in sorted(hyper.items()):
        text, number = _hyper_text(value)
        clauses.append("EXISTS (SELECT 1 FROM hyper h WHERE h.experiment = runs.experiment AND h.run_id = runs.run_id "
                       "AND h.name = ? AND (h.value = ? OR (h.number IS NOT NULL AND h.number = ?)))")
        params += [name, text, number]
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params
