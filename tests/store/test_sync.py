"""The background uploader of remote stores: journal, pointer last, never twice, outages.

The remote store is ``spy://NAME``: the in-memory backend, counting every call, able to go down
on demand, and checking at each record write that everything the record points at is stored.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
import uuid

import pytest

from studio_run.config import Config
from studio_run.errors import StoreUnreachableError
from studio_run.objects.manifest import Manifest
from studio_run.objects.repository import Repository
from studio_run.snapshots.capture import snapshot
from studio_run.snapshots.statcache import StatCache
from studio_run.storage import memory
from studio_run.storage.memory import MemoryStorage
from studio_run.storage.registry import _REGISTRY
from studio_run.storage.retry import RetryingStorage
from studio_run.store.open import open_store
from studio_run.store.records import ArtifactRecord, RecordStore, RunRecord, new_run_id
from studio_run.store.store import Store

SPIES: dict[str, "SpyStorage"] = {}


class SpyStorage(MemoryStorage):
    """A shared in-memory store that counts calls, can be taken down, and checks pointers."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.calls: collections.Counter = collections.Counter()
        self.order: list[tuple[str, str]] = []
        self.down = False
        self.refuse_writes = False
        self.write_delay = 0.0
        self.violations: list[str] = []
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **_options: object) -> "SpyStorage":
        name = url.split("://", 1)[1]
        return SPIES.setdefault(name, cls(name))

    def _call(self, op: str, key: str) -> None:
        if self.down:
            raise StoreUnreachableError(f"{self.url}: connection refused")
        with self._lock:
            self.calls[op, key] += 1
            self.order.append((op, key))

    def count(self, op: str, prefix: str = "") -> int:
        return sum(n for (o, k), n in self.calls.items() if o == op and k.startswith(prefix))

    def read_bytes(self, key: str) -> bytes:
        self._call("read", key)
        return super().read_bytes(key)

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        self._call("write", key)
        if self.refuse_writes:
            raise StoreUnreachableError(f"{self.url}: write refused")
        if self.write_delay:
            time.sleep(self.write_delay)
        if key.startswith("experiments/") and not key.endswith(".env.json"):
            self._check_pointer(data)
        super().write_bytes(key, data, exclusive=exclusive)

    def exists(self, key: str) -> bool:
        self._call("exists", key)
        return super().exists(key)

    def list(self, prefix: str = ""):
        self._call("list", prefix)
        return super().list(prefix)

    def _check_pointer(self, data: bytes) -> None:
        """A record may be written only once all it points at is stored (checked without counting)."""
        for art in json.loads(data)["artifacts"].values():
            manifest_key = Repository.manifest_key(art["digest"])
            if not MemoryStorage.exists(self, manifest_key):
                self.violations.append(f"record before manifest {manifest_key}")
                continue
            manifest = Manifest.from_bytes(MemoryStorage.read_bytes(self, manifest_key))
            packed = self._packed()
            for digest in manifest.digests():
                if not MemoryStorage.exists(self, Repository.object_key(digest)) and digest not in packed:
                    self.violations.append(f"record before object {digest}")

    def _packed(self) -> set[str]:
        """Objects in packs whose pack and index are both stored (read without counting)."""
        packed = set()
        for key in MemoryStorage.list(self, "packs/"):
            if key.endswith(".index") and MemoryStorage.exists(self, key[: -len(".index")] + ".pack"):
                packed.update(d for d, _o, _n in json.loads(MemoryStorage.read_bytes(self, key)))
        return packed


@pytest.fixture
def spy(monkeypatch):
    """A fresh ``spy://`` store; retries in this module wait a millisecond, not seconds."""
    monkeypatch.setitem(_REGISTRY, "spy", ("tests.store.test_sync:SpyStorage", None))
    monkeypatch.setattr(RetryingStorage, "delay", lambda self, attempt: 0.001)
    name = f"s-{uuid.uuid4().hex[:12]}"
    storage = SpyStorage.from_url(f"spy://{name}")
    yield storage
    SPIES.pop(name, None)
    memory.MemoryStorage.reset(name)


@pytest.fixture
def opened():
    """Open stores the way a studio command does; each ``open_`` is a new process's view."""
    stores: list[Store] = []

    def open_(home, spy: SpyStorage, connect: bool = True) -> Store:
        config = Config(home=str(home), store=spy.url.replace("memory://", "spy://"), fsync=False)
        store = open_store(config, connect=connect)
        stores.append(store)
        return store

    yield open_
    for store in stores:
        store.close()


def _tree(folder, files: dict[str, bytes]) -> str:
    """Write files, back-dated so that capture need not wait out the racy-mtime rule."""
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (1_600_000_000, 1_600_000_000))
    return str(folder)


def _record(store: Store, experiment: str, folders: dict[str, str], **fields) -> RunRecord:
    """A run whose artifacts are snapshots of ``folders`` captured into the store's staging."""
    record = RunRecord(experiment=experiment, run_id=new_run_id(), **fields)
    for tag, folder in folders.items():
        result = snapshot(folder, store.local_repo, StatCache(None))
        record.artifacts[tag] = ArtifactRecord(tag, "capture", result.digest, result.manifest.size,
                                               result.manifest.file_count, 1, time.time())
    return record


def _pending_files(store: Store) -> list[str]:
    folder = os.path.join(store.local_repo.storage.root, "pending")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def _published(store: Store, experiment: str, folders: dict[str, str]) -> RunRecord:
    """A run captured, published and uploaded (the uploader given 10 s)."""
    record = _record(store, experiment, folders)
    store.publish(record)
    assert store.syncer().finish(10)
    return record


FILES = {f"d{i % 3}/f{i}.bin": f"content {i}\n".encode() * (i + 1) for i in range(12)}


def test_publish_uploads_objects_then_manifest_then_the_record_last(tmp_path, spy, opened):
    store = opened(tmp_path / "a", spy)
    record = _record(store, "linreg", {"weights": _tree(tmp_path / "w", FILES)})
    store.publish(record)
    assert store.syncer().finish(10) is True

    remote = RecordStore(spy).read("linreg", record.run_id)
    assert remote.to_dict() == record.to_dict()
    manifest = Repository(spy).get_manifest(record.artifacts["weights"].digest)
    assert {e.path: spy.read_bytes(Repository.object_key(e.digest)) for e in manifest.entries} == FILES
    # content writes only: the upload's store lock (locks/, an empty key) comes before them
    writes = [key for op, key in spy.order if op == "write" and not key.startswith("locks/")]
    assert writes[-1] == f"experiments/linreg/{record.run_id}.json"
    assert all(k.startswith("objects/") for k in writes[: len(FILES)])
    assert writes[len(FILES)].startswith("manifests/")
    assert spy.violations == []
    assert _pending_files(store) == []  # journal and lock file gone


def test_many_small_objects_go_up_in_one_pack_index_last_and_read_back_elsewhere(tmp_path, spy, opened):
    a = opened(tmp_path / "a", spy)
    record = _record(a, "packed", {"w": _tree(tmp_path / "w", MANY)})
    a.publish(record)
    assert a.syncer().finish(10)
    writes = [key for op, key in spy.order if op == "write"]
    assert [k.rsplit(".", 1)[-1] for k in writes if k.startswith("packs/")] == ["pack", "index"]
    assert spy.count("write", "objects/") == 0
    first_manifest = next(i for i, k in enumerate(writes) if k.startswith("manifests/"))
    assert max(i for i, k in enumerate(writes) if k.startswith("packs/")) < first_manifest
    assert writes[-1] == f"experiments/packed/{record.run_id}.json" and spy.violations == []

    b = opened(tmp_path / "b", spy)  # another machine reads the packed objects back
    manifest = b.repo.get_manifest(record.artifacts["w"].digest)
    assert {e.path: b.repo.read_object(e.digest) for e in manifest.entries} == MANY
    assert all(b.repo.has_object(e.digest) for e in manifest.entries)
    more = {**MANY, **{f"n{i:03}.bin": f"new {i}\n".encode() for i in range(100)}}
    b.publish(_record(b, "more", {"w": _tree(tmp_path / "w2", more)}))
    assert b.syncer().finish(10)
    indexes = [k for (op, k) in spy.calls if op == "write" and k.endswith(".index")]
    assert len(indexes) == 2  # the 100 new objects only, in a second pack
    second = json.loads(MemoryStorage.read_bytes(spy, indexes[1]))
    assert len(second) == 100 and spy.violations == []


def test_a_reader_never_sees_a_record_whose_objects_are_missing(tmp_path, spy, opened):
    store = opened(tmp_path / "a", spy)
    many = {f"f{i:03}": os.urandom(64) for i in range(200)}
    first = _record(store, "race", {"data": _tree(tmp_path / "d", many)})
    spy.write_delay = 0.001  # widen the window in which a careless order would show
    seen, problems = [], []
    stop = threading.Event()
    reader = Repository(MemoryStorage(spy.url.split("://")[1]))
    records = RecordStore(reader.storage)

    def read_loop() -> None:
        while not stop.wait(0.0005):  # a breath between rounds, or the GIL starves the uploader
            for rec in records.latest():
                for art in rec.artifacts.values():
                    try:
                        manifest = reader.get_manifest(art.digest)
                        missing = [d for d in manifest.digests() if not reader.has_object(d)]
                    except Exception as exc:  # noqa: BLE001 - any failure is what this test looks for
                        problems.append(repr(exc))
                        continue
                    seen.append(art.digest)
                    problems.extend(f"object {d} missing" for d in missing)

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        store.publish(first)
        second = _record(store, "race", {"data": _tree(tmp_path / "d2", {**many, "new": b"x" * 999})})
        store.publish(second)
        assert store.syncer().finish(30) is True
        time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert problems == [] and spy.violations == []
    assert seen  # the reader did read published records


def test_objects_are_uploaded_once_and_checked_once_across_runs_and_processes(tmp_path, spy, opened):
    folder = _tree(tmp_path / "w", FILES)
    store = opened(tmp_path / "a", spy)
    store.publish(_record(store, "one", {"w": folder}))
    assert store.syncer().finish(10)
    _tree(tmp_path / "w", {"extra.txt": b"only in the second run"})
    store.publish(_record(store, "one", {"w": folder}))
    assert store.syncer().finish(10)
    store.close()

    again = opened(tmp_path / "a", spy)  # a later command on the same machine
    again.publish(_record(again, "two", {"w": folder}))
    assert again.syncer().finish(10)

    object_writes = [n for (op, key), n in spy.calls.items() if op == "write" and key.startswith("objects/")]
    assert len(object_writes) == len(FILES) + 1 and set(object_writes) == {1}
    assert spy.count("exists", "objects/") == len(FILES) + 1  # each checked once, by the run that stored it


def test_content_another_machine_stored_is_not_uploaded_again(tmp_path, spy, opened):
    a = opened(tmp_path / "a", spy)
    a.publish(_record(a, "shared", {"w": _tree(tmp_path / "w", FILES)}))
    assert a.syncer().finish(10)
    writes_before = spy.count("write", "objects/")

    b = opened(tmp_path / "b", spy)  # another machine: its own staging, nothing known yet
    exists_before = spy.count("exists", "objects/")
    b.publish(_record(b, "copy2", {"w": _tree(tmp_path / "w2", {**FILES, "more": b"new"})}))
    assert b.syncer().finish(10)
    assert spy.count("write", "objects/") == writes_before + 1  # only the new file
    assert spy.count("exists", "objects/") - exists_before == len(FILES) + 1  # each checked once

    c = opened(tmp_path / "c", spy)  # a third machine capturing exactly what the first did
    c.publish(_record(c, "copy", {"w": str(tmp_path / "w")}))
    assert c.syncer().finish(10)
    assert spy.count("write", "objects/") == writes_before + 1
    assert spy.count("exists", "objects/") - exists_before == len(FILES) + 1  # the manifest vouched


MANY = {f"m{i:03}.bin": f"many {i}\n".encode() for i in range(200)}  # above the listing threshold


@pytest.fixture
def loose(monkeypatch):
    """Small objects uploaded one by one, as when there are too few to pack: the listing logic."""
    from studio_run.store import transfer as upload_snapshot

    monkeypatch.setattr(upload_snapshot, "_PACK_FROM", 10**9)


def _fill(spy: SpyStorage, per_folder: int) -> None:
    """Objects of other snapshots in every fan-out folder, written without counting."""
    for fan in range(256):
        for i in range(per_folder):
            digest = f"{fan:02x}{i:062x}"
            MemoryStorage.write_bytes(spy, Repository.object_key(digest), b"other")


def test_many_objects_are_learnt_by_listing_and_sent_without_asking_each(tmp_path, spy, opened, loose):
    a = opened(tmp_path / "a", spy)
    a.publish(_record(a, "many", {"w": _tree(tmp_path / "w", MANY)}))
    assert a.syncer().finish(10)
    assert spy.count("write", "objects/") == len(MANY) and spy.count("exists", "objects/") == 0
    assert spy.count("list", "objects/") == 2  # one fan-out folder, then (an empty store) the whole

    b = opened(tmp_path / "b", spy)  # another machine: its own staging, nothing known yet
    more = {**MANY, **{f"n{i:03}.bin": f"new {i}\n".encode() for i in range(100)}}
    b.publish(_record(b, "more", {"w": _tree(tmp_path / "w2", more)}))
    assert b.syncer().finish(10)
    object_writes = [n for (op, key), n in spy.calls.items() if op == "write" and key.startswith("objects/")]
    assert len(object_writes) == len(more) and set(object_writes) == {1}  # only the new ones, once
    assert spy.count("exists", "objects/") == 0 and spy.count("list", "objects/") == 4
    assert spy.violations == []


def test_a_large_store_is_listed_one_needed_folder_at_a_time(tmp_path, spy, opened, loose):
    _fill(spy, per_folder=100)  # 25,600 objects: listing them whole would take 26 pages in a row
    store = opened(tmp_path / "a", spy)
    record = _record(store, "big", {"w": _tree(tmp_path / "w", MANY)})
    store.publish(record)
    assert store.syncer().finish(120)  # a generous deadline: 25,600 listed objects, a loaded machine
    folders = {d[:2] for d in store.local_repo.get_manifest(record.artifacts["w"].digest).digests()}
    listed = [key for (op, key), n in spy.calls.items() if op == "list" and key.startswith("objects/")]
    assert sorted(listed) == sorted(f"objects/{fan}/" for fan in folders)  # each once, never objects/
    assert spy.count("write", "objects/") == len(MANY) and spy.count("exists", "objects/") == 0
    assert spy.violations == []


def test_few_objects_in_a_large_store_are_asked_about_one_by_one(tmp_path, spy, opened, loose, monkeypatch):
    from studio_run.store import transfer as upload_snapshot

    monkeypatch.setattr(upload_snapshot, "_LIST_PAGE", 10)  # 100 objects a folder: 10 pages each
    _fill(spy, per_folder=100)
    store = opened(tmp_path / "a", spy)
    store.publish(_record(store, "few", {"w": _tree(tmp_path / "w", MANY)}))
    assert store.syncer().finish(120)  # a generous deadline: 25,600 listed objects, a loaded machine
    probed = [key for (op, key), n in spy.calls.items() if op == "list" and key.startswith("objects/")]
    assert len(probed) == 1  # one folder told the store's size; asking is then cheaper
    in_probe = sum(1 for (op, key) in spy.calls if op == "write" and key.startswith(probed[0]))
    assert spy.count("exists", "objects/") == len(MANY) - in_probe
    assert spy.count("write", "objects/") == len(MANY) and spy.violations == []


def test_a_store_that_refuses_listing_is_asked_about_each_object(tmp_path, spy, opened, loose, monkeypatch):
    def refuse(prefix: str = ""):
        raise PermissionError(f"{spy.url}: list {prefix!r}: AccessDenied")

    monkeypatch.setattr(spy, "list", refuse)
    store = opened(tmp_path / "a", spy)
    store.publish(_record(store, "nolist", {"w": _tree(tmp_path / "w", MANY)}))
    assert store.syncer().finish(10)
    assert spy.count("write", "objects/") == len(MANY) and spy.count("exists", "objects/") == len(MANY)
    assert spy.violations == []


def test_an_outage_keeps_the_run_on_disk_and_sync_delivers_it_later(tmp_path, spy, opened, capsys):
    store = opened(tmp_path / "a", spy)
    record = _record(store, "linreg", {"weights": _tree(tmp_path / "w", FILES)})
    spy.down = True
    store.publish(record)
    record.status = "finished"
    store.publish(record)  # the newest record replaces the pending one
    assert store.syncer().finish(0.3) is False
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 snapshot of linreg" in err and "store unreachable" in err
    assert "studio sync" in err and store.local_repo.storage.root in err
    assert f"linreg--{record.run_id}.json" in _pending_files(store)
    store.close()  # the run ends; its process lets go of the entry

    spy.down = False
    later = opened(tmp_path / "a", spy)
    report = later.syncer().push_pending()
    assert (report.runs, report.busy, report.broken) == (1, [], {})
    assert report.uploaded == sum(len(v) for v in FILES.values())
    assert RecordStore(spy).read("linreg", record.run_id).status == "finished"
    assert spy.violations == [] and _pending_files(later) == []


def test_a_run_held_by_a_live_process_is_left_to_it(tmp_path, spy, opened):
    live = opened(tmp_path / "a", spy)
    spy.refuse_writes = True  # the live run cannot finish before the other process looks
    live.publish(_record(live, "busy", {"w": _tree(tmp_path / "w", FILES)}))
    other = opened(tmp_path / "a", spy, connect=False)
    report = other.syncer().push_pending()
    spy.refuse_writes = False
    assert report.runs == 0 and len(report.busy) == 1 and report.busy[0].startswith("busy--")
    assert live.syncer().finish(10) is True


def test_the_next_command_publishes_what_an_earlier_one_left(tmp_path, spy, opened, capsys):
    store = opened(tmp_path / "a", spy)
    record = _record(store, "left", {"w": _tree(tmp_path / "w", FILES)})
    spy.down = True
    store.publish(record)
    store.close()
    store.syncer()._thread.join(10)  # a round under way ends against the outage, not after it
    spy.down = False
    opened(tmp_path / "a", spy).catch_up()
    assert RecordStore(spy).read("left", record.run_id).run_id == record.run_id
    assert "uploading 1 run left pending" in capsys.readouterr().err


def test_a_damaged_staging_copy_is_reported_and_never_raised(tmp_path, spy, opened, capsys):
    store = opened(tmp_path / "a", spy)
    record = _record(store, "hurt", {"w": _tree(tmp_path / "w", FILES)})
    victim = next(iter(store.local_repo.get_manifest(record.artifacts["w"].digest).digests()))
    path = store.local_repo.storage.path_of(Repository.object_key(victim))
    os.unlink(path)
    store.publish(record)
    assert store.syncer().finish(5) is False
    err = capsys.readouterr().err
    assert "cannot be published" in err and "missing from staging" in err
    assert not spy.exists(f"experiments/hurt/{record.run_id}.json")


def test_after_garbage_collection_known_objects_are_checked_again(tmp_path, spy, opened):
    folder = _tree(tmp_path / "w", FILES)
    store = opened(tmp_path / "a", spy)
    first = _published(store, "gc", {"w": folder})
    manifest = store.local_repo.get_manifest(first.artifacts["w"].digest)
    gone = sorted(manifest.digests())[0]
    remote = Repository(spy)
    remote.mark_sweep()  # what `studio gc` does before it deletes
    remote.delete_object(gone)
    remote.delete_manifest(manifest.digest)
    store.close()

    later = opened(tmp_path / "a", spy)
    later.publish(_record(later, "gc", {"w": folder}))
    assert later.syncer().finish(10)
    assert spy.calls["write", Repository.object_key(gone)] == 2  # uploaded again, not trusted
    assert spy.violations == []


def test_after_garbage_collection_a_live_uploader_forgets_the_packs_it_knew(tmp_path, spy, opened):
    folder = _tree(tmp_path / "w", MANY)
    store = opened(tmp_path / "a", spy)
    first = _published(store, "gc", {"w": folder})
    (name,) = store.repo.packs.packs()
    remote = Repository(spy)
    remote.mark_sweep()  # what `studio gc` does before it deletes
    remote.packs.delete(name)
    remote.delete_manifest(first.artifacts["w"].digest)

    store.publish(_record(store, "gc", {"w": folder}))  # the same process, its pack list loaded
    assert store.syncer().finish(10)
    assert len([k for (op, k) in spy.calls if op == "write" and k.endswith(".index")]) == 1
    assert spy.count("write", "packs/") == 4 and spy.violations == []


def test_versions_count_runs_still_waiting_to_be_uploaded(tmp_path, spy, opened):
    store = opened(tmp_path / "a", spy)
    published = _record(store, "v", {})
    store.publish(published)
    assert store.syncer().finish(10)
    spy.refuse_writes = True  # reads answer, so the listing is real; the upload cannot land
    waiting = _record(store, "v", {})
    store.publish(waiting)
    assert store.run_ids("v") == sorted([published.run_id, waiting.run_id])
    assert store.records.run_ids("v") == [published.run_id]
    spy.refuse_writes = False


class HangingStorage(SpyStorage):
    """A store whose opening does not answer until ``release`` is set (a black-holed endpoint)."""

    release = threading.Event()

    @classmethod
    def from_url(cls, url: str, **options: object) -> "SpyStorage":
        cls.release.wait(10)
        return SpyStorage.from_url(url.replace("hang://", "spy://"), **options)


def test_run_start_waits_a_bounded_time_for_a_store_that_hangs(tmp_path, spy, monkeypatch):
    monkeypatch.setitem(_REGISTRY, "hang", ("tests.store.test_sync:HangingStorage", None))
    HangingStorage.release.clear()
    name = spy.url.split("://")[1]
    store = open_store(Config(home=str(tmp_path), store=f"hang://{name}", fsync=False), connect=False)
    try:
        started = time.monotonic()
        assert store.connect(timeout=0.2) is False
        assert store.run_ids("nothing") == []  # does not wait for the connection either
        assert time.monotonic() - started < 5
        HangingStorage.release.set()
        assert store.connect() is True and store.records.run_ids("nothing") == []
    finally:
        HangingStorage.release.set()
        store.close()
