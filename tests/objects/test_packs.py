"""Pack files: objects readable once their index is stored, never before; indexes kept locally."""

from __future__ import annotations

import os
import uuid

import pytest

from studio_run.errors import IntegrityError
from studio_run.objects.digest import hash_bytes
from studio_run.objects.packs import PACK_SIZE, PackSet, group, index_key, pack_key
from studio_run.objects.repository import Repository
from studio_run.storage.memory import MemoryStorage


@pytest.fixture
def storage():
    name = f"packs-{uuid.uuid4().hex[:12]}"
    yield MemoryStorage(name)
    MemoryStorage.reset(name)


def _objects(count: int, size: int = 100) -> dict[str, bytes]:
    data = [os.urandom(size) for _ in range(count)]
    return {hash_bytes(d): d for d in data}


def test_objects_written_in_a_pack_are_read_back_verified_by_another_reader(storage):
    objects = _objects(50)
    name = PackSet(storage).write(objects.items())
    assert storage.exists(pack_key(name)) and storage.exists(index_key(name))
    repo = Repository(storage)  # a fresh reader: learns the pack from the store
    assert all(repo.has_object(d) for d in objects)
    assert {d: repo.read_object(d) for d in objects} == objects


def test_a_pack_whose_index_is_not_written_is_invisible(storage):
    objects = _objects(3)
    body = b"".join(objects.values())
    storage.write_bytes(pack_key("ab" + "0" * 62), body)  # a writer that died before its index
    repo = Repository(storage)
    assert not any(repo.has_object(d) for d in objects)
    with pytest.raises(IntegrityError, match="missing"):
        repo.read_object(next(iter(objects)))


def test_a_damaged_index_counts_as_missing_and_damaged_bytes_are_caught(storage):
    objects = _objects(4)
    name = PackSet(storage).write(objects.items())
    body = bytearray(storage.read_bytes(pack_key(name)))
    body[5] ^= 0xFF  # the first object's bytes rot
    storage.write_bytes(pack_key(name), bytes(body))
    first = next(iter(objects))
    with pytest.raises(IntegrityError, match="corrupted"):
        Repository(storage).read_object(first)
    storage.write_bytes(index_key(name), b"[]")
    assert not Repository(storage).has_object(first)


def test_a_pack_written_by_another_machine_is_found_on_a_miss(storage):
    reader = Repository(storage)
    assert not reader.has_object("00" * 32)  # the reader has listed the (empty) packs
    objects = _objects(5)
    PackSet(storage).write(objects.items())
    assert all(reader.read_object(d) == data for d, data in objects.items())


def test_indexes_read_once_are_kept_locally(storage, tmp_path):
    objects = _objects(10)
    name = PackSet(storage).write(objects.items())
    cache = str(tmp_path / "packindex")
    assert PackSet(storage, cache).digests() == set(objects)
    assert os.listdir(cache) == [name]
    storage.delete(index_key(name))
    storage.write_bytes(index_key(name), b"[]")  # the store's copy would now say "empty"
    assert PackSet(storage, cache).digests() == set(objects)  # the verified local copy is used


def test_group_closes_a_pack_at_its_size_and_keeps_the_order():
    sizes = {f"d{i}": PACK_SIZE // 3 for i in range(7)}
    batches = list(group(sizes, sorted(sizes)))
    assert batches == [["d0", "d1", "d2"], ["d3", "d4", "d5"], ["d6"]]
