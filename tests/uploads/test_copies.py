"""Remote names and the caller's one copy, from tables of valid and invalid values."""

from __future__ import annotations

import os

import pytest

from studio_run.uploads import copies
from studio_run.uploads.copies import clone_or_copy, expand_name, rank

VALUES = {"experiment": "mnist", "run": "20261122T1-abc", "rank": "3"}


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ckpt.pt", "ckpt.pt"),
        ("checkpoints/{experiment}/ep3.pt", "checkpoints/mnist/ep3.pt"),
        ("{run}/rank{rank}.trace", "20261122T1-abc/rank3.trace"),
        ("a b/ü.txt", "a b/ü.txt"),
    ],
)
def test_expand_name_valid(name, expected):
    assert expand_name(name, VALUES) == expected


@pytest.mark.parametrize("name", ["", "/abs", "a/", "a//b", "./a", "a/./b", "../a", "a\\b", "{user}", "{run",
                                  "x}", "{experiment.__class__}", "a\x00b"])
def test_expand_name_invalid(name):
    with pytest.raises(ValueError):
        expand_name(name, VALUES)


@pytest.mark.parametrize(
    "env, expected",
    [({}, "0"), ({"RANK": "2"}, "2"), ({"SLURM_PROCID": "5"}, "5"), ({"RANK": "x", "LOCAL_RANK": "1"}, "1")],
)
def test_rank_from_launchers(env, expected):
    assert rank(env) == expected


def _copy(tmp_path, data: bytes) -> tuple[str, str]:
    src = tmp_path / "src"
    src.write_bytes(data)
    dest = str(tmp_path / "dest")
    fd = os.open(src, os.O_RDONLY)
    try:
        how = clone_or_copy(fd, dest, len(data))
    finally:
        os.close(fd)
    return dest, how


def test_copy_holds_the_bytes_and_says_how(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 7)
    dest, how = _copy(tmp_path, data)
    assert open(dest, "rb").read() == data
    assert how in ("reflink", "copy_file_range", "read")
    assert os.stat(dest).st_mode & 0o777 == 0o600


def test_copy_falls_back_to_reading_when_the_kernel_cannot_help(tmp_path, monkeypatch):
    monkeypatch.setattr(copies, "_clone", lambda src, out: "")
    monkeypatch.setattr(copies, "_copy_range", lambda src, out, size: "")
    data = os.urandom(100_000)
    dest, how = _copy(tmp_path, data)
    assert how == "read" and open(dest, "rb").read() == data


def test_copy_refuses_an_existing_destination_and_leaves_it(tmp_path):
    (tmp_path / "dest").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        _copy(tmp_path, b"new")
    assert (tmp_path / "dest").read_bytes() == b"keep"
