"""Run the user's script as a child process: tee its output, pass signals, report how it ended.

Output: stdout and stderr go to the terminal live (each to its own stream) and to one log file,
in arrival order; ``log_lock`` is held for each write so the capturer can snapshot the log
between writes, never in the middle of one.

Signals: a Ctrl-C at a terminal reaches the whole foreground process group, the script
included, so studio does not send it again (a script would get two KeyboardInterrupts). A
SIGINT sent to studio alone (not from its terminal) and SIGTERM/SIGHUP are forwarded. Either
way studio keeps running to take the final capture, and the run is recorded as interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import BinaryIO, Optional

__all__ = ["ChildResult", "run_child"]

_FORWARD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
) -> ChildResult:
    """Start ``command``, tee its output into ``log_path``, wait for it, return how it ended."""
    received: list[int] = []
    with open(log_path, "ab", buffering=0) as log:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None

        def on_signal(signum: int, _frame: object) -> None:
            received.append(signum)
            if signum == signal.SIGINT and _terminal_sent_it():
                return
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass

        previous = _install(on_signal)
        tees = [
            threading.Thread(target=_tee, args=(proc.stdout, _stream(sys.stdout), log, log_lock), daemon=True),
            threading.Thread(target=_tee, args=(proc.stderr, _stream(sys.stderr), log, log_lock), daemon=True),
        ]
        for tee in tees:
            tee.start()
        try:
            returncode = proc.wait()
            for tee in tees:  # a grandchild holding the pipe open must not hang studio
                tee.join(timeout=5)
        finally:
            _restore(previous)
    if returncode < 0:
        signum = -returncode
        code = 128 + signum
        interrupted = signum if signum in _FORWARD else (received[0] if received else None)
    else:
        code = returncode
        interrupted = received[0] if received else None
    return ChildResult(code, interrupted)


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


def _terminal_sent_it() -> bool:
    """Whether we are the foreground process group of a terminal (so Ctrl-C hit the script too)."""
    for stream in (sys.stdin, sys.stderr, sys.stdout):
        try:
            if stream is not None and stream.isatty():
                return os.tcgetpgrp(stream.fileno()) == os.getpgrp()
        except (OSError, ValueError):
            continue
    return False


def _install(handler):  # type: ignore[no-untyped-def]
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in _FORWARD}


def _restore(previous) -> None:  # type: ignore[no-untyped-def]
    for sig, old in previous.items():
        signal.signal(sig, old)
