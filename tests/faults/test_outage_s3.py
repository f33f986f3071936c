"""The outage row for a remote store (S3 on moto): while the store is unreachable, a run's
captures and ``fs_tracker.upload_file`` calls never raise on the training thread and never lose a
file; they wait on this machine and ``studio sync`` delivers them once the store is back, byte
for byte.

The outage is real: the config points at a port on 127.0.0.1 where nothing listens, then at the
moto server (the store's URL, hence its staging folder, stays the same).
"""

from __future__ import annotations

import os
import random
import uuid

import pytest
import yaml

from tests.conftest import FAKE_AWS_ENV
from tests.faults._support import assert_no_traceback, read_tree
from tests.helpers import studio, write_script
from tests.servers import free_port

pytestmark = pytest.mark.servers

SCRIPT = """
import os, sys
import fs_tracker
src = sys.argv[1]
for name in sorted(os.listdir(src)):
    fs_tracker.upload_file(f"up/{name}", os.path.join(src, name))  # must not raise while the store is down
print("uploads handed over", flush=True)
"""


def _configure(home: str, url: str, endpoint: str) -> None:
    with open(os.path.join(home, ".studioml", "config.yaml"), "w") as f:
        yaml.safe_dump({"store": url, "store_options": {"endpoint": endpoint}, "upload_wait": "2s"}, f)


def test_an_unreachable_store_loses_no_capture_and_no_uploaded_file(s3_server, tmp_path):
    home = str(tmp_path / "home")
    os.makedirs(os.path.join(home, ".studioml"))
    url = f"s3://studio-outage-{uuid.uuid4().hex[:10]}/o"
    _configure(home, url, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    rnd = random.Random(404)
    files = {f"f{i}.bin": rnd.randbytes(50_000 + i) for i in range(3)}
    src = os.path.join(home, "src")
    os.makedirs(src)
    for name, data in files.items():
        with open(os.path.join(src, name), "wb") as f:
            f.write(data)
    proj = os.path.join(home, "proj")
    os.makedirs(proj)
    script = write_script(home, "up.py", SCRIPT)

    done = studio("run", "-e", "outage", f"--capture-once={src}:data", script, src, home=home, cwd=proj,
                  timeout=300, **FAKE_AWS_ENV)
    assert "uploads handed over" in done.stdout, f"upload_file raised on the training thread:\n{done.stderr[-600:]}"
    assert_no_traceback(done)

    _configure(home, url, s3_server.endpoint)  # the store is back
    synced = studio("sync", home=home, **FAKE_AWS_ENV)
    assert_no_traceback(synced)
    assert synced.returncode == 0, synced.stderr
    dest = os.path.join(home, "got-data")
    got = studio("get", "outage/data", dest, home=home, **FAKE_AWS_ENV)
    assert got.returncode == 0, f"the capture made during the outage was lost: {got.stderr}"
    assert read_tree(dest) == {os.fsencode(k): v for k, v in files.items()}
    dest = os.path.join(home, "got-files")
    got = studio("get", "outage/files", dest, home=home, **FAKE_AWS_ENV)
    assert got.returncode == 0, f"files handed to upload_file during the outage were lost: {got.stderr}"
    assert read_tree(dest) == {os.fsencode(f"up/{k}"): v for k, v in files.items()}
