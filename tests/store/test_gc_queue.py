"""``studio delete`` and ``studio gc`` leave no job-queue leftovers in the store: a deleted run's
claims and queue index entries go with it; gc removes index entries and claim heartbeats of
final or deleted runs and worker heartbeats silent for over a day, and keeps everything of runs
still queued or running, of damaged records, of live workers, and the attempt history of final
runs (``studio show`` lists it)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from studio_run.config import Config
from studio_run.storage.local import LocalStorage
from studio_run.store.gc import collect_garbage
from studio_run.store.open import open_store
from studio_run.store.queue_gc import WORKER_STALE
from studio_run.store.queue_keys import claims_prefix, index_key, worker_key
from studio_run.store.records import RecordStore, RunRecord, new_run_id
from studio_run.store.stops import request_stop, stop_key
from tests.helpers import studio


def _run(storage: LocalStorage, experiment: str, status: str, *, attempts: int = 1, indexed: bool = True,
         record: bool = True) -> RunRecord:
    """A run as the queue leaves it: record, index entry, claims with heartbeats and ends."""
    made = RunRecord(experiment, new_run_id(), status=status, queue="q", attempt=max(attempts, 1))
    if record:
        RecordStore(storage).write(made)
    if indexed:
        storage.write_bytes(index_key("q", experiment, made.run_id), b"{}")
    prefix = claims_prefix(experiment, made.run_id)
    for n in range(1, attempts + 1):
        storage.write_bytes(f"{prefix}{n}", json.dumps({"attempt": n, "worker": "w"}).encode())
        storage.write_bytes(f"{prefix}{n}.beat", b'{"beat":1}')
        if n < attempts:
            storage.write_bytes(f"{prefix}{n}.end", b'{"end":"lost"}')
    return made


def _keys(storage: LocalStorage, run: RunRecord) -> set[str]:
    """The run's queue keys, named relative to their prefix (``index`` for its index entry)."""
    found = {k[len(claims_prefix(run.experiment, run.run_id)):] for k in storage.list(claims_prefix(run.experiment, run.run_id))}
    if storage.exists(index_key("q", run.experiment, run.run_id)):
        found.add("index")
    return found


def _worker(storage: LocalStorage, root: Path, name: str, age: float) -> str:
    key = worker_key(name)
    storage.write_bytes(key, json.dumps({"worker": name, "at": time.time() - age}).encode())
    then = time.time() - age
    os.utime(root / key, (then, then))
    return key


def test_studio_delete_removes_the_runs_claims_and_queue_index_entries(tmp_path: Path) -> None:
    root = tmp_path / "store"
    storage = LocalStorage(str(root))
    deleted = [_run(storage, "exp", "queued"), _run(storage, "exp", "running", attempts=2)]
    others = [_run(storage, "exp-2", "queued"), _run(storage, "ex", "running")]  # names sharing a prefix
    home = str(tmp_path / "home")
    os.makedirs(home)

    done = studio("delete", "exp", home=home, STUDIO_STORE=str(root))
    assert done.returncode == 0, done.stderr
    assert "deleted exp (2 runs)" in done.stderr
    for run in deleted:
        assert _keys(storage, run) == set()
    assert not list(storage.list("claims/exp/"))
    assert _keys(storage, others[0]) == {"index", "1", "1.beat"}
    assert _keys(storage, others[1]) == {"index", "1", "1.beat"}


def test_deleting_one_run_removes_only_its_queue_keys_and_stop_request(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path / "store"))
    gone, kept = _run(storage, "exp", "queued"), _run(storage, "exp", "queued")
    request_stop(storage, "exp", gone.run_id)
    RecordStore(storage).delete_run("exp", gone.run_id)
    assert _keys(storage, gone) == set() and not storage.exists(stop_key("exp", gone.run_id))
    assert _keys(storage, kept) == {"index", "1", "1.beat"}


def test_gc_removes_queue_leftovers_of_final_and_deleted_runs_and_silent_workers_only(tmp_path: Path) -> None:
    root = tmp_path / "store"
    storage = LocalStorage(str(root))
    finished = _run(storage, "exp", "finished", attempts=2)  # attempt 1 lost, attempt 2 finished
    stopped = _run(storage, "exp", "stopped", attempts=0)  # stopped while queued: only its index entry
    orphaned = _run(storage, "exp", "running", record=False)  # its record was deleted by hand
    queued = _run(storage, "exp", "queued", attempts=0)
    running = _run(storage, "exp", "running")
    released = _run(storage, "exp", "queued", attempts=1)  # given back by a stopped worker
    damaged = _run(storage, "bad", "running")
    (root / RecordStore.record_key("bad", damaged.run_id)).write_text('{"artifacts": {"w": "' + "ab" * 32)  # cut short
    live = _worker(storage, root, "live-1", 3.0)
    quiet = _worker(storage, root, "quiet-1", WORKER_STALE - 3600)  # switched off for 23 h: kept
    dead = _worker(storage, root, "dead-1", WORKER_STALE + 3600)
    store = open_store(Config(home=str(tmp_path / "home"), store=str(root), fsync=False))

    dry = collect_garbage(store, grace=0, dry_run=True)
    assert (dry.queue.index, dry.queue.claims, dry.queue.workers) == (3, 4, 1)
    assert _keys(storage, finished) == {"index", "1", "1.beat", "1.end", "2", "2.beat"}  # a dry run removes nothing

    result = collect_garbage(store, grace=0)
    assert (result.queue.index, result.queue.claims, result.queue.workers) == (3, 4, 1)
    assert _keys(storage, finished) == {"1", "1.end", "2"}  # its attempt history stays for `studio show`
    assert _keys(storage, stopped) == set()
    assert _keys(storage, orphaned) == set()
    assert _keys(storage, queued) == {"index"}
    assert _keys(storage, running) == {"index", "1", "1.beat"}
    assert _keys(storage, released) == {"index", "1", "1.beat"}
    assert _keys(storage, damaged) == {"index", "1", "1.beat"}
    assert storage.exists(live) and storage.exists(quiet) and not storage.exists(dead)
    assert collect_garbage(store, grace=0).queue.total == 0  # nothing more to do


def test_studio_gc_says_how_many_queue_keys_it_removed(tmp_path: Path) -> None:
    root = tmp_path / "store"
    storage = LocalStorage(str(root))
    _run(storage, "exp", "finished")
    _run(storage, "exp", "queued")
    home = str(tmp_path / "home")
    os.makedirs(home)
    done = studio("gc", "--grace", "0s", home=home, STUDIO_STORE=str(root))
    assert done.returncode == 0, done.stderr
    assert "removed 2 queue keys of final or deleted runs and long-silent workers" in done.stderr
    again = studio("gc", "--grace", "0s", home=home, STUDIO_STORE=str(root))
    assert again.returncode == 0 and "queue keys" not in again.stderr
