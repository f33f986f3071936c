"""A damaged object or manifest is never trusted again: the next capture of the same content heals it.

A truncated or extended object is caught by its size when a capture meets it (one ``stat``);
a same-size corruption is caught by the digest check of the read that meets it, which moves it
to ``quarantine/`` so that it counts as absent. Either way the next capture stores it again.
"""

from __future__ import annotations

import os

import pytest

from studio_run.errors import IntegrityError
from studio_run.objects.local import LocalRepository
from studio_run.objects.manifest import Manifest
from studio_run.objects.repository import QUARANTINE
from studio_run.snapshots.capture import snapshot
from studio_run.snapshots.restore import materialize
from studio_run.snapshots.statcache import StatCache
from studio_run.storage.local import LocalStorage
from tests.helpers import corrupt_object

FILES = {"small.txt": b"small\n" * 10, "medium.bin": os.urandom(2 << 20), "big.bin": os.urandom(9 << 20)}


@pytest.fixture
def repo(tmp_path):
    return LocalRepository(LocalStorage(str(tmp_path / "store")), packed=False)  # loose objects: large files, older stores


@pytest.fixture
def src(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
        os.utime(folder / name, (1_600_000_000, 1_600_000_000))
    return str(folder)


def _object_path(repo, digest: str) -> str:
    return repo.storage.path_of(repo.object_key(digest))


def _restored(repo, manifest: Manifest, dest) -> dict[str, bytes]:
    materialize(repo, manifest, str(dest))
    return {name: (dest / name).read_bytes() for name in FILES}


def _objects(manifest: Manifest) -> list[tuple[str, int]]:
    """Every object of the snapshot with its size (chunks of a chunked file included)."""
    out = []
    for entry in manifest.entries:
        out.extend(entry.chunks or [(entry.digest, entry.size)])
    return out


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_a_truncated_object_is_stored_again_by_the_next_capture(tmp_path, repo, src, cache):
    stat_cache = StatCache(str(tmp_path / "stat.sqlite"))
    manifest = snapshot(src, repo, stat_cache).manifest
    for digest, size in _objects(manifest):
        path = _object_path(repo, digest)
        os.chmod(path, 0o644)
        os.truncate(path, size // 2)
    again = snapshot(src, repo, stat_cache if cache == "warm" else StatCache(None)).manifest
    assert again.digest == manifest.digest
    assert all(os.path.getsize(_object_path(repo, d)) == n for d, n in _objects(manifest))
    assert _restored(repo, manifest, tmp_path / "dest") == FILES


def test_a_same_size_corruption_is_quarantined_on_read_and_healed_by_the_next_capture(tmp_path, repo, src):
    stat_cache = StatCache(str(tmp_path / "stat.sqlite"))
    manifest = snapshot(src, repo, stat_cache).manifest
    small = next(e for e in manifest.entries if e.path == "small.txt")
    corrupt_object(repo, small.digest)
    with pytest.raises(IntegrityError, match="corrupted.*moved to quarantine"):
        materialize(repo, manifest, str(tmp_path / "dest1"))
    assert not os.path.exists(_object_path(repo, small.digest))
    assert repo.storage.exists(QUARANTINE + repo.object_key(small.digest))
    snapshot(src, repo, stat_cache)  # the same content, unchanged on disk (a warm stat cache)
    assert _restored(repo, manifest, tmp_path / "dest2") == FILES


def test_a_corrupted_chunk_read_through_the_generic_path_is_quarantined_too(tmp_path, repo, src):
    manifest = snapshot(src, repo, StatCache(None)).manifest
    big = next(e for e in manifest.entries if e.path == "big.bin")
    corrupt_object(repo, big.chunks[1][0])
    with pytest.raises(IntegrityError, match="corrupted"):
        repo.read_object(big.chunks[1][0])
    assert not repo.has_object(big.chunks[1][0])
    snapshot(src, repo, StatCache(None))
    assert repo.read_object(big.chunks[1][0]) == FILES["big.bin"][4 << 20: 8 << 20]


@pytest.mark.parametrize("damage", ["same size", "truncated"])
def test_a_damaged_manifest_is_written_again_by_the_next_capture(tmp_path, repo, src, damage):
    manifest = snapshot(src, repo, StatCache(None)).manifest
    key = repo.manifest_key(manifest.digest)
    data = repo.storage.read_bytes(key)
    bad = data.replace(b"small.txt", b"small.txT") if damage == "same size" else data[: len(data) // 2]
    repo.storage.write_bytes(key, bad)
    if damage == "same size":
        with pytest.raises(IntegrityError, match="corrupted"):
            repo.get_manifest(manifest.digest)
        assert repo.storage.read_bytes(QUARANTINE + key) == bad
    snapshot(src, repo, StatCache(None))
    assert repo.get_manifest(manifest.digest) == manifest


def test_a_good_object_is_never_left_in_quarantine(tmp_path, repo, src):
    manifest = snapshot(src, repo, StatCache(None)).manifest
    digest = next(e for e in manifest.entries if e.path == "small.txt").digest
    assert repo.quarantine_object(digest) is False  # its bytes are right: it stays where it is
    assert repo.read_object(digest) == FILES["small.txt"]
    assert not repo.storage.exists(QUARANTINE + repo.object_key(digest))
