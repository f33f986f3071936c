"""LazyStorage: the backend is opened by the first call that needs it, and again after a failure."""

from __future__ import annotations

import pytest

from studio_run.errors import StoreUnreachableError
from studio_run.storage.lazy import LazyStorage
from studio_run.storage.memory import MemoryStorage


def test_opens_on_first_use_once_and_retries_a_failed_opening():
    outcomes: list[object] = [StoreUnreachableError("no route to host"), MemoryStorage("lazy-test")]
    opened: list[object] = []

    def opener() -> MemoryStorage:
        outcome = outcomes.pop(0)
        opened.append(outcome)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[return-value]

    lazy = LazyStorage("memory://lazy-test", opener)
    assert not lazy.connected and opened == [] and repr(lazy) == "LazyStorage('memory://lazy-test')"
    with pytest.raises(StoreUnreachableError):
        lazy.exists("k")
    assert str(lazy.last_error) == "no route to host" and not lazy.connected
    lazy.write_bytes("k", b"v")
    assert lazy.read_bytes("k") == b"v" and list(lazy.list("")) == ["k"]
    assert lazy.connected and lazy.last_error is None and len(opened) == 2
    lazy.close()
    MemoryStorage.reset("lazy-test")
