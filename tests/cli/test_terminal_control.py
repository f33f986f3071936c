"""At a terminal the script, in its own process group, still owns the keyboard while it runs:
it reads input, and Ctrl-C reaches it (and ends the run as ``interrupted``, final capture kept)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import sys
import time

from tests.helpers import REPO, studio, studio_env, write_script

_DEADLINE = 60.0

ASK = """
import time
name = input("name? ")
print("hello", name, flush=True)
time.sleep(120)
"""


def _read_until(fd: int, text: bytes, seen: bytearray) -> None:
    deadline = time.monotonic() + _DEADLINE
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {text!r}; the terminal showed {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side closed
                chunk = b""
            assert chunk, f"the terminal closed before {text!r}; it showed {bytes(seen)!r}"
            seen += chunk


def _wait_or_kill(pid: int) -> int:
    """The exit status of ``pid``; killed after the deadline (a hung studio has failed; its
    watchdog then ends the script)."""
    deadline = time.monotonic() + _DEADLINE
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def test_at_a_terminal_the_script_reads_input_and_ctrl_c_reaches_it(tmp_path):
    home = str(tmp_path / "home")
    os.makedirs(home)
    write_script(home, "ask.py", ASK)
    env = studio_env(home)
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty (as in a shell)
        try:
            os.chdir(home)
            os.execve(sys.executable, [sys.executable, "-m", "studio_run", "run", "-e", "tty", "ask.py"],
                      {**env, "PYTHONPATH": REPO})
        finally:
            os._exit(127)
    seen = bytearray()
    try:
        _read_until(fd, b"name? ", seen)
        os.write(fd, b"world\n")
        _read_until(fd, b"hello world", seen)
        os.write(fd, b"\x03")  # Ctrl-C: the terminal signals its foreground group, the script's
        _read_until(fd, b"tty v1 interrupted", seen)
    finally:
        status = _wait_or_kill(pid)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 130, bytes(seen)
    run, = json.loads(studio("list", "--json", home=home).stdout)
    assert run["status"] == "interrupted"
    assert "hello world" in studio("logs", "tty", home=home).stdout
