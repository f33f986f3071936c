"""The storage contract every backend passes: mix ``StorageContract`` into a test class and give
it a ``storage`` fixture that yields a fresh, empty store.

Checks what the code above the storage layer relies on: bytes round-trip, atomic replace of
pointers, exclusive create, listing across pages, missing keys, large values.
"""

from __future__ import annotations

import os
import threading

import pytest

from studio_run.storage import Storage

LARGE = 12 * 1024 * 1024 + 17  # over every backend's multipart / resumable threshold


class StorageContract:
    """Mix-in: subclasses provide a ``storage`` fixture; ``page_size_keys`` sets the listing test."""

    page_size_keys = 1100  # beyond S3's and GCS's 1,000-key page

    def test_write_then_read_returns_same_bytes(self, storage: Storage) -> None:
        storage.write_bytes("a/b/c.bin", b"\x00hello\xff")
        assert storage.read_bytes("a/b/c.bin") == b"\x00hello\xff"

    def test_empty_value_round_trips(self, storage: Storage) -> None:
        storage.write_bytes("empty", b"")
        assert storage.read_bytes("empty") == b""
        assert storage.info("empty").size == 0

    def test_missing_key_raises_file_not_found(self, storage: Storage) -> None:
        with pytest.raises(FileNotFoundError):
            storage.read_bytes("nope/missing")
        with pytest.raises(FileNotFoundError):
            storage.info("nope/missing")
        with pytest.raises(FileNotFoundError):
            storage.delete("nope/missing")
        assert storage.exists("nope/missing") is False

    def test_overwrite_replaces_pointer(self, storage: Storage) -> None:
        storage.write_bytes("refs/latest", b"one")
        storage.write_bytes("refs/latest", b"two-longer")
        assert storage.read_bytes("refs/latest") == b"two-longer"

    def test_exclusive_write_refuses_existing_key(self, storage: Storage) -> None:
        storage.write_bytes("claims/x", b"first", exclusive=True)
        with pytest.raises(FileExistsError):
            storage.write_bytes("claims/x", b"second", exclusive=True)
        assert storage.read_bytes("claims/x") == b"first"

    def test_exclusive_put_file_refuses_existing_key(self, storage: Storage, tmp_path) -> None:
        src = tmp_path / "f"
        src.write_bytes(b"data")
        storage.put_file(str(src), "claims/y", exclusive=True)
        with pytest.raises(FileExistsError):
            storage.put_file(str(src), "claims/y", exclusive=True)

    def test_exists_and_delete(self, storage: Storage) -> None:
        storage.write_bytes("d/k", b"v")
        assert storage.exists("d/k")
        storage.delete("d/k")
        assert not storage.exists("d/k")
        assert list(storage.list("d/")) == []

    def test_list_is_recursive_and_prefix_bound(self, storage: Storage) -> None:
        for key in ["p/a", "p/sub/b", "p/sub/deeper/c", "pq/x", "other/y"]:
            storage.write_bytes(key, key.encode())
        assert sorted(storage.list("p/")) == ["p/a", "p/sub/b", "p/sub/deeper/c"]
        assert sorted(storage.list("p")) == ["p/a", "p/sub/b", "p/sub/deeper/c", "pq/x"]
        assert sorted(storage.list("missing/")) == []

    def test_list_dirs_names_one_level(self, storage: Storage) -> None:
        for key in ["e/one/r1", "e/one/r2", "e/two/r1", "e/three"]:
            storage.write_bytes(key, b"")
        assert storage.list_dirs("e/") == ["one", "three", "two"]

    def test_list_goes_beyond_one_page(self, storage: Storage) -> None:
        keys = {f"many/{i:05d}" for i in range(self.page_size_keys)}
        _write_parallel(storage, keys)
        assert set(storage.list("many/")) == keys

    def test_large_value_round_trips_through_files(self, storage: Storage, tmp_path) -> None:
        src = tmp_path / "big"
        payload = os.urandom(LARGE)
        src.write_bytes(payload)
        storage.put_file(str(src), "big/object")
        assert storage.info("big/object").size == LARGE
        dst = tmp_path / "out" / "big"
        storage.get_file("big/object", str(dst))
        assert dst.read_bytes() == payload

    def test_get_file_of_missing_key_leaves_no_file(self, storage: Storage, tmp_path) -> None:
        folder = tmp_path / "downloads"
        folder.mkdir()
        with pytest.raises(FileNotFoundError):
            storage.get_file("absent", str(folder / "never"))
        assert list(folder.iterdir()) == []

    def test_reader_sees_old_or_new_value_never_a_mix(self, storage: Storage) -> None:
        old, new = b"o" * 300_000, b"n" * 300_001
        storage.write_bytes("atomic/k", old)
        seen: set[bytes] = set()
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                seen.add(storage.read_bytes("atomic/k"))

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for i in range(10):
                storage.write_bytes("atomic/k", new if i % 2 == 0 else old)
        finally:
            stop.set()
            thread.join()
        assert seen <= {old, new}

    def test_invalid_keys_are_refused(self, storage: Storage) -> None:
        for key in ["/abs", "../up", "a/../b", "a//b", ""]:
            with pytest.raises(ValueError):
                storage.write_bytes(key, b"x")


def _write_parallel(storage: Storage, keys: set[str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: storage.write_bytes(k, b"x"), sorted(keys)))
