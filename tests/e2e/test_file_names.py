"""Odd file names through the CLI: ``studio run`` captures them and ``studio get`` restores them."""

from __future__ import annotations

import json
import os

from tests.helpers import studio, write_script

_NAMES = [b"back\\slash.txt", b"new\nline", b"-rf", b"..x", b"\xff\xfe-latin", b"n" * 255, b"sp ace "]


def _fill(folder: bytes) -> dict[bytes, bytes]:
    os.makedirs(os.path.join(folder, b"sub\\dir"), exist_ok=True)
    written = {}
    for name in _NAMES:
        for rel in (name, os.path.join(b"sub\\dir", name)):
            with open(os.path.join(folder, rel), "wb") as f:
                f.write(b"bytes of " + rel)
            written[rel] = b"bytes of " + rel
    return written


def _read_all(folder: bytes) -> dict[bytes, bytes]:
    found = {}
    for d, _dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(d, name), "rb") as f:
                found[os.path.relpath(os.path.join(d, name), folder)] = f.read()
    return found


def _record(home: str, experiment: str) -> dict:
    folder = os.path.join(home, ".studioml", "store", "experiments", experiment)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".json") and not n.endswith(".env.json"))
    with open(os.path.join(folder, names[-1])) as f:
        return json.load(f)


def test_odd_names_in_capture_once_capture_and_workspace_round_trip(home):
    work = os.path.join(home, "work")
    inputs, outputs = os.path.join(home, "inputs"), os.path.join(home, "outputs")
    os.makedirs(work)
    expected = _fill(os.fsencode(inputs))
    assert _fill(os.fsencode(work)) == expected
    script = write_script(home, "make.py", (
        "import os, shutil\n"
        f"shutil.copytree({os.fsencode(inputs)!r}, {os.fsencode(outputs)!r}, dirs_exist_ok=True)\n"
    ))
    ran = studio("run", "-e", "odd", f"--capture-once={inputs}:inputs", f"--capture={outputs}:outputs",
                 script, home=home, cwd=work)
    assert ran.returncode == 0, ran.stderr
    record = _record(home, "odd")
    assert record["status"] == "finished", record
    for tag in ("inputs", "outputs", "workspace"):
        out = os.path.join(home, f"got-{tag}")
        got = studio("get", f"odd/{tag}", out, home=home)
        assert got.returncode == 0, got.stderr
        assert _read_all(os.fsencode(out)) == expected, tag
