"""Captures record file times in a manifest of their own, beside the content manifest whose digest
stays the artifact's identity; remote stores get both before the record, and gc keeps both."""

from __future__ import annotations

import os

from studio_run.objects.repository import Repository
from studio_run.runner.capturer import Capturer, Target
from studio_run.snapshots.statcache import StatCache
from studio_run.store.gc import collect_garbage
from studio_run.store.records import ArtifactRecord, RecordStore, RunRecord, new_run_id
from tests.store.test_sync import opened, spy  # noqa: F401  (fixtures)

OLD = 1_600_000_000_123_456_789


def _folder(root, files: dict[str, int]) -> str:
    """Files holding their own name, each with the given mtime (ns)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, ns in files.items():
        (root / name).write_text(name)
        os.utime(root / name, ns=(ns, ns))
    return str(root)


def _capturer(store, tmp_path, experiment: str = "t") -> Capturer:
    record = RunRecord(experiment=experiment, run_id=new_run_id())
    return Capturer(store, record, StatCache(str(tmp_path / f"statcache-{experiment}.sqlite")))


def test_the_record_points_at_a_content_manifest_and_one_with_times(tmp_path, spy, opened):  # noqa: F811
    store = opened(tmp_path / "a", spy)
    capturer = _capturer(store, tmp_path)
    target = Target("w", _folder(tmp_path / "w", {"a.txt": OLD, "b.txt": OLD + 1}), "capture")
    capturer.capture([target])
    art = capturer.record.artifacts["w"]
    content, timed = store.local_repo.get_manifest(art.digest), store.local_repo.get_manifest(art.times)
    assert [e.mtime_ns for e in content.entries] == [None, None]
    assert [e.mtime_ns for e in timed.entries] == [OLD, OLD + 1]
    assert timed.digests() == content.digests()  # the same objects: times cost one small manifest
    assert art.manifests() == [art.digest, art.times] and art.restore_digest == art.times


def test_an_unchanged_capture_writes_nothing_and_a_touched_file_moves_only_the_times(tmp_path, spy, opened):  # noqa: F811
    store = opened(tmp_path / "a", spy)
    capturer = _capturer(store, tmp_path)
    folder = _folder(tmp_path / "w", {"a.txt": OLD})
    target = Target("w", folder, "capture")
    capturer.capture([target], publish=False)
    first = capturer.record.artifacts["w"]
    manifests = set(store.local_repo.iter_manifests())

    capturer.capture([target], publish=False)  # nothing changed: the previous manifests stand
    assert capturer.record.artifacts["w"] is first
    assert set(store.local_repo.iter_manifests()) == manifests

    os.utime(os.path.join(folder, "a.txt"), ns=(OLD + 5, OLD + 5))  # same bytes, another time
    capturer.capture([target], publish=False)
    now = capturer.record.artifacts["w"]
    assert now.digest == first.digest and now.times != first.times
    assert now.snapshots == 2
    assert store.local_repo.get_manifest(now.times).entries[0].mtime_ns == OLD + 5


def test_a_remote_store_receives_both_manifests_before_the_record(tmp_path, spy, opened):  # noqa: F811
    store = opened(tmp_path / "a", spy)
    capturer = _capturer(store, tmp_path, "remote")
    capturer.capture([Target("w", _folder(tmp_path / "w", {"a.txt": OLD}), "capture")])
    assert store.syncer().finish(10) is True
    art = capturer.record.artifacts["w"]
    writes = [key for op, key in spy.order if op == "write"]
    record_at = writes.index(f"experiments/remote/{capturer.record.run_id}.json")
    for digest in (art.digest, art.times):
        assert writes.index(Repository.manifest_key(digest)) < record_at
    stored = RecordStore(spy).read("remote", capturer.record.run_id)
    assert stored.artifacts["w"].times == art.times
    reader = opened(tmp_path / "b", spy)
    assert reader.repo.get_manifest(art.times).entries[0].mtime_ns == OLD


def test_staging_gc_keeps_a_pending_runs_manifest_with_times_until_it_is_uploaded(tmp_path, spy, opened):  # noqa: F811
    store = opened(tmp_path / "a", spy)
    spy.refuse_writes = True
    capturer = _capturer(store, tmp_path, "pending")
    capturer.capture([Target("w", _folder(tmp_path / "w", {"a.txt": OLD}), "capture")])
    capturer.publish(final=True)
    assert store.syncer().finish(0.5) is False
    art = capturer.record.artifacts["w"]

    collect_garbage(store, grace=0)
    assert store.local_repo.has_manifest(art.times)
    spy.refuse_writes = False
    assert store.syncer().finish(10) is True
    assert opened(tmp_path / "b", spy).repo.get_manifest(art.times).entries[0].mtime_ns == OLD


def test_a_record_from_before_times_restores_from_its_content_manifest():
    old = ArtifactRecord.from_dict({"tag": "w", "kind": "capture", "digest": "0" * 64})
    assert (old.times, old.restore_digest, old.manifests()) == ("", old.digest, [old.digest])
