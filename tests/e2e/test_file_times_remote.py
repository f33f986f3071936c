"""File times and modes between two machines sharing an S3 store (moto on loopback).

Machine A captures; machine B, with its own HOME, staging and blob cache, reuses and gets. The
manifest with times must reach the bucket before the record that points at it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import boto3
import pytest
import yaml

from tests.conftest import FAKE_AWS_ENV
from tests.helpers import studio, write_script

pytestmark = pytest.mark.servers

OLD, NEW = 1_600_000_000_000_000_001, 1_700_000_000_000_000_002


def _machine(tmp_path: Path, name: str, url: str, endpoint: str) -> str:
    home = tmp_path / name
    (home / ".studioml").mkdir(parents=True)
    config = {"store": url, "store_options": {"endpoint": endpoint}, "upload_wait": "60s"}
    (home / ".studioml" / "config.yaml").write_text(yaml.safe_dump(config))
    return str(home)


def test_times_and_modes_cross_an_s3_store_to_reuse_and_get_on_another_machine(tmp_path, s3_server):
    bucket = f"studio-times-{uuid.uuid4().hex[:12]}"
    url = f"s3://{bucket}/team"
    a = _machine(tmp_path, "a", url, s3_server.endpoint)
    b = _machine(tmp_path, "b", url, s3_server.endpoint)
    ckpts = os.path.join(a, "ckpts")
    os.makedirs(ckpts)
    for name, ns, mode in (("b-older.pt", OLD, 0o640), ("a-newer.pt", NEW, 0o755)):
        path = os.path.join(ckpts, name)
        Path(path).write_text(name)
        os.chmod(path, mode)
        os.utime(path, ns=(ns, ns))
    out = os.path.join(a, "out")
    train = write_script(a, "train.py", (
        "import os, sys\n"
        "os.makedirs(sys.argv[1], exist_ok=True)\n"
        "path = os.path.join(sys.argv[1], 'last.pt')\n"
        "open(path, 'w').write('w')\n"
        f"os.utime(path, ns=({OLD}, {OLD}))\n"
    ))
    ran = studio("run", "-e", "remote-times", f"--capture-once={ckpts}:ckpts", f"--capture={out}:out",
                 train, out, home=a, cwd=a, **FAKE_AWS_ENV)
    assert ran.returncode == 0, ran.stderr

    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                          aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="team/")["Contents"]]
    record_key = next(k for k in keys if k.startswith("team/experiments/remote-times/") and not k.endswith(".env.json"))
    record = json.loads(client.get_object(Bucket=bucket, Key=record_key)["Body"].read())
    for tag in ("ckpts", "out"):
        art = record["artifacts"][tag]
        assert art["times"] and art["times"] != art["digest"]
        for digest in (art["digest"], art["times"]):
            assert f"team/manifests/{digest[:2]}/{digest[2:]}" in keys

    pick = write_script(b, "pick.py", (
        "import os, fs_tracker\n"
        "folder = fs_tracker.get_artifact('c')\n"
        "names = sorted(os.listdir(folder), key=lambda n: os.stat(os.path.join(folder, n)).st_mtime_ns)\n"
        "print('newest', names[-1], [os.stat(os.path.join(folder, n)).st_mtime_ns for n in names])\n"
        "print('exec', os.access(os.path.join(folder, 'a-newer.pt'), os.X_OK))\n"
    ))
    reused = studio("run", "--reuse=remote-times/ckpts:c", pick, home=b, cwd=b, **FAKE_AWS_ENV)
    assert reused.returncode == 0, reused.stderr
    assert f"newest a-newer.pt [{OLD}, {NEW}]" in reused.stdout
    assert "exec True" in reused.stdout

    got = os.path.join(b, "got")
    fetched = studio("get", "remote-times/ckpts", got, home=b, **FAKE_AWS_ENV)
    assert fetched.returncode == 0, fetched.stderr
    assert {n: (os.stat(os.path.join(got, n)).st_mtime_ns, os.stat(os.path.join(got, n)).st_mode & 0o777)
            for n in os.listdir(got)} == {"b-older.pt": (OLD, 0o640), "a-newer.pt": (NEW, 0o755)}
    last = os.path.join(b, "last.pt")
    fetched = studio("get", "remote-times/out/last.pt", last, home=b, **FAKE_AWS_ENV)
    assert fetched.returncode == 0, fetched.stderr
    assert os.stat(last).st_mtime_ns == OLD
