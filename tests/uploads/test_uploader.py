"""The uploader's promises, with destinations that record, wait, fail or upload from inside."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from studio_run.errors import StorePermissionError, StoreUnreachableError, UploadError
from studio_run.uploads import Uploader

from .destinations import Failing, Recording, Reentrant, digest_of, upload_from_threads


@pytest.fixture
def make(tmp_path):
    """Build uploaders on a staging folder below ``tmp_path``; closes them afterwards."""
    made = []

    def make_(*destinations, **kwargs):
        kwargs.setdefault("values", {"experiment": "exp", "run": "r1", "rank": "0"})
        kwargs.setdefault("retry_delay", 0.01)
        uploader = Uploader(list(destinations), str(tmp_path / f"staging{len(made)}"), **kwargs)
        made.append(uploader)
        return uploader

    yield make_
    for uploader in made:
        uploader.close(5)


def _write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def test_upload_returns_before_delivery_and_carries_the_content_of_the_call(make, tmp_path):
    gate = threading.Event()
    dest = Recording(gate)
    uploader = make(dest)
    src = _write(tmp_path / "ep3.pt", b"old content")
    uploader.upload_file("ckpt/ep3.pt", src)
    assert dest.latest == {}  # nothing delivered yet: the destination is still closed
    _write(src, b"new")  # the caller overwrites at once...
    os.unlink(src)  # ...and even deletes
    gate.set()
    uploader.flush(10)
    assert dest.latest == {"ckpt/ep3.pt": digest_of(_write(tmp_path / "expected", b"old content"))}
    assert threading.get_ident() not in dest.threads


def test_placeholders_are_expanded_and_returned(make, tmp_path):
    dest = Recording()
    uploader = make(dest)
    name = uploader.upload_file("{experiment}/{run}/rank{rank}.txt", _write(tmp_path / "a", b"a"))
    uploader.flush(10)
    assert name == "exp/r1/rank0.txt"
    assert list(dest.latest) == ["exp/r1/rank0.txt"]


@pytest.mark.parametrize("bad", ["/abs", "a/../b", "a//b", "./a", "a\\b", "{user}/x", "", "x/{run"])
def test_bad_names_are_refused_at_the_call(make, tmp_path, bad):
    uploader = make(Recording())
    with pytest.raises(ValueError):
        uploader.upload_file(bad, _write(tmp_path / "a", b"a"))


def test_missing_local_file_raises_at_the_call(make, tmp_path):
    uploader = make(Recording())
    with pytest.raises(FileNotFoundError):
        uploader.upload_file("x", str(tmp_path / "nope"))
    with pytest.raises(IsADirectoryError):
        uploader.upload_file("x", str(tmp_path))


def test_twenty_uploads_of_one_name_from_several_threads_end_with_the_last(make, tmp_path):
    # Earlier versions are delivered slowly and later ones fast, on four workers: without
    # ordering, an early version would land last.
    dest = Recording(delay=lambda name, digest: random.uniform(0, 0.03))
    uploader = make(dest, workers=4)
    order = upload_from_threads(uploader.upload_file, tmp_path)
    uploader.flush(30)
    assert len(order) == 20
    assert dest.latest["model/latest.pt"] == digest_of(_write(tmp_path / "last", order[-1]))
    assert [c for c in dest.calls if c[1] == "model/latest.pt"] == [("upload", "model/latest.pt")] * 20


def test_overwrite_false_refuses_existing_and_pending_names(make, tmp_path):
    gate = threading.Event()
    uploader = make(Recording(gate))
    src = _write(tmp_path / "a", b"a")
    uploader.upload_file("hparams.yaml", src)
    with pytest.raises(FileExistsError):
        uploader.upload_file("hparams.yaml", src, overwrite=False)  # pending
    gate.set()
    uploader.flush(10)
    with pytest.raises(FileExistsError):
        uploader.upload_file("hparams.yaml", src, overwrite=False)  # delivered
    uploader.upload_file("other.yaml", src, overwrite=False)
    uploader.upload_file("hparams.yaml", src, overwrite=True)


def test_a_name_cannot_be_both_a_file_and_a_folder(make, tmp_path):
    uploader = make(Recording())
    src = _write(tmp_path / "a", b"a")
    uploader.upload_file("a/b.txt", src)
    with pytest.raises(IsADirectoryError):
        uploader.upload_file("a", src)
    with pytest.raises(NotADirectoryError):
        uploader.upload_file("a/b.txt/c", src)


def test_links_arrive_after_their_target_and_refuse_unknown_targets_and_cycles(make, tmp_path):
    gate = threading.Event()
    dest = Recording(gate)
    uploader = make(dest, workers=4)
    uploader.upload_file("checkpoints/ep3.pt", _write(tmp_path / "a", b"3"))
    uploader.link("checkpoints/ep3.pt", "checkpoints/latest.pt")
    with pytest.raises(FileNotFoundError):
        uploader.link("checkpoints/ep9.pt", "checkpoints/best.pt")
    with pytest.raises(ValueError):
        uploader.link("checkpoints/latest.pt", "checkpoints/ep3.pt")  # ep3 -> latest -> ep3
    gate.set()
    uploader.flush(10)
    assert dest.calls == [("upload", "checkpoints/ep3.pt"), ("link", "checkpoints/latest.pt")]
    assert dest.links == {"checkpoints/latest.pt": "checkpoints/ep3.pt"}


def test_a_failing_destination_is_reported_at_the_next_call_at_flush_and_at_close(make, tmp_path):
    failing = Failing(lambda: StorePermissionError("bucket says no"))
    good = Recording()
    uploader = make(good, failing)
    src = _write(tmp_path / "a", b"a")
    uploader.upload_file("one.txt", src)
    with pytest.raises(UploadError) as flushed:
        uploader.flush(10)
    assert set(flushed.value.failures) == {"one.txt"}
    assert isinstance(flushed.value.failures["one.txt"], StorePermissionError)
    assert "failing" in str(flushed.value) and "bucket says no" in str(flushed.value)
    uploader.upload_file("two.txt", src)  # the failure was reported once: this call goes through
    deadline = time.monotonic() + 10
    while "failing" not in uploader.undelivered().get("two.txt", "") and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(UploadError) as called:
        uploader.upload_file("three.txt", src)  # reported here, and this call did nothing
    assert set(called.value.failures) == {"two.txt"}
    undelivered = uploader.close(10)
    assert set(undelivered) == {"one.txt", "two.txt"}
    assert "StorePermissionError" in undelivered["one.txt"]
    assert set(good.latest) == {"one.txt", "two.txt"}  # the other destination got everything


def test_transient_errors_are_retried(make, tmp_path):
    flaky = Failing(lambda: StoreUnreachableError("connection reset"), succeed_after=2)
    uploader = make(flaky, attempts=4)
    uploader.upload_file("a.txt", _write(tmp_path / "a", b"a"))
    uploader.flush(10)
    assert flaky.attempts == 3 and flaky.delivered == ["a.txt"]


def test_transient_errors_give_up_after_the_attempts(make, tmp_path):
    down = Failing(lambda: ConnectionError("refused"))
    uploader = make(down, attempts=3)
    uploader.upload_file("a.txt", _write(tmp_path / "a", b"a"))
    with pytest.raises(UploadError) as raised:
        uploader.flush(10)
    assert down.attempts == 3
    assert isinstance(raised.value.failures["a.txt"], ConnectionError)


def test_a_later_successful_version_clears_a_failure(make, tmp_path):
    once = Failing(lambda: StorePermissionError("no"), succeed_after=1)
    uploader = make(once)
    src = _write(tmp_path / "a", b"a")
    uploader.upload_file("a.txt", src)
    with pytest.raises(UploadError):
        uploader.flush(10)
    uploader.upload_file("a.txt", src)
    uploader.flush(10)
    assert uploader.close(10) == {}


def test_policy_block_makes_the_caller_wait_for_room(make, tmp_path):
    gate = threading.Event()
    uploader = make(Recording(gate), queue_bytes=1000, policy="block")
    uploader.upload_file("a", _write(tmp_path / "a", b"x" * 800))
    returned = threading.Event()

    def second() -> None:
        uploader.upload_file("b", _write(tmp_path / "b", b"y" * 800))
        returned.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not returned.wait(0.3)  # 1600 bytes would exceed the 1000-byte bound
    gate.set()
    assert returned.wait(10)
    thread.join()
    uploader.flush(10)


def test_policy_latest_keeps_only_the_newest_queued_version(make, tmp_path):
    gate = threading.Event()
    dest = Recording(gate)
    uploader = make(dest, queue_bytes=1000, policy="latest", workers=1)
    contents = [f"version {i}".encode() * 20 for i in range(6)]
    for content in contents:  # 200 bytes each: v0 is in flight, v1..v5 queue and supersede
        uploader.upload_file("latest.pt", _write(tmp_path / "src", content))
    staged = os.listdir(uploader.copies_dir)
    assert len(staged) <= 2  # the one being sent and the newest
    gate.set()
    uploader.flush(10)
    assert dest.latest["latest.pt"] == digest_of(_write(tmp_path / "last", contents[-1]))
    assert len(dest.calls) <= 2
    assert uploader.close(10) == {}


def test_policy_latest_never_drops_the_only_version_of_another_name(make, tmp_path):
    gate = threading.Event()
    dest = Recording(gate)
    uploader = make(dest, queue_bytes=500, policy="latest", workers=1)
    uploader.upload_file("a", _write(tmp_path / "a", b"a" * 400))
    returned = threading.Event()
    threading.Thread(target=lambda: (uploader.upload_file("b", _write(tmp_path / "b", b"b" * 400)),
                                     returned.set())).start()
    assert not returned.wait(0.3)  # 'a' is not superseded, so 'b' waits rather than dropping it
    gate.set()
    assert returned.wait(10)
    uploader.flush(10)
    assert set(dest.latest) == {"a", "b"}


def test_a_file_larger_than_the_bound_is_admitted_when_nothing_else_is_staged(make, tmp_path):
    dest = Recording()
    uploader = make(dest, queue_bytes=10)
    uploader.upload_file("big", _write(tmp_path / "big", b"z" * 1000))
    uploader.flush(10)
    assert "big" in dest.latest


def test_flush_times_out_naming_what_is_pending(make, tmp_path):
    gate = threading.Event()
    uploader = make(Recording(gate))
    uploader.upload_file("a", _write(tmp_path / "a", b"a"))
    with pytest.raises(TimeoutError, match="1 uploads still pending"):
        uploader.flush(0.2)
    gate.set()
    uploader.flush(10)


def test_close_reports_what_is_still_pending_when_the_wait_ends(make, tmp_path):
    gate = threading.Event()
    uploader = make(Recording(gate))
    uploader.upload_file("slow.bin", _write(tmp_path / "a", b"a"))
    undelivered = uploader.close(0.2)
    gate.set()
    assert list(undelivered) == ["slow.bin"]
    assert "pending" in undelivered["slow.bin"]
    assert not os.path.exists(uploader.copies_dir)
    with pytest.raises(RuntimeError):
        uploader.upload_file("late", _write(tmp_path / "b", b"b"))


def test_no_loop_when_a_destination_uploads_its_own_files(make, tmp_path):
    produced = tmp_path / "produced"
    produced.mkdir()
    box: list[Uploader] = []
    loop = Reentrant(str(produced), lambda name, path: box[0].upload_file(name, path))
    other = Recording()
    uploader = make(loop, other)
    box.append(uploader)
    uploader.upload_file("ckpt.pt", _write(tmp_path / "c", b"c"))
    uploader.flush(10)
    time.sleep(0.2)  # a loop, if any, would keep producing uploads now
    uploader.flush(10)
    assert loop.produced == 1  # it saw only the script's file, not its own log
    assert set(loop.latest) == {"ckpt.pt"}
    assert set(other.latest) == {"ckpt.pt", "logs/1.txt"}  # the log still reached the others


def test_files_a_destination_owns_are_not_sent_to_it(make, tmp_path):
    class Owner(Recording):
        def owns(self, path):
            return path.startswith(str(tmp_path / "mine"))

    (tmp_path / "mine").mkdir()
    owner, other = Owner(), Recording()
    uploader = make(owner, other)
    uploader.upload_file("own.log", _write(tmp_path / "mine" / "x.log", b"log"))
    uploader.upload_file("ckpt", _write(tmp_path / "c", b"c"))
    uploader.flush(10)
    assert set(owner.latest) == {"ckpt"}
    assert set(other.latest) == {"own.log", "ckpt"}


def test_staging_holds_one_copy_and_is_emptied_after_delivery(make, tmp_path):
    gate = threading.Event()
    uploader = make(Recording(gate))
    src = _write(tmp_path / "a", b"q" * 4096)
    uploader.upload_file("a", src)
    staged = [os.path.join(uploader.copies_dir, n) for n in os.listdir(uploader.copies_dir)]
    assert len(staged) == 1 and os.path.getsize(staged[0]) == 4096
    assert not os.access(staged[0], os.W_OK) or os.geteuid() == 0  # read-only (root ignores modes)
    assert os.stat(staged[0]).st_mode & 0o222 == 0
    gate.set()
    uploader.flush(10)
    assert os.listdir(uploader.copies_dir) == []


def test_destinations_are_flushed_when_the_queue_drains(make, tmp_path):
    dest = Recording()
    uploader = make(dest)
    for i in range(5):
        uploader.upload_file(f"f{i}", _write(tmp_path / f"f{i}", b"x"))
    uploader.flush(10)
    assert 1 <= dest.flushes <= 6
