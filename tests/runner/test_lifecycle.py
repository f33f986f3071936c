"""The pieces of a run's life that need no studio process: stop signals, liveness, slow inputs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

import fs_tracker
from studio_run.objects.manifest import Manifest
from studio_run.origin import current_origin, process_start_ticks
from studio_run.runner.capturer import _missed
from studio_run.runner.prepare import _SlowNotice
from studio_run.runner.signals import AbandonCapture, StopSignals
from studio_run.snapshots.capture import SnapshotResult
from studio_run.store.records import RunRecord, effective_status

_DEADLINE = 60.0


def _deliver(signum: int) -> None:
    """Send ``signum`` to this process's main thread; its Python handler runs at the next bytecode."""
    signal.pthread_kill(threading.main_thread().ident, signum)  # type: ignore[arg-type]


def test_after_the_script_the_first_signal_is_only_said_the_second_abandons(capsys):
    with StopSignals(grace=30) as signals:
        signals.detach()
        _deliver(signal.SIGINT)
        assert "taking the final capture" in capsys.readouterr().err
        with pytest.raises(AbandonCapture):
            _deliver(signal.SIGTERM)
    assert "abandoning the final capture" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is not None


def test_a_script_that_ignores_sigterm_is_killed_after_the_grace_period(capsys):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('r', flush=True); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"r\n"
    with StopSignals(grace=0.2) as signals:
        signals.attach(proc)
        _deliver(signal.SIGTERM)
        assert proc.wait(timeout=_DEADLINE) == -signal.SIGKILL
        assert signals.detach() == [signal.SIGTERM]
    proc.stdout.close()
    assert "killing it (SIGKILL)" in capsys.readouterr().err


def test_a_record_whose_pid_now_belongs_to_another_process_is_lost():
    origin = current_origin()
    assert origin.pid_started == process_start_ticks(os.getpid()) and origin.pid_started
    record = RunRecord("e", "r", host=socket.gethostname(), pid=origin.pid, pid_started=origin.pid_started)
    assert effective_status(record, socket.gethostname()) == "running"
    record.pid_started = origin.pid_started - 1  # the runner that wrote it started at another time
    assert effective_status(record, socket.gethostname()) == "lost"
    record.pid_started = None  # records written before the start time was kept: the pid alone decides
    assert effective_status(record, socket.gethostname()) == "running"


def test_process_start_ticks_reads_field_22_even_with_odd_command_names(tmp_path):
    odd = tmp_path / "a b) (c"
    odd.write_text("import time; time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(odd)])
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            expected = int(f.read().rsplit(")", 1)[1].split()[19])
        assert process_start_ticks(proc.pid) == expected
    finally:
        proc.kill()
        proc.wait()
    assert process_start_ticks(proc.pid) is None


def test_an_input_snapshot_that_ends_in_time_says_nothing(capsys):
    with _SlowNotice("/work/space", after=_DEADLINE) as notice:
        notice.wrap(lambda n: None)(3 << 30)
    assert notice.done == 3 << 30
    assert capsys.readouterr().err == ""


def test_the_slow_input_line_names_the_size_and_studioignore(capsys):
    notice = _SlowNotice("/work/space", after=0)
    notice.done = 3 << 30
    notice._wait()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3.0 GiB" in err and ".studioignore" in err and "/work/space" in err


def test_get_artifact_default_outside_studio_run(monkeypatch):
    monkeypatch.delenv("STUDIO_HANDOFF", raising=False)
    fs_tracker._cache.clear()
    assert fs_tracker.get_artifact("data", default="./data") == "./data"
    with pytest.raises(fs_tracker.NotUnderStudio):
        fs_tracker.get_artifact("data")


def test_files_a_snapshot_skipped_are_missing_but_symlinks_left_out_are_only_named(tmp_path):
    (tmp_path / "data").symlink_to("/")  # a folder outside: left out on purpose
    result = SnapshotResult(Manifest.build([]), 0, 0, 0, unstable=("log.txt",), skipped=("data", "gone.bin"))
    reasons, links = _missed(result, str(tmp_path))
    assert links == ["data"]
    assert reasons == ["1 file not captured (unreadable or vanished): 'gone.bin'",
                       "1 file kept changing, previous version kept: 'log.txt'"]
    assert _missed(SnapshotResult(Manifest.build([]), 0, 0, 0), str(tmp_path)) == ([], [])
