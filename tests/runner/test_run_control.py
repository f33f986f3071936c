"""Run control without a studio process: requests with sweeps and limits, stop requests in the
store, ``stop_run`` for each state, the stop watch, stop signals and the watchdog."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from studio_run.config import load_config
from studio_run.objects.repository import Repository
from studio_run.origin import current_origin
from studio_run.runner.request import RunRequest
from studio_run.runner.signals import StopSignals
from studio_run.runner.stop import stop_run
from studio_run.runner.stopwatch import StopWatch
from studio_run.runner.watchdog import Watchdog, end_group, group_alive
from studio_run.storage.memory import MemoryStorage
from studio_run.store.records import RecordStore, RunRecord, new_run_id
from studio_run.store.stops import clear_stop, request_stop, stop_key, stop_requested
from studio_run.store.store import Store

_DEADLINE = 60.0
HOST = socket.gethostname()


def _until(condition, deadline: float = _DEADLINE) -> bool:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def store(tmp_path):
    storage = MemoryStorage(f"stop-{uuid.uuid4().hex}")
    repo = Repository(storage)
    config = load_config(env={"STUDIOML_HOME": str(tmp_path)})
    return Store("memory://test", storage, repo, repo, RecordStore(storage), config)  # type: ignore[arg-type]


def _record(store: Store, status: str, **fields) -> RunRecord:
    record = RunRecord("exp", new_run_id(), status=status, started_at=time.time(), **fields)
    store.records.write(record)
    return store.records.resolve("exp", record.run_id)


def test_a_request_with_a_sweep_point_and_limits_round_trips():
    request = RunRequest(script="t.py", args=("--x", "1"), cwd="/w", max_duration=7200.0, lifetime=86400.0)
    point = request.with_point({"lr": 0.1, "opt": "adam"})
    assert point.args == ("--x", "1", "--lr", "0.1", "--opt", "adam")
    assert RunRequest.from_dict(json.loads(json.dumps(point.to_dict()))) == point
    for bad in ({"max_duration": "2h"}, {"lifetime": -1}, {"hyperparameters": {"lr": [1]}}, {"hyperparameters": 3}):
        with pytest.raises(ValueError, match="not a run request"):
            RunRequest.from_dict({**point.to_dict(), **bad})


def test_a_stop_request_sits_beside_the_record_and_goes_with_the_experiment(store):
    record = _record(store, "running")
    assert not stop_requested(store.storage, "exp", record.run_id)
    request_stop(store.storage, "exp", record.run_id)
    request_stop(store.storage, "exp", record.run_id)  # asking twice is asking once
    assert stop_requested(store.storage, "exp", record.run_id)
    assert stop_key("exp", record.run_id) == f"experiments/exp/{record.run_id}.stop"
    assert store.records.run_ids("exp") == [record.run_id] and list(store.records.all_runs()) == ["exp"]
    clear_stop(store.storage, "exp", record.run_id)
    assert not stop_requested(store.storage, "exp", record.run_id)
    request_stop(store.storage, "exp", record.run_id)
    assert store.records.delete_experiment("exp") == 1
    assert list(store.storage.list("experiments/")) == []


def test_stopping_a_queued_run_records_it_stopped_and_leaves_the_request(store):
    record = _record(store, "queued", queue="gpu")
    said = stop_run(store, record, hostname=HOST, grace=0)
    assert said == "exp v1 was queued; it is stopped and will not start"
    stored = store.records.resolve("exp")
    assert stored.status == "stopped" and stored.ended_at and stored.queue == "gpu"
    assert stop_requested(store.storage, "exp", record.run_id)


def test_stopping_a_final_run_changes_nothing(store):
    record = _record(store, "finished", exit_code=0)
    assert stop_run(store, record, hostname=HOST) == "exp v1 has already ended (finished); nothing to stop"
    assert not stop_requested(store.storage, "exp", record.run_id)
    assert store.records.resolve("exp").status == "finished"


def test_a_run_on_another_host_gets_the_request_only(store):
    record = _record(store, "running", host="gpu-box-7", pid=os.getpid())
    said = stop_run(store, record, hostname=HOST, grace=0)
    assert "stop requested for exp v1" in said and "gpu-box-7" in said
    assert stop_requested(store.storage, "exp", record.run_id)
    assert store.records.resolve("exp").status == "running"


def test_a_lost_run_is_said_to_be_lost(store):
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    record = _record(store, "running", host=HOST, pid=dead.pid)
    said = stop_run(store, record, hostname=HOST, grace=0)
    assert "is lost" in said and stop_requested(store.storage, "exp", record.run_id)


def test_a_running_run_here_gets_sigterm_when_its_start_time_matches(store):
    runner = subprocess.Popen([sys.executable, "-c", "import time; print('r', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE)
    assert runner.stdout is not None and runner.stdout.readline() == b"r\n"
    from studio_run.origin import process_start_ticks
    record = _record(store, "running", host=HOST, pid=runner.pid, pid_started=process_start_ticks(runner.pid))
    said = stop_run(store, record, hostname=HOST, grace=0)
    assert f"sent SIGTERM to its runner, pid {runner.pid}" in said
    assert runner.wait(timeout=_DEADLINE) == -signal.SIGTERM
    runner.stdout.close()


def test_the_stop_watch_finds_a_request_and_a_deadline(store):
    calls: list[str] = []
    done = threading.Event()

    def stop(status: str) -> bool:
        calls.append(status)
        done.set()
        return True

    watch = StopWatch(store.storage, "exp", "r1", stop, poll=0.02)
    watch.start()
    request_stop(store.storage, "exp", "r1")
    assert done.wait(_DEADLINE) and calls == ["stopped"] and watch.requested and watch.confirm()
    done.clear()
    timed = StopWatch(store.storage, "exp", "r2", stop, poll=30, max_duration=0.05)
    timed.start()
    assert done.wait(_DEADLINE) and calls == ["stopped", "timed-out"] and not timed.confirm(timeout=1)


def test_a_stop_before_the_script_is_attached_stops_it_as_it_starts():
    code = "import time; print('r', flush=True); time.sleep(120)"
    with StopSignals(grace=30) as signals:
        assert signals.stop("timed-out")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, process_group=0)
        assert proc.stdout is not None
        proc.stdout.readline()  # the process exists; whether it printed first does not matter
        signals.attach(proc)
        assert proc.wait(timeout=_DEADLINE) == -signal.SIGTERM
        assert signals.detach() == [] and signals.stopped_as == "timed-out"
        assert not signals.stop("stopped")  # it has ended: nothing to stop, status unchanged
    assert signals.stopped_as == "timed-out"
    proc.stdout.close()


_COUNTS_SIGTERMS = """
import os, signal, sys, time
def bye(*_):
    with open(sys.argv[1], "a") as f:
        f.write("T")
    time.sleep(0.5)  # still shutting down when a second SIGTERM would come
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
time.sleep(120)
"""


def test_a_stop_request_beside_a_sigterm_reaches_the_script_once(tmp_path):
    """``studio stop`` both writes a request (the stopwatch's ``stop``) and sends SIGTERM: the
    script gets one SIGTERM, so a second cannot kill it while its handler is saving."""
    seen = tmp_path / "sigterms"
    with StopSignals(grace=30) as signals:
        proc = subprocess.Popen([sys.executable, "-c", _COUNTS_SIGTERMS, str(seen)], stdout=subprocess.PIPE,
                                process_group=0)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        signals.attach(proc)
        os.kill(os.getpid(), signal.SIGTERM)  # as ``studio stop`` signals the runner
        assert _until(seen.exists)
        assert signals.stop("stopped")  # the stopwatch finds the request while the script saves
        assert proc.wait(timeout=_DEADLINE) == 0
        assert signals.detach() == [signal.SIGTERM] and signals.stopped_as == "stopped"
    assert seen.read_text() == "T"
    proc.stdout.close()


_TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def _tree():
    """A script (group leader) with a child that ignores SIGTERM; returns (proc, child pid)."""
    proc = subprocess.Popen([sys.executable, "-c", _TREE], stdout=subprocess.PIPE, process_group=0)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    proc.stdout.close()
    return proc, child


def test_end_group_kills_what_ignores_sigterm_after_the_grace():
    proc, child = _tree()
    assert group_alive(proc.pid)
    assert end_group(proc.pid, 0.2)
    assert proc.wait(timeout=_DEADLINE) == -signal.SIGTERM
    assert _until(lambda: not group_alive(proc.pid)), "the child survived SIGKILL"
    assert not end_group(proc.pid, 0.2)  # nothing left to end


def test_the_watchdog_ends_the_group_when_its_runner_end_closes_without_done():
    watchdog = Watchdog.start(grace=0.2)
    proc, _child = _tree()
    watchdog.watch(proc.pid)
    assert watchdog._fd is not None
    os.close(watchdog._fd)  # what the kernel does when the runner dies
    watchdog._fd = None
    assert proc.wait(timeout=_DEADLINE) == -signal.SIGTERM
    assert _until(lambda: not group_alive(proc.pid))
    assert watchdog._proc.wait(timeout=_DEADLINE) == 0


def test_a_released_watchdog_leaves_the_group_alone():
    watchdog = Watchdog.start(grace=0.2)
    proc, _child = _tree()
    watchdog.watch(proc.pid)
    watchdog.release()
    assert watchdog._proc.returncode == 0 and group_alive(proc.pid)
    assert end_group(proc.pid, 0.2) and proc.wait(timeout=_DEADLINE) == -signal.SIGTERM
    assert _until(lambda: not group_alive(proc.pid))


def test_current_origin_is_what_stop_run_compares():
    origin = current_origin()
    assert origin.host == HOST and origin.pid == os.getpid()


def test_a_secret_looking_hyperparameter_is_masked_in_the_record_as_its_argument_is():
    from studio_run.runner.prepare import _new_record

    request = RunRequest(script="t.py", cwd="/").with_point({"lr": 0.1, "api_key": "s3cr3t"})
    record = _new_record(request, "e", new_run_id())
    assert record.hyperparameters == {"lr": 0.1, "api_key": "***"}
    assert record.command[-4:] == ["--lr", "0.1", "--api_key", "***"] and "s3cr3t" not in json.dumps(record.to_dict())
    assert request.args[-1] == "s3cr3t"  # the script still gets the value


def test_a_run_on_a_worker_here_is_never_signalled_only_asked(store):
    from studio_run.origin import process_start_ticks

    record = _record(store, "running", host=HOST, pid=os.getpid(), pid_started=process_start_ticks(os.getpid()),
                     queue="gpu")
    said = stop_run(store, record, hostname=HOST, grace=0)  # this test process would die of a SIGTERM
    assert "(queue gpu) looks for the request" in said and stop_requested(store.storage, "exp", record.run_id)
