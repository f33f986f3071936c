"""RetryingStorage around a fake that fails on purpose: what is retried, how often, how long."""

from __future__ import annotations

import pytest

from studio_run.errors import StoreAuthError, StoreError, StoreUnreachableError
from studio_run.storage import open_storage
from studio_run.storage.memory import MemoryStorage
from studio_run.storage.retry import RetryingStorage


class FlakyStorage(MemoryStorage):
    """A memory store whose next ``len(failures)`` calls raise the given exceptions, in order."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.failures: list[BaseException] = []
        self.list_failures: list[BaseException] = []  # raised after the first key of a listing
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)

    def read_bytes(self, key):
        self._maybe_fail()
        return super().read_bytes(key)

    def write_bytes(self, key, data, *, exclusive=False):
        self._maybe_fail()
        super().write_bytes(key, data, exclusive=exclusive)

    def list(self, prefix=""):
        self._maybe_fail()
        for i, key in enumerate(sorted(super().list(prefix))):
            if i == 1 and self.list_failures:
                raise self.list_failures.pop(0)
            yield key


@pytest.fixture
def flaky(request):
    MemoryStorage.reset(request.node.name)
    yield FlakyStorage(request.node.name)
    MemoryStorage.reset(request.node.name)


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def store(flaky, sleeps):
    return RetryingStorage(flaky, attempts=4, base_delay=0.1, max_delay=0.3, sleep=sleeps.append)


@pytest.mark.parametrize(
    "error",
    [StoreUnreachableError("endpoint down"), ConnectionResetError("reset"), TimeoutError("slow")],
)
def test_transient_errors_are_retried_until_success(store, flaky, sleeps, error):
    flaky.write_bytes("k", b"v")
    flaky.failures = [error, error]
    assert store.read_bytes("k") == b"v"
    assert flaky.calls == 1 + 3
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError("k"),
        FileExistsError("k"),
        PermissionError("k"),
        StoreAuthError("refused"),
        StoreError("bucket gone"),
        ValueError("bad key"),
    ],
)
def test_answers_are_never_retried(store, flaky, sleeps, error):
    flaky.failures = [error]
    with pytest.raises(type(error)):
        store.write_bytes("k", b"v")
    assert flaky.calls == 1 and sleeps == []


def test_gives_up_after_the_last_attempt_with_the_last_error(store, flaky, sleeps):
    errors = [StoreUnreachableError(f"down {i}") for i in range(4)]
    flaky.failures = list(errors)
    with pytest.raises(StoreUnreachableError) as info:
        store.read_bytes("k")
    assert info.value is errors[-1]
    assert flaky.calls == 4 and len(sleeps) == 3


def test_backoff_doubles_up_to_the_cap_with_jitter(flaky):
    store = RetryingStorage(flaky, attempts=6, base_delay=0.1, max_delay=0.3)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.3), (5, 0.3)]:
        delays = {store.delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered, so clients do not retry in step


def test_listing_that_fails_halfway_restarts_without_duplicates(store, flaky, sleeps):
    for key in ["a", "b", "c"]:
        flaky.write_bytes(key, b"")
    flaky.calls = 0
    flaky.list_failures = [ConnectionResetError("mid-listing")]
    assert list(store.list("")) == ["a", "b", "c"]
    assert flaky.calls == 2 and len(sleeps) == 1


def test_wrapper_keeps_url_and_delegates_derived_helpers(store, flaky, tmp_path):
    assert store.url == flaky.url
    assert repr(store) == f"RetryingStorage({flaky!r})"
    src = tmp_path / "f"
    src.write_bytes(b"data")
    store.put_file(str(src), "d/one")
    store.write_bytes("d/two/x", b"")
    assert store.list_dirs("d/") == ["one", "two"]
    store.get_file("d/one", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b"data"
    store.delete_many(["d/one", "d/gone"])
    assert not store.exists("d/one")


def test_open_storage_does_not_wrap():
    assert not isinstance(open_storage("memory://retry-test"), RetryingStorage)


def test_attempts_must_be_positive(flaky):
    with pytest.raises(ValueError):
        RetryingStorage(flaky, attempts=0)


def test_last_failure_says_why_calls_are_being_retried_until_one_succeeds(store, flaky):
    assert store.last_failure is None
    flaky.failures = [StoreUnreachableError("refused"), StoreUnreachableError("refused again")]
    store.write_bytes("k", b"v")
    assert store.last_failure is None  # cleared by the success
    flaky.failures = [StoreUnreachableError(f"down {i}") for i in range(4)]
    with pytest.raises(StoreUnreachableError):
        store.read_bytes("k")
    assert str(store.last_failure) == "down 3"
    with pytest.raises(FileNotFoundError):
        store.read_bytes("missing")  # an answer: the store is back
    assert store.last_failure is None
