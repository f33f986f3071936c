"""studio owns the script's whole process tree: no orphan survives its runner, however it ends.

The script starts a child that ignores SIGTERM (as a data-loader worker or a shell pipeline
may). Whether the runner is killed with -9 alone, killed with its whole process group, or
ends normally while that child still runs, the script and the child are gone within the
grace period (set to 1 s here) and the record is left consistent (``lost`` after a kill).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.faults._support import assert_no_traceback
from tests.helpers import studio, studio_env, write_script

_DEADLINE = 60.0

TREE = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
if sys.argv[2] == "wait":
    time.sleep(300)
"""


def _alive(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + _DEADLINE
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            for pid in pids:  # leave nothing behind for the next test, then fail
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def home(tmp_path):
    home = str(tmp_path / "home")
    os.makedirs(os.path.join(home, ".studioml"))
    with open(os.path.join(home, ".studioml", "config.yaml"), "w") as f:
        f.write("stop_grace: 1s\n")
    write_script(home, "tree.py", TREE)
    return home


def _start_tree(home: str) -> tuple[subprocess.Popen, list[int]]:
    pids_file = os.path.join(home, "pids")
    proc = subprocess.Popen([sys.executable, "-m", "studio_run", "run", "-e", "tree", "tree.py", pids_file, "wait"],
                            cwd=home, env=studio_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + _DEADLINE
    while not os.path.exists(pids_file):
        assert proc.poll() is None and time.monotonic() < deadline, "the script did not start"
        time.sleep(0.02)
    with open(pids_file) as f:
        return proc, [int(p) for p in f.read().split()]


@pytest.mark.parametrize("whom", ["runner", "group"])
def test_kill_9_of_the_runner_leaves_no_orphan(home, whom):
    proc, pids = _start_tree(home)
    if whom == "group":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _gone(pids), f"the script or its child outlived a kill -9 of the {whom}"
    listed = studio("list", "--json", home=home)
    assert_no_traceback(listed)
    assert [r["status"] for r in json.loads(listed.stdout)] == ["lost"]


def test_a_child_left_running_when_the_script_ends_is_ended_with_the_run(home):
    done = studio("run", "-e", "left", "tree.py", os.path.join(home, "pids"), "exit", home=home)
    assert done.returncode == 0, done.stderr
    assert "the script left processes running; ending them" in done.stderr
    with open(os.path.join(home, "pids")) as f:
        pids = [int(p) for p in f.read().split()]
    assert _gone(pids)


def test_studio_stop_ends_the_scripts_children_too(home):
    proc, pids = _start_tree(home)
    stopped = studio("stop", "tree", home=home)
    assert stopped.returncode == 0, stopped.stderr
    assert proc.wait(timeout=_DEADLINE) != 0
    assert _gone(pids)
    listed = json.loads(studio("list", "--json", home=home).stdout)
    assert [r["status"] for r in listed] == ["stopped"]
