"""Packs on the local store under faults: kill -9 while packs are written, a flipped byte inside
a pack, and gc of whole, partly live and orphaned packs.

Every case ends with the same two questions as the other fault tests: did studio say what was
wrong in one line, and does every run that was not damaged read back byte for byte?
"""

from __future__ import annotations

import glob
import os
import random
import signal
import subprocess
import sys
import time

from tests.faults._support import age_tree, assert_no_traceback, assert_one_line_error, check_store, read_tree
from tests.helpers import studio, studio_env, write_script

FILES = 3000  # of 2-6 KiB: two packs of 8 MiB would need more, so the capture writes one or two


def _tree(folder: str, seed: int, count: int = FILES) -> dict[bytes, bytes]:
    rnd = random.Random(seed)
    tree: dict[bytes, bytes] = {}
    for i in range(count):
        rel = f"d{i % 17:02}/f{i:05}.bin"
        data = rnd.randbytes(rnd.randint(2048, 6144))
        os.makedirs(os.path.join(folder, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(folder, rel), "wb") as f:
            f.write(data)
        tree[os.fsencode(rel)] = data
    return tree


def _capture(home: str, experiment: str, folder: str) -> None:
    proj = os.path.join(home, "proj")
    os.makedirs(proj, exist_ok=True)
    script = write_script(proj, "s.py", "print('ok')\n")
    done = studio("run", "-e", experiment, f"--capture-once={folder}:data", script, home=home, cwd=proj)
    assert done.returncode == 0, done.stderr


def _store(home: str) -> str:
    return os.path.join(home, ".studioml", "store")


def _packs(home: str, suffix: str = ".pack") -> list[str]:
    return sorted(glob.glob(os.path.join(_store(home), "packs", "*", "*" + suffix)))


def _get(home: str, ref: str, dest: str) -> dict[bytes, bytes]:
    done = studio("get", ref, dest, home=home)
    assert_no_traceback(done)
    assert done.returncode == 0, done.stderr
    return read_tree(dest)  # type: ignore[return-value]


def test_small_files_are_packed_and_read_back_by_get_and_reuse(tmp_path):
    home = str(tmp_path)
    tree = _tree(str(tmp_path / "src"), 1)
    _capture(home, "exp", str(tmp_path / "src"))
    loose = glob.glob(os.path.join(_store(home), "objects", "*", "*"))
    assert loose == []  # 3,000 small files: no loose object at all
    assert 2 <= len(_packs(home)) == len(_packs(home, ".index")) <= 6  # 12 MiB of data, and the code snapshot
    assert _get(home, "exp/data", str(tmp_path / "out")) == tree
    reader = write_script(home, "reader.py", (
        "import os, sys\nfrom studio import fs_tracker\nroot = fs_tracker.get_artifact('d')\n"
        "n = sum(len(open(os.path.join(p, f), 'rb').read()) for p, _d, fs in os.walk(root) for f in fs)\n"
        "print('bytes', n)\n"))
    done = studio("run", "-e", "reader", "--reuse=exp/data:d", reader, home=home, cwd=os.path.join(home, "proj"))
    assert done.returncode == 0, done.stderr
    assert f"bytes {sum(len(v) for v in tree.values())}" in done.stdout
    check_store(home)


def test_kill_9_while_packs_are_written_leaves_a_consistent_store(tmp_path):
    src = str(tmp_path / "src")
    tree = _tree(src, 2, count=5000)  # ~20 MiB: several packs, written while the capture reads
    rnd = random.Random(5)
    landed = 0
    for attempt in range(3):
        home = str(tmp_path / f"home{attempt}")
        proj = os.path.join(home, "proj")
        os.makedirs(proj)
        script = write_script(proj, "s.py", "print('ok')\n")
        proc = subprocess.Popen([sys.executable, "-m", "studio_run", "run", "-e", "killed", f"--capture-once={src}:data",
                                 script], cwd=proj, env=studio_env(home), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while proc.poll() is None and not _packs(home) and time.monotonic() < deadline:
            time.sleep(0.002)  # until the first pack file is in place
        time.sleep(rnd.uniform(0.0, 0.3))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            landed += 1
        proc.wait()
        # whatever the instant: every index names a whole pack, and the store checks clean
        for index in _packs(home, ".index"):
            assert os.path.exists(index[:-len(".index")] + ".pack")
        check_store(home)
        _capture(home, "after", src)  # a capture after the kill stores everything again
        assert _get(home, "after/data", str(tmp_path / f"out{attempt}")) == tree
    assert landed, "no kill landed while the capture ran"
    age_tree(_store(home), 2 * 3600)
    done = studio("gc", home=home)
    assert done.returncode == 0, done.stderr
    assert _get(home, "after/data", str(tmp_path / "again")) == tree
    check_store(home)


def test_an_orphaned_pack_is_garbage_for_gc_and_invisible_before(tmp_path):
    home = str(tmp_path)
    src = str(tmp_path / "src")
    tree = _tree(src, 3, count=200)
    _capture(home, "exp", src)
    pack = max(_packs(home), key=os.path.getsize)  # the data's (the others hold the code snapshot)
    orphan = os.path.join(os.path.dirname(pack), "0" * 62 + ".pack")  # a writer killed before its index
    with open(pack, "rb") as f, open(orphan, "wb") as out:
        out.write(f.read())
    check_store(home)  # a pack without an index is not damage: nothing points at it
    age_tree(_store(home), 2 * 3600)
    done = studio("gc", home=home)
    assert done.returncode == 0, done.stderr
    assert not os.path.exists(orphan) and os.path.exists(pack)
    assert _get(home, "exp/data", str(tmp_path / "out")) == tree


def test_gc_keeps_a_partly_live_pack_whole_and_sweeps_it_once_dead(tmp_path):
    home = str(tmp_path)
    kept_tree = _tree(str(tmp_path / "a"), 4, count=100)
    _capture(home, "keep", str(tmp_path / "a"))
    dropped = _tree(str(tmp_path / "b"), 5, count=100)
    before = set(_packs(home))
    _capture(home, "drop", str(tmp_path / "b"))
    (pack,) = [p for p in set(_packs(home)) - before if os.path.getsize(p) > 100_000]  # drop's data
    one = tmp_path / "c" / "d00"
    one.mkdir(parents=True)
    (one / "f00000.bin").write_bytes(dropped[b"d00/f00000.bin"])
    _capture(home, "half", str(tmp_path / "c"))  # holds one object of drop's pack, stores nothing new
    assert studio("delete", "drop", home=home).returncode == 0
    age_tree(_store(home), 2 * 3600)
    done = studio("gc", home=home)
    assert done.returncode == 0, done.stderr
    assert os.path.exists(pack)  # one live object keeps its pack whole (packs are never rewritten)
    assert _get(home, "half/data", str(tmp_path / "out-half")) == {b"d00/f00000.bin": dropped[b"d00/f00000.bin"]}
    assert studio("delete", "half", home=home).returncode == 0
    done = studio("gc", home=home)
    assert done.returncode == 0, done.stderr
    assert not os.path.exists(pack) and not os.path.exists(pack[:-len(".pack")] + ".index")
    assert _get(home, "keep/data", str(tmp_path / "out")) == kept_tree
    check_store(home)


def test_a_flipped_byte_in_a_pack_is_found_by_get_and_check_and_healed(tmp_path):
    home = str(tmp_path)
    src = str(tmp_path / "src")
    tree = _tree(src, 6, count=300)
    _capture(home, "exp", src)
    pack = max(_packs(home), key=os.path.getsize)
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:
        f.seek(os.path.getsize(pack) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    dest = str(tmp_path / "out")
    before = set(os.listdir(tmp_path))
    line = assert_one_line_error(studio("get", "exp/data", dest, home=home))
    assert "corrupted" in line
    assert set(os.listdir(tmp_path)) == before  # nothing half written, not even a temp folder
    checked = studio("check", home=home)
    assert checked.returncode == 1 and "exp@1" in checked.stderr
    assert_no_traceback(checked)
    _capture(home, "exp", src)  # the next capture stores the lost object again
    assert _get(home, "exp/data", str(tmp_path / "out2")) == tree
    repaired = studio("check", "--repair", home=home)
    assert_no_traceback(repaired)
    check_store(home)
    assert _get(home, "exp/data", str(tmp_path / "out3")) == tree
