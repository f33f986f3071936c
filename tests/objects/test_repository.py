"""Storing objects on local disk: named only when whole, stored once, the same with or without O_TMPFILE."""

from __future__ import annotations

import os
import threading

import pytest

from studio_run.objects import local as repository
from studio_run.objects.digest import hash_bytes
from studio_run.objects.repository import Repository
from studio_run.storage.local import LocalStorage


@pytest.fixture(params=["unnamed", "named"])
def repo(request, tmp_path, monkeypatch):
    """A local repository, once with unnamed temp files (O_TMPFILE + link), once with named ones."""
    if request.param == "named":
        monkeypatch.setattr(repository, "_UNNAMED", [False])
    return repository.LocalRepository(LocalStorage(str(tmp_path / "store")), packed=False)  # loose objects: large files, older stores


def _object_path(repo: Repository, digest: str) -> str:
    return repo.storage.path_of(repo.object_key(digest))


def _leftovers(repo: Repository) -> list[str]:
    folder = os.path.join(repo.storage.root, ".tmp")
    return os.listdir(folder) if os.path.isdir(folder) else []


def test_small_content_is_stored_read_only_and_counted_once(repo):
    data = b"weights " * 100
    digest = hash_bytes(data)
    assert repo.ingest_bytes(data, digest) == (digest, len(data))
    assert repo.ingest_bytes(data, digest) == (digest, 0)
    path = _object_path(repo, digest)
    with open(path, "rb") as f:
        assert f.read() == data
    assert os.stat(path).st_mode & 0o777 == 0o444
    assert _leftovers(repo) == []


def test_a_file_is_named_by_the_digest_of_its_copy(repo, tmp_path):
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(3 << 20))
    digest, written = repo.ingest_file(str(source))
    assert digest == hash_bytes(source.read_bytes()) and written == 3 << 20
    assert repo.ingest_file(str(source)) == (digest, 0)
    with open(_object_path(repo, digest), "rb") as f:
        assert f.read() == source.read_bytes()
    assert _leftovers(repo) == []


def test_threads_storing_the_same_content_store_it_once(repo):
    data = os.urandom(64 << 10)
    digest = hash_bytes(data)
    results: list[int] = []

    def store() -> None:
        results.append(repo.ingest_bytes(data, digest)[1])

    threads = [threading.Thread(target=store) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0] * 7 + [len(data)]
    assert repo.read_object(digest) == data


def test_unnamed_files_are_used_where_the_kernel_offers_them(tmp_path):
    """On this machine (Linux, ext4) the fast path must be the one taken, or benchmarks lie."""
    repo = Repository(LocalStorage(str(tmp_path / "store")))
    repo.ingest_bytes(b"x", hash_bytes(b"x"))
    assert repository._UNNAMED == [True]
    fd = repo._open_unnamed()
    assert fd is not None
    os.close(fd)


def test_local_only_operations_are_a_type_chosen_at_construction(tmp_path):
    from studio_run.objects.local import LocalRepository
    from studio_run.storage.memory import MemoryStorage

    local = Repository(LocalStorage(str(tmp_path / "store")))
    remote = Repository(MemoryStorage("typed"))
    assert isinstance(local, LocalRepository) and local.is_local
    assert type(remote) is Repository and not remote.is_local
    assert not hasattr(remote, "ingest_file") and not hasattr(remote, "write_entry_to")
