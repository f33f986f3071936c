"""``studio gc``: packs go only when none of their objects is live (remote store); on a full disk it
frees space, a second gc fails in one line, stray files and damaged records and manifests are named
while the rest is swept, keys vanishing under it are skipped."""

from __future__ import annotations

import errno
import os
import re
import subprocess

import pytest

from studio_run.config import Config
from studio_run.objects.packs import index_key, pack_key
from studio_run.objects.repository import Repository
from studio_run.runner.capturer import Capturer, Target
from studio_run.snapshots.statcache import StatCache
from studio_run.storage.local import LocalStorage
from studio_run.store.gc import collect_garbage
from studio_run.store.locks import EXCLUSIVE, StoreLock
from studio_run.store.open import open_store
from studio_run.store.records import RecordStore, RunRecord, new_run_id
from tests.helpers import studio
from tests.store.test_sync import _record, _tree, opened, spy  # noqa: F401  (fixtures)

KEEP = {f"k{i:03}.txt": f"keep {i}\n".encode() for i in range(40)}
DROP = {f"d{i:03}.txt": f"drop {i}\n".encode() for i in range(40)}


def test_a_pack_of_dead_objects_is_swept_and_a_live_one_kept(tmp_path, spy, opened):  # noqa: F811
    store = opened(tmp_path / "a", spy)
    kept = _record(store, "keep", {"w": _tree(tmp_path / "k", KEEP)})
    dropped = _record(store, "drop", {"w": _tree(tmp_path / "d", DROP)})
    store.publish(kept)
    store.publish(dropped)
    assert store.syncer().finish(10)
    packs = store.repo.packs.packs()
    assert len(packs) == 2
    RecordStore(spy).delete_experiment("drop")

    result = collect_garbage(store, grace=0)
    assert result.objects_removed == len(DROP)
    (live,) = [name for name, members in packs.items() if set(members) - set(store.repo.packs.digests()) == set()]
    assert spy.exists(index_key(live)) and spy.exists(pack_key(live))
    assert len([k for k in spy.list("packs/") if k.endswith(".index")]) == 1

    reader = opened(tmp_path / "b", spy)
    manifest = reader.repo.get_manifest(kept.artifacts["w"].digest)
    assert {e.path: reader.repo.read_object(e.digest) for e in manifest.entries} == KEEP

# -- gc on a local store: full disk, a second gc, stray files, damaged records and manifests ------------
def _cli_home(tmp_path) -> str:
    (tmp_path / "cli").mkdir(exist_ok=True)
    return str(tmp_path / "cli")


def _local(tmp_path, root) -> "object":
    return open_store(Config(home=str(tmp_path / "home"), store=str(root), fsync=False))


def _run(store, experiment: str, files: dict[str, bytes], folder) -> RunRecord:
    _tree(folder, files)
    record = RunRecord(experiment=experiment, run_id=new_run_id())
    capturer = Capturer(store, record, StatCache(None))
    capturer.capture([Target("w", str(folder), "capture")])
    assert capturer.errors == []
    return record


def _contents(store, record: RunRecord) -> dict[str, bytes]:
    manifest = store.repo.get_manifest(store.records.read(record.experiment, record.run_id).artifacts["w"].digest)
    return {e.path: store.repo.read_object(e.digest) for e in manifest.entries}


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs (root can mount one here); where it cannot be mounted, a store whose
    writes of any byte fail with ENOSPC, as a full disk's do."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    yield mount, done.returncode == 0
    if done.returncode == 0:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(mount) -> None:
    with open(mount / "filler", "wb") as f:
        try:
            while True:
                f.write(os.urandom(64 << 10))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_gc_frees_space_on_a_full_disk(tmp_path, small_disk, monkeypatch):
    mount, mounted = small_disk
    root = mount / "store"
    store = _local(tmp_path, root)
    dropped = {f"big{i}.bin": os.urandom(1 << 20) for i in range(3)}
    _run(store, "drop", dropped, tmp_path / "d")
    kept = _run(store, "keep", KEEP, tmp_path / "k")
    store.records.delete_experiment("drop")
    if mounted:
        _fill(mount)
    else:  # the fallback: every write of a byte fails as on a full disk; empty keys still go in
        real = LocalStorage.write_bytes

        def full(self, key, data, *, exclusive=False):  # type: ignore[no-untyped-def]
            if data:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(self, key, data, exclusive=exclusive)

        monkeypatch.setattr(LocalStorage, "write_bytes", full)
    with pytest.raises(OSError) as full_error:
        LocalStorage(str(root)).write_bytes("probe", b"x" * 8192)
    assert full_error.value.errno == errno.ENOSPC

    if mounted:
        out = studio("--store", str(root), "gc", "--grace", "0s", home=_cli_home(tmp_path))
        assert out.returncode == 0, out.stderr
        assert "removed 3 objects (3.0 MiB)" in out.stderr
    else:
        assert collect_garbage(store, grace=0).objects_removed == 3
    LocalStorage(str(root)).write_bytes("probe", b"x" * 8192)  # room again
    assert _contents(_local(tmp_path, root), kept) == KEEP


def test_a_second_gc_at_the_same_time_fails_in_one_line(tmp_path):
    root = tmp_path / "store"
    _run(_local(tmp_path, root), "keep", KEEP, tmp_path / "k")
    first = StoreLock(LocalStorage(str(root)), EXCLUSIVE)
    first.acquire(wait=0)
    try:
        out = studio("--store", str(root), "gc", home=_cli_home(tmp_path))
    finally:
        first.release()
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "another studio gc on" in out.stderr and "Traceback" not in out.stderr
    again = studio("--store", str(root), "gc", "--grace", "0s", home=_cli_home(tmp_path))
    assert again.returncode == 0, again.stderr


def test_gc_names_stray_files_and_damaged_records_and_manifests_and_sweeps_the_rest(tmp_path):
    root = tmp_path / "store"
    store = _local(tmp_path, root)
    kept = _run(store, "keep", KEEP, tmp_path / "k")
    dropped = _run(store, "drop", DROP, tmp_path / "d")
    third = _run(store, "third", {"t.txt": b"third\n"}, tmp_path / "t")
    store.records.delete_experiment("drop")
    storage = store.storage
    # keep's manifest rots (same size), third's record is cut in half: both runs are damaged
    manifest_key = store.repo.manifest_key(kept.artifacts["w"].digest)
    data = storage.read_bytes(manifest_key)
    storage.write_bytes(manifest_key, data.replace(b"k000.txt", b"k000.txT"))
    record_key = store.records.record_key("third", third.run_id)
    storage.write_bytes(record_key, storage.read_bytes(record_key)[: len(storage.read_bytes(record_key)) // 2 + 40])
    assert third.artifacts["w"].digest.encode() in storage.read_bytes(record_key)
    strays = ["objects/README", "objects/ab/not-a-digest", "manifests/notes.txt"]
    for key in strays:
        storage.write_bytes(key, b"someone else's\n")

    said: list[str] = []
    result = collect_garbage(store, grace=0, warn=said.append)
    # the dropped run's manifests: its content manifest and the one with file times
    assert result.objects_removed == len(DROP) and result.manifests_removed == len(dropped.artifacts["w"].manifests())
    for key in strays:
        assert storage.exists(key) and any(key in line for line in said)
    assert any(record_key in line for line in said)
    assert any(kept.artifacts["w"].digest[:12] in line and "damaged" in line for line in said)
    assert len(said) == len(strays) + 2 and all("\n" not in line for line in said)
    kept_objects = {Repository.object_key(d) for d in _digests(data)}
    assert len(kept_objects) == len(KEEP)
    assert all(store.repo.has_object(d) for d in _digests(data))  # a damaged manifest's objects are kept
    third_manifest = store.repo.get_manifest(third.artifacts["w"].digest)
    assert store.repo.read_object(third_manifest.entries[0].digest) == b"third\n"


def test_keys_that_vanish_under_gc_are_skipped(tmp_path, monkeypatch):
    root = tmp_path / "store"
    store = _local(tmp_path, root)
    _run(store, "drop", DROP, tmp_path / "d")
    store.records.delete_experiment("drop")
    delete = store.repo.delete_object

    def another_gc_was_faster(digest: str) -> None:
        os.unlink(store.storage.path_of(store.repo.object_key(digest)))
        delete(digest)  # FileNotFoundError: what another gc before locks met

    monkeypatch.setattr(store.repo, "delete_object", another_gc_was_faster)
    assert collect_garbage(store, grace=0).objects_removed == len(DROP)


def _digests(data: bytes) -> set[str]:
    return {m.decode() for m in re.findall(rb"[0-9a-f]{64}", data)}
