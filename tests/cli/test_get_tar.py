"""``studio get EXP/TAG --tar OUT``: one archive of a captured artifact whose extracted files equal
what was captured (bytes, modes, times); ``.tar.gz``/``.tgz`` gzip, ``.tar`` plain, ``-`` tar.gz
to stdout; a corrupted object fails the command (exit 1, one line) and leaves no OUT behind;
bad OUT names and bad combinations are refused with exit 2 before anything is written."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile

import pytest

from studio_run.objects.local import LocalRepository
from studio_run.objects.manifest import Manifest
from studio_run.storage.local import LocalStorage
from tests.helpers import corrupt_object, studio, studio_env, write_script

FILES = {"f.txt": b"f" * 5000, "sub/g.bin": os.urandom(200_000), "sub/deep/h.txt": b"hello\n"}
MTIME_NS = 1_650_000_000_987_654_321


def _one_line_error(done, code: int, *words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("studio: error: "), done.stderr
    assert all(w in lines[0] for w in words), lines[0]


@pytest.fixture
def home(tmp_path):
    """A store holding ``tarred/model``: FILES captured with known modes and times."""
    home = tmp_path / "home"
    model = home / "model"
    for i, (rel, data) in enumerate(FILES.items()):
        (model / rel).parent.mkdir(parents=True, exist_ok=True)
        (model / rel).write_bytes(data)
        os.chmod(model / rel, 0o640 if i else 0o755)
        os.utime(model / rel, ns=(MTIME_NS + i, MTIME_NS + i))
    script = write_script(str(home), "noop.py", "pass\n")
    done = studio("run", "-e", "tarred", f"--capture-once={model}:model", script, home=str(home))
    assert done.returncode == 0, done.stderr
    return str(home)


def _check_extracted(out) -> None:
    for i, (rel, data) in enumerate(FILES.items()):
        path = os.path.join(out, rel)
        with open(path, "rb") as f:
            assert f.read() == data, rel
        st = os.stat(path)
        assert st.st_mtime_ns == MTIME_NS + i, rel
        assert st.st_mode & 0o777 == (0o640 if i else 0o755), rel


@pytest.mark.parametrize("name, gzipped", [("m.tar.gz", True), ("m.tgz", True), ("m.TAR", False)])
def test_tar_out_extracts_to_what_was_captured(home, tmp_path, name, gzipped):
    out = tmp_path / name
    done = studio("get", "tarred/model", "--tar", str(out), home=home)
    assert done.returncode == 0, done.stderr
    assert f"-> {out}" in done.stderr
    data = out.read_bytes()
    assert (data[:2] == b"\x1f\x8b") == gzipped
    target = tmp_path / "x"
    target.mkdir()
    subprocess.run(["tar", "-xf", str(out), "-C", str(target)], check=True)
    _check_extracted(target)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".studio-get-")] == []


def test_tar_dash_writes_tar_gz_to_stdout(home, tmp_path):
    done = subprocess.run([sys.executable, "-m", "studio_run", "get", "tarred/model@1", "--tar", "-"], cwd=home,
                          env=studio_env(home), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(done.stdout))) as tar:
        assert sorted(tar.getnames()) == ["f.txt", "sub", "sub/deep", "sub/deep/h.txt", "sub/g.bin"]
        assert tar.extractfile("sub/g.bin").read() == FILES["sub/g.bin"]


def test_tar_of_a_folder_inside_the_artifact(home, tmp_path):
    out = tmp_path / "sub.tar"
    assert studio("get", "tarred/model/sub/deep", "--tar", str(out), home=home).returncode == 0
    with tarfile.open(out) as tar:
        assert sorted(tar.getnames()) == ["sub", "sub/deep", "sub/deep/h.txt"]


def test_an_existing_file_is_replaced_and_links_and_folders_are_refused(home, tmp_path):
    out = tmp_path / "old.tar.gz"
    out.write_bytes(b"old")
    assert studio("get", "tarred/model", "--tar", str(out), home=home).returncode == 0
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    os.symlink(victim, tmp_path / "link.tar")
    _one_line_error(studio("get", "tarred/model", "--tar", str(tmp_path / "link.tar"), home=home), 2, "symlink")
    assert victim.read_bytes() == b"keep"
    (tmp_path / "dir.tar").mkdir()
    _one_line_error(studio("get", "tarred/model", "--tar", str(tmp_path / "dir.tar"), home=home), 2, "folder")


@pytest.mark.parametrize("args, words", [
    (["--tar", "out.zip"], [".tar.gz, .tgz or .tar"]),
    (["dest", "--tar", "out.tar"], ["not both"]),
    ([], ["needs DEST", "--tar OUT"]),
])
def test_bad_combinations_are_refused(home, args, words):
    done = studio("get", "tarred/model", *args, home=home)
    _one_line_error(done, 2, *words)
    assert not os.path.exists(os.path.join(home, "out.tar")) and not os.path.exists(os.path.join(home, "dest"))


def test_an_archive_inside_the_store_is_refused(home):
    inside = os.path.join(home, ".studioml", "store", "model.tar.gz")
    _one_line_error(studio("get", "tarred/model", "--tar", inside, home=home), 2, "inside studio's own storage")
    assert not os.path.exists(inside)


def test_unknown_tag_is_refused(home, tmp_path):
    _one_line_error(studio("get", "tarred/nope", "--tar", str(tmp_path / "o.tar"), home=home), 2, "no artifact 'nope'")
    assert not (tmp_path / "o.tar").exists()


def test_a_corrupted_object_fails_and_leaves_no_archive(home, tmp_path):
    storage = LocalStorage(os.path.join(home, ".studioml", "store"))
    manifests = [k for k in storage.list("manifests/")]
    digests = {e.digest for k in manifests for e in Manifest.from_bytes(storage.read_bytes(k)).entries
               if e.path == "sub/deep/h.txt"}
    repo = LocalRepository(storage)
    for digest in digests:
        corrupt_object(repo, digest)  # loose or inside its pack
    out = tmp_path / "broken.tar.gz"
    done = studio("get", "tarred/model", "--tar", str(out), home=home)
    _one_line_error(done, 1, "corrupted")
    assert not out.exists()
    assert [n for n in os.listdir(tmp_path) if n.startswith(".studio-get-")] == []
