"""Stop signals during a run: stop the script, never lose the final capture by accident.

One handler covers the whole execution, from the script's start until the final record is
written, so that no SIGINT, SIGTERM or SIGHUP ever meets Python's default handler (which would
end studio in the middle of the final capture).

While the script runs, stop signals studio receives are forwarded to the script's process
group (the script and everything it started; ``watchdog.py``). A Ctrl-C at a terminal reaches
the script's group directly (``terminal.py`` gives it the foreground), so studio never sends it
a second one. A script still running ``stop_grace`` seconds after a forwarded SIGTERM or SIGHUP,
or after ``stop`` (``studio stop``, ``--max-duration``), is killed with SIGKILL, and the
terminal says so.

After the script ended, studio is taking the final capture: the first signal only says so on
the terminal; a second one abandons the capture (``AbandonCapture``), after saying that too.
So a second Ctrl-C during a run never discards the final capture; a third one may.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from types import FrameType
from typing import Any, Callable, Optional, Union

from .. import console

__all__ = ["AbandonCapture", "STOP_SIGNALS", "StopSignals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_ESCALATE_AFTER = (signal.SIGTERM, signal.SIGHUP)  # a Ctrl-C user can press again; a service manager cannot

_Handler = Union[Callable[[int, Optional[FrameType]], Any], int, signal.Handlers, None]


class AbandonCapture(KeyboardInterrupt):
    """Raised in the main thread by a repeated stop signal during the final capture."""


class StopSignals:
    """Owns studio's stop-signal handlers for one run (a context manager; main thread only)."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.received: list[int] = []  # signals that arrived while the script ran, in order
        self.stopped_as: Optional[str] = None  # set by ``stop``: the status the run ends with
        self._late = 0  # signals that arrived after it ended
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._attached = False  # a script was attached (``stop`` before it means "as it starts")
        self._forwarded: set[int] = set()  # signals already passed to the attached script
        self._timer: Optional[threading.Timer] = None
        self._previous: dict[int, _Handler] = {}
        self._ignored: list[int] = []
        self._lock = threading.RLock()  # the handler runs on the main thread, maybe inside attach

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            # A signal studio inherited ignored (a shell's background job, nohup) stays ignored
            # for the script, as the shell meant: it is handled only once the script has started.
            self._ignored = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) == signal.SIG_IGN]
            self._previous = {sig: signal.signal(sig, self._on_signal)
                              for sig in STOP_SIGNALS if sig not in self._ignored}
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous = {}

    def attach(self, proc: "subprocess.Popen[bytes]") -> None:
        """From now until ``detach``, stop signals are passed to ``proc``."""
        with self._lock:
            self._proc = proc
            self._attached = True
            self._forwarded = set()
            if self.stopped_as is not None:  # ``stop`` came while the script was being started
                self._forward(proc, signal.SIGTERM)
        for sig in self._ignored:  # the script has inherited SIG_IGN by now
            self._previous[sig] = signal.signal(sig, self._on_signal)
        self._ignored = []

    def detach(self) -> list[int]:
        """The script ended: signals now concern the final capture. Returns those it received."""
        with self._lock:
            self._proc = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return list(self.received)

    def _on_signal(self, signum: int, _frame: Optional[FrameType]) -> None:
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                self.received.append(signum)
                self._forward(proc, signum)
                return
            self._late += 1
            late = self._late
        name = signal.Signals(signum).name
        if late == 1:
            console.warn(f"{name}: the script has ended; studio is taking the final capture "
                         "(send it again to stop without it)")
            return
        console.warn(f"{name} again: abandoning the final capture; the run keeps its last complete snapshots")
        raise AbandonCapture()

    def stop(self, status: str) -> bool:
        """Stop the script as SIGTERM does (SIGKILL after the grace period) and remember why:
        ``status`` (``stopped``, ``timed-out``) becomes the run's. False when it already ended."""
        with self._lock:
            proc = self._proc
            if proc is None and not self._attached:
                self.stopped_as = self.stopped_as or status  # ``attach`` stops it as it starts
                return True
            if proc is None or proc.poll() is not None:
                return False
            if self.stopped_as is None:
                self.stopped_as = status
            self._forward(proc, signal.SIGTERM)
            return True

    def _forward(self, proc: "subprocess.Popen[bytes]", signum: int) -> None:
        """Pass ``signum`` to the script's group once: the same signal again (``studio stop``'s
        SIGTERM beside its stop request, a service manager repeating itself) could land while the
        script's Python is shutting down, when its handlers are gone and the default one kills it
        (a script that saved and exited 0 would be recorded as killed). The grace timer escalates."""
        if signum in self._forwarded:
            return
        self._forwarded.add(signum)
        leader = _leads_group(proc)
        if not (signum == signal.SIGINT and not leader and _terminal_sent_it()):
            try:
                if leader:
                    os.killpg(proc.pid, signum)  # the script and every process it started
                else:
                    proc.send_signal(signum)
            except ProcessLookupError:
                pass
        if signum in _ESCALATE_AFTER and self._timer is None:
            self._timer = threading.Timer(self.grace, self._escalate, args=(proc, signum))
            self._timer.daemon = True
            self._timer.start()

    def _escalate(self, proc: "subprocess.Popen[bytes]", signum: int) -> None:
        with self._lock:
            if self._proc is not proc or proc.poll() is not None:
                return
            console.warn(f"the script is still running {self.grace:g} s after {signal.Signals(signum).name}; "
                         "killing it (SIGKILL)")
            try:
                if _leads_group(proc):
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            except ProcessLookupError:
                pass


def _leads_group(proc: "subprocess.Popen[bytes]") -> bool:
    """Whether ``proc`` leads its own process group (then signals go to the whole group)."""
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False


def _terminal_sent_it() -> bool:
    """Whether we are the foreground process group of a terminal (so Ctrl-C hit the script too)."""
    for stream in (sys.stdin, sys.stderr, sys.stdout):
        try:
            if stream is not None and stream.isatty():
                return os.tcgetpgrp(stream.fileno()) == os.getpgrp()
        except (OSError, ValueError):
            continue
    return False
