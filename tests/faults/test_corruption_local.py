"""Corruption matrix on the local store: flip, truncate or delete each kind of stored thing, then
run each reading command.

The store is built once per module (three experiments: ``keep`` whose content is never damaged,
``victim`` whose object, chunk, manifest, record or environment file is damaged, and ``gone``,
deleted, whose content gc may remove) and copied per case. Every cell asserts the same promise:
a one-line error and a non-zero exit where the damage matters, success where the damaged thing
is not needed, never a silently wrong file, and nothing undamaged lost.
"""

from __future__ import annotations

import json
import os
import pickle
import random

import pytest

from studio_run.objects.digest import FILE_CHUNK, hash_bytes
from studio_run.objects.repository import Repository
from tests.faults._support import (
    DAMAGES,
    age_tree,
    assert_no_traceback,
    assert_one_line_error,
    copy_home,
    damage_file,
    leftovers,
    read_tree,
)
from tests.helpers import file_bytes, studio, write_script

KINDS = ("object", "chunk", "manifest", "record", "env")
COMMANDS = ("list", "show", "get", "reuse", "gc-dry-run", "gc", "check")
WIDE = {"COLUMNS": "200"}

READER = """
import os, pickle, sys
from studio import fs_tracker
root = os.fsencode(fs_tracker.get_artifact("v"))
tree = {}
for dirpath, _dirs, files in os.walk(root):
    for name in files:
        path = os.path.join(dirpath, name)
        with open(path, "rb") as f:
            tree[os.path.relpath(path, root)] = f.read()
with open(sys.argv[1], "wb") as f:
    pickle.dump(tree, f)
"""


def _write_tree(folder: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A store with ``keep``, ``victim`` (one chunked 9 MiB file) and deleted ``gone``, aged 2 h."""
    home = str(tmp_path_factory.mktemp("corrupt-base"))
    rnd = random.Random(9)
    big = rnd.randbytes(2 * FILE_CHUNK + 4096)  # three chunks, the file is stored chunked
    if len(big) < 8 << 20:
        big += rnd.randbytes((8 << 20) - len(big) + 1)
    trees = {
        "keep": {"k1.txt": b"keep one\n", "sub/k2.bin": rnd.randbytes(5000)},
        "victim": {"notes.txt": b"victim's own notes\n" * 60000, "big.bin": big, "sub/v2.txt": b"victim two\n"},
        # notes.txt is 1.1 MiB, so it stays a loose object (damage inside packs: test_packs.py)
        "gone": {"g.txt": b"content only a deleted experiment had\n"},
    }
    proj = os.path.join(home, "proj")
    os.makedirs(proj)
    script = write_script(proj, "s.py", "print('ok')\n")
    for exp, files in trees.items():
        _write_tree(os.path.join(home, exp), files)
        done = studio("run", "-e", exp, f"--capture-once={os.path.join(home, exp)}:data", script, home=home, cwd=proj)
        assert done.returncode == 0, done.stderr
    assert studio("delete", "gone", home=home).returncode == 0
    write_script(home, "reader.py", READER)
    store = os.path.join(home, ".studioml", "store")
    age_tree(store, 2 * 3600)
    exp_dir = os.path.join(store, "experiments", "victim")
    record_name = next(n for n in os.listdir(exp_dir) if not n.endswith(".env.json"))
    with open(os.path.join(exp_dir, record_name)) as f:
        data_art = json.load(f)["artifacts"]["data"]
    manifest_digest = data_art.get("times") or data_art["digest"]  # the manifest restores read
    targets = {
        "object": Repository.object_key(hash_bytes(trees["victim"]["notes.txt"])),
        "chunk": Repository.object_key(hash_bytes(big[FILE_CHUNK:2 * FILE_CHUNK])),
        "manifest": Repository.manifest_key(manifest_digest),
        "record": f"experiments/victim/{record_name}",
        "env": f"experiments/victim/{record_name[:-len('.json')]}.env.json",
    }
    for key in targets.values():
        assert os.path.isfile(os.path.join(store, key)), key
    return {"home": home, "trees": trees, "targets": targets}


def _expected(kind: str, how: str, command: str) -> str:
    """``ok`` (exit 0), ``error`` (one-line error) or ``either`` (no traceback, rc 0 or one line)."""
    if kind == "none":
        return "ok"
    content = kind in ("object", "chunk", "manifest")
    if command in ("get", "reuse"):
        return "ok" if kind == "env" else "error"
    if command == "show":
        return "error" if kind == "record" else ("either" if kind == "env" else "ok")
    if command == "list":
        return "either" if kind == "record" and how != "delete" else "ok"
    if command in ("gc", "gc-dry-run"):
        return "either" if kind == "manifest" or (kind == "record" and how != "delete") else "ok"
    # check: damaged content or a damaged record is reported; a deleted record leaves only orphans
    if content or (kind == "record" and how != "delete"):
        return "damage"
    return "either" if kind == "env" else "ok"


def _run(command: str, home: str, dest: str) -> object:
    proj = os.path.join(home, "proj")
    if command == "list":
        return studio("list", home=home, **WIDE)
    if command == "show":
        return studio("show", "victim", home=home, **WIDE)
    if command == "get":
        return studio("get", "victim/data", dest, home=home)
    if command == "reuse":
        return studio("run", "-e", "reader", "--reuse=victim/data:v", os.path.join(home, "reader.py"), dest,
                      home=home, cwd=proj)
    if command == "gc-dry-run":
        return studio("gc", "--dry-run", home=home)
    if command == "gc":
        return studio("gc", home=home)
    return studio("check", home=home, **WIDE)


# Which commands each kind of damage is run through: every command that reads that kind, with
# all three damages; the commands that never read it with one damage only (they must succeed).
READS = {
    "object": ("get", "reuse", "gc", "check"),
    "chunk": ("get", "reuse", "gc", "check"),
    "manifest": ("get", "reuse", "gc-dry-run", "gc", "check"),
    "record": COMMANDS,
    "env": ("show", "get", "check"),
}
CASES = [("none", "-", command) for command in COMMANDS] + [
    (kind, how, command) for kind in KINDS for command in COMMANDS for how in DAMAGES
    if command in READS[kind] or (how == "delete" and kind in ("object", "manifest"))
]


@pytest.mark.parametrize("kind,how,command", CASES)
def test_damaged_local_store(base, tmp_path, kind, how, command):
    home = str(tmp_path / "home")
    copy_home(base["home"], home)
    store = os.path.join(home, ".studioml", "store")
    damaged = base["targets"].get(kind)
    if damaged:
        damage_file(os.path.join(store, damaged), how)
    before = file_bytes(store)
    dest = str(tmp_path / "dest")
    done = _run(command, home, dest)
    expected = _expected(kind, how, command)
    cell = f"{kind}/{how} x {command}: rc={done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"

    assert_no_traceback(done)
    if expected == "ok":
        assert done.returncode == 0, cell
    elif expected == "error":
        assert_one_line_error(done)
    elif expected == "damage":
        assert done.returncode != 0, cell
        assert "victim" in done.stdout + done.stderr, f"check does not name the run affected\n{cell}"
    elif done.returncode != 0:
        assert_one_line_error(done)

    original = {os.fsencode(k): v for k, v in base["trees"]["victim"].items()}
    if command == "get" and os.path.exists(dest):  # never a silently wrong file
        got = read_tree(dest)
        for rel, data in got.items():
            assert original.get(rel) == data, f"get wrote a wrong {rel!r}\n{cell}"
        assert not leftovers(dest, original), cell
        if done.returncode == 0:
            assert got == original, cell
    if command == "reuse" and os.path.exists(dest):  # the script saw exactly the artifact, or ran not at all
        with open(dest, "rb") as f:
            assert pickle.load(f) == original, cell
    if command == "reuse" and done.returncode == 0:
        assert os.path.exists(dest), cell
    if command == "list":
        assert "keep" in done.stdout, cell
        if kind == "record" and how != "delete":
            assert "victim" in done.stdout + done.stderr, f"list does not name the damaged record\n{cell}"

    if command == "gc":
        _assert_keep_intact(base, home, tmp_path, cell)
    else:  # nothing undamaged was changed or removed (a quarantine may add files)
        after = file_bytes(store)
        for key, data in before.items():
            if key == damaged:  # the damaged thing itself may move to quarantine/ once a read finds it
                assert after.get(key) in (data, None), f"{command} rewrote the damaged {key}\n{cell}"
                continue
            assert after.get(key) == data, f"{command} changed or removed {key}\n{cell}"


def _assert_keep_intact(base, home, tmp_path, cell: str) -> None:
    out = str(tmp_path / "keep-copy")
    got = studio("get", "keep/data", out, home=home)
    assert got.returncode == 0, f"undamaged run lost: {got.stderr}\n{cell}"
    assert read_tree(out) == {os.fsencode(k): v for k, v in base["trees"]["keep"].items()}, cell


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("kind", ("object", "chunk", "manifest"))
def test_capturing_the_same_content_again_heals_a_damaged_store(base, tmp_path, kind, how):
    """A capture that finds its content "already stored" must not trust a damaged copy.

    Damage that changes a stored file's size is seen by the capture itself (one stat); damage
    of the same size only by reading it, so here a read comes first: the failed `get` (one line)
    moves the damaged copy to quarantine, and the capture after it stores the content again.
    """
    home = str(tmp_path / "home")
    copy_home(base["home"], home)
    damage_file(os.path.join(home, ".studioml", "store", base["targets"][kind]), how)
    if how == "flip":
        found = studio("get", "victim/data", str(tmp_path / "found"), home=home)
        assert_no_traceback(found)
    again = studio("run", "-e", "again", f"--capture-once={os.path.join(home, 'victim')}:data",
                   os.path.join(home, "proj", "s.py"), home=home, cwd=os.path.join(home, "proj"))
    assert again.returncode == 0, again.stderr
    dest = str(tmp_path / "dest")
    got = studio("get", "victim/data", dest, home=home)
    assert got.returncode == 0, f"{kind}/{how} not healed by a new capture: {got.stderr}"
    assert read_tree(dest) == {os.fsencode(k): v for k, v in base["trees"]["victim"].items()}


def _odd(store: str, record_key: str, what: str) -> str:
    """Put one odd thing in the store; returns its key."""
    path = os.path.join(store, record_key)
    if what.startswith("record-"):
        with open(path) as f:
            record = json.load(f)
        os.chmod(path, 0o644)
        if what == "record-empty":
            data = ""
        elif what == "record-list":
            data = "[]"
        elif what == "record-types":
            record.update(started_at="yesterday", artifacts=["data"], status=5, exit_code="zero")
            data = json.dumps(record)
        else:  # record-digest: an artifact digest that is no digest (and would climb out of the store)
            record["artifacts"]["data"]["digest"] = "../../../../etc/passwd"
            data = json.dumps(record)
        with open(path, "w") as f:
            f.write(data)
        return record_key
    key = {"stray-object": "objects/README", "stray-manifest": "manifests/ab",  # a file where a fan-out folder goes
           "stray-experiment": "experiments/victim/notes.txt"}[what]
    if what == "stray-manifest" and os.path.isdir(os.path.join(store, key)):
        key = "manifests/zz"
    os.makedirs(os.path.dirname(os.path.join(store, key)), exist_ok=True)
    with open(os.path.join(store, key), "w") as f:
        f.write("left here by hand\n")
    return key


ODD = ("record-empty", "record-list", "record-types", "record-digest", "stray-object", "stray-manifest",
       "stray-experiment")


@pytest.mark.parametrize("what", ODD)
def test_odd_records_and_stray_files(base, tmp_path, what):
    """Empty, wrongly typed or badly digested records and stray files: every command says one line
    or goes on; ``list`` names what it skipped; the undamaged experiment reads back, also after gc."""
    home = str(tmp_path / "home")
    copy_home(base["home"], home)
    store = os.path.join(home, ".studioml", "store")
    _odd(store, base["targets"]["record"], what)
    problems = []

    def expect(done, command: str, ok: bool) -> None:
        cell = f"{what} x {command}: rc={done.returncode}\n{done.stdout}{done.stderr}"
        try:
            assert_no_traceback(done)
            if ok:
                assert done.returncode == 0, cell
            elif done.returncode != 0:
                assert_one_line_error(done)
        except AssertionError as exc:
            problems.append(f"{command}: {exc}")

    bad_record = what.startswith("record-")
    unreadable = bad_record and what != "record-digest"  # a bad digest still parses; only reading it fails
    listed = studio("list", home=home, **WIDE)
    expect(listed, "list", ok=not unreadable)
    if "keep" not in listed.stdout:
        problems.append("list: the undamaged experiment is not listed")
    if unreadable and "victim" not in listed.stdout + listed.stderr:
        problems.append("list: the damaged record is not named")
    shown = studio("show", "victim", home=home, **WIDE)
    if unreadable:
        try:
            assert_one_line_error(shown)
        except AssertionError as exc:
            problems.append(f"show: {exc}")
    else:
        expect(shown, "show", ok=not bad_record)
    dest = str(tmp_path / "victim-copy")
    got = studio("get", "victim/data", dest, home=home)
    if bad_record:
        try:
            assert_one_line_error(got)
        except AssertionError as exc:
            problems.append(f"get victim: {exc}")
    else:
        expect(got, "get victim", ok=True)
    if os.path.exists(dest):
        original = {os.fsencode(k): v for k, v in base["trees"]["victim"].items()}
        if any(original.get(rel) != data for rel, data in read_tree(dest).items()):
            problems.append("get victim: wrote a wrong file")
    expect(studio("gc", home=home), "gc", ok=not bad_record)
    try:
        _assert_keep_intact(base, home, tmp_path, what)
    except AssertionError as exc:
        problems.append(f"after gc: {exc}")
    assert not problems, "\n".join(problems)
