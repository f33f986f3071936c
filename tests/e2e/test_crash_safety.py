"""kill -9 of the runner at any moment leaves the store readable and earlier versions intact."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

from studio_run.objects.repository import Repository
from studio_run.storage.local import LocalStorage
from tests.helpers import studio, studio_env, write_script

CHURN = """
import os, sys, time
out = sys.argv[1]
i = 0
while True:
    i += 1
    for n in range(40):
        with open(os.path.join(out, f"f{n}.bin"), "wb") as f:
            f.write(os.urandom(64 * 1024) + str(i).encode())
    time.sleep(0.01)
"""


def _tree_digest(folder: str) -> str:
    h = hashlib.sha256()
    for dirpath, _dirs, files in sorted(os.walk(folder)):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def _run_records(store_root: str, experiment: str) -> int:
    """How many run records ``experiment`` has in the store so far."""
    folder = os.path.join(store_root, "experiments", experiment)
    if not os.path.isdir(folder):
        return 0
    return sum(1 for name in os.listdir(folder) if name.endswith(".json") and not name.endswith(".env.json"))


def _check_store(store_root: str) -> int:
    """Every record parses and every snapshot it points at restores and verifies."""
    repo = Repository(LocalStorage(store_root))
    checked = 0
    exp_root = os.path.join(store_root, "experiments")
    for name in os.listdir(exp_root):
        for file in os.listdir(os.path.join(exp_root, name)):
            if not file.endswith(".json") or file.endswith(".env.json"):
                continue
            with open(os.path.join(exp_root, name, file)) as f:
                record = json.load(f)
            for art in record["artifacts"].values():
                manifest = repo.get_manifest(art["digest"])
                for entry in manifest.entries:
                    if entry.type == "file":
                        assert repo.has_object(entry.digest)
                checked += 1
    return checked


def test_kill_9_mid_capture_keeps_the_store_consistent(home):
    out = os.path.join(home, "out")
    os.makedirs(out)
    with open(os.path.join(out, "v1.txt"), "w") as f:
        f.write("version one")
    keep = write_script(home, "keep.py", "print('v1')\n")
    assert studio("run", "-e", "churn", f"--capture={out}:out", keep, home=home).returncode == 0
    first = os.path.join(home, "first")
    assert studio("get", "churn/out@1", first, home=home).returncode == 0
    expected = _tree_digest(first)

    script = write_script(home, "churn.py", CHURN)
    store_root = os.path.join(home, ".studioml", "store")
    for delay in (0.4, 0.7, 1.0, 1.3):
        before = _run_records(store_root, "churn")
        proc = subprocess.Popen(
            [sys.executable, "-m", "studio_run", "run", "-e", "churn", "--capture-interval", "0.1s",
             f"--capture={out}:out", script, out],
            cwd=home, env=studio_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # Mid-capture: the delay counts from the run's first record, not from the spawn (on a loaded
        # machine starting studio can take longer than every delay, and then no run is ever "lost").
        deadline = time.monotonic() + 60
        while _run_records(store_root, "churn") == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    assert _check_store(store_root) >= 5
    again = os.path.join(home, "again")
    assert studio("get", "churn/out@1", again, home=home).returncode == 0
    assert _tree_digest(again) == expected
    newest = os.path.join(home, "newest")
    got = studio("get", "churn/out", newest, home=home)
    assert got.returncode == 0, got.stderr
    listed = studio("list", home=home)
    assert listed.returncode == 0 and "lost" in listed.stdout
