"""kill -9 at random instants (fixed seeds, a few instants each) of a capture, a ``get``, a ``gc``,
a blob-cache fill and an upload to S3; after each, the store must be consistent.

Consistent means: every visible version of every artifact ``get``s byte for byte equal to what
it held (the bytes of each finished version are kept by the test; a killed run's snapshots may
hold any moment of the writer, but every file must be one whole version the writer produced),
no temporary files are left where the killed command wrote, and ``studio check`` exits 0 when
this checkout has it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from typing import Callable

import pytest
import yaml

from studio_run.objects.digest import FILE_CHUNK
from tests.conftest import FAKE_AWS_ENV
from tests.faults._support import age_tree, assert_no_traceback, check_store, copy_home, leftovers, read_tree
from tests.helpers import studio, studio_env, write_script

INSTANTS = 3

# Writes generation i of every file atomically (tmp + rename), so each file is always one whole
# generation: "f3:17:" + padding. A snapshot may mix generations, never tear a file.
CHURN = """
import os, sys, time
out = sys.argv[1]
i = 0
while True:
    i += 1
    for n in range(12):
        path = os.path.join(out, f"f{n}.bin")
        with open(path + ".part", "wb") as f:
            f.write(f"f{n}:{i}:".encode() + bytes(20000 + n))
        os.replace(path + ".part", path)
    time.sleep(0.02)
"""


def _kill_when(argv: list[str], home: str, ready: Callable[[], bool], extra: float, cwd: str | None = None,
               **env: str) -> bool:
    """Start ``studio ARGV`` in its own process group; once ``ready()`` says its work has begun
    (polled, so load does not shift the instant), wait ``extra`` seconds and kill -9 the group.
    Returns whether the kill landed while it still ran."""
    proc = subprocess.Popen([sys.executable, "-m", "studio_run", *argv], cwd=cwd or home,
                            env=studio_env(home, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.002)
    try:
        proc.wait(timeout=extra)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
    try:  # it finished before the instant: kill any child left in its group all the same
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return False


def _local_runs(home: str, experiment: str) -> dict[str, dict]:
    """Every visible record of ``experiment`` in the local store: run id -> record (must parse)."""
    folder = os.path.join(home, ".studioml", "store", "experiments", experiment)
    runs = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".json") and not name.endswith(".env.json"):
            with open(os.path.join(folder, name)) as f:
                runs[name[:-len(".json")]] = json.load(f)  # a torn record fails here
    return runs


def _get(home: str, ref: str, dest: str, **env: str) -> dict:
    done = studio("get", ref, dest, home=home, **env)
    assert_no_traceback(done)
    assert done.returncode == 0, f"{ref}: {done.stderr}"
    return read_tree(dest)


def _files(tmp: str, files: dict[str, bytes]) -> str:
    for rel, data in files.items():
        path = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return tmp


def _whole_generation(tree: dict) -> None:
    for rel, data in tree.items():
        name = os.fsdecode(rel)
        assert name.startswith("f") and name.endswith(".bin"), f"unexpected file in snapshot: {name}"
        n = int(name[1:-4])
        head, _sep, _rest = data.partition(b":")
        gen, _sep2, pad = _rest.partition(b":")
        assert head == f"f{n}".encode() and gen.isdigit() and pad == bytes(20000 + n), f"torn file {name}"


def test_kill_9_of_a_capture(tmp_path):
    home = str(tmp_path)
    out = _files(os.path.join(home, "out"), {"v1.txt": b"version one\n"})
    first = write_script(home, "first.py", "print('v1')\n")
    assert studio("run", "-e", "cap", f"--capture={out}:out", first, home=home).returncode == 0
    v1_id, = _local_runs(home, "cap")
    v1 = {b"v1.txt": b"version one\n"}
    churn = write_script(home, "churn.py", CHURN)
    rnd = random.Random(1009)
    killed: list[bool] = []
    for instant in range(INSTANTS):
        for name in os.listdir(out):
            os.remove(os.path.join(out, name))
        killed.append(_kill_when(["run", "-e", "cap", "--capture-interval", "100ms", f"--capture={out}:out", churn,
                                  out], home, lambda: os.path.exists(os.path.join(out, "f0.bin")), rnd.uniform(0.05, 1.0)))
        runs = _local_runs(home, "cap")
        assert v1_id in runs
        for run_id, record in runs.items():
            if "out" not in record.get("artifacts", {}):
                continue
            tree = _get(home, f"cap/out@{run_id}", os.path.join(home, f"got-{instant}-{run_id}"))
            if run_id == v1_id:
                assert tree == v1
            else:
                tree.pop(b"v1.txt", None)
                _whole_generation({k: v for k, v in tree.items() if not k.endswith(b".part")})
        listed = studio("list", home=home)
        assert_no_traceback(listed)
        assert listed.returncode == 0, listed.stderr
        check_store(home)
    assert any(killed), "no kill landed while the capture ran"


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """A local store holding ``big/data`` (60 files of 1 MiB and a chunked 12 MiB file)
    and ``small/data``, plus a deleted experiment ``old`` whose content gc removes; aged 2 hours."""
    home = str(tmp_path_factory.mktemp("kill-store"))
    rnd = random.Random(77)
    trees = {
        "big": {**{f"part/{i:02}.bin": rnd.randbytes(1 << 20) for i in range(60)},
                "huge.bin": rnd.randbytes(3 * FILE_CHUNK)},
        "small": {"a.txt": b"small a\n", "b/c.txt": b"small c\n"},
        "old": {**{f"o{i:04}.bin": rnd.randbytes(1024) for i in range(1500)},  # one pack
                **{f"l{i:02}.bin": rnd.randbytes(1 << 20) for i in range(40)}},  # 40 loose objects
    }
    script = write_script(home, "s.py", "print('ok')\n")
    proj = os.path.join(home, "proj")
    os.makedirs(proj)
    for exp, files in trees.items():
        src = _files(os.path.join(home, "src", exp), files)
        done = studio("run", "-e", exp, f"--capture-once={src}:data", script, home=home, cwd=proj)
        assert done.returncode == 0, done.stderr
    assert studio("delete", "old", home=home).returncode == 0
    age_tree(os.path.join(home, ".studioml", "store"), 2 * 3600)
    return {"home": home, "trees": {k: {os.fsencode(p): d for p, d in v.items()} for k, v in trees.items()}}


def _copy_home(base: str, tmp_path) -> str:
    home = str(tmp_path / "home")
    copy_home(base, home)
    return home


def _assert_live_versions(home: str, trees: dict, tag: str) -> None:
    for exp in ("big", "small"):
        dest = os.path.join(home, f"check-{tag}-{exp}")
        assert _get(home, f"{exp}/data", dest) == trees[exp]
        shutil.rmtree(dest)
    check_store(home)


def test_kill_9_of_a_get_leaves_no_temp_files_and_no_wrong_file(big_store, tmp_path):
    home = big_store["home"]  # get only reads the store
    expected = big_store["trees"]["big"]
    rnd = random.Random(2003)
    killed = []
    for instant in range(INSTANTS):
        dest = str(tmp_path / f"dest-{instant}")
        killed.append(_kill_when(["get", "big/data", dest], home, lambda: _began(dest), rnd.uniform(0.0, 0.08)))
        assert not leftovers(dest, expected), f"temp files left in DEST: {leftovers(dest, expected)[:5]}"
        if os.path.exists(dest):
            for rel, data in read_tree(dest).items():
                assert expected.get(rel) == data, f"killed get left a wrong {rel!r}"
    assert any(killed), "no kill landed while get ran"
    _assert_live_versions(home, big_store["trees"], "get")


def _began(dest: str) -> bool:
    """Whether a get has started writing: DEST or a sibling temp entry exists."""
    parent, name = os.path.split(dest)
    return any(entry.startswith(name) or entry.startswith(".") for entry in os.listdir(parent))


def test_kill_9_of_gc_keeps_every_live_version(big_store, tmp_path):
    home = _copy_home(big_store["home"], tmp_path)
    rnd = random.Random(3001)
    store = os.path.join(home, ".studioml", "store")
    killed = []
    for _instant in range(INSTANTS):
        before = _stored(store)
        killed.append(_kill_when(["gc"], home, lambda: _stored(store) < before, rnd.uniform(0.0, 0.05)))
        _assert_live_versions(home, big_store["trees"], f"gc{_instant}")
    assert any(killed), "no kill landed while gc deleted"
    done = studio("gc", home=home)  # a gc after killed ones finishes (no stale lock)
    assert_no_traceback(done)
    assert done.returncode == 0, done.stderr
    _assert_live_versions(home, big_store["trees"], "gc-after")


def _count(folder: str) -> int:
    return sum(len(names) for _d, _s, names in os.walk(folder))


def _stored(store: str) -> int:
    """Loose objects and pack files in the store."""
    return _count(os.path.join(store, "objects")) + _count(os.path.join(store, "packs"))


READER = """
import hashlib, os, sys
from studio import fs_tracker
root = fs_tracker.get_artifact("d")
h = hashlib.sha256()
for dirpath, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(files):
        path = os.path.join(dirpath, name)
        h.update(os.path.relpath(path, root).encode() + b"\\0")
        with open(path, "rb") as f:
            h.update(f.read())
print("tree", h.hexdigest())
"""


def _tree_hash(tree: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for rel in sorted(tree):
        h.update(rel + b"\0")
        h.update(tree[rel])
    return h.hexdigest()


def test_kill_9_of_a_blob_cache_fill(big_store, tmp_path):
    home = _copy_home(big_store["home"], tmp_path)
    reader = write_script(home, "reader.py", READER)
    cache = os.path.join(home, ".studioml", "blobcache")
    rnd = random.Random(4007)
    killed = []
    for _instant in range(INSTANTS):
        killed.append(_kill_when(["run", "-e", "reader", "--reuse=big/data:d", reader], home,
                                 lambda: _count(cache) > 0, rnd.uniform(0.0, 0.08), cwd=os.path.join(home, "proj")))
    assert any(killed), "no kill landed while the cache filled"
    done = studio("run", "-e", "reader", "--reuse=big/data:d", reader, home=home, cwd=os.path.join(home, "proj"))
    assert_no_traceback(done)
    assert done.returncode == 0, done.stderr
    assert f"tree {_tree_hash(big_store['trees']['big'])}" in done.stdout, "the script saw other bytes"
    info = studio("cache", "info", home=home)
    assert_no_traceback(info)
    assert info.returncode == 0, info.stderr
    cleaned = studio("cache", "clean", home=home)
    assert cleaned.returncode == 0, cleaned.stderr
    left = [os.path.join(d, n) for d, _s, names in os.walk(cache) for n in names]
    assert not left, f"cache clean left what killed fills wrote: {left[:5]}"
    _assert_live_versions(home, big_store["trees"], "cache")


UPLOADER = """
import os, sys, time
import fs_tracker
src = sys.argv[1]
open(sys.argv[2], "w").close()  # the moment uploads begin
for i in range(30):
    name = f"f{i:02}.bin"
    fs_tracker.upload_file(f"up/{name}", os.path.join(src, name))
fs_tracker.flush(timeout=120)
print("flushed", flush=True)
time.sleep(60)
"""


def test_kill_9_of_an_upload_to_s3(s3_server, tmp_path):
    home = str(tmp_path / "home")
    os.makedirs(os.path.join(home, ".studioml"))
    bucket = f"studio-kill-{uuid.uuid4().hex[:10]}"
    with open(os.path.join(home, ".studioml", "config.yaml"), "w") as f:
        yaml.safe_dump({"store": f"s3://{bucket}/k", "store_options": {"endpoint": s3_server.endpoint},
                        "upload_wait": "30s"}, f)
    rnd = random.Random(5003)
    files = {f"f{i:02}.bin": rnd.randbytes(200 << 10) for i in range(30)}
    src = _files(os.path.join(home, "src"), files)
    script = write_script(home, "up.py", UPLOADER)
    proj = os.path.join(home, "proj")
    os.makedirs(proj)
    killed = []
    for instant in range(INSTANTS):
        began = os.path.join(home, f"began-{instant}")
        killed.append(_kill_when(["run", "-e", "up", script, src, began], home, lambda: os.path.exists(began),
                                 rnd.uniform(0.0, 0.6), cwd=proj, **FAKE_AWS_ENV))
    assert any(killed), "no kill landed while uploading"
    synced = studio("sync", home=home, **FAKE_AWS_ENV)
    assert_no_traceback(synced)
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                          aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    listed = client.list_objects_v2(Bucket=bucket, Prefix="k/experiments/up/").get("Contents", [])
    run_ids = [item["Key"].rsplit("/", 1)[1][:-len(".json")] for item in listed
               if not item["Key"].endswith(".env.json")]
    for run_id in run_ids:
        record = json.loads(client.get_object(Bucket=bucket, Key=f"k/experiments/up/{run_id}.json")["Body"].read())
        if "files" not in record.get("artifacts", {}):
            continue
        tree = _get(home, f"up/files@{run_id}", os.path.join(home, f"got-{run_id}"), **FAKE_AWS_ENV)
        for rel, data in tree.items():
            assert rel.startswith(b"up/") and files.get(os.fsdecode(rel[3:])) == data, f"wrong {rel!r} in {run_id}"
    check_store(home, **FAKE_AWS_ENV)
