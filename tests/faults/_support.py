"""What every fault test asserts, in one place: one-line errors, byte-for-byte trees, store checks.

A fault test damages something (a byte, a file, a process, the disk) and then asks two questions:
did studio say so in one line without a traceback, and is every byte that was not damaged still
readable exactly as it was captured? These helpers answer them the same way everywhere.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import time
from typing import Union

from tests.helpers import studio

__all__ = [
    "DAMAGES",
    "Tree",
    "age_tree",
    "assert_no_traceback",
    "assert_one_line_error",
    "check_store",
    "copy_home",
    "damage_bytes",
    "damage_file",
    "has_check",
    "leftovers",
    "read_tree",
]

DAMAGES = ("flip", "truncate", "delete")

Tree = dict[bytes, Union[bytes, tuple[str, bytes]]]


def assert_no_traceback(done: subprocess.CompletedProcess) -> None:
    """A bug prints a traceback; a fault never should."""
    output = (done.stderr or "") + (done.stdout or "")
    if "Traceback" in output:
        tail = "\n".join(done.stderr.strip().splitlines()[-2:])
        raise AssertionError(f"traceback from studio (last lines):\n{tail}")


def assert_one_line_error(done: subprocess.CompletedProcess) -> str:
    """Non-zero exit, no traceback, and exactly one ``studio: error:`` line, the last one on stderr."""
    assert_no_traceback(done)
    assert done.returncode != 0, f"exit 0 where an error was due\nstdout: {done.stdout}\nstderr: {done.stderr}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("studio: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"not one error line:\n{done.stderr}"
    return errors[0]


def read_tree(folder: Union[str, bytes]) -> Tree:
    """Every file (bytes) and symlink (``("link", target)``) under ``folder``, by relative bytes path."""
    root = os.fsencode(folder)
    tree: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                tree[rel] = ("link", os.readlink(path))
            elif name in filenames:
                with open(path, "rb") as f:
                    tree[rel] = f.read()
    return tree


def leftovers(dest: Union[str, bytes], expected: Tree) -> list[bytes]:
    """Names under ``dest`` that the artifact does not hold (temp files of an interrupted write)."""
    if not os.path.exists(dest):
        return []
    found = read_tree(dest)
    extra = sorted(set(found) - set(expected))
    root = os.fsencode(dest)
    for dirpath, dirnames, _files in os.walk(root):  # empty hidden temp folders count too
        for name in dirnames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if not any(k == rel or k.startswith(rel + b"/") for k in expected) and rel not in extra:
                extra.append(rel)
    return extra


def age_tree(root: str, seconds: float) -> None:
    """Make everything under ``root`` look ``seconds`` old (past gc's grace period)."""
    when = time.time() - seconds
    for dirpath, dirs, names in os.walk(root):
        for name in dirs + names:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
    os.utime(root, (when, when))


def damage_bytes(data: bytes, how: str) -> bytes:
    """``flip`` one byte in the middle, or ``truncate`` to half (``delete`` is the caller's job)."""
    if how == "flip":
        i = len(data) // 2
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:] if data else b"\xff"
    if how == "truncate":
        return data[: len(data) // 2]
    raise ValueError(how)


def damage_file(path: str, how: str) -> None:
    """Bit rot, a torn write or a lost file, on a local path. The damaged bytes go to a new inode
    (written beside, renamed over), so a copy made by ``copy_home`` never damages its original."""
    if how == "delete":
        os.remove(path)
        return
    with open(path, "rb") as f:
        data = f.read()
    tmp = path + ".damage"
    with open(tmp, "wb") as f:
        f.write(damage_bytes(data, how))
    os.replace(tmp, path)


_LINK_FROM = 1 << 20


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.getsize(src) >= _LINK_FROM:
        os.link(src, dst)  # stored objects and source trees are never rewritten in place by a case
    else:
        shutil.copy2(src, dst)


def copy_home(src: str, dst: str) -> None:
    """Copy a test HOME (store, caches, config) for one case; large files (stored objects, source
    trees) are hard-linked so a hundred cases do not write a gigabyte."""
    shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)


@functools.lru_cache(maxsize=None)
def has_check() -> bool:
    """Whether this checkout has ``studio check`` (the suite runs before and after it lands)."""
    with tempfile.TemporaryDirectory(prefix="studio-faults-probe-") as home:
        return studio("check", "--help", home=home).returncode == 0


def check_store(home: str, **env: str) -> None:
    """``studio check`` exits 0 on a consistent store (when the command exists in this checkout)."""
    if not has_check():
        return
    done = studio("check", home=home, **env)
    assert_no_traceback(done)
    assert done.returncode == 0, f"studio check found damage:\n{done.stdout}\n{done.stderr}"
