"""gc racing a capture never deletes what the capture is about to publish, on a local store and on S3.

The race of issue 9: a new run finds its content already stored (left by a deleted experiment,
older than the grace period), and gc sweeps it before the run's record is written; the run then
says ``finished`` and cannot be read back. Both orders are played out here: gc arriving between
"already stored" and the record (it must refuse), and a capture arriving while gc sweeps (it must
wait, then store its content again).
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from studio_run.config import Config
from studio_run.runner.capturer import Capturer, Target
from studio_run.snapshots.statcache import StatCache
from studio_run.store.gc import collect_garbage
from studio_run.store.locks import SHARED, StoreBusy, list_locks
from studio_run.store.open import open_store
from studio_run.store.records import RunRecord, new_run_id
from studio_run.store.store import Store

FILES = {f"f{i}.txt": f"content {i}\n".encode() * 120_000 for i in range(5)}  # 1 MiB+: loose objects, one delete each


@pytest.fixture(params=["local", "s3"])
def config_for(request, tmp_path):
    """``config_for(home)``: the config of one machine (its own home) sharing one store."""
    if request.param == "local":
        url, options = str(tmp_path / "store"), {}
    else:
        server = request.getfixturevalue("s3_server")
        request.getfixturevalue("fake_aws_env")
        url, options = f"s3://race-{uuid.uuid4().hex[:12]}/runs", {"endpoint": server.endpoint}
    stores: list[Store] = []

    def make(home: str) -> Config:
        return Config(home=str(tmp_path / home), store=url, store_options=options, fsync=False)

    make.stores = stores  # type: ignore[attr-defined]
    yield make
    for store in stores:
        store.close()


def _open(config_for, home: str) -> Store:
    store = open_store(config_for(home))
    config_for.stores.append(store)
    return store


def _tree(folder, files: dict[str, bytes]) -> str:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        os.utime(folder / rel, (1_600_000_000, 1_600_000_000))
    return str(folder)


def _capture(store: Store, experiment: str, folder: str) -> RunRecord:
    """What ``studio run`` does for one capture: snapshot, then publish the record (uploaded)."""
    record = RunRecord(experiment=experiment, run_id=new_run_id())
    capturer = Capturer(store, record, StatCache(None))
    capturer.capture([Target("w", folder, "capture")])
    assert capturer.errors == []
    if store.is_remote:
        assert store.syncer().finish(60)
    return record


def _read_back(config_for, record: RunRecord) -> dict[str, bytes]:
    """The run's artifact as another machine reads it, byte for byte."""
    reader = _open(config_for, f"reader-{uuid.uuid4().hex[:6]}")
    stored = reader.records.read(record.experiment, record.run_id)
    manifest = reader.repo.get_manifest(stored.artifacts["w"].digest)
    return {e.path: reader.repo.read_object(e.digest) for e in manifest.entries}


def _wait_for(condition, what: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_gc_between_already_stored_and_the_record_is_refused(tmp_path, config_for, monkeypatch):
    store = _open(config_for, "a")
    folder = _tree(tmp_path / "w", FILES)
    _capture(store, "old", folder)
    store.records.delete_experiment("old")  # its content is unreferenced now, and "old enough" (grace 0)

    outcomes: list[str] = []
    write = store.records.write

    def gc_then_write(record: RunRecord) -> None:  # the instant of the race: found stored, record not yet written
        if record.experiment == "new" and not outcomes:
            try:
                collect_garbage(_open(config_for, "gc"), grace=0, lock_wait=0)
                outcomes.append("swept")
            except StoreBusy as exc:
                outcomes.append(str(exc))
        write(record)

    monkeypatch.setattr(store.records, "write", gc_then_write)
    new = _capture(store, "new", folder)
    assert len(outcomes) == 1 and "in use by a capture on" in outcomes[0]
    assert _read_back(config_for, new) == FILES

    result = collect_garbage(_open(config_for, "gc2"), grace=0, lock_wait=0)  # nothing holds the store now
    assert result.objects_removed == 0
    assert _read_back(config_for, new) == FILES


def test_a_capture_arriving_while_gc_sweeps_waits_and_stores_its_content_again(tmp_path, config_for, monkeypatch):
    store = _open(config_for, "a")
    folder = _tree(tmp_path / "w", FILES)
    _capture(store, "old", folder)
    store.records.delete_experiment("old")

    gc_store = _open(config_for, "gc")
    paused, resume = threading.Event(), threading.Event()
    delete = gc_store.repo.delete_object

    def slow_delete(digest: str) -> None:  # gc holds its lock and has begun deleting
        paused.set()
        assert resume.wait(60)
        delete(digest)

    monkeypatch.setattr(gc_store.repo, "delete_object", slow_delete)
    results: list[object] = []
    gc = threading.Thread(target=lambda: results.append(collect_garbage(gc_store, grace=0, lock_wait=0)))
    gc.start()
    _wait_for(paused.is_set, "gc to start deleting")

    captured: list[RunRecord] = []
    capture = threading.Thread(target=lambda: captured.append(_capture(store, "new", folder)))
    capture.start()
    _wait_for(lambda: any(i.kind == SHARED for i in list_locks(store.storage)), "the capture's lock")
    time.sleep(0.2)  # give a capture that ignored gc's lock the time to publish (it must not have)
    assert store.records.run_ids("new") == []

    resume.set()
    gc.join(60)
    capture.join(60)
    assert len(results) == 1 and results[0].objects_removed == len(FILES)  # type: ignore[attr-defined]
    assert _read_back(config_for, captured[0]) == FILES
