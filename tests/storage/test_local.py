"""The local-disk and in-memory backends against the storage contract, plus local specifics."""

from __future__ import annotations

import os

import pytest

from studio_run.storage import open_storage
from studio_run.storage.local import LocalStorage
from studio_run.storage.memory import MemoryStorage

from .contract import StorageContract


class TestLocalContract(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path):
        return LocalStorage(str(tmp_path / "store"))


class TestMemoryContract(StorageContract):
    @pytest.fixture
    def storage(self, request):
        name = request.node.name
        MemoryStorage.reset(name)
        yield MemoryStorage(name)
        MemoryStorage.reset(name)


def test_plain_path_and_file_url_open_the_same_folder(tmp_path):
    a = open_storage(str(tmp_path / "s"))
    b = open_storage("file://" + str(tmp_path / "s"))
    a.write_bytes("k", b"v")
    assert b.read_bytes("k") == b"v"
    assert isinstance(a, LocalStorage)


def test_failed_write_leaves_no_temp_file(tmp_path):
    store = LocalStorage(str(tmp_path / "s"))
    store.write_bytes("k", b"v", exclusive=True)
    with pytest.raises(FileExistsError):
        store.write_bytes("k", b"w", exclusive=True)
    assert os.listdir(tmp_path / "s" / ".tmp") == []


def test_temp_folder_is_not_listed(tmp_path):
    store = LocalStorage(str(tmp_path / "s"))
    (tmp_path / "s" / ".tmp" / "w-junk").write_bytes(b"half")
    assert list(store.list("")) == []
