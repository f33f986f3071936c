"""``studio gc`` on a remote store prunes this machine's staged copies and cached pack indexes."""

from __future__ import annotations

import os
import time

import pytest

from studio_run.cli.main import main
from studio_run.objects.digest import hash_bytes
from studio_run.objects.repository import Repository
from studio_run.snapshots.capture import SnapshotResult, snapshot
from studio_run.snapshots.statcache import StatCache
from studio_run.store.gc import collect_garbage
from studio_run.store.records import ArtifactRecord, RecordStore, RunRecord, new_run_id
from tests.store.test_sync import FILES, MANY, _published, _record, _tree, opened, spy  # noqa: F401  (fixtures)


def _staged(store) -> dict[str, int]:
    """Every staged object and manifest key with its size."""
    root = store.local_repo.storage.root
    found = {}
    for top in ("objects", "manifests"):
        for folder, _dirs, files in os.walk(os.path.join(root, top)):
            for name in files:
                path = os.path.join(folder, name)
                found[os.path.relpath(path, root)] = os.path.getsize(path)
    return found


def _keys(store, digest: str) -> set[str]:
    """The staging keys of one snapshot: its manifest and its objects."""
    manifest = store.local_repo.get_manifest(digest)
    return {Repository.manifest_key(digest)} | {Repository.object_key(d) for d in manifest.digests()}


def _capture(store, folder: str, cache: StatCache, previous=None) -> SnapshotResult:
    """Capture ``folder`` into staging through a stat cache, as a run does."""
    return snapshot(folder, store.local_repo, cache, previous=previous)


def _as_record(experiment: str, run_id: str, tag: str, result: SnapshotResult, snapshots: int = 1) -> RunRecord:
    """The record of a run whose artifact ``tag`` is ``result``."""
    record = RunRecord(experiment=experiment, run_id=run_id)
    record.artifacts[tag] = ArtifactRecord(tag, "capture", result.digest, result.manifest.size,
                                           result.manifest.file_count, snapshots, time.time())
    return record


def test_staged_copies_of_uploaded_runs_are_pruned_and_the_journal_left_alone(tmp_path, spy, opened):  # noqa: F811
    store = opened(tmp_path / "a", spy)
    record = _published(store, "up", {"w": _tree(tmp_path / "w", FILES)})
    staged = _staged(store)
    assert len(staged) == len(FILES) + 1

    result = collect_garbage(store, grace=0)
    assert result.objects_removed == 0  # the run is live in the store
    local = result.local
    assert local is not None
    assert (local.objects_removed, local.manifests_removed) == (len(FILES), 1)
    assert local.bytes_removed == sum(staged.values())
    assert _staged(store) == {}
    assert os.path.isfile(os.path.join(store.local_repo.storage.root, "remote.sqlite"))

    reader = opened(tmp_path / "b", spy)  # the store still has the run whole
    manifest = reader.repo.get_manifest(record.artifacts["w"].digest)
    assert {e.path: reader.repo.read_object(e.digest) for e in manifest.entries} == FILES


def test_a_pending_runs_staged_content_is_kept_and_uploads_later(tmp_path, spy, opened):  # noqa: F811
    store = opened(tmp_path / "a", spy)
    done = _published(store, "done", {"w": _tree(tmp_path / "d", {"only-done.txt": b"done\n", "both.txt": b"b\n"})})
    spy.refuse_writes = True
    waiting = _record(store, "waiting", {"w": _tree(tmp_path / "p", {"only-wait.txt": b"wait\n", "both.txt": b"b\n"})})
    store.publish(waiting)
    assert store.syncer().finish(0.5) is False
    live = _keys(store, waiting.artifacts["w"].digest)
    pending = sorted(os.listdir(os.path.join(store.local_repo.storage.root, "pending")))

    local = collect_garbage(store, grace=0).local
    assert local is not None and (local.objects_removed, local.manifests_removed) == (1, 1)
    assert set(_staged(store)) == live  # the shared file's object too
    assert Repository.manifest_key(done.artifacts["w"].digest) not in live
    assert sorted(os.listdir(os.path.join(store.local_repo.storage.root, "pending"))) == pending

    spy.refuse_writes = False
    assert store.syncer().finish(10) is True
    assert RecordStore(spy).read("waiting", waiting.run_id).run_id == waiting.run_id
    assert spy.violations == []


def test_staged_content_younger_than_the_grace_period_is_kept(tmp_path, spy, opened):  # noqa: F811
    store = opened(tmp_path / "a", spy)
    _published(store, "young", {"w": _tree(tmp_path / "w", FILES)})
    staged = _staged(store)

    local = collect_garbage(store, grace=3600).local
    assert local is not None
    assert (local.objects_removed, local.manifests_removed, local.bytes_removed) == (0, 0, 0)
    assert local.kept_young == len(staged)
    assert _staged(store) == staged


def test_a_dry_run_counts_what_would_go_and_deletes_nothing(tmp_path, spy, opened):  # noqa: F811
    store = opened(tmp_path / "a", spy)
    _published(store, "dry", {"w": _tree(tmp_path / "w", FILES)})
    staged = _staged(store)

    dry = collect_garbage(store, grace=0, dry_run=True).local
    assert dry is not None and dry.bytes_removed == sum(staged.values())
    assert _staged(store) == staged
    real = collect_garbage(store, grace=0).local
    assert real == dry and _staged(store) == {}


def test_a_capture_after_pruning_stores_the_files_again_and_its_run_uploads(tmp_path, spy, opened):  # noqa: F811
    store = opened(tmp_path / "a", spy)
    folder = _tree(tmp_path / "w", FILES)
    cache = StatCache(str(tmp_path / "stat.sqlite"))  # shared by runs, as on a real machine
    first = _capture(store, folder, cache)
    store.publish(_as_record("again", new_run_id(), "w", first))
    assert store.syncer().finish(10)
    collect_garbage(store, grace=0)
    assert _staged(store) == {}

    second = _capture(store, folder, cache)  # a new run: the stat cache names objects no longer staged
    assert second.files_read == len(FILES) and second.digest == first.digest
    assert set(_staged(store)) == _keys(store, second.digest)
    record = _as_record("again", new_run_id(), "w", second)
    store.publish(record)
    assert store.syncer().finish(10)
    assert RecordStore(spy).read("again", record.run_id).artifacts["w"].digest == second.digest
    assert spy.violations == []


@pytest.mark.parametrize("files", [FILES, MANY], ids=["loose", "packed"])
def test_a_live_run_whose_previous_snapshot_was_pruned_still_uploads_after_a_sweep(
    tmp_path, spy, opened, files  # noqa: F811
):
    """A running ``studio run`` keeps its previous snapshot in memory and takes unchanged files from
    it without looking in staging; after gc pruned them (and swept the store, so the uploader
    forgot what it knew) its next snapshot must still be published."""
    store = opened(tmp_path / "a", spy)
    _published(store, "dead", {"w": _tree(tmp_path / "x", {"dead.txt": b"dead\n"})})
    RecordStore(spy).delete_experiment("dead")  # something for gc to sweep: the store's mark changes
    folder = _tree(tmp_path / "w", files)
    cache = StatCache(str(tmp_path / "stat.sqlite"))
    run_id = new_run_id()
    first = _capture(store, folder, cache)
    store.publish(_as_record("live", run_id, "w", first))
    assert store.syncer().finish(10)

    result = collect_garbage(store, grace=0)
    assert result.manifests_removed == 1 and result.local is not None and _staged(store) == {}
    changed = min(files)
    (tmp_path / "w" / changed).write_bytes(b"changed\n")
    os.utime(tmp_path / "w" / changed, (1_600_000_100, 1_600_000_100))
    second = _capture(store, folder, cache, previous=first.manifest)
    assert second.files_read == 1  # the rest trusted from the previous snapshot, not from staging
    store.publish(_as_record("live", run_id, "w", second, snapshots=2))
    assert store.syncer().finish(10) is True
    assert spy.violations == []

    reader = opened(tmp_path / "b", spy)
    manifest = reader.repo.get_manifest(RecordStore(spy).read("live", run_id).artifacts["w"].digest)
    expected = dict(files, **{changed: b"changed\n"})
    assert {e.path: reader.repo.read_object(e.digest) for e in manifest.entries} == expected


def test_a_record_reaching_the_journal_after_its_manifest_was_pruned_is_published(
    tmp_path, spy, opened  # noqa: F811
):
    """A capture that finds its snapshot already staged (unchanged files) and a prune that runs
    before its record is pending: the store's copy of the manifest stands for the staged one."""
    store = opened(tmp_path / "a", spy)
    _published(store, "dead", {"w": _tree(tmp_path / "x", {"dead.txt": b"dead\n"})})
    RecordStore(spy).delete_experiment("dead")
    first = _published(store, "same", {"w": _tree(tmp_path / "w", FILES)})
    collect_garbage(store, grace=0)  # sweeps "dead" (the uploader forgets what it knew) and prunes
    assert _staged(store) == {}

    later = RunRecord(experiment="same", run_id=new_run_id(), artifacts=dict(first.artifacts))
    store.publish(later)
    assert store.syncer().finish(10) is True
    assert RecordStore(spy).read("same", later.run_id).artifacts == first.artifacts
    assert spy.violations == []


def test_an_object_neither_staging_nor_the_store_holds_still_breaks_the_run(
    tmp_path, spy, opened, capsys  # noqa: F811
):
    store = opened(tmp_path / "a", spy)
    record = _record(store, "hurt", {"w": _tree(tmp_path / "w", FILES)})
    manifest = store.local_repo.get_manifest(record.artifacts["w"].digest)
    store.local_repo.delete_object(min(manifest.digests()))
    store.publish(record)
    assert store.syncer().finish(5) is False
    assert "missing from staging" in capsys.readouterr().err


def test_cached_indexes_of_swept_packs_are_removed(tmp_path, spy, opened):  # noqa: F811
    writer = opened(tmp_path / "a", spy)
    keep = {f"k{i:03}.txt": f"keep {i}\n".encode() for i in range(40)}
    drop = {f"d{i:03}.txt": f"drop {i}\n".encode() for i in range(40)}
    _published(writer, "keep", {"w": _tree(tmp_path / "k", keep)})
    _published(writer, "drop", {"w": _tree(tmp_path / "d", drop)})
    reader = opened(tmp_path / "b", spy)
    packs = reader.repo.packs.packs()  # read once: both indexes cached on this machine
    cache = reader.repo.packs.index_cache
    assert sorted(os.listdir(cache)) == sorted(packs)
    RecordStore(spy).delete_experiment("drop")
    (dead,) = [name for name, members in packs.items() if set(members) & {hash_bytes(data) for data in drop.values()}]

    dry = collect_garbage(reader, grace=0, dry_run=True).local
    assert dry is not None and dry.indexes_removed == 1 and sorted(os.listdir(cache)) == sorted(packs)
    swept = collect_garbage(reader, grace=0).local
    assert swept is not None and swept.indexes_removed == 1
    assert sorted(os.listdir(cache)) == sorted(set(packs) - {dead})


def test_an_unreadable_pending_record_keeps_every_staged_file(tmp_path, spy, opened):  # noqa: F811
    store = opened(tmp_path / "a", spy)
    _published(store, "up", {"w": _tree(tmp_path / "w", FILES)})
    staged = _staged(store)
    bad = os.path.join(store.local_repo.storage.root, "pending", "bad--20260101T000000000000Z-abcdef.json")
    with open(bad, "w") as f:
        f.write("{not json")

    local = collect_garbage(store, grace=0).local
    assert local is not None and "cannot be read" in local.unreadable
    assert _staged(store) == staged


def test_gc_says_what_it_pruned_on_this_machine(tmp_path, spy, opened, monkeypatch, capsys):  # noqa: F811
    home = tmp_path / "a"
    _published(opened(home, spy), "cli", {"w": _tree(tmp_path / "w", FILES)})
    monkeypatch.setenv("STUDIOML_HOME", str(home))
    url = spy.url.replace("memory://", "spy://")
    for argv, verb in ((["--store", url, "gc", "--grace", "1ms", "--dry-run"], "would remove"),
                       (["--store", url, "gc", "--grace", "1ms"], "removed")):
        time.sleep(0.01)
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
        err = capsys.readouterr().err
        assert f"on this machine {verb} {len(FILES) + 1} staged files" in err, err
    assert _staged(opened(home, spy)) == {}


def test_gc_waits_for_a_capture_in_progress_and_keeps_what_it_is_about_to_make_pending(
    tmp_path, spy, opened  # noqa: F811
):
    # The capture writes its objects and manifest before its record is pending. gc --grace 0
    # started in between must neither see them unheld nor take them.
    import threading

    store = opened(tmp_path / "a", spy)
    spy.refuse_writes = True  # staging holds the only copy
    record = RunRecord(experiment="race", run_id=new_run_id())
    results: list = []
    with store.capturing(record):
        result = _capture(store, _tree(tmp_path / "w", FILES), StatCache(None))
        gc = threading.Thread(target=lambda: results.append(collect_garbage(store, grace=0)))
        gc.start()
        gc.join(0.5)
        assert gc.is_alive() and results == []  # waiting for the capture, deleting nothing
        record.artifacts["w"] = _as_record("race", record.run_id, "w", result).artifacts["w"]
    gc.join(60)
    assert not gc.is_alive() and results[0].local.objects_removed == 0
    live = _keys(store, result.digest)
    assert live <= set(_staged(store))

    store.publish(record, final=True)  # pending now; the hold gives way to the journal
    assert collect_garbage(store, grace=0).local.objects_removed == 0
    assert live <= set(_staged(store))
    spy.refuse_writes = False
    assert store.syncer().finish(10) is True
    assert spy.violations == []
    reader = opened(tmp_path / "b", spy)
    manifest = reader.repo.get_manifest(result.digest)
    assert {e.path: reader.repo.read_object(e.digest) for e in manifest.entries} == FILES


def test_a_capture_not_yet_published_stays_held_until_its_final_publish(tmp_path, spy, opened):  # noqa: F811
    store = opened(tmp_path / "a", spy)
    record = RunRecord(experiment="held", run_id=new_run_id())
    with store.capturing(record):  # a capture with publish=False: its record comes later
        result = _capture(store, _tree(tmp_path / "w", FILES), StatCache(None))
        record.artifacts["w"] = _as_record("held", record.run_id, "w", result).artifacts["w"]
    live = _keys(store, result.digest)

    assert collect_garbage(store, grace=0).local.objects_removed == 0
    assert live <= set(_staged(store))
    store.publish(record, final=True)
    assert store.syncer().finish(10) is True
    assert os.listdir(os.path.join(store.local_repo.storage.root, "holds")) == [".lock"]
    local = collect_garbage(store, grace=0).local
    assert local.objects_removed == len(FILES) and not live & set(_staged(store))  # uploaded: prunable now


def test_gc_gives_up_on_staging_while_captures_keep_writing(tmp_path, spy, opened, monkeypatch):  # noqa: F811
    from studio_run.store import staging_gc

    monkeypatch.setattr(staging_gc, "_WRITERS_WAIT", 0.1)
    store = opened(tmp_path / "a", spy)
    _published(store, "old", {"w": _tree(tmp_path / "w", FILES)})
    staged = _staged(store)
    with store.capturing(RunRecord(experiment="busy", run_id=new_run_id())):
        local = collect_garbage(store, grace=0).local
    assert local.busy and "run `studio gc` again later" in local.unreadable
    assert local.objects_removed == 0 and _staged(store) == staged
