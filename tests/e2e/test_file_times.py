"""File times survive ``--capture-once``, ``--capture``, ``--reuse`` and ``studio get``, as a user sees them."""

from __future__ import annotations

import os

from tests.helpers import studio, write_script

OLD, NEW = 1_600_000_000_000_000_001, 1_700_000_000_000_000_002


def test_reuse_and_get_keep_file_times_so_the_newest_checkpoint_is_found(home):
    ckpts = os.path.join(home, "ckpts")
    os.makedirs(ckpts)
    for name, ns in (("b-older.pt", OLD), ("a-newer.pt", NEW)):
        write_script(ckpts, name, name)
        os.utime(os.path.join(ckpts, name), ns=(ns, ns))
    ran = studio("run", "-e", "times", f"--capture-once={ckpts}:ckpts", write_script(home, "noop.py", ""), home=home)
    assert ran.returncode == 0, ran.stderr

    pick = write_script(home, "pick.py", (
        "import os, fs_tracker\n"
        "folder = fs_tracker.get_artifact('c')\n"
        "names = sorted(os.listdir(folder), key=lambda n: os.stat(os.path.join(folder, n)).st_mtime_ns)\n"
        "print('newest', names[-1], [os.stat(os.path.join(folder, n)).st_mtime_ns for n in names])\n"
    ))
    reused = studio("run", "--reuse=times/ckpts:c", pick, home=home)
    assert reused.returncode == 0, reused.stderr
    assert f"newest a-newer.pt [{OLD}, {NEW}]" in reused.stdout

    out = os.path.join(home, "got")
    got = studio("get", "times/ckpts", out, home=home)
    assert got.returncode == 0, got.stderr
    assert {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in os.listdir(out)} == {
        "b-older.pt": OLD, "a-newer.pt": NEW}
    one = os.path.join(home, "one.pt")
    got = studio("get", "times/ckpts/b-older.pt", one, home=home)
    assert got.returncode == 0, got.stderr
    assert os.stat(one).st_mtime_ns == OLD
