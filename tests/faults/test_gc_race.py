"""gc racing captures: content that an older, deleted experiment also had is captured again while
``studio gc`` with the smallest grace it accepts sweeps that content. Afterwards every run recorded
``finished`` must read back byte for byte: gc may never delete what a capture in progress found
"already stored", or has just written, and is about to publish.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

from tests.faults._support import age_tree, assert_no_traceback, read_tree
from tests.helpers import studio, studio_env, write_script

ROUNDS = 2
ATTEMPTS = 2
FILES = 1500  # enough that gc's sweep and the capture's "already stored?" checks overlap


def _smallest_grace(home: str) -> str:
    for grace in ("0s", "1ms", "1s"):
        if studio("gc", "--grace", grace, "--dry-run", home=home).returncode == 0:
            return grace
    raise AssertionError("gc accepts none of 0s, 1ms, 1s as --grace")


def _start(argv: list[str], home: str, cwd: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "studio_run", *argv], cwd=cwd, env=studio_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_gc_running_during_captures_never_breaks_a_finished_run(tmp_path):
    home = str(tmp_path)
    proj = os.path.join(home, "proj")
    os.makedirs(proj)
    script = write_script(proj, "s.py", "print('ok')\n")
    store = os.path.join(home, ".studioml", "store")
    rnd = random.Random(61)
    contents: dict[str, dict[bytes, bytes]] = {}
    assert studio("run", "-e", "warmup", script, home=home, cwd=proj).returncode == 0
    grace = _smallest_grace(home)
    outputs = []
    seen: set = set()
    broken: list[str] = []
    checked = 0

    for round_ in range(ROUNDS):
        src = os.path.join(home, f"src{round_}")
        os.makedirs(src)
        files = {f"f{i:04}.bin": rnd.randbytes(512) for i in range(FILES)}
        for rel, data in files.items():
            with open(os.path.join(src, rel), "wb") as f:
                f.write(data)
        old = studio("run", "-e", f"old{round_}", f"--capture-once={src}:data", script, home=home, cwd=proj)
        assert old.returncode == 0, old.stderr
        assert studio("delete", f"old{round_}", home=home).returncode == 0
        age_tree(store, 2 * 3600)  # the deleted experiment's content is past any grace period
        contents[f"new{round_}"] = {os.fsencode(k): v for k, v in files.items()}
        for _attempt in range(ATTEMPTS):  # the same content captured again while gc sweeps it
            gc = _start(["gc", "--grace", grace], home, home)
            time.sleep(rnd.uniform(0.0, 0.4))
            capture = _start(["run", "-e", f"new{round_}", f"--capture-once={src}:data", script], home, proj)
            again = _start(["gc", "--grace", grace], home, home)  # and once more while it publishes
            for proc in (gc, capture, again):
                out, err = proc.communicate(timeout=300)
                outputs.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
            checked += _verify_finished(home, f"new{round_}", contents[f"new{round_}"], seen, broken)

    for done in outputs:
        assert_no_traceback(done)
    assert not broken, "runs recorded finished that cannot be read back:\n" + "\n".join(broken)
    assert checked, "no run finished at all"


def _verify_finished(home: str, exp: str, tree: dict, seen: set, broken: list) -> int:
    """``get`` each finished run of ``exp`` not checked yet; a later capture of the same content
    could heal it, so every run is checked right after the attempt that made it."""
    folder = os.path.join(home, ".studioml", "store", "experiments", exp)
    checked = 0
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json") or name.endswith(".env.json") or name in seen:
            continue
        seen.add(name)
        with open(os.path.join(folder, name)) as f:
            record = json.load(f)
        if record["status"] != "finished":
            continue
        run_id = name[: -len(".json")]
        dest = os.path.join(home, "got", exp, run_id)
        got = studio("get", f"{exp}/data@{run_id}", dest, home=home)
        if got.returncode != 0:
            broken.append(f"{exp} run {run_id}: {got.stderr.strip()}")
        elif read_tree(dest) != tree:
            broken.append(f"{exp} run {run_id}: reads back other bytes")
        checked += 1
    return checked
