"""File times survive ``--capture-once``, ``--capture``, ``--reuse`` and ``studio get``, as a user sees them."""

from __future__ import annotations

import json
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


def _store_records(home: str, experiment: str) -> list[str]:
    folder = os.path.join(home, ".studioml", "store", "experiments", experiment)
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.endswith(".json") and not n.endswith(".env.json"))


def _artifact(home: str, experiment: str, tag: str) -> dict:
    with open(_store_records(home, experiment)[-1]) as f:
        return json.load(f)["artifacts"][tag]


def _folder_with_times(root: str, stamps: dict[str, tuple[int, int]]) -> str:
    """Files named like ``sub/x``, each with (mtime_ns, mode); returns ``root``."""
    for rel, (ns, mode) in stamps.items():
        full = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(f"content of {rel}\n")
        os.chmod(full, mode)
        os.utime(full, ns=(ns, ns))
    return root


STAMPS = {"run.sh": (OLD + 7, 0o750), "secret.cfg": (NEW + 9, 0o600), "sub/deep.bin": (OLD + 123, 0o644)}


def _stat_of(folder: str) -> dict[str, tuple[int, int]]:
    found = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/")
            found[rel] = (st.st_mtime_ns, st.st_mode & 0o777)
    return found


def test_get_gives_back_ns_times_and_exact_modes_and_reuse_keeps_times_and_exec_bits(home):
    src = _folder_with_times(os.path.join(home, "src"), STAMPS)
    noop = write_script(home, "noop.py", "")
    assert studio("run", "-e", "modes", f"--capture-once={src}:src", noop, home=home).returncode == 0

    out = os.path.join(home, "got")
    got = studio("get", "modes/src", out, home=home)
    assert got.returncode == 0, got.stderr
    assert _stat_of(out) == STAMPS

    show = write_script(home, "show.py", (
        "import os, fs_tracker\n"
        "root = fs_tracker.get_artifact('s')\n"
        "for rel in ('run.sh', 'secret.cfg', 'sub/deep.bin'):\n"
        "    st = os.stat(os.path.join(root, rel))\n"
        "    print('stat', rel, st.st_mtime_ns, oct(st.st_mode & 0o777))\n"
    ))
    reused = studio("run", "--reuse=modes/src:s", show, home=home)
    assert reused.returncode == 0, reused.stderr
    for rel, (ns, mode) in STAMPS.items():  # the read-only cache keeps the time and the x/r bits
        assert f"stat {rel} {ns} {oct(mode & 0o555)}" in reused.stdout


def test_times_set_by_the_script_in_a_capture_folder_come_back(home):
    ckpts = os.path.join(home, "ckpts")
    train = write_script(home, "train.py", (
        "import os, sys\n"
        "folder = sys.argv[1]\n"
        "os.makedirs(folder, exist_ok=True)\n"
        f"for name, ns in (('epoch-9.pt', {OLD}), ('epoch-1.pt', {NEW})):\n"
        "    path = os.path.join(folder, name)\n"
        "    open(path, 'w').write(name)\n"
        "    os.utime(path, ns=(ns, ns))\n"
    ))
    ran = studio("run", "-e", "train", f"--capture={ckpts}:ckpts", train, ckpts, home=home)
    assert ran.returncode == 0, ran.stderr
    out = os.path.join(home, "got")
    assert studio("get", "train/ckpts", out, home=home).returncode == 0
    newest = max(os.listdir(out), key=lambda n: os.stat(os.path.join(out, n)).st_mtime_ns)
    assert newest == "epoch-1.pt"
    assert os.stat(os.path.join(out, "epoch-9.pt")).st_mtime_ns == OLD


def test_same_content_with_other_times_has_one_digest_and_each_run_gets_its_own_times(home):
    a = _folder_with_times(os.path.join(home, "a"), {"w.bin": (OLD, 0o644)})
    b = _folder_with_times(os.path.join(home, "b"), {"w.bin": (NEW, 0o644)})
    noop = write_script(home, "noop.py", "")
    assert studio("run", "-e", "first", f"--capture-once={a}:w", noop, home=home).returncode == 0
    assert studio("run", "-e", "second", f"--capture-once={b}:w", noop, home=home).returncode == 0
    first, second = _artifact(home, "first", "w"), _artifact(home, "second", "w")
    assert first["digest"] == second["digest"]  # the content's identity ignores times
    assert first["times"] and second["times"] and first["times"] != second["times"]

    show = write_script(home, "show.py", (
        "import os, fs_tracker\n"
        "for alias in ('x', 'y'):\n"
        "    print(alias, os.stat(os.path.join(fs_tracker.get_artifact(alias), 'w.bin')).st_mtime_ns)\n"
    ))
    # Both reuses in one run: the blob cache must not hand the first entry's times to the second.
    reused = studio("run", "--reuse=first/w:x", "--reuse=second/w:y", show, home=home)
    assert reused.returncode == 0, reused.stderr
    assert f"x {OLD}\ny {NEW}" in reused.stdout
    again = studio("run", "--reuse=second/w:x", "--reuse=first/w:y", show, home=home)  # cache hits
    assert f"x {NEW}\ny {OLD}" in again.stdout
    for exp, ns in (("first", OLD), ("second", NEW)):
        one = os.path.join(home, f"{exp}.bin")
        assert studio("get", f"{exp}/w/w.bin", one, home=home).returncode == 0
        assert os.stat(one).st_mtime_ns == ns


def test_ls_shows_the_captured_times(home):
    src = _folder_with_times(os.path.join(home, "src"), {"old.txt": (OLD, 0o644)})
    noop = write_script(home, "noop.py", "")
    assert studio("run", "-e", "lsx", f"--capture-once={src}:src", noop, home=home).returncode == 0
    listed = studio("ls", "lsx/src", "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    assert [(e["path"], e["mtime"]) for e in json.loads(listed.stdout)] == [("old.txt", OLD)]


def test_a_record_without_times_from_before_still_restores(home):
    src = _folder_with_times(os.path.join(home, "src"), {"f.txt": (OLD, 0o640)})
    noop = write_script(home, "noop.py", "")
    assert studio("run", "-e", "old", f"--capture-once={src}:src", noop, home=home).returncode == 0
    path = _store_records(home, "old")[-1]
    with open(path) as f:
        record = json.load(f)
    for art in record["artifacts"].values():
        del art["times"]  # what a record written before times were recorded holds
    with open(path, "w") as f:
        json.dump(record, f)

    out = os.path.join(home, "got")
    got = studio("get", "old/src", out, home=home)
    assert got.returncode == 0, got.stderr
    st = os.stat(os.path.join(out, "f.txt"))
    assert (st.st_mode & 0o777, open(os.path.join(out, "f.txt")).read()) == (0o640, "content of f.txt\n")
    assert st.st_mtime_ns != OLD  # the content manifest has no times: the file has the restore's time
    cat = write_script(home, "cat.py", "import os, fs_tracker\nprint(open(os.path.join(fs_tracker.get_artifact('s'), 'f.txt')).read())\n")
    reused = studio("run", "--reuse=old/src:s", cat, home=home)
    assert reused.returncode == 0, reused.stderr
    assert "content of f.txt" in reused.stdout


def test_gc_keeps_the_manifest_with_times(home):
    src = _folder_with_times(os.path.join(home, "src"), {"f.txt": (OLD, 0o644)})
    noop = write_script(home, "noop.py", "")
    assert studio("run", "-e", "kept", f"--capture-once={src}:src", noop, home=home).returncode == 0
    times = _artifact(home, "kept", "src")["times"]
    manifests = os.path.join(home, ".studioml", "store", "manifests")
    stray = os.path.join(manifests, "00", "1" * 62)  # what a killed capture could leave: unreferenced
    os.makedirs(os.path.dirname(stray), exist_ok=True)
    with open(stray, "wb") as f:
        f.write(b"{}")
    for dirpath, _dirs, files in os.walk(manifests):  # everything old enough for gc to look at
        for name in files:
            os.utime(os.path.join(dirpath, name), (1_600_000_000, 1_600_000_000))
    swept = studio("gc", "--grace=1m", home=home)
    assert swept.returncode == 0, swept.stderr
    assert not os.path.exists(stray)
    assert os.path.isfile(os.path.join(manifests, times[:2], times[2:]))
    out = os.path.join(home, "got")
    assert studio("get", "kept/src", out, home=home).returncode == 0
    assert os.stat(os.path.join(out, "f.txt")).st_mtime_ns == OLD
