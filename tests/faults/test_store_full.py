"""A full store: a run whose capture does not fit is never recorded as plain ``finished``, the
runs before it still read back, and ``studio gc`` (which must work on a full disk) frees space.

The store is a real 8 MiB tmpfs (``mount -t tmpfs``, as root). Where mounting is not permitted
the test fails and says so rather than skipping: a full disk must be tested for real. The
file-size limit case (``RLIMIT_FSIZE``, EFBIG instead of ENOSPC) needs no privilege and runs
everywhere.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys

import pytest

from tests.faults._support import age_tree, assert_no_traceback, read_tree
from tests.helpers import studio, studio_env, write_script

TMPFS_SIZE = 8 << 20


@pytest.fixture
def tmpfs_store(tmp_path):
    mount_point = str(tmp_path / "storefs")
    os.makedirs(mount_point)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", mount_point],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount an 8 MiB tmpfs here ({done.stderr.strip()}): the full-store case needs "
                    "root and mount permission", pytrace=False)
    try:
        yield os.path.join(mount_point, "store")
    finally:
        subprocess.run(["umount", "-l", mount_point], check=False)


def _files(folder: str, files: dict[str, bytes]) -> str:
    os.makedirs(folder, exist_ok=True)
    for rel, data in files.items():
        with open(os.path.join(folder, rel), "wb") as f:
            f.write(data)
    return folder


def _statuses(store: str, experiment: str) -> list[dict]:
    folder = os.path.join(store, "experiments", experiment)
    records = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".json") and not name.endswith(".env.json"):
            with open(os.path.join(folder, name)) as f:
                records.append(json.load(f))
    return records


def _fill(path: str) -> None:
    """Write ``path`` until the disk says ENOSPC."""
    with open(path, "wb", buffering=0) as f:
        block = bytes(64 << 10)
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _full_store(home: str, store: str, rnd: random.Random) -> tuple[dict, dict]:
    """``early`` (kept), ``junk`` (deleted, aged: gc may free it), then ``full`` and ``fullfinal``
    whose captures (10 MiB each, once and final) cannot fit in the 8 MiB store."""
    env = {"STUDIO_STORE": store}
    proj = os.path.join(home, "proj")
    os.makedirs(proj)
    script = write_script(proj, "s.py", "print('ok')\n")
    early = {"a.bin": rnd.randbytes(100 << 10), "b.txt": b"early run\n"}
    done = studio("run", "-e", "early", f"--capture-once={_files(os.path.join(home, 'early'), early)}:data",
                  script, home=home, cwd=proj, **env)
    assert done.returncode == 0, done.stderr
    junk = {f"j{i}.bin": rnd.randbytes(256 << 10) for i in range(8)}  # 2 MiB that gc may free later
    done = studio("run", "-e", "junk", f"--capture-once={_files(os.path.join(home, 'junk'), junk)}:data",
                  script, home=home, cwd=proj, **env)
    assert done.returncode == 0, done.stderr
    assert studio("delete", "junk", home=home, **env).returncode == 0
    for folder in ("objects", "packs", "manifests"):  # small objects are packed: objects/ may not exist
        if os.path.isdir(os.path.join(store, folder)):
            age_tree(os.path.join(store, folder), 2 * 3600)
    big = {f"big{i}.bin": rnd.randbytes(1 << 20) for i in range(10)}  # 10 MiB: cannot fit
    once = studio("run", "-e", "full", f"--capture-once={_files(os.path.join(home, 'big'), big)}:data",
                  script, home=home, cwd=proj, **env)
    grow = write_script(home, "grow.py", "import os, sys\nfor i in range(10):\n"
                        "    open(os.path.join(sys.argv[1], f'g{i}.bin'), 'wb').write(os.urandom(1 << 20))\n")
    out = os.path.join(home, "out")
    os.makedirs(out)
    final = studio("run", "-e", "fullfinal", f"--capture={out}:out", grow, out, home=home, cwd=proj, **env)
    return early, {"full": once, "fullfinal": final}


def test_a_capture_that_does_not_fit_is_never_recorded_finished(tmpfs_store, tmp_path):
    home = str(tmp_path / "home")
    os.makedirs(home)
    _early, runs = _full_store(home, tmpfs_store, random.Random(88))
    for exp, done in runs.items():
        assert_no_traceback(done)
        for record in _statuses(tmpfs_store, exp):
            assert record["status"] != "finished", f"{exp}: a capture that did not fit is recorded finished"
        assert done.returncode != 0, f"{exp}: studio exited 0 though the capture did not fit\n{done.stderr}"
        shown = studio("show", exp, home=home, COLUMNS="200", STUDIO_STORE=tmpfs_store)
        assert_no_traceback(shown)
        assert shown.returncode == 0 and "finished" not in shown.stdout.split("versions")[0], shown.stdout


def test_on_a_full_store_earlier_runs_read_back_and_gc_frees_space(tmpfs_store, tmp_path):
    home = str(tmp_path / "home")
    os.makedirs(home)
    env = {"STUDIO_STORE": tmpfs_store}
    early, _runs = _full_store(home, tmpfs_store, random.Random(89))
    _fill(os.path.join(os.path.dirname(tmpfs_store), "filler"))  # whatever the failed captures left free
    assert _free(tmpfs_store) < 64 << 10
    dest = os.path.join(home, "early-copy")
    got = studio("get", "early/data", dest, home=home, **env)
    assert got.returncode == 0, got.stderr
    assert read_tree(dest) == {os.fsencode(k): v for k, v in early.items()}

    before = _free(tmpfs_store)
    gc = studio("gc", home=home, **env)
    assert_no_traceback(gc)
    assert gc.returncode == 0, f"gc on a full store: {gc.stderr}"
    assert _free(tmpfs_store) >= before + (1 << 20), "gc freed nothing on a full store"
    again = os.path.join(home, "early-again")
    got = studio("get", "early/data", again, home=home, **env)
    assert got.returncode == 0 and read_tree(again) == read_tree(dest), got.stderr


def _limited(limit: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_file_size_limit_never_records_finished(tmp_path):
    """RLIMIT_FSIZE (EFBIG on write) stands for a quota: the run is not ``finished``, nothing earlier lost."""
    home = str(tmp_path / "home")
    proj = os.path.join(home, "proj")
    os.makedirs(proj)
    script = write_script(proj, "s.py", "print('ok')\n")
    small = {"s.txt": b"small\n"}
    done = studio("run", "-e", "small", f"--capture-once={_files(os.path.join(home, 'small'), small)}:data",
                  script, home=home, cwd=proj)
    assert done.returncode == 0, done.stderr
    big = _files(os.path.join(home, "big"), {"big.bin": random.Random(5).randbytes(6 << 20)})
    limited = subprocess.run([sys.executable, "-m", "studio_run", "run", "-e", "limited",
                              f"--capture-once={big}:data", script], cwd=proj, env=studio_env(home),
                             capture_output=True, text=True, timeout=120, preexec_fn=_limited(4 << 20))
    assert_no_traceback(limited)
    assert limited.returncode != 0, f"exit 0 though the capture hit the file-size limit\n{limited.stderr}"
    for record in _statuses(os.path.join(home, ".studioml", "store"), "limited"):
        assert record["status"] != "finished", "a capture that hit the file-size limit is recorded finished"
    got = studio("get", "small/data", os.path.join(home, "small-copy"), home=home)
    assert got.returncode == 0 and read_tree(os.path.join(home, "small-copy")) == {b"s.txt": b"small\n"}, got.stderr
