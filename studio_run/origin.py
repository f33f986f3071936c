"""Who ran this: the host, user and process a run record names, built in one place.

The runner stamps a run with it, the upload API stamps the record of a script that uploads
outside ``studio run`` with it, and ``effective_status`` compares a recorded process with the
live one through ``process_start_ticks``: a pid alone is reused by the kernel, a pid with its
start time names one process for the life of the machine. Gathering a fact never fails: a
missing user name or ``/proc`` gives None, never an exception.
"""

from __future__ import annotations

import getpass
import os
import platform
import socket
from dataclasses import dataclass
from typing import Optional

__all__ = ["Origin", "current_origin", "process_alive", "process_start_ticks", "user_name"]


@dataclass(frozen=True)
class Origin:
    """The machine, account, interpreter and process that ran something."""

    host: str
    user: str
    python: str
    pid: int
    pid_started: Optional[int]


def current_origin() -> Origin:
    """This process's origin (``user`` is empty when the account has no name)."""
    pid = os.getpid()
    return Origin(
        host=socket.gethostname(),
        user=user_name() or "",
        python=platform.python_version(),
        pid=pid,
        pid_started=process_start_ticks(pid),
    )


def user_name() -> Optional[str]:
    """The login name of this process's user, or None for a bare UID (containers)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - KeyError or OSError when the UID has no passwd entry
        return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's counts as alive). Used to
    tell a run, lock or temporary folder left by a dead process from one still in use."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def process_start_ticks(pid: int) -> Optional[int]:
    """When process ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22).

    None when the process does not exist or the system has no ``/proc`` (then callers fall back
    to the pid alone). The command name (field 2) may hold spaces and parentheses, so fields
    are counted from the last ``)``.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3 (state)
    except (IndexError, ValueError):
        return None
