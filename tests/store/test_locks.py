"""Store locks: shared ones coexist, gc's exclusive one waits for them or refuses, dead ones expire."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from studio_run.storage import open_storage
from studio_run.storage.local import LocalStorage
from studio_run.store.locks import EXCLUSIVE, SHARED, StoreBusy, StoreLock, list_locks, store_lock
from tests.helpers import wait_for


@pytest.fixture
def storage(store_location):
    """A local store, and an S3 bucket on moto: the locks must hold on every backend."""
    store = open_storage(*store_location)
    yield store
    store.close()


def test_shared_locks_coexist_and_gc_refuses_while_one_is_held(storage):
    with store_lock(storage, SHARED), store_lock(storage, SHARED):
        assert [i.kind for i in list_locks(storage)] == [SHARED, SHARED]
        with pytest.raises(StoreBusy, match=r"in use by a capture on .*\(pid \d+"):
            with store_lock(storage, EXCLUSIVE, wait=0):
                pass
        assert [i.kind for i in list_locks(storage)] == [SHARED, SHARED]  # gc backed off
    with store_lock(storage, EXCLUSIVE, wait=0) as lock:
        assert [i.key for i in list_locks(storage)] == [lock.key]
    assert list_locks(storage) == []


def test_a_second_gc_refuses_at_once(storage):
    with store_lock(storage, EXCLUSIVE, wait=0):
        with pytest.raises(StoreBusy, match="another studio gc on"):
            with store_lock(storage, EXCLUSIVE, wait=60):
                pass


def test_a_capture_waits_for_a_running_gc_then_proceeds(storage):
    said: list[str] = []
    took = threading.Event()
    gc = StoreLock(storage, EXCLUSIVE)
    gc.acquire(wait=0)

    def capture() -> None:
        with store_lock(storage, SHARED, on_wait=said.append, poll=0.05):
            took.set()

    thread = threading.Thread(target=capture)
    thread.start()
    wait_for(lambda: said, "the capture to say it waits", deadline=30.0, every=0.02)
    assert not took.is_set() and "studio gc on" in said[0]
    gc.release()
    thread.join(30)
    assert took.is_set()


def test_gc_waits_for_a_capture_in_progress_when_allowed_to(storage):
    capture = StoreLock(storage, SHARED)
    capture.acquire()
    said: list[str] = []
    done = threading.Event()

    def gc() -> None:
        with store_lock(storage, EXCLUSIVE, wait=60, on_wait=said.append, poll=0.05):
            done.set()

    thread = threading.Thread(target=gc)
    thread.start()
    wait_for(lambda: said, "gc to say it waits", deadline=30.0, every=0.02)
    assert not done.is_set() and "a capture on" in said[0]
    capture.release()
    thread.join(30)
    assert done.is_set()


def test_a_lock_not_refreshed_for_too_long_is_dead_and_removed(tmp_path):
    storage = LocalStorage(str(tmp_path / "store"))
    storage.write_bytes("locks/shared-otherhost-4242-abcdef", b"")
    old = time.time() - 3600
    os.utime(storage.path_of("locks/shared-otherhost-4242-abcdef"), (old, old))
    with store_lock(storage, EXCLUSIVE, wait=0, stale_after=600):
        assert not storage.exists("locks/shared-otherhost-4242-abcdef")


def test_a_fresh_lock_of_another_machine_holds(tmp_path):
    storage = LocalStorage(str(tmp_path / "store"))
    storage.write_bytes("locks/shared-otherhost-4242-abcdef", b"")
    with pytest.raises(StoreBusy, match="otherhost"):
        with store_lock(storage, EXCLUSIVE, wait=0):
            pass


def test_a_lock_of_a_process_gone_from_this_host_is_dead_at_once(tmp_path):
    storage = LocalStorage(str(tmp_path / "store"))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that no longer runs
    host = "".join(c if c.isalnum() or c in "_." else "_" for c in socket.gethostname())
    key = f"locks/shared-{host}-{child.pid}-abcdef"
    storage.write_bytes(key, b"")
    with store_lock(storage, EXCLUSIVE, wait=0):
        assert not storage.exists(key)


def test_a_held_lock_is_refreshed_and_one_that_could_not_be_is_reported_lost(tmp_path):
    storage = LocalStorage(str(tmp_path / "store"))
    lock = StoreLock(storage, SHARED, refresh_every=0.05, stale_after=600)
    lock.acquire()
    try:
        first = storage.info(lock.key).mtime
        wait_for(lambda: storage.info(lock.key).mtime > first, "a refresh", deadline=30.0, every=0.02)
        lock.check()  # fresh: no complaint
        lock.stale_after = 0.01  # as if no refresh had come through for most of the stale time
        time.sleep(0.02)
        lock._stop.set()
        lock._thread.join()
        time.sleep(0.02)
        with pytest.raises(StoreBusy, match="not refreshed"):
            lock.check()
    finally:
        lock.release()
    assert list_locks(storage) == []
