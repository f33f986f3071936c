"""Restoring verifies every byte and refuses manifests that escape, even when stored by an attacker."""

from __future__ import annotations

import json
import os

import pytest

from studio_run.errors import IntegrityError, UnsafePathError
from studio_run.objects.digest import hash_bytes
from studio_run.objects.manifest import Entry, Manifest
from studio_run.objects.repository import Repository
from studio_run.snapshots.capture import snapshot
from studio_run.snapshots.restore import materialize
from studio_run.snapshots.statcache import StatCache
from studio_run.storage.local import LocalStorage
from tests.helpers import corrupt_object


@pytest.fixture
def repo(tmp_path):
    return Repository(LocalStorage(str(tmp_path / "store")))


def _store_raw_manifest(repo: Repository, entries: list) -> str:
    data = json.dumps({"format": 1, "hash": "blake3", "single_file": False, "entries": entries}).encode()
    digest = hash_bytes(data)
    repo.storage.write_bytes(repo.manifest_key(digest), data)
    return digest


@pytest.mark.parametrize(
    "entry",
    [
        {"path": "../escaped.txt", "size": 1, "mode": 420},
        {"path": "/tmp/absolute.txt", "size": 1, "mode": 420},
        {"path": "out", "type": "link", "target": "/"},
    ],
)
def test_a_stored_malicious_manifest_is_refused_and_nothing_is_written(tmp_path, repo, entry):
    repo.storage.write_bytes(repo.object_key(hash_bytes(b"x")), b"x")
    if "type" not in entry:
        entry["digest"] = hash_bytes(b"x")
    digest = _store_raw_manifest(repo, [entry])
    with pytest.raises(UnsafePathError):
        materialize(repo, repo.get_manifest(digest), str(tmp_path / "dest"))
    assert not (tmp_path / "escaped.txt").exists() and not os.path.exists("/tmp/absolute.txt")


def test_a_corrupted_object_is_detected_on_restore(tmp_path, repo):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.bin").write_bytes(b"good weights" * 1000)
    manifest = snapshot(str(tmp_path / "src"), repo, StatCache()).manifest
    corrupt_object(repo, manifest.entries[0].digest)
    with pytest.raises(IntegrityError, match="corrupted"):
        materialize(repo, manifest, str(tmp_path / "dest"))
    assert not (tmp_path / "dest" / "model.bin").exists()


def test_a_corrupted_manifest_is_detected(tmp_path, repo):
    manifest = Manifest.build([Entry("a", size=1, digest=hash_bytes(b"a"))])
    digest = repo.put_manifest(manifest)
    repo.storage.write_bytes(repo.manifest_key(digest), manifest.to_bytes().replace(b'"a"', b'"b"'))
    with pytest.raises(IntegrityError, match="corrupted"):
        repo.get_manifest(digest)


def test_missing_object_is_reported(tmp_path, repo):
    manifest = Manifest.build([Entry("a", size=1, digest=hash_bytes(b"never stored"))])
    with pytest.raises(IntegrityError, match="missing"):
        materialize(repo, manifest, str(tmp_path / "dest"))


def test_restore_refuses_to_write_through_an_existing_symlink(tmp_path, repo):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "sub" / "f").write_text("x")
    manifest = snapshot(str(tmp_path / "src"), repo, StatCache()).manifest
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(str(tmp_path / "elsewhere"), dest / "sub")
    with pytest.raises(UnsafePathError):
        materialize(repo, manifest, str(dest))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_corrupted_chunk_of_a_large_file_is_detected(tmp_path, repo):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.bin").write_bytes(os.urandom(10 << 20))
    manifest = snapshot(str(tmp_path / "src"), repo, StatCache()).manifest
    corrupt_object(repo, manifest.entries[0].chunks[1][0])
    with pytest.raises(IntegrityError, match="corrupted"):
        materialize(repo, manifest, str(tmp_path / "dest"))
    assert not (tmp_path / "dest" / "big.bin").exists()


def test_a_chunk_list_that_does_not_add_up_is_refused():
    good = hash_bytes(b"x")
    data = json.dumps({"format": 1, "hash": "blake3", "single_file": False, "entries": [
        {"path": "f", "size": 2, "mode": 420, "digest": good, "chunks": [[good, 1], [good, 1]]}]}).encode()
    with pytest.raises(IntegrityError, match="chunk list"):
        Manifest.from_bytes(data)
