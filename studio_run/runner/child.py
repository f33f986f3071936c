"""Run the user's script as a child process: tee its output, pass signals, report how it ended.

Output: stdout and stderr go to the terminal live (each to its own stream) and to one log file,
in arrival order; ``log_lock`` is held for each write so the capturer can snapshot the log
between writes, never in the middle of one.

Signals are handled by ``StopSignals`` (``signals.py``) for the whole run; while the script runs
they reach it. The run counts as interrupted when a stop signal ended it: the script died of a
signal, or exited non-zero after one arrived. A script that exited 0 completed, whatever
arrived meanwhile or afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import BinaryIO, Optional

from .. import console
from .signals import STOP_SIGNALS, StopSignals
from .terminal import Foreground
from .watchdog import Watchdog, end_group, group_alive

__all__ = ["ChildResult", "run_child"]

# The script leads a process group of its own: signals, stops and the watchdog reach everything it
# starts. Popen's ``process_group`` is Python 3.11+; before, ``setpgrp`` in the child does the same.
_OWN_GROUP: dict = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}


@dataclass(frozen=True)
class ChildResult:
    """How the script ended: studio's exit code for it, and the signal that interrupted it, if any."""

    exit_code: int
    interrupted_by: Optional[int]


def run_child(
    command: list[str],
    *,
    cwd: str,
    env: dict[str, str],
    log_path: str,
    log_lock: threading.Lock,
    signals: StopSignals,
) -> ChildResult:
    """Start ``command``, tee its output into ``log_path``, wait for it, return how it ended.

    The script leads its own process group, watched by a ``Watchdog`` (studio's death ends the
    group) and, at a terminal, given the foreground while it runs. Processes of its group still
    alive when it ends get SIGTERM, then SIGKILL after the grace period: nothing the script
    started writes on into its folders after the final capture.
    """
    with open(log_path, "ab", buffering=0) as log:
        watchdog = Watchdog.start(signals.grace)
        try:
            proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    **_OWN_GROUP)
        except BaseException:
            watchdog.release()
            raise
        if not watchdog.watch(proc.pid):
            console.warn("studio's watchdog is gone: if studio dies, the script's processes are not ended")
        assert proc.stdout is not None and proc.stderr is not None
        foreground = Foreground()
        signals.attach(proc)
        foreground.give(proc.pid)
        tees = [
            threading.Thread(target=_tee, args=(proc.stdout, _stream(sys.stdout), log, log_lock), daemon=True),
            threading.Thread(target=_tee, args=(proc.stderr, _stream(sys.stderr), log, log_lock), daemon=True),
        ]
        for tee in tees:
            tee.start()
        try:
            returncode = proc.wait()
        finally:
            foreground.take_back()
            received = signals.detach()
            if group_alive(proc.pid):
                if not received and signals.stopped_as is None:  # else they were just told to end too
                    console.warn("the script left processes running; ending them (SIGTERM, then SIGKILL "
                                 f"after {signals.grace:g} s)")
                end_group(proc.pid, signals.grace)
            watchdog.release()
        for tee in tees:  # a process that left the group and holds the pipe open must not hang studio
            tee.join(timeout=5)
    return _outcome(returncode, received)


def _outcome(returncode: int, received: list[int]) -> ChildResult:
    if returncode < 0:
        signum = -returncode
        return ChildResult(128 + signum, signum if signum in STOP_SIGNALS else (received[0] if received else None))
    if returncode == 0:
        return ChildResult(0, None)  # the script completed; a signal it outlived did not interrupt it
    return ChildResult(returncode, received[0] if received else None)


def _tee(pipe: BinaryIO, terminal: Optional[BinaryIO], log: BinaryIO, lock: threading.Lock) -> None:
    fd = pipe.fileno()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        if terminal is not None:
            try:
                terminal.write(chunk)
                terminal.flush()
            except (OSError, ValueError):
                terminal = None  # the terminal went away; keep logging
        with lock:
            log.write(chunk)
    pipe.close()


def _stream(stream: object) -> Optional[BinaryIO]:
    return getattr(stream, "buffer", None)
