"""``fs_tracker.upload_file`` while the store is unreachable: the call never raises, the file is
staged, and it reaches the store byte for byte once the store is back (``studio sync``).

Each test runs its own moto server: stopping it closes the port (connections are refused, as
when a store goes down); starting it again serves the same port and the same buckets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAKE_AWS_ENV
from tests.helpers import studio, studio_env, write_script
from tests.servers import MotoS3Server

pytestmark = pytest.mark.servers

UPLOAD_AFTER_GO = """
import os, sys, time, fs_tracker
payload, go = sys.argv[1], sys.argv[2]
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.02)
started = time.monotonic()
name = fs_tracker.upload_file("checkpoints/ep1.bin", payload)
with open(payload, "wb") as f:       # overwritten right after the call: the upload keeps the old bytes
    f.write(b"changed")
print("upload_file returned", name, flush=True)
"""

UPLOAD_OUTSIDE_RUN = """
import sys, fs_tracker
fs_tracker.init(sys.argv[1], "standalone", wait="1s")
fs_tracker.upload_file("weights.bin", sys.argv[2])
print("upload_file returned", flush=True)
"""


@pytest.fixture
def server(fake_aws_env):
    moto = MotoS3Server()
    moto.start()
    yield moto
    moto.stop()


def _machine(tmp_path: Path, name: str, store: str, endpoint: str, **settings: object) -> str:
    home = tmp_path / name
    (home / ".studioml").mkdir(parents=True)
    config = {"store": store, "store_options": {"endpoint": endpoint}, **settings}
    (home / ".studioml" / "config.yaml").write_text(yaml.safe_dump(config))
    return str(home)


def _payload(tmp_path: Path) -> tuple[str, bytes]:
    data = os.urandom(300_000) + bytes(range(256)) * 100  # several MiB would only slow the suite
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    return str(path), data


def _pending(home: str) -> list[str]:
    return sorted(p.name for p in (Path(home) / ".studioml" / "staging").glob("*/pending/*.json"))


def test_upload_file_during_an_outage_is_staged_and_delivered_by_sync(tmp_path, server):
    store = f"s3://studio-outage-{uuid.uuid4().hex[:12]}/team"
    a = _machine(tmp_path, "a", store, server.endpoint, upload_wait="1s")
    payload, data = _payload(tmp_path)
    go = str(tmp_path / "go")
    project = tmp_path / "project"
    project.mkdir()
    script = write_script(str(project), "train.py", UPLOAD_AFTER_GO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio_run", "run", "-e", "outage", script, payload, go],
        cwd=str(project), env=studio_env(a, **FAKE_AWS_ENV), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        server.stop()  # the script's uploader opened the store; now it is gone
        Path(go).touch()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "upload_file returned checkpoints/ep1.bin" in out, err
    assert "Traceback" not in err and "not delivered" not in err, err
    assert proc.returncode == 0, err
    warning = [line for line in err.splitlines() if "not uploaded yet" in line]
    assert len(warning) == 1 and "studio sync" in warning[0], err
    assert _pending(a)

    server.start()
    synced = studio("sync", home=a, **FAKE_AWS_ENV)
    assert synced.returncode == 0 and "published 1 run" in synced.stderr, synced.stderr
    assert _pending(a) == []

    b = _machine(tmp_path, "b", store, server.endpoint)
    dest = os.path.join(b, "ep1.bin")
    got = studio("get", "outage/files/checkpoints/ep1.bin", dest, home=b, **FAKE_AWS_ENV)
    assert got.returncode == 0, got.stderr
    assert Path(dest).read_bytes() == data


def test_upload_file_outside_a_run_during_an_outage_waits_in_staging_for_sync(tmp_path, server):
    store = f"s3://studio-outage-{uuid.uuid4().hex[:12]}/team"
    a = _machine(tmp_path, "a", store, server.endpoint)
    payload, data = _payload(tmp_path)
    script = write_script(str(tmp_path), "standalone.py", UPLOAD_OUTSIDE_RUN)
    server.stop()
    done = subprocess.run(
        [sys.executable, script, store, payload], env=studio_env(a, **FAKE_AWS_ENV),
        capture_output=True, text=True, timeout=180,
    )
    assert "upload_file returned" in done.stdout, done.stderr
    assert "Traceback" not in done.stderr and "not delivered" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    assert "not uploaded yet" in done.stderr and "studio sync" in done.stderr, done.stderr
    assert _pending(a)

    server.start()
    synced = studio("sync", home=a, **FAKE_AWS_ENV)
    assert synced.returncode == 0 and "published 1 run" in synced.stderr, synced.stderr
    b = _machine(tmp_path, "b", store, server.endpoint)
    dest = os.path.join(b, "weights.bin")
    got = studio("get", "standalone/files/weights.bin", dest, home=b, **FAKE_AWS_ENV)
    assert got.returncode == 0, got.stderr
    assert Path(dest).read_bytes() == data
