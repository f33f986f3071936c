"""`studio get` never harms what is outside the store (issue 9): links, devices and FIFOs at
DEST are refused, a full folder is merged into only with --force, an empty DEST or one inside
the store is refused, and the temporary files of a killed get are cleaned by the next one."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from tests.helpers import studio, studio_env, write_script

BIG_FILES = 60


def _refused(done, *words: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("studio: error: "), done.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A store with ``seed/model`` (a folder: f.txt, sub/g.txt), ``seed/one`` (one file) and
    ``seed/big`` (many 256 KiB files, so a get takes long enough to be killed mid-write)."""
    home = str(tmp_path_factory.mktemp("get") / "home")
    os.makedirs(os.path.join(home, "model", "sub"))
    open(os.path.join(home, "model", "f.txt"), "w").write("f")
    open(os.path.join(home, "model", "sub", "g.txt"), "w").write("g")
    open(os.path.join(home, "one.txt"), "w").write("one")
    os.makedirs(os.path.join(home, "big"))
    for i in range(BIG_FILES):
        with open(os.path.join(home, "big", f"{i:03d}.bin"), "wb") as f:
            f.write(os.urandom(256 << 10))
    script = write_script(home, "noop.py", "pass\n")
    done = studio("run", "-e", "seed", f"--capture-once={home}/model:model", f"--capture-once={home}/one.txt:one",
                  f"--capture-once={home}/big:big", script, home=home)
    assert done.returncode == 0, done.stderr
    return home


def test_a_symlink_at_dest_is_refused_not_replaced(home, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "link"
    link.symlink_to(target)
    _refused(studio("get", "seed/one", str(link), home=home), "is a symlink")
    folder = tmp_path / "real"
    folder.mkdir()
    (tmp_path / "dirlink").symlink_to(folder)
    _refused(studio("get", "seed/model", str(tmp_path / "dirlink"), home=home), "is a symlink")
    assert os.path.islink(link) and target.read_text() == "keep me" and os.listdir(folder) == []


def test_a_fifo_or_device_at_dest_is_refused(home, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _refused(studio("get", "seed/one", str(fifo), home=home), "is a FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    if os.getuid() == 0:
        device = str(tmp_path / "null")
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    else:
        device = "/dev/null"  # not writable by this user's get in any case
    _refused(studio("get", "seed/one", device, home=home), "is a character device")
    assert stat.S_ISCHR(os.lstat(device).st_mode)
    inside = tmp_path / "holder"
    inside.mkdir()
    os.mkfifo(inside / "one.txt")  # the name a single file would take inside a DEST folder
    _refused(studio("get", "seed/one", str(inside), home=home), "is a FIFO")
    assert stat.S_ISFIFO(os.lstat(inside / "one.txt").st_mode)


def test_a_full_folder_is_merged_into_only_with_force(home, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("mine")
    (dest / "f.txt").write_text("old")
    _refused(studio("get", "seed/model", str(dest), home=home), "not empty", "--force")
    assert sorted(os.listdir(dest)) == ["f.txt", "mine.txt"] and (dest / "f.txt").read_text() == "old"
    done = studio("get", "--force", "seed/model", str(dest), home=home)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(dest)) == ["f.txt", "mine.txt", "sub"] and (dest / "f.txt").read_text() == "f"
    assert (dest / "mine.txt").read_text() == "mine" and (dest / "sub" / "g.txt").read_text() == "g"


def test_an_empty_folder_and_a_new_path_need_no_force(home, tmp_path):
    (tmp_path / "empty").mkdir()
    assert studio("get", "seed/model", str(tmp_path / "empty"), home=home).returncode == 0
    assert studio("get", "seed/model", str(tmp_path / "new" / "deeper"), home=home).returncode == 0
    for dest in ("empty", "new/deeper"):
        assert (tmp_path / dest / "sub" / "g.txt").read_text() == "g"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".studio-get-")]


def test_an_empty_dest_is_refused(home):
    _refused(studio("get", "seed/model", "", home=home), "DEST is empty")


def test_a_dest_inside_the_store_is_refused(home):
    store = os.path.join(home, ".studioml", "store")
    before = sorted(os.walk(store))
    _refused(studio("get", "seed/model", os.path.join(store, "objects", "x"), home=home), "inside studio's own")
    _refused(studio("get", "seed/one", store, home=home), "inside studio's own")
    _refused(studio("get", "seed/one", os.path.join(home, ".studioml", "blobcache", "x"), home=home),
             "inside studio's own")
    assert sorted(os.walk(store)) == before


def _temps(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".studio-get-")]


def test_the_temporary_folder_of_a_killed_get_is_removed_by_the_next(home, tmp_path):
    dest = tmp_path / "big"
    child = subprocess.Popen([sys.executable, "-m", "studio_run", "get", "seed/big", str(dest)],
                             cwd=home, env=studio_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _temps(tmp_path) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not os.path.exists(dest) or len(os.listdir(dest)) == BIG_FILES  # nothing half-placed
    again = studio("get", "seed/model", str(tmp_path / "other"), home=home)
    assert again.returncode == 0, again.stderr
    assert _temps(tmp_path) == []


def test_a_left_temporary_folder_of_a_dead_process_is_removed(home, tmp_path):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname().replace("-", "_")
    stale = tmp_path / f".studio-get-{host}-{dead.pid}-abc123"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "part").write_bytes(b"x" * 100)
    os.chmod(stale / "sub" / "part", 0o444)
    alive = tmp_path / f".studio-get-{host}-{os.getpid()}-def456"  # a get still running: kept
    alive.mkdir()
    foreign = tmp_path / ".studio-get-otherhost-1-xyz"  # another machine's (shared folder): kept
    foreign.mkdir()
    done = studio("get", "seed/one", str(tmp_path / "one.txt"), home=home)
    assert done.returncode == 0, done.stderr
    assert sorted(_temps(tmp_path)) == sorted([alive.name, foreign.name])
    assert (tmp_path / "one.txt").read_text() == "one"
