"""The run index behind ``studio ui``'s runs table: pages, filters and sorts agree with the
records (and with ``studio list``'s version numbers), refreshes read only new and unfinished
records, deletions and damaged records are reflected without failing, lineage goes both ways;
on a local store and on S3."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from studio_run.config import Config
from studio_run.errors import UsageError
from studio_run.store.open import open_store
from studio_run.store.records import ArtifactRecord, ReuseRecord, RunRecord, new_run_id
from studio_run.store.runindex import RunIndex, RunRow
from studio_run.store.store import Store

EXPERIMENTS = ["alpha", "Beta-net", "gamma", "delta.v2", "eps_long_name"]
STATUSES = ["finished", "failed", "finished", "interrupted", "incomplete", "stopped", "timed-out", "queued"]
BASE = 1_700_000_000.0


@pytest.fixture
def store(tmp_path):
    opened = open_store(Config(home=str(tmp_path / "home"), store=str(tmp_path / "store"), fsync=False))
    yield opened
    opened.close()


def _record(i: int, experiment: str = "", **fields) -> RunRecord:
    started = BASE + i * 7.5
    status = fields.pop("status", STATUSES[i % len(STATUSES)])
    record = RunRecord(
        experiment=experiment or EXPERIMENTS[i % len(EXPERIMENTS)], run_id=new_run_id(started), status=status,
        exit_code=None if status == "queued" else i % 3, started_at=started,
        ended_at=None if status == "queued" else started + (i * 37) % 500, host=f"host-{i % 3}",
        hyperparameters={"lr": [0.1, 0.01, 0.001][i % 3], "opt": ["adam", "sgd"][i % 2], "layers": i % 4},
        artifacts={f"t{n}": ArtifactRecord(f"t{n}", "capture", digest="ab" * 32) for n in range(i % 4)},
    )
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def _fill(store: Store, count: int) -> list[RunRecord]:
    records = [_record(i) for i in range(count)]
    for record in records:
        store.records.write(record)
    return records


def _index(store: Store, cache: str) -> RunIndex:
    """An index brought up to date now, that pages do not refresh again by themselves."""
    index = RunIndex(store, cache, max_age=3600)
    index.refresh()
    return index


def _key(row: RunRow) -> tuple[str, str]:
    return row.experiment, row.run_id


def _all_pages(index: RunIndex, limit: int = 50, **kwargs) -> list[RunRow]:
    rows: list[RunRow] = []
    offset = 0
    while True:
        page, total = index.page(offset=offset, limit=limit, **kwargs)
        rows += page
        offset += limit
        if offset >= total:
            assert len(rows) == total
            return rows


def test_pages_cover_every_run_newest_first_with_studio_list_versions(tmp_path, store):
    _fill(store, 300)
    index = RunIndex(store, str(tmp_path / "cache"))
    assert index.refresh() == 300
    rows = _all_pages(index)
    listed = store.records.latest()  # what `studio list --all` shows, newest first
    assert [(r.experiment, r.run_id, r.version) for r in rows] == [
        (r.experiment, r.run_id, r.version) for r in listed]
    first = rows[-1]
    assert first.started_at == BASE and first.status == "finished" and first.host == "host-0"
    assert first.hyperparameters == {"lr": 0.1, "opt": "adam", "layers": 0} and first.artifacts == 0
    queued = next(r for r in rows if r.status == "queued")
    assert queued.duration is None and queued.ended_at is None and queued.exit_code is None


def test_sorts_ascending_and_descending(tmp_path, store):
    records = _fill(store, 200)
    index = _index(store, str(tmp_path / "cache"))
    by_duration = _all_pages(index, sort="duration", descending=True)
    durations = [r.duration for r in by_duration]
    done = [d for d in durations if d is not None]
    assert done == sorted(done, reverse=True) and durations[len(done):] == [None] * (len(durations) - len(done))
    ascending = [r.duration for r in _all_pages(index, sort="duration", descending=False)]
    assert [d for d in ascending if d is not None] == sorted(done) and ascending[-1] is None
    by_name = _all_pages(index, sort="experiment", descending=False)
    assert [(r.experiment, r.version) for r in by_name] == sorted((r.experiment, r.version) for r in by_name)
    by_status = _all_pages(index, sort="status", descending=False)
    assert [r.status for r in by_status] == sorted(r.status for r in records)
    oldest = _all_pages(index, descending=False)
    assert [r.run_id for r in oldest] == [r.run_id for r in sorted(records, key=lambda r: r.started_at)]
    with pytest.raises(UsageError, match="cannot sort runs by 'host'"):
        index.page(sort="host")
    with pytest.raises(UsageError):
        index.page(limit=0)


def test_filters(tmp_path, store):
    records = _fill(store, 240)
    index = _index(store, str(tmp_path / "cache"))

    def expect(rows: list[RunRow], wanted: list[RunRecord]) -> None:
        assert sorted(map(_key, rows)) == sorted((r.experiment, r.run_id) for r in wanted)

    expect(_all_pages(index, experiment="beta"), [r for r in records if r.experiment == "Beta-net"])
    expect(_all_pages(index, experiment="a"), [r for r in records if "a" in r.experiment.lower()])
    expect(_all_pages(index, status="failed"), [r for r in records if r.status == "failed"])
    expect(_all_pages(index, host="host-2"), [r for r in records if r.host == "host-2"])
    expect(_all_pages(index, host="host"), [])  # hosts match whole
    expect(_all_pages(index, hyper={"opt": "sgd"}), [r for r in records if r.hyperparameters["opt"] == "sgd"])
    expect(_all_pages(index, hyper={"lr": "0.010"}), [r for r in records if r.hyperparameters["lr"] == 0.01])
    expect(_all_pages(index, hyper={"lr": "1e-3", "layers": "2"}),
           [r for r in records if r.hyperparameters["lr"] == 0.001 and r.hyperparameters["layers"] == 2])
    expect(_all_pages(index, experiment="gamma", status="finished", host="host-1"),
           [r for r in records if r.experiment == "gamma" and r.status == "finished" and r.host == "host-1"])
    expect(_all_pages(index, hyper={"nope": "1"}), [])
    page, total = index.page(experiment="no such experiment")
    assert page == [] and total == 0
    choices = index.choices()
    assert choices["host"] == ["host-0", "host-1", "host-2"] and choices["names"] == ["layers", "lr", "opt"]
    assert set(choices["status"]) == set(STATUSES)


def test_refresh_reads_only_new_and_unfinished_records(tmp_path, store):
    records = _fill(store, 120)
    cache = str(tmp_path / "cache")
    index = RunIndex(store, cache, max_age=3600)
    assert index.refresh() == 120
    unfinished = sum(1 for r in records if r.status == "queued")
    assert index.refresh() == unfinished
    queued = next(r for r in records if r.status == "queued")
    queued.status, queued.exit_code, queued.ended_at = "finished", 0, queued.started_at + 5
    store.records.write(queued)
    new = [_record(1000 + i, "zeta") for i in range(3)]
    for record in new:
        store.records.write(record)
    assert index.refresh() == unfinished + 3
    row = index.run(queued.experiment, queued.run_id)
    assert row is not None and row.status == "finished" and row.duration == 5
    assert [r.version for r in index.versions("zeta")] == [1, 2, 3]
    again = RunIndex(store, cache, max_age=3600)  # a restart keeps what the file holds
    assert again.refresh() == unfinished - 1 + sum(1 for r in new if r.status == "queued")
    assert again.page()[1] == 123


def test_deletions_are_reflected_and_versions_renumbered(tmp_path, store):
    records = _fill(store, 100)
    index = _index(store, str(tmp_path / "cache"))
    store.records.delete_experiment("gamma")
    gammas = sum(1 for r in records if r.experiment == "gamma")
    alphas = sorted((r for r in records if r.experiment == "alpha"), key=lambda r: r.run_id)
    store.storage.delete(store.records.record_key("alpha", alphas[0].run_id))
    index.refresh()
    rows, total = index.page(limit=1000)
    assert total == 100 - gammas - 1
    assert not any(r.experiment == "gamma" for r in rows)
    assert [(r.run_id, r.version) for r in index.versions("alpha")] == [
        (r.run_id, i) for i, r in enumerate(alphas[1:], 1)]
    assert [(r.run_id, r.version) for r in index.versions("alpha")] == [
        (r.run_id, r.version) for r in store.records.runs("alpha")]


def test_a_damaged_record_is_skipped_and_comes_back_when_restored(tmp_path, store):
    records = _fill(store, 60)
    victim = records[10]
    key = store.records.record_key(victim.experiment, victim.run_id)
    good = store.storage.read_bytes(key)
    store.storage.write_bytes(key, b'{"experiment": "alpha", "run_id"')
    index = _index(store, str(tmp_path / "cache"))
    rows, total = index.page(limit=100)
    assert total == 59 and (victim.experiment, victim.run_id) not in map(_key, rows)
    assert index.damaged() == [key]
    store.storage.write_bytes(key, good)
    index.refresh()
    rows, total = index.page(limit=100)
    assert total == 60 and index.damaged() == []
    assert index.run(victim.experiment, victim.run_id).version == next(
        r.version for r in store.records.runs(victim.experiment) if r.run_id == victim.run_id)


def test_a_dead_runner_on_this_host_shows_as_lost(tmp_path, store):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    lost = _record(1, "crashy", status="running", host=socket.gethostname(), pid=dead, ended_at=None, exit_code=None)
    alive = _record(2, "crashy", status="running", host=socket.gethostname(), pid=os.getpid(), ended_at=None,
                    exit_code=None)
    elsewhere = _record(3, "crashy", status="running", host="another-machine", pid=dead, ended_at=None,
                        exit_code=None)
    for record in (lost, alive, elsewhere):
        store.records.write(record)
    index = _index(store, str(tmp_path / "cache"))
    rows, _total = index.page(status="lost")
    assert [r.run_id for r in rows] == [lost.run_id]
    assert sorted(r.run_id for r in index.page(status="running")[0]) == sorted([alive.run_id, elsewhere.run_id])


def test_lineage_both_ways(tmp_path, store):
    source = _record(1, "prep")
    user = _record(2, "train", reuses=[ReuseRecord("data", "prep", "t0", source.run_id, 1, "cd" * 32)])
    again = _record(3, "train", reuses=[ReuseRecord("data", "prep", "t0", source.run_id, 1, "cd" * 32),
                                        ReuseRecord("more", "prep", "t1", source.run_id, 1, "ef" * 32)])
    for record in (source, user, again, _record(4, "other")):
        store.records.write(record)
    index = _index(store, str(tmp_path / "cache"))
    used, users = index.lineage("prep", source.run_id)
    assert used == [] and [(r.experiment, r.run_id, r.version) for r in users] == [
        ("train", user.run_id, 1), ("train", again.run_id, 2)]
    used, users = index.lineage("train", again.run_id)
    assert [r.run_id for r in used] == [source.run_id] and users == []


def test_a_damaged_index_file_is_rebuilt(tmp_path, store):
    _fill(store, 20)
    cache = tmp_path / "cache"
    index = RunIndex(store, str(cache))
    index.refresh()
    index.close()
    for name in os.listdir(cache):
        (cache / name).write_bytes(b"this is not a database" * 100)
    rebuilt = RunIndex(store, str(cache), max_age=3600)
    assert rebuilt.refresh() == 20 and rebuilt.page()[1] == 20


def test_each_store_has_its_own_index_file(tmp_path, store):
    _fill(store, 5)
    other = open_store(Config(home=str(tmp_path / "home2"), store=str(tmp_path / "store2"), fsync=False))
    cache = str(tmp_path / "cache")
    assert _index(store, cache).page()[1] == 5
    assert _index(other, cache).page()[1] == 0
    assert len([n for n in os.listdir(cache) if n.endswith(".sqlite")]) == 2


def test_on_s3(tmp_path, s3_server, fake_aws_env):
    url = f"s3://runindex-{uuid.uuid4().hex[:12]}/runs"
    store = open_store(Config(home=str(tmp_path / "home"), store=url, store_options={"endpoint": s3_server.endpoint},
                              fsync=False))
    try:
        records = _fill(store, 60)
        index = _index(store, str(tmp_path / "cache"))
        rows = _all_pages(index, limit=25)
        assert [(r.experiment, r.run_id, r.version) for r in rows] == [
            (r.experiment, r.run_id, r.version) for r in store.records.latest()]
        store.records.delete_experiment("alpha")
        index.refresh()
        assert index.page()[1] == 60 - sum(1 for r in records if r.experiment == "alpha")
    finally:
        store.close()


def _eventually(condition, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def test_pages_refresh_by_themselves_newest_runs_first(tmp_path, store):
    records = _fill(store, 300)
    newest = sorted(records, key=lambda r: r.run_id, reverse=True)
    index = RunIndex(store, str(tmp_path / "cache"), max_age=0, wait=0)
    page, _total = index.page()  # an empty index: waits for the newest records, not for all
    assert [r.run_id for r in page] == [r.run_id for r in newest[:50]]
    _eventually(lambda: index.page()[1] == 300 and index.indexing() is None, "all 300 runs indexed")
    late = _record(5000, "late")
    store.records.write(late)
    _eventually(lambda: index.page()[0][0].run_id == late.run_id, "the new run on the first page")
    assert index.last_error == ""
