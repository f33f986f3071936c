"""``studio run --capture-once URL:TAG`` as a user runs it, against servers on loopback: an HTTP
server in a thread, moto S3, fake-gcs-server and sshd. The script reads ``get_artifact(TAG)``
and prints what it finds, so every test asserts the bytes the script saw."""

from __future__ import annotations

import json
import os
import shutil
import uuid

import pytest

from tests.conftest import FAKE_AWS_ENV
from tests.helpers import studio, write_script
from tests.http_files import PASSWORD, USER, serve_files

READER = """\
import os, fs_tracker
path = fs_tracker.get_artifact("data")
if os.path.isfile(path):
    print("file", os.path.basename(path), open(path, "rb").read().decode())
else:
    found = [os.path.join(root, name) for root, _dirs, names in os.walk(path) for name in names]
    for full in sorted(found, key=lambda p: os.path.relpath(p, path)):
        print(os.path.relpath(full, path), open(full, "rb").read().decode())
"""


@pytest.fixture
def web():
    yield from serve_files()


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    write_script(str(folder), "read.py", READER)
    return str(folder)


def _run(home: str, project: str, url: str, *extra: str, **env: str):
    return studio("run", "-e", "urls", "--capture-once", f"{url}:data", "read.py", *extra,
                  home=home, cwd=project, **env)


def _records(home: str) -> list[dict]:
    folder = os.path.join(home, ".studioml", "store", "experiments", "urls")
    if not os.path.isdir(folder):
        return []
    names = sorted(n for n in os.listdir(folder) if n.endswith(".json") and not n.endswith(".env.json"))
    return [json.load(open(os.path.join(folder, n))) for n in names]


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _bucket() -> str:
    return f"inputs-{uuid.uuid4().hex[:12]}"


# -- http ------------------------------------------------------------------------------------
def test_http_file_is_fetched_once_and_not_again_while_unchanged(home, project, web):
    web.files["/data/train.csv"] = b"a,b\n1,2\n"
    url = web.base + "/data/train.csv"
    first = _run(home, project, url)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "file train.csv a,b\n1,2\n\n"
    second = _run(home, project, url)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert web.bodies_sent("/data/train.csv") == 1 and web.statuses("/data/train.csv") == [200, 304]
    assert "unchanged since it was last fetched" in second.stderr
    one, two = _records(home)
    assert one["artifacts"]["data"]["kind"] == two["artifacts"]["data"]["kind"] == "capture-once"
    assert one["artifacts"]["data"]["digest"] == two["artifacts"]["data"]["digest"]
    assert one["artifacts"]["data"]["single_file"] and one["artifacts"]["data"]["source"] == url

    web.files["/data/train.csv"] = b"a,b\n3,4\n"  # a changed source is fetched again
    third = _run(home, project, url)
    assert third.returncode == 0, third.stderr
    assert third.stdout == "file train.csv a,b\n3,4\n\n"
    assert web.bodies_sent("/data/train.csv") == 2
    assert _records(home)[2]["artifacts"]["data"]["digest"] != one["artifacts"]["data"]["digest"]


def test_a_collected_snapshot_is_fetched_again(home, project, web):
    web.files["/f.txt"] = b"kept"
    assert _run(home, project, web.base + "/f.txt").returncode == 0
    shutil.rmtree(os.path.join(home, ".studioml", "store"))  # the store lost the snapshot
    again = _run(home, project, web.base + "/f.txt")
    assert again.returncode == 0 and again.stdout == "file f.txt kept\n", again.stderr
    assert web.bodies_sent("/f.txt") == 2


def test_http_404_is_one_line_exit_2_and_nothing_stored(home, project, web):
    result = _run(home, project, web.base + "/missing.bin")
    assert result.returncode == 2 and result.stdout == ""
    line = _error_line(result)
    assert "not found (HTTP 404" in line and "/missing.bin" in line
    assert _records(home) == []
    assert not os.path.isdir(os.path.join(home, ".studioml", "store", "objects"))


def test_http_credentials_are_used_but_never_recorded_or_shown(home, project, web):
    web.files["/private/w.bin"] = b"secret weights"
    url = f"http://{USER}:{PASSWORD}@{web.base[len('http://'):]}/private/w.bin?X-Amz-Signature=sig-abc123"
    ran = _run(home, project, url)
    assert ran.returncode == 0 and ran.stdout == "file w.bin secret weights\n", ran.stderr
    shown = studio("show", "urls", "--json", home=home)
    listed = studio("list", home=home)
    store = os.path.join(home, ".studioml")
    texts = [ran.stderr, shown.stdout, listed.stdout]
    for root, _dirs, names in os.walk(store):
        texts += [open(os.path.join(root, n), "rb").read().decode("utf-8", "replace") for n in names]
    assert not [t for t in texts if PASSWORD in t or "sig-abc123" in t]
    assert _records(home)[0]["artifacts"]["data"]["source"] == f"http://{USER}@{web.base[7:]}/private/w.bin"

    wrong = _run(home, project, url.replace(PASSWORD, "not-" + PASSWORD[:-3] + "xyz"))
    assert wrong.returncode == 2
    line = _error_line(wrong)
    assert "credentials refused (HTTP 401" in line and PASSWORD[:-3] not in line and "sig-abc123" not in line


def test_a_download_that_does_not_match_its_checksum_is_refused(home, project, web):
    web.files["/d.bin"] = b"payload"
    web.lie_md5 = True
    result = _run(home, project, web.base + "/d.bin")
    assert result.returncode == 1 and result.stdout == ""
    assert "arrived damaged (MD5" in _error_line(result)
    assert _records(home) == []
    assert os.listdir(os.path.join(home, ".studioml", "url-inputs")) == []  # no temporary folder left


def test_a_url_cannot_be_captured_continuously(home, project, web):
    result = studio("run", "--capture", f"{web.base}/x:data", "read.py", home=home, cwd=project)
    assert result.returncode == 2
    assert "a URL cannot be captured continuously; fetch it once with --capture-once" in _error_line(result)


# -- s3 --------------------------------------------------------------------------------------
def _s3(s3_server, bucket: str):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    return client


def test_s3_prefix_with_several_files(home, project, s3_server):
    bucket = _bucket()
    client = _s3(s3_server, bucket)
    for key, body in (("ds/a.txt", b"A"), ("ds/sub/b.txt", b"B"), ("ds/sub/c.txt", b"C"), ("other.txt", b"no")):
        client.put_object(Bucket=bucket, Key=key, Body=body)
    env = dict(FAKE_AWS_ENV, AWS_ENDPOINT_URL_S3=s3_server.endpoint)
    first = _run(home, project, f"s3://{bucket}/ds", **env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "a.txt A\nsub/b.txt B\nsub/c.txt C\n"
    assert "3 files" in first.stderr
    second = _run(home, project, f"s3://{bucket}/ds/", **env)
    assert second.returncode == 0 and second.stdout == first.stdout, second.stderr
    assert "unchanged since it was last fetched" in second.stderr

    client.put_object(Bucket=bucket, Key="ds/sub/c.txt", Body=b"C2")
    third = _run(home, project, f"s3://{bucket}/ds", **env)
    assert third.returncode == 0 and third.stdout == "a.txt A\nsub/b.txt B\nsub/c.txt C2\n", third.stderr
    assert "unchanged" not in third.stderr
    kinds = {r["artifacts"]["data"]["kind"] for r in _records(home)}
    assert kinds == {"capture-once"}


def test_s3_single_file_and_missing_things(home, project, s3_server):
    import boto3

    bucket = _bucket()
    client = _s3(s3_server, bucket)
    client.put_object(Bucket=bucket, Key="models/w.bin", Body=b"weights")
    env = dict(FAKE_AWS_ENV, AWS_ENDPOINT_URL_S3=s3_server.endpoint)
    ran = _run(home, project, f"s3://{bucket}/models/w.bin", **env)
    assert ran.returncode == 0 and ran.stdout == "file w.bin weights\n", ran.stderr

    missing_key = _run(home, project, f"s3://{bucket}/models/nope", **env)
    assert missing_key.returncode == 2 and "nothing there" in _error_line(missing_key)
    name = _bucket()
    missing_bucket = _run(home, project, f"s3://{name}/x", **env)
    assert missing_bucket.returncode == 2
    assert f"bucket '{name}' does not exist" in _error_line(missing_bucket)
    raw = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    assert name not in [b["Name"] for b in raw.list_buckets()["Buckets"]]  # never created
    assert len(_records(home)) == 1


def test_s3_credentials_refused_is_one_line_without_the_secret(home, project, s3_auth_server):
    env = {**FAKE_AWS_ENV, **s3_auth_server.reader, "AWS_SECRET_ACCESS_KEY": "not-the-secret",
           "AWS_ENDPOINT_URL_S3": s3_auth_server.endpoint}
    result = _run(home, project, f"s3://{s3_auth_server.bucket}/anything", **env)
    assert result.returncode == 2 and result.stdout == ""
    line = _error_line(result)
    assert "credentials refused" in line and "not-the-secret" not in line
    assert _records(home) == []


# -- gcs and sftp ----------------------------------------------------------------------------
def test_gcs_prefix_is_fetched_and_checked(home, project, gcs_server):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs_server.endpoint})
    bucket = client.create_bucket(_bucket())
    bucket.blob("set/x.txt").upload_from_string(b"X")
    bucket.blob("set/y/z.txt").upload_from_string(b"Z")
    env = {"STORAGE_EMULATOR_HOST": gcs_server.endpoint}
    first = _run(home, project, f"gs://{bucket.name}/set", **env)
    assert first.returncode == 0 and first.stdout == "x.txt X\ny/z.txt Z\n", first.stderr
    second = _run(home, project, f"gs://{bucket.name}/set", **env)
    assert second.returncode == 0 and second.stdout == first.stdout, second.stderr
    assert "unchanged since it was last fetched" in second.stderr
    missing = _run(home, project, f"gs://{_bucket()}/set", **env)
    assert missing.returncode == 2 and "does not exist" in _error_line(missing)


def test_sftp_folder_is_fetched_with_the_users_ssh_setup(home, project, sftp_server, tmp_path):
    remote = tmp_path / "remote-data"
    (remote / "deep").mkdir(parents=True)
    (remote / "one.txt").write_bytes(b"1")
    (remote / "deep" / "two.txt").write_bytes(b"2")
    ssh = os.path.join(home, ".ssh")
    os.makedirs(ssh, mode=0o700)
    options = sftp_server.options()
    shutil.copy(options["known_hosts"], os.path.join(ssh, "known_hosts"))
    shutil.copy(options["key_filename"], os.path.join(ssh, "id_ed25519"))
    os.chmod(os.path.join(ssh, "id_ed25519"), 0o600)
    ran = _run(home, project, sftp_server.url(str(remote)))
    assert ran.returncode == 0 and ran.stdout == "deep/two.txt 2\none.txt 1\n", ran.stderr
    missing = _run(home, project, sftp_server.url(str(tmp_path / "nowhere") + "/x"))
    assert missing.returncode == 2 and "not found" in _error_line(missing)
    assert not (tmp_path / "nowhere").exists()  # nothing created on the server
