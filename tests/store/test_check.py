"""``studio check [--repair]``: every damaged object, pack and manifest is found, named with the runs
it breaks, moved to quarantine on request, and healed by the next capture; local store and S3."""

from __future__ import annotations

import os
import uuid

import pytest

from studio_run.config import Config
from studio_run.runner.capturer import Capturer, Target
from studio_run.snapshots.statcache import StatCache
from studio_run.store.check import check_store
from studio_run.store.open import open_store
from studio_run.store.records import RunRecord, new_run_id
from studio_run.store.store import Store
from tests.helpers import studio

# 1.1 MiB and more: loose objects on both stores (damage inside packs: MANY)
FILES = {"a.txt": b"alpha\n" * 200_000, "b.txt": b"bravo\n" * 200_000, "c.bin": os.urandom(1_100_000)}
MANY = {f"m{i:03}.txt": f"small file {i}\n".encode() for i in range(40)}  # packed on either store


@pytest.fixture
def opener(store_location, tmp_path):
    """``opener(home)`` opens the one shared store as a new machine (its own home) would."""
    url, options = store_location
    stores: list[Store] = []

    def open_(home: str) -> Store:
        store = open_store(Config(home=str(tmp_path / home), store=url, store_options=options, fsync=False))
        stores.append(store)
        return store

    open_.url = url  # type: ignore[attr-defined]
    yield open_
    for store in stores:
        store.close()


def _tree(folder, files: dict[str, bytes]) -> str:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        os.utime(folder / rel, (1_600_000_000, 1_600_000_000))
    return str(folder)


def _capture(store: Store, experiment: str, folder: str) -> RunRecord:
    record = RunRecord(experiment=experiment, run_id=new_run_id())
    capturer = Capturer(store, record, StatCache(None))
    capturer.capture([Target("w", folder, "capture")])
    assert capturer.errors == []
    if store.is_remote:
        assert store.syncer().finish(60)
    return record


def _read_back(store: Store, record: RunRecord) -> dict[str, bytes]:
    stored = store.records.read(record.experiment, record.run_id)
    manifest = store.repo.get_manifest(stored.artifacts["w"].digest)
    return {e.path: store.repo.read_object(e.digest) for e in manifest.entries}


def _rot(storage, key: str) -> None:
    """Flip one byte in the middle of a stored key (bit rot: same size)."""
    data = bytearray(storage.read_bytes(key))
    data[len(data) // 2] ^= 0x01
    storage.write_bytes(key, bytes(data))


def test_a_sound_store_checks_clean(tmp_path, opener):
    store = opener("a")
    record = _capture(store, "exp", _tree(tmp_path / "w", FILES))
    result = check_store(opener("checker"))
    assert result.clean and result.notes == []
    # one run, one artifact: its content manifest and the one with file times
    assert result.objects + result.packs >= 1 and result.manifests == len(record.artifacts["w"].manifests()) == 2
    assert result.bytes_read >= sum(len(v) for v in FILES.values())


def test_damage_is_named_with_its_runs_quarantined_on_repair_and_healed_by_the_next_capture(tmp_path, opener):
    store = opener("a")
    folder = _tree(tmp_path / "w", FILES)
    first = _capture(store, "exp", folder)
    second = _capture(store, "exp", folder)  # the same snapshot: exp@1 and exp@2 share every object
    other = _capture(store, "other", _tree(tmp_path / "o", {"o.txt": b"other\n"}))
    repo = store.repo
    manifest = repo.get_manifest(first.artifacts["w"].digest)
    by_path = {e.path: e.digest for e in manifest.entries}
    storage = store.storage
    _rot(storage, repo.object_key(by_path["c.bin"]))
    storage.delete(repo.object_key(by_path["b.txt"]))
    _rot(storage, repo.manifest_key(other.artifacts["w"].digest))

    checker = opener("checker")
    found = check_store(checker)
    lines = sorted(d.describe() for d in found.damaged)
    assert len(lines) == 3, lines
    assert any(by_path["c.bin"][2:] in line and "corrupted" in line and "exp@1, exp@2" in line for line in lines)
    assert any(by_path["b.txt"][2:] in line and "missing" in line and "exp@1, exp@2" in line for line in lines)
    assert any("manifest" in line and "corrupted" in line and "other@1" in line for line in lines)
    assert not any("quarantine" in line for line in lines)  # only --repair moves anything

    repaired = check_store(checker, repair=True)
    exp_manifests = len(first.artifacts["w"].manifests())  # content, and with file times: both name the objects
    assert sorted((d.kind, d.problem, d.quarantined) for d in repaired.damaged) == sorted([
        ("manifest", "corrupted", True),
        *[("manifest", "incomplete (it names a damaged object)", True)] * exp_manifests,  # they vouched for objects now gone
        ("object", "corrupted", True),
        ("object", "missing", False),
    ])
    assert any(k.startswith("quarantine/") for k in storage.list("quarantine/"))
    after = check_store(checker).damaged  # what was moved aside is missing until captured again
    assert sorted((d.kind, d.problem, d.runs) for d in after) == sorted(
        [("manifest", "missing", ("exp@1", "exp@2"))] * exp_manifests + [("manifest", "missing", ("other@1",))])

    again = _capture(opener("b"), "exp", folder)  # the next capture of the same content, elsewhere
    _capture(opener("c"), "other", _tree(tmp_path / "o2", {"o.txt": b"other\n"}))
    assert check_store(opener("checker2")).clean
    reader = opener("reader")
    assert _read_back(reader, first) == _read_back(reader, second) == _read_back(reader, again) == FILES


def test_a_damaged_pack_is_found_and_healed(tmp_path, opener):
    store = opener("a")
    folder = _tree(tmp_path / "w", MANY)
    record = _capture(store, "packed", folder)
    packs = [k for k in store.storage.list("packs/") if k.endswith(".pack")]
    assert packs  # small objects are packed on the local store too
    key = packs[0]
    _rot(store.storage, key)
    found = check_store(opener("checker"), repair=True)
    # both of the run's manifests (content, and with file times) name the lost object
    manifests = sorted(store.repo.manifest_key(d) for d in record.artifacts["w"].manifests())
    assert [(d.key, d.runs, d.quarantined) for d in found.damaged] == [
        (key, ("packed@1",), True),
    ] + [(m, ("packed@1",), True) for m in manifests]
    again = _capture(opener("b"), "packed", folder)
    assert check_store(opener("checker2")).clean
    assert _read_back(opener("reader"), again) == _read_back(opener("reader2"), record) == MANY


def test_an_unreadable_record_is_named_and_left_in_place(tmp_path, opener):
    store = opener("a")
    record = _capture(store, "exp", _tree(tmp_path / "w", FILES))
    key = store.records.record_key("exp", record.run_id)
    store.storage.write_bytes(key, b'{"experiment": "exp", "artif')
    found = check_store(opener("checker"), repair=True)
    assert [(d.kind, d.key, d.runs, d.quarantined) for d in found.damaged] == [("record", key, ("exp@1",), False)]
    assert store.storage.exists(key)


def test_the_command_exits_0_when_clean_and_1_with_one_line_per_damage(tmp_path):
    root = tmp_path / "store"
    home = tmp_path / "cli"
    home.mkdir()
    store = open_store(Config(home=str(tmp_path / "h"), store=str(root), fsync=False))
    record = _capture(store, "exp", _tree(tmp_path / "w", FILES))
    clean = studio("--store", str(root), "check", home=str(home))
    assert clean.returncode == 0, clean.stderr
    assert "no damage" in clean.stderr

    digest = store.repo.get_manifest(record.artifacts["w"].digest).entries[0].digest
    _rot(store.storage, store.repo.object_key(digest))
    damaged = studio("--store", str(root), "check", home=str(home))
    assert damaged.returncode == 1
    lines = damaged.stderr.strip().splitlines()
    assert len(lines) == 2 and digest[2:] in lines[0] and "exp@1" in lines[0] and "1 damaged" in lines[1]
    assert "Traceback" not in damaged.stderr

    repaired = studio("--store", str(root), "check", "--repair", home=str(home))
    assert repaired.returncode == 1 and "moved to quarantine" in repaired.stderr
    assert os.path.exists(root / "quarantine" / "objects" / digest[:2] / digest[2:])


def test_a_store_this_machine_may_only_read_is_checked_without_a_lock(tmp_path):
    from studio_run.objects.repository import Repository
    from studio_run.storage.local import LocalStorage
    from studio_run.storage.memory import MemoryStorage
    from studio_run.store.records import RecordStore

    class ReadOnly(MemoryStorage):
        def write_bytes(self, key, data, *, exclusive=False):  # type: ignore[no-untyped-def]
            if key.startswith("locks/"):
                raise PermissionError(f"{self.url}: write {key}: AccessDenied")
            super().write_bytes(key, data, exclusive=exclusive)

    storage = ReadOnly(f"ro-{uuid.uuid4().hex[:8]}")
    config = Config(home=str(tmp_path / "h"), store=storage.url, fsync=False)
    staging = Repository(LocalStorage(str(tmp_path / "staging")))
    store = Store(storage.url, storage, Repository(storage), staging, RecordStore(storage), config)  # type: ignore[arg-type]
    result = check_store(store)
    assert result.clean and len(result.notes) == 1 and "went on without it" in result.notes[0]
