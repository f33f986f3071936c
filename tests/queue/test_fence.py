"""The fence without a broker: jobs as JSON, exclusive claims, staleness by observation, and
what a delivery decides in each state of a run (in-memory store, no processes)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from studio_run.config import Config
from studio_run.errors import ConfigError
from studio_run.objects.repository import Repository
from studio_run.queue.claims import Claims, StaleWatch
from studio_run.queue.dispatch import decide
from studio_run.queue.jobs import Job, index_key, job_from_message, parse_index_key
from studio_run.queue.timing import Timing
from studio_run.storage.memory import MemoryStorage
from studio_run.store.records import RecordStore, RunRecord, new_run_id
from studio_run.store.stops import request_stop
from studio_run.store.store import Store


def _store() -> Store:
    storage = MemoryStorage(f"fence-{uuid.uuid4().hex}")
    repo = Repository(storage)
    return Store("memory://fence", storage, repo, repo, RecordStore(storage), Config(home="/nonexistent", store=""))  # type: ignore[arg-type]


def _queued(store: Store, **job: object) -> Job:
    record = RunRecord("exp", new_run_id(), status="queued", queue="q")
    store.records.write(record)
    made = Job(experiment="exp", run_id=record.run_id, queue="q", store=store.url, request={"script": "t.py"},
               **job)  # type: ignore[arg-type]
    store.storage.write_bytes(index_key("q", "exp", record.run_id), made.encode())
    return made


def test_a_job_is_plain_json_and_refuses_what_is_not_a_studio_job() -> None:
    job = Job("exp", "20260101T000000Z-abcdef", "q", "s3://b/p", {"script": "t.py", "args": ["--lr", "1"]},
              {"workspace": "ab" * 32}, {"lr": 0.1}, 3, 1.0, 2.0, 0)
    assert Job.decode(job.encode()) == job
    assert job_from_message([[job.to_dict()], {}, {}]) == job
    assert job_from_message([[], {"job": job.to_dict()}, {}]) == job
    with pytest.raises(ValueError):
        job_from_message([["not a job"], {}, {}])
    with pytest.raises(ValueError):
        Job.from_dict(dict(job.to_dict(), format=99))
    assert parse_index_key(index_key("q", "my--exp", "20260101T000000Z-abcdef")) == ("q", "my--exp", "20260101T000000Z-abcdef")
    assert parse_index_key("queue/q/nothing.txt") is None


def test_of_many_workers_claiming_one_attempt_exactly_one_wins() -> None:
    claims = Claims(MemoryStorage(f"claims-{uuid.uuid4().hex}"), "exp", "run")
    wins: list[str] = []
    start = threading.Barrier(8)

    def race(name: str) -> None:
        start.wait()
        if claims.claim(1, name):
            wins.append(name)

    threads = [threading.Thread(target=race, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and claims.newest() == 1 and claims.history()[0].worker == wins[0]


def test_a_heartbeat_is_stale_only_when_seen_unchanged_for_the_whole_period() -> None:
    watch = StaleWatch(after=0.2)
    assert not watch.stale("k", b"1")
    assert not watch.stale("k", b"2")  # changed: fresh again
    deadline = time.monotonic() + 10
    while not watch.stale("k", b"2"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not watch.stale("k", b"3")


@pytest.mark.parametrize("text", ["heartbeat=0", "stale=1,heartbeat=1", "speed=3", "heartbeat"])
def test_bad_worker_timings_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        Timing.from_env({"STUDIO_WORKER_TIMING": text})


def test_a_delivery_claims_a_new_run_and_drops_duplicates_while_it_lives() -> None:
    store = _store()
    job = _queued(store)
    first = decide(store, job, "w1")
    assert first.attempt == 1
    second = decide(store, job, "w2")  # the broker delivered it again (a visibility timeout)
    assert second.attempt == 0 and "running elsewhere" in second.why


def test_a_takeover_claims_the_next_attempt_once_and_marks_the_dead_one_lost() -> None:
    store = _store()
    job = _queued(store)
    assert decide(store, job, "w1").attempt == 1
    takeover = job.taking_over(1)
    assert decide(store, takeover, "w2").attempt == 2
    assert decide(store, takeover, "w3").attempt == 0  # a second republish of the same takeover
    claims = Claims(store.storage, "exp", job.run_id)
    assert [a.end for a in claims.history()] == ["lost", ""]


def test_takeovers_beyond_retries_fail_the_run() -> None:
    store = _store()
    job = _queued(store, retries=1)
    assert decide(store, job, "w1").attempt == 1
    assert decide(store, job.taking_over(1), "w2").attempt == 2
    last = decide(store, job.taking_over(2), "w3")
    assert last.attempt == 0 and last.why.startswith("failed")
    assert store.records.read("exp", job.run_id).status == "failed"
    assert not store.storage.exists(index_key("q", "exp", job.run_id))


def test_a_stopped_or_expired_job_never_starts_and_leaves_the_index() -> None:
    store = _store()
    stopped = _queued(store)
    request_stop(store.storage, "exp", stopped.run_id)
    assert decide(store, stopped, "w").attempt == 0
    assert store.records.read("exp", stopped.run_id).status == "stopped"
    expired = _queued(store, expires_at=time.time() - 1)
    assert decide(store, expired, "w").attempt == 0
    assert store.records.read("exp", expired.run_id).status == "expired"
    for job in (stopped, expired):
        assert not store.storage.exists(index_key("q", "exp", job.run_id))


def test_a_released_run_is_claimed_again_without_counting_as_lost() -> None:
    store = _store()
    job = _queued(store, retries=0)
    assert decide(store, job, "w1").attempt == 1
    Claims(store.storage, "exp", job.run_id).end(1, "released")
    assert decide(store, job, "w2").attempt == 2


def test_a_fenced_out_attempt_cannot_overwrite_the_record_of_the_attempt_that_took_over(capsys) -> None:
    store = _store()
    job = _queued(store)
    first = decide(store, job, "w1")
    assert first.attempt == 1 and first.record is not None
    late = first.record
    late.status = "running"
    assert store.records.write(late)  # attempt 1 runs and publishes its record
    second = decide(store, job.taking_over(1), "w2")  # w1 looked dead (a stalled machine): taken over
    assert second.attempt == 2 and second.record is not None
    newer = second.record
    newer.status, newer.host = "running", "gpu-box-2"
    assert store.records.write(newer)
    late.status, late.exit_code, late.host = "finished", 0, "gpu-box-1"  # attempt 1 ends late after all
    assert store.records.write(late) is False
    stored = store.records.read("exp", job.run_id)
    assert (stored.attempt, stored.status, stored.host) == (2, "running", "gpu-box-2")
    assert f"exp--{job.run_id}: attempt 1 was taken over by a newer attempt; its record is not written" \
        in capsys.readouterr().err
    newer.status, newer.exit_code = "finished", 0  # the owner's own final record goes in
    assert store.records.write(newer)
    assert store.records.read("exp", job.run_id).status == "finished"


def test_the_attempt_guard_leaves_local_runs_and_settled_takeovers_alone() -> None:
    store = _store()
    local = RunRecord("here", new_run_id(), status="finished")  # no queue: no claims to read
    assert store.records.write(local) and store.records.read("here", local.run_id).status == "finished"
    job = _queued(store)
    assert decide(store, job, "w1").attempt == 1
    request_stop(store.storage, "exp", job.run_id)
    settled = decide(store, job.taking_over(1), "w2")  # claims attempt 2, then settles it as stopped
    assert settled.attempt == 0
    stored = store.records.read("exp", job.run_id)
    assert (stored.attempt, stored.status) == (2, "stopped")
