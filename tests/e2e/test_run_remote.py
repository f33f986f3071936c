"""``studio`` end to end on remote stores: S3 (moto), GCS (fake-gcs-server) and SFTP (sshd).

Each machine is a throwaway HOME with its own ``config.yaml``, staging and blob cache; two
machines share only the store, as two computers sharing a bucket would. The servers run on
127.0.0.1 and are started by the suite.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAKE_AWS_ENV, FAKE_AWS_SECRET
from tests.helpers import REPO, studio, studio_env, write_script
from tests.servers import MotoS3Server, free_port

pytestmark = pytest.mark.servers

TRAIN = os.path.join(REPO, "helloworld", "train_linreg.py")
PRINT_NORM = os.path.join(REPO, "helloworld", "print_norm_linreg.py")
SHARDS = 40


@dataclass
class Remote:
    """A store URL, its non-secret options, and the environment its SDK reads credentials from."""

    url: str
    options: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)

    def machine(self, tmp_path: Path, name: str, **settings: object) -> str:
        """A fresh HOME configured for this store; returns its path."""
        home = tmp_path / name
        (home / ".studioml").mkdir(parents=True)
        config = {"store": self.url, "store_options": self.options, "upload_wait": "60s", **settings}
        (home / ".studioml" / "config.yaml").write_text(yaml.safe_dump(config))
        return str(home)

    def studio(self, *args: str, home: str, cwd: str | None = None) -> subprocess.CompletedProcess:
        return studio(*args, home=home, cwd=cwd, **self.env)


def _bucket() -> str:
    return f"studio-e2e-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["s3", "gcs", "sftp"])
def remote(request, tmp_path) -> Remote:
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        return Remote(f"s3://{_bucket()}/team", {"endpoint": server.endpoint}, dict(FAKE_AWS_ENV))
    if request.param == "gcs":
        server = request.getfixturevalue("gcs_server")
        return Remote(f"gs://{_bucket()}/team", {"endpoint": server.endpoint})
    server = request.getfixturevalue("sftp_server")
    return Remote(server.url(str(tmp_path / "sftp-store")), server.options())


@pytest.fixture
def project(tmp_path) -> str:
    """The working directory of the runs (its files are the workspace artifact)."""
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "points.csv").write_text("x,y\n1,2\n")
    for i in range(SHARDS):  # enough small files to travel in a pack
        (folder / "data" / "shards" / f"part-{i:02}.txt").parent.mkdir(exist_ok=True)
        (folder / "data" / "shards" / f"part-{i:02}.txt").write_text(f"shard {i}\n" * (i + 1))
    return str(folder)


def _pending(home: str) -> list[str]:
    staging = Path(home) / ".studioml" / "staging"
    return sorted(p.name for p in staging.glob("*/pending/*.json"))


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("studio: error: "), done.stderr
    return lines[0]


def test_seed_scenario_between_two_machines_sharing_a_store(remote, tmp_path, project):
    a, b = remote.machine(tmp_path, "a"), remote.machine(tmp_path, "b")
    weights = os.path.join(project, "weights")
    trained = remote.studio("run", "--capture-once=data:data", f"--capture={weights}:weights", "-e", "linreg",
                            TRAIN, "--steps", "10", home=a, cwd=project)
    assert trained.returncode == 0, trained.stderr
    assert "step 10" in trained.stdout and _pending(a) == []
    with open(os.path.join(weights, "weights.pkl"), "rb") as f:
        original = pickle.load(f)
    os.remove(os.path.join(weights, "weights.pkl"))

    listed = remote.studio("list", home=b)
    assert listed.returncode == 0 and "linreg" in listed.stdout, listed.stderr
    reused = remote.studio("run", "-e", "norm", "--reuse=linreg/weights:w", PRINT_NORM, home=b, cwd=project)
    assert reused.returncode == 0, reused.stderr
    assert f"w={original['w']:.6f} b={original['b']:.6f}" in reused.stdout
    got = remote.studio("get", "linreg/data", os.path.join(b, "data-copy"), home=b)
    assert got.returncode == 0, got.stderr
    assert Path(b, "data-copy", "points.csv").read_text() == "x,y\n1,2\n"
    shards = sorted(Path(b, "data-copy", "shards").iterdir())  # uploaded in a pack, read out of it
    assert [p.read_text() for p in shards] == [f"shard {i}\n" * (i + 1) for i in range(SHARDS)]
    assert len(list(Path(b, ".studioml", "packindex").rglob("*"))) >= 1

    shown = remote.studio("show", "norm", home=a)  # and machine A sees B's run, with its lineage
    assert shown.returncode == 0 and "finished" in shown.stdout and "linreg" in shown.stdout, shown.stderr


def _outage_script(folder: str) -> str:
    return write_script(folder, "checkpoints.py", """
import os, sys, time
out, go = sys.argv[1], sys.argv[2]

def checkpoint(i):
    with open(os.path.join(out, f"ckpt-{i:02}.bin"), "wb") as f:
        f.write(bytes([i]) * (1000 + i))
    print(f"wrote {i}", flush=True)
    time.sleep(0.25)  # a few periodic captures between checkpoints

for i in range(4):
    checkpoint(i)
print("store may stop now", flush=True)
while not os.path.exists(go):
    time.sleep(0.02)
for i in range(4, 8):
    checkpoint(i)
print("all done", flush=True)
""")


def _wait_for_record(client, bucket: str, prefix: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount"):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing under {prefix} after {timeout} s")


def test_s3_stopped_mid_run_the_script_is_unaffected_and_sync_delivers_every_capture(
    tmp_path, project, fake_aws_env
):
    # Its own moto server: stopping it closes the port (connections are refused, as when a
    # store goes down); starting it again serves the same port and the same buckets, which is
    # what a real store does after an outage. Nothing is re-created behind studio's back.
    import boto3

    server = MotoS3Server()
    server.start()
    try:
        bucket = _bucket()
        remote = Remote(f"s3://{bucket}/team", {"endpoint": server.endpoint}, dict(FAKE_AWS_ENV))
        a = remote.machine(tmp_path, "a", capture_interval="100ms", upload_wait="1s")
        out, go = os.path.join(tmp_path, "ckpts"), os.path.join(tmp_path, "go")
        script = _outage_script(project)
        proc = subprocess.Popen(
            [sys.executable, "-m", "studio_run", "run", "-e", "outage", f"--capture={out}:ckpt", script, out, go],
            cwd=project, env=studio_env(a, **remote.env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert proc.stdout is not None
            before = []
            for line in proc.stdout:
                before.append(line.strip())
                if before[-1] == "store may stop now":
                    break
            client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
            _wait_for_record(client, bucket, "team/experiments/outage/")  # uploads worked while it was up
            server.stop()
            Path(go).touch()
            rest, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert before + rest.splitlines() == (
            [f"wrote {i}" for i in range(4)] + ["store may stop now"] + [f"wrote {i}" for i in range(4, 8)] + ["all done"]
        )
        warning = [line for line in err.splitlines() if "not uploaded yet" in line]
        assert len(warning) == 1 and "outage" in warning[0] and "store unreachable" in warning[0], err
        assert "studio sync" in warning[0] and "Traceback" not in err
        assert _pending(a) and "finished" in err.splitlines()[-1]

        server.start()
        synced = remote.studio("sync", home=a)
        assert synced.returncode == 0 and "published 1 run" in synced.stderr, synced.stderr
        assert _pending(a) == []

        b = remote.machine(tmp_path, "b")
        got = remote.studio("get", "outage/ckpt", os.path.join(b, "ckpts"), home=b)
        assert got.returncode == 0, got.stderr
        written = sorted(os.listdir(out))
        assert written == [f"ckpt-{i:02}.bin" for i in range(8)]
        for name in written:
            assert Path(b, "ckpts", name).read_bytes() == Path(out, name).read_bytes()
        shown = remote.studio("show", "outage", home=b)
        assert shown.returncode == 0 and "finished" in shown.stdout
    finally:
        server.stop()


def test_credentials_never_reach_records_logs_or_output(tmp_path, project, s3_server, sftp_server):
    s3 = Remote(f"s3://{_bucket()}/team", {"endpoint": s3_server.endpoint}, dict(FAKE_AWS_ENV))
    home = s3.machine(tmp_path, "a")
    weights = os.path.join(project, "weights")
    outputs = [s3.studio("run", "-e", "secret", f"--capture={weights}:weights", TRAIN, home=home, cwd=project)]
    outputs.append(s3.studio("show", "secret", home=home))
    # A password in an SFTP URL logs in (key auth is used here) but is never printed or stored.
    password = "hunter2-sftp-password"
    url = sftp_server.url(str(tmp_path / "sftp-store")).replace("@", f":{password}@", 1)
    sftp = Remote(url, sftp_server.options())
    sftp_home = sftp.machine(tmp_path, "b")
    outputs.append(sftp.studio("run", "-e", "secret", f"--capture={weights}:weights", TRAIN, home=sftp_home,
                               cwd=project))
    outputs.append(s3.studio("--store", f"s3://AKIAEXAMPLE:{password}@bucket/p", "list", home=home))
    assert [o.returncode for o in outputs] == [0, 0, 0, 2], [o.stderr for o in outputs]

    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    bucket = s3.url.split("/")[2]
    stored = [client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
              for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    local = [p.read_bytes() for root in (home, sftp_home, tmp_path / "sftp-store")
             for p in Path(root).rglob("*") if p.is_file() and p.suffix != ".yaml"]
    assert len(stored) > 5 and len(local) > 10
    for secret in (FAKE_AWS_SECRET, password):
        blob = secret.encode()
        assert not [b for b in stored + local if blob in b]
        assert not [o for o in outputs if secret in o.stdout + o.stderr]
    assert f"sftp://{sftp_server.user}@127.0.0.1" in outputs[2].stderr


def test_an_unreachable_endpoint_fails_reading_commands_but_not_a_run(tmp_path, project):
    remote = Remote(f"s3://{_bucket()}", {"endpoint": f"http://127.0.0.1:{free_port()}"}, dict(FAKE_AWS_ENV))
    home = remote.machine(tmp_path, "a", upload_wait="1s")
    listed = remote.studio("list", home=home)
    assert listed.returncode == 1
    assert "Could not connect" in _one_error_line(listed) and "127.0.0.1" in listed.stderr

    ran = remote.studio("run", "-e", "offline", write_script(project, "hi.py", "print('hi')\n"), home=home,
                        cwd=project)
    assert ran.returncode == 0 and ran.stdout == "hi\n", ran.stderr
    assert "store unreachable" in ran.stderr and "Traceback" not in ran.stderr
    assert _pending(home)
    synced = remote.studio("sync", home=home)
    assert synced.returncode == 1 and "Could not connect" in _one_error_line(synced)


def test_wrong_credentials_get_their_own_message(tmp_path, s3_auth_server, sftp_server):
    env = {**FAKE_AWS_ENV, **s3_auth_server.reader, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    remote = Remote(f"s3://{s3_auth_server.bucket}/team", {"endpoint": s3_auth_server.endpoint}, env)
    listed = remote.studio("list", home=remote.machine(tmp_path, "a"))
    assert listed.returncode == 1
    line = _one_error_line(listed)
    assert "credentials refused" in line and "SignatureDoesNotMatch" in line and "not-the-secret" not in line

    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    options = dict(sftp_server.options(), key_filename=str(stranger))
    sftp = Remote(sftp_server.url(str(tmp_path / "sftp-store")), options)
    refused = sftp.studio("list", home=sftp.machine(tmp_path, "b"))
    assert refused.returncode == 1 and "login refused" in _one_error_line(refused)


def test_a_missing_permission_fails_uploads_not_the_run(tmp_path, project, s3_auth_server):
    remote = Remote(f"s3://{s3_auth_server.bucket}/team", {"endpoint": s3_auth_server.endpoint},
                    dict(FAKE_AWS_ENV, **s3_auth_server.reader))
    home = remote.machine(tmp_path, "a", upload_wait="30s")
    # The reader may list and read, but moto refuses the signature of any listing with a "/" in
    # its prefix when it checks signatures, so `studio list` cannot be shown working here.
    ran = remote.studio("run", "-e", "denied", write_script(project, "hi.py", "print('hi')\n"), home=home,
                        cwd=project)
    assert ran.returncode == 0 and ran.stdout == "hi\n", ran.stderr
    warning = [line for line in ran.stderr.splitlines() if "not uploaded yet" in line]
    assert len(warning) == 1 and "permission denied" in warning[0] and "AccessDenied" in warning[0], ran.stderr
    synced = remote.studio("sync", home=home)
    assert synced.returncode == 1 and "AccessDenied" in _one_error_line(synced)
    assert _pending(home)


def test_a_missing_bucket_that_cannot_be_created_names_bucket_and_cause(tmp_path, s3_auth_server):
    remote = Remote("s3://not-there-bucket/team", {"endpoint": s3_auth_server.endpoint},
                    dict(FAKE_AWS_ENV, **s3_auth_server.reader))
    listed = remote.studio("list", home=remote.machine(tmp_path, "a"))
    assert listed.returncode == 1
    line = _one_error_line(listed)
    assert "cannot create bucket 'not-there-bucket'" in line and "AccessDenied" in line
